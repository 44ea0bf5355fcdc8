"""Operation-level tests of the monitoring deploy (tasks/monitoring.py), against simulated hosts,
on each engine (the monitored reference, on heartbeat and on keepalived)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lvsha import render
from lvsha.model import Monitoring
from tasks.packages import MONITORING_PACKAGES
from tasks.roles import cluster_host
from tests.deploy.harness import changing, plan
from tests.deploy.machine import converged_balancer, fresh


def _director(cluster, machine, name="balancer1"):
    peer = converged_balancer(cluster, cluster.peer(cluster.balancer(name)))
    others = {b.name: peer.fact for b in cluster.balancers if b.name != name}
    return plan(cluster_host, cluster, name, host_name=name, facts=machine.fact, others=others)


def _commands(ops) -> str:
    return "\n".join(c for cs in changing(ops).values() for c in cs)


MONITORING_PATHS = (render.METRICS_SCRIPT, render.METRICS_ENV, render.METRICS_SERVICE, render.METRICS_TIMER,
                    render.NODE_EXPORTER_DROPIN)


@pytest.fixture(params=["heartbeat", "keepalived"])
def monitored(request):
    """The monitored reference (conftest's), on each engine."""
    return request.getfixturevalue("monitored" if request.param == "heartbeat" else "monitored_keepalived")


def test_enabled_a_fresh_balancer_gets_the_package_the_timer_and_the_firewall_rule(monitored):
    ops = _director(monitored, fresh("balancer1", ["eth0", "eth1"]))
    changes = changing(ops)
    text = _commands(ops)
    install = next(cs for name, cs in changes.items() if name.startswith("Install "))
    assert any("apt-get" in c and "install" in c and all(p in c for p in MONITORING_PACKAGES) for c in install)
    for path in MONITORING_PATHS:
        assert f"mv -f {path}.lvsha-new {path}" in text, path
    assert "systemctl start prometheus-node-exporter.service" in text
    assert "systemctl enable prometheus-node-exporter.service" in text
    assert "systemctl start lvsha-metrics.timer" in text and "systemctl enable lvsha-metrics.timer" in text
    # the port, from the sources only, in the ruleset the firewall loads (before node_exporter starts)
    rules = next(op for op in ops if op.name == f"Load {render.FIREWALL_RULES}")
    uploaded = "\n".join(rules.uploads.values())
    b = monitored.balancer("balancer1")
    assert (f"-A INPUT -i {b.external_interface} -s 10.0.0.0/24 -d {b.external_ip}/32 -p tcp -m tcp --dport 9100 "
            "-j ACCEPT") in uploaded
    names = list(changes)
    assert names.index(f"Load {render.FIREWALL_RULES}") < names.index("node_exporter runs, enabled at boot")
    # a new drop-in is read by the start: no restart on top of it
    assert "Restart node_exporter for lvsha's drop-in" not in changes


@pytest.mark.parametrize("name", ["balancer1", "balancer2"])
def test_enabled_a_converged_balancer_gets_no_change(monitored, name):
    machine = converged_balancer(monitored, monitored.balancer(name))
    ops = _director(monitored, machine, name)
    assert changing(ops) == {}
    assert "lvsha's metrics every few seconds, enabled at boot" in [op.name for op in ops]
    assert machine.loads == ["FactBundle"]  # the monitoring units' states are in the one read


@pytest.mark.parametrize("engine", ["heartbeat", "keepalived"])
def test_disabled_none_of_it(reference, engine):
    """Off (the default), on a host that never had it: no package, no file, no unit, no
    port, and no operation of the monitoring deploy at all."""
    reference = replace(reference, monitoring=Monitoring(), engine=engine)
    for machine in (fresh("balancer1", ["eth0", "eth1"]), converged_balancer(reference, reference.balancer("balancer1"))):
        ops = _director(reference, machine)
        text = _commands(ops)
        assert not [op.path for op in ops if op.path.startswith("LVS director | Monitoring")]
        assert not any(p in text for p in (*MONITORING_PACKAGES, "lvsha-metrics", "node-exporter", "9100"))
        for op in ops:
            assert not any("--dport 9100" in up for up in op.uploads.values())


def test_a_new_port_restarts_node_exporter_and_a_new_interval_the_timer(monitored):
    machine = converged_balancer(monitored, monitored.balancer("balancer1"))
    tuned = replace(monitored, monitoring=replace(monitored.monitoring, port=9200, interval=2))
    changes = changing(_director(tuned, machine))
    assert changes["Restart node_exporter for lvsha's drop-in"] == ["systemctl restart prometheus-node-exporter.service"]
    assert changes["Restart lvsha-metrics.timer for its new interval"] == ["systemctl restart lvsha-metrics.timer"]
    assert "Reload systemd for the monitoring units" in changes
    assert f"Load {render.FIREWALL_RULES}" in changes  # the port moves in the firewall too
    assert not [name for name in changes if any(engine in name for engine in ("heartbeat", "ldirectord", "keepalived"))]


def test_a_stopped_node_exporter_is_started_not_restarted(monitored):
    machine = converged_balancer(monitored, monitored.balancer("balancer1"))
    machine.running["prometheus-node-exporter.service"] = False
    changes = changing(_director(monitored, machine))
    assert changes == {"node_exporter runs, enabled at boot": ["systemctl start prometheus-node-exporter.service"]}


def test_turned_off_it_is_stopped_and_removed(monitored):
    machine = converged_balancer(monitored, monitored.balancer("balancer1"))
    changes = changing(_director(replace(monitored, monitoring=Monitoring()), machine))
    assert changes["lvsha's metrics stopped and disabled (monitoring off)"] == [
        "systemctl stop lvsha-metrics.timer", "systemctl disable lvsha-metrics.timer"]
    assert changes["node_exporter stopped and disabled (monitoring off)"] == [
        "systemctl stop prometheus-node-exporter.service", "systemctl disable prometheus-node-exporter.service"]
    for path in MONITORING_PATHS:
        assert changes[f"No {path}"] == [f"rm -f {path}"]
    assert changes["No lvsha metrics for node_exporter"] == [f"rm -f {render.METRICS_FILE}"]
    assert "Reload systemd for the removed monitoring units" in changes
    assert f"Load {render.FIREWALL_RULES}" in changes  # the port closed


def test_the_settings_name_the_engine_and_a_new_interval_leaves_them(monitored):
    """lvsha-metrics reads the view of the engine its settings name (rendered from the model);
    a new interval is the timer's business only."""
    machine = converged_balancer(monitored, monitored.balancer("balancer1"))
    settings = next(f for f in render.monitoring_files(monitored, monitored.master) if f.path == render.METRICS_ENV)
    assert f"LVSHA_ENGINE={monitored.engine}\n" in settings.content
    changes = changing(_director(replace(monitored, monitoring=replace(monitored.monitoring, interval=7)), machine))
    assert f"Write {render.METRICS_ENV}" not in changes  # the interval is the timer's, not the script's
    assert "Restart lvsha-metrics.timer for its new interval" in changes
