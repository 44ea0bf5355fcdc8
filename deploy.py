"""Converge an LVS-NAT balancer pair and its web hosts to the cluster model.

    pyinfra inventory.py deploy.py --dry --diff   # show what would change
    pyinfra inventory.py deploy.py                # converge; a second run changes nothing

The inventory has already validated the model. Preflight checks (distribution,
`uname -n`, interfaces, SSH access surviving the firewall) run while pyinfra
prepares every host, so a failing check stops the run before any change.
"""

from pyinfra import host

from lvsha.inventory import CLUSTER_KEY
from tasks import preflight
from tasks.firewall import firewall
from tasks.heartbeat import heartbeat
from tasks.kernel import kernel
from tasks.network import balancer_network, web_host_network
from tasks.packages import balancer_packages
from tasks.webserver import web_server

cluster = host.data.get(CLUSTER_KEY)
if cluster is None:
    raise SystemExit(f"{host.name}: no cluster model in the inventory (use lvsha.inventory.groups)")

preflight.check_distribution()

if "balancers" in host.groups:
    balancer = cluster.balancer(host.name)
    preflight.check_node_name(balancer)
    preflight.check_interfaces_free([balancer.external_interface, balancer.internal_interface])
    balancer_packages()
    kernel(cluster)
    balancer_network(cluster, balancer)
    firewall(cluster, balancer)
    heartbeat(cluster, balancer)

if "web" in host.groups:
    web_host = cluster.web_host(host.name)
    preflight.check_interfaces_free([web_host.interface])
    web_host_network(cluster, web_host)
    if host.data.get("lvsha_web_server", False):
        web_server(cluster, web_host)
