"""tests/lab/clients/answers.py (every VIP asked at once: the lab's check that every
site serves, for the scale benchmark's hundreds), run for real on loopback."""

import socket
import subprocess
import sys

from tests.unit.test_lab_clients import CLIENTS, web  # noqa: F401 (the fixture: answers "x served by web1")


def _answers(*targets, timeout=2):
    return subprocess.run([sys.executable, str(CLIENTS / "answers.py"), str(timeout), *targets],
                          capture_output=True, text=True, timeout=60)


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_vip_answering_with_its_name_passes(web):
    result = _answers(f"127.0.0.1:{web}=x", f"localhost:{web}=served by")
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "ANSWERED 2"


def test_a_vip_answering_with_another_name_or_not_at_all_is_named(web):
    closed = _closed_port()
    result = _answers(f"127.0.0.1:{web}=x", f"localhost:{web}=www.other.test", f"127.0.0.1:{closed}=x")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"MISSING localhost:{web}", f"MISSING 127.0.0.1:{closed}", "ANSWERED 1"]
