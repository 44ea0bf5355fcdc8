"""The lab: real Debian 12 VMs under QEMU on this machine, to run the deploy against.

Layout:
  image.py     base image (debootstrap -> ext4 raw disk + kernel + initrd), cached
  aptproxy.py  apt-cacher-ng on 127.0.0.1, the only way out for guests and debootstrap
  network.py   lab netns with one bridge per segment + taps, client netns on a veth
  vm.py        QEMU processes (root netns, tap fds opened inside the lab netns)
  lab.py       orchestration: up/down/status/vm_stop/vm_start/client_exec, state.json
  cli.py       click group ``lab``

This module holds the small helpers shared by all of them (paths, subprocess
running, bounded waiting, PID ownership checks, the host's apt mirror).
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
from pathlib import Path

DEFAULT_STATE_DIR = "/tmp/lvsha-lab"
DEFAULT_CACHE_DIR = "~/.cache/lvsha-lab"


class LabError(RuntimeError):
    """Any failure of the lab layer that the caller should report as is."""


def state_dir() -> Path:
    """The per-lab state dir (env LVSHA_LAB_DIR, default /tmp/lvsha-lab)."""
    return Path(os.environ.get("LVSHA_LAB_DIR", DEFAULT_STATE_DIR)).resolve()


def cache_dir() -> Path:
    """The persistent cache dir (env LVSHA_LAB_CACHE, default ~/.cache/lvsha-lab)."""
    return Path(os.path.expanduser(os.environ.get("LVSHA_LAB_CACHE", DEFAULT_CACHE_DIR))).resolve()


def run_command(args, *, timeout: float = 120, check: bool = True, env=None, capture: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run a command with a time bound; raise LabError with its output if it fails."""
    try:
        cp = subprocess.run(
            [str(a) for a in args], timeout=timeout, env=env, text=True, input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"timed out after {timeout}s: {' '.join(map(str, args))}") from e
    if check and cp.returncode != 0:
        raise LabError(
            f"command failed ({cp.returncode}): {' '.join(map(str, args))}\n"
            f"{(cp.stdout or '')[-2000:]}{(cp.stderr or '')[-2000:]}"
        )
    return cp


def wait_until(predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
    """Poll predicate() until it returns a truthy value (returned) or timeout (LabError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def pid_cmdline(pid: int) -> list[str] | None:
    """argv of a live process, or None if it is gone (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pid_is_ours(pid, marker: str) -> bool:
    """True if PID is alive and its command line mentions marker (e.g. the state dir).

    This is how the lab makes sure it only ever kills processes it started itself,
    even from a fresh process that only has PIDs from state.json.
    """
    if not pid:
        return False
    argv = pid_cmdline(int(pid))
    return argv is not None and any(marker in a for a in argv)


def kill_ours(pid, marker: str, timeout: float = 10.0) -> bool:
    """SIGTERM then SIGKILL the process PID, only if pid_is_ours(pid, marker).

    Returns True if it was ours and is now gone. Bounded by timeout (+2 s).
    """
    if not pid_is_ours(pid, marker):
        return False
    pid = int(pid)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if pid_cmdline(pid) is None:
                return True
            time.sleep(0.1)
    return pid_cmdline(pid) is None


def _reap(pid: int) -> None:
    """Collect a child's exit status if it is our child (no-op otherwise)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def host_apt_mirrors() -> dict[str, str]:
    """The host's Debian mirror URLs, read from its apt config at run time.

    Returns {"debian": URL, "security": URL-or-absent}. The mirror host name is
    never written into the repo; it only flows from the host's apt config into
    the runtime proxy config and into the image's sources.list.
    """
    entries: list[tuple[str, list[str]]] = []  # (uri, suites)
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in Path(path).read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split()))
    lists = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in lists:
        if not os.path.exists(path):
            continue
        for line in Path(path).read_text().splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                rest = [p for p in parts[1:] if not p.startswith("[")]
                if len(rest) >= 2:
                    entries.append((rest[0], [rest[1]]))
    found: dict[str, str] = {}
    for uri, suites in entries:
        if not uri.startswith("http://"):
            continue  # the proxy only handles plain http mirrors
        uri = uri.rstrip("/")
        if any(s.endswith("-security") for s in suites):
            found.setdefault("security", uri)
        elif any(s.startswith("bookworm") for s in suites):
            found.setdefault("debian", uri)
    if "debian" not in found:
        raise LabError("no http:// bookworm mirror found in the host's apt configuration")
    return found
