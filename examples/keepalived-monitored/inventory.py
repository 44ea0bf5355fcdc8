"""The reference cluster on keepalived (`examples/keepalived/inventory.py`, reused, not
retyped) as keepalived is usually run: VRRP's 1 s advertisement (`keepalive=1`; the
master declared dead after `deadtime=3` missed ones, plus under one of skew) instead of
the recipe's 2 s / 10 s, and Prometheus monitoring on, as `examples/monitored` is for
heartbeat: node_exporter and lvsha's metrics on both balancers (keepalived's view: VRRP
state), scraped from the external network (where the lab's client is; docs/monitoring.md).

The lab runs its whole tier on it with
LVSHA_LAB_INVENTORY=examples/keepalived-monitored/inventory.py
(tests/lab/test_9_monitoring.py scrapes it through a takeover and a drain;
docs/limitations.md says what its runs found).
"""

import runpy
from dataclasses import replace
from pathlib import Path

from lvsha.inventory import production_groups, validated_or_exit
from lvsha.model import Monitoring

_keepalived = runpy.run_path(str(Path(__file__).resolve().parents[1] / "keepalived" / "inventory.py"),
                             run_name="lvsha_keepalived")


def monitored_keepalived_cluster():
    cluster = _keepalived["keepalived_cluster"]()
    fast = replace(cluster.heartbeat, keepalive=1, warntime=2, deadtime=3, initdead=12)
    return replace(cluster, name="reference-keepalived-monitored", heartbeat=fast,
                   monitoring=Monitoring(enabled=True, sources=(cluster.external_network,)))


CLUSTER = validated_or_exit(monitored_keepalived_cluster)

_groups = production_groups(CLUSTER)
balancers = _groups["balancers"]
web = _groups["web"]
