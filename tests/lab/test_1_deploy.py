"""The real pyinfra deploy: converges, is idempotent, and --dry changes nothing."""

import os

import pytest

from lvsha.lab.bench import bench, format_figures, ratios
from lvsha.lab.run import OPERATION_START, deploy, record
from lvsha.render import AUTHKEYS, FIREWALL_RULES, network_file_path
from tasks.preflight import ENGINE_SERVICES


@pytest.mark.every_model
def test_first_deploy_converged(lab):
    """The first deploy installed the cluster; on a lab taken over from another engine's
    model (the default run's edge-keepalived) it was the live migration: each of its
    stages ran, and each balancer runs the model's engine only, at boot too."""
    if lab.first_deploy is None:
        pytest.skip("reused lab (LVSHA_LAB_REUSE): its first deploy ran before this session, nothing to judge")
    assert lab.first_deploy.ok
    if lab.migrated_from is None:
        assert lab.first_deploy.changed > 40, lab.first_deploy.output[-3000:]
        return
    started = [line for line in lab.first_deploy.output.splitlines() if OPERATION_START in line]
    for stage in range(1, 5):  # operations named "... | Migration N/4: ..." (tasks/migration.py, tasks/firewall.py)
        assert any(f"Migration {stage}/4: " in line for line in started), lab.first_deploy.output[-3000:]
    stopped = {"inactive disabled", "failed disabled"}  # a service the migration stopped may have ended "failed"
    for balancer in lab.pair:
        for service, states in [*((s, {"active enabled"}) for s in lab.engine_services),
                                *((s, stopped) for s in ENGINE_SERVICES[lab.migrated_from])]:
            shown = lab.ssh(balancer, f"systemctl is-active {service}; systemctl is-enabled {service}", check=False)
            assert " ".join(shown.stdout.split()) in states, (balancer, service, shown.stdout)


@pytest.mark.every_model
def test_second_deploy_changes_nothing(lab):
    result = deploy()
    record("no-op deploy", result.seconds)
    assert result.ok, result.output[-4000:]
    assert result.changed == 0, result.output[-6000:]


def test_benchmark_no_op_and_dry_run_against_the_floor(lab):
    """`lvsha lab bench` once (one round under CI, which has a budget), its figures
    in the report; timings never fail the test."""
    rounds = 1 if os.environ.get("CI") else 3
    figures = bench(rounds=rounds, progress=lambda line: print(f"[lab] {line}", flush=True))
    print(format_figures(figures), flush=True)
    for figure in figures:
        record(f"bench: {figure.name}, median of {rounds}", figure.median)
    for name, ratio in ratios(figures).items():
        record(f"bench: {name} / floor (x)", ratio)


@pytest.mark.every_model
def test_dry_run_shows_the_diff_and_changes_nothing(lab):
    host = lab.cluster.web_hosts[-1]
    path = network_file_path(host.interface)
    lab.ssh(host.name, f"echo '# drift made by the lab test' >> {path}")
    dry = deploy("--dry", "--diff")
    assert dry.returncode == 0, dry.output[-4000:]
    assert "# drift made by the lab test" in dry.output  # the diff shows the line going away
    assert "drift made by the lab test" in lab.ssh(host.name, f"cat {path}").stdout
    fixed = deploy()
    assert fixed.ok and fixed.changed >= 1, fixed.output[-4000:]
    assert "drift" not in lab.ssh(host.name, f"cat {path}").stdout


def test_deploy_undoes_a_flushed_firewall_and_a_readable_authkeys(lab):
    """Drift the file hashes cannot see: the live ruleset, a secret's mode (heartbeat's
    authkeys; keepalived has no secret file, so there only the ruleset)."""
    master, backup = (b.name for b in lab.cluster.balancers)
    with_authkeys = lab.engine == "heartbeat"
    lab.ssh(master, "iptables -F; iptables -P INPUT ACCEPT; iptables -P FORWARD ACCEPT")
    if with_authkeys:
        lab.ssh(backup, f"chmod 644 {AUTHKEYS}")
    result = deploy()
    record("deploy undoing firewall and authkeys drift" if with_authkeys else "deploy undoing firewall drift",
           result.seconds)
    assert result.ok, result.output[-4000:]
    assert f"the loaded firewall differs from {FIREWALL_RULES}" in result.output  # and says so
    assert result.changed == (2 if with_authkeys else 1), result.output[-6000:]
    assert "-P INPUT DROP" in lab.ssh(master, "iptables -S INPUT").stdout
    assert "-P FORWARD DROP" in lab.ssh(master, "iptables -S FORWARD").stdout
    if with_authkeys:
        assert lab.ssh(backup, f"stat -c %a {AUTHKEYS}").stdout.strip() == "600"
    assert deploy().changed == 0
