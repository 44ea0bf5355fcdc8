"""keepalived's own behaviour (engine "keepalived"; deselected on heartbeat models):

- the VRRP firewall rule: IP protocol 112 accepted on the VRRP link from the peer's
  address only (its counter moves with the master's advertisements on the backup;
  a forged advertisement from the client side is dropped by the policy and moves
  nothing);
- (a health check changed and a site added, by reload: test_8_config_reload, on
  either engine);
- `systemctl stop keepalived` and a power-off on the active node: the peer takes
  over; the longest wait of a client polling the VIPs (lab_api.poll_vips) every 0.2 s is recorded;
- keepalived SIGKILLed on the active node: systemd brings it back; it starts as a
  backup and drops the addresses, the peer takes over, and in the end exactly one
  node holds the group (the master again with auto_failback, keepalived's preempt);
- the priorities hold steady over busy no-op deploys while nothing fails (the track
  scripts' timeout and fall).

Every figure is recorded under the report label "keepalived" (conftest), beside
heartbeat's.
"""

from __future__ import annotations

import textwrap
import time

import pytest

from lvsha.lab import lab as lab_api
from lvsha.lab import wait_until
from lvsha.lab.run import deploy, record
from lvsha.model import VRRP_PROTOCOL, VRRP_ROUTER_ID
from lvsha.render import keepalived_track_scripts
from tests.lab.conftest import Watch
from tests.lab.test_6_crash import _restarts, wait_stable
from tests.lab.test_8_day2 import _poll_during

pytestmark = pytest.mark.keepalived_internals  # conftest.internals_marker("keepalived")

# Margin of a longest client wait over VRRP's own timers: the lab's TCG guests, SSH, the poller's 1 s timeout.
WAIT_MARGIN = 10


# ---- the VRRP firewall rule ------------------------------------------------------

# A VRRPv2 advertisement (RFC 3768) for the model's virtual router at priority 255,
# sent from the client side: were it accepted, the master would yield at once.
FORGE = textwrap.dedent("""
    import socket, struct, sys
    target, vrid, advert, vip, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    body = struct.pack("!BBBBBBH", 0x21, vrid, 255, 1, 0, advert, 0) + socket.inet_aton(vip) + bytes(8)
    total = sum(struct.unpack("!%dH" % (len(body) // 2), body))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    body = body[:6] + struct.pack("!H", ~total & 0xFFFF) + body[8:]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, {protocol})
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    for _ in range(count):
        s.sendto(body, (target, 0))
""").format(protocol=VRRP_PROTOCOL)


def _packets(rule: str) -> int:
    """The packet count of an `iptables-save -c` rule line ("[packets:bytes] -A ...")."""
    return int(rule[rule.index("[") + 1:rule.index(":", rule.index("["))])


def _vrrp_rule(lab, balancer, out: str | None = None) -> str:
    """`balancer`'s rule accepting VRRP (`iptables-save -c` line), found by its
    protocol: exactly one, on the model's VRRP link, from the peer's address only."""
    interface, own, peer = lab.cluster.vrrp_link(balancer)
    out = out or lab.ssh(balancer.name, "iptables-save -c -t filter").stdout
    vrrp = [line for line in out.splitlines() if " -A INPUT " in f" {line} " and "-j ACCEPT" in line
            and any(f" -p {name} " in f"{line} " for name in (VRRP_PROTOCOL, "vrrp"))]
    assert len(vrrp) == 1, f"{balancer.name}: not exactly one rule accepting VRRP in INPUT:\n{out}"
    (rule,) = vrrp
    for part in (f"-i {interface} ", f"-s {peer}/32 ", f"-d {own}/32 "):
        assert part in f"{rule} ", f"{balancer.name}: the VRRP rule lacks {part!r}: {rule}"
    return rule


def test_vrrp_is_accepted_from_the_peer_only(lab):
    """The backup's VRRP rule counts the master's advertisements; forged ones sent
    from the client side reach the master's INPUT (a counting rule put first for
    the test shows them) and its VRRP rule never accepts them: the group stays."""
    active = lab.carrier()
    master = lab.cluster.balancer(active)
    backup = lab.cluster.peer(master)
    hb = lab.cluster.heartbeat
    # The peer's advertisements: counted by a rule put first for the test (once both nodes
    # have sent VRRP to each other, conntrack calls the flow established and the firewall's
    # ESTABLISHED rule accepts it before the VRRP rule sees it: its own counter stays still).
    interface, own, peer = lab.cluster.vrrp_link(backup)
    _vrrp_rule(lab, backup)  # exactly one rule accepting VRRP, from the peer only
    from_peer = f"INPUT -i {interface} -s {peer}/32 -d {own}/32 -p {VRRP_PROTOCOL}"
    lab.ssh(backup.name, f"iptables -I {from_peer}")
    try:
        time.sleep(3 * hb.keepalive)
        out = lab.ssh(backup.name, "iptables-save -c -t filter").stdout
    finally:
        lab.ssh(backup.name, f"iptables -D {from_peer}", check=False)
    (line,) = [line for line in out.splitlines() if f"-s {peer}/32 " in line and " -j " not in line
               and any(f" -p {name} " in f"{line} " for name in (VRRP_PROTOCOL, "vrrp"))]
    heard = _packets(line)
    assert heard > 0, f"{backup.name}: no VRRP from {master.name} arrived in {3 * hb.keepalive} s: {line}"
    assert lab.carries_none(backup.name), f"{backup.name} took addresses while hearing {master.name}"
    record("VRRP advertisements reaching the backup in 3 keepalives", heard)

    client_ip = lab.state["client"]["address"].split("/")[0]
    counting = f"INPUT -s {client_ip}/32 -p {VRRP_PROTOCOL}"  # no target: counts, and the packet goes on
    accepted = _packets(_vrrp_rule(lab, master))
    _, vrrp_address, _ = lab.cluster.vrrp_link(master)
    internal = str(lab.cluster.internal_net.cidr)
    count = 20
    lab.ssh(master.name, f"iptables -I {counting}")
    try:
        lab.client("ip", "route", "add", internal, "via", master.external_ip)
        try:  # to the master's external address, and, routed through it, to its VRRP address
            for target in (master.external_ip, str(vrrp_address)):
                sent = lab.client("python3", "-c", FORGE, target, str(VRRP_ROUTER_ID), str(hb.keepalive),
                                  lab.cluster.sites[0].vip, str(count))
                assert sent.returncode == 0, sent.stderr
        finally:
            lab.client("ip", "route", "del", internal, "via", master.external_ip)
        time.sleep(2 * hb.keepalive)
        out = lab.ssh(master.name, "iptables-save -c -t filter").stdout
    finally:
        lab.ssh(master.name, f"iptables -D {counting}", check=False)
    (seen,) = [line for line in out.splitlines() if f"-s {client_ip}/32 " in line and " -j " not in line]
    assert _packets(seen) >= 2 * count, f"the forged advertisements did not reach {master.name}: {seen}"
    assert _packets(_vrrp_rule(lab, master, out)) == accepted, f"{master.name} accepted VRRP from the client side"
    record("forged VRRP advertisements reaching the master, none accepted", _packets(seen))
    assert Watch(lab).exactly_one_carrier() == active and lab.serving()


# ---- takeovers -----------------------------------------------------------------------

def _back_home(lab, standby: str) -> None:
    """Both run again after `standby` carried alone: settled where the model says."""
    home = lab.home_after_return(standby)
    lab.wait_settled(home)
    wait_until(lambda: lab.carries_none(lab.other(home)), 120, interval=2,
               what=f"{lab.other(home)} to carry nothing, its IPVS loaded")


def test_systemctl_stop_keepalived_on_the_active_node_is_taken_over(lab):
    """Stopped, keepalived sends a priority-0 advertisement: the peer takes over
    within VRRP's skew, not its down timer."""
    active = lab.carrier()
    standby = lab.other(active)
    hb = lab.cluster.heartbeat

    def stop():
        lab.ssh(active, f"systemctl stop {lab.engine_service}")
        lab.wait_settled(standby)

    try:
        longest, failed, out = _poll_during(lab, stop)
    finally:
        lab.ssh(active, f"systemctl start {lab.engine_service}")
    record("takeover after keepalived stop: longest client wait", longest)
    record("takeover after keepalived stop: polls unanswered (1 s each at most)", failed)
    assert longest < hb.keepalive + WAIT_MARGIN, out[-3000:]
    _back_home(lab, standby)


def test_keepalived_killed_on_the_active_node_comes_back_and_one_node_holds_the_group(lab):
    """SIGKILL to every keepalived process of the active node: it cannot take its
    addresses down; systemd starts it again (RestartSec), it starts as a backup
    and drops them, the peer takes over after its down timer, and (auto_failback:
    preempt) the master takes the group back after preempt_delay. In the end one
    node holds everything, steadily."""
    active = lab.carrier()
    hb = lab.cluster.heartbeat
    restarts = _restarts(lab, active, lab.engine_service)
    home = lab.home_after_return(lab.other(active))
    watch = Watch(lab, events=True)
    healed = {}

    def kill_and_heal():
        killed = time.monotonic()
        lab.ssh(active, "pkill -KILL -x keepalived")
        wait_until(lambda: _restarts(lab, active, lab.engine_service) > restarts and lab.engine_active(), 120,
                   interval=1, what=f"systemd to start keepalived on {active} again")
        healed["restarted"] = time.monotonic() - killed
        healed["settled"] = healed["restarted"] + wait_stable(
            lab, lambda: watch.exactly_one_carrier() == home and lab.serving(), f"{home} alone to hold the group")

    longest, failed, out = _poll_during(lab, kill_and_heal)
    record("keepalived killed on the active node: running again", healed["restarted"])
    record(f"keepalived killed on the active node: {'the master' if home == active else 'the peer'} alone holds "
           "the group, steadily", healed["settled"])
    record("keepalived killed on the active node: longest client wait", longest)
    record("keepalived killed on the active node: samples with addresses on both (every ~2 s)", len(watch.both))
    watch.on_both()  # reads the address events: how long both held an address, exactly
    record("keepalived killed on the active node: longest time an address was on both (address events)",
           max((o.length for o in watch.overlaps), default=0.0))
    assert longest < hb.deadtime + hb.keepalive + WAIT_MARGIN, out[-3000:]
    assert Watch(lab).exactly_one_carrier() == home and lab.carries_none(lab.other(home))


def test_power_off_of_the_active_node_is_taken_over(lab):
    active = lab.carrier()
    standby = lab.other(active)
    hb = lab.cluster.heartbeat

    def power_off():
        lab_api.vm_stop(active)
        lab.wait_settled(standby)

    try:
        longest, failed, out = _poll_during(lab, power_off)
    finally:
        lab_api.vm_start(active)
    record("takeover after power-off: longest client wait", longest)
    # the down timer (deadtime) plus VRRP's skew (under one keepalive)
    assert longest < hb.deadtime + hb.keepalive + WAIT_MARGIN, out[-3000:]
    _back_home(lab, standby)


# ---- steady priorities -------------------------------------------------------------

def test_the_priorities_hold_steady_on_a_busy_pair_while_nothing_fails(lab):
    """While every ping node and web host answers, no track script lowers a priority,
    even with the guests made busy by deploys: a late run is waited for and one failed
    run moves nothing (render.TRACK_SCRIPT_TIMEOUT, TRACK_SCRIPT_FALL). At fall 1 and a
    2 s timeout the lab saw the master's priority drop every half minute and the group
    move between the balancers with nothing failed."""
    if not keepalived_track_scripts(lab.cluster):
        pytest.skip("no track script: the model has no external ping node")
    holder = lab.carrier()
    since = {b.name: lab.ssh(b.name, "date '+%Y-%m-%d %H:%M:%S'").stdout.strip() for b in lab.cluster.balancers}
    started = time.monotonic()
    for _ in range(3):  # no-op deploys: facts and checks on every host at once
        result = deploy()
        assert result.ok, result.output[-4000:]
    changes = {name: [line for line in lab.ssh(name, f"journalctl -u keepalived --since '{when}' --no-pager "
                                                     "-o short-monotonic").stdout.splitlines()
                      if "Changing effective priority" in line or "Entering " in line]
               for name, when in since.items()}
    record("priority changes while nothing failed, three no-op deploys",
           sum(len(lines) for lines in changes.values()))
    assert not any(changes.values()), f"over {time.monotonic() - started:.0f} s: {changes}"
    assert lab.carrier() == holder
