"""The scale benchmark's model: the reference cluster with N sites (LVSHA_SCALE_SITES, default 250).

    LVSHA_SCALE_SITES=250 lvsha validate examples/scale/inventory.py
    lvsha lab bench --sites 3,50,250      # the lab brings the same five VMs up with this model

Every name and address of the reference cluster (`inventory.py`) is kept; sites
beyond its three are `site<k>.scale.test`, each with a VIP on the external network
and one more internal address on every web host (lvsha/lab/scale.py). The
networks keep their first address and grow only as far as the addresses need:
at 250 sites 10.0.0.0/23 and 192.168.0.0/22. With 3 sites this is the reference
model. Set LVSHA_SCALE_SITES for every command run against it (the lab's deploy
inherits it from `lvsha lab bench`).
"""

import os
from pathlib import Path

from lvsha.inventory import production_groups, validated_or_exit
from lvsha.lab.scale import scale_cluster, sites_from_environment
from lvsha.loader import run_inventory
from lvsha.secrets import heartbeat_secret

REFERENCE = Path(__file__).resolve().parents[2] / "inventory.py"


def _build():
    reference_cluster = run_inventory(REFERENCE)["reference_cluster"]
    return scale_cluster(reference_cluster(heartbeat_secret()), sites_from_environment(os.environ))


CLUSTER = validated_or_exit(_build)

_groups = production_groups(CLUSTER)
balancers = _groups["balancers"]
web = _groups["web"]
