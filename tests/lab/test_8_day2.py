"""Day-2 commands against the live pair, through the real `lvsha` CLI and the lab's
inventory: `status` agrees with the tools, `drain` keeps established connections
and sends new ones elsewhere (also after a failover), `undrain` brings the host
back, and `failover` hands everything over and back while a client polling every
200 ms always gets an answer within 5 s."""

import json
import re
import time

import pytest

from lvsha.lab import cache_dir, wait_until
from lvsha.lab import lab as lab_api
from lvsha.lab.run import deploy, record
from tests.lab.sessions import fresh_client_address


@pytest.fixture(autouse=True)
def _day2_built(lab):
    """Every test here drives lvsha's day-2 commands: skipped on an engine they do not drive yet."""
    lab.require_day2()


def status(lab, expect_exit: int | None = 0, raw: str | None = None) -> dict:
    """`lvsha status --json` as parsed JSON (its raw tool outputs kept under the lab cache)."""
    args = ["--json"] + (["--save-raw", str(cache_dir() / "status-raw" / f"{lab.cluster.name}-{raw}")] if raw else [])
    result = lab.lvsha("status", *args, timeout=120)
    if expect_exit is not None:
        assert result.returncode == expect_exit, f"exit {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr}"
    return json.loads(result.stdout)


def assert_status_agrees_with_the_tools(lab, shown: dict) -> None:
    """Every floating address's holders and every real server's weight as ip/ipvsadm show them."""
    for address in shown["addresses"]:
        ip = address["address"].split("/")[0]
        assert sorted(address["holders"]) == sorted(lab.holder_of(ip)), address
    holder = shown["holder"]
    table = lab.ipvs_reals(holder)
    for site in shown["sites"]:
        in_ipvs = table.get(site["virtual"], set())
        for real in site["reals"]:
            assert (real["address"] in in_ipvs) == (real["weight"] is not None), real
            if real["state"] == "in rotation":
                assert real["address"] in in_ipvs and real["weight"] > 0, real


@pytest.mark.every_model
def test_status_agrees_with_ip_and_ipvsadm_on_the_settled_pair(lab):
    shown = status(lab, raw="settled")
    assert shown["holder"] == lab.carrier() and shown["problems"] == []
    assert_status_agrees_with_the_tools(lab, shown)
    for balancer in shown["balancers"]:
        assert balancer["engine"] == lab.engine and balancer["firewall"] == "loaded as rendered", balancer
        if lab.engine == "keepalived":
            # the holder is VRRP MASTER, its peer BACKUP (what lvsha-keepalived's notify recorded)
            assert balancer["keepalived"] == "active", balancer
            assert balancer["vrrp"] == ("MASTER" if balancer["name"] == shown["holder"] else "BACKUP"), balancer
            assert balancer["failover"] == "none", balancer
            continue
        assert balancer["heartbeat"] == "running" and balancer["peer_seen_as"] == "active", balancer
        assert balancer["ldirectord"] == "active", balancer
        assert balancer["links"] and set(balancer["links"].values()) == {"up"}, balancer
    human = lab.lvsha("status")
    assert human.returncode == 0 and "healthy" in human.stdout.splitlines()[0], human.stdout


def _new_connections_reach(lab, sources, host_name) -> list[str]:
    """(site, source) pairs whose new connection was served by `host_name`."""
    reached = []
    for site in lab.cluster.sites:
        for source in sources:
            r = lab.client("curl", "-s", "--max-time", "5", "--interface", source, f"http://{site.vip}/", timeout=15)
            assert site.name in r.stdout, f"{source} -> {site.vip}: {r.stdout!r} {r.stderr}"
            if r.stdout.strip().endswith(f"served by {host_name}"):
                reached.append(f"{site.name} from {source}")
    return reached


@pytest.fixture
def drained_hosts(lab):
    """The web hosts a test drains (it appends each name): undrained at its end whatever
    failed, so that no later test finds a host out of rotation."""
    names: list[str] = []
    yield names
    for name in names:
        lab.lvsha("undrain", name)


def test_drain_keeps_established_connections_sends_new_ones_elsewhere_and_survives_a_failover(
        lab, client_sources, drained_hosts):
    site = lab.cluster.sites[0]
    held_from, others = client_sources[0], client_sources[1:]
    holder = lab.client_program("hold", site.vip, 60, held_from)
    try:
        first = holder.stdout.readline().strip()
        assert first.startswith("HOLD "), f"{first} {holder.stdout.read()}"
        victim = first.split()[1]  # the web host serving the held connection is the one drained
        drained_hosts.append(victim)
        drained = lab.lvsha("drain", victim)
        assert drained.returncode == 0, drained.stderr
        # the held connection keeps being answered by the drained host, new ones never are
        assert _new_connections_reach(lab, others, victim) == []
        waited = lab.lvsha("drain", victim, "--wait", "--timeout", "6")
        assert waited.returncode == 3 and "active connection" in waited.stdout, (waited.stdout, waited.stderr)
        shown = status(lab, raw="drained")
        states = {(s["name"], r["host"]): r["state"] for s in shown["sites"] for r in s["reals"]}
        assert {state for (_, host), state in states.items() if host == victim} == {"drained"}
        assert shown["problems"] == []  # a drain is the operator's choice, not a fault
    finally:
        out, _ = holder.communicate(timeout=120)
    assert holder.returncode == 0, f"the established connection broke after the drain:\n{out}"
    answers = [line.split()[1] for line in out.splitlines() if line.startswith("OK ")]
    assert len(answers) >= 60 and set(answers) == {victim}, out[-2000:]
    done = lab.lvsha("drain", victim, "--wait", "--timeout", "60")  # the held connection has closed
    assert done.returncode == 0 and "no active connection left" in done.stdout, (done.stdout, done.stderr)

    # the drain holds on the other balancer after a takeover, and after the engine's restart
    active = lab.carrier()
    lab.ssh(active, f"systemctl stop {lab.engine_service}")
    try:
        lab.wait_settled(lab.other(active))
        assert _new_connections_reach(lab, client_sources, victim) == []
    finally:
        lab.ssh(active, f"systemctl start {lab.engine_service}")
    lab.wait_settled(lab.home_after_return(lab.other(active)))
    assert _new_connections_reach(lab, client_sources, victim) == []

    undrained = lab.lvsha("undrain", victim)
    assert undrained.returncode == 0, undrained.stderr
    # New clients reach it again. Clients that came during the drain keep the real server their
    # persistence template names (the site's `persistent` seconds), on either engine: ask from
    # addresses no test has used.
    net = lab.cluster.external_net
    fresh = [fresh_client_address(lab, index) for index in range(8, 11)]
    for ip in fresh:
        lab.client("ip", "addr", "add", f"{ip}/{net.prefixlen}", "dev", "eth0")
    try:
        started = time.monotonic()
        wait_until(lambda: _new_connections_reach(lab, fresh, victim), 120, interval=2,
                   what=f"new connections from new clients to reach {victim} after the undrain")
        record("undrain: back in rotation", time.monotonic() - started)
    finally:
        for ip in fresh:
            lab.client("ip", "addr", "del", f"{ip}/{net.prefixlen}", "dev", "eth0")
    assert status(lab)["problems"] == []


def _poll_during(lab, action) -> tuple[float, int, str]:
    """Run `action()` while a client polls every VIP every 200 ms (past lab_api.POLL_VIPS_MAX
    sites, that many spread over them: the poller's own load is bounded): (longest wait,
    failed, output)."""
    poller = lab.client_program("poll", 600, *lab_api.poll_vips(site.vip for site in lab.cluster.sites))
    try:
        time.sleep(2)
        action()
        time.sleep(2)
    finally:
        poller.terminate()
        out, _ = poller.communicate(timeout=30)
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith(("LONGEST", "FAILED", "ANSWERED")))
    assert int(lines["ANSWERED"]) > 0, out
    return float(lines["LONGEST"]), int(lines["FAILED"]), out


# `lvsha failover`'s phases (its last progress line, "took N s in all: PHASE N s, ..."),
# named for the report without the model's balancer names.
FAILOVER_PHASES = {"loading": "connecting", "reading": "reading both balancers", "the request": "the request",
                   "the handover": "the handover", "clearing": "clearing the request"}


def _failover_phases(stderr: str) -> dict[str, float]:
    """{phase: seconds} from `lvsha failover`'s summary line; every phase it names is one of
    FAILOVER_PHASES (a phase it does not know fails the test: the report would lose it)."""
    (summary,) = [line.strip() for line in stderr.splitlines() if line.strip().startswith("took ")][-1:] or [""]
    match = re.match(r"took [\d.]+ s in all: (.*)$", summary)
    assert match, f"no summary line in lvsha failover's output:\n{stderr[-2000:]}"
    found = {}
    for phase, seconds in re.findall(r"(.+?) (\d+\.\d) s(?:, |$)", match[1]):
        (key,) = [short for start, short in FAILOVER_PHASES.items() if phase.startswith(start)] or [phase]
        assert key in FAILOVER_PHASES.values(), f"a phase of lvsha failover the lab does not know: {phase}"
        found[key] = float(seconds)
    return found


def test_failover_hands_everything_over_and_back_with_every_answer_within_5_s(lab):
    active = lab.carrier()
    standby = lab.other(active)
    timings, phases = {}, {}

    def hand_over_and_back():
        for target in (standby, active):
            started = time.monotonic()
            result = lab.lvsha("failover", "--to", target, timeout=300)
            timings[target] = time.monotonic() - started
            assert result.returncode == 0, f"failover to {target}: {result.stdout}\n{result.stderr}"
            phases[target] = _failover_phases(result.stderr)
            assert lab.carrier() == target and lab.carries_none(lab.other(target))

    longest, failed, out = _poll_during(lab, hand_over_and_back)
    record("failover command: to the peer", timings[standby])
    record("failover command: back", timings[active])
    for target, way in ((standby, "to the peer"), (active, "back")):  # where the command's time went
        for phase, seconds in phases[target].items():
            record(f"failover command {way}: {phase}", seconds)
    record("failover command: longest wait of a client polling every 200 ms", longest)
    record("failover command: polls unanswered (each 1 s at most), both ways", failed)
    assert longest < 5, out[-3000:]  # polls fail while nobody holds a VIP; the gap is what counts
    assert lab.lvsha("failover", "--to", active).returncode == 0  # already there: nothing to do


def test_failover_is_refused_when_the_peer_is_not_healthy(lab):
    active = lab.carrier()
    standby = lab.other(active)
    service = lab.engine_service
    # What each engine's status says of a stopped engine on the standby (lvsha/live.py).
    refusal, problem = {"heartbeat": ("heartbeat is stopped", f"{standby}: heartbeat is not running"),
                        "keepalived": (f"keepalived is inactive on {standby}", f"{standby}: keepalived is inactive")}[lab.engine]
    lab.ssh(standby, f"systemctl stop {service}")
    try:
        refused = lab.lvsha("failover")
        assert refused.returncode != 0 and f"refusing to hand over to {standby}" in refused.stderr, refused.stderr
        assert refusal in refused.stderr
        shown = status(lab, expect_exit=1, raw=f"standby-{service}-stopped")
        assert shown["holder"] == active and any(problem in p for p in shown["problems"]), shown["problems"]
        assert lab.carrier() == active
    finally:
        lab.ssh(standby, f"systemctl start {service}")
    wait_until(lambda: status(lab, expect_exit=None)["problems"] == [], 180, interval=5,
               what="the pair to be healthy again")


@pytest.mark.every_model
def test_a_standby_with_an_empty_ipvs_table_is_shouted_never_handed_the_group_and_repaired(lab):
    """The fresh-machine run's outage: ldirectord active on the standby over an empty
    IPVS table. status names it, failover refuses to hand the group over, and the
    next deploy treats it as drift and loads the table again. (On keepalived the
    deploy has no such repair yet: the standby's keepalived is restarted instead.)"""
    active = lab.carrier()
    standby = lab.other(active)
    lab.ssh(standby, "ipvsadm -C")  # the engine keeps running: its table is gone
    shown = status(lab, expect_exit=1)
    lacking = ", ".join(vs.address for vs in lab.cluster.virtual_servers())
    assert any(p.startswith(f"{standby}: IPVS lacks the virtual service(s) {lacking}") for p in shown["problems"]), \
        shown["problems"]
    refused = lab.lvsha("failover", "--to", standby)
    assert refused.returncode != 0 and f"the IPVS table of {standby} is missing {lacking}" in refused.stderr, \
        refused.stderr
    assert lab.carrier() == active
    if lab.engine == "keepalived":
        lab.ssh(standby, "systemctl restart keepalived")  # its checker loads the table at start
    else:
        repaired = deploy()
        assert repaired.ok, repaired.output[-4000:]
        assert f"Restart ldirectord: its IPVS table lacks {lacking}" in repaired.output
    wait_until(lambda: lab.carries_none(standby), 60, interval=2, what=f"{standby}'s IPVS to hold the model's table")
    assert lab.carrier() == active  # the repair moved no address
    wait_until(lambda: status(lab, expect_exit=None)["problems"] == [], 120, interval=5, what="the pair to be healthy")
