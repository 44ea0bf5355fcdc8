"""files/heartbeat/lvsha-conntrackd, run for real against a fake conntrackd:
primary commits the peer's states, backup shortens the kernel's timers, and a
failed conntrackd request never stops the addresses from moving."""

import subprocess
import threading
import time
from pathlib import Path

import pytest

from lvsha import render
from lvsha.lab import wait_until

SCRIPT = str(render.FILES / "heartbeat" / Path(render.CONNTRACKD_SCRIPT).name)


@pytest.fixture
def run(tmp_path):
    fake = tmp_path / "conntrackd"
    fake.write_text('#!/bin/sh\necho "$*" >> "$FAKE/calls"\n[ -f "$FAKE/fails" ] && { echo "cannot connect" >&2; exit 1; }\n'
                    '[ -f "$FAKE/hangs" ] && exec sleep 300\n'
                    # "held": every request but the commit waits until the test lets it go
                    'if [ -f "$FAKE/held" ] && [ "$3" != -c ]; then '
                    'n=0; while [ ! -f "$FAKE/go" ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n + 1)); done; fi\n'
                    'exit 0\n')
    fake.chmod(0o755)
    logger = tmp_path / "logger"
    logger.write_text("#!/bin/sh\nexit 0\n")
    logger.chmod(0o755)

    logged = tmp_path / "logged"
    logger.write_text(f'#!/bin/sh\nshift 2; shift; echo "$*" >> {logged}\n')  # logger -t NAME -- MESSAGE

    def run(action, settle=True, config="/etc/conntrackd/conntrackd.conf", bound="2"):
        """Run ACTION; with `settle`, also wait for its background part (its last log line).
        `bound`: LVSHA_CONNTRACKD_TIMEOUT, the seconds a request may take."""
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKE": str(tmp_path), "LVSHA_CONNTRACKD": str(fake),
               "LVSHA_CONNTRACKD_CONFIG": config, "LVSHA_STATE_DIR": str(tmp_path / "run"),
               "LVSHA_CONNTRACKD_TIMEOUT": bound}
        result = subprocess.run([SCRIPT, action], capture_output=True, text=True, env=env, timeout=30)
        done = {"start": "primary", "stop": "backup"}.get(action)
        if done and settle:
            wait_until(lambda: done in (logged.read_text() if logged.exists() else ""), 20, interval=0.1,
                       what=f"{action}'s background part to finish")
            logged.write_text(logged.read_text().replace(done, "(settled)"))
        calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
        (tmp_path / "calls").unlink(missing_ok=True)
        return result, calls

    run.logged = lambda: logged.read_text() if logged.exists() else ""

    run.fail = lambda: (tmp_path / "fails").write_text("")
    run.hang = lambda: (tmp_path / "hangs").write_text("")
    run.hold = lambda: (tmp_path / "held").write_text("")
    run.go = lambda: (tmp_path / "go").write_text("")
    return run


def test_start_commits_then_refreshes_and_is_then_running(run):
    assert run("status")[0].returncode == 3  # at boot: backup
    result, calls = run("start")
    assert result.returncode == 0 and result.stdout.strip() == "running", result.stderr
    config = "-C /etc/conntrackd/conntrackd.conf"
    assert calls == [f"{config} -c", f"{config} -f", f"{config} -R", f"{config} -B"]
    status, _ = run("status")
    assert status.returncode == 0 and status.stdout.strip() == "running"


def test_stop_goes_back_to_backup(run):
    run("start")
    result, calls = run("stop")
    assert result.returncode == 0, result.stderr
    assert calls == ["-C /etc/conntrackd/conntrackd.conf -t", "-C /etc/conntrackd/conntrackd.conf -n"]
    assert run("status")[0].returncode == 3


def test_without_an_external_cache_stop_never_flushes_the_kernels_states(run, tmp_path, reference):
    """keepalived's conntrackd writes the peer's states into the kernel (no external cache):
    `-t` would flush them PurgeTimeout later, and the next takeover would find none."""
    from dataclasses import replace

    for engine, flushes in (("keepalived", False), ("heartbeat", True)):
        cluster = replace(reference, engine=engine)
        (conf,) = [f for f in render.all_files(cluster)[cluster.master.name] if f.path == render.CONNTRACKD_CONF]
        path = tmp_path / f"conntrackd-{engine}.conf"
        path.write_text(conf.content)
        run("start", config=str(path))
        result, calls = run("stop", config=str(path))
        assert result.returncode == 0, result.stderr
        assert (f"-C {path} -t" in calls) == flushes, (engine, calls)
        assert calls[-1] == f"-C {path} -n", (engine, calls)


def test_failed_requests_are_logged_but_never_stop_the_takeover(run):
    run.fail()
    result, calls = run("start")
    assert result.returncode == 0
    assert len(calls) == 4  # every step is still tried
    assert "conntrackd -c (commit the peer's states into the kernel) failed: cannot connect" in result.stderr
    assert "4 failed conntrackd request(s)" in run.logged()
    assert run("stop")[0].returncode == 0


def test_only_the_commit_comes_before_the_addresses(run):
    """start returns once the peer's states are committed; flushing, refilling and
    sending this node's own states (a second or more on a slow machine) follow."""
    run.hold()  # the flush cannot finish until start has returned
    result, calls = run("start", settle=False)
    assert result.returncode == 0 and result.stdout.strip() == "running"
    assert "failed" not in result.stderr  # nothing waited for the held requests
    assert calls[0] == "-C /etc/conntrackd/conntrackd.conf -c" and "-C /etc/conntrackd/conntrackd.conf -B" not in calls
    assert run("status")[0].returncode == 0  # primary already
    run.go()
    wait_until(lambda: "primary: the peer's connection states are committed" in run.logged(), 20, interval=0.1,
               what="start's background part to finish")


def test_a_hung_conntrackd_never_keeps_the_addresses_down(run):
    run.hang()
    started = time.monotonic()
    # a 1 s bound (whole seconds: the script counts with it): six hung requests in all, start's and stop's
    result, calls = run("start", settle=False, bound="1")
    assert result.returncode == 0 and result.stdout.strip() == "running"
    assert time.monotonic() - started >= 1  # the 1 s bound was waited for, no less
    assert "conntrackd -c (commit the peer's states into the kernel) failed: no answer in 1 s" in result.stderr
    stopped, _ = run("stop", bound="1")  # returns at once; its requests, after start's, bounded too
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
    assert "conntrackd -n (ask the peer for its states) failed: no answer in 1 s" in run.logged()


def test_stop_returns_at_once_and_a_start_ends_a_stop_still_asking(run):
    """A node handing over releases without waiting for conntrackd (its peer waits for
    the release to end); a start right after ends that stop's requests, unwanted now."""
    run("start")
    run.hold()
    stopped, _ = run("stop", settle=False)  # -t held: stop has returned all the same
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
    assert run("status")[0].returncode == 3  # backup at once
    started, _ = run("start", settle=False)
    assert started.returncode == 0 and run("status")[0].returncode == 0
    run.go()
    wait_until(lambda: "primary" in run.logged(), 20, interval=0.1, what="the second start's background part")
    assert "backup" not in run.logged(), run.logged()  # the ended stop's part never finished


def test_stop_comes_after_a_start_still_refreshing(run):
    """No request of start's background part (a flush) may land after stop's, which
    would wipe the states stop has just asked the peer for."""
    run.hold()
    run("start", settle=False)
    threading.Timer(1.0, run.go).start()  # the held flush ends a second into the stop
    result, calls = run("stop")
    assert result.returncode == 0, result.stderr
    config = "-C /etc/conntrackd/conntrackd.conf"
    assert calls.index(f"{config} -B") < calls.index(f"{config} -t") < calls.index(f"{config} -n"), calls
