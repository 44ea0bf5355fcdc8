"""Converge an LVS-NAT balancer pair and its web hosts to the cluster model.

    pyinfra inventory.py deploy.py --dry --diff   # show what would change
    pyinfra inventory.py deploy.py                # converge; a second run changes nothing

The inventory has already validated the model. Each role's preflight checks
(distribution, `uname -n`, interfaces, SSH access surviving the firewall) run
while pyinfra prepares every host, before any operation runs on any host, so a
failing check stops the whole run with nothing changed.
"""

from pyinfra import config, host

from lvsha.inventory import CLUSTER_KEY, WEB_SERVER_KEY
from tasks.roles import cluster_host

# config.py says this for the connection phase when pyinfra runs from the
# repository; said again here for the operations, from wherever it runs.
config.FAIL_PERCENT = 0

cluster = host.data.get(CLUSTER_KEY)
if cluster is None:
    raise SystemExit(f"{host.name}: no cluster model in the inventory (build groups with lvsha.inventory.groups)")

cluster_host(cluster, host.name, with_web_server=bool(host.data.get(WEB_SERVER_KEY)))
