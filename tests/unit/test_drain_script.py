"""files/lvsha/lvsha-drain, run for real against the reference cluster's rendered
ldirectord.cf (systemctl faked): drained real servers get weight 0 in the file
ldirectord runs with, nothing else changes, and a running ldirectord is reloaded."""

from __future__ import annotations

import subprocess
from dataclasses import replace
import time

import pytest

from lvsha import render

SCRIPT = str(render.FILES / "lvsha" / "lvsha-drain")


class Balancer:
    """A scratch balancer: its ldirectord.cf, drained list and a fake systemctl."""

    def __init__(self, tmp_path, cluster, ldirectord_active=True, reload_fails=False):
        self.tmp, self.cluster = tmp_path, cluster
        self.config = tmp_path / "ha.d" / "ldirectord.cf"
        self.config.parent.mkdir()
        self.config.write_text(render.ldirectord_file(cluster).content)
        self.live = tmp_path / "run" / "ldirectord.cf"
        self.state = tmp_path / "lib" / "drained"
        self.calls = tmp_path / "systemctl.calls"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "systemctl"
        fake.write_text(f"#!/bin/sh\necho \"systemctl $*\" >> {self.calls}\n"
                        f"case \"$*\" in *is-active*) exit {0 if ldirectord_active else 3};; "
                        f"reload*) exit {1 if reload_fails else 0};; esac\n")
        fake.chmod(0o755)
        ipvsadm = bin_dir / "ipvsadm"
        ipvsadm.write_text(f"#!/bin/sh\necho \"ipvsadm $*\" >> {self.calls}\n")
        ipvsadm.chmod(0o755)
        self.env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LVSHA_LDIRECTORD_CF": str(self.config),
                    "LVSHA_DRAINED": str(self.state), "LVSHA_LDIRECTORD_LIVE": str(self.live)}

    def run(self, *args):
        return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=self.env, timeout=30)

    def pairs(self, host_index: int, site_index: int | None = None) -> list[str]:
        """VIRTUAL REAL arguments draining web host `host_index` (on one site, or all)."""
        out = []
        for i, vs in enumerate(self.cluster.virtual_servers()):
            if site_index is None or i == site_index:
                _, ip = vs.reals[host_index]
                out += [vs.address, vs.real_token(ip)]
        return out

    def weights(self) -> dict[tuple[str, str], str]:
        """{(virtual, real): weight as written} in the file ldirectord runs with."""
        found, virtual = {}, None
        for line in self.live.read_text().splitlines():
            fields = line.strip().split()
            if fields and fields[0].startswith("virtual="):
                virtual = fields[0].split("=", 1)[1]
            elif fields and fields[0].startswith("real="):
                found[(virtual, fields[0].split("=", 1)[1])] = fields[2] if len(fields) > 2 else "1"
        return found


@pytest.fixture
def balancer(tmp_path, reference):
    return Balancer(tmp_path, reference)


def test_render_without_drains_is_the_deployed_file(balancer):
    assert balancer.run("render").returncode == 0
    assert balancer.live.read_text() == balancer.config.read_text()
    assert balancer.run("list").stdout == ""


def test_a_drained_host_gets_weight_zero_on_every_site_and_nothing_else_changes(balancer):
    result = balancer.run("add", *balancer.pairs(1))
    assert result.returncode == 0, result.stderr
    drained = {tuple(balancer.pairs(1)[i:i + 2]) for i in range(0, len(balancer.pairs(1)), 2)}
    weights = balancer.weights()
    assert {k for k, w in weights.items() if w == "0"} == drained
    assert all(w == "1" for k, w in weights.items() if k not in drained)
    # the virtual services with a drained real are quiescent (a reload keeps it at weight 0
    # with its connections); every other line is the deployed file's
    live = balancer.live.read_text().splitlines()
    for virtual, _ in drained:
        block = live.index(f"virtual={virtual}")
        assert live[block + 1] == "\tquiescent=yes"
    assert live.count("\tquiescent=no") == 0 and live.count("\tquiescent=yes") == len(drained)
    unchanged = [line for line in live if "quiescent=" not in line and not any(f"real={r} " in line for _, r in drained)]
    deployed = [line for line in balancer.config.read_text().splitlines()
                if "quiescent=" not in line and not any(f"real={r} " in line for _, r in drained)]
    assert unchanged == deployed
    assert sorted(balancer.run("list").stdout.splitlines()) == sorted(f"{v} {r}" for v, r in drained)
    assert "reload ldirectord.service" in balancer.calls.read_text()


def _acting(balancer) -> list[str]:
    """The calls that change something (not the is-active questions)."""
    return [c for c in balancer.calls.read_text().splitlines() if "is-active" not in c]


def test_ipvs_weights_are_set_before_the_reload_and_a_repeat_does_nothing(balancer):
    pairs = balancer.pairs(1, site_index=0)
    assert balancer.run("add", *pairs).returncode == 0
    assert _acting(balancer)[-2:] == [
        f"ipvsadm -e -t {pairs[0]} -r {pairs[1]} -m -w 0", "systemctl reload ldirectord.service"]
    before = balancer.calls.read_text()
    assert balancer.run("add", *pairs).returncode == 0  # already drained: no weight set, no reload
    assert "ipvsadm" not in balancer.calls.read_text()[len(before):]
    assert "reload" not in balancer.calls.read_text()[len(before):]
    assert balancer.run("remove", *pairs).returncode == 0  # the configured weight back, then the reload
    assert _acting(balancer)[-2:] == [
        f"ipvsadm -e -t {pairs[0]} -r {pairs[1]} -m -w 1", "systemctl reload ldirectord.service"]


def test_one_site_only_and_undrain(balancer):
    assert balancer.run("add", *balancer.pairs(0, site_index=1)).returncode == 0
    assert [k for k, w in balancer.weights().items() if w == "0"] == [tuple(balancer.pairs(0, site_index=1))]
    assert balancer.run("add", *balancer.pairs(0, site_index=1)).returncode == 0  # twice is once
    assert len(balancer.run("list").stdout.splitlines()) == 1
    assert balancer.run("remove", *balancer.pairs(0, site_index=1)).returncode == 0
    assert balancer.live.read_text() == balancer.config.read_text()
    assert balancer.run("list").stdout == ""


def test_a_stopped_ldirectord_is_not_started(tmp_path, reference):
    balancer = Balancer(tmp_path, reference, ldirectord_active=False)
    assert balancer.run("add", *balancer.pairs(2)).returncode == 0
    calls = balancer.calls.read_text()
    assert "reload" not in calls and "start" not in calls and "ipvsadm" not in calls


def test_a_failed_reload_is_an_error_but_the_drain_is_kept(tmp_path, reference):
    balancer = Balancer(tmp_path, reference, reload_fails=True)
    result = balancer.run("add", *balancer.pairs(2))
    assert result.returncode == 1 and "did not reload" in result.stderr
    assert len(balancer.run("list").stdout.splitlines()) == len(reference.sites)


@pytest.mark.parametrize("args", [("add",), ("add", "10.0.0.1:0"), ("add", "10.0.0.1:0", "x;rm -rf /"), ("bogus",)])
def test_bad_arguments_change_nothing(balancer, args):
    result = balancer.run(*args)
    assert result.returncode == 2, result
    assert not balancer.state.exists() or balancer.state.read_text() == ""


def test_a_weight_already_in_the_file_is_replaced(balancer):
    text = balancer.config.read_text()
    vs = balancer.cluster.virtual_servers()[0]
    token = vs.real_token(vs.reals[0][1])
    balancer.config.write_text(text.replace(f"real={token} masq\n", f"real={token} masq 5\n"))
    assert balancer.run("add", vs.address, token).returncode == 0
    assert balancer.weights()[(vs.address, token)] == "0"


def test_two_renders_at_once_never_write_into_each_others_file(balancer, tmp_path):
    """A drain's render and ldirectord's start (ExecStartPre) at the same moment: each
    writes a file of its own and renames it, so both succeed and the live file is whole."""
    balancer.run("render")
    expected = balancer.live.read_text()
    slow = tmp_path / "slow-bin"
    slow.mkdir()
    (slow / "awk").write_text("#!/bin/sh\nsleep 1\nexec /usr/bin/awk \"$@\"\n")  # the first render's awk starts late
    (slow / "awk").chmod(0o755)
    first = subprocess.Popen([SCRIPT, "render"], env={**balancer.env, "PATH": f"{slow}:{balancer.env['PATH']}"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    second = balancer.run("render")
    out, err = first.communicate(timeout=30)
    assert (first.returncode, second.returncode) == (0, 0), (err, second.stderr)
    assert balancer.live.read_text() == expected
    assert [p.name for p in balancer.live.parent.iterdir()] == [balancer.live.name]  # nothing left behind


# ---- engine keepalived -----------------------------------------------------------------

class KeepalivedBalancer:
    """A scratch keepalived balancer: the deploy's keepalived.conf, the drained list, fake
    systemctl and keepalived (its -t refusing while $TMP/refuse exists)."""

    def __init__(self, tmp_path, cluster, active=True):
        self.tmp, self.cluster = tmp_path, cluster
        self.config = tmp_path / "keepalived" / "keepalived.conf"
        self.config.parent.mkdir()
        self.config.write_text(render.keepalived_conf(cluster, cluster.master).content)
        self.live = tmp_path / "run" / "keepalived.conf"
        self.state = tmp_path / "lib" / "drained"
        self.calls = tmp_path / "calls"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name, body in {
            "systemctl": f'echo "systemctl $*" >> {self.calls}; case "$*" in *is-active*) exit {0 if active else 3};; esac',
            "ipvsadm": f'echo "ipvsadm $*" >> {self.calls}',
            "keepalived": f'echo "keepalived $*" >> {self.calls}; [ ! -e {tmp_path}/refuse ] || {{ echo "bad line" >&2; exit 3; }}',
        }.items():
            (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
            (bin_dir / name).chmod(0o755)
        self.env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LVSHA_KEEPALIVED_CONF": str(self.config),
                    "LVSHA_DRAINED": str(self.state), "LVSHA_KEEPALIVED_LIVE": str(self.live),
                    "LVSHA_KEEPALIVED": str(bin_dir / "keepalived")}

    def run(self, *args):
        return subprocess.run([SCRIPT, "--engine", "keepalived", *args], capture_output=True, text=True,
                              env=self.env, timeout=30)

    def made(self) -> list[str]:
        made = self.calls.read_text().splitlines() if self.calls.exists() else []
        self.calls.unlink(missing_ok=True)
        return made

    def weights(self) -> dict[tuple[str, str], str]:
        """{(virtual, real): weight} as the file keepalived runs with sets them, by the drain marks."""
        found = {}
        for line in self.live.read_text().splitlines():
            fields = line.split()
            if fields[:1] == ["weight"] and "lvsha-drain" in fields:
                at = fields.index("lvsha-drain")
                found[(fields[at + 1], fields[at + 2])] = fields[1]
        return found


@pytest.fixture
def keepalived_balancer(tmp_path, reference):
    return KeepalivedBalancer(tmp_path, replace(reference, engine="keepalived"))


def _pairs(cluster, host_index):
    return [token for vs in cluster.virtual_servers() for token in (vs.address, vs.real_token(vs.reals[host_index][1]))]


def test_keepalived_render_without_drains_is_the_deployed_file_checked(keepalived_balancer):
    b = keepalived_balancer
    result = b.run("render")
    assert result.returncode == 0, result.stderr
    assert b.live.read_text() == b.config.read_text()
    (check,) = b.made()
    assert check.startswith("keepalived -t -f ") and check.split()[-1] != str(b.live)  # the staged file, then renamed
    assert [p.name for p in b.live.parent.iterdir()] == [b.live.name]


def test_keepalived_drain_sets_weight_0_on_the_host_only_and_reloads(keepalived_balancer):
    b = keepalived_balancer
    cluster = b.cluster
    result = b.run("add", *_pairs(cluster, 1))
    assert result.returncode == 0, result.stderr
    drained = {(vs.address, vs.real_token(vs.reals[1][1])) for vs in cluster.virtual_servers()}
    weights = b.weights()
    assert set(weights) == {(vs.address, vs.real_token(ip)) for vs in cluster.virtual_servers() for _, ip in vs.reals}
    assert {pair for pair, w in weights.items() if w == "0"} == drained
    assert all(w == "1" for pair, w in weights.items() if pair not in drained)
    # only the weight lines differ from the deployed file
    changed = [(a, c) for a, c in zip(b.config.read_text().splitlines(), b.live.read_text().splitlines()) if a != c]
    assert len(changed) == len(drained) and all(c.strip().startswith("weight 0 ") for _, c in changed)
    made = b.made()
    # keepalived applies weights by reload (no ipvsadm: its checker owns the table)
    assert made[0].startswith("keepalived -t") and made[1:] == [
        "systemctl is-active --quiet keepalived.service", "systemctl reload keepalived.service"]
    assert b.run("list").stdout.splitlines() == [f"{v} {r}" for v, r in zip(_pairs(cluster, 1)[::2], _pairs(cluster, 1)[1::2])]
    # held across the next start or reload: the drop-in renders again from the deployed file
    b.config.write_text(b.config.read_text() + "\n# a deploy's new file\n")
    assert b.run("render").returncode == 0
    assert {pair for pair, w in b.weights().items() if w == "0"} == drained
    # undrain: back to the deployed file
    b.made()
    assert b.run("remove", *_pairs(cluster, 1)).returncode == 0
    assert b.live.read_text() == b.config.read_text()


def test_keepalived_stopped_is_not_reloaded(tmp_path, reference):
    b = KeepalivedBalancer(tmp_path, replace(reference, engine="keepalived"), active=False)
    assert b.run("add", *_pairs(b.cluster, 0)).returncode == 0
    assert "systemctl reload keepalived.service" not in b.made()
    assert {w for w in b.weights().values()} == {"0", "1"}


def test_a_file_keepalived_refuses_never_replaces_the_running_one(keepalived_balancer):
    b = keepalived_balancer
    assert b.run("render").returncode == 0
    before = b.live.read_text()
    (b.tmp / "refuse").touch()
    result = b.run("add", *_pairs(b.cluster, 0))
    assert result.returncode == 1 and "keepalived -t refused" in result.stderr and "bad line" in result.stderr
    assert b.live.read_text() == before and [p.name for p in b.live.parent.iterdir()] == [b.live.name]
    assert "systemctl reload keepalived.service" not in b.made()
    assert b.run("render").returncode == 1  # a start or reload asking for it fails: keepalived keeps its file


def test_an_unknown_engine_is_a_usage_error(keepalived_balancer):
    result = subprocess.run([SCRIPT, "--engine", "pacemaker", "list"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown engine 'pacemaker'" in result.stderr


@pytest.mark.parametrize("args", [("--engine",), ("--engine", "keepalived")])
def test_an_engine_or_a_command_missing_is_a_usage_error(args):
    # dash ends the shell silently on `shift 2` with one argument left: the usage must be printed
    result = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "usage: lvsha-drain [--engine" in result.stderr, result
