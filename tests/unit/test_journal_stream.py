"""Every shell program under files/ that logs (logger) says each message once in the journal.

A message goes to syslog through logger (the program's tag) and to stderr too, unless
stderr is the journal's own stream: systemd connects a unit's stderr to journald and names
that stream in JOURNAL_STREAM ("DEVICE:INODE" in decimal, systemd.exec(5)); a program the
unit starts inherits the variable whether or not its stderr is still that stream, so each
program compares the variable with its own fd 2.

Each program is run for real on a path that logs, against a fake logger (and fakes of what
that path calls), with its stderr a socket (journald's stream is one) or a file:
  - named by JOURNAL_STREAM: the message is logged, and not on stderr;
  - not named (the variable names another stream, as inherited by a program whose stderr
    was redirected, or some other value), or no variable (a person at a terminal): the
    message is logged and on stderr, as before.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lvsha import render
from tests.unit import test_takeover_watch_script as takeover_watch
from tests.unit.fakes import fake_programs

# "-t TAG [--] MESSAGE" (one entry: its newlines shown as " | "), or the lines on its stdin
# (an entry each): "TAG: MESSAGE" a line, as the programs write stderr
LOGGER = """
    tag=$2; shift 2; [ "${1:-}" = -- ] && shift
    if [ $# -gt 0 ]; then printf '%s: %s\\n' "$tag" "$(printf '%s' "$*" | sed ':a;N;$!ba;s/\\n/ | /g')"
    else sed "s/^/$tag: /"; fi >> "$LVSHA_TEST_LOGGED"
"""


@dataclass
class Case:
    argv: list[str]
    env: dict[str, str]
    said: str  # part of the message the path logs ("PROGRAM: " in front)
    rc: int
    fakes: dict[str, str] = field(default_factory=dict)


def _program(folder: str, path: str) -> str:
    return str(render.FILES / folder / Path(path).name)


def _env_file(tmp: Path, cluster) -> str:
    """lvsha.env as the deploy renders it for the master."""
    (env,) = [f for f in render.heartbeat_helper_files(cluster, cluster.master) if f.path == render.HEARTBEAT_ENV]
    path = tmp / "lvsha.env"
    path.write_text(env.content)
    return str(path)


def listening(tmp: Path, cluster) -> Case:
    wanted = render.web_server_listens(cluster, cluster.web_hosts[0])
    ss = "".join(f"echo 'LISTEN 0 511 {address} *:*'\n" for address in wanted)
    return Case([_program("lvsha", render.LISTENING_SCRIPT), "0", *wanted], {}, rc=0, fakes={"ss": ss},
                said=f"something listens on each of TCP {' '.join(wanted)}")


def ipvs_ready(tmp: Path, cluster) -> Case:
    config = tmp / "ldirectord.cf"
    config.write_text("")
    return Case([_program("lvsha", render.IPVS_READY_SCRIPT), "--strict", "1"], {"LVSHA_LDIRECTORD_CF": str(config)},
                rc=1, said=f"no virtual= service in {config}")


def floating_ips_log(tmp: Path, cluster) -> Case:
    spec = render.floating_ips_arguments(cluster)[0]
    bad = "not-an-address/" + spec.split("/", 1)[1]
    return Case([_program("heartbeat", render.FLOATING_IPS_SCRIPT), bad, "start"], {}, rc=2,
                said=f"not an IPv4 address in '{bad}'")


def floating_ips_report(tmp: Path, cluster) -> Case:
    """start on a node with none of the addresses: each one added is reported (report, not log)."""
    specs = render.floating_ips_arguments(cluster)
    address, prefix, interface = specs[0].split("/")
    sender = tmp / "send_arp"
    fake_programs(tmp, {"send_arp": "exit 0"})
    return Case([_program("heartbeat", render.FLOATING_IPS_SCRIPT), *specs, "start"],
                {"LVSHA_SEND_ARP": str(sender), "LVSHA_ANNOUNCE": str(sender), "LVSHA_STATE_DIR": str(tmp / "run")},
                rc=0, said=f"added {address}/{prefix} to {interface}",
                fakes={"ip": 'case "$*" in *-batch*) cat > /dev/null ;; esac; exit 0'})


def conntrackd(tmp: Path, cluster) -> Case:
    (tmp / "a-file").write_text("")
    state = tmp / "a-file" / "run"  # cannot be made: start says it cannot write its flag
    return Case([_program("heartbeat", render.CONNTRACKD_SCRIPT), "start"],
                {"LVSHA_STATE_DIR": str(state), "LVSHA_CONNTRACKD_CONFIG": os.devnull}, rc=1,
                said=f"cannot write {state}/conntrackd-primary", fakes={"conntrackd": "exit 0"})


def takeover(tmp: Path, cluster) -> Case:
    node, peer = cluster.master.name, cluster.peer(cluster.master).name
    return Case([_program("heartbeat", render.TAKEOVER_SCRIPT), node], {"LVSHA_ENV_FILE": _env_file(tmp, cluster)},
                rc=2, said=f"{node} is not the peer of {node} ({peer})")


def takeover_watch_(tmp: Path, cluster) -> Case:
    """The watch's own fakes (tests/unit/test_takeover_watch_script.py); the journal ends at once."""
    (tmp / "watch").mkdir()
    fake = takeover_watch.Fake(tmp / "watch")
    fake.set("journal", "")
    return Case([takeover_watch.SCRIPT], fake.env(), rc=1,
                said="the journal stopped; heartbeat starts this watch again")


def heartbeat_guard(tmp: Path, cluster) -> Case:
    return Case([_program("heartbeat", render.HEARTBEAT_GUARD), "adopt", "30"],
                {"LVSHA_ENV_FILE": _env_file(tmp, cluster), "LVSHA_STATE_DIR": str(tmp / "run")}, rc=0,
                said="heartbeat's next start here (within 30 s) keeps the floating addresses this node carries")


def keepalived(tmp: Path, cluster) -> Case:
    return Case([_program("keepalived", render.KEEPALIVED_PROGRAM), "notify", "-", "-", "INSTANCE",
                 render.VRRP_INSTANCE, "MASTER"],
                {"LVSHA_NOTIFY_LOCK": str(tmp / "notify.lock"), "LVSHA_VRRP_STATE": str(tmp / "vrrp-state")}, rc=0,
                said=f"INSTANCE {render.VRRP_INSTANCE} is MASTER")


def migrate(tmp: Path, cluster) -> Case:
    return Case([_program("keepalived", render.MIGRATE_SCRIPT), "arm", "90", "10", str(render.HEARTBEAT_UDP_PORT),
                 *render.floating_ips_arguments(cluster)], {}, rc=0,
                said="armed: the hold is cleared once no floating address answers ARP",
                fakes={"systemctl": "exit 0", "systemd-run": "exit 0"})


def lab_fifo_race(tmp: Path, cluster) -> Case:
    missing = tmp / "no-such-script"
    return Case([str(render.FILES / "lab" / "lvsha-lab-fifo-race"), "arm", str(missing)],
                {"LVSHA_LAB_FIFO_RACE_DIR": str(tmp / "fifo-race")}, rc=1, said=f"no script {missing} to wrap")


CASES = {
    "lvsha-listening": listening,
    "lvsha-ipvs-ready": ipvs_ready,
    "lvsha-floating-ips": floating_ips_log,
    "lvsha-floating-ips report": floating_ips_report,
    "lvsha-conntrackd": conntrackd,
    "lvsha-takeover": takeover,
    "lvsha-takeover-watch": takeover_watch_,
    "lvsha-heartbeat-guard": heartbeat_guard,
    "lvsha-keepalived": keepalived,
    "lvsha-migrate": migrate,
    "lvsha-lab-fifo-race": lab_fifo_race,
}


class Stream:
    """What the program's stderr is: one end of a socket pair (journald's stream is a
    socket) or a file; `named` is its "DEVICE:INODE" as systemd writes JOURNAL_STREAM
    (decimal st_dev and st_ino of fstat)."""

    def __init__(self, kind: str, tmp: Path):
        if kind == "socket":
            self._ours, self._theirs = socket.socketpair()
            self.fd = self._theirs.fileno()
        else:
            self._file = open(tmp / "stderr", "w+b")  # closed by read
            self.fd = self._file.fileno()
        self.kind = kind

    @property
    def named(self) -> str:
        st = os.fstat(self.fd)
        return f"{st.st_dev}:{st.st_ino}"

    def read(self) -> str:
        """Everything written to it (the program has ended; a background part it left
        writes nowhere near it: each program's are sent to /dev/null)."""
        if self.kind == "file":
            self._file.seek(0)
            data = self._file.read()
            self._file.close()
            return data.decode()
        self._theirs.close()
        self._ours.setblocking(False)
        chunks = []
        while True:
            try:
                chunk = self._ours.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        self._ours.close()
        return b"".join(chunks).decode()


def run(case: Case, tmp: Path, stderr: Stream, journal_stream: str | None) -> tuple[int, str, list[str]]:
    """(exit status, stderr, the lines given to logger) of one run of the case's program."""
    fakes = tmp / "fakes"
    fakes.mkdir(exist_ok=True)
    fake_programs(fakes, {"logger": LOGGER, **case.fakes})
    logged = tmp / "logged"
    env = {**case.env, "PATH": f"{fakes}:{case.env.get('PATH', '/usr/bin:/bin')}", "LVSHA_TEST_LOGGED": str(logged)}
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    result = subprocess.run(case.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr.fd, env=env,
                            timeout=60)
    return result.returncode, stderr.read(), logged.read_text().splitlines() if logged.exists() else []


def _said_in(lines: list[str], name: str, said: str) -> bool:
    return any(line.startswith(f"{name}: ") and said in line for line in lines)


def _name(case_id: str) -> str:
    return case_id.split()[0]


@pytest.mark.parametrize("kind", ["socket", "file"])
@pytest.mark.parametrize("case_id", sorted(CASES))
def test_on_the_journal_stream_a_message_is_logged_only(case_id, kind, tmp_path, reference):
    """stderr is the stream JOURNAL_STREAM names (a unit's, or a program its unit started with
    that stderr): the message is given to logger and not written to stderr (it would be a
    second journal line)."""
    case = CASES[case_id](tmp_path, reference)
    stderr = Stream(kind, tmp_path)
    rc, err, logged = run(case, tmp_path, stderr, stderr.named)
    assert rc == case.rc, (err, logged)
    assert _said_in(logged, _name(case_id), case.said), logged
    assert f"{_name(case_id)}: " not in err, err


@pytest.mark.parametrize("case_id", sorted(CASES))
@pytest.mark.parametrize("named", ["another stream", "garbage", "none"])
def test_off_the_journal_stream_a_message_is_on_stderr_too(case_id, named, tmp_path, reference):
    """stderr is not the stream JOURNAL_STREAM names (the variable inherited by a program
    whose stderr was redirected: a live socket's DEVICE:INODE; or a value naming nothing),
    or there is no JOURNAL_STREAM (a person at a terminal): the message is logged and on
    stderr, as it always was."""
    case = CASES[case_id](tmp_path, reference)
    journal = Stream("socket", tmp_path)  # the unit's stream, still open elsewhere
    stderr = Stream("file", tmp_path)
    value = {"another stream": journal.named, "garbage": "0:0 not a stream", "none": None}[named]
    rc, err, logged = run(case, tmp_path, stderr, value)
    journal.read()
    assert rc == case.rc, (err, logged)
    assert _said_in(logged, _name(case_id), case.said), logged
    assert _said_in(err.splitlines(), _name(case_id), case.said), err


def test_a_program_started_by_another_under_the_journal_writes_its_message_where_its_stderr_goes(tmp_path, reference):
    """lvsha-keepalived (keepalived's notify: keepalived.service's journal stream) runs the
    connection state script with its stderr captured, to log what it said when it fails: the
    state script inherits JOURNAL_STREAM but writes its message into the capture, so that the
    notify's line names it; each of the two messages is logged once, none on the journal's stream."""
    state = conntrackd(tmp_path, reference)
    notify = keepalived(tmp_path, reference)
    notify.argv[2] = state.argv[0]
    case = Case(notify.argv, {**notify.env, **state.env}, rc=0, fakes=state.fakes, said=notify.said)
    stderr = Stream("socket", tmp_path)
    rc, err, logged = run(case, tmp_path, stderr, stderr.named)
    assert rc == 0, (err, logged)
    assert _said_in(logged, "lvsha-conntrackd", state.said), logged
    (failed,) = [line for line in logged if line.startswith(f"lvsha-keepalived: {state.argv[0]} start failed: ")]
    assert f"lvsha-conntrackd: {state.said}" in failed, failed  # what the state script wrote to the capture
    assert "lvsha-" not in err, err


def test_every_program_that_logs_is_run_here():
    """A new program under files/ that calls logger is added to CASES (and so checked)."""
    logging = {p.name for p in render.FILES.rglob("*") if p.is_file() and re.search(r"^\s*[^#]*\blogger\b", p.read_text(
        errors="replace"), re.MULTILINE)}
    assert logging == {_name(case_id) for case_id in CASES}
