"""files/lvsha/lvsha-ldirectord-check, run against a fake ldirectord that answers
`ldirectord FILE status` as ldirectord.in (4.12, 4.16) does: it reads FILE, and on a
refused file removes the pid file named after FILE and exits 2 (config_error);
otherwise 0 when a daemon runs for FILE (its pid file), 3 when none does."""

from __future__ import annotations

import subprocess

import pytest

from lvsha import render
from tests.unit.fakes import fake_programs

SCRIPT = str(render.FILES / "lvsha" / "lvsha-ldirectord-check")
REFUSED = "checktype=nonsense\n"


class Balancer:
    """A scratch balancer: a running ldirectord's pid file, a fake ldirectord, a staged file."""

    def __init__(self, tmp_path, ldirectord: str | None = None):
        self.tmp = tmp_path
        self.run_dir = tmp_path / "run"
        self.run_dir.mkdir()
        self.daemon_pid = self.run_dir / "ldirectord.ldirectord.pid"  # the running daemon's (Debian's name)
        self.daemon_pid.write_text("4242\n")
        self.calls = tmp_path / "ldirectord.calls"
        self.checked = tmp_path / "checked"  # what the fake read
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fake_programs(bin_dir, {"ldirectord": ldirectord or f"""
            echo "$*" >> {self.calls}
            cat "$1" > {self.checked}
            pid={self.run_dir}/ldirectord.${{1##*/}}.pid
            if grep -q '^{REFUSED.strip()}' "$1"; then
                echo "Error [1] reading file $1 at line 1: checktype must be connect, negotiate, ..." >&2
                rm -f "$pid"
                exit 2
            fi
            [ -f "$pid" ] && {{ echo "ldirectord for $1 is running" >&2; exit 0; }}
            echo "ldirectord is stopped for $1"
            exit 3"""})
        self.env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LVSHA_LDIRECTORD": str(bin_dir / "ldirectord"),
                    "TMPDIR": str(tmp_path / "tmp"), "LVSHA_CHECK_TIMEOUT": "5"}
        (tmp_path / "tmp").mkdir()

    def staged(self, content: str, name: str = "ldirectord.cf.lvsha-new"):
        path = self.tmp / "ha.d" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(content)
        return path

    def check(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, env=self.env, timeout=60)


@pytest.fixture
def balancer(tmp_path):
    return Balancer(tmp_path)


def test_a_file_ldirectord_accepts_passes_checked_as_a_copy_then_removed(balancer, reference):
    content = render.ldirectord_file(reference).content
    staged = balancer.staged(content)
    result = balancer.check(staged)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    (call,) = balancer.calls.read_text().splitlines()
    copy, command = call.split()
    assert command == "status" and copy != str(staged) and copy.startswith(str(balancer.tmp / "tmp") + "/")
    assert balancer.checked.read_text() == content
    assert list((balancer.tmp / "tmp").iterdir()) == []
    assert staged.read_text() == content


@pytest.mark.parametrize("name", ["ldirectord.cf.lvsha-new", "ldirectord"])
def test_a_file_ldirectord_refuses_fails_and_leaves_the_running_daemons_pid_file(balancer, reference, name):
    """Also a file named as the one the daemon runs (/run/lvsha/ldirectord): ldirectord
    names the pid file it removes after the file it reads."""
    staged = balancer.staged(REFUSED + render.ldirectord_file(reference).content, name=name)
    result = balancer.check(staged)
    assert result.returncode == 1
    assert f"ldirectord refuses {staged}" in result.stderr and "checktype must be" in result.stderr
    assert balancer.daemon_pid.read_text() == "4242\n"
    assert list((balancer.tmp / "tmp").iterdir()) == []


def test_a_daemon_running_for_the_checked_name_is_not_taken_for_a_valid_file(tmp_path):
    """Only "stopped" (3) passes: any other answer fails, saying what ldirectord said."""
    balancer = Balancer(tmp_path, ldirectord='echo "ldirectord for $1 is running with pid: 99" >&2; exit 0')
    result = balancer.check(balancer.staged("checkinterval=5\n"))
    assert result.returncode == 1
    assert "ldirectord could not check" in result.stderr and "(exit 0," in result.stderr
    assert "is running with pid: 99" in result.stderr


def test_a_failing_ldirectord_fails_the_check(tmp_path):
    balancer = Balancer(tmp_path, ldirectord='echo "Can not find ipvsadm" >&2; exit 255')
    result = balancer.check(balancer.staged("checkinterval=5\n"))
    assert result.returncode == 1
    assert "(exit 255," in result.stderr and "Can not find ipvsadm" in result.stderr


def test_an_ldirectord_that_does_not_answer_fails_the_check_saying_what_it_waited_for(tmp_path):
    balancer = Balancer(tmp_path, ldirectord="exec sleep 30")
    balancer.env["LVSHA_CHECK_TIMEOUT"] = "1"
    result = balancer.check(balancer.staged("checkinterval=5\n"))
    assert result.returncode == 1
    assert "ldirectord did not check" in result.stderr and "within 1 s" in result.stderr
    assert list((balancer.tmp / "tmp").iterdir()) == []


def test_a_missing_file_and_a_usage_error(balancer):
    missing = balancer.check(balancer.tmp / "absent.cf")
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    assert not balancer.calls.exists()
    usage = balancer.check()
    assert usage.returncode == 2 and "usage:" in usage.stderr
