"""Host state after the deploy, read with pytest-testinfra over the lab's SSH."""

import time

import pytest
import testinfra

from lvsha import ifupdown, render
from lvsha.lab import wait_until
from lvsha.lab.run import record
from tasks.packages import balancer_packages


def _host(lab, name):
    return testinfra.get_host(f"ssh://{name}", ssh_config=lab.state["ssh_config"])


def test_balancer_state(lab):
    for balancer in lab.cluster.balancers:
        _check_balancer(lab, balancer.name)


def _check_balancer(lab, name):
    host = _host(lab, name)
    for package in balancer_packages(lab.cluster):
        assert host.package(package).is_installed, package
    if lab.engine == "heartbeat":
        authkeys = host.file(render.AUTHKEYS)
        assert authkeys.mode == 0o600 and authkeys.user == "root"
    for service in lab.engine_services:  # heartbeat and ldirectord, or keepalived: on both
        assert host.service(service).is_running and host.service(service).is_enabled, service
    assert host.sysctl("net.ipv4.ip_forward") == 1
    assert host.check_output("uname -n") == name
    assert "nf_tables" in host.check_output("iptables -V")
    assert "-P INPUT DROP" in host.check_output("iptables -S INPUT")
    assert "-P FORWARD DROP" in host.check_output("iptables -S FORWARD")


@pytest.mark.heartbeat_internals
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


# ---- stock-install hosts (lvsha/lab/stock.py) --------------------------------------

IPMON_LOG = "/var/log/lvsha-lab-ipmon.log"  # files/lab/lvsha-lab-ipmon.service


def _check_stock_install(lab, name: str, stock: dict) -> None:
    """ifupdown no longer configures the NIC (its file kept as the installer wrote
    it), systemd-networkd does, with the address; the balancer keeps the
    installer's default route, the web host has the floating gateway's alone."""
    host, interface = _host(lab, name), stock["interface"]
    assert host.run(f"ifquery {interface}").rc != 0, f"{name}: ifupdown still configures {interface}"
    assert host.file(f"{ifupdown.ORIGINALS}/interfaces").content_string == stock["interfaces"]
    assert "configured" in host.check_output(f"networkctl list --no-legend {interface}")
    assert f" {stock['cidr']} " in host.check_output(f"ip -4 -o addr show dev {interface}")
    defaults = host.check_output("ip -4 route show default").splitlines()
    balancer = name in {b.name for b in lab.cluster.balancers}
    gateway = stock["gateway"] if balancer else str(lab.cluster.internal_gateway)
    assert len(defaults) == 1 and defaults[0].startswith(f"default via {gateway} dev {interface}"), defaults


def _deleted_since_boot(lab, name: str, stock: dict, boot: int) -> list[str]:
    """What the kernel deleted of the installer's address (and a balancer's default route) during the `boot`-th boot."""
    sections = lab.ssh(name, f"cat {IPMON_LOG}").stdout.split("\nboot ")
    watched = [f" {stock['cidr']} "]
    if name in {b.name for b in lab.cluster.balancers}:  # a web host's is replaced by the floating gateway
        watched.append(f"default via {stock['gateway']} ")
    return [line for line in sections[boot].splitlines() if " Deleted " in f" {line}" and any(w in line for w in watched)]


@pytest.mark.every_model
def test_stock_install_hosts_were_taken_over_without_losing_their_address_or_route(lab):
    for name, stock in lab.state["stock_installs"].items():
        _check_stock_install(lab, name, stock)
        # the whole first boot, the first deploy included: never deleted, not even for a moment
        assert _deleted_since_boot(lab, name, stock, 0) == [], name


def test_stock_install_hosts_reboot_to_the_same_network_and_serve_again(lab):
    stocks = lab.state["stock_installs"]
    boot_ids = {name: lab.ssh(name, "cat /proc/sys/kernel/random/boot_id").stdout for name in stocks}
    started = time.monotonic()
    for name in stocks:
        lab.ssh(name, "systemctl reboot", check=False)

    def rebooted():
        return all(lab.ssh(name, "cat /proc/sys/kernel/random/boot_id", check=False, timeout=20).stdout
                   not in ("", boot_ids[name]) for name in stocks)

    wait_until(rebooted, 600, interval=5, what="the stock-install hosts to boot again")
    record("stock-install hosts: reboot to SSH", time.monotonic() - started)
    for name, stock in stocks.items():
        _check_stock_install(lab, name, stock)
    record("stock-install hosts: rebooted to serving from every real server", lab.wait_settled(lab.cluster.master.name))
    backup = lab.cluster.peer(lab.cluster.master).name
    # the rebooted backup: IPVS loaded with every real server, no address of the group
    wait_until(lambda: lab.carries_none(backup), 180, interval=3, what=f"{backup} to load IPVS and carry nothing")
