"""Host state after the deploy, read with pytest-testinfra over the lab's SSH."""

import testinfra

from lvsha import render
from tasks.packages import BALANCER_PACKAGES


def _host(lab, name):
    return testinfra.get_host(f"ssh://{name}", ssh_config=lab.state["ssh_config"])


def test_balancer_state(lab):
    for balancer in lab.cluster.balancers:
        _check_balancer(lab, balancer.name)


def _check_balancer(lab, name):
    host = _host(lab, name)
    for package in BALANCER_PACKAGES:
        assert host.package(package).is_installed, package
    authkeys = host.file(render.AUTHKEYS)
    assert authkeys.mode == 0o600 and authkeys.user == "root"
    assert host.service("heartbeat").is_running and host.service("heartbeat").is_enabled
    assert host.service("ldirectord").is_running and host.service("ldirectord").is_enabled  # on both
    assert host.sysctl("net.ipv4.ip_forward") == 1
    assert host.check_output("uname -n") == name
    assert "nf_tables" in host.check_output("iptables -V")
    assert "-P INPUT DROP" in host.check_output("iptables -S INPUT")
    assert "-P FORWARD DROP" in host.check_output("iptables -S FORWARD")


def test_haresources_identical_on_both(lab):
    a, b = (_host(lab, b.name).file(render.HARESOURCES).content_string for b in lab.cluster.balancers)
    assert a == b and all(ip.cidr in a for ip in lab.cluster.floating_ips())


def test_web_hosts_route_via_floating_gateway_only(lab):
    for web_host in lab.cluster.web_hosts:
        _check_web_host(lab, web_host)


def _check_web_host(lab, web_host):
    host = _host(lab, web_host.name)
    defaults = host.check_output("ip -4 route show default").splitlines()
    assert len(defaults) == 1 and defaults[0].startswith(f"default via {lab.cluster.internal_gateway} dev {web_host.interface}")
    addresses = host.check_output(f"ip -4 -o addr show dev {web_host.interface}")
    for ip in web_host.internal_ips:
        assert f" {ip}/" in addresses
    assert host.service("nginx").is_running
