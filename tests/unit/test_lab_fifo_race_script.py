"""files/lab/lvsha-lab-fifo-race (the lab's injection of heartbeat's FIFO race), run for
real against fakes: `mount --bind` and `umount` (the fake copies the program over the
script and puts the script back), `logger`, heartbeat's scripts (mach_down and
req_resource, each sending its message with ha_clustermsg as /etc/ha.d/shellfuncs does),
and heartbeat's FIFO (a named pipe in tmp, read here without blocking).

What lands in the FIFO is read back with a model of heartbeat's FIFO reader
(cluster-glue's msgfromstream): every message the race leaves is dropped, with the line
heartbeat logs. Its `seen` (whether heartbeat sees it where it runs its scripts) runs
against fakes of systemctl and nsenter. The lab test (tests/lab/test_6_fifo_race.py) runs
it under the real heartbeat; that test's wait for the wrapped runs is run here too, with
a fake lab whose journal reads get no answer.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from lvsha import render

PROGRAM = render.FILES / "lab" / "lvsha-lab-fifo-race"

# ha_clustermsg as /etc/ha.d/shellfuncs has it: ">>>", the fields, "<<<", through cat.
CLUSTERMSG = 'ha_clustermsg() { (echo ">>>"; cat -; echo "<<<") | cat - >> $HA_FIFO; }'
# mach_down with auto_failback off: the foreign resources taken, then its message.
MACH_DOWN = f"""#!/bin/sh
echo "mach_down $*" >> "$FAKE/ran"
{CLUSTERMSG}
ha_clustermsg <<-!MSG
\tt=resource
\trsc_hold=foreign
\tinfo=mach_down
\t!MSG
exit "$(cat "$FAKE/mach_down-rc" 2>/dev/null || echo 0)"
"""
# req_resource: nothing to say when the group is already carried (its status check).
REQ_RESOURCE = f"""#!/bin/sh
echo "req_resource $*" >> "$FAKE/ran"
[ -f "$FAKE/carried" ] && exit 0
{CLUSTERMSG}
ha_clustermsg <<!MSG
t=ip-request-resp
dest=lb-a
ipaddr=$1
weown=yes
ok=OK
!MSG
"""
FAKES = {
    # mount --bind SRC DST: DST kept aside, SRC copied over it (what a bind mount shows)
    "mount": '[ "$1" = --bind ] || exit 64; echo "mount $*" >> "$FAKE/calls"; '
             '[ -f "$FAKE/mount-fails" ] && exit 32; cp -p "$3" "$3.under" && cp -p "$2" "$3"',
    "umount": '[ "$1" = --lazy ] || exit 64; echo "umount $*" >> "$FAKE/calls"; '
              '[ -f "$2.under" ] || exit 32; mv "$2.under" "$2"',
    "logger": 'shift 2; [ "$1" = -- ] && shift; echo "$*" >> "$FAKE/logged"',
    # heartbeat.service's MainPID (a pid of this machine); hanging once told to
    "systemctl": '[ -f "$FAKE/systemctl-hangs" ] && exec sleep 60; '
                 '[ "$*" = "show -p MainPID --value heartbeat.service" ] || exit 64; cat "$FAKE/mainpid"',
    # nsenter -t PID -m COMMAND...: COMMAND here (one mount namespace in the test)
    "nsenter": 'echo "nsenter $*" >> "$FAKE/calls"; [ "$1 $3" = "-t -m" ] || exit 64; shift 3; exec "$@"',
}


def heartbeat_reads(data: str) -> tuple[list[dict[str, str]], list[str]]:
    """What heartbeat's FIFO reader makes of `data`: (messages passed on, lines it logs).
    As msgfromstream: skip to a ">>>" line, then name=value lines up to "<<<"; a line
    without '=' drops the message ("NV failure (msgfromsteam): [LINE]"), and the skip
    starts again; a message without a field is dropped when passed on ("msg2string:
    Message with zero fields")."""
    messages, logged = [], []
    lines = iter(data.splitlines())
    for line in lines:
        if line != ">>>":
            continue
        fields: dict[str, str] = {}
        for field in lines:
            if field == "<<<":
                break
            name, equal, value = field.partition("=")
            if not name or not equal:
                logged.append(f"NV failure (msgfromsteam): [{field}")
                fields = None
                break
            fields[name] = value
        if fields == {}:
            logged.append("msg2string: Message with zero fields")
        elif fields:
            messages.append(fields)
    return messages, logged


class Guest:
    """A guest's heartbeat scripts, FIFO and this program's state directory, in tmp."""

    def __init__(self, root: Path):
        self.root, self.fake, self.bin = root, root / "fake", root / "bin"
        self.state = root / "state"
        self.share = root / "usr-share-heartbeat"
        for folder in (self.fake, self.bin, self.share):
            folder.mkdir()
        for name, body in FAKES.items():
            (self.bin / name).write_text(f"#!/bin/sh\n{body}\n")
            (self.bin / name).chmod(0o755)
        self.scripts = {"mach_down": MACH_DOWN, "req_resource": REQ_RESOURCE}
        for name, body in self.scripts.items():
            (self.share / name).write_text(body)
            (self.share / name).chmod(0o755)
        # the program as the lab test installs it: on the guest's root file system
        self.program = root / "lvsha-lab-fifo-race"
        self.program.write_bytes(PROGRAM.read_bytes())
        self.program.chmod(0o755)
        self.fifo = root / "fifo"
        os.mkfifo(self.fifo)
        # heartbeat's FIFO reader: open before any writer (whose open would block otherwise)
        self.reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)

    def close(self) -> None:
        os.close(self.reader)

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE": str(self.fake), "LVSHA_LAB_FIFO_RACE_DIR": str(self.state)}

    def control(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.program), *args], capture_output=True, text=True, env=self.env(), timeout=30)

    def arm(self) -> subprocess.CompletedProcess:
        return self.control("arm", *(str(self.share / name) for name in self.scripts))

    def heartbeat_runs(self, name: str, *args: str) -> subprocess.CompletedProcess:
        """heartbeat running its script `name` (HA_FIFO set, as shellfuncs would)."""
        env = {**self.env(), "HA_FIFO": str(self.fifo)}
        return subprocess.run([str(self.share / name), *args], capture_output=True, text=True, env=env, timeout=30)

    def fifo_received(self) -> str:
        chunks = []
        while True:
            try:
                chunk = os.read(self.reader, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()

    def read(self, name: str) -> list[str]:
        path = self.fake / name
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def guest(tmp_path):
    made = Guest(tmp_path)
    yield made
    made.close()


def test_the_fakes_alone_send_messages_heartbeat_takes(guest):
    """Unarmed, each script's message reaches heartbeat whole (the model reads it)."""
    assert guest.heartbeat_runs("mach_down", "lb-b").returncode == 0
    assert guest.heartbeat_runs("req_resource", "lvsha-floating-ips::203.0.113.10/24/eth0").returncode == 0
    messages, logged = heartbeat_reads(guest.fifo_received())
    assert logged == []
    assert [m["t"] for m in messages] == ["resource", "ip-request-resp"]


def test_armed_every_message_is_dropped_by_heartbeat_with_the_races_log_line(guest):
    assert guest.arm().returncode == 0
    assert guest.heartbeat_runs("mach_down", "lb-b").returncode == 0
    assert guest.heartbeat_runs("req_resource", "lvsha-floating-ips::203.0.113.10/24/eth0").returncode == 0
    received = guest.fifo_received()
    messages, logged = heartbeat_reads(received)
    assert messages == [], received
    assert logged == ["NV failure (msgfromsteam): [>>>"] * 2, received
    # the originals ran, with heartbeat's arguments, and sent what they always send
    assert guest.read("ran") == ["mach_down lb-b", "req_resource lvsha-floating-ips::203.0.113.10/24/eth0"]
    assert "info=mach_down" in received and "t=ip-request-resp" in received
    said = guest.read("logged")
    assert any(line.startswith("mach_down lb-b: its 1 message(s) written into") and "info=mach_down" in line
               for line in said), said
    # each run's first line: which script, run by whom, in which mount namespace (the lab
    # test checks it is heartbeat's), before anything else it logs
    started = [line for line in said if ": started (" in line]
    assert [line.split(": started", 1)[0] for line in started] == \
        ["mach_down lb-b", "req_resource lvsha-floating-ips::203.0.113.10/24/eth0"], said
    parent = f"{os.getpid()} {Path('/proc/self/comm').read_text().strip()}"  # heartbeat here: this test
    for line in started:
        match = re.fullmatch(r".*: started \(pid (\d+), parent (.+), mount namespace (.+)\)", line)
        assert match and match[2] == parent and match[3] == os.readlink("/proc/self/ns/mnt"), line
    assert said.index(started[0]) < min(said.index(line) for line in said if line.startswith("mach_down lb-b: its"))


def test_concurrent_writers_lose_both_messages_too(guest):
    """Both scripts at once (as heartbeat runs them): whatever the interleaving, nothing passes."""
    assert guest.arm().returncode == 0
    env = {**guest.env(), "HA_FIFO": str(guest.fifo)}
    running = [subprocess.Popen([str(guest.share / name), arg], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
               for name, arg in (("mach_down", "lb-b"), ("req_resource", "group"))]
    assert [p.wait(timeout=30) for p in running] == [0, 0]
    messages, logged = heartbeat_reads(guest.fifo_received())
    assert messages == []
    assert logged and all(line.startswith("NV failure (msgfromsteam)") for line in logged)


def test_a_script_that_sends_nothing_writes_nothing_and_its_exit_status_is_kept(guest):
    assert guest.arm().returncode == 0
    (guest.fake / "carried").touch()  # req_resource: the group is carried already
    assert guest.heartbeat_runs("req_resource", "group").returncode == 0
    assert guest.fifo_received() == ""
    assert "req_resource group: sent no message" in guest.read("logged")
    (guest.fake / "mach_down-rc").write_text("3")
    assert guest.heartbeat_runs("mach_down", "lb-b").returncode == 3


def test_a_run_that_cannot_make_its_spool_file_says_so_and_runs_nothing(guest):
    """mktemp failing (the state directory full or gone): logged after the run's first line,
    exit 1, heartbeat's script not run and nothing written into the FIFO."""
    assert guest.arm().returncode == 0
    (guest.bin / "mktemp").write_text("#!/bin/sh\necho 'mktemp: failed to create file' >&2\nexit 1\n")
    (guest.bin / "mktemp").chmod(0o755)
    ran = guest.heartbeat_runs("mach_down", "lb-b")
    assert ran.returncode == 1
    assert guest.read("ran") == [] and guest.fifo_received() == ""
    said = guest.read("logged")
    assert said[-2].startswith("mach_down lb-b: started (pid "), said
    assert said[-1] == f"mach_down lb-b: cannot make a spool file in {guest.state} (mktemp failed): mach_down not run, " \
        "exit 1", said
    assert "cannot make a spool file" in ran.stderr


def test_disarm_gives_heartbeat_its_own_scripts_back(guest):
    assert guest.arm().returncode == 0
    assert guest.arm().returncode == 0  # armed twice: one mount each, not two
    assert len([c for c in guest.read("calls") if c.startswith("mount")]) == 2
    assert guest.control("disarm").returncode == 0
    for name, body in guest.scripts.items():
        assert (guest.share / name).read_text() == body
    assert guest.heartbeat_runs("mach_down", "lb-b").returncode == 0
    messages, logged = heartbeat_reads(guest.fifo_received())
    assert logged == [] and [m["info"] for m in messages] == ["mach_down"]
    assert guest.control("disarm").returncode == 0  # nothing armed: nothing to do


def test_arm_refuses_a_missing_script_and_a_failed_mount(guest):
    missing = guest.control("arm", str(guest.share / "no-such-script"))
    assert missing.returncode != 0 and "no script" in missing.stderr
    (guest.fake / "mount-fails").touch()
    failed = guest.arm()
    assert failed.returncode != 0 and "cannot mount" in failed.stderr
    assert guest.control("bogus").returncode == 2


# `seen`: whether heartbeat sees the program where it runs its scripts (the lab test's
# check right after `arm`, tests/lab/test_6_fifo_race.py: _as_heartbeat_sees_them).


def _seen(guest, mainpid: int | str = os.getpid(), **settings) -> tuple[int, list[str]]:
    (guest.fake / "mainpid").write_text(f"{mainpid}\n")
    done = subprocess.run([str(guest.program), "seen", *(str(guest.share / name) for name in guest.scripts)],
                          capture_output=True, text=True, env={**guest.env(), **settings}, timeout=60)
    return done.returncode, done.stdout.splitlines()


def test_seen_reads_each_script_in_heartbeats_mount_namespace(guest):
    """Armed: every script is the program as heartbeat's main process sees it (nsenter into
    its mount namespace, named with this shell's on the first line); disarmed: none is."""
    heartbeat = os.getpid()  # heartbeat here: this test's process
    assert guest.arm().returncode == 0
    rc, said = _seen(guest, heartbeat)
    namespace = os.readlink(f"/proc/{heartbeat}/ns/mnt")
    assert rc == 0, said
    assert said[0] == f"heartbeat (pid {heartbeat}): mount namespace {namespace}; this shell: {namespace}"
    assert said[1:] == [f"{guest.share / name}: wrapped" for name in guest.scripts]
    assert [c for c in guest.read("calls") if c.startswith("nsenter")] == [
        f"nsenter -t {heartbeat} -m cmp -s {guest.program} {guest.share / name}" for name in guest.scripts]
    assert guest.control("disarm").returncode == 0
    rc, said = _seen(guest, heartbeat)
    assert rc == 1 and said[1:] == [f"{guest.share / name}: NOT wrapped" for name in guest.scripts], said


def test_seen_an_nsenter_that_fails_is_cannot_tell_not_unwrapped(guest):
    """A read of heartbeat's namespace that fails (nsenter refused: exit 64 from the fake, as
    for a pid gone) is no answer about the script: "cannot tell", never "NOT wrapped"."""
    assert guest.arm().returncode == 0
    rc, said = _seen(guest, os.getpid())
    assert rc == 0
    (guest.bin / "nsenter").write_text("#!/bin/sh\nexit 64\n")
    (guest.bin / "nsenter").chmod(0o755)
    rc, said = _seen(guest, os.getpid())
    assert rc == 1 and said[1:] == [f"{guest.share / name}: cannot tell (nsenter or cmp failed: exit 64)"
                                    for name in guest.scripts], said


def test_seen_fails_without_heartbeat_or_an_answer_from_systemd(guest):
    """No main process (heartbeat stopped: MainPID 0), or systemctl that never answers
    (bounded: LVSHA_LAB_READ_TIMEOUT): exit 1, saying which, no script read."""
    assert guest.arm().returncode == 0
    rc, said = _seen(guest, 0)
    assert (rc, said) == (1, ["heartbeat.service has no main process (MainPID 0)"])
    (guest.fake / "systemctl-hangs").touch()
    rc, said = _seen(guest, LVSHA_LAB_READ_TIMEOUT="1")
    assert rc == 1 and said[0].startswith("systemctl show heartbeat.service failed (exit 124: no answer in 1 s)"), said
    assert len(said) == 1 and not [c for c in guest.read("calls") if c.startswith("nsenter")]
    assert guest.control("seen").returncode == 2  # no script named


# The lab test's wait for heartbeat's wrapped runs, without a lab: a read of the journal
# that gets no answer ends it with the journal shown all the same.


class _UnansweredLab:
    """A lab whose first `unanswered` SSH calls get no answer in their time; the later
    ones print `journal`."""

    def __init__(self, unanswered: int, journal: str = "Nov 26 12:00:00.000001 lb-a heartbeat[42]: its last line"):
        self.unanswered, self.journal, self.calls = unanswered, journal, 0
        self.cluster = SimpleNamespace(heartbeat=SimpleNamespace(deadtime=10))

    def ssh(self, name, command, check=True, timeout=60, input=None):
        self.calls += 1
        if self.calls <= self.unanswered:
            raise subprocess.TimeoutExpired(["ssh", name, command], timeout)
        return subprocess.CompletedProcess(command, 0, stdout=f"{self.journal}\n", stderr="")


# The lab tier's marks (heartbeat_internals...) are registered by tests/lab/conftest.py,
# which the unit tier does not load: importing the lab test module warns of them here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")
@pytest.mark.parametrize("unanswered", [1, 2])
def test_a_journal_read_without_answer_still_ends_the_wait_with_the_journal(unanswered):
    """The wait's own read timing out raises subprocess.TimeoutExpired out of wait_until:
    the failure names it, then shows the journal read again (or, unanswered again, why
    it is not shown), instead of a bare TimeoutExpired."""
    from tests.lab import test_6_fifo_race as lab_test

    lab = _UnansweredLab(unanswered)
    with pytest.raises(AssertionError) as failed:
        lab_test._wait_for_the_wrapped_runs(lab, "lb-a", "lb-b", since=1764158400)
    said = str(failed.value)
    unanswered_read = r"Command '\['ssh', 'lb-a', .journalctl [^\n]*' timed out after 60 seconds"
    assert re.match(rf"{unanswered_read}; lb-a's journal since the arm:\n", said), said
    if unanswered == 1:
        assert said.endswith(f":\n{lab.journal}\n") and lab.calls == 2, said
    else:
        assert re.search(rf":\n\(not read: {unanswered_read}\)$", said) and lab.journal not in said, said
