"""How an inventory reaches the hosts (lvsha.inventory.production_connections)
and the web hosts' jump through whichever balancer answers (lvsha.jump).

The generated ssh_config is read back with pyinfra's own parser (Include
support) and its ProxyCommand run through paramiko's ProxyCommand, with a fake
`ssh` in PATH standing for OpenSSH (a jump that is down, one that forwards).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from paramiko.proxy import ProxyCommand
from pyinfra.connectors.sshuserclient.config import SSHConfig

from lvsha import inventory, jump

# A fake OpenSSH client: logs its arguments; the jumps named in $DOWN fail as an
# unreachable host does (exit 255, nothing forwarded); $BROKEN answers, then fails.
FAKE_SSH = """#!/bin/sh
echo "ssh $*" >> "$CALLS"
eval "target=\\${$#}"
case " $DOWN " in *" $target "*) echo "ssh: connect to host $target port 22: No route to host" >&2; exit 255 ;; esac
case " $BROKEN " in *" $target "*) echo "SSH-2.0-half"; exit 255 ;; esac
exec cat
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for name in ("LVSHA_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    calls = tmp_path / "ssh-calls"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("DOWN", "")
    monkeypatch.setenv("BROKEN", "")
    return calls


def lookup(config: str, host: str) -> dict:
    parsed = SSHConfig()
    with open(config) as f:
        parsed.parse(f)
    return parsed.lookup(host)


def test_web_hosts_go_through_every_balancer_master_first_with_the_key_on_the_jump_too(reference, home):
    connections = inventory.production_connections(reference, ssh_user="ops", ssh_key="/keys/lb")
    master, backup = reference.master, next(b for b in reference.balancers if b is not reference.master)
    assert connections[master.name] == {"ssh_user": "ops", "ssh_key": "/keys/lb", "ssh_hostname": master.external_ip}
    for web in reference.web_hosts:
        data = connections[web.name]
        assert data["ssh_hostname"] == web.internal_ips[0]
        found = lookup(data["ssh_config_file"], web.internal_ips[0])
        assert found["proxycommand"] == (
            f"{sys.executable} -m lvsha.jump {data['ssh_config_file']} {web.internal_ips[0]} 22 "
            f"ops@{master.external_ip} ops@{backup.external_ip}")
        assert found["identityfile"] == ["/keys/lb"]
    for balancer in reference.balancers:  # what ssh -W uses to log in to the jump
        found = lookup(connections[reference.web_hosts[0].name]["ssh_config_file"], balancer.external_ip)
        assert found["user"] == "ops" and found["identityfile"] == ["/keys/lb"]


def test_the_operators_own_ssh_config_still_applies_after_ours(reference, home):
    (home / ".ssh" / "config").write_text("Host *\n    ServerAliveInterval 7\n"
                                          "Host 192.168.0.1\n    ProxyJump elsewhere\n    User someone\n")
    config = inventory.production_connections(reference, ssh_user="ops")["hostA"]["ssh_config_file"]
    found = lookup(config, reference.web_hosts[0].internal_ips[0])
    assert found["serveraliveinterval"] == "7"
    # ours first: the user and the jump (pyinfra takes ProxyCommand before ProxyJump)
    assert found["user"] == "ops" and "lvsha.jump" in found["proxycommand"]


@pytest.mark.parametrize("settings, expected", [
    ({}, "home/.cache/lvsha"),
    ({"XDG_CACHE_HOME": "xdg"}, "xdg/lvsha"),
    ({"XDG_CACHE_HOME": "xdg", "LVSHA_CACHE_DIR": "chosen"}, "chosen"),
])
def test_loading_the_inventory_writes_only_in_the_cache_directory(reference, home, tmp_path, monkeypatch,
                                                                   settings, expected):
    for name, value in settings.items():
        monkeypatch.setenv(name, str(tmp_path / value))
    before = {p for p in tmp_path.rglob("*")}
    connections = inventory.production_connections(reference)
    written = {p for p in tmp_path.rglob("*")} - before
    config = tmp_path / expected / f"{reference.name}.ssh_config"
    assert {p for p in written if p.is_file()} == {config}
    assert connections["hostA"]["ssh_config_file"] == str(config)


def test_the_proxy_command_goes_through_the_backup_when_the_master_is_down(reference, home, fake_ssh, monkeypatch):
    config = inventory.production_connections(reference, ssh_user="ops")["hostA"]["ssh_config_file"]
    master, backup = reference.master, next(b for b in reference.balancers if b is not reference.master)
    monkeypatch.setenv("DOWN", f"ops@{master.external_ip}")
    proxy = ProxyCommand(lookup(config, "192.168.0.1")["proxycommand"])
    try:
        proxy.send(b"SSH-2.0-paramiko\r\n")
        assert proxy.recv(18) == b"SSH-2.0-paramiko\r\n"  # forwarded (the fake jump echoes)
    finally:
        proxy.close()
    calls = fake_ssh.read_text().splitlines()
    assert [c.split()[-1] for c in calls] == [f"ops@{master.external_ip}", f"ops@{backup.external_ip}"]
    assert calls[0] == (f"ssh -F {config} -o BatchMode=yes -o ConnectTimeout={jump.CONNECT_TIMEOUT} "
                        f"-W 192.168.0.1:22 ops@{master.external_ip}")


def run_jump(*jumps: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvsha.jump", "/cfg", "192.168.0.1", "22", *jumps],
                          input="hello\n", capture_output=True, text=True, timeout=30,
                          cwd=Path(inventory.__file__).parent.parent)


def test_jump_uses_the_first_balancer_that_answers(fake_ssh):
    result = run_jump("ops@a", "ops@b")
    assert (result.returncode, result.stdout) == (0, "hello\n")
    assert len(fake_ssh.read_text().splitlines()) == 1


def test_jump_falls_back_only_before_anything_came_back(fake_ssh, monkeypatch):
    monkeypatch.setenv("DOWN", "ops@a")
    result = run_jump("ops@a", "ops@b")
    assert (result.returncode, result.stdout) == (0, "hello\n")
    assert "no way to 192.168.0.1:22 through ops@a; trying ops@b" in result.stderr

    fake_ssh.unlink()
    monkeypatch.setenv("DOWN", "")
    monkeypatch.setenv("BROKEN", "ops@a")  # answered, then broke: not re-opened through b
    result = run_jump("ops@a", "ops@b")
    assert (result.returncode, result.stdout) == (255, "SSH-2.0-half\n")
    assert len(fake_ssh.read_text().splitlines()) == 1


def test_jump_fails_when_no_balancer_answers(fake_ssh, monkeypatch):
    monkeypatch.setenv("DOWN", "ops@a ops@b")
    result = run_jump("ops@a", "ops@b")
    assert result.returncode == 255 and result.stdout == ""
    assert len(fake_ssh.read_text().splitlines()) == 2


def test_jump_usage(fake_ssh):
    assert jump.main(["/cfg", "host", "22"]) == 2


def test_the_ssh_config_is_replaced_whole_never_rewritten_in_place(reference, home, monkeypatch):
    """A deploy's ssh reads the file while another inventory load writes it: the new
    file is written beside it and renamed over it (one rename, nothing left behind)."""
    first = inventory.production_connections(reference, ssh_user="ops")
    config = Path(first[reference.web_hosts[0].name]["ssh_config_file"])
    with open(config) as reader:  # held open, as a running ssh would
        renamed = []
        real_replace = os.replace
        monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append((src, str(dst))), real_replace(src, dst)))
        inventory.production_connections(reference, ssh_user="someone-else")
        assert "User ops" in reader.read()  # the reader's file was never truncated or rewritten
    assert len(renamed) == 1 and renamed[0][1] == str(config) and Path(renamed[0][0]).parent == config.parent
    assert "User someone-else" in config.read_text()
    assert sorted(p.name for p in config.parent.iterdir() if p.name.startswith(f".{config.name}")) == []
