"""A stock Debian install's network (ifupdown on the primary NIC) moved to
systemd-networkd by the deploy, at the operation level."""

from dataclasses import replace

import pytest
from netaddr import IPAddress
from pyinfra.api.exceptions import DeployError

from lvsha import ifupdown, render
from lvsha.lab.stock import installer_interfaces
from tasks.roles import cluster_host
from tests.deploy.harness import changing, plan
from tests.deploy.machine import converged_balancer, fresh

def _free_external(cluster, skip: int = 0) -> str:
    """An external address the model does not use (the highest free ones, `skip` of them passed)."""
    used = {str(a) for a in cluster.used_addresses()} | {str(a) for a in cluster.external_ping_nodes()}
    return [str(a) for a in reversed(list(cluster.external_net.iter_hosts())) if str(a) not in used][skip]


@pytest.fixture
def gateway(reference):
    """The stock install's upstream router: the model's external ping node."""
    return str(reference.external_ping_nodes()[0])


def _plan(cluster, machine, name):
    """The operations on balancer `name` (facts: `machine`), its peer converged."""
    peer = cluster.peer(cluster.balancer(name))
    others = {peer.name: converged_balancer(cluster, peer).fact}
    return plan(cluster_host, cluster, name, True, host_name=name, facts=machine.fact, others=others)


def _stock_balancer(cluster, gateway, name=None):
    balancer = cluster.balancer(name) if name else cluster.master
    name = balancer.name
    (interface, (cidr,)), *_ = cluster.own_addresses(balancer)
    machine = fresh(name, [i for i, _ in cluster.own_addresses(balancer)])
    machine.addresses[interface] = [cidr]
    machine.files[ifupdown.INTERFACES] = (installer_interfaces(interface, cidr, gateway), 644)
    return machine, interface, cidr


def test_a_stock_balancer_moves_its_primary_nic_to_networkd_without_taking_it_down(reference, gateway):
    machine, interface, cidr = _stock_balancer(reference, gateway)
    ops = _plan(reference, machine, reference.master.name)
    changes = changing(ops)
    names = list(changes)
    commands = "\n".join(c for cs in changes.values() for c in cs)
    # nothing ever removes the address or takes the link down
    for cut in ("ifdown", f"ip addr del {cidr}", f"ip link set dev {interface} down", f"flush dev {interface}"):
        assert cut not in commands
    # the model's file first, the installer's file kept, then the stanza commented out, then networkd reloaded
    written = names.index(f"Write {render.network_file_path(interface)}")
    kept = names.index(f"Keep ifupdown's files as they were under {ifupdown.ORIGINALS}")
    handed = names.index(f"Write {ifupdown.INTERFACES}")
    forgotten = names.index(f"ifupdown forgets {interface} (no ifdown will touch it)")
    assert written < kept < handed < forgotten < names.index("Reload systemd-networkd")
    assert changes[names[kept]] == [f"mkdir -p {ifupdown.ORIGINALS} && cp -n {ifupdown.INTERFACES} {ifupdown.ORIGINALS}/interfaces"]
    assert changes[names[forgotten]] == [f"[ ! -f {ifupdown.STATE} ] || sed -i -e /^{interface}=/d {ifupdown.STATE}"]
    # no external_gateway in the reference model: the balancer keeps ifupdown's default route, persisted
    assert reference.external_gateway is None
    carried = render.carried_gateway_path(interface)
    assert f"Write {carried}" in names
    content = render.carried_gateway_file(reference, interface, IPAddress(gateway), ifupdown.INTERFACES).content
    # as ifupdown added it, so that networkd adopts the route instead of deleting and adding it
    assert f"[Route]\nGateway={gateway}\nGatewayOnLink=yes\nProtocol=boot\n" in content


def test_a_moved_balancer_is_a_no_op_and_reboots_with_networkd_alone(reference, gateway):
    machine, interface, cidr = _stock_balancer(reference, gateway)
    text, mode = machine.files[ifupdown.INTERFACES]
    handed_over = ifupdown.hand_over(text, {interface})
    converged = converged_balancer(reference, reference.master)
    converged.files[ifupdown.INTERFACES] = (handed_over, mode)
    converged.put(render.carried_gateway_file(reference, interface, IPAddress(gateway), ifupdown.INTERFACES))
    assert changing(_plan(reference, converged, reference.master.name)) == {}
    # what ifupdown brings up at the next boot: the loopback only
    assert ifupdown.configured({ifupdown.INTERFACES: handed_over}) == set()


def test_a_model_with_an_external_gateway_does_not_carry_ifupdowns(reference, gateway):
    cluster = replace(reference, external_gateway=IPAddress(_free_external(reference)))
    machine, interface, _ = _stock_balancer(cluster, gateway)
    names = list(changing(_plan(cluster, machine, cluster.master.name)))
    carried = render.carried_gateway_path(interface)
    assert f"Write {carried}" not in names
    ops = [op.name for op in _plan(cluster, machine, cluster.master.name)]
    assert f"No default route carried over from ifupdown on {interface}" in ops


def test_a_stock_web_host_drops_ifupdowns_gateway_for_the_floating_one(reference, gateway):
    web = reference.web_hosts[-1]
    ((interface, cidrs),) = reference.own_addresses(web)
    machine = fresh(web.name, [interface])
    machine.addresses[interface] = [cidrs[0]]
    machine.routes = [{"gateway": gateway, "dev": interface}]
    machine.files[ifupdown.INTERFACES] = (installer_interfaces(interface, cidrs[0], gateway), 644)
    changes = changing(plan(cluster_host, reference, web.name, True, host_name=web.name, facts=machine.fact))
    assert f"Write {ifupdown.INTERFACES}" in changes
    assert not any(name.startswith(f"Write {render.network_file_path(interface)}.d") for name in changes)
    route = changes["Default route via the floating gateway"]
    assert any(f"del default via {gateway}" in c for c in route) and any(str(reference.internal_gateway) in c for c in route)


def test_a_stanza_in_interfaces_d_is_moved_and_its_original_kept_outside_interfaces_d(reference, gateway):
    machine, interface, cidr = _stock_balancer(reference, gateway)
    text, _ = machine.files.pop(ifupdown.INTERFACES)
    machine.files[ifupdown.INTERFACES] = ("source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n", 644)
    machine.files[f"{ifupdown.INTERFACES_D}/{interface}"] = (text.split("# The primary network interface\n")[1], 644)
    changes = changing(_plan(reference, machine, reference.master.name))
    assert f"Write {ifupdown.INTERFACES_D}/{interface}" in changes
    assert f"Write {ifupdown.INTERFACES}" not in changes
    (keep,) = changes[f"Keep ifupdown's files as they were under {ifupdown.ORIGINALS}"]
    assert keep.endswith(f"cp -n {ifupdown.INTERFACES_D}/{interface} {ifupdown.ORIGINALS}/interfaces.d/{interface}")


@pytest.mark.parametrize("stanza, message", [
    ("iface {i} inet dhcp\n", r"{i} in /etc/network/interfaces: ifupdown configures it by dhcp; lvsha gives it "
                              r"the model's static address\(es\) {cidr}"),
    ("iface {i} inet6 static\n\taddress 2001:db8::1/64\n", r"`iface {i} inet6 static`; lvsha's model is IPv4"),
    ("iface {i} inet static\n\taddress {foreign}\n", r"ifupdown gives it {foreign}, which the model does not "
                                                       r"\(the model: {cidr}\)"),
    ("iface {i} inet static\n\taddress {cidr}\n\tpost-up ip route add 172.16.0.0/12 via 10.0.0.1\n",
     r"ifupdown also does post-up for it, which systemd-networkd would not"),
], ids=["dhcp", "inet6", "foreign-address", "post-up"])
def test_what_cannot_move_as_it_is_stops_the_run_before_any_change(reference, gateway, stanza, message):
    machine, interface, cidr = _stock_balancer(reference, gateway)
    foreign = f"{_free_external(reference)}/{reference.external_net.prefixlen}"
    machine.files[ifupdown.INTERFACES] = (f"auto lo\niface lo inet loopback\nallow-hotplug {interface}\n"
                                          + stanza.format(i=interface, cidr=cidr, foreign=foreign), 644)
    with pytest.raises(DeployError, match=message.format(i=interface, cidr=cidr, foreign=foreign)):
        _plan(reference, machine, reference.master.name)


def test_a_missing_interface_is_named(reference, gateway):
    machine, interface, _ = _stock_balancer(reference, gateway)
    del machine.addresses[interface]
    with pytest.raises(DeployError, match=rf"interface\(s\) {interface} named in the model do not exist"):
        _plan(reference, machine, reference.master.name)
