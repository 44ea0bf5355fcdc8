"""A crashed heartbeat or ldirectord heals itself, without anyone logging in.

heartbeat: the node gives up its addresses the moment heartbeat dies (the
drop-in's ExecStopPost), systemd starts heartbeat again, and it rejoins once the
peer has taken over. ldirectord: systemd restarts it. A power-off after
these crashes is taken over: test_7_failover runs next on the same pair.
"""

import subprocess
import time

from lvsha.lab import wait_until
from lvsha.lab.run import record
from tests.lab.conftest import Watch

KILL_HEARTBEAT = "pkill -KILL -f '^heartbeat: '"  # every heartbeat process: a crash, an OOM kill
KILL_LDIRECTORD = "pkill -KILL -x ldirectord"
HEAL_TIMEOUT = 300  # s; measured figures go to the report


def wait_stable(lab, predicate, what: str) -> float:
    """Wait (bounded by HEAL_TIMEOUT) until `predicate` has held at every check for
    twice deadtime plus a keepalive (a snapshot in the middle of heartbeat's own
    turmoil is not healed); return the seconds until it first held for good."""
    hb = lab.cluster.heartbeat
    hold = 2 * hb.deadtime + hb.keepalive
    started = time.monotonic()
    since = None
    while True:
        now = time.monotonic()
        if predicate():
            since = since or now
            if now - since >= hold:
                return since - started
        else:
            since = None
        assert now - started < HEAL_TIMEOUT, f"not {what} (and steady for {hold} s) within {HEAL_TIMEOUT} s"
        time.sleep(2)


def _heartbeats_active(lab) -> bool:
    return all(lab.ssh(b.name, "systemctl is-active heartbeat", check=False).stdout.strip() == "active"
               for b in lab.cluster.balancers)


def test_killed_heartbeat_on_the_active_node_gives_up_the_group_and_heals(lab):
    active = lab.carrier()
    watch = Watch(lab)
    lab.ssh(active, KILL_HEARTBEAT)
    started = time.monotonic()

    def healed():
        return watch.exactly_one_carrier() and _heartbeats_active(lab) and lab.serving()

    record("heartbeat killed on the active node: healed (one carrier, both running, serving)",
           wait_stable(lab, healed, "one balancer carrying everything, both heartbeats running"))
    assert lab.ssh(active, "systemctl show -p NRestarts --value heartbeat").stdout.strip() != "0"
    # the peer took over; auto_failback decides whether the group comes back, and nothing is ever on both
    home = lab.home_after_return(lab.other(active))
    lab.wait_settled(home)
    record(f"heartbeat killed on the active node: settled on {'the master' if home == lab.pair[0] else 'the peer'}",
           time.monotonic() - started)
    assert lab.carries_none(lab.other(home))
    assert watch.both == [], f"addresses seen on both balancers: {watch.both}"


def test_killed_ldirectord_on_the_active_node_is_restarted_and_still_checks(lab):
    active = lab.carrier()
    victim = lab.cluster.web_hosts[-1]
    victim_reals = {f"{ip}:{vs.port}" for vs in lab.cluster.virtual_servers() for h, ip in vs.reals if h == victim}

    def victim_in_ipvs():
        return {r for reals in lab.ipvs_reals(active).values() for r in reals} & victim_reals

    restarts = int(lab.ssh(active, "systemctl show -p NRestarts --value ldirectord").stdout.strip() or 0)
    lab.ssh(active, KILL_LDIRECTORD)
    lab.ssh(victim.name, "systemctl stop nginx")
    stopped = time.monotonic()
    try:
        wait_until(lambda: not victim_in_ipvs(), HEAL_TIMEOUT, interval=1,
                   what=f"{victim.name} to leave IPVS after ldirectord was killed")
        removal = time.monotonic() - stopped
        record("ldirectord killed on the active node: dead real server out of IPVS", removal)
        health = lab.cluster.sites[0].health
        bound = lab.cluster.ldirectord.checkinterval + health.negotiatetimeout + 45  # 45 s: ldirectord's start under TCG
        assert removal < bound, f"{removal:.0f} s to notice a dead real server (bound {bound} s)"
        assert int(lab.ssh(active, "systemctl show -p NRestarts --value ldirectord").stdout.strip()) > restarts
        assert lab.serving()
    finally:
        lab.ssh(victim.name, "systemctl start nginx")
    wait_until(lambda: victim_in_ipvs() == victim_reals, 120, interval=1, what=f"{victim.name} to rejoin IPVS")


def test_crashes_on_the_standby_node_change_nothing_for_clients(lab):
    active = lab.carrier()
    standby = lab.other(active)
    watch = Watch(lab)
    restarts = int(lab.ssh(standby, "systemctl show -p NRestarts --value ldirectord").stdout.strip() or 0)
    lab.ssh(standby, f"{KILL_LDIRECTORD}; {KILL_HEARTBEAT}")
    started = time.monotonic()
    deadline = started + HEAL_TIMEOUT
    while True:
        assert watch.exactly_one_carrier() == active, f"the group moved: {watch.carriers()}"
        assert lab.serving(), "a site stopped answering after a crash on the standby"
        if _heartbeats_active(lab):
            break
        assert time.monotonic() < deadline, f"heartbeat on {standby} not running again after {HEAL_TIMEOUT} s"
        time.sleep(2)
    record("heartbeat killed on the standby node: running again", time.monotonic() - started)
    time.sleep(3 * lab.cluster.heartbeat.deadtime)  # the active's view of the returning peer settles
    assert watch.exactly_one_carrier() == active and lab.serving()
    wait_until(lambda: lab.carries_none(standby), 120, interval=2, what=f"ldirectord on {standby} to reload IPVS")
    assert int(lab.ssh(standby, "systemctl show -p NRestarts --value ldirectord").stdout.strip()) > restarts
    assert watch.both == []


def test_a_healed_partition_leaves_one_carrier_and_both_heartbeats(lab):
    """Both links between the balancers cut for a minute (the standby's taps down in
    the lab's switch), then restored: without anyone logging in, both heartbeats
    run, one node carries everything and serves. test_7_failover's
    power-off follows on the same pair."""
    active = lab.carrier()
    standby = lab.other(active)
    taps = [nic["tap"] for nic in lab.state["vms"][standby]["nics"]]
    netns = lab.state["lab_netns"]
    for tap in taps:
        subprocess.run(["ip", "-n", netns, "link", "set", tap, "down"], check=True)
    try:
        time.sleep(60)
    finally:
        for tap in taps:
            subprocess.run(["ip", "-n", netns, "link", "set", tap, "up"], check=True)
    healed_at = time.monotonic()
    watch = Watch(lab)

    def healed():
        return watch.exactly_one_carrier() and _heartbeats_active(lab) and lab.serving()

    record("partition healed: one carrier, both heartbeats running",
           wait_stable(lab, healed, "one carrier and both heartbeats after the partition healed"))
    # Both carried during the partition: with auto_failback the master keeps the
    # group; without it either may, but only one.
    lab.wait_settled(lab.cluster.master.name if lab.cluster.heartbeat.auto_failback else None)
    record("partition healed: settled", time.monotonic() - healed_at)
    assert lab.carries_none(lab.other(lab.carrier()))
