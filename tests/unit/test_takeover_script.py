"""files/heartbeat/lvsha-takeover, run for real against fakes of what it calls:
journalctl (follows a journal file), logger (writes to it), heartbeat's
hb_takeover (the peer's release shows as heartbeat's acquisition line, or not),
renice, chrt and the floating addresses' resource script.

The lab's failover test runs it against the real heartbeat and journal.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from lvsha import render
from tests.unit.test_heartbeat_scripts import ADDRESSES, NODE, PEER, rendered_env

SCRIPT = str(render.FILES / "heartbeat" / Path(render.TAKEOVER_SCRIPT).name)
ACQUIRE = f"[771]: info: standby: acquire [all] resources from {PEER.name}"

FAKES = {
    # --follow --since ... --output cat FILTERS: the whole journal file, then what is appended
    "journalctl": 'echo "journalctl $*" >> "$FAKE/calls"; exec tail -n +1 -f "$FAKE/journal"',
    "logger": 'shift 2; [ "$1" = -- ] && shift; echo "$*" >> "$FAKE/journal"',
    "renice": 'echo "renice $*" >> "$FAKE/calls"',
    "chrt": 'echo "chrt $*" >> "$FAKE/calls"',  # scheduling changes recorded, never made here
    "hb_takeover": """
        echo "hb_takeover $*" >> "$FAKE/calls"
        [ -f "$FAKE/hb-takeover-fails" ] && exit 1
        if [ -f "$FAKE/peer-releases" ]; then
            # heartbeat logs the acquisition once the peer has released: later, in the background
            (sleep 0.5; echo "[771]: info: the peer wants to go standby [all]" >> "$FAKE/journal"
             echo "$(cat "$FAKE/peer-releases")" >> "$FAKE/journal") &
        fi
        exit 0""",
    "state": 'echo "state $*" >> "$FAKE/calls"; exit 0',
    "floating-ips": """
        echo "floating-ips $*" >> "$FAKE/calls"
        exit "$(cat "$FAKE/start-rc" 2>/dev/null || echo 0)" """,
}


class Fake:
    def __init__(self, root: Path, state_sync: bool = False, fakes: dict[str, str] = FAKES):
        self.state, self.bin = root / "state", root / "bin"
        self.state.mkdir()
        self.bin.mkdir()
        for name, body in fakes.items():
            path = self.bin / name
            path.write_text("#!/bin/sh\n" + "\n".join(line.strip() for line in body.splitlines()) + "\n")
            path.chmod(0o755)
        self.journal.write_text("[771]: info: heartbeat: started\n")
        self.env_file = root / "lvsha.env"
        # lvsha.env as rendered for the reference master, its scripts replaced by fakes
        env = {**rendered_env(NODE), "LVSHA_FLOATING_IPS_SCRIPT": str(self.bin / "floating-ips"),
               "LVSHA_STATE_SCRIPT": str(self.bin / "state") if state_sync else ""}
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))

    @property
    def journal(self) -> Path:
        return self.state / "journal"

    def set(self, name: str, content: str = "") -> None:
        (self.state / name).write_text(content)

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE": str(self.state), "LVSHA_ENV_FILE": str(self.env_file),
               "LVSHA_HB_TAKEOVER": str(self.bin / "hb_takeover")}
        return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=env, timeout=timeout)

    def calls(self) -> list[str]:
        path = self.state / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def followers_left(self) -> list[str]:
        """Processes still following this fake's journal (the script must leave none)."""
        found = subprocess.run(["pgrep", "-af", f"tail -n \\+1 -f {self.journal}"], capture_output=True, text=True)
        return found.stdout.splitlines()


@pytest.fixture
def fake(tmp_path):
    return Fake(tmp_path)


def test_addresses_are_added_once_heartbeat_starts_acquiring(fake):
    fake.set("peer-releases", ACQUIRE)
    result = fake.run(PEER.name, "10")
    assert result.returncode == 0, result.stderr
    calls = fake.calls()
    assert calls[0].startswith("chrt -f -p 10 ")  # the CPU first, ahead of heartbeat's storm of scripts
    # journalctl may start after the request: it reads from one second before it
    follow = next(call for call in calls if call.startswith("journalctl"))
    assert follow.startswith("journalctl --follow --since @") and follow.endswith(
        "--output cat SYSLOG_IDENTIFIER=heartbeat SYSLOG_IDENTIFIER=lvsha-takeover")
    assert [call for call in calls[1:] if call != follow] == ["hb_takeover all", f"floating-ips {ADDRESSES} start"]
    journal = fake.journal.read_text().splitlines()
    request = next(i for i, line in enumerate(journal) if "takeover request" in line)
    assert journal.index(ACQUIRE) > request  # asked first, then heartbeat acquired
    assert "every floating address added" in journal[-1]
    time.sleep(0.2)
    assert fake.followers_left() == []


def test_an_acquisition_logged_before_the_request_is_not_taken_for_this_one(fake):
    fake.journal.write_text(f"{ACQUIRE}\n")  # an earlier handover, still within --since
    started = time.monotonic()
    result = fake.run(PEER.name, "1")
    assert result.returncode == 1
    assert time.monotonic() - started >= 1  # it waited the whole timeout
    assert not any(call.startswith("floating-ips") for call in fake.calls())
    assert f"did not start acquiring the resources of {PEER.name} within 1 s: nothing added here" in result.stderr
    time.sleep(0.2)
    assert fake.followers_left() == []


def test_an_acquisition_from_another_node_is_not_this_one(fake):
    fake.set("peer-releases", f"[771]: info: standby: acquire [all] resources from {PEER.name}x")
    result = fake.run(PEER.name, "2")
    assert result.returncode == 1
    assert not any(call.startswith("floating-ips") for call in fake.calls())


def test_only_the_peer_can_be_taken_from(fake):
    result = fake.run(NODE.name, "10")
    assert result.returncode == 2
    assert f"{NODE.name} is not the peer of {NODE.name} ({PEER.name})" in result.stderr
    assert fake.calls() == []


@pytest.mark.parametrize("args", [(), (PEER.name, "5s"), (PEER.name, "5", "extra")])
def test_usage_errors_change_nothing(fake, args):
    result = fake.run(*args)
    assert result.returncode == 2
    assert fake.calls() == []


def test_a_failed_request_adds_nothing(fake):
    fake.set("hb-takeover-fails")
    result = fake.run(PEER.name, "10")
    assert result.returncode == 1
    assert "hb_takeover failed" in result.stderr
    assert fake.calls()[-1] == "hb_takeover all"
    time.sleep(0.2)
    assert fake.followers_left() == []


def test_a_failed_start_is_reported(fake):
    fake.set("peer-releases", ACQUIRE)
    fake.set("start-rc", "1")
    result = fake.run(PEER.name, "10")
    assert result.returncode == 1
    assert "adding the floating addresses failed: heartbeat's own acquisition retries" in result.stderr
    assert fake.calls()[-1] == f"floating-ips {ADDRESSES} start"


def test_with_state_sync_the_states_are_committed_before_the_addresses_arrive(tmp_path):
    fake = Fake(tmp_path, state_sync=True)
    fake.set("peer-releases", ACQUIRE)
    result = fake.run(PEER.name, "10")
    assert result.returncode == 0, result.stderr
    calls = fake.calls()
    assert calls.index("state start") < calls.index(f"floating-ips {ADDRESSES} start")
