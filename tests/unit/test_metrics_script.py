"""files/lvsha/lvsha-metrics, run for real against fakes of the tools it calls (ip, cl_status,
ipvsadm, systemctl, conntrackd, lvsha-applied, lvsha-drain) answering what the real tools
answered in the lab (tests/unit/captures/reference-drained), with the reference model's
rendered files, on either engine (on keepalived: the same addresses and IPVS table, the
VRRP state as keepalived's notify writes it): its output is parsed with prometheus_client's
parser and linted with `promtool check metrics`."""

from __future__ import annotations

import json
import re
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from lvsha import render
from tests.conftest import promtool

SCRIPT = str(render.FILES / "lvsha" / "lvsha-metrics")
CAPTURES = Path(__file__).parent / "captures"

# `conntrackd -s` of conntrackd 1.4.7 (FTFW over UDP), in its own format (src/cache.c, src/sync-mode.c).
CONNTRACKD_STATS = """\
cache internal:
current active connections:	           7
connections created:		          40	failed:	           0
connections updated:		          12	failed:	           0
connections destroyed:		          33	failed:	           0

cache external:
current active connections:	           3
connections created:		           9	failed:	           1
connections updated:		           0	failed:	           0
connections destroyed:		           6	failed:	           0

traffic processed:
                   0 Bytes                         0 Pckts

UDP traffic (active device=eth1):
                4512 Bytes sent                 3248 Bytes recv
                  60 Pckts sent                   54 Pckts recv
                   0 Error send                    0 Error recv

message tracking:
                   0 Malformed msgs                    2 Lost msgs

"""
IPVS_DAEMONS = ("master sync daemon (mcast=eth1, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
                "backup sync daemon (mcast=eth1, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n")

FAKE = """#!/bin/sh
# a fake NAME: answers what the test put in $FAKE/KEY.out (KEY: the call), with KEY.rc's status;
# KEY.hang makes it hang. An unknown call fails.
key=$(printf '%s' "{name} $*" | tr -c 'A-Za-z0-9.:-' '_')
echo "{name} $*" >> "$FAKE/calls"
[ -f "$FAKE/$key.hang" ] && exec sleep 300
[ -f "$FAKE/$key.out" ] || exit 1
cat "$FAKE/$key.out"
exit $(cat "$FAKE/$key.rc" 2>/dev/null || echo 0)
"""


def prometheus_parser():
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("prometheus_client is not installed; bin/setup installs the test extras (pyproject.toml)")
        pytest.skip("prometheus_client is not installed (bin/setup installs it)")
    return text_string_to_metric_families


def capture(name: str) -> dict[str, tuple[int, str]]:
    return {k: tuple(v) for k, v in json.loads((CAPTURES / "reference-drained" / f"{name}.json").read_text()).items()}


class Balancer:
    """One balancer's world: its rendered files and the fakes' answers."""

    def __init__(self, tmp_path: Path, cluster, name: str):
        self.root, self.cluster, self.name = tmp_path, cluster, name
        self.fake = tmp_path / "fake"
        self.bin = tmp_path / "bin"
        for d in (self.fake, self.bin, tmp_path / "ha.d", tmp_path / "iptables", tmp_path / "textfile",
                  tmp_path / "keepalived", tmp_path / "run"):
            d.mkdir(parents=True, exist_ok=True)
        for tool in ("ip", "cl_status", "ipvsadm", "systemctl", "conntrackd", "lvsha-applied", "lvsha-drain"):
            (self.bin / tool).write_text(FAKE.replace("{name}", tool))
            (self.bin / tool).chmod(0o755)
        balancer = cluster.balancer(name)
        self.files = {}
        for f in [*render.balancer_files(cluster, balancer), *render.monitoring_files(cluster, balancer)]:
            local = {render.HA_CF: "ha.d/ha.cf", render.HARESOURCES: "ha.d/haresources", render.AUTHKEYS: "ha.d/authkeys",
                     render.LDIRECTORD_CF: "ha.d/ldirectord.cf", render.METRICS_ENV: "metrics.env",
                     render.FIREWALL_RULES: "iptables/rules.v4", render.FIREWALL6_RULES: "iptables/rules.v6",
                     render.CONNTRACKD_CONF: "conntrackd.conf",
                     render.KEEPALIVED_CONF: "keepalived/keepalived.conf"}.get(f.path)
            if local:
                (tmp_path / local).write_text(f.content)
                self.files[f.path] = f
        raw = capture(name)
        peer = cluster.peer(balancer).name
        self.answer("ip -4 -o addr show", raw["addresses"][1])
        self.answer("ipvsadm -Ln", raw["ipvs"][1])
        if cluster.engine == "keepalived":  # the capture's holder is MASTER
            self.answer("systemctl is-active keepalived.service", "active")
            self.vrrp("MASTER" if name == "balancer1" else "BACKUP")
        else:
            self.answer("cl_status hbstatus", raw["hbstatus"][1], raw["hbstatus"][0])
            self.answer(f"cl_status nodestatus {peer}", raw["peer"][1])
            self.answer(f"cl_status listhblinks {peer}", raw["links"][1])
            for link in ("eth0", "eth1"):
                self.answer(f"cl_status hblinkstatus {peer} {link}", raw[f"link:{link}"][1])
        self.answer("lvsha-drain list", raw["drained"][1])
        self.answer("ipvsadm -L --daemon", IPVS_DAEMONS)
        self.answer("systemctl is-active conntrackd.service", "active")
        self.answer(f"conntrackd -C {tmp_path}/conntrackd.conf -s", CONNTRACKD_STATS)
        self.applied()

    def answer(self, call: str, out: str, rc: int = 0) -> None:
        key = "".join(c if c.isalnum() or c in ".:-" else "_" for c in call)
        (self.fake / f"{key}.out").write_text(out if out.endswith("\n") or not out else out + "\n")
        (self.fake / f"{key}.rc").write_text(str(rc))
        (self.fake / f"{key}.hang").unlink(missing_ok=True)

    def hang(self, call: str) -> None:
        key = "".join(c if c.isalnum() or c in ".:-" else "_" for c in call)
        (self.fake / f"{key}.hang").write_text("")

    def vrrp(self, state: str | None, when: int | None = None) -> None:
        """/run/lvsha/vrrp-state as keepalived's notify writes it (None: never written), at `when`."""
        path = self.root / "run" / "vrrp-state"
        if state is None:
            path.unlink(missing_ok=True)
            return
        path.write_text(f"{state}\n")
        if when is not None:
            os.utime(path, (when, when))

    def applied(self, **changed: str) -> None:
        """lvsha-applied show as the deploy leaves it: every record the sha1 of the files on disk
        (on keepalived, its unit's record of keepalived.conf beside them)."""
        sha1 = lambda *paths: " ".join(render.applied_record([self.files[p] for p in paths]))  # noqa: E731
        records = {
            "firewall": f"{sha1(render.FIREWALL_RULES)} loaded4", "firewall6": f"{sha1(render.FIREWALL6_RULES)} loaded6",
            "firewall-now": "loaded4", "firewall6-now": "loaded6",
        }
        if self.cluster.engine == "keepalived":
            (self.root / "run" / "keepalived.applied").write_text(sha1(render.KEEPALIVED_CONF) + "\n")
        else:
            records["heartbeat"] = sha1(render.HA_CF, render.HARESOURCES, render.AUTHKEYS)
            records["ldirectord"] = sha1(render.LDIRECTORD_CF)
        if render.CONNTRACKD_CONF in self.files:
            records["conntrackd"] = sha1(render.CONNTRACKD_CONF)
        records.update(changed)
        self.answer("lvsha-applied show", "\n".join(f"{k} {v}" for k, v in records.items() if v is not None))

    def run(self, timeout: int = 2) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE": str(self.fake),
               "LVSHA_ENV_FILE": str(self.root / "metrics.env"), "LVSHA_TEXTFILE_DIR": str(self.root / "textfile"),
               "LVSHA_STATE_DIR": str(self.root / "run"), "LVSHA_LIB_DIR": str(self.root / "lib"),
               "LVSHA_HA_D": str(self.root / "ha.d"), "LVSHA_IPTABLES_D": str(self.root / "iptables"),
               "LVSHA_CONNTRACKD_CONFIG": str(self.root / "conntrackd.conf"),
               "LVSHA_KEEPALIVED_CONF": str(self.root / "keepalived" / "keepalived.conf"),
               "LVSHA_KEEPALIVED_APPLIED": str(self.root / "run" / "keepalived.applied"),
               "LVSHA_VRRP_STATE": str(self.root / "run" / "vrrp-state"),
               "LVSHA_APPLIED": "lvsha-applied", "LVSHA_DRAIN": "lvsha-drain", "LVSHA_METRICS_TIMEOUT": str(timeout)}
        return subprocess.run([SCRIPT], capture_output=True, text=True, env=env, timeout=120)

    @property
    def text(self) -> str:
        return (self.root / "textfile" / "lvsha.prom").read_text()

    def samples(self) -> dict[tuple[str, frozenset], float]:
        """{(name, labels): value} of every sample written."""
        parse = prometheus_parser()
        return {(s.name, frozenset(s.labels.items())): s.value for family in parse(self.text) for s in family.samples}


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def balancer1(reference, tmp_path):
    return Balancer(tmp_path, reference, "balancer1")


@pytest.fixture
def keepalived1(reference, tmp_path):
    """balancer1 of the reference on keepalived (state sync on), VRRP MASTER."""
    return Balancer(tmp_path, replace(reference, engine="keepalived"), "balancer1")


@pytest.fixture(params=["heartbeat", "keepalived"])
def either(request):
    """balancer1 on each engine."""
    return request.getfixturevalue("balancer1" if request.param == "heartbeat" else "keepalived1")


def test_the_drained_pair_as_the_metrics_say_it(reference, balancer1):
    result = balancer1.run()
    assert result.returncode == 0, result.stderr
    samples = balancer1.samples()
    # balancer1 carries every floating address in the capture
    for ip in reference.floating_ips():
        assert value(samples, "lvsha_floating_address_held", address=str(ip.address), interface=ip.interface) == 1
    assert value(samples, "lvsha_heartbeat_running") == 1
    assert value(samples, "lvsha_heartbeat_peer_active", peer="balancer2") == 1
    assert value(samples, "lvsha_heartbeat_peer_info", peer="balancer2", state="active") == 1
    assert {labels for (name, labels) in samples if name == "lvsha_heartbeat_link_up"} == {
        frozenset({"peer": "balancer2", "link": link}.items()) for link in ("eth0", "eth1")}
    # hostB is drained on every site; the others in rotation: each real as ipvsadm names it
    for vs in reference.virtual_servers():
        assert value(samples, "lvsha_virtual_service_loaded", virtual=vs.address, address=str(vs.vip)) == 1
        for host, ip in vs.reals:
            real = vs.real_address(ip)
            want = "drained" if host.name == "hostB" else "in_rotation"
            for state in ("in_rotation", "failed_check", "drained"):
                assert value(samples, "lvsha_real_server_state", virtual=vs.address, real=real, state=state) == (
                    state == want), (vs.address, real, state)
            assert value(samples, "lvsha_real_server_weight", virtual=vs.address, real=real) == (want != "drained")
        counts = {state: value(samples, "lvsha_virtual_service_real_servers", virtual=vs.address, address=str(vs.vip),
                               state=state) for state in ("in_rotation", "failed_check", "drained")}
        assert counts == {"in_rotation": len(vs.reals) - 1, "failed_check": 0, "drained": 1}
    for component in ("firewall", "firewall6", "heartbeat", "ldirectord", "conntrackd"):
        assert value(samples, "lvsha_config_applied", component=component) == 1, component
    assert value(samples, "lvsha_state_sync_enabled") == 1 and value(samples, "lvsha_state_sync_up") == 1
    assert value(samples, "lvsha_ipvs_sync_daemon_running", role="master") == 1
    assert value(samples, "lvsha_ipvs_sync_daemon_running", role="backup") == 1
    assert value(samples, "lvsha_conntrackd_running") == 1
    assert value(samples, "lvsha_conntrackd_cache_connections", cache="internal") == 7
    assert value(samples, "lvsha_conntrackd_cache_connections", cache="external") == 3
    assert value(samples, "lvsha_conntrackd_cache_events_total", cache="internal", event="destroyed") == 33
    assert value(samples, "lvsha_conntrackd_cache_failed_events_total", cache="external", event="created") == 1
    assert value(samples, "lvsha_conntrackd_sent_bytes_total") == 4512
    assert value(samples, "lvsha_conntrackd_received_packets_total") == 54
    assert value(samples, "lvsha_conntrackd_lost_messages_total") == 2
    assert value(samples, "lvsha_metrics_failed_commands") == 0
    assert value(samples, "lvsha_metrics_last_run_timestamp_seconds") > 0
    assert not list((balancer1.root / "textfile").glob("lvsha.prom.*"))  # written beside, then renamed


def test_a_failed_check_a_standby_and_drift(reference, balancer1):
    """The standby's view: no address, the peer as the holder; a real out of IPVS and one at
    weight 0 both failed their check; a flushed firewall and a changed ldirectord.cf are drift."""
    raw = capture("balancer2")
    balancer1.answer("ip -4 -o addr show", raw["addresses"][1])
    vs = reference.virtual_servers()[0]
    (_, gone), (_, zero), _ = vs.reals
    table = capture("balancer1")["ipvs"][1].splitlines()
    table = [line for line in table if f"{gone}:0 " not in line]
    balancer1.answer("ipvsadm -Ln", "\n".join(table))
    balancer1.answer("lvsha-drain list", "")  # nothing drained: hostB's weight 0 is a failed check
    balancer1.applied(**{"firewall-now": "flushed", "ldirectord": "0" * 40})
    assert balancer1.run().returncode == 0
    samples = balancer1.samples()
    assert all(value(samples, "lvsha_floating_address_held", address=str(ip.address), interface=ip.interface) == 0
               for ip in reference.floating_ips())
    for ip in (gone, zero):
        assert value(samples, "lvsha_real_server_state", virtual=vs.address, real=vs.real_address(ip),
                     state="failed_check") == 1
    assert value(samples, "lvsha_real_server_weight", virtual=vs.address, real=vs.real_address(gone)) is None
    assert value(samples, "lvsha_real_server_weight", virtual=vs.address, real=vs.real_address(zero)) == 0
    assert value(samples, "lvsha_virtual_service_real_servers", virtual=vs.address, address=str(vs.vip),
                 state="in_rotation") == 1
    assert value(samples, "lvsha_config_applied", component="firewall") == 0
    assert value(samples, "lvsha_config_applied", component="ldirectord") == 0
    assert value(samples, "lvsha_config_applied", component="heartbeat") == 1
    # a file edited on disk after the service started is drift too
    (balancer1.root / "ha.d" / "ha.cf").write_text("edited by hand\n")
    balancer1.applied()
    balancer1.files.pop(render.HA_CF)  # (the record stays the deploy's)
    assert balancer1.run().returncode == 0
    assert value(balancer1.samples(), "lvsha_config_applied", component="heartbeat") == 0


def test_heartbeat_stopped_and_state_sync_down(balancer1):
    balancer1.answer("cl_status hbstatus", "Heartbeat is stopped on this machine.", 2)
    balancer1.answer("ipvsadm -L --daemon", "master sync daemon (mcast=eth1, syncid=1)\n")
    balancer1.answer("systemctl is-active conntrackd.service", "inactive", 3)
    result = balancer1.run()
    assert result.returncode == 0 and result.stderr == ""  # answers, not failures
    samples = balancer1.samples()
    assert value(samples, "lvsha_heartbeat_running") == 0
    # heartbeat's view of the peer and links is unknown, not "down"
    assert not [name for name, _ in samples if name.startswith(("lvsha_heartbeat_peer", "lvsha_heartbeat_link"))]
    assert value(samples, "lvsha_ipvs_sync_daemon_running", role="backup") == 0
    assert value(samples, "lvsha_conntrackd_running") == 0
    assert value(samples, "lvsha_state_sync_up") == 0
    assert not [name for name, _ in samples if name.startswith("lvsha_conntrackd_cache")]  # not asked


def test_a_link_down_and_a_peer_dead(balancer1):
    balancer1.answer("cl_status nodestatus balancer2", "dead")
    balancer1.answer("cl_status hblinkstatus balancer2 eth0", "dead")
    assert balancer1.run().returncode == 0
    samples = balancer1.samples()
    assert value(samples, "lvsha_heartbeat_peer_active", peer="balancer2") == 0
    assert value(samples, "lvsha_heartbeat_peer_info", peer="balancer2", state="dead") == 1
    assert value(samples, "lvsha_heartbeat_link_up", peer="balancer2", link="eth0") == 0
    assert value(samples, "lvsha_heartbeat_link_up", peer="balancer2", link="eth1") == 1


def test_a_hung_tool_is_bounded_named_and_counted(balancer1):
    balancer1.hang("cl_status hbstatus")
    balancer1.hang("conntrackd -C {}/conntrackd.conf -s".format(balancer1.root))
    result = balancer1.run(timeout=1)
    assert result.returncode == 0
    assert "`cl_status hbstatus` did not answer in 1 s" in result.stderr
    assert "did not answer in 1 s" in result.stderr.split("cl_status hbstatus", 1)[1]  # conntrackd's too
    samples = balancer1.samples()
    assert value(samples, "lvsha_metrics_failed_commands") == 2
    assert value(samples, "lvsha_heartbeat_running") == 0
    assert value(samples, "lvsha_conntrackd_running") == 1 and value(samples, "lvsha_state_sync_up") == 1
    assert not [name for name, _ in samples if name.startswith("lvsha_conntrackd_cache")]


def test_the_last_takeover_is_recorded_when_this_node_comes_to_carry_everything(reference, balancer1):
    standby = capture("balancer2")["addresses"][1]
    balancer1.answer("ip -4 -o addr show", standby)
    assert balancer1.run().returncode == 0
    assert "lvsha_last_takeover_timestamp_seconds" not in balancer1.text  # nothing recorded yet
    balancer1.answer("ip -4 -o addr show", capture("balancer1")["addresses"][1])
    marker = balancer1.root / "run" / "conntrackd-primary"
    marker.write_text("")
    os.utime(marker, (1_700_000_000, 1_700_000_000))  # when lvsha-conntrackd made it primary
    assert balancer1.run().returncode == 0
    assert value(balancer1.samples(), "lvsha_last_takeover_timestamp_seconds") == 1_700_000_000
    os.utime(marker, (1_800_000_000, 1_800_000_000))
    assert balancer1.run().returncode == 0  # still holding: no new takeover
    assert value(balancer1.samples(), "lvsha_last_takeover_timestamp_seconds") == 1_700_000_000
    assert (balancer1.root / "lib" / "last-takeover").read_text().strip() == "1700000000"


def test_without_state_sync_nothing_of_it_is_judged(reference, tmp_path):
    unsynced = replace(reference, state_sync=replace(reference.state_sync, enabled=False))
    balancer = Balancer(tmp_path, unsynced, "balancer1")
    balancer.answer("systemctl is-active conntrackd.service", "inactive", 3)
    balancer.answer("ipvsadm -L --daemon", "")
    assert balancer.run().returncode == 0
    samples = balancer.samples()
    assert value(samples, "lvsha_state_sync_enabled") == 0
    assert value(samples, "lvsha_state_sync_up") is None
    assert value(samples, "lvsha_config_applied", component="conntrackd") is None
    assert value(samples, "lvsha_config_applied", component="firewall") == 1


def test_the_output_passes_promtool_check_metrics(either, tmp_path):
    exe = promtool()
    assert either.run().returncode == 0
    result = subprocess.run([exe, "check", "metrics"], input=either.text, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr  # no lint


def test_every_metric_is_documented(either):
    assert either.run().returncode == 0
    doc = (Path(__file__).resolve().parents[2] / "docs" / "monitoring.md").read_text()
    names = {line.split()[2] for line in either.text.splitlines() if line.startswith("# TYPE")}
    names.add("lvsha_last_takeover_timestamp_seconds")
    assert [n for n in sorted(names) if not re.search(rf"`{n}[`{{]", doc)] == []


def _settings(cluster) -> dict[str, str]:
    """metrics.env as rendered for the cluster's master, as sh reads it."""
    env = next(f for f in render.monitoring_files(cluster, cluster.master) if f.path == render.METRICS_ENV)
    out = subprocess.run(["sh", "-c", 'set -a; . /dev/stdin; env'], input=env.content, capture_output=True, text=True,
                         env={}, timeout=30, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("LVSHA_"))


def test_the_rendered_settings_are_what_it_reads(reference):
    """lvsha-metrics reads the engine, the peer (heartbeat's), the floating addresses and
    whether state sync is on from metrics.env, rendered from the model."""
    settings = _settings(reference)
    assert settings == {"LVSHA_ENGINE": "heartbeat", "LVSHA_PEER": reference.peer(reference.master).name,
                        "LVSHA_FLOATING_IPS": " ".join(render.floating_ips_arguments(reference)),
                        "LVSHA_STATE_SYNC": "on"}
    unsynced = replace(reference, engine="keepalived", state_sync=replace(reference.state_sync, enabled=False))
    assert _settings(unsynced) == {"LVSHA_ENGINE": "keepalived", "LVSHA_STATE_SYNC": "off",
                                   "LVSHA_FLOATING_IPS": " ".join(render.floating_ips_arguments(reference))}


def test_its_default_paths_are_the_rendered_ones():
    """The paths it reads by default are where the deploy and the engine's helpers write."""
    text = Path(SCRIPT).read_text()
    for variable, path in (("LVSHA_ENV_FILE", render.METRICS_ENV), ("LVSHA_TEXTFILE_DIR", render.TEXTFILE_DIR),
                           ("LVSHA_CONNTRACKD_CONFIG", render.CONNTRACKD_CONF),
                           ("LVSHA_KEEPALIVED_CONF", render.KEEPALIVED_CONF),
                           ("LVSHA_KEEPALIVED_APPLIED", render.KEEPALIVED_APPLIED),
                           ("LVSHA_VRRP_STATE", render.KEEPALIVED_VRRP_STATE), ("LVSHA_APPLIED", render.APPLIED_SCRIPT),
                           ("LVSHA_DRAIN", render.DRAIN_SCRIPT)):
        assert f"${{{variable}:-{path}}}" in text, variable


def test_an_ipvs_that_answers_with_an_error_is_an_empty_table_not_silence(reference, balancer1):
    """Every real server then failed its check (an alert can fire), where a table not read in
    time leaves them out (and is counted)."""
    balancer1.answer("ipvsadm -Ln", "Can't initialize ipvs: Protocol not available\n"
                     "Are you sure that IP Virtual Server is built in the kernel or as module?", 2)
    balancer1.answer("lvsha-drain list", "", 1)
    assert balancer1.run().returncode == 0
    samples = balancer1.samples()
    for vs in reference.virtual_servers():
        assert value(samples, "lvsha_virtual_service_loaded", virtual=vs.address, address=str(vs.vip)) == 0
        assert value(samples, "lvsha_virtual_service_real_servers", virtual=vs.address, address=str(vs.vip),
                     state="failed_check") == len(vs.reals)
    balancer1.hang("ipvsadm -Ln")
    result = balancer1.run(timeout=1)
    assert result.returncode == 0 and "`ipvsadm -Ln` did not answer in 1 s" in result.stderr
    samples = balancer1.samples()
    assert not [name for name, _ in samples if name.startswith(("lvsha_real_server", "lvsha_virtual_service"))]
    assert value(samples, "lvsha_metrics_failed_commands") == 1


def test_nothing_recorded_by_lvsha_applied_is_drift(balancer1):
    balancer1.answer("lvsha-applied show", "", 1)
    assert balancer1.run().returncode == 0
    samples = balancer1.samples()
    assert {labels: v for (name, labels), v in samples.items() if name == "lvsha_config_applied"} == {
        frozenset({"component": c}.items()): 0 for c in ("firewall", "firewall6", "heartbeat", "ldirectord", "conntrackd")}


# ---- engine "keepalived" ------------------------------------------------------------------

VRRP_STATES = ("MASTER", "BACKUP", "FAULT", "STOP", "unknown")


def vrrp_state(samples) -> str:
    """The one state lvsha_vrrp_state says (each state has its sample)."""
    found = {dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "lvsha_vrrp_state"}
    assert set(found) == set(VRRP_STATES) and sorted(found.values()) == [0, 0, 0, 0, 1], found
    return next(state for state, v in found.items() if v == 1)


def test_keepalived_the_drained_pair_as_the_metrics_say_it(reference, keepalived1):
    """keepalived's view instead of heartbeat's; the real servers read from keepalived.conf as
    from ldirectord.cf; keepalived's record of its file instead of heartbeat's and ldirectord's."""
    result = keepalived1.run()
    assert result.returncode == 0, result.stderr
    samples = keepalived1.samples()
    assert value(samples, "lvsha_keepalived_running") == 1
    assert vrrp_state(samples) == "MASTER"
    assert not [name for name, _ in samples if name.startswith("lvsha_heartbeat")]
    assert "cl_status" not in (keepalived1.fake / "calls").read_text()
    for ip in reference.floating_ips():
        assert value(samples, "lvsha_floating_address_held", address=str(ip.address), interface=ip.interface) == 1
    for vs in reference.virtual_servers():
        assert value(samples, "lvsha_virtual_service_loaded", virtual=vs.address, address=str(vs.vip)) == 1
        for host, ip in vs.reals:
            want = "drained" if host.name == "hostB" else "in_rotation"
            assert value(samples, "lvsha_real_server_state", virtual=vs.address, real=vs.real_address(ip),
                         state=want) == 1, (vs.address, ip)
        counts = {state: value(samples, "lvsha_virtual_service_real_servers", virtual=vs.address, address=str(vs.vip),
                               state=state) for state in ("in_rotation", "failed_check", "drained")}
        assert counts == {"in_rotation": len(vs.reals) - 1, "failed_check": 0, "drained": 1}
    assert {dict(labels)["component"]: v for (name, labels), v in samples.items() if name == "lvsha_config_applied"} == {
        "firewall": 1, "firewall6": 1, "keepalived": 1, "conntrackd": 1}
    assert value(samples, "lvsha_state_sync_up") == 1
    assert value(samples, "lvsha_metrics_failed_commands") == 0


@pytest.mark.parametrize("state", ["BACKUP", "FAULT", "STOP"])
def test_keepalived_each_vrrp_state_as_its_notify_wrote_it(keepalived1, state):
    keepalived1.vrrp(state)
    assert keepalived1.run().returncode == 0
    assert vrrp_state(keepalived1.samples()) == state


def test_keepalived_a_state_never_written_or_not_a_state_is_unknown(keepalived1):
    keepalived1.vrrp(None)  # keepalived never transitioned since boot
    assert keepalived1.run().returncode == 0
    assert vrrp_state(keepalived1.samples()) == "unknown"
    keepalived1.vrrp("SLEEPING")
    assert keepalived1.run().returncode == 0
    assert vrrp_state(keepalived1.samples()) == "unknown"


def test_keepalived_stopped_only_its_clean_stop_is_believed(keepalived1):
    """A killed keepalived leaves its last state (MASTER) in the file: unknown once it is known
    stopped; a clean stop wrote STOP."""
    keepalived1.answer("systemctl is-active keepalived.service", "inactive", 3)
    result = keepalived1.run()
    assert result.returncode == 0 and result.stderr == ""  # an answer, not a failure
    samples = keepalived1.samples()
    assert value(samples, "lvsha_keepalived_running") == 0
    assert vrrp_state(samples) == "unknown"
    keepalived1.vrrp("STOP")
    assert keepalived1.run().returncode == 0
    assert vrrp_state(keepalived1.samples()) == "STOP"
    # systemctl not answering: whether it runs is unknown (left out), the file is read
    keepalived1.hang("systemctl is-active keepalived.service")
    keepalived1.vrrp("BACKUP")
    result = keepalived1.run(timeout=1)
    assert "`systemctl is-active keepalived.service` did not answer in 1 s" in result.stderr
    samples = keepalived1.samples()
    assert value(samples, "lvsha_keepalived_running") is None
    assert vrrp_state(samples) == "BACKUP"
    assert value(samples, "lvsha_metrics_failed_commands") == 1


def test_keepalived_running_another_file_is_drift(keepalived1):
    (keepalived1.root / "keepalived" / "keepalived.conf").write_text("edited by hand\n")  # not reloaded since
    assert keepalived1.run().returncode == 0
    assert value(keepalived1.samples(), "lvsha_config_applied", component="keepalived") == 0
    (keepalived1.root / "keepalived" / "keepalived.conf").write_text(keepalived1.files[render.KEEPALIVED_CONF].content)
    assert keepalived1.run().returncode == 0
    assert value(keepalived1.samples(), "lvsha_config_applied", component="keepalived") == 1
    (keepalived1.root / "run" / "keepalived.applied").unlink()  # never recorded (its drop-in not in place)
    assert keepalived1.run().returncode == 0
    assert value(keepalived1.samples(), "lvsha_config_applied", component="keepalived") == 0


def test_keepalived_the_last_takeover_is_the_last_transition_to_master(keepalived1):
    """At the time keepalived's notify wrote MASTER: even a flap between two runs (the node
    holding every address at both) is a takeover."""
    keepalived1.vrrp("BACKUP", when=1_600_000_000)
    assert keepalived1.run().returncode == 0
    assert "lvsha_last_takeover_timestamp_seconds" not in keepalived1.text
    keepalived1.vrrp("MASTER", when=1_700_000_000)
    assert keepalived1.run().returncode == 0
    assert value(keepalived1.samples(), "lvsha_last_takeover_timestamp_seconds") == 1_700_000_000
    assert keepalived1.run().returncode == 0  # still MASTER: the same takeover
    assert value(keepalived1.samples(), "lvsha_last_takeover_timestamp_seconds") == 1_700_000_000
    keepalived1.vrrp("MASTER", when=1_800_000_000)  # BACKUP and MASTER again since the last run
    assert keepalived1.run().returncode == 0
    assert value(keepalived1.samples(), "lvsha_last_takeover_timestamp_seconds") == 1_800_000_000
    keepalived1.vrrp("BACKUP", when=1_900_000_000)
    assert keepalived1.run().returncode == 0
    assert value(keepalived1.samples(), "lvsha_last_takeover_timestamp_seconds") == 1_800_000_000
    assert (keepalived1.root / "lib" / "last-takeover").read_text().strip() == "1800000000"


def test_no_drain_program_is_none_drained_not_a_failure(keepalived1):
    (keepalived1.bin / "lvsha-drain").unlink()
    result = keepalived1.run()
    assert result.returncode == 0 and result.stderr == ""
    samples = keepalived1.samples()
    assert value(samples, "lvsha_metrics_failed_commands") == 0
    assert not [v for (name, labels), v in samples.items()
                if name == "lvsha_real_server_state" and dict(labels)["state"] == "drained" and v]


def test_keepalived_a_service_on_one_port_names_its_reals_with_the_port(keepalived1):
    """keepalived.conf's `virtual_server VIP PORT` / `real_server IP PORT` as ipvsadm names
    them (VIP:PORT, IP:PORT); lvsha-drain names such a real IP:PORT (ldirectord's `real=`)."""
    (keepalived1.root / "keepalived" / "keepalived.conf").write_text(
        "virtual_server 10.0.0.9 80 {\n\tlb_kind NAT\n\tsorry_server 192.168.0.99 80\n"
        "\treal_server 192.168.0.1 80 {\n\t\tweight 1\n\t}\n\treal_server 192.168.0.4 80 {\n\t\tweight 1\n\t}\n}\n")
    keepalived1.answer("ipvsadm -Ln", "IP Virtual Server version 1.2.1 (size=4096)\n"
                       "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
                       "TCP  10.0.0.9:80 wlc\n  -> 192.168.0.1:80 Masq 1 0 0\n  -> 192.168.0.4:80 Masq 0 3 0\n")
    keepalived1.answer("lvsha-drain list", "10.0.0.9:80 192.168.0.4:80")
    assert keepalived1.run().returncode == 0
    samples = keepalived1.samples()
    assert value(samples, "lvsha_virtual_service_loaded", virtual="10.0.0.9:80", address="10.0.0.9") == 1
    assert value(samples, "lvsha_real_server_state", virtual="10.0.0.9:80", real="192.168.0.1:80", state="in_rotation") == 1
    assert value(samples, "lvsha_real_server_state", virtual="10.0.0.9:80", real="192.168.0.4:80", state="drained") == 1
    assert {dict(labels)["real"] for (name, labels) in samples if name == "lvsha_real_server_weight"} == {
        "192.168.0.1:80", "192.168.0.4:80"}  # the sorry server is not a real server of the model
