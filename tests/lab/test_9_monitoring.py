"""Monitoring against the live pair, when the lab's model has it on (Cluster.monitoring;
skipped otherwise): node_exporter answers the lab client (one of the monitoring sources)
on each balancer, with its ipvs collector and lvsha's metrics; its port stays closed to
a web host that is not a source; and lvsha's metrics follow a takeover (`lvsha
failover`) and a drain. The engine's view is read for the model's engine (heartbeat:
the peer and each link; keepalived: keepalived running and the VRRP state). Every
name, address and count comes from the model."""

from __future__ import annotations

import time

import pytest
from netaddr import IPAddress, IPNetwork

from lvsha.lab import wait_until
from lvsha.lab.run import record

SCRAPE_TIMEOUT = 10  # s: one scrape of node_exporter
FOLLOW_TIMEOUT = 180  # s: the metrics follow a change (a few runs of lvsha-metrics on a slow guest)


@pytest.fixture(scope="module")
def monitoring(lab):
    mon = lab.cluster.monitoring
    if not mon.enabled:
        pytest.skip("the lab's model has monitoring off (Cluster.monitoring)")
    client = IPNetwork(lab.state["client"]["address"]).ip
    if not any(client in IPNetwork(source) for source in mon.sources):
        pytest.skip(f"the lab client {client} is not among monitoring.sources {list(mon.sources)}")
    return mon


def _address(lab, balancer) -> str:
    """The balancer's address the client scrapes: the one the firewall accepts it on (external)."""
    return lab.cluster.balancer(balancer).external_ip


def scrape(lab, monitoring, balancer: str) -> dict[tuple[str, frozenset], float]:
    """{(name, labels): value} of every sample node_exporter serves on `balancer` to the client."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{_address(lab, balancer)}:{monitoring.port}/metrics"
    result = lab.client("curl", "-s", "--fail", "--max-time", str(SCRAPE_TIMEOUT), url, timeout=SCRAPE_TIMEOUT + 10)
    assert result.returncode == 0, f"{url}: curl exit {result.returncode} {result.stderr}"
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(result.stdout) for s in family.samples}


def complete_scrape(lab, monitoring, balancer: str) -> dict[tuple[str, frozenset], float]:
    """A scrape of `balancer` from a run of lvsha-metrics whose every command answered
    (lvsha_metrics_failed_commands 0): a command that does not answer in its bound leaves
    its metrics out of that run, as designed, and on the lab's busy TCG guests one does
    now and then (`systemctl is-active` over 3 s)."""
    def complete():
        samples = scrape(lab, monitoring, balancer)
        return samples if value(samples, "lvsha_metrics_failed_commands") == 0 else None

    return wait_until(complete, FOLLOW_TIMEOUT, interval=monitoring.interval,
                      what=f"a run of lvsha-metrics on {balancer} with every command answered")


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def vrrp_state(samples) -> str | None:
    """The state lvsha_vrrp_state says is this node's (keepalived), or None."""
    states = [dict(labels)["state"] for (name, labels), v in samples.items() if name == "lvsha_vrrp_state" and v == 1]
    return states[0] if len(states) == 1 else None


def assert_engine_view(lab, samples, balancer: str, holder: str) -> None:
    """The engine's view on `balancer` of a settled pair whose addresses `holder` carries:
    heartbeat runs and sees its peer active on every link; keepalived runs, MASTER on the
    holder and BACKUP on the other."""
    if lab.engine == "keepalived":
        assert value(samples, "lvsha_keepalived_running") == 1, balancer
        assert vrrp_state(samples) == ("MASTER" if balancer == holder else "BACKUP"), balancer
        assert not [name for name, _ in samples if name.startswith("lvsha_heartbeat")], balancer
        return
    assert value(samples, "lvsha_heartbeat_running") == 1, balancer
    assert value(samples, "lvsha_heartbeat_peer_active", peer=lab.other(balancer)) == 1, balancer
    links = {dict(labels)["link"]: v for (name, labels), v in samples.items() if name == "lvsha_heartbeat_link_up"}
    assert links and set(links.values()) == {1}, (balancer, links)


def engine_components(lab) -> tuple[str, ...]:
    """The lvsha_config_applied components of the model's engine."""
    return ("keepalived",) if lab.engine == "keepalived" else ("heartbeat", "ldirectord")


def held_by(lab, monitoring) -> dict[str, set[str]]:
    """{balancer: the floating addresses its lvsha_floating_address_held says it holds},
    from complete runs (one whose address command missed its bound has no such metric:
    seen in the lab, read as "holds nothing" on the holder)."""
    found = {}
    for b in lab.cluster.balancers:
        samples = complete_scrape(lab, monitoring, b.name)
        found[b.name] = {str(ip.address) for ip in lab.cluster.floating_ips()
                         if value(samples, "lvsha_floating_address_held", address=str(ip.address),
                                  interface=ip.interface) == 1}
    return found


def test_node_exporter_serves_ipvs_and_lvsha_metrics_to_the_monitoring_sources(lab, monitoring):
    holder = lab.carrier()
    every = {str(ip.address) for ip in lab.cluster.floating_ips()}
    assert held_by(lab, monitoring) == {b.name: every if b.name == holder else set() for b in lab.cluster.balancers}
    for b in lab.cluster.balancers:
        samples = complete_scrape(lab, monitoring, b.name)
        # node_exporter's own ipvs collector: each real server of the model, with its weight
        backends = {dict(labels)["remote_address"] for name, labels in samples if name == "node_ipvs_backend_weight"}
        assert {str(ip) for vs in lab.cluster.virtual_servers() for _, ip in vs.reals} <= backends, b.name
        assert_engine_view(lab, samples, b.name, holder)
        for component in ("firewall", "firewall6", *engine_components(lab)) + (
                ("conntrackd",) if lab.cluster.state_sync.enabled else ()):
            assert value(samples, "lvsha_config_applied", component=component) == 1, (b.name, component)
        if lab.cluster.state_sync.enabled:
            assert value(samples, "lvsha_state_sync_up") == 1, b.name
        for vs in lab.cluster.virtual_servers():
            assert value(samples, "lvsha_virtual_service_real_servers", virtual=vs.address, address=str(vs.vip),
                         state="in_rotation") == len(vs.reals), (b.name, vs.address)
        assert value(samples, "lvsha_metrics_failed_commands") == 0, b.name
    # rewritten every interval
    first = value(scrape(lab, monitoring, holder), "lvsha_metrics_last_run_timestamp_seconds")
    assert first is not None
    wait_until(lambda: value(scrape(lab, monitoring, holder), "lvsha_metrics_last_run_timestamp_seconds") > first,
               3 * monitoring.interval + 30, interval=monitoring.interval, what="lvsha-metrics to run again")


def test_the_port_is_closed_to_a_host_that_is_not_a_source(lab, monitoring):
    host = lab.cluster.web_hosts[0]
    source = IPAddress(host.internal_ips[0])
    if any(source in IPNetwork(s) for s in monitoring.sources):
        pytest.skip(f"{host.name} ({source}) is among monitoring.sources")
    for b in lab.cluster.balancers:
        probe = (f"python3 -c \"import socket; s = socket.socket(); s.settimeout(3); "
                 f"print('open' if s.connect_ex(('{b.internal_ip}', {monitoring.port})) == 0 else 'closed')\"")
        out = lab.ssh(host.name, probe, timeout=30, check=False).stdout.strip()
        assert out == "closed", f"{host.name} -> {b.name}:{monitoring.port}: {out}"


def test_the_metrics_follow_a_takeover(lab, monitoring):
    lab.require_day2()
    active = lab.carrier()
    standby = lab.other(active)
    every = {str(ip.address) for ip in lab.cluster.floating_ips()}
    before = value(scrape(lab, monitoring, standby), "lvsha_last_takeover_timestamp_seconds")
    started = time.monotonic()
    result = lab.lvsha("failover", "--to", standby, timeout=300)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    try:
        wait_until(lambda: held_by(lab, monitoring) == {active: set(), standby: every}, FOLLOW_TIMEOUT,
                   interval=monitoring.interval, what=f"lvsha_floating_address_held to show {standby} holding everything")
        record("monitoring: metrics show the takeover", time.monotonic() - started)
        samples = scrape(lab, monitoring, standby)
        after = value(samples, "lvsha_last_takeover_timestamp_seconds")
        assert after is not None and (before is None or after > before), (before, after)
        if lab.engine == "keepalived":  # the VRRP states follow the addresses
            wait_until(lambda: [vrrp_state(scrape(lab, monitoring, b)) for b in (standby, active)] == ["MASTER", "BACKUP"],
                       FOLLOW_TIMEOUT, interval=monitoring.interval, what=f"lvsha_vrrp_state to show {standby} MASTER")
    finally:
        back = lab.lvsha("failover", "--to", active, timeout=300)
        assert back.returncode == 0, f"{back.stdout}\n{back.stderr}"
        lab.wait_settled(active)
    wait_until(lambda: held_by(lab, monitoring) == {active: every, standby: set()}, FOLLOW_TIMEOUT,
               interval=monitoring.interval, what=f"lvsha_floating_address_held to show {active} holding everything again")


def test_the_metrics_follow_a_drain(lab, monitoring):
    lab.require_day2()
    holder = lab.carrier()
    victim = lab.cluster.web_hosts[-1]
    reals = [(vs, vs.real_address(ip)) for vs in lab.cluster.virtual_servers() for host, ip in vs.reals
             if host.name == victim.name]

    def states(want: str) -> bool:
        for b in lab.cluster.balancers:  # both balancers hold the drained list
            samples = scrape(lab, monitoring, b.name)
            if not all(value(samples, "lvsha_real_server_state", virtual=vs.address, real=real, state=want) == 1
                       for vs, real in reals):
                return False
        return True

    drained = lab.lvsha("drain", victim.name)
    assert drained.returncode == 0, drained.stderr
    try:
        wait_until(lambda: states("drained"), FOLLOW_TIMEOUT, interval=monitoring.interval, what=f"{victim.name}'s real servers to show drained")
        samples = scrape(lab, monitoring, holder)
        for vs, real in reals:
            assert value(samples, "lvsha_real_server_weight", virtual=vs.address, real=real) == 0
            assert value(samples, "lvsha_virtual_service_real_servers", virtual=vs.address, address=str(vs.vip),
                         state="drained") == 1
    finally:
        undrained = lab.lvsha("undrain", victim.name)
        assert undrained.returncode == 0, undrained.stderr
    wait_until(lambda: states("in_rotation"), FOLLOW_TIMEOUT, interval=monitoring.interval, what=f"{victim.name}'s real servers back in rotation")
