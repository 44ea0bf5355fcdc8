"""files/heartbeat/lvsha-conntrackd, run for real against a fake conntrackd:
primary commits the peer's states, backup shortens the kernel's timers, and a
failed conntrackd request never stops the addresses from moving."""

import subprocess
from pathlib import Path

import pytest

from lvsha import render

SCRIPT = str(render.FILES / "heartbeat" / Path(render.CONNTRACKD_SCRIPT).name)


@pytest.fixture
def run(tmp_path):
    fake = tmp_path / "conntrackd"
    fake.write_text('#!/bin/sh\necho "$*" >> "$FAKE/calls"\n[ -f "$FAKE/fails" ] && { echo "cannot connect" >&2; exit 1; }\nexit 0\n')
    fake.chmod(0o755)
    logger = tmp_path / "logger"
    logger.write_text("#!/bin/sh\nexit 0\n")
    logger.chmod(0o755)

    def run(action):
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKE": str(tmp_path), "LVSHA_CONNTRACKD": str(fake),
               "LVSHA_CONNTRACKD_CONFIG": "/etc/conntrackd/conntrackd.conf", "LVSHA_STATE_DIR": str(tmp_path / "run")}
        result = subprocess.run([SCRIPT, action], capture_output=True, text=True, env=env, timeout=30)
        calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
        (tmp_path / "calls").unlink(missing_ok=True)
        return result, calls

    run.fail = lambda: (tmp_path / "fails").write_text("")
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


def test_failed_requests_are_logged_but_never_stop_the_takeover(run):
    run.fail()
    result, calls = run("start")
    assert result.returncode == 0
    assert len(calls) == 4  # every step is still tried
    assert "conntrackd -c (commit the peer's states into the kernel) failed: cannot connect" in result.stderr
    assert "4 failed conntrackd request(s)" in result.stderr
    assert run("stop")[0].returncode == 0


def test_unknown_action_is_a_usage_error(run):
    assert run("restart")[0].returncode == 2
