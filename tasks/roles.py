"""The two roles of the cluster, composed from the smaller deploys."""

from pyinfra.api import deploy

from lvsha.model import Balancer, Cluster, WebHost
from tasks import preflight
from tasks.firewall import firewall
from tasks.heartbeat import heartbeat, ldirectord
from tasks.kernel import kernel
from tasks.network import balancer_network, web_host_network
from tasks.packages import balancer_packages
from tasks.statesync import state_sync
from tasks.webserver import web_server


@deploy("LVS director")
def director(cluster: Cluster, balancer: Balancer):
    """A balancer converged to the model: checked (distribution, both balancers in the run, `uname -n`,
    interfaces, SSH surviving the firewall) before anything changes; then
    packages, firewall, kernel (forwarding only once the firewall is loaded),
    own addresses, ldirectord (IPVS loaded on both), connection state sync
    (before heartbeat can take anything over), heartbeat."""
    preflight.check_distribution()
    preflight.check_pair_in_run(cluster)
    preflight.check_node_name(balancer)
    preflight.check_interfaces_free([interface for interface, _ in cluster.own_addresses(balancer)])
    preflight.check_ssh_survives_firewall(cluster, balancer)
    balancer_packages()
    firewall(cluster, balancer)
    kernel(cluster)
    balancer_network(cluster, balancer)
    ldirectord(cluster, balancer)
    state_sync(cluster, balancer)
    heartbeat(cluster, balancer)


@deploy("Real server")
def real_server(cluster: Cluster, web_host: WebHost, with_web_server: bool = False):
    """A web host converged to the model: its site addresses and the floating
    gateway as its only default route; optionally nginx serving every site."""
    preflight.check_distribution()
    preflight.check_interfaces_free([web_host.interface])
    web_host_network(cluster, web_host)
    if with_web_server:
        web_server(cluster, web_host)
