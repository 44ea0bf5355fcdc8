"""Failover: the VIPs, mail IPs and gateway move to balancer2 and come back."""

import time

from lvsha.lab import lab as lab_api
from lvsha.lab import wait_until
from lvsha.lab.run import deploy, record
from lvsha.render import all_files

SERVICES = "heartbeat ldirectord netfilter-persistent systemd-networkd nginx"


def _nothing_on(lab, balancer):
    addresses, _ = lab.carries(balancer)
    return not addresses & lab.floating()


def test_heartbeat_stop_moves_everything_and_failback_returns_it(lab):
    master, backup = (b.name for b in lab.cluster.balancers)
    lab.ssh(master, "systemctl stop heartbeat")
    try:
        record("takeover after heartbeat stop", lab.wait_settled(backup))
        assert _nothing_on(lab, master)
        assert lab.ipvs_reals(master) == {}
    finally:
        lab.ssh(master, "systemctl start heartbeat")
    record("failback after heartbeat start", lab.wait_settled(master))
    wait_until(lambda: _nothing_on(lab, backup), 60, what=f"{backup} to release every address")
    assert lab.ipvs_reals(backup) == {}


def _snapshot(lab, name: str) -> str:
    """Managed files' hashes and the services' states on host `name`."""
    paths = [f.path for f in all_files(lab.cluster)[name]]
    return lab.ssh(name, f"sha1sum {' '.join(paths)} 2>&1; systemctl is-active {SERVICES} 2>&1; "
                         f"systemctl is-enabled {SERVICES} 2>&1", check=False).stdout


def test_power_off_moves_everything_and_reboot_takes_it_back(lab):
    master, backup = (b.name for b in lab.cluster.balancers)
    lab_api.vm_stop(master)
    started = time.monotonic()
    try:
        lab.wait_settled(backup)
        record("takeover after power-off", time.monotonic() - started)
        # A deploy that cannot reach one balancer changes nothing anywhere.
        others = [name for name in lab.state["hosts"] if name != master]
        before = {name: _snapshot(lab, name) for name in others}
        refused = deploy()
        assert refused.returncode != 0, refused.output[-4000:]
        assert master in refused.output
        assert {name: _snapshot(lab, name) for name in others} == before
    finally:
        booted = time.monotonic()
        lab_api.vm_start(master)
        record("balancer reboot to SSH", time.monotonic() - booted)
    record("failback after reboot", lab.wait_settled(master))
    wait_until(lambda: _nothing_on(lab, backup), 60, what=f"{backup} to release every address")
    # the reboot kept the firewall, forwarding and IPVS modules (persisted, not just live)
    assert "-P INPUT DROP" in lab.ssh(master, "iptables -S INPUT").stdout
    assert lab.ssh(master, "sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"
