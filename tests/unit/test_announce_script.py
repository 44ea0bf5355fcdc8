"""files/heartbeat/lvsha-announce (one process announcing many floating addresses),
run for real in a throwaway network namespace, its packets read off the wire; and
lvsha-floating-ips choosing it for a large group (send_arp one by one for a small one)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lvsha import render
from tests.unit.test_floating_ips_script import GROUP, Netns, netns  # noqa: F401 (the fixture)

ANNOUNCE = str(render.FILES / "heartbeat" / "lvsha-announce")
ONE_BY_ONE_MAX = 8  # lvsha-floating-ips' ANNOUNCE_ONE_BY_ONE_MAX

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")

# Reads ARP frames off an interface (in the namespace, a process of its own) and prints
# each one's first 42 bytes in hex: the Ethernet header and the ARP packet. For at most
# argv[2] seconds; once its stdin ends (the test: the announcer has exited), for
# argv[3] seconds more, so that a frame sent late is still seen.
CAPTURE = """
import select, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind((sys.argv[1], 0))
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
stopping = False
while time.monotonic() < end:
    ready, _, _ = select.select([s] if stopping else [s, sys.stdin], [], [], 0.1)
    if s in ready:
        print(s.recv(2048)[:42].hex(), flush=True)
    if not stopping and sys.stdin in ready and not sys.stdin.read():
        stopping, end = True, min(end, time.monotonic() + float(sys.argv[3]))
"""
AFTER = 0.5  # s the capture goes on after the announcer exited


def _mac(netns, interface):
    return netns.sh(f"cat /sys/class/net/{interface}/address").stdout.strip().replace(":", "")


def _gratuitous(mac: str, address: str) -> str:
    """The frame send_arp sends in heartbeat's mode (resource-agents' tools/send_arp.linux.c,
    send_pack with unsolicited=1, advert=0): broadcast, an ARP request from the address to itself."""
    ip = "".join(f"{int(octet):02x}" for octet in address.split("."))
    return f"ffffffffffff{mac}0806" + f"0001080006040001{mac}{ip}ffffffffffff{ip}"


def _capture(netns, interface, seconds):
    """Frames off `interface` until the test ends the capture's stdin (communicate(input="")), then
    AFTER s more; `seconds` at most."""
    capture = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-c", CAPTURE, interface,
                                str(seconds), str(AFTER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert capture.stdout.readline().strip() == "ready"
    return capture


def _announce(netns, *args, tmp_path):
    return subprocess.run(["ip", "netns", "exec", netns.name, ANNOUNCE, *map(str, args)], capture_output=True,
                          text=True, timeout=30)


def test_every_address_is_announced_count_times_with_send_arps_packet(netns, tmp_path):
    capture = _capture(netns, "lvt0p", 3)
    specs = [f"10.50.{i // 200}.{1 + i % 200}/16/lvt0" for i in range(250)]
    started = time.monotonic()
    result = _announce(netns, 3, 100, tmp_path / "announce.pid", *specs, tmp_path=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    frames = capture.communicate(input="", timeout=30)[0].split()
    mac = _mac(netns, "lvt0")
    expected = [_gratuitous(mac, spec.split("/")[0]) for spec in specs]
    assert frames == expected * 3  # round after round, each in the group's order
    print(f"\n250 addresses, 3 rounds 100 ms apart: {took:.2f} s in one process")
    assert not (tmp_path / "announce.pid").exists()


def test_addresses_on_two_interfaces_leave_each_from_its_own(netns, tmp_path):
    on_lvt1 = _capture(netns, "lvt1p", 2)
    result = _announce(netns, 1, 0, tmp_path / "announce.pid", *GROUP, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert on_lvt1.communicate(input="", timeout=30)[0].split() == [_gratuitous(_mac(netns, "lvt1"), "192.168.50.254")]


@pytest.mark.parametrize("args", [[], ["3", "200", "PID"], ["x", "200", "PID", "10.0.0.1/24/lvt0"],
                                  ["3", "200", "PID", "10.0.0.1/lvt0"], ["3", "200", "PID", "10.0.0.300/24/lvt0"]])
def test_bad_arguments_are_refused_before_anything_is_written(netns, tmp_path, args):
    pidfile = tmp_path / "announce.pid"
    assert _announce(netns, *(str(pidfile) if a == "PID" else a for a in args), tmp_path=tmp_path).returncode == 2
    assert not list(tmp_path.glob("announce.pid*"))


def test_an_interface_that_does_not_exist_fails(netns, tmp_path):
    result = _announce(netns, 1, 0, tmp_path / "announce.pid", "10.0.0.1/24/nosuch0", tmp_path=tmp_path)
    assert result.returncode == 1 and "no interface nosuch0" in result.stderr


def test_a_new_announcer_ends_the_one_still_running(netns, tmp_path):
    pidfile = tmp_path / "announce.pid"
    first = subprocess.Popen(["ip", "netns", "exec", netns.name, ANNOUNCE, "100", "1000", str(pidfile),
                              "10.50.0.1/16/lvt0"])
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None
    assert _announce(netns, 1, 0, pidfile, "10.50.0.1/16/lvt0", tmp_path=tmp_path).returncode == 0
    assert first.wait(timeout=10) != 0  # ended by SIGTERM


def _fakes(tmp_path, monkeypatch):
    log = tmp_path / "announce.log"
    fake = tmp_path / "announce"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("LVSHA_ANNOUNCE", str(fake))
    return log


def _lines(path, expected):
    deadline = time.monotonic() + 5  # announced in the background
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_a_large_group_is_announced_by_one_announcer(netns, tmp_path, monkeypatch):
    log = _fakes(tmp_path, monkeypatch)
    group = [f"10.50.0.{i}/24/lvt0" for i in range(1, ONE_BY_ONE_MAX + 2)]
    result = netns.resource(*group, "start")
    assert result.returncode == 0, result.stderr
    # its pid file named by the group's first address: split groups each have their own
    assert _lines(log, 1) == [f"5 200 {netns.state_dir}/lvsha-announce-10.50.0.1.pid {' '.join(group)}"]
    time.sleep(0.3)
    assert not os.path.exists(netns.send_arp_log)


def test_a_small_group_is_announced_one_send_arp_each(netns, tmp_path, monkeypatch):
    log = _fakes(tmp_path, monkeypatch)
    group = [f"10.50.0.{i}/24/lvt0" for i in range(1, ONE_BY_ONE_MAX + 1)]
    assert netns.resource(*group, "start").returncode == 0
    assert len(netns.announcements(ONE_BY_ONE_MAX)) == ONE_BY_ONE_MAX
    time.sleep(0.3)
    assert not log.exists()
