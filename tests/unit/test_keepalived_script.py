"""files/keepalived/lvsha-keepalived, run for real against fakes of the programs it
calls: keepalived's notify drives conntrackd's primary/backup script and the IPVS sync
daemons' unit on every VRRP transition and never fails; `reach` is a group ping that
succeeds while one address answers; `record` keeps the sha1 of the file keepalived runs."""

import fcntl
import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from lvsha import render
from tests.unit.fakes import fake_programs

PROGRAM = str(render.FILES / "keepalived" / Path(render.KEEPALIVED_PROGRAM).name)


@pytest.fixture
def run(tmp_path):
    calls = tmp_path / "calls"
    fake_programs(tmp_path, {
        # conntrackd's primary/backup script and systemctl: each call recorded, failing on demand
        "state-script": 'echo "state-script $*" >> "$FAKE/calls"; [ ! -e /proc/$$/fd/9 ] || echo "lock inherited" >> "$FAKE/calls"; '
                        '[ ! -f "$FAKE/state-fails" ] || { echo broken >&2; exit 1; }',
        # a state script whose start holds on until $FAKE/release exists (a slow conntrackd)
        "slow-state": 'echo "begin $1" >> "$FAKE/calls"; if [ "$1" = start ]; then '
                      'while [ ! -f "$FAKE/release" ]; do sleep 0.05; done; fi; echo "end $1" >> "$FAKE/calls"',
        "systemctl": 'echo "systemctl $*" >> "$FAKE/calls"; [ ! -f "$FAKE/systemctl-fails" ] || exit 1',
        # ping: the addresses listed in $FAKE/answering answer; those in $FAKE/hanging wait
        # (as a dead host's ping does for its -W) until $FAKE/release exists
        "ping": 'for a; do :; done; echo "$*" >> "$FAKE/pinged"; if grep -qx "$a" "$FAKE/hanging" 2>/dev/null; then '
                'while [ ! -f "$FAKE/release" ]; do sleep 0.05; done; exit 1; fi; grep -qx "$a" "$FAKE/answering" 2>/dev/null',
        "logger": 'shift 3; echo "$*" >> "$FAKE/logged"',
    })

    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKE": str(tmp_path), "LVSHA_SYSTEMCTL": str(tmp_path / "systemctl"),
           "LVSHA_PING": str(tmp_path / "ping"), "LVSHA_NOTIFY_LOCK": str(tmp_path / "run" / "notify.lock"),
           "LVSHA_VRRP_STATE": str(tmp_path / "run" / "vrrp-state"),
           "LVSHA_FAILOVER_FILE": str(tmp_path / "run" / "vrrp-failover"),
           "LVSHA_HOLD_FILE": str(tmp_path / "lib" / "vrrp-hold")}

    def run(*args, **more):
        result = subprocess.run([PROGRAM, *args], capture_output=True, text=True, env={**env, **more}, timeout=30)
        made = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return result, made

    def start(*args):
        return subprocess.Popen([PROGRAM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    run.dir, run.start, run.lock = tmp_path, start, Path(env["LVSHA_NOTIFY_LOCK"])
    run.state, run.failover = Path(env["LVSHA_VRRP_STATE"]), Path(env["LVSHA_FAILOVER_FILE"])
    run.hold = Path(env["LVSHA_HOLD_FILE"])
    return run


def _notify(run, state, state_script=None, unit="lvsha-ipvs-sync.service"):
    script = state_script or str(run.dir / "state-script")
    return run("notify", script, unit, "INSTANCE", "lvsha", state, "150")


def test_master_makes_conntrackd_primary_and_keeps_the_sync_daemons_running(run):
    result, calls = _notify(run, "MASTER")
    assert result.returncode == 0, result.stderr
    assert calls == ["state-script start", "systemctl start --no-block lvsha-ipvs-sync.service"]


@pytest.mark.parametrize("state", ["MASTER", "BACKUP", "FAULT", "STOP"])
def test_each_transition_records_the_state_it_applies(run, state):
    """/run/lvsha/vrrp-state: one word and a newline (`lvsha status` and the metrics read it),
    renamed into place (no temporary file left beside it)."""
    result, _ = _notify(run, state)
    assert result.returncode == 0, result.stderr
    assert run.state.read_text() == f"{state}\n"
    assert sorted(p.name for p in run.state.parent.iterdir() if p.name.startswith("vrrp-state")) == ["vrrp-state"]


def test_the_recorded_state_is_the_newest_one_applied(run):
    _notify(run, "MASTER")
    _notify(run, "BACKUP")
    assert run.state.read_text() == "BACKUP\n"
    result, _ = _notify(run, "DELETED")  # unknown: nothing applied, nothing recorded
    assert result.returncode == 0 and run.state.read_text() == "BACKUP\n"


def test_a_state_that_cannot_be_recorded_never_fails_the_transition(run):
    result, calls = run("notify", str(run.dir / "state-script"), "-", "INSTANCE", "lvsha", "MASTER", "150",
                        LVSHA_VRRP_STATE=str(run.dir / "state-script" / "vrrp-state"))  # under a file: unwritable
    assert result.returncode == 0 and calls == ["state-script start"]
    assert "could not write MASTER" in (run.dir / "logged").read_text()


def test_failover_writes_the_tracked_file_keepalived_reads(run):
    """keepalived's vrrp_track_file reads an integer; the file is renamed into place
    (keepalived watches the directory: one change, read whole)."""
    result, _ = run("failover", "show")
    assert result.returncode == 0 and result.stdout == "0\n"  # no file: the model's priority
    for value in ("1", "0"):
        result, _ = run("failover", value)
        assert result.returncode == 0, result.stderr
        assert run.failover.read_text() == f"{value}\n"
        assert run("failover", "show")[0].stdout == f"{value}\n"
    assert [p.name for p in run.failover.parent.iterdir() if p.name.startswith("vrrp-failover")] == ["vrrp-failover"]


@pytest.mark.parametrize("args", [[], ["2"], ["yes"], ["1", "0"]])
def test_failover_takes_0_or_1_only(run, args):
    result, _ = run("failover", *args)
    assert result.returncode == 2 and "usage" in result.stderr and not run.failover.exists()


@pytest.mark.parametrize("state", ["BACKUP", "FAULT", "STOP"])
def test_leaving_master_makes_conntrackd_backup(run, state):
    result, calls = _notify(run, state)
    assert result.returncode == 0, result.stderr
    # STOP is keepalived stopping (a shutdown, a restart): no unit is started then
    sync = [] if state == "STOP" else ["systemctl start --no-block lvsha-ipvs-sync.service"]
    assert calls == ["state-script stop", *sync]


def _wait_for(path, text, limit=30):
    """Until `path` holds the line `text`; a failure after `limit` seconds (it never came)."""
    deadline = time.monotonic() + limit
    while text not in (path.read_text().splitlines() if path.exists() else []):
        assert time.monotonic() < deadline, f"{path} never held {text!r}"
        time.sleep(0.05)


def test_two_notifies_started_together_apply_in_turn(run):
    """keepalived does not wait for a notify before it starts the next: a BACKUP
    following a MASTER whose conntrackd start is slow waits for it to end."""
    script = str(run.dir / "slow-state")
    first = run.start("notify", script, "lvsha-ipvs-sync.service", "INSTANCE", "lvsha", "MASTER", "150")
    _wait_for(run.dir / "calls", "begin start")
    second = run.start("notify", script, "lvsha-ipvs-sync.service", "INSTANCE", "lvsha", "BACKUP", "150")
    try:
        second.wait(timeout=1)  # it would end by now if it did not wait its turn
    except subprocess.TimeoutExpired:
        pass
    (run.dir / "release").touch()
    assert first.wait(timeout=30) == 0 and second.wait(timeout=30) == 0
    calls = (run.dir / "calls").read_text().splitlines()
    assert calls == ["begin start", "end start", "systemctl start --no-block lvsha-ipvs-sync.service",
                     "begin stop", "end stop", "systemctl start --no-block lvsha-ipvs-sync.service"]


def test_notifies_queued_behind_one_end_with_the_newest_state(run):
    """A MASTER then a BACKUP both waiting for a notify still running: the lock serves
    waiters in no particular order, so whichever goes first applies the newest (BACKUP)."""
    run.lock.parent.mkdir(parents=True, exist_ok=True)
    script = str(run.dir / "state-script")
    with open(run.lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the notify before them
        waiting = []
        for state in ("MASTER", "BACKUP"):
            waiting.append(run.start("notify", script, "-", "INSTANCE", "lvsha", state, "150"))
            _wait_for(Path(f"{run.lock}.wanted"), state)
    assert [p.wait(timeout=30) for p in waiting] == [0, 0]
    assert (run.dir / "calls").read_text().splitlines() == ["state-script stop", "state-script stop"]
    assert "INSTANCE lvsha was MASTER, is BACKUP since: applying BACKUP" in (run.dir / "logged").read_text()


def test_what_a_notify_starts_does_not_hold_the_lock(run):
    """conntrackd's script leaves work in the background: the next transition must not wait for it."""
    _, calls = _notify(run, "MASTER")
    assert "lock inherited" not in calls and run.lock.exists()


def test_a_notify_waits_for_the_one_before_only_so_long_and_says_so(run):
    run.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(run.lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a notify before it that never ends
        result, calls = run("notify", str(run.dir / "state-script"), "lvsha-ipvs-sync.service", "INSTANCE", "lvsha",
                            "BACKUP", "150", LVSHA_NOTIFY_WAIT="1")
    assert result.returncode == 0 and calls[0] == "state-script stop"  # applied all the same
    assert (f"INSTANCE lvsha is BACKUP: waited 1 s for the transition before it to end (lock {run.lock}): "
            "applying this one without it") in (run.dir / "logged").read_text()


def test_without_state_sync_nothing_is_driven(run):
    result, calls = run("notify", "-", "-", "INSTANCE", "lvsha", "MASTER", "150")
    assert result.returncode == 0 and calls == []
    assert "INSTANCE lvsha is MASTER" in (run.dir / "logged").read_text()


def test_a_failing_conntrackd_never_fails_the_transition(run):
    (run.dir / "state-fails").touch()
    (run.dir / "systemctl-fails").touch()
    result, calls = _notify(run, "MASTER")
    assert result.returncode == 0
    assert calls == ["state-script start", "systemctl start --no-block lvsha-ipvs-sync.service"]
    logged = (run.dir / "logged").read_text()
    assert "state-script start failed: broken" in logged and "could not start lvsha-ipvs-sync.service" in logged


def test_an_unknown_state_does_nothing(run):
    result, calls = _notify(run, "DELETED")
    assert result.returncode == 0 and calls == []


def test_a_notify_missing_its_arguments_is_a_usage_error(run):
    result, calls = run("notify", "-", "-", "INSTANCE")
    assert result.returncode == 2 and calls == [] and "usage" in result.stderr


@pytest.mark.parametrize("answering, expected", [([], 1), (["192.168.0.7"], 0), (["192.168.0.1", "192.168.0.4"], 0)])
def test_reach_succeeds_while_one_address_answers(run, answering, expected):
    (run.dir / "answering").write_text("".join(f"{a}\n" for a in answering))
    result, _ = run("reach", "1", "192.168.0.1", "192.168.0.4", "192.168.0.7")
    assert result.returncode == expected
    # Each once, waiting WAIT. The check returns at the first answer: pings started in the
    # background may record themselves after it returned (they end within WAIT).
    wanted = [f"-c 1 -n -q -W 1 192.168.0.{i}" for i in (1, 4, 7)]
    deadline = time.monotonic() + 5
    while len((run.dir / "pinged").read_text().splitlines()) < len(wanted) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted((run.dir / "pinged").read_text().splitlines()) == wanted


def test_reach_ends_at_the_first_answer_not_waiting_for_a_dead_host(run):
    """A dead host's ping waits its -W: the check must not (it would pass keepalived's
    timeout on both nodes, and both would yield)."""
    (run.dir / "answering").write_text("192.168.0.4\n")
    (run.dir / "hanging").write_text("192.168.0.1\n192.168.0.7\n")
    try:
        result, _ = run("reach", "1", "192.168.0.1", "192.168.0.4", "192.168.0.7")
    finally:
        (run.dir / "release").touch()
    assert result.returncode == 0, result.stderr


def test_reach_without_its_wait_or_an_address_is_a_usage_error(run):
    result, _ = run("reach", "192.168.0.1")
    assert result.returncode == 2 and "usage" in result.stderr


def test_record_keeps_the_sha1_of_the_file_keepalived_runs(run):
    config = run.dir / "keepalived.conf"
    config.write_text("vrrp_instance lvsha {}\n")
    record = run.dir / "run" / "lvsha" / "keepalived.applied"
    result, _ = run("record", str(config), str(record))
    assert result.returncode == 0, result.stderr
    assert record.read_text() == hashlib.sha1(config.read_bytes()).hexdigest() + "\n"
    result, _ = run("record", str(run.dir / "missing.conf"), str(record))
    assert result.returncode != 0
    assert record.read_text() == hashlib.sha1(config.read_bytes()).hexdigest() + "\n"  # left as it was


def test_hold_writes_its_own_tracked_file_and_leaves_the_failover_request_alone(run):
    """The migration's hold (keepalived.conf's lvsha_hold, weight 0: non-zero is FAULT) is a
    file of its own, in a persistent directory created on demand, renamed into place."""
    assert run("hold", "show")[0].stdout == "0\n"  # no file: no hold
    for value in ("1", "0"):
        result, _ = run("hold", value)
        assert result.returncode == 0, result.stderr
        assert run.hold.read_text() == f"{value}\n" and run("hold", "show")[0].stdout == f"{value}\n"
    assert [p.name for p in run.hold.parent.iterdir()] == ["vrrp-hold"]
    assert not run.failover.exists()


@pytest.mark.parametrize("args", [[], ["2"], ["1", "0"]])
def test_hold_takes_0_or_1_only(run, args):
    result, _ = run("hold", *args)
    assert result.returncode == 2 and "usage: lvsha-keepalived hold" in result.stderr and not run.hold.exists()
