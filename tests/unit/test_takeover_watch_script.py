"""files/heartbeat/lvsha-takeover-watch, run for real against fakes of what it calls:
journalctl (prints a journal file and ends, as if the journal stopped; asked for one
start's syslog lines, it prints that start's journal file), renice, logger, heartbeat's
cl_status (the peer's status, and this node's resources as a sequence of answers),
systemctl (the unit's invocation ID), iptables-save (the peer's packet count), the
connection state script and the floating addresses' resource script (which answers
`status` from a file).

The lab's power-off and heartbeat-stop takeover tests run it under the real heartbeat.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from lvsha import render
from lvsha.lab import wait_until
from tests.unit import test_takeover_script as takeover
from tests.unit.test_heartbeat_scripts import ADDRESSES, INVOCATION, NODE, PEER

SCRIPT = str(render.FILES / "heartbeat" / Path(render.TAKEOVER_WATCH).name)
# heartbeat logs each line twice: its syslog copy and its stderr (with a date in front)
ACQUIRING = [f"[2980]: info: Resources being acquired from {PEER.name}.",
             f"Nov 28 08:38:43 {NODE.name} heartbeat: [2980]: info: Resources being acquired from {PEER.name}."]

FAKES = {
    # --follow: the journal, then (with "follow") it stays open as a real --follow does;
    # one start's lines (_SYSTEMD_INVOCATION_ID=ID): that start's journal file, journal-ID,
    # or (with "journal-slow") nothing for a minute, as a journald too busy to answer
    "journalctl": """
        echo "journalctl $*" >> "$FAKE/calls"
        case " $* " in
        *" --follow "*) cat "$FAKE/journal"; [ -f "$FAKE/follow" ] && exec sleep 60; exit 0 ;;
        esac
        [ -f "$FAKE/journal-slow" ] && exec sleep 60
        for arg; do case $arg in _SYSTEMD_INVOCATION_ID=*) cat "$FAKE/journal-${arg#*=}" 2>/dev/null ;; esac; done
        exit 0""",
    # heartbeat's API: answers at once (the peer's status from a file; this node's resources
    # from a list, one answer a call, the last one kept), or never while heartbeat is frozen
    "cl_status": """
        [ -f "$FAKE/frozen" ] && exec sleep 60
        echo "cl_status $*" >> "$FAKE/calls"
        case $1 in
        nodestatus) cat "$FAKE/peer-status" 2>/dev/null ;;
        rscstatus)
            head -n 1 "$FAKE/resources" 2>/dev/null
            [ "$(wc -l < "$FAKE/resources" 2>/dev/null || echo 0)" -gt 1 ] && sed -i 1d "$FAKE/resources" ;;
        esac
        exit 0""",
    "systemctl": """
        echo "systemctl $*" >> "$FAKE/calls"
        case $1 in
        is-active) cat "$FAKE/unit-state" 2>/dev/null || echo active ;;
        show) [ "$3" = InvocationID ] && cat "$FAKE/invocation" 2>/dev/null ;;
        esac
        exit 0""",
    # the firewall's count of the peer's heartbeat packets, on two links ("no-count": no heartbeat rule loaded)
    "iptables-save": """
        echo "iptables-save $*" >> "$FAKE/calls"
        [ -f "$FAKE/no-count" ] && { echo "*filter"; echo COMMIT; exit 0; }
        n=$(cat "$FAKE/packets" 2>/dev/null || echo 40)
        echo "*filter"
        echo "[$n:$((n * 150))] -A INPUT -i eth1 -s 192.168.0.2/32 -p udp -m udp --dport $PORT -j ACCEPT"
        echo "[$n:$((n * 150))] -A INPUT -i eth0 -s 10.0.0.252/32 -p udp -m udp --dport $PORT -j ACCEPT"
        echo COMMIT""",
    "logger": 'shift 2; [ "$1" = -- ] && shift; echo "logged $*" >> "$FAKE/calls"',
    "renice": 'echo "renice $*" >> "$FAKE/calls"',
    "chrt": 'echo "chrt $*" >> "$FAKE/calls"',  # scheduling changes recorded, never made here
    "state": 'echo "state $*" >> "$FAKE/calls"; exit "$(cat "$FAKE/state-rc" 2>/dev/null || echo 0)"',
    "floating-ips": """
        echo "floating-ips $*" >> "$FAKE/calls"
        eval "action=\\${$#}"
        case $action in
        status) [ -f "$FAKE/carries" ] || exit 3 ;;
        start) [ -f "$FAKE/start-fails" ] && exit 1; touch "$FAKE/carries" ;;
        stop) rm -f "$FAKE/carries" ;;
        esac
        exit 0""",
}


class Fake(takeover.Fake):
    """The planned takeover's fakes folder and settings, with this script's fakes."""

    def __init__(self, root: Path, state_sync: bool = True, balancer=NODE):
        super().__init__(root, state_sync, fakes=FAKES)
        self.node, self.peer = balancer, (PEER if balancer == NODE else NODE)
        if balancer != NODE:  # lvsha.env as rendered for the other balancer: its name and its peer's
            self.env_file.write_text(self.env_file.read_text()
                                     .replace(f"LVSHA_NODE={NODE.name}\n", f"LVSHA_NODE={PEER.name}\n")
                                     .replace(f"LVSHA_PEER={PEER.name}\n", f"LVSHA_PEER={NODE.name}\n"))
            assert f"LVSHA_NODE={PEER.name}\n" in self.env_file.read_text()

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE": str(self.state), "LVSHA_ENV_FILE": str(self.env_file),
                "LVSHA_STATE_DIR": str(self.run_dir), "PORT": str(render.HEARTBEAT_UDP_PORT)}

    @property
    def run_dir(self) -> Path:
        return self.state.parent / "run"

    def run(self, journal: list[str]) -> subprocess.CompletedProcess:
        self.set("journal", "".join(f"{line}\n" for line in journal))
        return subprocess.run([SCRIPT], capture_output=True, text=True, env=self.env(), timeout=30)

    def start(self, **settings: str) -> subprocess.Popen:
        """The watch running, its journal open (as under heartbeat), with fast timers: heartbeat
        asked 0.2 s apart, not a keepalive, this start's lines looked for 2 s, not 5; `settings`
        (lvsha.env's) over these ("": the script's default)."""
        self.set("journal", "")
        self.set("follow")
        timers = {"LVSHA_KEEPALIVE": "1", "LVSHA_DEADTIME": "2", "LVSHA_WATCH_PAUSE": "0.2", "LVSHA_LINES_WAIT": "2",
                  **settings}
        self.env_file.write_text(self.env_file.read_text() + "".join(f"{k}={v}\n" for k, v in timers.items()))
        return subprocess.Popen([SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env(),
                                start_new_session=True)  # its own process group, as heartbeat starts a client

    def actions(self) -> list[str]:
        """What the script did to the node (not how it looked or what it said)."""
        return [c for c in self.calls() if c.startswith(("state", "floating-ips")) and not c.endswith(" status")]


def test_follows_only_what_heartbeat_logs_from_now_on(tmp_path):
    fake = Fake(tmp_path)
    result = fake.run([])
    assert result.returncode == 1  # the journal ended: heartbeat starts the watch again
    assert "journalctl --follow --lines=0 --output=cat SYSLOG_IDENTIFIER=heartbeat" in fake.calls()
    assert fake.calls()[0].startswith("renice -n -10")  # ahead of heartbeat's storm of scripts
    assert fake.actions() == []


def test_takes_over_once_in_the_groups_order_when_heartbeat_acquires_from_the_peer(tmp_path):
    fake = Fake(tmp_path)
    fake.run(["[2980]: info: Received shutdown notice from 'x'.", *ACQUIRING, "[2980]: info: mach_down takeover complete."])
    # connection states committed before the addresses bring traffic; the second copy of the line finds them carried
    assert fake.actions() == ["state start", f"floating-ips {ADDRESSES} start"]
    assert fake.calls().count(f"floating-ips {ADDRESSES} status") == 2
    # real-time while it acts, back to normal after, on the process doing it (not the parent shell)
    chrt = [c for c in fake.calls() if c.startswith("chrt")]
    assert [c.rsplit(" ", 1)[0] for c in chrt] == ["chrt -f -p 10", "chrt -o -p 0"] * 2
    assert len({c.rsplit(" ", 1)[1] for c in chrt}) == 1
    calls = fake.calls()
    assert calls.index(chrt[0]) < calls.index("state start") < calls.index(f"floating-ips {ADDRESSES} start") \
        < len(calls) - 1 - calls[::-1].index(chrt[1])
    assert f"logged heartbeat takes over from {PEER.name}: every floating address added ahead of its resource chain" \
        in fake.calls()


def test_without_state_sync_only_the_addresses(tmp_path):
    fake = Fake(tmp_path, state_sync=False)
    fake.run(ACQUIRING[:1])
    assert fake.actions() == [f"floating-ips {ADDRESSES} start"]


def test_a_node_that_carries_the_group_already_changes_nothing(tmp_path):
    """The backup died (it held nothing): nothing added, no states committed again."""
    fake = Fake(tmp_path)
    fake.set("carries")
    fake.run(ACQUIRING)
    assert fake.actions() == []


def test_other_lines_change_nothing(tmp_path):
    fake = Fake(tmp_path)
    fake.run([
        "[2980]: info: Resource takeover cancelled - shutdown in progress.",  # never while heartbeat stops here
        f"[2980]: info: Resources being acquired from {NODE.name}.",  # not the peer (this node's own name)
        "[2980]: info: Resources being acquired from 10.0.0.250.",  # a ping node
        f"[2980]: info: standby: acquire [all] resources from {PEER.name}",  # lvsha-takeover's, not this one's
        f"[2980]: info: Resources being acquired from {PEER.name}.x",
    ])
    assert fake.actions() == []


def test_a_failed_start_is_said_and_left_to_heartbeats_own_acquisition(tmp_path):
    fake = Fake(tmp_path)
    fake.set("start-fails")
    fake.set("state-rc", "1")
    fake.run(ACQUIRING[:1])
    assert fake.actions() == ["state start", f"floating-ips {ADDRESSES} start"]
    assert f"logged {fake.bin / 'state'} start failed" in fake.calls()
    assert any("adding the floating addresses failed: heartbeat's own acquisition retries" in c for c in fake.calls())


def _stop(watch: subprocess.Popen) -> None:
    """As heartbeat ends a client: its whole process group."""
    os.killpg(watch.pid, signal.SIGTERM)
    watch.communicate(timeout=30)


def test_a_frozen_heartbeat_is_killed_after_deadtime_so_the_guard_releases(tmp_path):
    """SIGSTOP, a stuck disk: heartbeat's API stops answering and its peer takes over
    after deadtime; the watch ends heartbeat's main process, and the guard (ExecStopPost)
    gives the addresses up: two holders for seconds, not until someone notices."""
    fake = Fake(tmp_path)
    fake.set("frozen")
    # each unanswered question ended after 0.5 s, not 2; deadtime 1 s: killed 3 s into the silence, not 4
    watch = fake.start(LVSHA_WATCH_API_TIMEOUT="0.5", LVSHA_DEADTIME="1")
    try:
        wait_until(lambda: "systemctl kill --kill-whom=main --signal=KILL heartbeat.service" in fake.calls(), 30,
                   interval=0.2, what="the watch to end the frozen heartbeat")
        said = [c for c in fake.calls() if c.startswith("logged heartbeat has not answered")]
        assert said and "(deadtime 1: its peer takes over)" in said[0], fake.calls()
        assert fake.calls().count("systemctl kill --kill-whom=main --signal=KILL heartbeat.service") == 1
    finally:
        _stop(watch)


def test_a_heartbeat_that_answers_or_is_stopping_is_left_alone(tmp_path):
    fake = Fake(tmp_path)
    # each unanswered question ended after 0.5 s, not 2; deadtime 1 s: the unit looked at 3 s into the silence, not 4
    watch = fake.start(LVSHA_WATCH_API_TIMEOUT="0.5", LVSHA_DEADTIME="1")
    try:
        wait_until(lambda: fake.calls().count("cl_status hbstatus") >= 4, 30, interval=0.2,
                   what="four answered checks")
        fake.set("unit-state", "deactivating\n")  # systemctl stop heartbeat: its API goes quiet while it stops
        fake.set("frozen")
        wait_until(lambda: fake.calls().count("systemctl is-active heartbeat.service") >= 2, 30, interval=0.2,
                   what="the watch to look at the stopping unit twice")
        assert not any(c.startswith("systemctl kill") for c in fake.calls())
    finally:
        _stop(watch)


def test_a_takeover_adds_the_addresses_lvsha_env_names_now_not_those_it_read_at_start(tmp_path):
    """A deploy added a site after heartbeat started the watch (lvsha.env rewritten, no
    restart: tasks/heartbeat.py): the takeover adds the new set. Here the file is
    rewritten once the watch has read it (by the fake renice, which runs just after)."""
    fake = Fake(tmp_path)
    added = f"{ADDRESSES} 10.0.0.30/24/eth0"
    new_env = tmp_path / "new.env"
    new_env.write_text(fake.env_file.read_text().replace(f'LVSHA_FLOATING_IPS="{ADDRESSES}"',
                                                         f'LVSHA_FLOATING_IPS="{added}"'))
    assert new_env.read_text() != fake.env_file.read_text()
    (fake.bin / "renice").write_text(f'#!/bin/sh\necho "renice $*" >> "$FAKE/calls"\ncp {new_env} "$LVSHA_ENV_FILE"\n')
    fake.run(ACQUIRING[:1])
    assert fake.actions() == ["state start", f"floating-ips {added} start"]


def test_an_unreadable_lvsha_env_at_a_takeover_leaves_the_addresses_read_at_start(tmp_path):
    fake = Fake(tmp_path)
    (fake.bin / "renice").write_text('#!/bin/sh\necho "renice $*" >> "$FAKE/calls"\nrm -f "$LVSHA_ENV_FILE"\n')
    result = fake.run(ACQUIRING[:1])
    assert fake.actions() == ["state start", f"floating-ips {ADDRESSES} start"]
    assert "the floating addresses read at start are used" in result.stderr


# ---- what the guard needs to keep the addresses, and what it kept -------------

def _watching(fake: Fake, until, what: str, **settings: str) -> None:
    watch = fake.start(**settings)
    try:
        wait_until(until, 30, interval=0.2, what=what)
    finally:
        _stop(watch)


def test_records_since_when_heartbeat_calls_the_peer_dead_with_the_peers_packet_count(tmp_path):
    fake = Fake(tmp_path)
    fake.set("peer-status", "dead\n")
    record = fake.run_dir / Path(render.HEARTBEAT_PEER_DEAD).name
    _watching(fake, record.exists, "the record of the dead peer")
    since, packets = record.read_text().split()
    assert packets == "80"  # 40 on each link
    assert abs(int(since) - float(Path("/proc/uptime").read_text().split()[0])) < 10  # seconds since boot
    # unchanged while the count stays (it says since when no packet came)
    watch = fake.start()
    try:
        wait_until(lambda: fake.calls().count("cl_status nodestatus " + PEER.name) >= 6, 30, interval=0.2,
                   what="more checks")
        assert record.read_text().split() == [since, packets]
    finally:
        _stop(watch)
    # a packet after heartbeat said dead (a peer shutting down sends for a few seconds after its
    # notice): the record follows the count, with the time it was seen to move
    fake.set("packets", "41")
    watch = fake.start()
    try:
        wait_until(lambda: record.read_text().split()[1] == "82", 30, interval=0.2, what="the record to follow the count")
        assert int(record.read_text().split()[0]) >= int(since)
        fake.set("peer-status", "active\n")
        wait_until(lambda: not record.exists(), 30, interval=0.2, what="the record to go once the peer is active")
    finally:
        _stop(watch)
    # each change said: written (with the count it was before), and removed (with heartbeat's word)
    said = [c for c in fake.calls() if c.startswith("logged heartbeat calls")]
    assert said[0] == f"logged heartbeat calls {PEER.name} dead: recorded at {since} s after boot, " \
        "the firewall's count of its heartbeat packets 80 (was not recorded)", said
    assert any(c.endswith("the firewall's count of its heartbeat packets 82 (was 80)") for c in said), said
    assert said[-1] == f"logged heartbeat calls {PEER.name} 'active': the record of its death removed", said


@pytest.mark.parametrize("lost", ["no-answer", "no-count"])
def test_the_record_stays_when_heartbeat_does_not_answer_or_the_count_cannot_be_read(tmp_path, lost):
    """The lab's kept backup once released at its heartbeat's kill: the watch asked hbstatus,
    heartbeat was killed, and `cl_status nodestatus` answered nothing; the record went with
    it, and the guard found no record. No answer says nothing of the peer: the record stays
    as it was (since when, the count then), and the guard reads the count again itself. So
    does a count that cannot be read (a firewall reload under way): the guard, reading none
    or another, keeps nothing on it."""
    fake = Fake(tmp_path)
    fake.set("peer-status", "dead\n")
    record = fake.run_dir / Path(render.HEARTBEAT_PEER_DEAD).name
    watch = fake.start()
    try:
        wait_until(record.exists, 30, interval=0.2, what="the record of the dead peer")
        recorded = record.read_text()
        if lost == "no-answer":
            (fake.state / "peer-status").unlink()  # heartbeat killed between hbstatus and nodestatus: nothing printed
        else:
            fake.set("no-count")
        asked = fake.calls().count(f"cl_status nodestatus {PEER.name}")
        wait_until(lambda: fake.calls().count(f"cl_status nodestatus {PEER.name}") >= asked + 3, 30, interval=0.2,
                   what="three more checks")
        assert record.read_text() == recorded
    finally:
        _stop(watch)
    assert not any("removed" in c for c in fake.calls() if c.startswith("logged")), fake.calls()


# ---- settling the addresses kept across heartbeat's restart, once, at the watch's start ----
# heartbeat's syslog lines of the kept start (journal-INVOCATION), as heartbeat 3.0.6 logs them:
# alone through initdead it declares the peer dead and takes the group over before comm comes up
# (E1); a peer heard during initdead brings comm up with nobody declared dead (E2).

SETTLED = "logged the floating addresses kept across heartbeat's restart are settled"
BALANCERS = [NODE, PEER]  # the group's owner (the model's master) and the other node


def _initdead_ran_out(peer) -> list[str]:
    """In the order heartbeat 3.0.6-13 (Debian 12) logged them in the lab: the peer declared
    dead, comm up, then the takeover (the settle must decide on the first line)."""
    return ["[2980]: info: Configuration validated. Starting heartbeat 3.0.6",
            f"[2980]: WARN: node {peer.name}: is dead",
            "[2980]: info: Comm_now_up(): updating status to active",
            "[2980]: WARN: No STONITH device configured.",
            f"[2980]: info: Resources being acquired from {peer.name}.",
            "[2980]: info: Local Resource acquisition completed."]


def _peer_heard_first(peer) -> list[str]:
    return ["[2980]: info: Configuration validated. Starting heartbeat 3.0.6",
            f"[2980]: info: Link {peer.name}:eth1 up.",
            f"[2980]: info: Status update for node {peer.name}: status init",
            "[2980]: info: Comm_now_up(): updating status to active",
            # after comm up: the peer died later (the journal loop's takeover, not the settle's)
            f"[2980]: info: Resources being acquired from {peer.name}."]


def _kept(fake: Fake, lines: list[str] | None, answers: list[str], for_start: str = INVOCATION,
          since: str = "100 80") -> Path:
    """The guard kept the addresses for the start `for_start`; heartbeat runs as INVOCATION,
    its syslog lines `lines` (None: none at all), rscstatus answering `answers` in turn.
    `since`: the record's first two fields (the migration's adopt: "adopt PACKETS")."""
    fake.run_dir.mkdir(exist_ok=True)
    kept = fake.run_dir / Path(render.HEARTBEAT_KEPT).name
    kept.write_text(f"{since} 200 {for_start}\n".replace(" \n", "\n"))
    fake.set("carries")
    fake.set("invocation", f"{INVOCATION}\n")
    if lines is not None:
        fake.set(f"journal-{INVOCATION}", "".join(f"{line}\n" for line in lines))
    fake.set("resources", "".join(f"{answer}\n" for answer in answers))
    return kept


def _settled(fake: Fake, **settings: str) -> list[str]:
    """The watch run until it has settled the kept addresses; what it called."""
    _watching(fake, lambda: any(c.startswith(SETTLED) for c in fake.calls()), "the kept addresses to be settled",
              **settings)
    return fake.calls()


def _removed_at(calls: list[str]) -> int:
    return calls.index(f"floating-ips {ADDRESSES} stop")


def _said(calls: list[str], words: str) -> bool:
    return any(c.startswith("logged") and words in c for c in calls)


@pytest.mark.parametrize("balancer", BALANCERS, ids=["owner", "other"])
def test_kept_addresses_stay_when_heartbeat_took_the_group_before_it_heard_the_peer(tmp_path, balancer):
    """E1: the peer's heartbeat silent through this start's initdead: heartbeat acquired the
    group from it (its chain found the addresses running): they are heartbeat's."""
    fake = Fake(tmp_path, balancer=balancer)
    kept = _kept(fake, _initdead_ran_out(fake.peer), ["transition", "transition", "all"])
    calls = _settled(fake)
    assert fake.actions() == [] and (fake.state / "carries").exists()
    assert not kept.exists()
    assert _said(calls, f"heartbeat took the group over from {fake.peer.name} at its start, before it heard it")
    assert _said(calls, "heartbeat says 'all': the floating addresses kept across its restart are its own again")
    assert calls.count("cl_status rscstatus") == 3  # until heartbeat said something other than transition
    # this start's syslog lines only: heartbeat writes each line to stderr too (another transport)
    (asked,) = [c for c in calls if c.startswith("journalctl") and "--follow" not in c]
    assert f"_SYSTEMD_INVOCATION_ID={INVOCATION}" in asked.split() and "SYSLOG_IDENTIFIER=heartbeat" in asked.split()
    assert "_TRANSPORT=syslog" in asked.split()


@pytest.mark.parametrize("auto_failback", ["on", "off"])
def test_kept_addresses_leave_at_once_on_the_other_node_when_heartbeat_heard_the_peer_first(tmp_path, auto_failback):
    """The lab's failure: the master's heartbeat started during the kept backup's initdead.
    Both start, and heartbeat gives the group to its owner, the master (auto_failback on or
    off alike), a request delay (10 s) after comm up, while the backup's heartbeat answers
    'local' for its own empty set. The backup removes the kept addresses at once, before it
    even asks heartbeat; 'local' afterwards changes nothing."""
    fake = Fake(tmp_path, balancer=PEER)
    fake.env_file.write_text(fake.env_file.read_text().replace("LVSHA_AUTO_FAILBACK=on\n",
                                                               f"LVSHA_AUTO_FAILBACK={auto_failback}\n"))
    assert f"LVSHA_AUTO_FAILBACK={auto_failback}\n" in fake.env_file.read_text()
    kept = _kept(fake, _peer_heard_first(NODE), ["transition", "transition", "local"])
    calls = _settled(fake)
    assert fake.actions() == [f"floating-ips {ADDRESSES} stop", "state stop"]  # addresses first, then the states
    assert _removed_at(calls) < calls.index("cl_status rscstatus")  # at once, not when heartbeat settles
    assert _said(calls, f"heartbeat heard {NODE.name} at its start, before its initdead ran out, "
                        f"and gives the group to its owner {NODE.name}")
    assert not kept.exists()
    assert calls.count(f"floating-ips {ADDRESSES} stop") == 1  # 'local' on the other node: nothing more


def test_the_owner_heard_the_peer_first_and_keeps_as_heartbeat_takes_its_group(tmp_path):
    """E2 on the master: both starting, heartbeat's start takes its own group with the
    addresses running ('local' on the owner: it carries): nothing moves."""
    fake = Fake(tmp_path, balancer=NODE)
    kept = _kept(fake, _peer_heard_first(PEER)[:-1], ["transition", "transition", "local"])
    calls = _settled(fake)
    assert fake.actions() == [] and not kept.exists()
    assert _said(calls, "this node owns the group: heartbeat's start takes it")
    assert _said(calls, "heartbeat says 'local': the floating addresses kept across its restart are its own again")


def test_the_owner_heard_a_peer_already_holding_the_group_removes_them_once_heartbeat_says_none(tmp_path):
    """A healed partition during the master's initdead: the peer holds the group, stable, and
    keeps it; heartbeat here holds none: removed once it says so (two holders until then, as
    in any partition's heal)."""
    fake = Fake(tmp_path, balancer=NODE)
    _kept(fake, _peer_heard_first(PEER)[:-1], ["transition", "none"])
    calls = _settled(fake)
    assert fake.actions() == [f"floating-ips {ADDRESSES} stop", "state stop"]
    assert _removed_at(calls) > calls.index("cl_status rscstatus")
    assert _said(calls, "heartbeat says 'none': this node does not carry the group")


@pytest.mark.parametrize("balancer", BALANCERS, ids=["owner", "other"])
def test_without_this_starts_lines_the_kept_addresses_leave_at_once_then_follow_heartbeats_word(tmp_path, balancer):
    """No 'Comm_now_up()' in this start's syslog lines (journald without the invocation ID,
    rate-limited, heartbeat's wording changed): not known whether heartbeat took the group,
    so removed at once (never two holders); heartbeat says it carries the group ('all'): added
    back, states first, and heartbeat asked again."""
    fake = Fake(tmp_path, balancer=balancer)
    kept = _kept(fake, _initdead_ran_out(fake.peer)[:1], ["transition", "all"])
    calls = _settled(fake)
    assert fake.actions() == [f"floating-ips {ADDRESSES} stop", "state stop", "state start",
                              f"floating-ips {ADDRESSES} start"]
    assert _removed_at(calls) < calls.index("cl_status rscstatus")
    assert _said(calls, "heartbeat's own lines of this start do not say whether it took the group")
    assert _said(calls, "heartbeat carries the group (all): the floating addresses removed at its start added back")
    assert calls.count("cl_status rscstatus") == 3  # asked again once added
    assert (fake.state / "carries").exists() and not kept.exists()


def _lines_asked(calls: list[str]) -> int:
    """How many times the watch asked journald for this start's lines."""
    return len([c for c in calls if c.startswith("journalctl") and f"_SYSTEMD_INVOCATION_ID={INVOCATION}" in c])


def test_a_journald_that_does_not_answer_is_given_5_s_in_all_then_they_leave(tmp_path):
    """journald too busy to answer (each journalctl would take a minute): the lines are looked
    for 5 s from the settle's start in all, inside the owner's request delay (10 s from comm
    up), not try after try: the first try is given the time left, and then the deadline is
    past: removed as lines not found, before heartbeat is even asked (never two holders)."""
    fake = Fake(tmp_path, balancer=PEER)
    kept = _kept(fake, _peer_heard_first(NODE), ["local"])
    fake.set("journal-slow")
    calls = _settled(fake, LVSHA_LINES_WAIT="")  # the script's own 5 s
    assert _lines_asked(calls) == 1
    assert fake.actions() == [f"floating-ips {ADDRESSES} stop", "state stop"]
    assert _removed_at(calls) < calls.index("cl_status rscstatus")
    assert _said(calls, "heartbeat's own lines of this start do not say whether it took the group")
    assert not kept.exists()


@pytest.mark.parametrize("packets", ["80", "-"], ids=["count", "no-count"])
def test_the_migrations_adopt_record_is_settled_as_kept_addresses_are(tmp_path, packets):
    """lvsha-heartbeat-guard's adopt: "adopt PACKETS KEPT_AT INVOCATION" ("-" when the
    firewall's count could not be read): heartbeat alone took the group: kept, nothing moves."""
    fake = Fake(tmp_path, balancer=NODE)
    kept = _kept(fake, _initdead_ran_out(PEER), ["all"], since=f"adopt {packets}")
    calls = _settled(fake)
    assert fake.actions() == [] and not kept.exists()
    assert _lines_asked(calls) >= 1 and not _said(calls, "recorded for another start")
    assert _said(calls, f"heartbeat took the group over from {PEER.name} at its start, before it heard it")


@pytest.mark.parametrize("packets", ["80", "-"], ids=["count", "no-count"])
def test_the_migrations_adopt_record_without_this_starts_lines_follows_heartbeats_word(tmp_path, packets):
    fake = Fake(tmp_path, balancer=NODE)
    _kept(fake, [], ["all"], since=f"adopt {packets}")
    calls = _settled(fake)
    assert _lines_asked(calls) >= 1 and not _said(calls, "recorded for another start")
    assert _said(calls, "heartbeat's own lines of this start do not say whether it took the group")
    assert fake.actions() == [f"floating-ips {ADDRESSES} stop", "state stop", "state start",
                              f"floating-ips {ADDRESSES} start"]


def test_added_back_then_let_go_they_leave_again(tmp_path):
    fake = Fake(tmp_path, balancer=PEER)
    _kept(fake, None, ["all", "transition", "none"])
    calls = _settled(fake)
    assert fake.actions() == [f"floating-ips {ADDRESSES} stop", "state stop", "state start",
                              f"floating-ips {ADDRESSES} start", f"floating-ips {ADDRESSES} stop", "state stop"]
    assert _said(calls, "heartbeat let the group go while they were added back (it says 'none')")
    assert not (fake.state / "carries").exists()


def test_without_this_starts_lines_the_other_node_leaves_them_to_the_owner(tmp_path):
    fake = Fake(tmp_path, balancer=PEER)
    _kept(fake, [], ["transition", "local"])
    _settled(fake)
    assert fake.actions() == [f"floating-ips {ADDRESSES} stop", "state stop"]


def test_a_record_of_another_start_is_not_read_in_this_starts_lines(tmp_path):
    """The record names a start other than heartbeat's now: its lines say nothing about
    this one; removed at once, then heartbeat's word."""
    fake = Fake(tmp_path, balancer=PEER)
    _kept(fake, _initdead_ran_out(NODE), ["all"], for_start="0" * 32)
    calls = _settled(fake)
    assert not any(c.startswith("journalctl") and "--follow" not in c for c in calls)
    assert _said(calls, f"recorded for another start of heartbeat ({'0' * 32}, this one {INVOCATION})")
    assert fake.actions() == [f"floating-ips {ADDRESSES} stop", "state stop", "state start",
                              f"floating-ips {ADDRESSES} start"]


def test_a_record_naming_no_start_is_not_read_either(tmp_path):
    fake = Fake(tmp_path, balancer=PEER)
    _kept(fake, _initdead_ran_out(NODE), ["local"], for_start="")
    calls = _settled(fake)
    assert not any(c.startswith("journalctl") and "--follow" not in c for c in calls)
    assert fake.actions() == [f"floating-ips {ADDRESSES} stop", "state stop"]


def test_nothing_kept_nothing_settled(tmp_path):
    fake = Fake(tmp_path)
    fake.set("carries")
    watch = fake.start()
    try:
        wait_until(lambda: fake.calls().count("cl_status hbstatus") >= 3, 30, interval=0.2, what="three checks")
    finally:
        _stop(watch)
    calls = fake.calls()
    assert not any(c.startswith("journalctl") and "--follow" not in c for c in calls)
    assert "cl_status rscstatus" not in calls and "systemctl show -P InvocationID heartbeat.service" not in calls
    assert fake.actions() == []


@pytest.mark.parametrize("peer, kept_on", [("dead", True), ("active", False), ("", False)])
def test_heartbeat_never_saying_keeps_them_only_while_it_calls_the_peer_dead(tmp_path, peer, kept_on):
    """rscstatus 'transition' for LVSHA_RSC_WAIT s (heartbeat's FIFO race, a long chain):
    with the peer's heartbeat dead nobody else can carry them; otherwise they leave."""
    fake = Fake(tmp_path, balancer=PEER)
    fake.env_file.write_text(fake.env_file.read_text() + "LVSHA_RSC_WAIT=2\n")
    _kept(fake, _initdead_ran_out(NODE), ["transition"])
    fake.set("peer-status", f"{peer}\n")
    calls = _settled(fake)
    assert fake.actions() == ([] if kept_on else [f"floating-ips {ADDRESSES} stop", "state stop"])
    assert calls.count("cl_status rscstatus") >= 2
    if kept_on:
        assert _said(calls, f"the kept floating addresses stay ({NODE.name}'s heartbeat is dead")
    else:
        assert _said(calls, "heartbeat did not say in 2 s whether it carries the group ('transition')")


@pytest.mark.parametrize("peer, back", [("dead", True), ("active", False), ("", False)])
def test_heartbeat_never_saying_after_they_were_removed_adds_them_back_only_while_it_calls_the_peer_dead(
        tmp_path, peer, back):
    """Removed at the settle's start (no lines of this start), then no answer for
    LVSHA_RSC_WAIT s: with the peer's heartbeat dead only this node can serve: added back,
    states first; otherwise they stay removed. Said either way."""
    fake = Fake(tmp_path, balancer=PEER)
    fake.env_file.write_text(fake.env_file.read_text() + "LVSHA_RSC_WAIT=2\n")
    _kept(fake, None, ["transition"])
    fake.set("peer-status", f"{peer}\n")
    calls = _settled(fake)
    removed = [f"floating-ips {ADDRESSES} stop", "state stop"]
    assert fake.actions() == (removed + ["state start", f"floating-ips {ADDRESSES} start"] if back else removed)
    assert (fake.state / "carries").exists() == back
    assert calls.count("cl_status rscstatus") >= 2
    silent = "heartbeat did not say in 2 s whether it carries the group ('transition')"
    if back:
        assert _said(calls, f"{silent}, and {NODE.name}'s heartbeat is dead: nobody else can carry them: "
                            "the floating addresses removed at its start added back")
    else:
        assert _said(calls, f"{silent}, {NODE.name}'s heartbeat is '{peer or 'unknown'}': "
                            "the floating addresses removed at its start stay removed")


def test_a_watch_started_again_settles_nothing_twice(tmp_path):
    """The record is claimed at the settle's start: a watch heartbeat starts again later
    (the journal stopped) finds none, whatever heartbeat's lines of that start said."""
    fake = Fake(tmp_path, balancer=PEER)
    kept = _kept(fake, _peer_heard_first(NODE), ["all"])
    _settled(fake)
    assert not kept.exists()
    (fake.state / "calls").unlink()
    fake.set("carries")  # heartbeat took the group later (the master died): the watch's again
    watch = fake.start()
    try:
        wait_until(lambda: fake.calls().count("cl_status hbstatus") >= 3, 30, interval=0.2, what="three checks")
    finally:
        _stop(watch)
    assert fake.actions() == []
