"""pyinfra inventory of the running lab: `pyinfra lvsha/lab/inventory.py deploy.py`.

The cluster model is the inventory's (reference by default); only the
connection settings and the lab VMs' management NIC differ.
"""

from lvsha.inventory import groups, validated_or_exit
from lvsha.lab.lab import load_state
from lvsha.lab.model import lab_cluster, lab_connections

_state = load_state()
CLUSTER = validated_or_exit(lambda: lab_cluster(_state))

_groups = groups(CLUSTER, lab_connections(CLUSTER, _state))
balancers = _groups["balancers"]
web = _groups["web"]
