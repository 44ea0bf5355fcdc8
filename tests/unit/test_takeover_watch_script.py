"""files/heartbeat/lvsha-takeover-watch, run for real against fakes of what it calls:
journalctl (prints a journal file and ends, as if the journal stopped), renice,
logger, the connection state script and the floating addresses' resource script
(which answers `status` from a file).

The lab's power-off and heartbeat-stop takeover tests run it under the real heartbeat.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from lvsha import render
from lvsha.lab import wait_until
from tests.unit import test_takeover_script as takeover
from tests.unit.test_heartbeat_scripts import ADDRESSES, NODE, PEER

SCRIPT = str(render.FILES / "heartbeat" / Path(render.TAKEOVER_WATCH).name)
# heartbeat logs each line twice: its syslog copy and its stderr (with a date in front)
ACQUIRING = [f"[2980]: info: Resources being acquired from {PEER.name}.",
             f"Nov 28 08:38:43 {NODE.name} heartbeat: [2980]: info: Resources being acquired from {PEER.name}."]

FAKES = {
    # the journal, then (with "follow") it stays open as a real --follow does
    "journalctl": 'echo "journalctl $*" >> "$FAKE/calls"; cat "$FAKE/journal"; '
                  '[ -f "$FAKE/follow" ] && exec sleep 60; exit 0',
    # heartbeat's API: answers at once, or never while heartbeat is frozen
    "cl_status": '[ -f "$FAKE/frozen" ] && exec sleep 60; echo "cl_status $*" >> "$FAKE/calls"; exit 0',
    "systemctl": """
        echo "systemctl $*" >> "$FAKE/calls"
        case $1 in is-active) cat "$FAKE/unit-state" 2>/dev/null || echo active ;; esac
        exit 0""",
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
        esac
        exit 0""",
}


class Fake(takeover.Fake):
    """The planned takeover's fakes folder and settings, with this script's fakes."""

    def __init__(self, root: Path, state_sync: bool = True):
        super().__init__(root, state_sync, fakes=FAKES)

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE": str(self.state), "LVSHA_ENV_FILE": str(self.env_file)}

    def run(self, journal: list[str]) -> subprocess.CompletedProcess:
        self.set("journal", "".join(f"{line}\n" for line in journal))
        return subprocess.run([SCRIPT], capture_output=True, text=True, env=self.env(), timeout=30)

    def start(self) -> subprocess.Popen:
        """The watch running, its journal open (as under heartbeat), with fast timers."""
        self.set("journal", "")
        self.set("follow")
        self.env_file.write_text(self.env_file.read_text() + "LVSHA_KEEPALIVE=1\nLVSHA_DEADTIME=2\n")
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
    watch = fake.start()
    try:
        wait_until(lambda: "systemctl kill --kill-whom=main --signal=KILL heartbeat.service" in fake.calls(), 30,
                   interval=0.2, what="the watch to end the frozen heartbeat")
        said = [c for c in fake.calls() if c.startswith("logged heartbeat has not answered")]
        assert said and "(deadtime 2: its peer takes over)" in said[0], fake.calls()
        assert fake.calls().count("systemctl kill --kill-whom=main --signal=KILL heartbeat.service") == 1
    finally:
        _stop(watch)


def test_a_heartbeat_that_answers_or_is_stopping_is_left_alone(tmp_path):
    fake = Fake(tmp_path)
    watch = fake.start()
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
