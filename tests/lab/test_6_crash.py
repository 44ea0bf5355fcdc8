"""A crashed heartbeat or ldirectord heals itself, without anyone logging in.

heartbeat: the node gives up its addresses the moment heartbeat dies (the
drop-in's ExecStopPost), systemd starts heartbeat again, and it rejoins once the
peer has taken over. ldirectord: systemd restarts it. A master power-off after
these crashes is taken over: test_7_failover runs next on the same pair.
"""

import subprocess
import time

from lvsha.lab import wait_until
from lvsha.lab.run import record

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


class Watch:
    """Samples both balancers: who carries which floating address, and whether any
    address is on both at once (which must never be seen)."""

    def __init__(self, lab):
        self.lab, self.both = lab, []

    def carriers(self) -> dict[str, set[str]]:
        held = {b.name: self.lab.carries(b.name)[0] & self.lab.floating() for b in self.lab.cluster.balancers}
        first, second = held.values()
        if first & second:
            self.both.append(sorted(first & second))
        return held

    def exactly_one_carrier(self) -> str | None:
        """The balancer carrying every floating address and IPVS, when the other
        carries neither (None otherwise)."""
        held, tables = {}, {}
        for b in self.lab.cluster.balancers:
            addresses, tables[b.name] = self.lab.carries(b.name)
            held[b.name] = addresses & self.lab.floating()
        first, second = held.values()
        if first & second:
            self.both.append(sorted(first & second))
        full = [name for name, addresses in held.items() if addresses == self.lab.floating() and tables[name]]
        empty = [name for name, addresses in held.items() if not addresses and not tables[name]]
        return full[0] if len(full) == 1 and len(empty) == 1 else None


def test_killed_heartbeat_on_the_master_gives_up_the_group_and_heals(lab):
    master = lab.cluster.master.name
    watch = Watch(lab)
    lab.ssh(master, KILL_HEARTBEAT)
    started = time.monotonic()

    def healed():
        return watch.exactly_one_carrier() and _heartbeats_active(lab) and lab.serving()

    record("heartbeat killed on master: healed (one carrier, both running, serving)",
           wait_stable(lab, healed, "one balancer carrying everything, both heartbeats running"))
    assert lab.ssh(master, "systemctl show -p NRestarts --value heartbeat").stdout.strip() != "0"
    # auto_failback brings the group back to the master, and nothing is ever on both
    lab.wait_settled(master)
    record("heartbeat killed on master: back on the master", time.monotonic() - started)
    assert lab.carries_none(lab.cluster.peer(lab.cluster.master).name)
    assert watch.both == [], f"addresses seen on both balancers: {watch.both}"


def test_killed_ldirectord_on_the_master_is_restarted_and_still_checks(lab):
    master = lab.cluster.master.name
    victim = lab.cluster.web_hosts[-1]
    victim_reals = {f"{ip}:{vs.port}" for vs in lab.cluster.virtual_servers() for h, ip in vs.reals if h == victim}

    def victim_in_ipvs():
        return {r for reals in lab.ipvs_reals(master).values() for r in reals} & victim_reals

    restarts = int(lab.ssh(master, "systemctl show -p NRestarts --value ldirectord").stdout.strip() or 0)
    lab.ssh(master, KILL_LDIRECTORD)
    lab.ssh(victim.name, "systemctl stop nginx")
    stopped = time.monotonic()
    try:
        wait_until(lambda: not victim_in_ipvs(), HEAL_TIMEOUT, interval=1,
                   what=f"{victim.name} to leave IPVS after ldirectord was killed")
        removal = time.monotonic() - stopped
        record("ldirectord killed on master: dead real server out of IPVS", removal)
        health = lab.cluster.sites[0].health
        bound = lab.cluster.ldirectord.checkinterval + health.negotiatetimeout + 45  # 45 s: ldirectord's start under TCG
        assert removal < bound, f"{removal:.0f} s to notice a dead real server (bound {bound} s)"
        assert int(lab.ssh(master, "systemctl show -p NRestarts --value ldirectord").stdout.strip()) > restarts
        assert lab.serving()
    finally:
        lab.ssh(victim.name, "systemctl start nginx")
    wait_until(lambda: victim_in_ipvs() == victim_reals, 120, interval=1, what=f"{victim.name} to rejoin IPVS")


def test_crashes_on_the_backup_change_nothing_for_clients(lab):
    master, backup = lab.cluster.master.name, lab.cluster.peer(lab.cluster.master).name
    watch = Watch(lab)
    lab.ssh(backup, f"{KILL_LDIRECTORD}; {KILL_HEARTBEAT}", check=False)  # no ldirectord runs there: pkill finds none
    started = time.monotonic()
    deadline = started + HEAL_TIMEOUT
    while True:
        assert watch.exactly_one_carrier() == master, f"the group moved: {watch.carriers()}"
        assert lab.serving(), "a site stopped answering after a crash on the backup"
        if _heartbeats_active(lab):
            break
        assert time.monotonic() < deadline, f"heartbeat on {backup} not running again after {HEAL_TIMEOUT} s"
        time.sleep(2)
    record("heartbeat killed on backup: running again", time.monotonic() - started)
    time.sleep(3 * lab.cluster.heartbeat.deadtime)  # the master's view of the returning peer settles
    assert watch.exactly_one_carrier() == master and lab.serving()
    assert lab.carries_none(backup)
    assert watch.both == []


def test_a_healed_partition_leaves_one_carrier_and_both_heartbeats(lab):
    """Both links between the balancers cut for a minute (the backup's taps down in
    the lab's switch), then restored: without anyone logging in, both heartbeats
    run, one node carries everything and serves. test_7_failover's master
    power-off follows on the same pair."""
    master, backup = lab.cluster.master.name, lab.cluster.peer(lab.cluster.master).name
    taps = [nic["tap"] for nic in lab.state["vms"][backup]["nics"]]
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
    lab.wait_settled(master)
    record("partition healed: back on the master", time.monotonic() - healed_at)
    assert lab.carries_none(backup)
