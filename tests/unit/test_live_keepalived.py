"""lvsha.live and lvsha.day2 on engine "keepalived": the status judged from a
keepalived balancer's outputs (ip and ipvsadm as captured in the lab, keepalived's
unit, the VRRP state lvsha-keepalived's notify records, `lvsha failover`'s tracked
file, the live migration's hold, the record of the file keepalived runs), and drain and failover run against a
simulated pair whose VRRP follows keepalived's rules for the tracked file
(files/keepalived/lvsha-keepalived, templates/keepalived.conf.j2)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from lvsha import day2, live, render
from lvsha.day2 import Pair, _fit_to_carry
from tests.unit.fakes import answer, batch_items
from tests.unit.test_live import SYNC_RUNNING, outputs

# The edge capture's table (ldirectord's on heartbeat: ipvsadm prints keepalived's alike).
CAPTURED = "edge-settled"


def _keepalived(model, auto_failback=None):
    cluster = replace(model, engine="keepalived")
    if auto_failback is not None:
        cluster = replace(cluster, heartbeat=replace(cluster.heartbeat, auto_failback=auto_failback))
    return cluster


def _addresses(cluster, name: str, holds: bool) -> str:
    """`ip -4 -o addr show` of balancer `name`: its own addresses (the capture's), and the
    floating ones when it holds them."""
    floating = {ip.cidr for ip in cluster.floating_ips()}
    own = [line for line in outputs(CAPTURED, name)["addresses"][1].splitlines()
           if not any(f" {cidr} " in line for cidr in floating)]
    carried = [f"2: {ip.interface}    inet {ip.cidr} scope global secondary {ip.interface}\\       valid_lft forever"
               for ip in cluster.floating_ips()] if holds else []
    return "\n".join(own + carried) + "\n"


def raw(cluster, name: str, vrrp: str | None, holds: bool, unit="active", failover="0", drained="", hold="0") -> dict:
    """One keepalived balancer's outputs, as day2.read_outputs collects them."""
    balancer = cluster.balancer(name)
    rules = hashlib.sha1(render.firewall_file(cluster, balancer).content.encode()).hexdigest()
    return {
        "addresses": (0, _addresses(cluster, name, holds)),
        "ipvs": (0, outputs(CAPTURED, "lb-a")["ipvs"][1]),
        "rate": (0, outputs(CAPTURED, "lb-a")["rate"][1]),
        "units": (0 if unit == "active" else 3, f"{unit}\n"),
        "applied": (0, f"firewall {rules} loaded-digest\nfirewall-now loaded-digest\n"),
        "drained": (0, drained),
        "vrrp": (0, f"{vrrp}\n") if vrrp else (1, ""),
        "failover": (0, f"{failover}\n"),
        "hold": (0, f"{hold}\n"),
        "keepalived_applied": (0, render.applied_record([render.keepalived_conf(cluster, balancer)])[0] + "\n"),
        **(SYNC_RUNNING if cluster.state_sync.enabled else {}),
    }


def status_of(cluster, **per_balancer) -> live.ClusterStatus:
    views = {name: live.BalancerView.from_outputs(name, raw(cluster, name, **kwargs)) for name, kwargs in per_balancer.items()}
    return live.cluster_status(cluster, views)


SETTLED = {"lb-a": {"vrrp": "BACKUP", "holds": False}, "lb-b": {"vrrp": "MASTER", "holds": True}}


def test_keepalived_commands_read_no_heartbeat(edge):
    commands = live.commands(_keepalived(edge))
    assert commands["vrrp"] == f"cat {render.KEEPALIVED_VRRP_STATE}"
    assert commands["units"] == "systemctl is-active keepalived.service"
    assert not any("cl_status" in c or "ldirectord" in c for c in commands.values())
    assert live.commands(edge) == live.COMMANDS  # heartbeat's unchanged


def test_the_settled_keepalived_pair_is_healthy_with_the_same_json_shape(edge):
    cluster = _keepalived(edge)
    status = status_of(cluster, **SETTLED)
    assert status.problems == [] and status.holder == "lb-b"
    shown = {b.name: b for b in status.balancers}
    assert (shown["lb-b"].vrrp, shown["lb-a"].vrrp) == ("MASTER", "BACKUP")
    assert all(b.engine == "keepalived" and b.keepalived == "active" and b.failover == "none" and b.config == "current"
               for b in status.balancers)
    # the same keys as on heartbeat, the engine's own named
    on_heartbeat = live.cluster_status(edge, {b.name: live.BalancerView.unreachable(b.name, "x") for b in edge.balancers})
    document = json.loads(json.dumps(status.to_json()))
    assert set(document) == set(on_heartbeat.to_json())
    assert set(document["balancers"][0]) == set(on_heartbeat.to_json()["balancers"][0])
    assert {s["name"]: {r["state"] for r in s["reals"]} for s in document["sites"]} == \
        {s.name: {"in rotation"} for s in cluster.sites}
    text = live.format_status(status)
    assert "lb-b: keepalived active, VRRP MASTER" in text and "heartbeat" not in text


def test_two_masters_are_split_brain(edge):
    cluster = _keepalived(edge)
    status = status_of(cluster, **{"lb-a": {"vrrp": "MASTER", "holds": True}, "lb-b": {"vrrp": "MASTER", "holds": True}})
    assert "SPLIT BRAIN: both balancers are VRRP MASTER (lb-a and lb-b)" in status.problems
    assert sum(p.startswith("SPLIT BRAIN") for p in status.problems) == len(cluster.floating_ips()) + 1
    assert "<-- SPLIT BRAIN" in live.format_status(status)


def test_degraded_keepalived_states_are_named(edge):
    cluster = _keepalived(edge)
    stopped = status_of(cluster, **{"lb-a": {"vrrp": "MASTER", "holds": False, "unit": "failed"},  # SIGKILLed: stale record
                                    "lb-b": SETTLED["lb-b"]})
    view = next(b for b in stopped.balancers if b.name == "lb-a")
    assert view.vrrp == "STOP" and "lb-a: keepalived is failed" in stopped.problems
    assert _fit_to_carry(stopped, "lb-a") == ["keepalived is failed on lb-a"]
    fault = status_of(cluster, **{"lb-a": {"vrrp": "FAULT", "holds": False}, "lb-b": SETTLED["lb-b"]})
    assert any(p.startswith("lb-a: VRRP is in FAULT (a tracked interface") for p in fault.problems)
    assert _fit_to_carry(fault, "lb-a") == ["lb-a is VRRP FAULT, not BACKUP: it would not take the group "
                                            "(a tracked interface or check failed)"]
    # an interrupted failover (auto_failback off) holds the node in FAULT: said, with the way out
    held = status_of(cluster, **{"lb-a": {"vrrp": "FAULT", "holds": False, "failover": "1"}, "lb-b": SETTLED["lb-b"]})
    assert any("held there by `lvsha failover`'s request" in p and "failover 0" in p for p in held.problems)
    unknown = status_of(cluster, **{"lb-a": {"vrrp": None, "holds": False}, "lb-b": SETTLED["lb-b"]})
    assert any("no VRRP state is recorded" in p for p in unknown.problems)
    none = status_of(cluster, **{"lb-a": {"vrrp": "BACKUP", "holds": False}, "lb-b": {"vrrp": "BACKUP", "holds": True}})
    assert "no balancer is VRRP MASTER" in none.problems
    assert f"lb-b is VRRP BACKUP but carries {len(cluster.floating_ips())} floating address(es)" in none.problems


def test_a_node_held_by_the_migration_is_named_with_the_way_out(edge):
    """The live migration's hold (render.KEEPALIVED_HOLD_FILE) keeps keepalived in FAULT
    across reboots: status says so, not "a tracked interface failed", naming the file and
    how to clear it; failover refuses naming it."""
    cluster = _keepalived(edge)
    assert live.commands(cluster)["hold"] == f"{render.KEEPALIVED_PROGRAM} hold show"
    held = status_of(cluster, **{"lb-a": {"vrrp": "FAULT", "holds": False, "hold": "1"}, "lb-b": SETTLED["lb-b"]})
    (fault,) = [p for p in held.problems if p.startswith("lb-a: VRRP is in FAULT")]
    assert fault.startswith("lb-a: VRRP is in FAULT (held by a migration (vrrp-hold set); ")
    assert render.KEEPALIVED_HOLD_FILE in fault and f"`{render.KEEPALIVED_PROGRAM} hold 0` on lb-a" in fault
    assert "a tracked interface" not in fault
    assert {b.name: b.hold for b in held.balancers} == {"lb-a": "set", "lb-b": "none"}
    assert f"lb-a: keepalived active, VRRP FAULT, HELD BY A MIGRATION ({render.KEEPALIVED_HOLD_FILE})" \
        in live.format_status(held)
    (reason,) = _fit_to_carry(held, "lb-a")
    assert reason.startswith("lb-a is VRRP FAULT, not BACKUP: it would not take the group (held by a migration "
                             f"(vrrp-hold set): {render.KEEPALIVED_HOLD_FILE}")
    # keepalived stopped with the hold set: it would start held
    stopped = status_of(cluster, **{"lb-a": {"vrrp": None, "holds": False, "hold": "1", "unit": "inactive"},
                                    "lb-b": SETTLED["lb-b"]})
    assert any(p.startswith("lb-a: held by a migration (vrrp-hold set): keepalived there stays in FAULT") and
               render.KEEPALIVED_HOLD_FILE in p for p in stopped.problems)
    # a lvsha-keepalived without `hold` (before the migration): no hold
    old = raw(cluster, "lb-a", "BACKUP", False)
    old["hold"] = (2, "")
    assert live.BalancerView.from_outputs("lb-a", old).hold == "0"


def test_keepalived_running_another_file_is_stale(edge):
    cluster = _keepalived(edge)
    views = {name: live.BalancerView.from_outputs(name, raw(cluster, name, **kwargs)) for name, kwargs in SETTLED.items()}
    views["lb-a"].keepalived_applied = "0" * 40
    status = live.cluster_status(cluster, views)
    assert "lb-a: keepalived run with other files than the model's" in status.problems


def test_a_failover_request_on_the_holders_peer_is_shown_not_a_fault(edge):
    cluster = _keepalived(edge, auto_failback=True)
    status = status_of(cluster, **{"lb-a": {**SETTLED["lb-a"], "failover": "1"}, "lb-b": SETTLED["lb-b"]})
    assert status.problems == []
    assert "FAILOVER REQUESTED" in live.format_status(status)
    both = status_of(cluster, **{name: {**kwargs, "failover": "1"} for name, kwargs in SETTLED.items()})
    assert any("set on both balancers" in p for p in both.problems)


def test_drained_reals_on_keepalived(edge):
    cluster = _keepalived(edge)
    vs = cluster.virtual_servers()[0]
    web_host, ip = vs.reals[0]
    drained = f"{vs.address} {vs.real_token(ip)}\n"
    table = outputs(CAPTURED, "lb-a")["ipvs"][1]
    views = {}
    for name, kwargs in SETTLED.items():
        r = raw(cluster, name, drained=drained, **kwargs)
        line = next(line for line in table.splitlines() if f"-> {vs.real_address(ip)} " in line)
        r["ipvs"] = (0, table.replace(line, line.replace("Masq    1", "Masq    0")))
        views[name] = live.BalancerView.from_outputs(name, r)
    status = live.cluster_status(cluster, views)
    states = {(s.name, r.host): r.state for s in status.sites for r in s.reals}
    assert states[(vs.site.name, web_host.name)] == "drained" and status.problems == []
    assert day2.drain_script(cluster) == f"{render.DRAIN_SCRIPT} --engine keepalived"
    assert day2.drain_script(edge) == render.DRAIN_SCRIPT


# ---- failover on a simulated keepalived pair ----------------------------------------

class SimulatedPair:
    """Two keepalived balancers as lvsha failover sees them. The VRRP rules of the
    tracked file: with auto_failback on, 1 lowers a node's priority by 253 (to 1 at
    least) and the higher priority carries the group; off, 1 holds the node in FAULT
    (the peer carries the group) and nopreempt leaves it where it is once cleared."""

    def __init__(self, cluster, holder: str, broken: str | None = None, lag: int = 0):
        self.cluster, self.holder, self.broken = cluster, holder, broken
        self.files = {b.name: 0 for b in cluster.balancers}
        self.holds = {b.name: 0 for b in cluster.balancers}  # the migration's hold: FAULT while set
        self.written: list[tuple[str, int]] = []
        self.calls: list[tuple[str, str]] = []  # (balancer, command): one per SSH round trip
        # A change of holder shows only from the `lag`+1-th round of reads of both nodes'
        # addresses after the request (VRRP's timers), whichever node is read first.
        self.lag, self.pending, self.reads = lag, None, 0
        self.hosts = {b.name: self._host(b.name) for b in cluster.balancers}

    def _settle(self):
        names = [b.name for b in self.cluster.balancers]
        if self.broken:  # the receiver never takes over
            return
        holder = self.holder
        if self.cluster.heartbeat.auto_failback:
            priority = {n: max(1, self.cluster.vrrp_priority(self.cluster.balancer(n)) - 253 * self.files[n]) for n in names}
            best = max(priority.values())
            if priority[self.holder] < best:
                holder = next(n for n in names if priority[n] == best)
        elif self.files[self.holder]:
            other = next(n for n in names if n != self.holder)
            if not self.files[other]:
                holder = other
        if holder != self.holder:
            self.pending, self.reads = holder, 0
            self._read_addresses(counted=False)

    def _read_addresses(self, counted=True):
        if self.pending and self.reads >= 2 * self.lag:
            self.holder, self.pending = self.pending, None
        self.reads += counted

    def vrrp(self, name):
        if self.holds[name]:
            return "FAULT"
        if not self.cluster.heartbeat.auto_failback and self.files[name] and self.holder != name:
            return "FAULT"
        return "MASTER" if name == self.holder else "BACKUP"

    def _host(self, name):
        sim = self

        def one(command):
            if command.startswith(f"{render.KEEPALIVED_PROGRAM} failover ") and command.split()[-1] in "01":
                sim.files[name] = int(command.split()[-1])
                sim.written.append((name, sim.files[name]))
                sim._settle()
                return 0, ""
            if command == live.COMMANDS["addresses"]:
                sim._read_addresses()  # time passes
            outs = raw(sim.cluster, name, sim.vrrp(name), sim.holder == name, failover=str(sim.files[name]),
                       hold=str(sim.holds[name]))
            key = next((k for k, c in live.commands(sim.cluster).items() if c == command), None)
            if key is None:
                return 127, f"unexpected command {command}"
            return outs[key]

        class Host:
            def run_shell_command(self, command, _timeout=None, **kwargs):
                sim.calls.append((name, command))
                rc, out = answer(command, one)
                return rc == 0, SimpleNamespace(stdout=out, stderr="")

        return Host()


@pytest.fixture
def simulate(monkeypatch):
    def simulate(cluster, holder, **more):
        sim = SimulatedPair(cluster, holder, **more)
        pair = Pair(cluster, inventory=None, hosts=sim.hosts)
        monkeypatch.setattr(day2, "load_pair", lambda inventory, sudo: pair)
        monkeypatch.setattr(Pair, "connect", lambda self: self)
        monkeypatch.setattr(day2.time, "sleep", lambda seconds: None)
        return sim
    return simulate


def _failover(*args):
    return CliRunner().invoke(day2.failover_command, ["inventory.py", *args])


def test_failover_with_auto_failback_lowers_the_holder_and_back_clears_it(edge, simulate):
    cluster = _keepalived(edge, auto_failback=True)
    master, backup = (b.name for b in cluster.balancers)
    sim = simulate(cluster, holder=master)
    result = _failover()
    assert result.exit_code == 0, result.output
    assert sim.holder == backup and f"{backup} carries every floating address" in result.output
    assert sim.files == {master: 1, backup: 0}  # held: the master yields until handed back
    result = _failover("--to", master)
    assert result.exit_code == 0, result.output
    assert sim.holder == master and sim.files == {master: 0, backup: 0}  # undone: the model's priorities


def test_failover_with_auto_failback_off_faults_the_holder_until_the_peer_is_master(edge, simulate):
    cluster = _keepalived(edge, auto_failback=False)
    first, second = (b.name for b in cluster.balancers)
    sim = simulate(cluster, holder=second)
    result = _failover("--to", first)
    assert result.exit_code == 0, result.output
    assert sim.holder == first
    # FAULT, then cleared: nopreempt keeps it (no 0 written on the target: its request was read unset)
    assert sim.written == [(second, 1), (second, 0)]
    assert _failover("--to", first).stdout.strip() == f"{first} already carries every floating address: nothing to do"


def test_failover_refuses_a_receiver_in_fault_naming_it(edge, simulate):
    cluster = _keepalived(edge, auto_failback=False)
    first, second = (b.name for b in cluster.balancers)
    sim = simulate(cluster, holder=second)
    sim.files[first] = 1  # held in FAULT
    result = _failover()
    assert result.exit_code == 1 and f"refusing to hand over to {first}: {first} is VRRP FAULT" in result.output
    assert sim.written == []


def test_failover_refuses_a_receiver_held_by_the_migration_naming_the_hold(edge, simulate):
    cluster = _keepalived(edge, auto_failback=True)
    first, second = (b.name for b in cluster.balancers)
    sim = simulate(cluster, holder=second)
    sim.holds[first] = 1
    result = _failover()
    assert result.exit_code == 1
    assert f"refusing to hand over to {first}: {first} is VRRP FAULT, not BACKUP: it would not take the group " \
           f"(held by a migration (vrrp-hold set): {render.KEEPALIVED_HOLD_FILE}" in result.output
    assert "a tracked interface" not in result.output and sim.written == []


def test_a_failover_that_does_not_happen_in_time_is_undone(edge, simulate):
    cluster = _keepalived(edge, auto_failback=True)
    master, backup = (b.name for b in cluster.balancers)
    sim = simulate(cluster, holder=master, broken=backup)
    result = _failover("--timeout", "0")
    assert result.exit_code == 1
    assert f"{backup} does not carry everything after 0 s" in result.output
    assert f"the failover request on {master} is undone" in result.output
    assert sim.files == {master: 0, backup: 0} and sim.holder == master


# ---- where a failover's time goes: SSH round trips per phase (issue 21) -------------

def _phase(result, what: str) -> str:
    """The progress line of phase `what` (`what: N.N s (SSH commands: ...)`)."""
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip().startswith(f"{what}: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_failover_reads_each_balancer_in_one_ssh_command_and_each_round_reads_both_once(edge, simulate):
    """Every SSH command costs a busy balancer a process start or more (issue 21: the
    lab's keepalived pair took 56-65 s): the state is read in one command per
    balancer, the request writes only what changes, and each round of the wait reads
    both balancers side by side, one command each, saying what it still waits for."""
    cluster = _keepalived(edge, auto_failback=True)
    master, backup = (b.name for b in cluster.balancers)
    total = len(cluster.floating_ips())
    sim = simulate(cluster, holder=master, lag=2)  # the backup takes over at the 3rd round
    result = _failover()
    assert result.exit_code == 0, result.output
    assert sim.holder == backup and sim.written == [(master, 1)]  # the backup's own request was 0: not rewritten
    per_host = {name: sum(1 for n, _ in sim.calls if n == name) for name in (master, backup)}
    assert per_host == {master: 1 + 1 + 3, backup: 1 + 3}  # read, request, 3 rounds
    assert _phase(result, "reading both balancers' state").endswith(f"(SSH commands: {master} 1, {backup} 1)")
    assert _phase(result, "the request").endswith(f"(SSH commands: {master} 1)")
    assert _phase(result, "the handover").endswith(f"(SSH commands: {master} 3, {backup} 3, 3 round(s) of one on each)")
    waiting = [line for line in result.stderr.splitlines() if "waiting for" in line]
    assert len(waiting) == 2 and all(
        f"{backup} carries 0/{total} floating addresses, {master} {total} (VRRP: {master} MASTER, {backup} BACKUP); "
        f"waiting for {backup} to carry every address, {master} to release its {total}" in line for line in waiting), waiting
    summary = next(line for line in result.stderr.splitlines() if " s in all: " in line)
    assert all(f"{what} " in summary for what in ("loading the inventory", "reading both balancers' state",
                                                  "the request", "the handover"))
    assert result.stdout.splitlines()[-1].startswith(f"{backup} carries every floating address and serves every site after")


def test_failover_back_to_the_master_says_it_waits_for_preempt_delay_and_writes_one_request(edge, simulate):
    """Handing back to the master with state sync on: keepalived preempts only after
    preempt_delay (the sync listen time): said, with the master-down interval; only
    the master's own request is cleared (the holder has none)."""
    cluster = _keepalived(replace(edge, state_sync=replace(edge.state_sync, enabled=True)), auto_failback=True)
    master, backup = (b.name for b in cluster.balancers)
    sim = simulate(cluster, holder=backup)
    sim.files[master] = 1  # as a failover to the backup left it
    result = _failover("--to", master)
    assert result.exit_code == 0, result.output
    assert sim.holder == master and sim.written == [(master, 0)]
    delay = render.sync_listen(cluster)
    down = cluster.vrrp_down_adverts() * cluster.heartbeat.keepalive + (256 - 150) / 256 * cluster.heartbeat.keepalive
    assert (f"{master} has the higher priority and preempts after keepalived's preempt_delay ({delay} s: its IPVS "
            f"sync daemons' listening time) and VRRP's master-down interval ({down:.1f} s), about {delay + down:.0f} s"
            in result.stderr), result.stderr
    assert _phase(result, "the request").endswith(f"(SSH commands: {master} 1)")
