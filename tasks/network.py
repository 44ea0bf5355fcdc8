"""Addresses and routes, persisted with systemd-networkd and applied live."""

from pathlib import PurePosixPath

from pyinfra.api import deploy
from pyinfra.operations import files, server

from lvsha import ifupdown, render
from lvsha.model import Balancer, Cluster, WebHost
from tasks.facts import IfupdownFiles, fact
from tasks.operations import addresses_present, only_default_route, only_model_addresses, unit
from tasks.rendered import RenderedFile, put


def _from_ifupdown(cluster: Cluster, interfaces: list[str], carry_gateway: bool) -> list:
    """The model's `interfaces` that ifupdown configured (a stock install's
    primary NIC, checked by preflight: static, the model's addresses) become
    systemd-networkd's without ever going down: the installer's files are kept
    under /etc/network/lvsha-orig, their stanzas commented out, and ifupdown's
    record of them dropped (so no later `ifdown` touches them); networkd, reloaded
    next, finds the addresses it is told to have already in place. With
    `carry_gateway` (a balancer, no external_gateway in the model) ifupdown's
    default route is carried over into a networkd drop-in. Nothing on a host
    ifupdown does not configure them on."""
    found = fact(IfupdownFiles)
    stanzas, started = ifupdown.parse(found)
    moving = (set(stanzas) | started) & set(interfaces)
    if not moving:
        return []
    changed = []
    if carry_gateway:
        for interface in sorted(moving):
            for stanza in stanzas.get(interface, []):
                if stanza.gateway() is not None:
                    changed.append(put(render.carried_gateway_file(cluster, interface, stanza.gateway(), stanza.path)))
    names = ", ".join(sorted(moving))
    rewritten = {path: ifupdown.hand_over(text, moving) for path, text in found.items()}
    rewritten = {path: text for path, text in rewritten.items() if text != found[path]}
    originals = [(path, f"{ifupdown.ORIGINALS}/{PurePosixPath(path).relative_to('/etc/network')}") for path in rewritten]
    changed.append(server.shell(
        name=f"Keep ifupdown's files as they were under {ifupdown.ORIGINALS}",
        commands=[f"mkdir -p {PurePosixPath(kept).parent} && cp -n {path} {kept}" for path, kept in originals],
    ))
    for path, text in rewritten.items():
        changed.append(put(RenderedFile(path, text)))
    changed.append(server.shell(
        name=f"ifupdown forgets {names} (no ifdown will touch it)",
        commands=[f"[ ! -f {ifupdown.STATE} ] || sed -i {' '.join(f'-e /^{i}=/d' for i in sorted(moving))} "
                  f"{ifupdown.STATE}"],
    ))
    return changed


def _networkd(cluster, rendered_files, interfaces_addresses, carry_gateway=False):
    changed = [put(f) for f in rendered_files]
    changed += _from_ifupdown(cluster, [interface for interface, _ in interfaces_addresses], carry_gateway)
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
    """This balancer's own external and internal addresses are configured and up,
    by systemd-networkd (taken over from ifupdown where it had them). Floating
    addresses are heartbeat's: networkd is told to keep them. The default route
    is the model's external_gateway, alone; without one, the balancer keeps the
    default route it has (ifupdown's carried over)."""
    network_files = render.balancer_network_files(cluster, balancer)
    _networkd(cluster, network_files, cluster.own_addresses(balancer), carry_gateway=not cluster.external_gateway)
    if cluster.external_gateway:
        for interface, _ in cluster.own_addresses(balancer):
            files.file(name=f"No default route carried over from ifupdown on {interface}",
                       path=render.carried_gateway_path(interface), present=False)
        only_default_route(name="Default route upstream", gateway=cluster.external_gateway,
                           interface=balancer.external_interface)


@deploy("Web host network")
def web_host_network(cluster: Cluster, web_host: WebHost):
    """One internal address per site (taken over from ifupdown where it had the
    interface); the only default route is the floating internal gateway, so
    LVS-NAT replies return through the active director."""
    _networkd(cluster, [render.web_host_network_file(cluster, web_host)], cluster.own_addresses(web_host))
    ((interface, own),) = cluster.own_addresses(web_host)
    only_model_addresses(name=f"No address on {interface} the model does not have", interface=interface,
                         network=cluster.internal_network, keep=own)
    only_default_route(name="Default route via the floating gateway", gateway=cluster.internal_gateway,
                       interface=web_host.interface)
