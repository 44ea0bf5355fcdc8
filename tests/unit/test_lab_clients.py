"""The lab's long-lived connection clients (tests/lab/clients/sessions.py and
peer.py), run for real on loopback: the lab runs them through the balancers,
where a failure must be the balancers', not the clients'."""

import json
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lvsha.lab import lab as lab_api

CLIENTS = Path(__file__).resolve().parents[1] / "lab" / "clients"
HOSTNAME = socket.gethostname()  # what both peer.py ends answer with, here


class Web(BaseHTTPRequestHandler):
    """A web host as the lab's: / names it, /stream is a slow body."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("X-Served-By", "web1")
            self.send_header("Content-Length", str(100 * 400))  # 20 s of body: longer than any test
            self.end_headers()
            try:
                for _ in range(400):
                    self.wfile.write(b"x" * 100)
                    time.sleep(0.05)
            except OSError:
                pass  # the client is gone
            return
        body = b"x served by web1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


@pytest.fixture
def web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Web)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


@pytest.fixture
def processes():
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_line(process, timeout=10):
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no output in time"
    return process.stdout.readline().strip()


def peer(processes, mode, port, from_stdin=False):
    """peer.py in MODE on 127.0.0.1:PORT; from_stdin as the lab runs it (python3 - ...)."""
    args = [mode, "127.0.0.1", str(port), "30"]
    if from_stdin:
        p = subprocess.Popen([sys.executable, "-", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        p.stdin.write((CLIENTS / "peer.py").read_text())
        p.stdin.close()
    else:
        p = subprocess.Popen([sys.executable, str(CLIENTS / "peer.py"), *args], stdout=subprocess.PIPE, text=True)
    processes.append(p)
    return p


def run_sessions(processes, tmp_path, web_port, *, from_stdin=False, midway=lambda listener: None):
    """Every kind of connection for ~2 s; midway(listener) runs in the middle. The RESULT."""
    smtp_port, outbound_port = free_port(), free_port()
    listener = peer(processes, "listen", smtp_port, from_stdin)
    assert first_line(listener) == "LISTENING"
    sessions = subprocess.Popen(
        [sys.executable, str(CLIENTS / "sessions.py"), "--state", str(tmp_path / "state.json"),
         "--interval", "0.1", "--timeout", "5", "--source", "127.0.0.1",
         "--http-port", str(web_port), "--smtp-port", str(smtp_port),
         "--http", "127.0.0.1", "www.example", "--probe", "127.0.0.1", "www.example",
         "--stream", "127.0.0.1", "www.example", "/stream", "--smtp", "127.0.0.1",
         "--outbound", "127.0.0.1", str(outbound_port)],
        stdout=subprocess.PIPE, text=True)
    processes.append(sessions)
    peer(processes, "connect", outbound_port)  # retries until sessions listens
    assert first_line(sessions) == "READY"
    time.sleep(0.8)
    midway(listener)
    time.sleep(1.2)
    sessions.send_signal(signal.SIGTERM)
    assert sessions.wait(timeout=5) == 0
    lines = sessions.stdout.read().splitlines()
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert lines[-1].startswith("RESULT ") and result["ready"]
    assert json.loads((tmp_path / "state.json").read_text()) == result  # the last state is the result
    return {c["kind"]: c for c in result["connections"]}


def test_every_connection_lasts_and_names_its_server(web, processes, tmp_path):
    by_kind = run_sessions(processes, tmp_path, web)
    assert set(by_kind) == {"http", "probe", "stream", "smtp", "outbound"}
    for kind, c in by_kind.items():
        assert c["established"] and c["error"] is None and c["failed_at"] is None, c
        assert isinstance(c["local_port"], int) or kind == "probe", c  # a probe is many connections
        assert c["longest_stall"] < 1.5, c
        # when it ended, on the client's clock: after the connection's first success, within the run (~2 s)
        assert c["longest_stall"] <= c["longest_stall_ended"] < 5, c
    for kind in ("http", "stream", "smtp", "outbound"):
        assert by_kind[kind]["round_trips"] > 3, by_kind[kind]
    assert by_kind["probe"]["ok"] >= 2 and by_kind["probe"]["failed"] == 0
    for kind, name in {"http": "web1", "probe": "web1", "stream": "web1", "smtp": HOSTNAME, "outbound": HOSTNAME}.items():
        assert by_kind[kind]["names"] == [name] and by_kind[kind]["first_name"] == name, by_kind[kind]
        # when each web host first answered, on the client's clock (where persistence broke, in the lab)
        assert list(by_kind[kind]["first_answered"]) == [name] and 0 <= by_kind[kind]["first_answered"][name] < 5
    assert by_kind["outbound"]["local_port"] == int(by_kind["outbound"]["target"].rpartition(":")[2])


def test_a_lost_connection_is_reported_and_spares_the_others(web, processes, tmp_path):
    by_kind = run_sessions(processes, tmp_path, web, from_stdin=True, midway=lambda listener: listener.kill())
    smtp = by_kind.pop("smtp")
    assert smtp["error"] in ("EOF", "RST") and smtp["failed_at"] is not None, smtp
    assert smtp["established"] and smtp["round_trips"] > 3, smtp
    for c in by_kind.values():
        assert c["error"] is None, c


# ---- which VIPs the poller asks (lvsha/lab/lab.py poll_vips) -----------------------

def test_up_to_the_bound_the_poller_asks_every_vip(reference):
    vips = [site.vip for site in reference.sites]
    assert len(vips) <= lab_api.POLL_VIPS_MAX
    assert lab_api.poll_vips(vips) == vips


@pytest.mark.parametrize("sites", [lab_api.POLL_VIPS_MAX + 1, 50, 250])
def test_past_the_bound_the_poller_asks_an_even_spread_first_and_last_included(reference, sites):
    from lvsha.lab.scale import scale_cluster

    vips = [site.vip for site in scale_cluster(reference, sites).sites]
    polled = lab_api.poll_vips(iter(vips))  # any iterable, as the lab passes a generator
    assert len(polled) == len(set(polled)) == lab_api.POLL_VIPS_MAX
    assert polled[0] == vips[0] and polled[-1] == vips[-1]
    positions = [vips.index(vip) for vip in polled]
    assert positions == sorted(positions)
    gaps = [b - a for a, b in zip(positions, positions[1:])]
    assert max(gaps) - min(gaps) <= 1  # evenly spread: no stretch of sites left unpolled
