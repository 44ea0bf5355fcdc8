"""A crashed heartbeat or ldirectord heals itself, without anyone logging in.

heartbeat: the node gives up its addresses the moment heartbeat dies (the
drop-in's ExecStopPost), systemd starts heartbeat again, and it rejoins once the
peer has taken over. ldirectord: systemd restarts it. A power-off after
these crashes is taken over: test_7_failover runs next on the same pair.

On keepalived the engine-generic tests run (crashes on the standby, a healed
partition, a hung conntrackd on the taker); keepalived killed on the active node
is test_8_keepalived's.
"""

import os
import subprocess
import time

import pytest

from lvsha import render
from lvsha.lab import lab as lab_api
from lvsha.lab import LabError, wait_until
from lvsha.lab.run import record
from tests.lab.conftest import AddressEvents, Watch
from tests.lab.test_8_day2 import _poll_during

KILL_HEARTBEAT = "pkill -KILL -f '^heartbeat: '"  # every heartbeat process: a crash, an OOM kill
KILL_LDIRECTORD = "pkill -KILL -x ldirectord"
# Every process of the engine's units on a node (a crash, an OOM kill), by engine.
KILL_ENGINE = {"heartbeat": f"{KILL_LDIRECTORD}; {KILL_HEARTBEAT}", "keepalived": "pkill -KILL -x keepalived"}
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


def _restarts(lab, balancer: str, service: str) -> int:
    return int(lab.ssh(balancer, f"systemctl show -p NRestarts --value {service}").stdout.strip() or 0)


def _wait(lab, predicate, timeout: float, **options):
    """wait_until, and when it times out what each balancer holds and says (lab.diagnosis):
    a heartbeat lifecycle wait that fails is read from the journal of that moment."""
    try:
        return wait_until(predicate, timeout, **options)
    except LabError as error:
        raise LabError(f"{error}\n{lab.diagnosis()}") from None


@pytest.mark.heartbeat_internals
def test_killed_heartbeat_on_the_active_node_gives_up_the_group_and_heals(lab):
    active = lab.carrier()
    watch = Watch(lab, events=True)
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
    assert watch.on_both() == [], f"addresses on both balancers: {watch.on_both()}"
    record("heartbeat killed on the active node: handovers within the clocks' tolerance (undecided)", len(watch.undecided))


@pytest.mark.heartbeat_internals
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
        _wait(lab, lambda: not victim_in_ipvs(), HEAL_TIMEOUT, interval=1,
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
    _wait(lab, lambda: victim_in_ipvs() == victim_reals, 120, interval=1, what=f"{victim.name} to rejoin IPVS")


def test_crashes_on_the_standby_node_change_nothing_for_clients(lab):
    """The engine's every process killed on the standby (heartbeat and ldirectord, or
    keepalived): the group stays, every site answers, systemd brings it back and
    the standby's IPVS is loaded again."""
    active = lab.carrier()
    standby = lab.other(active)
    watch = Watch(lab, events=True)
    checker = lab.engine_services[-1]  # what keeps IPVS loaded: ldirectord, or keepalived itself
    restarts = _restarts(lab, standby, checker)
    lab.ssh(standby, KILL_ENGINE[lab.engine])
    started = time.monotonic()
    deadline = started + HEAL_TIMEOUT
    while True:
        assert watch.exactly_one_carrier() == active, f"the group moved: {watch.carriers()}"
        assert lab.serving(), "a site stopped answering after a crash on the standby"
        if lab.engine_active():
            break
        assert time.monotonic() < deadline, f"{lab.engine_service} on {standby} not running again after {HEAL_TIMEOUT} s"
        time.sleep(2)
    record(f"{lab.engine_service} killed on the standby node: running again", time.monotonic() - started)
    time.sleep(3 * lab.cluster.heartbeat.deadtime)  # the active's view of the returning peer settles
    assert watch.exactly_one_carrier() == active and lab.serving()
    _wait(lab, lambda: lab.carries_none(standby), 120, interval=2, what=f"{checker} on {standby} to reload IPVS")
    assert _restarts(lab, standby, checker) > restarts
    assert watch.on_both() == [], f"addresses on both balancers: {watch.on_both()}"


def test_a_healed_partition_leaves_one_carrier_and_both_heartbeats(lab):
    """Both links between the balancers cut for a minute (the standby's taps down in
    the lab's switch), then restored: without anyone logging in, both heartbeats
    (keepalived: both keepalived) run, one node carries everything and serves. test_7_failover's
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
        return watch.exactly_one_carrier() and lab.engine_active() and lab.serving()

    service = lab.engine_service
    record(f"partition healed: one carrier, both {service}s running",
           wait_stable(lab, healed, f"one carrier and both {service}s after the partition healed"))
    # Both carried during the partition: with auto_failback the master keeps the
    # group; without it either may, but only one.
    lab.wait_settled(lab.cluster.master.name if lab.cluster.heartbeat.auto_failback else None)
    record("partition healed: settled", time.monotonic() - healed_at)
    assert lab.carries_none(lab.other(lab.carrier()))


def _guard_said(lab, balancer: str, since: int) -> str:
    return lab.ssh(balancer, f"journalctl -q -o cat --since=@{since} -t lvsha-heartbeat-guard", check=False).stdout


# Not every_model: CI's budget (the edge lab on Debian 13 ran it in ~75 s); `lvsha lab run` on a model runs it.
@pytest.mark.heartbeat_internals
def test_both_heartbeats_restarting_at_once_serve_again_without_waiting_for_each_other(lab):
    """A healed partition, `apt upgrade` on both, an operator: heartbeat restarts on both
    nodes at the same moment. Each sees its peer's machine answer but its heartbeat
    silent, so neither waits the rejoin timeout for the other to take the gateway
    (before: ~150-210 s with nobody serving); they meet as at boot."""
    lab.carrier()
    watch = Watch(lab, events=True)  # from before the restarts: a holder on both at any moment of them
    since = {b.name: int(lab.ssh(b.name, "date +%s").stdout) for b in lab.cluster.balancers}
    restarts = [subprocess.Popen([*lab_api.ssh_argv(b.name), "systemctl restart heartbeat"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for b in lab.cluster.balancers]
    started = time.monotonic()
    for restart in restarts:
        restart.wait(timeout=render.REJOIN_TIMEOUT + 300)

    def serving_again():
        return watch.exactly_one_carrier() and _heartbeats_active(lab) and lab.serving()

    _wait(lab, serving_again, render.REJOIN_TIMEOUT + 180, interval=2, what="one carrier serving after both restarts")
    took = time.monotonic() - started
    record("heartbeat restarted on both at once: one carrier serving again", took)
    said = {name: _guard_said(lab, name, at) for name, at in since.items()}
    assert not any("starting heartbeat anyway" in s for s in said.values()), said  # nobody waited out the timeout
    assert any("heartbeat is silent" in s for s in said.values()), said  # at least one saw the other silent
    assert took < render.REJOIN_TIMEOUT, said
    assert watch.on_both() == [], f"on both at once: {watch.on_both()}"
    # Where the pair settles: with auto_failback on, the master, maybe by a failback still to come
    # (the peer went first): reading the carrier now can fall in that failback's gap.
    lab.wait_settled(lab.cluster.master.name if lab.cluster.heartbeat.auto_failback else None)


def _said(lab, balancer: str, tag: str, since: int) -> str:
    return lab.ssh(balancer, f"journalctl -q -o cat --since=@{since} -t {tag}", check=False).stdout


def _peer_recorded_dead(lab, balancer: str) -> None:
    """Wait until `balancer`'s takeover watch has recorded its peer dead, with no packet from
    it for warntime (what its guard keeps on: a peer shutting down still sends for seconds)."""
    hb = lab.cluster.heartbeat
    known_dead = (f"read -r since _ < {render.HEARTBEAT_PEER_DEAD} && read -r up _ < /proc/uptime && "
                  f"[ $((${{up%.*}} - since)) -ge {hb.warntime} ]")
    _wait(lab, lambda: lab.ssh(balancer, known_dead, check=False).returncode == 0,
               hb.deadtime + 4 * hb.keepalive + hb.warntime + 30, interval=1,
               what=f"{balancer}'s heartbeat to call its peer dead, silent for warntime")


SETTLED = "the floating addresses kept across heartbeat's restart are settled"


def _settled(lab, balancer: str, since: int) -> str:
    """Wait until `balancer`'s takeover watch has settled the kept addresses; what it said."""
    hb = lab.cluster.heartbeat
    # initdead, heartbeat's request delay (10 s) and its chain, two bounded rscstatus waits (60 s each)
    _wait(lab, lambda: SETTLED in _said(lab, balancer, "lvsha-takeover-watch", since),
               hb.initdead + 10 + 2 * 60 + 60, interval=2, what=f"{balancer}'s takeover watch to settle the kept addresses")
    return _said(lab, balancer, "lvsha-takeover-watch", since)


@pytest.mark.heartbeat_internals
def test_the_only_serving_node_keeps_its_addresses_when_heartbeat_dies_while_the_peers_is_stopped(lab):
    """Maintenance on the standby (heartbeat stopped, machine up), then heartbeat crashes on
    the active node. Nobody else can take the addresses (the peer's heartbeat is known
    dead: this node's heartbeat called it dead, and no packet came from it since), so the
    guard keeps them across the restart; heartbeat, alone through its initdead, takes the
    group over from the silent peer with them running, and the takeover watch reads that
    from this start's own syslog lines: clients wait for nothing (before: 51.4 s of
    heartbeat's start and initdead while the release had removed them; before that ~165 s).
    It also checks, on the real journal, that heartbeat's syslog lines carry the start's
    invocation ID (otherwise the watch, unsure, removes and adds them back: an address lost)."""
    active = lab.carrier()
    standby = lab.other(active)
    hb = lab.cluster.heartbeat
    lab.ssh(standby, "systemctl stop heartbeat")
    try:
        _peer_recorded_dead(lab, active)
        since = int(lab.ssh(active, "date +%s").stdout)
        events = AddressEvents(lab)

        def crash_and_come_back():
            lab.ssh(active, KILL_HEARTBEAT)
            _wait(lab, lambda: lab.ssh(active, "cl_status rscstatus", check=False).stdout.strip() == "all"
                       and lab.serving(), hb.initdead + render.REJOIN_TIMEOUT, interval=2,
                       what=f"heartbeat on {active} to hold the group and serve")
            _settled(lab, active, since)

        longest, _, out = _poll_during(lab, crash_and_come_back)
        record("heartbeat killed on the only serving node (peer's stopped): longest client wait", longest)
        on_both = events.read()
        lost = events.lost(active)
        guard, watch = _said(lab, active, "lvsha-heartbeat-guard", since), _said(lab, active, "lvsha-takeover-watch", since)
        assert "keeping every floating address across heartbeat's restart" in guard, guard
        assert "heartbeat starts with the floating addresses this node kept" in guard, guard
        assert "holds no floating address" not in guard, guard
        assert f"heartbeat took the group over from {standby} at its start, before it heard it" in watch, watch
        assert f"{SETTLED}: this node carries them" in watch, watch
        assert not lost, f"addresses {active} stopped holding: {lost}"  # from its kernel's address events
        assert not on_both, [str(o) for o in on_both]
        assert longest < 5, out[-2000:]  # about 0 (a poll's own timing, as the failover's bound), not initdead
        assert lab.floating() <= lab.carries(active)[0]
    finally:
        lab.ssh(standby, "systemctl start heartbeat")
    lab.wait_settled(lab.home_after_return(active))
    _wait(lab, lambda: lab.carries_none(standby), 120, interval=3, what=f"{standby} to rejoin carrying nothing")


def _keep_then_start_the_peer(lab, kept: str) -> tuple[int, AddressEvents, float, str]:
    """`kept` alone serves (its peer's heartbeat stopped, recorded dead); heartbeat killed on
    `kept`, which keeps its addresses; as soon as its heartbeat runs again (in its initdead:
    the watch not yet started, the kept record there), the peer's heartbeat is started, and
    lands within that initdead (its rejoin hears `kept`'s heartbeat and finds the gateway
    answering: warntime and its start). Returns when the pair has settled on the group's
    owner (both starting, heartbeat gives it the group, auto_failback on or off):
    (since, the address events from before the kill, the longest client wait, its output)."""
    hb = lab.cluster.heartbeat
    master = lab.cluster.master.name
    peer = lab.other(kept)
    lab.carrier()
    lab.ssh(peer, "systemctl stop heartbeat")
    try:
        _wait(lab, lambda: lab.floating() <= lab.carries(kept)[0] and lab.serving(), hb.deadtime + 60, interval=1,
                   what=f"{kept} to carry the group alone")
        _peer_recorded_dead(lab, kept)
        since = int(lab.ssh(kept, "date +%s").stdout)
        events = AddressEvents(lab)

        def crash_keep_and_start_the_peer():
            lab.ssh(kept, KILL_HEARTBEAT)
            _wait(lab, lambda: lab.ssh(kept, f"systemctl is-active --quiet heartbeat && test -e {render.HEARTBEAT_KEPT}",
                                       check=False).returncode == 0, render.REJOIN_TIMEOUT, interval=0.5,
                       what=f"heartbeat on {kept} to start with the kept addresses")
            lab.ssh(peer, "systemctl start heartbeat")
            lab.wait_settled(master)
            _settled(lab, kept, since)

        longest, _, out = _poll_during(lab, crash_keep_and_start_the_peer)
    finally:
        lab.ssh(peer, "systemctl start heartbeat", check=False)
    return since, events, longest, out


# On request (LVSHA_LAB_EXTRA=1), for CI's time (~1.5 min): it passed twice in the lab, then once
# the backup's guard released instead of keeping (the fail-safe behaviour). Likely cause, fixed
# since: the takeover watch removed its record of the dead peer when heartbeat, killed between its
# hbstatus and nodestatus questions, answered nothing; on that fix it passed three times in a row,
# and the guard now says why it keeps or releases.
# Not every_model: CI's budget (it passed on Debian 13 too, examples/edge, run on request).
@pytest.mark.skipif(os.environ.get("LVSHA_LAB_EXTRA") != "1",
                    reason="on request (CI's time): set LVSHA_LAB_EXTRA=1 to run it")
@pytest.mark.heartbeat_internals
def test_kept_backup_yields_when_the_masters_heartbeat_starts_during_its_initdead(lab):
    """The lab's failure that took the first keep back out: the backup kept the addresses,
    and the master's heartbeat started while the backup's restarted heartbeat was in its
    initdead. Both start, and heartbeat gives the group to its owner, the master (with
    auto_failback on or off), a request delay (10 s) after comm up; the backup's heartbeat
    says 'local' (its own, empty, set). The backup's takeover watch, reading its start's own
    lines (the master heard before initdead ran out), removes the kept addresses at once:
    no address on both at any time (from both kernels' address events), the master alone
    at the end. The outage is heartbeat's request delay and the master's chain."""
    master = lab.cluster.master.name
    backup = lab.other(master)
    since, events, longest, out = _keep_then_start_the_peer(lab, backup)
    record("kept backup, the master's heartbeat started in its initdead: longest client wait", longest)
    on_both = events.read()
    guard, watch = _said(lab, backup, "lvsha-heartbeat-guard", since), _said(lab, backup, "lvsha-takeover-watch", since)
    assert "heartbeat starts with the floating addresses this node kept" in guard, guard
    assert (f"heartbeat heard {master} at its start, before its initdead ran out, "
            f"and gives the group to its owner {master}") in watch, watch
    assert f"{SETTLED}: this node does not carry them" in watch, watch
    assert not on_both, [str(o) for o in on_both]
    assert lab.carries_none(backup) and lab.floating() <= lab.carries(master)[0]
    # heartbeat's own word, read with the owner rule: the master carries ('local' is its own group)
    assert lab.ssh(master, "cl_status rscstatus", check=False).stdout.strip() in ("all", "local")
    assert lab.ssh(backup, "cl_status rscstatus", check=False).stdout.strip() in ("none", "local")
    lab.wait_settled(master)


# The mirror of the kept backup's case, on request (LVSHA_LAB_EXTRA=1): CI's budget (~2 min);
# passed in the lab on examples/monitored (Debian 12), and the owner's branch is tested on fakes.
@pytest.mark.skipif(os.environ.get("LVSHA_LAB_EXTRA") != "1",
                    reason="on request (CI's time): set LVSHA_LAB_EXTRA=1 to run it")
@pytest.mark.heartbeat_internals
def test_kept_master_keeps_serving_when_the_backups_heartbeat_starts_during_its_initdead(lab):
    """The mirror image: the master kept the addresses and the backup's heartbeat starts in
    its initdead. Both start, and heartbeat's start on the master takes its own group with
    them running: no client wait, the backup never carries an address."""
    master = lab.cluster.master.name
    backup = lab.other(master)
    since, events, longest, out = _keep_then_start_the_peer(lab, master)
    record("kept master, the backup's heartbeat started in its initdead: longest client wait", longest)
    on_both = events.read()
    watch = _said(lab, master, "lvsha-takeover-watch", since)
    assert f"heartbeat heard {backup} at its start, before its initdead ran out; this node owns the group" in watch, watch
    assert f"{SETTLED}: this node carries them" in watch, watch
    assert not on_both, [str(o) for o in on_both]
    assert not events.lost(master), events.lost(master)
    assert not any(events.spans[backup].values()), events.spans[backup]  # the backup never held one
    assert longest < 5, out[-2000:]  # about 0, as above
    assert lab.carries_none(backup)


@pytest.mark.heartbeat_internals
def test_a_frozen_heartbeat_is_ended_so_that_one_node_holds_the_addresses_again(lab):
    """SIGSTOP on the active node's heartbeat (a stuck disk looks the same): it sends
    nothing, so its peer takes over after deadtime while it keeps its addresses. Its
    takeover watch ends it once its API has not answered for deadtime, and the guard
    gives the addresses up: two holders for seconds, not until someone notices."""
    active = lab.carrier()
    standby = lab.other(active)
    hb = lab.cluster.heartbeat
    since = int(lab.ssh(active, "date +%s").stdout)
    events = AddressEvents(lab)
    lab.ssh(active, "pkill -STOP -f '^heartbeat: master control process'")
    frozen = time.monotonic()
    both_since = None
    both_for = 0.0
    try:
        def one_holder_again():
            nonlocal both_since, both_for
            on_standby = lab.floating() <= lab.carries(standby)[0]
            on_active = bool(lab.carries(active)[0] & lab.floating())
            now = time.monotonic()
            if on_standby and on_active:
                both_since = both_since or now
            elif both_since is not None:
                both_for, both_since = now - both_since, None
            return on_standby and not on_active

        _wait(lab, one_holder_again, hb.deadtime + 120, interval=1, what=f"{standby} alone to hold the addresses")
    finally:
        lab.ssh(active, "pkill -CONT -f '^heartbeat: master control process'", check=False)
    record("frozen heartbeat on the active node: the peer alone holds the addresses", time.monotonic() - frozen)
    record("frozen heartbeat: both held the addresses for (sampled every ~2 s)", both_for)
    on_both = events.read()  # from both kernels' address events: the exact time, not a sample's
    logged_for = max((o.length for o in on_both), default=0.0)
    record("frozen heartbeat: both held an address for (address events)", logged_for)
    said = lab.ssh(active, f"journalctl -q -o cat --since=@{since} -t lvsha-takeover-watch", check=False).stdout
    assert "heartbeat has not answered for" in said, said
    assert both_for < hb.deadtime + 10, both_for
    assert logged_for < hb.deadtime + 10, [str(o) for o in on_both]
    lab.wait_settled(lab.home_after_return(standby))


HUNG_CONNTRACKD_BOUND = 60  # s: a takeover after a heartbeat stop (~10-20 s) plus conntrackd's 5 s bound, with margin


def test_a_hung_conntrackd_on_the_taker_never_keeps_the_addresses_down(lab):
    """conntrackd stopped, not dead (SIGSTOP: as if hung), on the standby; the active's
    heartbeat (keepalived: keepalived, whose notify runs the same lvsha-conntrackd)
    stops. The takeover's conntrackd requests end at their time bound and the
    standby serves every site all the same; its journal names the hung request."""
    if not lab.cluster.state_sync.enabled:
        pytest.skip(f"{lab.cluster.name} syncs no state: no conntrackd")
    active = lab.carrier()
    standby = lab.other(active)
    since = int(lab.ssh(standby, "date +%s").stdout)
    lab.ssh(standby, "pkill -STOP -x conntrackd")
    try:
        lab.ssh(active, f"systemctl stop {lab.engine_service}")
        took = lab.wait_settled(standby, timeout=HUNG_CONNTRACKD_BOUND)
        record(f"takeover after {lab.engine_service} stop, the taker's conntrackd hung", took)
        def said() -> str:
            return lab.ssh(standby, f"journalctl -q -o cat --since=@{since} -t lvsha-conntrackd", check=False).stdout

        if lab.engine == "keepalived":  # its notify runs as the addresses move: the bound may end after they serve
            _wait(lab, lambda: "(conntrackd hung?)" in said(), HUNG_CONNTRACKD_BOUND, interval=2,
                       what=f"lvsha-conntrackd on {standby} to give up on the hung conntrackd")
        assert "(conntrackd hung?)" in said(), said()
    finally:
        lab.ssh(standby, "pkill -CONT -x conntrackd", check=False)
        lab.ssh(active, f"systemctl start {lab.engine_service}", check=False)
    lab.wait_settled(lab.home_after_return(standby))
    assert lab.carries_none(lab.other(lab.home_after_return(standby)))
