"""What monitoring renders, on each engine: its golden files (tests/golden-monitoring/ENGINE:
every file the reference's rendering on that engine gains or changes when monitoring is
on), the firewall's rule, and the Prometheus alert rules, checked by `promtool check rules`
and proven to fire by `promtool test rules` on series of both balancers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from lvsha import render
from lvsha.model import Monitoring
from tests.conftest import promtool

GOLDEN_MONITORING = Path(__file__).resolve().parent.parent / "golden-monitoring"
ENGINES = ("heartbeat", "keepalived")


@pytest.fixture(params=ENGINES)
def on_engine(request, monitored, monitored_keepalived):
    """(engine, the monitored reference on it)."""
    return request.param, monitored if request.param == "heartbeat" else monitored_keepalived


def test_golden_files_with_monitoring(on_engine, request, tmp_path):
    """Monitoring adds its files and the rules file, and changes each balancer's rules.v4:
    nothing else (rules.v6 stays closed), each equal to its reviewed copy."""
    engine, monitored = on_engine
    golden = GOLDEN_MONITORING / engine
    off = tmp_path / "off"
    render.write_tree(replace(monitored, monitoring=Monitoring()), off)
    on = tmp_path / "on"
    written = render.write_tree(monitored, on)
    changed = sorted(rel for rel in (p.relative_to(on) for p in written)
                     if not (off / rel).is_file() or (off / rel).read_text() != (on / rel).read_text())
    if request.config.getoption("--update-golden"):
        shutil.rmtree(golden, ignore_errors=True)
        for rel in changed:
            (golden / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(on / rel, golden / rel)
    expected = sorted(p.relative_to(golden) for p in golden.rglob("*") if p.is_file())
    assert changed == expected
    assert {str(rel) for rel in changed} == {render.ALERT_RULES} | {
        f"{b.name}{path}" for b in monitored.balancers
        for path in (render.FIREWALL_RULES, render.METRICS_SCRIPT, render.METRICS_ENV, render.METRICS_SERVICE,
                     render.METRICS_TIMER, render.NODE_EXPORTER_DROPIN)}
    for rel in changed:
        assert (on / rel).read_text() == (golden / rel).read_text(), f"{rel} differs from its golden copy"


def test_monitoring_off_renders_nothing_of_it(reference, tmp_path):
    reference = replace(reference, monitoring=Monitoring())  # the default
    written = {str(p.relative_to(tmp_path)) for p in render.write_tree(reference, tmp_path)}
    assert render.ALERT_RULES not in written
    assert not [p for p in written if "metrics" in p or "node-exporter" in p]
    for b in reference.balancers:
        assert f"--dport {reference.monitoring.port}" not in render.firewall_file(reference, b).content


def test_the_port_is_opened_to_the_sources_only_on_the_interface_they_arrive_on(monitored):
    port = monitored.monitoring.port
    for b in monitored.balancers:
        rules = render.firewall_file(monitored, b).content
        accepted = [line for line in rules.splitlines() if f"--dport {port} " in line]
        assert accepted == [
            f"-A INPUT -i {b.external_interface} -s 10.0.0.0/24 -d {b.external_ip}/32 -p tcp -m tcp --dport {port} -j ACCEPT",
            f"-A INPUT -i {b.internal_interface} -s 192.168.0.200/32 -d {b.internal_ip}/32 -p tcp -m tcp --dport {port} -j ACCEPT",
        ]
        assert str(port) not in render.firewall6_file(monitored, b).content
    anywhere = replace(monitored, monitoring=replace(monitored.monitoring, sources=("0.0.0.0/0",), port=9200))
    b = anywhere.master
    assert (f"-A INPUT -i {b.external_interface} -d {b.external_ip}/32 -p tcp -m tcp --dport 9200 -j ACCEPT"
            in render.firewall_file(anywhere, b).content)


def test_units_follow_the_model(monitored):
    tuned = replace(monitored, monitoring=replace(monitored.monitoring, port=9200, interval=2))
    files = {f.path: f.content for f in render.monitoring_files(tuned, tuned.master)}
    assert "OnUnitActiveSec=2\n" in files[render.METRICS_TIMER]
    assert f"--web.listen-address=:9200 --collector.textfile.directory={render.TEXTFILE_DIR}" in \
        files[render.NODE_EXPORTER_DROPIN]
    assert f"Environment=LVSHA_TEXTFILE_DIR={render.TEXTFILE_DIR}\n" in files[render.METRICS_SERVICE]
    assert f"ExecStart={render.METRICS_SCRIPT}\n" in files[render.METRICS_SERVICE]
    assert render.METRICS_FILE == f"{render.TEXTFILE_DIR}/lvsha.prom"
    assert "After=heartbeat.service ldirectord.service\n" in files[render.METRICS_SERVICE]
    assert "LVSHA_ENGINE=heartbeat\n" in files[render.METRICS_ENV]
    on_keepalived = {f.path: f.content for f in render.monitoring_files(replace(tuned, engine="keepalived"), tuned.master)}
    assert "After=keepalived.service\n" in on_keepalived[render.METRICS_SERVICE]
    assert "LVSHA_ENGINE=keepalived\n" in on_keepalived[render.METRICS_ENV]
    assert "LVSHA_PEER" not in on_keepalived[render.METRICS_ENV]  # heartbeat's name of the peer


@pytest.fixture
def rules_file(on_engine, tmp_path) -> Path:
    """The monitored reference's rules, on each engine (the common rules are the same)."""
    _, monitored = on_engine
    path = tmp_path / render.ALERT_RULES
    path.write_text(render.alert_rules(monitored))
    return path


HEARTBEAT_ALERTS = ("LvshaHeartbeatStopped", "LvshaPeerDown", "LvshaHeartbeatLinkDown")
KEEPALIVED_ALERTS = ("LvshaKeepalivedStopped", "LvshaVrrpNoMaster", "LvshaVrrpTwoMasters", "LvshaVrrpFault")


def test_promtool_check_rules(rules_file):
    result = subprocess.run([promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _alerts(rules: str) -> dict[str, list[str]]:
    """{alert: its rules' lines, comments left out} (the site alert's are one per site)."""
    found: dict[str, list[str]] = {}
    for block in rules.split("- alert: ")[1:]:
        name, *lines = block.splitlines()
        found.setdefault(name, []).extend(line for line in lines if not line.lstrip().startswith("#"))
    return found


def test_each_engine_gets_its_own_alerts_and_the_same_common_ones(monitored, monitored_keepalived):
    heartbeat, keepalived = _alerts(render.alert_rules(monitored)), _alerts(render.alert_rules(monitored_keepalived))
    assert set(HEARTBEAT_ALERTS) <= set(heartbeat) and not set(KEEPALIVED_ALERTS) & set(heartbeat)
    assert set(KEEPALIVED_ALERTS) <= set(keepalived) and not set(HEARTBEAT_ALERTS) & set(keepalived)
    common = {name: lines for name, lines in heartbeat.items() if name not in HEARTBEAT_ALERTS}
    assert common == {name: lines for name, lines in keepalived.items() if name not in KEEPALIVED_ALERTS}
    assert {"LvshaFloatingAddressOnTwoBalancers", "LvshaConfigurationDrift", "LvshaStateSyncDownOnStandby"} <= set(common)


def test_the_rules_follow_the_model(on_engine):
    _, monitored = on_engine
    rules = render.alert_rules(monitored)
    for ip in monitored.floating_ips():
        assert str(ip.address).replace(".", "\\\\.") in rules
    for site in monitored.sites:
        assert f"site: {json.dumps(site.name)}" in rules
    assert "LvshaStateSyncDownOnStandby" in rules
    unsynced = replace(monitored, state_sync=replace(monitored.state_sync, enabled=False))
    assert "LvshaStateSyncDownOnStandby" not in render.alert_rules(unsynced)


def _series(name: str, values: str, **labels) -> dict:
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def test_promtool_test_rules_the_alerts_fire(monitored, rules_file, tmp_path):
    """Both balancers' series for 5 minutes: balancer1 carries every floating address but
    10.0.0.3 (on neither) and 10.0.0.5 (on both); the site of 10.0.0.1 has no real server
    in rotation on balancer1; balancer2 (holding only 10.0.0.5) has its state sync down."""
    b1, b2 = (f"{b.name}:9100" for b in monitored.balancers)
    nowhere, both = "10.0.0.3", "10.0.0.5"
    series = []
    for ip in monitored.floating_ips():
        address = str(ip.address)
        held = {b1: "1x10" if address != nowhere else "0x10", b2: "1x10" if address == both else "0x10"}
        for instance, values in held.items():
            series.append(_series("lvsha_floating_address_held", values, instance=instance, job="lvsha",
                                  address=address, interface=ip.interface))
    for instance in (b1, b2):
        for vs in monitored.virtual_servers():
            empty = instance == b1 and str(vs.vip) == "10.0.0.1" or instance == b2 and str(vs.vip) == both
            series.append(_series("lvsha_virtual_service_real_servers", "0x10" if empty else "3x10", instance=instance,
                                  job="lvsha", virtual=vs.address, address=str(vs.vip), state="in_rotation"))
        series.append(_series("lvsha_state_sync_up", "0x10", instance=instance, job="lvsha"))
    site = next(vs for vs in monitored.virtual_servers() if str(vs.vip) == "10.0.0.1")
    critical = {"severity": "critical"}
    tests = {"rule_files": [str(rules_file)], "evaluation_interval": "30s", "tests": [{
        "interval": "30s",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "LvshaFloatingAddressOnTwoBalancers",
             "exp_alerts": [{"exp_labels": {**critical, "address": both},
                             "exp_annotations": {"summary": f"Split brain: {both} is on both balancers"}}]},
            {"eval_time": "2m", "alertname": "LvshaFloatingAddressOnNoBalancer",
             "exp_alerts": [{"exp_labels": {**critical, "address": nowhere},
                             "exp_annotations": {"summary": f"{nowhere} is on no balancer"}}]},
            # not yet: the split must last 30 s
            {"eval_time": "0m", "alertname": "LvshaFloatingAddressOnTwoBalancers", "exp_alerts": []},
            # balancer2 holds 10.0.0.5 (as balancer1 does) with no real server there: it counts too
            {"eval_time": "2m", "alertname": "LvshaSiteWithoutRealServer",
             "exp_alerts": [
                 {"exp_labels": {**critical, "site": site.site.name, "instance": b1, "job": "lvsha",
                                 "virtual": site.address, "address": "10.0.0.1", "state": "in_rotation"},
                  "exp_annotations": {"summary": f"Site {site.site.name} ({site.address}) has no real server in rotation"}},
                 *[{"exp_labels": {**critical, "site": vs.site.name, "instance": b2, "job": "lvsha",
                                   "virtual": vs.address, "address": both, "state": "in_rotation"},
                    "exp_annotations": {"summary": f"Site {vs.site.name} ({vs.address}) has no real server in rotation"}}
                   for vs in monitored.virtual_servers() if str(vs.vip) == both]]},
            # balancer1 holds addresses: its state sync being down is not the standby's
            {"eval_time": "3m", "alertname": "LvshaStateSyncDownOnStandby", "exp_alerts": []},
            {"eval_time": "1m", "alertname": "LvshaMetricsMissing", "exp_alerts": []},
        ]}]}
    tests_file = tmp_path / "tests.yml"
    tests_file.write_text(json.dumps(tests, indent=1))  # JSON is YAML
    result = subprocess.run([promtool(), "test", "rules", str(tests_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_the_standby_without_state_sync_and_a_silent_balancer(monitored, rules_file, tmp_path):
    b1, b2 = (f"{b.name}:9100" for b in monitored.balancers)
    series = []
    for ip in monitored.floating_ips():
        # balancer2's metrics stop after 1 minute (its lvsha-metrics, or node_exporter, is gone)
        series.append(_series("lvsha_floating_address_held", "1x10", instance=b1, job="lvsha",
                              address=str(ip.address), interface=ip.interface))
        series.append(_series("lvsha_floating_address_held", "0x2", instance=b2, job="lvsha",
                              address=str(ip.address), interface=ip.interface))
    series.append(_series("lvsha_state_sync_up", "1x10", instance=b1, job="lvsha"))
    series.append(_series("lvsha_state_sync_up", "0x10", instance=b2, job="lvsha"))
    tests = {"rule_files": [str(rules_file)], "evaluation_interval": "30s", "tests": [{
        "interval": "30s", "input_series": series,
        "alert_rule_test": [
            {"eval_time": "50s", "alertname": "LvshaStateSyncDownOnStandby", "exp_alerts": []},  # 2 min first
            {"eval_time": "2m30s", "alertname": "LvshaStateSyncDownOnStandby",
             "exp_alerts": [{"exp_labels": {"severity": "warning", "instance": b2, "job": "lvsha"},
                             "exp_annotations": {"summary": f"State sync (conntrackd, IPVS sync daemons) is down on the "
                                                            f"standby {b2}: a takeover would drop connections"}}]},
            {"eval_time": "9m", "alertname": "LvshaMetricsMissing",
             "exp_alerts": [{"exp_labels": {"severity": "warning"},
                             "exp_annotations": {"summary": "Fewer than 2 balancers report lvsha's metrics"}}]},
            {"eval_time": "9m", "alertname": "LvshaFloatingAddressOnNoBalancer", "exp_alerts": []},
        ]}]}
    tests_file = tmp_path / "tests.yml"
    tests_file.write_text(json.dumps(tests, indent=1))
    result = subprocess.run([promtool(), "test", "rules", str(tests_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("balancer", ["balancer1", "balancer2"])
def test_monitored_rules_pass_iptables_restore_test(monitored, balancer, tmp_path):
    from tests.unit.test_render import _iptables_restore

    exe = _iptables_restore()
    rules = tmp_path / "rules.v4"
    rules.write_text(render.firewall_file(monitored, monitored.balancer(balancer)).content)
    result = subprocess.run([exe, "--test", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_promtool_test_rules_keepalived_masters_fault_and_a_stopped_keepalived(monitored_keepalived, tmp_path):
    """keepalived's alerts, on both balancers' series: both MASTER (split brain); then none
    MASTER, balancer2 in FAULT with keepalived stopped. A balancer of another cluster (none
    of this model's floating addresses) being MASTER counts for neither."""
    rules_file = tmp_path / render.ALERT_RULES
    rules_file.write_text(render.alert_rules(monitored_keepalived))
    b1, b2 = (f"{b.name}:9100" for b in monitored_keepalived.balancers)
    other = "elsewhere:9100"
    gateway = str(monitored_keepalived.gateway)

    def world(states: dict[str, str], running: dict[str, str]) -> list[dict]:
        series = [_series("lvsha_floating_address_held", "1x10" if instance == b1 else "0x10", instance=instance,
                          job="lvsha", address=gateway, interface="eth1") for instance in (b1, b2)]
        series.append(_series("lvsha_floating_address_held", "1x10", instance=other, job="lvsha",
                              address="172.16.0.1", interface="eth1"))
        series.append(_series("lvsha_vrrp_state", "1x10", instance=other, job="lvsha", state="MASTER"))
        for instance, state in states.items():
            for each in ("MASTER", "BACKUP", "FAULT", "STOP", "unknown"):
                series.append(_series("lvsha_vrrp_state", "1x10" if each == state else "0x10", instance=instance,
                                      job="lvsha", state=each))
        series += [_series("lvsha_keepalived_running", values, instance=instance, job="lvsha")
                   for instance, values in running.items()]
        return series

    critical = {"severity": "critical"}
    tests = {"rule_files": [str(rules_file)], "evaluation_interval": "30s", "tests": [
        {"interval": "30s", "input_series": world({b1: "MASTER", b2: "MASTER"}, {b1: "1x10", b2: "1x10"}),
         "alert_rule_test": [
             {"eval_time": "10s", "alertname": "LvshaVrrpTwoMasters", "exp_alerts": []},  # 30 s first
             {"eval_time": "1m", "alertname": "LvshaVrrpTwoMasters",
              "exp_alerts": [{"exp_labels": critical,
                              "exp_annotations": {"summary": "Split brain: both balancers are VRRP MASTER"}}]},
             {"eval_time": "2m", "alertname": "LvshaVrrpNoMaster", "exp_alerts": []},
             {"eval_time": "2m", "alertname": "LvshaVrrpFault", "exp_alerts": []},
             {"eval_time": "2m", "alertname": "LvshaKeepalivedStopped", "exp_alerts": []},
         ]},
        {"interval": "30s", "input_series": world({b1: "BACKUP", b2: "FAULT"}, {b1: "1x10", b2: "0x10"}),
         "alert_rule_test": [
             {"eval_time": "30s", "alertname": "LvshaVrrpNoMaster", "exp_alerts": []},  # 1 min first
             {"eval_time": "2m", "alertname": "LvshaVrrpNoMaster",
              "exp_alerts": [{"exp_labels": critical, "exp_annotations": {"summary": "No balancer is VRRP MASTER"}}]},
             {"eval_time": "2m", "alertname": "LvshaVrrpTwoMasters", "exp_alerts": []},
             {"eval_time": "2m", "alertname": "LvshaVrrpFault",
              "exp_alerts": [{"exp_labels": {**critical, "instance": b2, "job": "lvsha", "state": "FAULT"},
                              "exp_annotations": {"summary": f"{b2} is in VRRP FAULT (a tracked link or check failed): "
                                                             "it cannot take over"}}]},
             {"eval_time": "2m", "alertname": "LvshaKeepalivedStopped",
              "exp_alerts": [{"exp_labels": {**critical, "instance": b2, "job": "lvsha"},
                              "exp_annotations": {"summary": f"keepalived is not running on {b2}"}}]},
         ]},
    ]}
    tests_file = tmp_path / "tests.yml"
    tests_file.write_text(json.dumps(tests, indent=1))
    result = subprocess.run([promtool(), "test", "rules", str(tests_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
