"""lvsha diagram: the picture drawn from the model, docs/reference-cluster.svg kept current,
and --live's annotations from a ClusterStatus built on captured outputs (nothing connects).

docs/reference-cluster.svg carries the DOT source it was drawn from (<metadata>): the test
compares that with the DOT source drawn from inventory.py's model now, which is the same
whatever Graphviz version lays it out. Redraw it with
`.venv/bin/python -m pytest tests/unit/test_diagram.py --update-golden`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from lvsha import diagram, live
from lvsha.cli import main
from tests.conftest import ROOT, TEST_SECRET
from tests.unit.test_live import outputs, views

PICTURE = ROOT / "docs" / "reference-cluster.svg"


def _nodes(source: str) -> list[str]:
    """The ids of the nodes a DOT source declares."""
    return re.findall(r"^\t+(\w+) \[label=", source, re.M)


def _edges(source: str, tail: str, head: str) -> list[str]:
    return [line for line in source.splitlines() if line.strip().startswith(f"{tail} -> {head}")]


# ---- the reference picture ------------------------------------------------------------

def test_the_reference_picture_is_drawn_from_the_current_model(reference, request):
    if request.config.getoption("--update-golden"):
        diagram.write(reference, PICTURE)
    expected = diagram.build(reference).source
    svg = PICTURE.read_text()
    assert diagram.source_of(svg) == expected, (
        f"{PICTURE.relative_to(ROOT)} is stale: redraw it with "
        "`.venv/bin/python -m pytest tests/unit/test_diagram.py --update-golden`")
    # ... and its drawing is of that source: every node Graphviz laid out is there.
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for node in _nodes(expected):
        assert f"<title>{node}</title>" in svg


def test_the_source_is_deterministic(every_model):
    assert diagram.build(every_model).source == diagram.build(every_model).source


# ---- everything of the model is drawn ----------------------------------------------------

def test_every_address_and_name_of_the_model_is_drawn(every_model):
    c = every_model
    source = diagram.build(c).source
    for net in (c.external_net, c.internal_net):
        assert str(net.cidr) in source
    for ip in c.floating_ips():  # every VIP, every mail IP, the internal gateway
        assert f"{ip.cidr} on {ip.interface}" in source
    for site in c.sites:
        assert site.name in source and ", ".join(map(str, site.ports)) in source
    for b in c.balancers:
        assert b.name in source
        for interface, cidrs in c.own_addresses(b):
            assert f"<td>{interface}</td>" in source and all(cidr in source for cidr in cidrs)
    for h in c.web_hosts:
        assert h.name in source and h.mail_ip in source
        for ip in h.internal_ips:
            assert f"{ip}/{c.internal_net.prefixlen}" in source
    for node in c.external_ping_nodes():
        assert f"ping node {node}" in source
    assert f"<b>{c.master.name}</b><br/>master" in source


def test_each_site_is_linked_to_each_web_host_address_serving_it(every_model):
    source = diagram.build(every_model).source
    for i, vs in enumerate(every_model.virtual_servers()):
        for k, (host, ip) in enumerate(vs.reals):
            assert len(_edges(source, f"floating:site{i}:s", f"host{k}:s{i}")) == 1
            # ... and that row of the host's node is the address of that site
            label = re.search(rf"^\t+host{k} \[label=(.*)\]$", source, re.M).group(1)
            assert f'<td port="s{i}">{vs.site.name}</td><td>{ip}/' in label


def test_one_heartbeat_edge_per_link_and_state_sync_when_enabled(reference, edge):
    for model in (reference, edge):
        source = diagram.build(model).source
        assert source.count('label="heartbeat ') == len(model.heartbeat.links)
        assert ("state sync on" in source) == model.state_sync.enabled
    one_link = replace(reference, heartbeat=replace(reference.heartbeat, links=("internal",)))
    source = diagram.build(one_link).source
    assert source.count('label="heartbeat ') == 1 and "heartbeat ucast on eth1" in source


def test_a_dedicated_sync_network_is_drawn(dedicated_sync):
    dedicated = dedicated_sync
    source = diagram.build(dedicated).source
    assert "sync network</b> 192.168.100.0/24" in source
    for i, b in enumerate(dedicated.balancers):
        assert f"{b.sync_ip}/24" in source
        assert _edges(source, f"balancer{i}:sync", "sync")
    assert "state sync on eth3" in _edges(source, "balancer0:sync:e", "balancer1:sync:w")[0]


# ---- --live: annotated from a ClusterStatus -------------------------------------------------

def _node(source: str, node: str) -> str:
    return re.search(rf"^\t+{node} \[label=(.*)\]$", source, re.M).group(1)


def test_live_marks_the_holder_and_the_drained_host(reference):
    status = live.cluster_status(reference, views(reference, "reference-drained"))
    assert status.holder and status.healthy
    source = diagram.build(reference, status).source
    held = [i for i, b in enumerate(reference.balancers) if b.name == status.holder]
    assert "HOLDS the floating addresses now" in _node(source, f"balancer{held[0]}")
    other = 1 - held[0]
    assert "HOLDS" not in _node(source, f"balancer{other}")
    assert f"floating addresses: held now by {status.holder}" in source
    assert _node(source, "floating").count(f"now on {status.holder}") == len(reference.floating_ips())
    assert "holds" in _edges(source, "floating", f"balancer{held[0]}")[0]
    assert "takes over" in _edges(source, "floating", f"balancer{other}")[0]
    assert "cluster reference: live, healthy" in source
    drained = [k for k, h in enumerate(reference.web_hosts) if h.name == "hostB"][0]
    for k, h in enumerate(reference.web_hosts):
        label = _node(source, f"host{k}")
        word = "DRAINED" if k == drained else "in rotation"
        assert label.count(word) == len(reference.sites)
        for i in range(len(reference.sites)):
            (line,) = _edges(source, f"floating:site{i}:s", f"host{k}:s{i}")
            assert ("style=dashed" in line) == (k == drained)


def test_live_marks_a_failed_real_server_and_lists_the_problems(edge):
    settled = views(edge, "edge-settled")
    holder = live.cluster_status(edge, settled).holder
    vs = edge.virtual_servers()[1]
    host, ip = vs.reals[0]
    raw = outputs("edge-settled", holder)["ipvs"][1]
    settled = views(edge, "edge-settled", **{holder: {"ipvs": (0, raw.replace(f"-> {vs.real_address(ip)} ", "-> 10.99.99.99:80 "))}})
    status = live.cluster_status(edge, settled)
    assert any("failed its health check" in p for p in status.problems)
    source = diagram.build(edge, status).source
    k = [h.name for h in edge.web_hosts].index(host.name)
    assert _node(source, f"host{k}").count("FAILED CHECK") == 1
    (line,) = _edges(source, "floating:site1:s", f"host{k}:s1")
    assert "style=dotted" in line
    assert f"DEGRADED ({len(status.problems)} problems)" in source
    for problem in status.problems:
        assert diagram._e(problem) in _node(source, "problems")


def test_live_marks_split_brain_and_an_unreachable_balancer(edge):
    settled = views(edge, "edge-settled")
    holder = live.cluster_status(edge, settled).holder
    other = next(name for name in settled if name != holder)
    settled[other].addresses = {k: list(v) for k, v in settled[holder].addresses.items()}
    source = diagram.build(edge, live.cluster_status(edge, settled)).source
    assert "NOT held by one balancer" in source
    assert _node(source, "floating").count("SPLIT BRAIN") == len(edge.floating_ips())

    reachable = views(edge, "edge-settled")
    reachable[other] = live.BalancerView.unreachable(other, "cannot connect: timed out")
    source = diagram.build(edge, live.cluster_status(edge, reachable)).source
    i = [b.name for b in edge.balancers].index(other)
    assert "UNREACHABLE</b>: cannot connect: timed out" in _node(source, f"balancer{i}")


def test_live_names_a_stopped_heartbeat_and_its_links(edge):
    status = live.cluster_status(edge, views(edge, "edge-standby-heartbeat-stopped"))
    source = diagram.build(edge, status).source
    assert "heartbeat stopped" in _node(source, "balancer0")
    # the running peer's view of each link: its peer's heartbeat is gone, the link unknown
    links = [line for line in source.splitlines() if "heartbeat ucast on" in line]
    assert len(links) == len(edge.heartbeat.links)
    assert all(": unknown" in line and f'color="{diagram.PROBLEM}"' in line for line in links)


# ---- the command ------------------------------------------------------------------------

@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET", raising=False)
    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # the generated ssh_config goes under ~/.cache
    return tmp_path


def test_the_command_draws_without_a_secret_and_leaves_no_staged_file(env, reference):
    out = env / "pictures"
    out.mkdir()
    for name in ("cluster.svg", "cluster.dot"):
        result = CliRunner().invoke(main, ["diagram", str(ROOT / "inventory.py"), "-o", str(out / name)])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == str(out / name)
    assert sorted(p.name for p in out.iterdir()) == ["cluster.dot", "cluster.svg"]
    assert (out / "cluster.dot").read_text() == diagram.build(reference).source
    assert diagram.source_of((out / "cluster.svg").read_text()) == diagram.build(reference).source
    assert "LVSHA_HEARTBEAT_SECRET" not in __import__("os").environ  # the placeholder does not linger


@pytest.mark.parametrize("args, message", [
    (["diagram", "no-such-inventory.py", "-o", "{tmp}/x.svg"], "inventory no-such-inventory.py: no such file"),
    (["diagram", "{root}/inventory.py", "-o", "{tmp}/missing/x.svg"], "no such directory '{tmp}/missing'"),
    (["diagram", "{root}/inventory.py", "-o", "{tmp}/x.txt"], "unknown picture format '.txt'"),
])
def test_bad_input_is_named(env, args, message):
    fill = {"tmp": str(env), "root": str(ROOT)}
    result = CliRunner().invoke(main, [a.format(**fill) for a in args])
    assert result.exit_code == 1
    assert message.format(**fill) in result.output
    assert not (env / "x.svg").exists()


def test_the_command_live_draws_what_status_reads(env, reference, monkeypatch):
    from lvsha import day2

    status = live.cluster_status(reference, views(reference, "reference-drained"))
    pair = SimpleNamespace(cluster=reference, connect=lambda: pair)
    monkeypatch.setattr(day2, "load_pair", lambda inventory, sudo=False: pair)
    monkeypatch.setattr(day2, "read_status", lambda p: status if p is pair else None)
    monkeypatch.setenv("LVSHA_HEARTBEAT_SECRET", TEST_SECRET)
    result = CliRunner().invoke(main, ["diagram", str(ROOT / "inventory.py"), "--live", "-o", str(env / "live.dot")])
    assert result.exit_code == 0, result.output
    assert (env / "live.dot").read_text() == diagram.build(reference, status).source
    assert "DRAINED" in (env / "live.dot").read_text()
