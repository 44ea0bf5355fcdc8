"""files/heartbeat/lvsha-floating-ips, run for real in a throwaway network namespace.

Only resource-agents' send_arp is replaced (by a script that records its
arguments): it is not installed here, and the lab tier proves the real one.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from lvsha import render
from tests.unit.fakes import fake_programs

SCRIPT = str(render.FILES / "heartbeat" / "lvsha-floating-ips")
GROUP = ["192.168.50.254/24/lvt1", "10.50.0.1/24/lvt0", "10.50.0.21/24/lvt0"]
RSC_WAIT = 2  # s reload asks heartbeat again while it says transition or nothing
POLL = 0.2  # s between two of those questions (LVSHA_POLL; unset: a second)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")


class Netns:
    def __init__(self, name: str, send_arp_log: str, send_arp: str, state_dir: str, env_file: str):
        self.name, self.send_arp_log, self.send_arp, self.state_dir = name, send_arp_log, send_arp, state_dir
        self.env_file = env_file
        self.settings(node="balancer1", owner="balancer1")

    def settings(self, node: str, owner: str) -> None:
        """lvsha.env as the deploy renders it for reload: this node, and the group's owner (the model's master)."""
        with open(self.env_file, "w") as f:
            f.write(f"LVSHA_NODE={node}\nLVSHA_PEER=other\nLVSHA_MASTER={owner}\n")

    def sh(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, "sh", "-c", command],
                              capture_output=True, text=True, timeout=30)

    def resource(self, *args: str, send_arp: str | None = None, path: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, LVSHA_SEND_ARP=self.send_arp if send_arp is None else send_arp,
                   LVSHA_STATE_DIR=self.state_dir, LVSHA_ENV_FILE=self.env_file, LVSHA_RSC_WAIT=str(RSC_WAIT),
                   LVSHA_POLL=str(POLL))
        # A PATH with fakes first applies inside the namespace only (`ip netns exec` is the real ip).
        inside = ["env", f"PATH={path}:{env['PATH']}"] if path else []
        return subprocess.run(["ip", "netns", "exec", self.name, *inside, SCRIPT, *args],
                              capture_output=True, text=True, timeout=30, env=env)

    def addresses(self) -> set[str]:
        out = self.sh("ip -o -4 addr show").stdout
        return {f"{line.split()[3]}/{line.split()[1]}" for line in out.splitlines() if line.split()[1] != "lo"}

    def announcements(self, expected: int) -> list[str]:
        deadline = time.monotonic() + 5  # send_arp runs in the background
        while True:
            lines = open(self.send_arp_log).read().splitlines() if os.path.exists(self.send_arp_log) else []
            if len(lines) >= expected or time.monotonic() > deadline:
                return sorted(lines)
            time.sleep(0.05)


@pytest.fixture
def netns(tmp_path):
    name = f"lvsha-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        log = tmp_path / "send_arp.log"
        fake = tmp_path / "send_arp"
        fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
        fake.chmod(0o755)
        ns = Netns(name, str(log), str(fake), str(tmp_path / "state"), str(tmp_path / "lvsha.env"))
        for veth in ("lvt0", "lvt1"):
            assert ns.sh(f"ip link add {veth} type veth peer name {veth}p && ip link set {veth} up "
                         f"&& ip link set {veth}p up").returncode == 0
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_status_reports_stopped_before_start(netns):
    result = netns.resource(*GROUP, "status")
    assert (result.returncode, result.stdout.strip()) == (3, "stopped")


def test_start_adds_every_address_and_announces_each(netns):
    result = netns.resource(*GROUP, "start")
    assert result.returncode == 0, result.stderr
    assert netns.addresses() == {"192.168.50.254/24/lvt1", "10.50.0.1/24/lvt0", "10.50.0.21/24/lvt0"}
    # each with a pid file of its own: send_arp kills the process its pid file names
    pid = f"-p {netns.state_dir}/send_arp-"
    assert netns.announcements(3) == [
        f"-i 200 -r 5 {pid}10.50.0.1 lvt0 10.50.0.1 auto not_used not_used",
        f"-i 200 -r 5 {pid}10.50.0.21 lvt0 10.50.0.21 auto not_used not_used",
        f"-i 200 -r 5 {pid}192.168.50.254 lvt1 192.168.50.254 auto not_used not_used",
    ]
    status = netns.resource(*GROUP, "status")
    assert (status.returncode, status.stdout.strip()) == (0, "running")


def test_start_is_idempotent_and_completes_a_partial_group(netns):
    assert netns.sh("ip addr add 10.50.0.1/24 dev lvt0").returncode == 0
    assert netns.resource(*GROUP, "status").stdout.strip() == "stopped"  # one of three is not "running"
    for _ in range(2):
        assert netns.resource(*GROUP, "start").returncode == 0
    out = netns.sh("ip -o -4 addr show dev lvt0").stdout
    assert out.count(" 10.50.0.1/24 ") == 1 and out.count(" 10.50.0.21/24 ") == 1


def test_stop_removes_only_the_group_and_succeeds_when_already_stopped(netns):
    assert netns.sh("ip addr add 10.50.0.254/24 dev lvt0").returncode == 0  # the balancer's own address
    assert netns.resource(*GROUP, "start").returncode == 0
    for _ in range(2):  # heartbeat reboots a node whose stop fails, also when nothing was running
        result = netns.resource(*GROUP, "stop")
        assert result.returncode == 0, result.stderr
        assert netns.addresses() == {"10.50.0.254/24/lvt0"}
    assert netns.resource(*GROUP, "status").returncode == 3


def test_start_without_send_arp_fails_before_adding_anything(netns):
    result = netns.resource(*GROUP, "start", send_arp="/nonexistent/send_arp")
    if os.path.exists("/usr/libexec/heartbeat/send_arp") or os.path.exists("/usr/lib/heartbeat/send_arp"):
        pytest.skip("resource-agents' send_arp is installed here")
    assert result.returncode == 1
    assert "send_arp not found" in result.stderr
    assert netns.addresses() == set()


def test_start_fails_on_a_missing_interface(netns):
    result = netns.resource("10.50.0.1/24/lvt0", "10.60.0.1/24/nosuch0", "start")
    assert result.returncode == 1
    assert "cannot add 10.60.0.1/24 to nosuch0" in result.stderr


@pytest.mark.parametrize("bad", ["10.50.0.1/lvt0", "10.50.0.1", "host.example/24/lvt0", "10.50.0.1/x/lvt0"])
def test_malformed_argument_is_named(netns, bad):
    result = netns.resource("10.50.0.21/24/lvt0", bad, "status")
    assert result.returncode == 2
    assert f"'{bad}'" in result.stderr


def test_unknown_action_is_refused(netns):
    result = netns.resource(*GROUP, "restart")
    assert result.returncode == 2 and "usage" in result.stderr


def test_start_cleans_misplaced_copies_before_adding(netns):
    """A copy on the wrong interface or with the wrong prefix is not the address it should be."""
    assert netns.sh("ip addr add 10.50.0.1/32 dev lvt0 && ip addr add 10.50.0.21/24 dev lvt1").returncode == 0
    result = netns.resource(*GROUP, "start")
    assert result.returncode == 0, result.stderr
    assert netns.addresses() == {"192.168.50.254/24/lvt1", "10.50.0.1/24/lvt0", "10.50.0.21/24/lvt0"}
    assert "removed 10.50.0.1/32 from lvt0" in result.stderr and "removed 10.50.0.21/24 from lvt1" in result.stderr


def test_stop_removes_every_copy_from_every_interface(netns):
    assert netns.resource(*GROUP, "start").returncode == 0
    assert netns.sh("ip addr add 10.50.0.21/32 dev lvt1").returncode == 0
    result = netns.resource(*GROUP, "stop")
    assert result.returncode == 0, result.stderr
    assert netns.addresses() == set()


def test_a_failing_ip_is_an_error_not_an_absent_address(netns, tmp_path):
    assert netns.resource(*GROUP, "start").returncode == 0
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "ip").write_text("#!/bin/sh\necho 'ip: cannot talk to the kernel' >&2\nexit 1\n")
    (fake_bin / "ip").chmod(0o755)
    for action in ("stop", "status", "start"):
        result = netns.resource(*GROUP, action, path=str(fake_bin))
        assert result.returncode == 1, (action, result.stdout, result.stderr)
        assert "cannot list addresses (ip failed)" in result.stderr
    assert len(netns.addresses()) == 3  # nothing was claimed stopped


def test_stop_ends_the_announcements_its_start_left_running(netns, tmp_path):
    """A release within the announcements' rounds: the old holder must not go on announcing
    addresses it no longer has (and its peer may hold)."""
    fake = tmp_path / "send_arp_slow"
    fake.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -p ] && echo $$ > "$2"; shift; done\n'
                    'sleep 20 & wait\n')
    fake.chmod(0o755)
    assert netns.resource(*GROUP, "start", send_arp=str(fake)).returncode == 0
    pidfiles = [tmp_path / "state" / f"send_arp-{spec.split('/')[0]}" for spec in GROUP]
    deadline = time.monotonic() + 5
    while not all(p.exists() and p.read_text().strip() for p in pidfiles) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(p.read_text()) for p in pidfiles]
    assert all(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert netns.resource(*GROUP, "stop", send_arp=str(fake)).returncode == 0
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---- reload: the group's addresses changed on a running pair (tasks/heartbeat.py) -------

NEW = "10.50.0.30/24/lvt0"  # a site added: its VIP joins the group


def _heartbeat_says(tmp_path, *answers: str) -> str:
    """A folder with a fake cl_status answering `rscstatus` with each of `answers` in
    turn (the last one from then on; "" for no answer), recording every call."""
    fakes = tmp_path / "fakes"
    fakes.mkdir(exist_ok=True)
    (tmp_path / "answers").write_text("".join(f"{a}\n" for a in answers))
    fake_programs(fakes, {"cl_status": f"""
        echo "cl_status $*" >> {tmp_path}/cl_status.calls
        n=$(($(cat {tmp_path}/asked 2>/dev/null || echo 0) + 1)); echo $n > {tmp_path}/asked
        answer=$(sed -n "${{n}}p" {tmp_path}/answers); [ -n "$answer" ] || answer=$(tail -n 1 {tmp_path}/answers)
        [ "$answer" = "" ] && exit 1
        echo "$answer\""""})
    return str(fakes)


def _asked(tmp_path) -> int:
    path = tmp_path / "cl_status.calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


# (rscstatus, this node is the group's owner): heartbeat's answers that make this node the carrier.
# After a failback both nodes answer local (hb_resource.c: the node that acquires its own,
# here empty, resource set says local, and so does the one that released the group).
CARRIER = [("all", True), ("all", False), ("local", True), ("foreign", False)]
NOT_CARRIER = [("none", True), ("none", False), ("local", False), ("foreign", True)]


def _owned(netns, owner: bool) -> None:
    netns.settings(node="balancer1" if owner else "balancer2", owner="balancer1")


@pytest.mark.parametrize("holds,owner", CARRIER)
@pytest.mark.parametrize("transitions", [0, 1])
def test_reload_on_the_carrier_adds_the_new_address_and_announces_it_alone(netns, tmp_path, holds, owner, transitions):
    """Also when heartbeat says transition at first (a takeover under way): asked again until it says."""
    _owned(netns, owner)
    assert netns.resource(*GROUP, "start").returncode == 0
    before = netns.announcements(3)
    answers = ["transition"] * transitions + [holds]
    result = netns.resource(*GROUP, NEW, "reload", path=_heartbeat_says(tmp_path, *answers))
    assert (result.returncode, result.stdout.strip()) == (0, "running"), result.stderr
    assert netns.addresses() == {*GROUP, NEW}
    assert "added 10.50.0.30/24 to lvt0" in result.stderr
    after = netns.announcements(len(before) + 1)
    assert [line for line in after if line not in before] == [
        f"-i 200 -r 5 -p {netns.state_dir}/send_arp-10.50.0.30 lvt0 10.50.0.30 auto not_used not_used"]
    assert _asked(tmp_path) == transitions + 2  # until it says before adding, and once more after


def test_reload_with_nothing_new_changes_nothing(netns, tmp_path):
    assert netns.resource(*GROUP, "start").returncode == 0
    before = netns.announcements(3)
    result = netns.resource(*GROUP, "reload", path=_heartbeat_says(tmp_path, "all"))
    assert (result.returncode, result.stdout.strip()) == (0, "running"), result.stderr
    assert netns.addresses() == set(GROUP)
    time.sleep(0.3)
    assert netns.announcements(len(before)) == before


def test_reload_on_a_node_carrying_nothing_changes_nothing_and_asks_nothing(netns, tmp_path):
    result = netns.resource(*GROUP, NEW, "reload", path=_heartbeat_says(tmp_path, "all"))
    assert (result.returncode, result.stdout.strip()) == (0, "stopped"), result.stderr
    assert netns.addresses() == set()
    assert _asked(tmp_path) == 0


@pytest.mark.parametrize("holds,owner", NOT_CARRIER)
def test_reload_on_a_node_heartbeat_does_not_call_the_carrier_is_refused(netns, tmp_path, holds, owner):
    """Some addresses here while heartbeat says this node does not carry the group (the
    standby after a failback says local too, with one address left over): nothing is
    guessed, nothing is added, the deploy is told."""
    _owned(netns, owner)
    assert netns.sh("ip addr add 192.168.50.254/24 dev lvt1").returncode == 0  # GROUP[0], left over
    result = netns.resource(*GROUP, NEW, "reload", path=_heartbeat_says(tmp_path, holds))
    assert result.returncode == 1
    assert f"this node has 1 of the group's addresses while heartbeat says '{holds}'" in result.stderr
    assert netns.addresses() == {GROUP[0]}
    assert _asked(tmp_path) == 1  # a settled answer: not asked again


@pytest.mark.parametrize("holds", ["transition", ""])
def test_reload_while_heartbeat_never_says_is_refused_after_asking_again(netns, tmp_path, holds):
    """In transition or not answering for LVSHA_RSC_WAIT s: nothing changes, the deploy is told what it waited for."""
    assert netns.resource(*GROUP, "start").returncode == 0
    result = netns.resource(*GROUP, NEW, "reload", path=_heartbeat_says(tmp_path, holds))
    assert result.returncode == 1
    assert (f"this node has 3 of the group's addresses while heartbeat says '{holds or 'nothing (no answer)'}' "
            f"for {RSC_WAIT} s") in result.stderr
    assert netns.addresses() == set(GROUP)
    assert _asked(tmp_path) > 1


def test_reload_without_the_node_and_owner_changes_nothing(netns, tmp_path):
    os.remove(netns.env_file)
    assert netns.resource(*GROUP, "start").returncode == 0
    result = netns.resource(*GROUP, NEW, "reload", path=_heartbeat_says(tmp_path, "local"))
    assert result.returncode == 1
    assert f"cannot read LVSHA_NODE and LVSHA_MASTER from {netns.env_file}" in result.stderr
    assert netns.addresses() == set(GROUP)


@pytest.mark.parametrize("holds,owner", NOT_CARRIER)
@pytest.mark.parametrize("unsettled", [[], ["transition"], [""]])
def test_reload_removes_what_it_added_when_heartbeat_let_the_group_go_meanwhile(netns, tmp_path, holds, owner,
                                                                                unsettled):
    """Only on an answer that says this node no longer carries the group, once heartbeat says."""
    _owned(netns, owner)
    assert netns.resource(*GROUP, "start").returncode == 0
    before = netns.announcements(3)
    result = netns.resource(*GROUP, NEW, "reload", path=_heartbeat_says(tmp_path, "all", *unsettled, holds))
    assert (result.returncode, result.stdout.strip()) == (0, "stopped"), result.stderr
    assert netns.addresses() == set(GROUP)  # the new one gone again; the old ones are heartbeat's release's
    assert "removed 10.50.0.30/24 from lvt0" in result.stderr and "the ones added are removed again" in result.stderr
    time.sleep(0.3)
    assert netns.announcements(len(before)) == before  # never announced


@pytest.mark.parametrize("holds", ["transition", ""])
def test_reload_leaves_what_it_added_and_fails_when_heartbeat_does_not_say_after(netns, tmp_path, holds):
    """A carrier briefly in transition, or not answering, once the addresses are added is
    not taken for one that let the group go (the new address would be on neither node):
    the addresses stay, unannounced, and the deploy fails."""
    assert netns.resource(*GROUP, "start").returncode == 0
    before = netns.announcements(3)
    result = netns.resource(*GROUP, NEW, "reload", path=_heartbeat_says(tmp_path, "all", holds))
    assert result.returncode == 1 and result.stdout.strip() != "stopped"
    assert netns.addresses() == {*GROUP, NEW}
    assert "added 10.50.0.30/24 to lvt0" in result.stderr
    assert (f"heartbeat did not say whether this node still carries the group once the addresses were added "
            f"(it says '{holds or 'nothing (no answer)'}' for {RSC_WAIT} s)") in result.stderr
    time.sleep(0.3)
    assert netns.announcements(len(before)) == before


def test_reload_moves_a_misplaced_copy_as_start_does(netns, tmp_path):
    assert netns.resource(*GROUP, "start").returncode == 0
    assert netns.sh("ip addr add 10.50.0.30/32 dev lvt1").returncode == 0
    result = netns.resource(*GROUP, NEW, "reload", path=_heartbeat_says(tmp_path, "all"))
    assert result.returncode == 0, result.stderr
    assert netns.addresses() == {*GROUP, NEW}
