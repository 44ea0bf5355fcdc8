"""ldirectord takes a dead real server out of rotation and puts it back."""

import time

from lvsha.lab import wait_until
from lvsha.lab.run import record


def test_stopped_web_server_leaves_and_rejoins_rotation(lab):
    master = lab.carrier()
    victim = lab.cluster.web_hosts[1]
    victim_reals = {f"{ip}:{vs.port}" for vs in lab.cluster.virtual_servers() for h, ip in vs.reals if h == victim}

    def victim_reals_in_rotation():
        return {r for reals in lab.ipvs_reals(master).values() for r in reals} & victim_reals

    def victim_in_rotation():
        return victim_reals_in_rotation() == victim_reals

    assert victim_in_rotation()
    lab.ssh(victim.name, "systemctl stop nginx")
    try:
        started = time.monotonic()
        wait_until(lambda: not victim_reals_in_rotation(), 120, interval=1, what=f"{victim.name} to leave IPVS")
        record("health check: removal", time.monotonic() - started)
        assert lab.serving(), "the other real servers must keep every site up"
    finally:
        lab.ssh(victim.name, "systemctl start nginx")
    started = time.monotonic()
    wait_until(victim_in_rotation, 120, interval=1, what=f"{victim.name} to rejoin IPVS")
    record("health check: return", time.monotonic() - started)
    table = lab.ipvs_reals(master)
    assert all(len(reals) == len(lab.cluster.web_hosts) for reals in table.values())
