"""apt-cacher-ng on 127.0.0.1, run in the foreground by the lab.

It is the only path from guests (and from debootstrap) to the outside: it is
configured with ForceManaged so that it only serves the host's Debian mirror(s),
and CONNECT pass-through is disabled. Its package cache lives under the lab cache
dir so that repeated runs do not download again; its config, log and pid live in
the state dir and it is stopped at teardown by PID.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from . import LabError, cache_dir, host_apt_mirrors, kill_ours, pid_cmdline, wait_until

ACNG = "/usr/sbin/apt-cacher-ng"
FIRST_PORT = 3142


def port_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(first: int = FIRST_PORT, span: int = 50, taken=()) -> int:
    """First free loopback port in [first, first+span), skipping `taken`."""
    for port in range(first, first + span):
        if port not in taken and port_free(port):
            return port
    raise LabError(f"no free loopback port in {first}..{first + span - 1}")


def _remap_lines(mirrors: dict[str, str]) -> list[str]:
    """Remap-* config lines making each mirror a 'managed' repository."""
    lines = []
    for key, url in sorted(mirrors.items()):
        hostpath = url.split("://", 1)[1]
        # prefix (as requested through the proxy) ; backend (where it fetches)
        lines.append(f"Remap-lvsha{key}: {hostpath} ; {url}")
    return lines


def start(sdir: Path, progress=print) -> dict:
    """Start apt-cacher-ng on a free 127.0.0.1 port, wait until it answers.

    Returns {"pid": PID, "port": PORT}. Never touches an apt-cacher-ng it did not
    start (if the system one holds 3142 we just take the next free port).
    """
    mirrors = host_apt_mirrors()
    conf_dir = sdir / "acng"
    log_dir = sdir / "acng-log"
    cache = cache_dir() / "apt-cacher-ng"
    for d in (conf_dir, log_dir, cache):
        d.mkdir(parents=True, exist_ok=True)
    port = pick_port()
    conf = [
        f"CacheDir: {cache}",
        f"LogDir: {log_dir}",
        "SupportDir: /usr/lib/apt-cacher-ng",
        f"Port: {port}",
        "BindAddress: 127.0.0.1",
        "ForeGround: 1",
        f"PidFile: {sdir / 'acng.pid'}",
        # Only the remapped (host's own) mirrors may be fetched through us.
        "ForceManaged: 1",
        # Never tunnel CONNECT anywhere.
        "PassThroughPattern: ^lvsha-lab-no-passthrough\\.invalid:1$",
        "ExThreshold: 4",
        "ReportPage: acng-report.html",
    ] + _remap_lines(mirrors)
    (conf_dir / "acng.conf").write_text("\n".join(conf) + "\n")
    log = open(log_dir / "stdout.log", "ab")
    proc = subprocess.Popen(
        [ACNG, "-c", str(conf_dir)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        start_new_session=True,  # keep Ctrl-C away from it: teardown stops it by PID
    )
    log.close()

    def answers():
        if proc.poll() is not None:
            raise LabError(f"apt-cacher-ng exited ({proc.returncode}); see {log_dir}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/acng-report.html", timeout=2):
                return True
        except OSError as e:
            # 4xx/5xx still means it is up and answering
            return hasattr(e, "code")

    wait_until(answers, timeout=20, interval=0.2, what="apt-cacher-ng to answer")
    return {"pid": proc.pid, "port": port}


def stop(pid, sdir: Path) -> None:
    """Stop the proxy we started (PID checked against the state dir); idempotent."""
    if pid and pid_cmdline(int(pid)) is not None:
        kill_ours(pid, str(sdir))


def proxy_url(port: int) -> str:
    """The URL the host side (debootstrap) uses for the proxy."""
    return f"http://127.0.0.1:{port}"


def _selftest():  # pragma: no cover - manual debugging aid
    import sys
    sdir = Path(sys.argv[1])
    info = start(sdir)
    print(info)
    time.sleep(1)
    stop(info["pid"], sdir)
