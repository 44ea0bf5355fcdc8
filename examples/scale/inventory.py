"""The scale benchmark's model: an example cluster with N sites (LVSHA_SCALE_SITES, default 250)
on a failover engine (LVSHA_SCALE_ENGINE: heartbeat, the default, or keepalived).

    LVSHA_SCALE_SITES=250 lvsha validate examples/scale/inventory.py
    LVSHA_SCALE_SITES=250 LVSHA_SCALE_ENGINE=keepalived lvsha validate examples/scale/inventory.py
    lvsha lab bench --sites 3,50,250 --engine heartbeat,keepalived   # the lab brings the same five VMs up with this model

The engine chooses the example grown: heartbeat's is the reference cluster
(`inventory.py`), keepalived's examples/keepalived/inventory.py (the same hosts,
names and addresses; no heartbeat secret: keepalived has no use for one). Every
name and address of the example is kept; sites beyond its three are
`site<k>.scale.test`, each with a VIP on the external network and one more internal
address on every web host (lvsha/lab/scale.py). The networks keep their first address
and grow only as far as the addresses need: at 250 sites 10.0.0.0/23 and
192.168.0.0/22. With 3 sites this is the example's model. Set both variables for
every command run against it (the lab's deploy inherits them from `lvsha lab bench`).
LVSHA_SCALE_CHECK_RATE (default 30, 0: none) bounds the health checks a second: past it
the checkinterval is lengthened to fit, and the model's name says so (250 sites:
checkinterval 25; docs/scale.md says why).
"""

import os
import sys
from pathlib import Path

from lvsha.inventory import production_groups, validated_or_exit
from lvsha.lab.scale import check_rate_from_environment, engine_from_environment, scale_cluster, sites_from_environment
from lvsha.loader import run_inventory
from lvsha.secrets import heartbeat_secret

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "inventory.py"
KEEPALIVED = ROOT / "examples" / "keepalived" / "inventory.py"


def _settings() -> tuple[str, int, int]:
    """The engine, the number of sites and the bound of health checks a second from the
    environment; a wrong one ends the run, naming the variable and its value, before
    anything is built."""
    try:
        return (engine_from_environment(os.environ), sites_from_environment(os.environ),
                check_rate_from_environment(os.environ))
    except ValueError as error:
        print(f"lvsha: refusing to deploy: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _base(engine: str):
    """The example the scale model grows, on `engine`."""
    if engine == "keepalived":
        return run_inventory(KEEPALIVED)["keepalived_cluster"]()
    return run_inventory(REFERENCE)["reference_cluster"](heartbeat_secret())


def _build():
    engine, sites, check_rate = _settings()
    return scale_cluster(_base(engine), sites, check_rate)


CLUSTER = validated_or_exit(_build)

_groups = production_groups(CLUSTER)
balancers = _groups["balancers"]
web = _groups["web"]
