"""lvsha.live: the parsers on outputs of the real tools captured in the lab
(`lvsha status --save-raw`, tests/unit/captures/<model>-<scenario>/<balancer>.json),
and the status judged from them against the model they were captured on
(examples/edge, or the reference). lvsha's own records (`lvsha-applied show`) are replaced by ones
computed from this rendering: the lab's carried its own secret and management NIC.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from pathlib import Path

from types import SimpleNamespace

import pytest

from lvsha import live, render
from lvsha import day2
from lvsha.day2 import Day2Error, Pair, _fit_to_carry, active_connections, drain_pairs, read_view
from tests.unit.fakes import answer, batch_items

CAPTURES = Path(__file__).parent / "captures"


def outputs(scenario: str, balancer: str) -> dict[str, tuple[int, str]]:
    return {k: tuple(v) for k, v in json.loads((CAPTURES / scenario / f"{balancer}.json").read_text()).items()}


def applied_as_rendered(cluster, name: str) -> tuple[int, str]:
    balancer = cluster.balancer(name)
    rules = hashlib.sha1(render.firewall_file(cluster, balancer).content.encode()).hexdigest()
    return 0, "\n".join([
        "heartbeat " + " ".join(render.applied_record(render.heartbeat_files(cluster, balancer))),
        "ldirectord " + " ".join(render.applied_record([render.ldirectord_file(cluster)])),
        f"firewall {rules} loaded-digest", "firewall-now loaded-digest"])


def views(cluster, scenario: str, **changed) -> dict[str, live.BalancerView]:
    found = {}
    for b in cluster.balancers:
        raw = outputs(scenario, b.name)
        raw["applied"] = applied_as_rendered(cluster, b.name)
        raw.update(changed.get(b.name, {}))
        found[b.name] = live.BalancerView.from_outputs(b.name, raw)
    return found


# ---- the parsers, on the tools' own words --------------------------------------

def test_ip_addr_names_every_floating_address_on_its_interface(edge):
    addresses = live.parse_addresses(outputs("edge-settled", "lb-a")["addresses"][1])
    holder = "lb-a" if "203.0.113.10/24" in addresses.get("eth0", []) else "lb-b"
    on_holder = live.parse_addresses(outputs("edge-settled", holder)["addresses"][1])
    for ip in edge.floating_ips():
        assert ip.cidr in on_holder[ip.interface]
    assert f"{edge.balancer(holder).internal_ip}/16" in on_holder["eth1"]


def test_ipvsadm_table_and_rates(edge):
    for name in ("lb-a", "lb-b"):  # loaded on both: ldirectord runs on both
        table = live.parse_ipvsadm(outputs("edge-settled", name)["ipvs"][1])
        assert set(table) == {vs.address for vs in edge.virtual_servers()}
        shop, static = (table[vs.address] for vs in edge.virtual_servers())
        assert (shop.scheduler, shop.flags, static.scheduler, static.flags) == ("wlc", "persistent 900", "rr", "")
        for vs in edge.virtual_servers():
            reals = table[vs.address].reals
            assert set(reals) == {vs.real_address(ip) for _, ip in vs.reals}
            assert all(r.forward == "Masq" and r.weight == 1 for r in reals.values())
        rates = live.parse_ipvsadm_rate(outputs("edge-settled", name)["rate"][1])
        assert {key[0] for key in rates} == set(table)
        assert all(isinstance(rate.cps, int) for rate in rates.values())
    drained = live.parse_ipvsadm(outputs("reference-drained", "balancer1")["ipvs"][1])
    assert sorted(r.weight for vs in drained.values() for r in vs.reals.values()) == [0, 0, 0, 1, 1, 1, 1, 1, 1]


def test_an_empty_or_missing_ipvs_table_is_empty():
    assert live.parse_ipvsadm("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n"
                              "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n") == {}
    assert live.parse_ipvsadm("") == {}


def test_cl_status_words(edge):
    raw = outputs("edge-settled", "lb-a")
    assert raw["hbstatus"][0] == 0 and "running" in raw["hbstatus"][1]
    assert raw["peer"][1].strip() == "active"
    assert set(live.parse_words(raw["links"][1])) == {"eth0", "eth1"}  # indented by cl_status
    assert raw["rscstatus"][1].strip() in ("all", "local", "foreign", "none")
    stopped = outputs("edge-standby-heartbeat-stopped", "lb-a")
    view = live.BalancerView.from_outputs("lb-a", stopped)
    assert stopped["hbstatus"][0] != 0 and not view.heartbeat.running


# ---- the status judged against the model ------------------------------------------

def test_the_settled_pair_is_healthy(edge):
    status = live.cluster_status(edge, views(edge, "edge-settled"))
    assert status.problems == [] and status.healthy
    holder = status.holder
    assert holder in ("lb-a", "lb-b")
    assert all(a.holders == [holder] for a in status.addresses)
    assert all(site.loaded and {r.state for r in site.reals} == {"in rotation"} for site in status.sites)
    text = live.format_status(status)
    assert text.splitlines()[0] == f"cluster edge: healthy, {holder} carries every floating address"
    assert json.loads(json.dumps(status.to_json()))["holder"] == holder


def test_a_drained_host_shows_drained_and_is_not_a_fault(reference):
    status = live.cluster_status(reference, views(reference, "reference-drained"))
    drained = {(s.name, r.host) for s in status.sites for r in s.reals if r.state == "drained"}
    assert drained == {(site.name, "hostB") for site in reference.sites}
    assert status.problems == []
    assert "drained" in live.format_status(status)


def test_one_node_drained_and_the_other_not_is_a_fault(reference):
    status = live.cluster_status(reference, views(reference, "reference-drained", balancer2={"drained": (0, "")}))
    assert any("disagree on drained" in p for p in status.problems)


def test_a_drained_host_still_at_weight_one_is_draining(reference):
    raw = outputs("reference-drained", "balancer1")
    raw["ipvs"] = (0, raw["ipvs"][1].replace("Masq    0", "Masq    1"))
    status = live.cluster_status(reference, views(reference, "reference-drained", balancer1={"ipvs": raw["ipvs"]}))
    assert {r.state for s in status.sites for r in s.reals if r.host == "hostB"} == {"draining"}
    assert any("hostB is drained but still has weight 1" in p for p in status.problems)


def test_an_address_on_both_balancers_is_split_brain(edge):
    settled = views(edge, "edge-settled")
    holder = live.cluster_status(edge, settled).holder
    other = next(name for name in settled if name != holder)
    settled[other].addresses = {k: list(v) for k, v in settled[holder].addresses.items()}
    status = live.cluster_status(edge, settled)
    assert status.holder is None and not status.healthy
    assert sum("SPLIT BRAIN" in p for p in status.problems) == len(edge.floating_ips())
    assert "<-- SPLIT BRAIN" in live.format_status(status)


def test_a_stopped_heartbeat_and_an_unreachable_balancer_are_named(edge):
    stopped = live.cluster_status(edge, views(edge, "edge-standby-heartbeat-stopped"))
    assert "lb-a: heartbeat is not running" in stopped.problems
    reachable = views(edge, "edge-settled")
    holder = live.cluster_status(edge, reachable).holder
    other = next(name for name in reachable if name != holder)
    reachable[other] = live.BalancerView.unreachable(other, "cannot connect: timed out")
    status = live.cluster_status(edge, reachable)
    assert status.holder == holder and f"{other} is unreachable: cannot connect: timed out" in status.problems
    assert f"{other}: UNREACHABLE" in live.format_status(status)


def test_a_failed_real_server_and_a_firewall_that_differs(edge):
    settled = views(edge, "edge-settled")
    holder = live.cluster_status(edge, settled).holder
    vs = edge.virtual_servers()[1]
    web_host, ip = vs.reals[0]
    del settled[holder].ipvs[vs.address].reals[vs.real_address(ip)]
    settled[holder].applied["firewall-now"] = ["flushed-digest"]
    status = live.cluster_status(edge, settled)
    assert f"{vs.site.name}: {web_host.name} ({vs.real_address(ip)}) failed its health check" in status.problems
    assert f"{holder}: the loaded firewall differs from the model (deploy to fix)" in status.problems


# ---- what drain and failover decide from it ---------------------------------------

def test_drain_names_the_reals_as_ldirectord_cf_does(edge):
    # ldirectord.cf's words: VIP:PORT, and the real without a port where the service balances every port
    (shop, static), host = edge.sites, edge.web_hosts[1]
    assert (shop.virtual_port, static.virtual_port) == (0, 80)
    every_site = [(f"{shop.vip}:0", host.internal_ips[0]), (f"{static.vip}:80", f"{host.internal_ips[1]}:80")]
    assert drain_pairs(edge, host.name, None) == every_site
    assert drain_pairs(edge, host.name, static.name) == every_site[1:]
    with pytest.raises(Day2Error, match="web host 'no-such-host' is not in the model"):
        drain_pairs(edge, "no-such-host", None)
    with pytest.raises(Day2Error, match="site 'nope' is not in the model"):
        drain_pairs(edge, host.name, "nope")


def test_active_connections_count_only_the_host_and_site(edge):
    raw = outputs("edge-settled", "lb-b")
    lines = raw["ipvs"][1].splitlines()
    lines = [line.replace("Masq    1      0 ", "Masq    1      3 ", 1) if "10.20.1.11:0" in line else line for line in lines]
    status = live.cluster_status(edge, views(edge, "edge-settled", **{"lb-b": {"ipvs": (0, "\n".join(lines))}}))
    assert active_connections(status, "web-1", None) == 3
    assert active_connections(status, "web-1", "static.example.org") == 0
    assert active_connections(status, "web-2", None) == 0


def test_failover_refuses_a_receiver_that_is_not_fit(edge):
    status = live.cluster_status(edge, views(edge, "edge-settled"))
    other = next(b.name for b in edge.balancers if b.name != status.holder)
    assert _fit_to_carry(status, other) == []
    stopped = live.cluster_status(edge, views(edge, "edge-standby-heartbeat-stopped"))
    assert _fit_to_carry(stopped, "lb-a") == ["heartbeat is stopped on lb-a", "no heartbeat link of lb-a is up"]
    unreachable = live.cluster_status(edge, {**views(edge, "edge-settled"),
                                             other: live.BalancerView.unreachable(other, "cannot connect: refused")})
    assert _fit_to_carry(unreachable, other) == [f"{other} is unreachable (cannot connect: refused)"]


def test_a_standby_with_an_empty_ipvs_table_is_degraded_and_never_handed_the_group(edge):
    """The fresh-machine run's outage: ldirectord active on the standby, its IPVS table empty."""
    settled = views(edge, "edge-settled")
    status = live.cluster_status(edge, settled)
    standby = next(b.name for b in edge.balancers if b.name != status.holder)
    empty = "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n"
    status = live.cluster_status(edge, views(edge, "edge-settled", **{standby: {"ipvs": (0, empty)}}))
    every = ", ".join(vs.address for vs in edge.virtual_servers())
    view = next(b for b in status.balancers if b.name == standby)
    assert view.ldirectord == "active" and view.ipvs == f"missing {every}"
    assert not status.healthy
    assert any(p.startswith(f"{standby}: IPVS lacks the virtual service(s) {every}") for p in status.problems)
    assert f"IPVS missing {every}" in live.format_status(status)
    assert _fit_to_carry(status, standby) == [f"the IPVS table of {standby} is missing {every}: it would not serve those sites"]
    # one site missing is named alone
    first = edge.virtual_servers()[0]
    del settled[standby].ipvs[first.address]
    partial = live.cluster_status(edge, settled)
    assert next(b for b in partial.balancers if b.name == standby).ipvs == f"missing {first.address}"


def test_what_failover_waits_for(edge):
    raw = {name: outputs("edge-settled", name) for name in ("lb-a", "lb-b")}
    held = {name: live.floating_held(edge, live.parse_addresses(raw[name]["addresses"][1])) for name in raw}
    assert held == {"lb-a": 0, "lb-b": len(edge.floating_ips())}
    assert live.serves_every_site(edge, live.parse_ipvsadm(raw["lb-a"]["ipvs"][1]))
    drained_everywhere = raw["lb-a"]["ipvs"][1].replace("Masq    1", "Masq    0")
    assert not live.serves_every_site(edge, live.parse_ipvsadm(drained_everywhere))
    assert not live.serves_every_site(edge, {})


# ---- commands on a balancer: bounded, and a lost connection named ----------------

class _Host:
    """A connected balancer whose commands answer, hang or lose the connection."""

    def __init__(self, answer=None, error=None):
        self.answer, self.error, self.calls = answer, error, []

    def run_shell_command(self, command, _timeout=None, **kwargs):
        self.calls.append((command, _timeout))
        if self.error:
            raise self.error
        rc, out = answer(command, lambda one: (0, self.answer or ""))
        return rc == 0, SimpleNamespace(stdout=out, stderr="")

    def commands(self) -> list[str]:
        """Every single command run, those of a batch included."""
        return [c for command, _ in self.calls for c in (batch_items(command)[1] if batch_items(command) else [command])]


def test_a_command_that_hangs_is_bounded_and_named(edge):
    name = edge.balancers[0].name
    host = _Host(error=TimeoutError())  # what pyinfra raises when _timeout passes
    pair = Pair(edge, inventory=None, hosts={name: host})
    with pytest.raises(Day2Error, match=rf"{name}: no answer to `cl_status rscstatus` within 60 s"):
        pair.run(name, "cl_status rscstatus")
    assert host.calls == [("cl_status rscstatus", 60)]
    with pytest.raises(Day2Error, match=r"within 5 s"):
        pair.require(name, "true", "a check", timeout=5)


def test_a_connection_lost_mid_command_is_named_not_a_traceback(edge):
    name = edge.balancers[0].name
    pair = Pair(edge, inventory=None, hosts={name: _Host(error=EOFError())})
    with pytest.raises(Day2Error, match=rf"{name}: the connection was lost during `ipvsadm -Ln`: EOFError"):
        pair.run(name, "ipvsadm -Ln")
    # status reads it as that balancer unreachable, with the reason
    view = read_view(pair, name)
    assert not view.reachable and "the connection was lost" in view.error


def test_a_drain_that_fails_on_the_second_balancer_says_the_first_has_it(edge, monkeypatch):
    first, second = (b.name for b in edge.balancers)

    class Failing(_Host):
        def run_shell_command(self, command, _timeout=None, **kwargs):
            self.calls.append((command, _timeout))
            return False, SimpleNamespace(stdout="", stderr="lvsha-drain: /var/lib/lvsha/drained is locked")

    hosts = {first: _Host(), second: Failing()}
    pair = Pair(edge, inventory=None, hosts=hosts)
    monkeypatch.setattr(day2, "load_pair", lambda inventory, sudo: pair)
    monkeypatch.setattr(Pair, "connect", lambda self: self)
    host = edge.web_hosts[0].name
    with pytest.raises(Day2Error) as raised:
        day2._change_drain("inventory.py", host, None, False, "drain")
    message = str(raised.value)
    assert message.startswith(f"{second}: drain {host} failed")
    assert f"{first} has it already, so the balancers disagree until `lvsha drain {host}` succeeds on both" in message
    hosts[first] = Failing()
    with pytest.raises(Day2Error, match="nothing was changed"):
        day2._change_drain("inventory.py", host, None, False, "drain")


# ---- connection state sync on each balancer ----------------------------------------

# The tools' own words: `systemctl is-active`, and ipvsadm's format for its sync daemons
# (ipvsadm 1.31, `ipvsadm -L --daemon`).
SYNC_RUNNING = {"conntrackd": (0, "active\n"),
                "sync_daemons": (0, "master sync daemon (mcast=eth1, syncid=1, maxlen=1472, group=224.0.0.81, "
                                    "port=8848, ttl=1)\nbackup sync daemon (mcast=eth1, syncid=1, maxlen=1472, "
                                    "group=224.0.0.81, port=8848, ttl=1)\n")}


def _synced(reference, **changed):
    return views(reference, "reference-drained",
                 **{b.name: {**SYNC_RUNNING, **changed.get(b.name, {})} for b in reference.balancers})


def test_state_sync_running_on_both_is_shown_and_healthy(reference):
    status = live.cluster_status(reference, _synced(reference))
    assert status.problems == []
    for b in status.balancers:
        assert (b.state_sync, b.conntrackd, b.ipvs_sync_daemons) == ("running", "active", ["master", "backup"])
    assert json.loads(json.dumps(status.to_json()))["balancers"][0]["state_sync"] == "running"
    assert "state sync running (conntrackd active, IPVS sync daemons: master, backup)" in live.format_status(status)


def test_state_sync_down_on_a_balancer_is_degraded_and_named(reference):
    standby = reference.balancers[1].name
    status = live.cluster_status(reference, _synced(reference, **{standby: {
        "conntrackd": (3, "inactive\n"), "sync_daemons": (0, SYNC_RUNNING["sync_daemons"][1].splitlines()[0])}}))
    assert not status.healthy
    assert status.problems == [f"{standby}: state sync is down (conntrackd inactive, IPVS sync daemon backup not "
                               "running): a takeover would drop connections"]
    view = next(b for b in status.balancers if b.name == standby)
    assert view.state_sync == "DOWN: conntrackd inactive, IPVS sync daemon backup not running"
    assert view.ipvs_sync_daemons == ["master"]
    assert "state sync DOWN: conntrackd inactive" in live.format_status(status)
    assert json.loads(json.dumps(status.to_json()))["balancers"][1]["conntrackd"] == "inactive"
    # no daemon at all (ipvsadm answers nothing)
    status = live.cluster_status(reference, _synced(reference, **{standby: {"sync_daemons": (0, "")}}))
    assert any("IPVS sync daemon master not running, IPVS sync daemon backup not running" in p for p in status.problems)


def test_without_state_sync_in_the_model_nothing_of_it_is_read_or_judged(edge):
    assert edge.state_sync.enabled is False
    status = live.cluster_status(edge, views(edge, "edge-settled"))
    assert {b.state_sync for b in status.balancers} == {"off"} and status.problems == []
    assert "state sync" not in live.format_status(status)
    # read_outputs asks for it only when the model syncs state
    name = edge.balancers[0].name
    host = _Host(answer="")
    read_view(Pair(edge, inventory=None, hosts={name: host}), name)
    assert host.commands() and not [c for c in host.commands() if c in live.SYNC_COMMANDS.values()]


def test_state_sync_is_read_with_the_model_syncing_state(reference):
    name = reference.balancers[0].name
    host = _Host(answer="active\n")
    view = read_view(Pair(reference, inventory=None, hosts={name: host}), name)
    assert [c for c in host.commands() if c in live.SYNC_COMMANDS.values()] == list(live.SYNC_COMMANDS.values())
    assert view.conntrackd == "active" and view.sync_daemons == []


def test_a_capture_without_state_sync_says_it_was_not_read(reference):
    """Captures older than the state sync read (these) are judged without it."""
    status = live.cluster_status(reference, views(reference, "reference-drained"))
    assert {b.state_sync for b in status.balancers} == {"not read"} and status.problems == []


# ---- a balancer's state in one SSH command (a batch) -------------------------------

BATCH = {"lines": "printf 'a b\\n\\nc\\n'", "none": "true", "fails": "echo it\\'s; echo why >&2; exit 3",
         "unended": "printf 'no newline'", "link:a b's": "echo \"$0\" >/dev/null; cat", "off": "false"}
ANSWERS = {"lines": (0, "a b\n\nc"), "none": (0, ""), "fails": (3, "it's"), "unended": (0, "no newline"),
           "link:a b's": (0, ""), "off": (1, "")}


def test_a_batch_runs_each_command_in_sh_and_gives_its_status_and_output(tmp_path):
    """batch_script run by sh, as a balancer runs it: each command's exit status and
    stdout, stdin empty, stderr passed through; the fakes answer batches alike."""
    script = day2.batch_script(list(BATCH.values()), "lvsha-0123")
    ran = subprocess.run(shlex.split(script), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    # each command named on stderr before it runs (a cut-off answer names where it stopped), its own stderr after
    assert ran.returncode == 0 and ran.stderr == "".join(
        f"lvsha-batch: {command}\n" + ("why\n" if key == "fails" else "") for key, command in BATCH.items())
    # pyinfra hands over stdout as its lines joined: no trailing newline
    assert day2.parse_batch(ran.stdout.rstrip("\n"), "lvsha-0123", list(BATCH), "x") == ANSWERS
    assert answer(script, lambda command: ANSWERS[next(k for k, c in BATCH.items() if c == command)]) == \
        (0, ran.stdout.rstrip("\n"))
    assert batch_items(script) == ("lvsha-0123", list(BATCH.values())) and batch_items("ipvsadm -Ln") is None


def test_a_batch_through_pyinfra_own_command_wrapping():
    """pyinfra wraps the script in `sh -c '...'` (with sudo, `sudo -H -n sh -c`): its local
    connector wraps it as its SSH connector does."""
    from pyinfra.api import Config, Inventory, State
    inventory = Inventory((["@local"], {}))
    State(inventory, Config())
    host = inventory.get_host("@local")
    host.connect()
    pair = Pair(None, inventory, hosts={"local": host})
    assert pair.run_batch("local", BATCH, "a test") == ANSWERS
    assert pair.commands_run == {"local": 1}


def test_a_batch_answer_cut_short_is_an_error_naming_the_balancer_never_a_guess(edge):
    answered = "lvsha-0123 0 0\nx\nlvsha-0123 1 0"
    with pytest.raises(Day2Error, match=r"lb-a: reading its state failed: its answer stops half-way \(killed\)"):
        day2.parse_batch(answered, "lvsha-0123", ["a", "b"], "lb-a: reading its state", "sh: 1\nkilled")
    with pytest.raises(Day2Error, match="no answer for b, c"):
        day2.parse_batch("lvsha-0123 0 0\nlvsha-0123 end", "lvsha-0123", ["a", "b", "c"], "lb-a: reading")
    name = edge.balancers[0].name

    class Garbled(_Host):
        def run_shell_command(self, command, _timeout=None, **kwargs):
            return True, SimpleNamespace(stdout="lvsha-0123 0 0\nnot a batch's answer", stderr="")

    view = read_view(Pair(edge, inventory=None, hosts={name: Garbled()}), name)
    assert not view.reachable and "reading its state failed: its answer stops half-way" in view.error


def test_a_heartbeat_balancer_is_read_in_two_ssh_commands_its_links_in_the_second(edge):
    name = edge.balancers[0].name
    peer = edge.peer(edge.balancer(name)).name

    class Heartbeat(_Host):
        def run_shell_command(self, command, _timeout=None, **kwargs):
            self.calls.append((command, _timeout))
            replies = {"cl_status hbstatus": (0, "Heartbeat is running"), f"cl_status listhblinks {peer}": (0, "\teth0\n\teth1\n"),
                       f"cl_status nodestatus {peer}": (0, "active"), f"cl_status hblinkstatus {peer} eth0": (0, "up"),
                       f"cl_status hblinkstatus {peer} eth1": (0, "dead")}
            rc, out = answer(command, lambda one: replies.get(one, (0, "")) if self.answer is None else (1, ""))
            return rc == 0, SimpleNamespace(stdout=out, stderr="")

    host = Heartbeat()
    pair = Pair(edge, inventory=None, hosts={name: host})
    view = read_view(pair, name)
    assert view.heartbeat.running and view.heartbeat.peer == "active"
    assert view.heartbeat.links == {"eth0": "up", "eth1": "dead"}
    assert len(host.calls) == 2 == pair.commands_run[name]
    assert batch_items(host.calls[1][0])[1] == [f"cl_status hblinkstatus {peer} eth0",
                                                                  f"cl_status hblinkstatus {peer} eth1"]
    # heartbeat not running: one command, and nothing of the peer or links kept (as before)
    stopped = Heartbeat(answer="stopped")
    outputs = day2.read_outputs(Pair(edge, inventory=None, hosts={name: stopped}), name)
    assert len(stopped.calls) == 1 and "peer" not in outputs and "links" not in outputs
    assert set(outputs) == set(live.commands(edge))


def test_a_batch_cut_short_names_the_command_it_stopped_in():
    """The reviewer's case: a tool that hangs or dies mid-batch (here the batch's shell is
    killed while it runs the second command): the error names that command."""
    commands = {"first": "echo a", "dies": "kill -KILL $$", "never": "echo b"}
    script = day2.batch_script(list(commands.values()), "lvsha-0123")
    ran = subprocess.run(shlex.split(script), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    with pytest.raises(Day2Error, match=r"lb-a: reading its state failed: its answer stops half-way "
                                        r"\(lvsha-batch: kill -KILL \$\$\)"):
        day2.parse_batch(ran.stdout.rstrip("\n"), "lvsha-0123", list(commands), "lb-a: reading its state", ran.stderr)
