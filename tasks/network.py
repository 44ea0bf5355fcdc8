"""Addresses and routes, persisted with systemd-networkd and applied live."""

from pyinfra.api import deploy
from pyinfra.operations import server

from lvsha import render
from lvsha.model import Balancer, Cluster, WebHost
from tasks.operations import addresses_present, only_default_route, only_model_addresses, unit
from tasks.rendered import put


def _networkd(rendered_files, interfaces_addresses):
    changed = [put(f) for f in rendered_files]
    unit(name="Enable systemd-networkd", service="systemd-networkd", running=True, enabled=True)
    server.shell(
        name="Reload systemd-networkd",
        commands=["networkctl reload"],
        _if=lambda: any(op.did_change() for op in changed),
    )
    for interface, addresses in interfaces_addresses:
        addresses_present(name=f"Addresses on {interface}", interface=interface, addresses=addresses)


@deploy("Balancer network")
def balancer_network(cluster: Cluster, balancer: Balancer):
    """This balancer's own external and internal addresses are configured and up.
    Floating addresses are heartbeat's: networkd is told to keep them."""
    network_files = render.balancer_network_files(cluster, balancer)
    _networkd(network_files, cluster.own_addresses(balancer))
    if cluster.external_gateway:
        only_default_route(name="Default route upstream", gateway=cluster.external_gateway,
                           interface=balancer.external_interface)


@deploy("Web host network")
def web_host_network(cluster: Cluster, web_host: WebHost):
    """One internal address per site; the only default route is the floating
    internal gateway, so LVS-NAT replies return through the active director."""
    _networkd([render.web_host_network_file(cluster, web_host)], cluster.own_addresses(web_host))
    ((interface, own),) = cluster.own_addresses(web_host)
    only_model_addresses(name=f"No address on {interface} the model does not have", interface=interface,
                         network=cluster.internal_network, keep=own)
    only_default_route(name="Default route via the floating gateway", gateway=cluster.internal_gateway,
                       interface=web_host.interface)
