"""The command line: validate and render without any host; pyinfra refuses a bad model."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvsha.cli import main
from tests.conftest import ROOT, TEST_SECRET


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("LVSHA_HEARTBEAT_SECRET", TEST_SECRET)
    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # the generated ssh_config goes under ~/.cache
    return tmp_path


def _broken_inventory(folder: Path, change: str) -> Path:
    path = folder / "broken_inventory.py"
    path.write_text(textwrap.dedent(f"""
        import sys
        from dataclasses import replace
        sys.path.insert(0, {str(ROOT)!r})
        from lvsha.inventory import groups, validated_or_exit
        from inventory import reference_cluster
        from lvsha.secrets import heartbeat_secret

        CLUSTER = validated_or_exit(lambda: replace(reference_cluster(heartbeat_secret()), {change}))
        _groups = groups(CLUSTER, {{}})
        balancers = _groups["balancers"]
        web = _groups["web"]
    """))
    return path


def test_validate_accepts_the_reference(env):
    result = CliRunner().invoke(main, ["validate", str(ROOT / "inventory.py")])
    assert result.exit_code == 0, result.output
    assert "cluster 'reference' is valid: 2 balancers, 3 sites, 3 web hosts, 7 floating addresses" in result.output


def test_validate_without_secret_names_the_field(env, monkeypatch):
    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET")
    result = subprocess.run([sys.executable, "-m", "lvsha", "validate", "inventory.py"], cwd=ROOT,
                            capture_output=True, text=True, env={**__import__("os").environ})
    assert result.returncode == 2
    assert "heartbeat.auth.secret = None" in result.stderr


def test_secret_file_must_be_private(env, monkeypatch):
    secret = env / "hb.secret"
    secret.write_text(TEST_SECRET + "\n")
    secret.chmod(0o644)
    monkeypatch.delenv("LVSHA_HEARTBEAT_SECRET")
    monkeypatch.setenv("LVSHA_HEARTBEAT_SECRET_FILE", str(secret))
    result = subprocess.run([sys.executable, "-m", "lvsha", "validate", "inventory.py"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "readable by others; chmod 600" in result.stderr
    secret.chmod(0o600)
    ok = subprocess.run([sys.executable, "-m", "lvsha", "validate", "inventory.py"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_render_writes_every_host(env):
    out = env / "out"
    result = CliRunner().invoke(main, ["render", str(ROOT / "inventory.py"), str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["balancer1", "balancer2", "hostA", "hostB", "hostC"]
    assert (out / "balancer1/etc/ha.d/authkeys").stat().st_mode & 0o777 == 0o600


def test_render_writes_the_alert_rules_with_monitoring_on(env):
    out = env / "out"
    result = CliRunner().invoke(main, ["render", str(ROOT / "examples" / "monitored" / "inventory.py"), str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["balancer1", "balancer2", "hostA", "hostB", "hostC",
                                                     "prometheus-rules.yml"]
    assert str(out / "prometheus-rules.yml") in result.output.splitlines()
    assert "LvshaFloatingAddressOnTwoBalancers" in (out / "prometheus-rules.yml").read_text()
    assert (out / "balancer1/usr/local/sbin/lvsha-metrics").stat().st_mode & 0o777 == 0o755


def test_a_bad_monitoring_source_is_refused_naming_field_and_value(env):
    inventory = _broken_inventory(env, 'monitoring=Monitoring(enabled=True, sources=("10.0.0.1/24",))')
    text = inventory.read_text().replace("from dataclasses import replace", "from dataclasses import replace\n"
                                         "from lvsha.model import Monitoring")
    inventory.write_text(text)
    result = subprocess.run([sys.executable, "-m", "lvsha", "validate", str(inventory)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "monitoring.sources = '10.0.0.1/24': has host bits set (did you mean 10.0.0.0/24?)" in result.stderr


def test_validate_rejects_a_broken_inventory(env):
    inventory = _broken_inventory(env, 'internal_gateway="192.168.0.4"')
    result = subprocess.run([sys.executable, "-m", "lvsha", "validate", str(inventory)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "web_hosts[hostB].internal_ips[0] = '192.168.0.4': is used twice: also by internal_gateway" in result.stderr


def test_pyinfra_refuses_a_broken_model_before_connecting(env):
    """pyinfra exits at inventory load, naming the problem; no host is contacted."""
    inventory = _broken_inventory(env, 'external_network="10.0.0.0/33"')
    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", str(inventory), "deploy.py", "--dry"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "external_network = '10.0.0.0/33': is not an IPv4 network" in result.stderr
    assert "Connecting to hosts" not in result.stdout + result.stderr


@pytest.mark.parametrize("args", [["--help"], ["lab", "--help"], ["--version"]])
def test_console_script_and_module_give_the_same_output(args, tmp_path):
    """bin/setup installs an `lvsha` console script beside the venv's python; it and
    `python3 -m lvsha` are one program (run outside the clone: the install is what counts)."""
    script = Path(sys.executable).with_name("lvsha")
    assert script.is_file(), f"no lvsha console script beside {sys.executable}: run bin/setup and use its venv"
    by_script = subprocess.run([str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    by_module = subprocess.run([sys.executable, "-m", "lvsha", *args], capture_output=True, text=True,
                               cwd=tmp_path, timeout=60)
    assert by_script.returncode == by_module.returncode == 0, by_script.stderr + by_module.stderr
    assert by_script.stdout == by_module.stdout
    assert by_script.stdout.startswith("lvsha, version ") if args == ["--version"] else "Usage: lvsha" in by_script.stdout


# ---- day-2 commands: what they refuse before connecting anywhere -----------------

def test_day2_commands_are_in_the_cli():
    result = CliRunner().invoke(main, ["--help"])
    for command in ("status", "drain", "undrain", "failover"):
        assert f"  {command} " in result.output


def test_day2_on_a_missing_inventory_names_it(env):
    result = CliRunner().invoke(main, ["status", str(env / "nowhere.py")])
    assert result.exit_code == 1 and f"inventory {env / 'nowhere.py'}: no such file" in result.output


@pytest.mark.parametrize("command", ["drain", "undrain-site", "failover"])
def test_day2_typos_fail_before_connecting(env, reference, command):
    """The reference inventory's balancers are not reachable from here: a typo
    must be reported without trying (these would otherwise wait for a timeout)."""
    inventory, host = str(ROOT / "inventory.py"), reference.web_hosts[1].name
    args, message = {
        "drain": (["drain", inventory, "no-such-host"], "web host 'no-such-host' is not in the model (web hosts: "
                  + ", ".join(h.name for h in reference.web_hosts) + ")"),
        "undrain-site": (["undrain", inventory, host, "--site", "no.such.site"], "site 'no.such.site' is not in the model"),
        "failover": (["failover", inventory, "--to", "no-such-balancer"], "--to no-such-balancer: not a balancer of the model"),
    }[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and message in result.output, result.output
