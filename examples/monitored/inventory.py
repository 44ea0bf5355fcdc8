"""The reference cluster (`inventory.py`, reused, not retyped) with Prometheus monitoring
on: node_exporter and lvsha's metrics on both balancers, scraped from the external
network (where the lab's client is; docs/monitoring.md).

The lab runs its whole tier on it with LVSHA_LAB_INVENTORY=examples/monitored/inventory.py
(tests/lab/test_9_monitoring.py scrapes it through a takeover and a drain).
"""

import runpy
from dataclasses import replace
from pathlib import Path

from lvsha.inventory import production_groups, validated_or_exit
from lvsha.model import Monitoring
from lvsha.secrets import heartbeat_secret

_reference = runpy.run_path(str(Path(__file__).resolve().parents[2] / "inventory.py"), run_name="lvsha_reference")


def monitored_cluster(secret: str | None = None):
    reference = _reference["reference_cluster"](secret)
    return replace(reference, monitoring=Monitoring(enabled=True, sources=(reference.external_network,)))


CLUSTER = validated_or_exit(lambda: monitored_cluster(heartbeat_secret()))

_groups = production_groups(CLUSTER)
balancers = _groups["balancers"]
web = _groups["web"]
