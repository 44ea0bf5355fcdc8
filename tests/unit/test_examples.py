"""The example clusters under examples/: each is a valid model that renders,
and the second cluster differs from the reference in every dimension the lab
must prove independent of (names, networks, sites, web hosts, timers,
auto_failback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from netaddr import IPSet

from lvsha.lab import model as lab_model
from lvsha.loader import load_cluster
from lvsha.render import all_files

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(REPO.glob("examples/*/inventory.py"))
SECRET = "an-example-secret-for-the-unit-tier"


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET_FILE", raising=False)
    monkeypatch.setenv("LVSHA_HEARTBEAT_SECRET", SECRET)


def test_there_is_an_example():
    assert EXAMPLES, "examples/*/inventory.py"


@pytest.mark.parametrize("inventory", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_loads_validated_and_renders_every_host(inventory, secret):
    cluster = load_cluster(inventory)
    files = all_files(cluster)
    assert set(files) == {b.name for b in cluster.balancers} | {h.name for h in cluster.web_hosts}
    assert all(files.values())


def test_edge_differs_from_the_reference_everywhere(reference, edge):
    names = lambda c: {b.name for b in c.balancers} | {h.name for h in c.web_hosts} | {s.name for s in c.sites}  # noqa: E731
    assert not names(edge) & names(reference)
    assert not IPSet([edge.external_net, edge.internal_net]) & IPSet([reference.external_net, reference.internal_net])
    assert edge.internal_net.prefixlen == 16
    assert (len(edge.sites), len(edge.web_hosts)) != (len(reference.sites), len(reference.web_hosts))
    plain = [s for s in edge.sites if s.ports == (80,) and s.virtual_port == 80 and s.scheduler == "rr"]
    assert plain and all(s.persistent is None for s in plain)
    timers = lambda hb: (hb.keepalive, hb.warntime, hb.deadtime, hb.initdead)  # noqa: E731
    assert timers(edge.heartbeat) != timers(reference.heartbeat)
    assert edge.heartbeat.auto_failback != reference.heartbeat.auto_failback


def test_the_lab_deploys_the_model_it_was_brought_up_with(monkeypatch, tmp_path):
    """LVSHA_LAB_INVENTORY, else the running lab's state, else the reference."""
    monkeypatch.delenv(lab_model.LAB_INVENTORY_ENV, raising=False)
    assert lab_model.source_inventory() == REPO / "inventory.py"
    edge = REPO / "examples" / "edge" / "inventory.py"
    assert lab_model.source_inventory({"inventory": str(edge)}) == edge
    chosen = tmp_path / "chosen.py"
    monkeypatch.setenv(lab_model.LAB_INVENTORY_ENV, str(chosen))
    assert lab_model.source_inventory({"inventory": str(edge)}) == chosen


def test_the_keepalived_example_is_the_reference_on_the_other_engine(reference, monkeypatch):
    """examples/keepalived: the reference's model, engine apart (and the heartbeat
    secret it has no use for), so the lab lays it out as the reference lab."""
    from dataclasses import replace

    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET_FILE", raising=False)
    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET", raising=False)
    keepalived = load_cluster(REPO / "examples" / "keepalived" / "inventory.py")  # loads without a secret
    assert keepalived.engine == "keepalived" and reference.engine == "heartbeat"
    as_reference = replace(keepalived, name=reference.name, engine=reference.engine, heartbeat=reference.heartbeat)
    assert as_reference == reference
    timers = lambda hb: (hb.keepalive, hb.deadtime, hb.auto_failback, hb.ping_nodes, hb.links)  # noqa: E731
    assert timers(keepalived.heartbeat) == timers(reference.heartbeat)


def test_the_monitored_keepalived_example_is_the_keepalived_one_with_monitoring(monkeypatch):
    """examples/keepalived-monitored: examples/keepalived's model at VRRP's 1 s advertisement,
    monitoring on and scraped from its external network (the lab client's), so
    test_9_monitoring runs on keepalived, and the takeovers are measured at advert_int 1."""
    from dataclasses import replace

    from lvsha.model import Monitoring

    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET_FILE", raising=False)
    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET", raising=False)
    keepalived = load_cluster(REPO / "examples" / "keepalived" / "inventory.py")
    monitored = load_cluster(REPO / "examples" / "keepalived-monitored" / "inventory.py")  # no secret either
    assert monitored.engine == "keepalived" and monitored.monitoring.enabled
    assert monitored.monitoring.sources == (keepalived.external_network,)
    assert monitored.heartbeat.keepalive == 1 and monitored.heartbeat.deadtime == 3
    assert replace(monitored, name=keepalived.name, heartbeat=keepalived.heartbeat, monitoring=Monitoring()) == keepalived


def test_the_edge_keepalived_example_is_edge_on_the_other_engine(edge):
    """examples/edge-keepalived: edge's model, its engine apart (name and secret kept), so
    deployed to the edge pair it is the migration alone, and the lab lays it out as edge's."""
    from dataclasses import replace

    from tests.conftest import load_with_test_secret

    keepalived = load_with_test_secret(REPO / "examples" / "edge-keepalived" / "inventory.py")
    assert (edge.engine, keepalived.engine) == ("heartbeat", "keepalived")
    assert replace(keepalived, engine=edge.engine) == edge
