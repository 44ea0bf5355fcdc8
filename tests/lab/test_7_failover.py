"""Failover: the VIPs, mail IPs and gateway move to balancer2 and come back."""

import time

from lvsha.lab import lab as lab_api
from lvsha.lab import wait_until
from lvsha.lab.run import record


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


def test_power_off_moves_everything_and_reboot_takes_it_back(lab):
    master, backup = (b.name for b in lab.cluster.balancers)
    lab_api.vm_stop(master)
    started = time.monotonic()
    try:
        lab.wait_settled(backup)
        record("takeover after power-off", time.monotonic() - started)
    finally:
        booted = time.monotonic()
        lab_api.vm_start(master)
        record("balancer reboot to SSH", time.monotonic() - booted)
    record("failback after reboot", lab.wait_settled(master))
    wait_until(lambda: _nothing_on(lab, backup), 60, what=f"{backup} to release every address")
    # the reboot kept the firewall, forwarding and IPVS modules (persisted, not just live)
    assert "-P INPUT DROP" in lab.ssh(master, "iptables -S INPUT").stdout
    assert lab.ssh(master, "sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"
