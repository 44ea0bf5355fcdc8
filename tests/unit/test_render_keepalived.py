"""The keepalived rendering (engine "keepalived") of the same models: golden copies
(tests/golden-keepalived, regenerate with --update-golden), the properties each
rendering keeps, and keepalived's own check (`keepalived -t`) of every file."""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from lvsha import render, validate
from lvsha.model import VRRP_PROTOCOL, VRRP_ROUTER_ID, Cluster, HealthCheck

GOLDEN = Path(__file__).resolve().parent.parent / "golden-keepalived"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["reference", "edge"])
def model(request):
    """(name, each example model on keepalived)."""
    return request.param, replace(request.getfixturevalue(request.param), engine="keepalived")


def _files(cluster, host):
    return {f.path: f for f in render.all_files(cluster)[host]}


def _conf(cluster, balancer):
    return _files(cluster, balancer.name)[render.KEEPALIVED_CONF].content


def test_golden_files(model, request, tmp_path):
    """Every balancer's files equal their reviewed golden copy; the web hosts' are the
    heartbeat rendering's (the engine is the balancers' business)."""
    name, cluster = model
    written = render.write_tree(cluster, tmp_path)
    balancers = {b.name for b in cluster.balancers}
    produced = sorted(p.relative_to(tmp_path) for p in written if p.relative_to(tmp_path).parts[0] in balancers)
    golden = GOLDEN / name
    if request.config.getoption("--update-golden"):
        shutil.rmtree(golden, ignore_errors=True)
        for rel in produced:
            (golden / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / rel, golden / rel)
    expected = sorted(p.relative_to(golden) for p in golden.rglob("*") if p.is_file())
    assert produced == expected
    for rel in produced:
        assert (tmp_path / rel).read_text() == (golden / rel).read_text(), f"{rel} differs from its golden copy"
    on_heartbeat = render.all_files(replace(cluster, engine="heartbeat"))
    for host in cluster.web_hosts:
        assert render.all_files(cluster)[host.name] == on_heartbeat[host.name]


def test_a_model_naming_no_engine_is_on_heartbeat(reference):
    """engine defaults to heartbeat: the reference names none, and gets heartbeat's files
    (byte for byte: its golden copy, tests/golden, test_render.py), none of keepalived's."""
    assert "engine" not in (ROOT / "inventory.py").read_text()
    assert next(f for f in fields(Cluster) if f.name == "engine").default == "heartbeat"
    for balancer in reference.balancers:
        files = set(_files(reference, balancer.name))
        assert {render.HA_CF, render.HARESOURCES, render.LDIRECTORD_CF} <= files
        assert not files & {render.KEEPALIVED_CONF, render.KEEPALIVED_DROPIN, render.KEEPALIVED_PROGRAM}


def test_each_engine_gets_its_own_files_only(model):
    _, cluster = model
    heartbeat = replace(cluster, engine="heartbeat")
    for balancer in cluster.balancers:
        on_keepalived, on_heartbeat = set(_files(cluster, balancer.name)), set(_files(heartbeat, balancer.name))
        # lvsha-drain on both: the day-2 drain is the same command on either engine
        assert {render.KEEPALIVED_CONF, render.KEEPALIVED_DROPIN, render.KEEPALIVED_PROGRAM,
                render.DRAIN_SCRIPT} <= on_keepalived
        assert not on_keepalived & {render.HA_CF, render.HARESOURCES, render.AUTHKEYS, render.LDIRECTORD_CF,
                                    render.HEARTBEAT_DROPIN, render.LDIRECTORD_DROPIN, render.HEARTBEAT_ENV,
                                    render.IPVS_READY_SCRIPT}
        assert not on_heartbeat & {render.KEEPALIVED_CONF, render.KEEPALIVED_DROPIN, render.KEEPALIVED_PROGRAM}
        # the secret is heartbeat's: nothing of keepalived's carries it
        from tests.conftest import TEST_SECRET
        assert not any(TEST_SECRET in f.content for f in _files(cluster, balancer.name).values())


def _block(conf: str, opening: str) -> str:
    """The text of the block opened by the line `opening {`, up to its closing brace."""
    start = conf.index(opening + " {")
    depth, i = 0, start
    while True:
        if conf[i] == "{":
            depth += 1
        elif conf[i] == "}":
            depth -= 1
            if depth == 0:
                return conf[start:i + 1]
        i += 1


def _words(block: str) -> list[list[str]]:
    return [line.split("#")[0].split() for line in block.splitlines() if line.split("#")[0].strip()]


def test_one_vrrp_instance_carries_every_floating_address_on_its_interface(model):
    _, cluster = model
    for balancer in cluster.balancers:
        conf = _conf(cluster, balancer)
        assert conf.count("vrrp_instance ") == 1 and "vrrp_strict" not in conf.replace("Never vrrp_strict", "")
        addresses = _words(_block(_block(conf, "vrrp_instance lvsha"), "\tvirtual_ipaddress"))[1:-1]
        assert addresses == [[ip.cidr, "dev", ip.interface] for ip in cluster.floating_ips()]


def test_vrrp_is_unicast_to_the_peer_on_the_first_link_with_priorities_from_the_balancer_order(model):
    _, cluster = model
    hb = cluster.heartbeat
    priorities = []
    for balancer in cluster.balancers:
        words = _words(_block(_conf(cluster, balancer), "vrrp_instance lvsha"))
        interface, address, peer = cluster.vrrp_link(balancer)
        assert ["interface", interface] in words and ["unicast_src_ip", str(address)] in words
        assert [str(peer)] == words[words.index(["unicast_peer", "{"]) + 1] and ["check_unicast_src"] in words
        assert ["state", "BACKUP"] in words and ["virtual_router_id", str(VRRP_ROUTER_ID)] in words
        assert ["advert_int", str(hb.keepalive)] in words
        assert ["down_timer_adverts", str(hb.deadtime // hb.keepalive)] in words
        priorities.append(int(next(w[1] for w in words if w[0] == "priority")))
        if hb.auto_failback:
            assert ["nopreempt"] not in words
            delay = [w for w in words if w[0] == "preempt_delay"]
            # keepalived delays any preemption by it: the master's return waits for its sync
            # daemons, the backup takes over from a master whose priority dropped at once
            returning = cluster.state_sync.enabled and balancer.name == cluster.master.name
            assert delay == ([["preempt_delay", str(render.sync_listen(cluster))]] if returning else [])
        else:
            assert ["nopreempt"] in words
        # every heartbeat link is watched: VRRP's own interface by keepalived, the others tracked
        links = {i for i, _ in cluster.heartbeat_peers(balancer)}
        tracked = set()
        if ["track_interface", "{"] in words:
            at = words.index(["track_interface", "{"]) + 1
            tracked = {w[0] for w in words[at:words.index(["}"], at)]}
        assert tracked | {interface} == links and interface not in tracked
    assert priorities[0] > priorities[1]


def test_the_ping_nodes_make_the_node_that_reaches_less_yield(reference, edge):
    cluster = replace(reference, engine="keepalived")
    master, backup = (cluster.vrrp_priority(b) for b in cluster.balancers)
    checks = render.keepalived_track_scripts(cluster)
    assert [c.script.split()[-1] for c in checks[:-1]] == [str(n) for n in cluster.external_ping_nodes()]
    assert checks[-1].script.split()[3:] == [str(a) for a in cluster.internal_ping_group()]
    for check in checks:
        assert master + check.weight < backup  # one check failing on the master moves the group
        assert check.script.split()[:3] == [render.KEEPALIVED_PROGRAM, "reach", str(render.REACH_WAIT)]
        conf = _conf(cluster, cluster.master)
        script = _words(_block(conf, f"vrrp_script {check.name}"))
        assert f'script "{check.script}"' in _block(conf, f"vrrp_script {check.name}")
        # run every keepalive; a late run is waited for (the timeout is for a hung one, at
        # least deadtime), and one failed run moves nothing (fall, rise)
        (interval,) = [int(w[1]) for w in script if w[0] == "interval"]
        (timeout,) = [int(w[1]) for w in script if w[0] == "timeout"]
        (fall,) = [int(w[1]) for w in script if w[0] == "fall"]
        (rise,) = [int(w[1]) for w in script if w[0] == "rise"]
        assert interval == cluster.heartbeat.keepalive
        assert timeout >= max(render.TRACK_SCRIPT_TIMEOUT, cluster.heartbeat.deadtime) > render.REACH_WAIT + 1
        assert fall == rise == max(2, cluster.heartbeat.deadping // interval) >= 2
        assert f"\t\t{check.name}\n" in _block(conf, "\ttrack_script")
    # at advert_int 1 the checks cannot run every advertisement (a ping waits REACH_WAIT):
    # every REACH_WAIT + 1 s; deadping (1 s at deadtime 3) allows no second miss, but one
    # miss never moves the group (the lab saw the master's priority drop every half minute
    # on late runs at fall 1)
    fast = replace(cluster, heartbeat=replace(cluster.heartbeat, keepalive=1, warntime=2, deadtime=3, initdead=12))
    assert validate.problems(fast) == []
    for check in render.keepalived_track_scripts(fast):
        script = _words(_block(_conf(fast, fast.master), f"vrrp_script {check.name}"))
        (interval,) = [int(w[1]) for w in script if w[0] == "interval"]
        (timeout,) = [int(w[1]) for w in script if w[0] == "timeout"]
        (fall,) = [int(w[1]) for w in script if w[0] == "fall"]
        assert interval == render.REACH_WAIT + 1 and timeout == render.TRACK_SCRIPT_TIMEOUT
        assert fall == 2
    # a model without an external ping node gets no ping checks (as it gets no ipfail on heartbeat)
    assert render.keepalived_track_scripts(replace(edge, engine="keepalived")) == []
    assert "\ttrack_script {" not in _conf(replace(edge, engine="keepalived"), edge.balancers[0])


def _virtual_servers(conf: str) -> dict[str, str]:
    return {m.group(1): _block(conf, f"virtual_server {m.group(1)}")
            for m in re.finditer(r"^virtual_server (\S+ \d+) \{", conf, re.M)}


def test_a_virtual_server_per_site_with_ldirectords_checks(model):
    _, cluster = model
    servers = _virtual_servers(_conf(cluster, cluster.master))
    assert list(servers) == [f"{vs.vip} {vs.port}" for vs in cluster.virtual_servers()]
    for vs in cluster.virtual_servers():
        site, health = vs.site, vs.site.health
        block = servers[f"{vs.vip} {vs.port}"]
        words = _words(block)
        assert ["lb_algo", site.scheduler] in words and ["lb_kind", "NAT"] in words and ["protocol", "TCP"] in words
        assert ["delay_loop", str(cluster.ldirectord.checkinterval)] in words
        assert (["persistence_timeout", str(site.persistent)] in words) == bool(site.persistent)
        assert (["inhibit_on_failure"] in words) == site.quiescent
        assert [w[1:3] for w in words if w[0] == "real_server"] == [[str(ip), str(vs.port)] for _, ip in vs.reals]
        for _, ip in vs.reals:
            real = _words(_block(block, f"real_server {ip} {vs.port}"))
            assert ["HTTP_GET", "{"] in real and ["path", "/" + health.request.lstrip("/")] in real
            assert ["status_code", "200-299"] in real and ["regex", f'"{site.receive}"'] in real
            assert ["virtualhost", site.virtualhost] in real
            assert ["connect_timeout", str(health.negotiatetimeout)] in real
            assert (["connect_port", str(health.checkport)] in real) == bool(health.checkport)


def test_other_checks_fallback_and_quiescence_map_to_keepalived(reference):
    s0, s1, s2 = reference.sites
    cluster = replace(reference, engine="keepalived", sites=(
        replace(s0, quiescent=True, fallback="127.0.0.1:8080",
                health=HealthCheck(service="https", checkport=443, receive=r"ok\d")),
        replace(s1, virtual_port=443, fallback="192.168.0.200", health=HealthCheck(checktype="connect", checkport=None)),
        replace(s2, health=HealthCheck(checktype="on"))))
    servers = _virtual_servers(_conf(cluster, cluster.master))
    first = _words(servers["10.0.0.1 0"])
    assert ["inhibit_on_failure"] in first and ["sorry_server", "127.0.0.1", "8080"] in first
    assert ["sorry_server_lvs_method", "NAT"] in first
    assert ["SSL_GET", "{"] in first and ["enable_sni"] in first and ["connect_port", "443"] in first
    assert ["regex", '"ok\\\\d"'] in first  # keepalived.conf's escape for ldirectord's regex ok\d
    second = _words(servers["10.0.0.3 443"])
    assert ["sorry_server", "192.168.0.200", "443"] in second
    assert ["TCP_CHECK", "{"] in second and ["connect_timeout", "10"] in second
    assert not any(w[0] == "connect_port" for w in second)  # the real server's own port
    third = _words(servers["10.0.0.5 0"])
    assert not any(w[0].endswith(("_GET", "_CHECK")) for w in third)  # "on": no checker, always in


def test_the_firewall_accepts_vrrp_from_the_peer_only_and_no_heartbeat(model):
    _, cluster = model
    for balancer in cluster.balancers:
        rules = _files(cluster, balancer.name)[render.FIREWALL_RULES].content
        interface, address, peer = cluster.vrrp_link(balancer)
        vrrp = [line for line in rules.splitlines() if f"-p {VRRP_PROTOCOL} " in line]
        assert vrrp == [f"-A INPUT -i {interface} -s {peer}/32 -d {address}/32 -p {VRRP_PROTOCOL} -j ACCEPT"]
        assert f"--dport {render.HEARTBEAT_UDP_PORT} " not in rules
        heartbeat_rules = _files(replace(cluster, engine="heartbeat"), balancer.name)[render.FIREWALL_RULES].content
        assert f"-p {VRRP_PROTOCOL} " not in heartbeat_rules
        # the rest of the ruleset (mail NAT, sites, sync, services) is the same on both engines
        strip = lambda text: [l for l in text.splitlines()
                              if f"-p {VRRP_PROTOCOL} " not in l and f"--dport {render.HEARTBEAT_UDP_PORT} " not in l
                              and not l.startswith("# ")]
        assert strip(rules) == strip(heartbeat_rules)


def test_state_sync_is_driven_by_keepalived_notify(reference, edge):
    cluster = replace(reference, engine="keepalived")
    conf = _conf(cluster, cluster.master)
    assert (f'notify "{render.KEEPALIVED_PROGRAM} notify {render.KEEPALIVED_CONNTRACKD_SCRIPT} '
            f'{Path(render.IPVS_SYNC_UNIT).name}"') in conf
    files = _files(cluster, cluster.master.name)
    assert files[render.KEEPALIVED_CONNTRACKD_SCRIPT].content == (render.FILES / "heartbeat" / "lvsha-conntrackd").read_text()
    unit = files[render.IPVS_SYNC_UNIT].content
    assert "keepalived.service" in unit and "heartbeat" not in unit and render.IPVS_READY_SCRIPT not in unit
    dropin = files[render.KEEPALIVED_DROPIN].content.splitlines()
    assert "After=conntrackd.service" in dropin
    # The peer's states go straight into the kernel on keepalived (its notify runs as the
    # addresses arrive: a commit then races the first packets, and the lab saw the held
    # connections reset at a failback); heartbeat commits its external cache first.
    def sync_mode(model):
        conf = _files(model, model.master.name)[render.CONNTRACKD_CONF].content
        return [line.split()[1] for line in conf.splitlines() if line.strip().startswith("DisableExternalCache")]

    assert sync_mode(cluster) == ["On"]
    assert sync_mode(reference) == []
    # without state sync (edge): a notify that only records the state, no conntrackd script
    unsynced = replace(edge, engine="keepalived")
    notifies = [line.strip() for line in _conf(unsynced, unsynced.master).splitlines() if line.startswith("\tnotify ")]
    assert notifies == [f'notify "{render.KEEPALIVED_PROGRAM} notify - -"']
    assert render.KEEPALIVED_CONNTRACKD_SCRIPT not in _files(unsynced, unsynced.master.name)


def test_keepalived_never_starts_where_the_firewall_did_not_load_and_comes_back(reference):
    dropin = _files(replace(reference, engine="keepalived"), "balancer1")[render.KEEPALIVED_DROPIN].content.splitlines()
    assert "ExecStartPre=/bin/systemctl is-active --quiet netfilter-persistent.service" in dropin
    assert "After=netfilter-persistent.service" in dropin and "Restart=always" in dropin
    record = f"{render.KEEPALIVED_PROGRAM} record {render.KEEPALIVED_CONF} {render.KEEPALIVED_APPLIED}"
    assert f"ExecStartPost=-{record}" in dropin and f"ExecReload=-{record}" in dropin


def test_keepalived_runs_the_deployed_file_with_the_drained_reals_at_weight_0(reference):
    """The drop-in renders (and checks) the file keepalived runs before every start and
    reload, and the reload signals keepalived only after it, then records the deploy's file."""
    dropin = _files(replace(reference, engine="keepalived"), "balancer1")[render.KEEPALIVED_DROPIN].content.splitlines()
    render_live = f"{render.DRAIN_SCRIPT} --engine keepalived render"
    assert f"ExecStartPre={render_live}" in dropin
    start = next(line for line in dropin if line.startswith("ExecStart=/"))
    assert f"-f {render.KEEPALIVED_LIVE_CONF}" in start
    reloads = [line.removeprefix("ExecReload=") for line in dropin if line.startswith("ExecReload=")]
    assert reloads == ["", f"/bin/mkdir -p {' '.join(render.KEEPALIVED_TRACK_DIRS)}", render_live, "/bin/kill -HUP $MAINPID",
                       f"-{render.KEEPALIVED_PROGRAM} record {render.KEEPALIVED_CONF} {render.KEEPALIVED_APPLIED}"]


def test_every_real_server_weight_line_names_its_drain_pair(model):
    """lvsha-drain finds a real server's weight by the pair the drained list names it with."""
    _, cluster = model
    conf = _conf(cluster, cluster.master)
    marked = [line.split() for line in conf.splitlines() if line.strip().startswith("weight 1 ")]
    expected = [["weight", "1", "#", "lvsha-drain", vs.address, vs.real_token(ip)]
                for vs in cluster.virtual_servers() for _, ip in vs.reals]
    assert marked == expected


def test_failover_is_a_tracked_file_lowering_or_faulting_the_holder(reference, edge):
    """`lvsha failover`'s file: with auto_failback on, a priority drop below the peer's
    (keepalived's lowest weight, not a FAULT); off, weight 0 (FAULT while it is 1).
    (auto_failback off on keepalived needs a model without ping nodes: edge.)"""
    for model, failback, weight in ((reference, True, render.KEEPALIVED_FAILOVER_WEIGHT), (edge, False, 0)):
        cluster = replace(model, engine="keepalived", heartbeat=replace(model.heartbeat, auto_failback=failback))
        for balancer in cluster.balancers:
            conf = _conf(cluster, balancer)
            block = _block(conf, f"vrrp_track_file {render.KEEPALIVED_FAILOVER_TRACK}").split()
            assert block[block.index("file") + 1] == f'"{render.KEEPALIVED_FAILOVER_FILE}"'
            assert int(block[block.index("weight") + 1]) == weight
            instance = _block(conf, f"vrrp_instance {render.VRRP_INSTANCE}")
            assert _block(instance, "\ttrack_file").split()[2:3] == [render.KEEPALIVED_FAILOVER_TRACK]
    # the drop leaves the holder under its peer whatever its checks add: a priority is at least 1
    assert max(render.VRRP_PRIORITIES) + render.KEEPALIVED_FAILOVER_WEIGHT < 1 and render.KEEPALIVED_FAILOVER_WEIGHT >= -253


def test_the_hold_is_a_persistent_tracked_file_of_weight_0(model):
    """The migration's hold: weight 0 (keepalived: any non-zero value is FAULT, a missing
    file is 0), in a persistent directory the drop-in creates before every start and
    reload (keepalived drops a track file whose directory is missing), tracked by the
    instance beside the failover request."""
    _, cluster = model
    for balancer in cluster.balancers:
        conf = _conf(cluster, balancer)
        block = _block(conf, f"vrrp_track_file {render.KEEPALIVED_HOLD_TRACK}").split()
        assert block[block.index("file") + 1] == f'"{render.KEEPALIVED_HOLD_FILE}"'
        assert int(block[block.index("weight") + 1]) == 0
        assert not render.KEEPALIVED_HOLD_FILE.startswith("/run/")
        instance = _block(conf, f"vrrp_instance {render.VRRP_INSTANCE}")
        assert _block(instance, "\ttrack_file").split()[2:4] == [render.KEEPALIVED_FAILOVER_TRACK,
                                                                  render.KEEPALIVED_HOLD_TRACK]
    dropin = _files(cluster, cluster.master.name)[render.KEEPALIVED_DROPIN].content.splitlines()
    mkdir = f"/bin/mkdir -p {' '.join(render.KEEPALIVED_TRACK_DIRS)}"
    for key in ("ExecStartPre", "ExecReload"):
        lines = [line for line in dropin if line.startswith(f"{key}=")]
        assert f"{key}={mkdir}" in lines
        assert lines.index(f"{key}={mkdir}") < next(i for i, line in enumerate(lines) if render.DRAIN_SCRIPT in line)


def test_the_handover_rendering_differs_only_by_its_master_down_timer(model):
    """The live migration's rendering for the node taking the group from heartbeat
    (tasks/migration.py): the same file, but for down_timer_adverts (one advertisement,
    not deadtime's) and the comment saying why."""
    _, cluster = model
    for balancer in cluster.balancers:
        conf = _conf(cluster, balancer)
        handover = render.keepalived_conf(cluster, balancer, handover=True)
        assert handover.path == render.KEEPALIVED_CONF
        instance = _block(handover.content, f"vrrp_instance {render.VRRP_INSTANCE}").split("\n")
        assert f"\tdown_timer_adverts {render.KEEPALIVED_HANDOVER_DOWN_ADVERTS}" in instance
        assert render.KEEPALIVED_HANDOVER_DOWN_ADVERTS < cluster.vrrp_down_adverts()
        added = [line for line in handover.content.splitlines() if line not in conf.splitlines()]
        removed = [line for line in conf.splitlines() if line not in handover.content.splitlines()]
        assert removed == [f"\tdown_timer_adverts {cluster.vrrp_down_adverts()}"]
        assert added[-1] == f"\tdown_timer_adverts {render.KEEPALIVED_HANDOVER_DOWN_ADVERTS}"
        assert added[:-1] and all(line.startswith("# ") for line in added[:-1])
        assert "live migration's handover" in " ".join(added)


def _debian_unit() -> Path | None:
    """Debian's keepalived.service, from the package bin/setup unpacks into the venv."""
    for root in (Path(sys.prefix), ROOT / ".venv"):
        unit = root / "keepalived/lib/systemd/system/keepalived.service"
        if unit.is_file():
            return unit
    return None


def test_keepalived_leaves_ipvs_loaded_when_it_stops(reference):
    """keepalived clears IPVS at its stop unless run with --dont-release-ipvs (2.2.7's
    check_daemon.c): the drop-in replaces Debian's ExecStart (an Environment= would
    lose to /etc/default/keepalived's DAEMON_ARGS) and keeps what it passes."""
    dropin = _files(replace(reference, engine="keepalived"), "balancer1")[render.KEEPALIVED_DROPIN].content.splitlines()
    starts = [line for line in dropin if line.startswith("ExecStart=")]
    assert starts[0] == "ExecStart=" and len(starts) == 2  # the reset, then the one command
    command = starts[1].removeprefix("ExecStart=").split()
    assert command[0] == render.KEEPALIVED_BINARY and "--dont-release-ipvs" in command
    assert {"--dont-fork", "$DAEMON_ARGS"} <= set(command)
    unit = _debian_unit()
    if unit is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's keepalived.service is not available (bin/setup unpacks it into .venv/keepalived)")
        pytest.skip("Debian's keepalived.service is not available (bin/setup unpacks it into .venv/keepalived)")
    (debian,) = [line.removeprefix("ExecStart=").split() for line in unit.read_text().splitlines()
                 if line.startswith("ExecStart=")]
    assert set(debian) <= set(command)  # everything Debian passes, DAEMON_ARGS included


# ---- keepalived's own check of the rendered files -----------------------------------

def _keepalived() -> str:
    """keepalived's binary: LVSHA_KEEPALIVED, the one bin/setup unpacks into the venv, or PATH's."""
    candidates = [os.environ.get("LVSHA_KEEPALIVED"), str(Path(sys.prefix) / "keepalived/usr/sbin/keepalived"),
                  str(ROOT / ".venv/keepalived/usr/sbin/keepalived"),
                  shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    why = None
    if found is None:
        why = "keepalived is not available (bin/setup unpacks it into .venv/keepalived)"
    elif os.geteuid() != 0 or shutil.which("unshare") is None:
        why = "keepalived -t runs in a namespace of its own here: it needs root and unshare"
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return found


# keepalived -t checks that the interfaces and the scripts exist: it runs in a network
# namespace with the model's interfaces (veth pairs) and a mount namespace where
# /usr/local/sbin holds lvsha's program as the deploy installs it (root's, 0755), and
# /run and /var/lib are empty, as on a host lvsha never ran on (no track file's
# directory: 2.3.3's -t dies of it). The command is the deploy's own check
# (render.KEEPALIVED_CHECK), this keepalived in place of Debian's.
CHECK = """set -e
for interface in $INTERFACES; do ip link add "$interface" type veth peer name "p-$interface"; done
mount -t tmpfs -o mode=755 tmpfs /usr/local/sbin
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=755 tmpfs /var/lib
install -m 755 "$PROGRAM" /usr/local/sbin/
eval "$DEPLOY_CHECK"
"""


def _check(keepalived, cluster, balancer, tmp_path, content=None):
    config = tmp_path / f"{balancer.name}.conf"
    config.write_text(content or _conf(cluster, balancer))
    program = tmp_path / Path(render.KEEPALIVED_PROGRAM).name
    shutil.copyfile(render.FILES / "keepalived" / program.name, program)
    interfaces = sorted({i for i, _ in cluster.own_addresses(balancer)})
    return subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "sh", "-c", CHECK],
                          env={**os.environ, "INTERFACES": " ".join(interfaces), "PROGRAM": str(program),
                               "DEPLOY_CHECK": render.KEEPALIVED_CHECK.replace(render.KEEPALIVED_BINARY, keepalived)
                               .replace("{}", str(config))},
                          capture_output=True, text=True, timeout=60)


def test_keepalived_accepts_every_rendering(model, tmp_path):
    keepalived = _keepalived()
    _, cluster = model
    for balancer in cluster.balancers:
        result = _check(keepalived, cluster, balancer, tmp_path)
        assert result.returncode == 0, f"{balancer.name}: keepalived -t exited {result.returncode}: {result.stderr}"
        assert "realpath() error" not in result.stderr, f"{balancer.name}: a track file's directory is missing"
        handover = render.keepalived_conf(cluster, balancer, handover=True).content  # the live migration's
        result = _check(keepalived, cluster, balancer, tmp_path, handover)
        assert result.returncode == 0, f"{balancer.name} (handover): keepalived -t exited {result.returncode}: {result.stderr}"


def test_keepalived_accepts_the_other_checks_and_the_external_link(reference, tmp_path):
    keepalived = _keepalived()
    s0, s1, s2 = reference.sites
    cluster = replace(reference, engine="keepalived", heartbeat=replace(reference.heartbeat, links=("external",)), sites=(
        replace(s0, quiescent=True, fallback="127.0.0.1:8080",
                health=HealthCheck(service="https", checkport=443, receive=r"ok\d")),
        replace(s1, virtual_port=443, fallback="192.168.0.200", health=HealthCheck(checktype="connect", checkport=None)),
        replace(s2, health=HealthCheck(checktype="ping"))))
    result = _check(keepalived, cluster, cluster.master, tmp_path)
    assert result.returncode == 0, result.stderr


def test_keepalived_accepts_the_scale_model_up_to_the_addresses_a_vrrp_advertisement_holds(tmp_path):
    """The keepalived scale model (examples/scale/inventory.py grows examples/keepalived): at
    250 sites (254 addresses) and at the most validation lets through (VRRP_MAX_ADDRESSES)
    keepalived -t passes; with one address more (rendered without validation, which refuses
    it) keepalived moves the excess out of the advertisement and -t fails: the limit is its own."""
    from lvsha.lab.scale import scale_cluster
    from lvsha.loader import run_inventory
    from lvsha.model import VRRP_MAX_ADDRESSES

    keepalived = _keepalived()
    example = run_inventory(ROOT / "examples" / "keepalived" / "inventory.py")["keepalived_cluster"]()
    others = 1 + len(example.web_hosts)  # the internal gateway and the mail IPs besides the sites' VIPs
    for sites in (250, VRRP_MAX_ADDRESSES - others):
        cluster = validate.validate(scale_cluster(example, sites))
        result = _check(keepalived, cluster, cluster.master, tmp_path)
        assert result.returncode == 0, f"{sites} sites: keepalived -t exited {result.returncode}: {result.stderr}"
    over = scale_cluster(example, VRRP_MAX_ADDRESSES - others + 1)
    assert [p.field for p in validate.problems(over)] == ["sites"]
    result = _check(keepalived, over, over.master, tmp_path, render.keepalived_conf(over, over.master).content)
    assert result.returncode != 0
    assert f"Number of VIPs ({VRRP_MAX_ADDRESSES + 1}) exceeds maximum" in result.stdout + result.stderr


def test_gratuitous_arps_are_paced_past_the_group_heartbeat_announces_one_by_one(tmp_path):
    """keepalived announces every address at once on becoming MASTER; past as many addresses
    as heartbeat's lvsha-floating-ips announces one by one (its ANNOUNCE_ONE_BY_ONE_MAX, read
    from the program), keepalived.conf paces them (vrrp_garp_interval), and keepalived -t
    accepts it (the 250-site check above runs the real keepalived on that file)."""
    from lvsha.lab.scale import scale_cluster
    from lvsha.loader import run_inventory

    program = (render.FILES / "heartbeat" / "lvsha-floating-ips").read_text()
    assert f"\nANNOUNCE_ONE_BY_ONE_MAX={render.KEEPALIVED_GARP_PACED_ABOVE}\n" in program
    example = run_inventory(ROOT / "examples" / "keepalived" / "inventory.py")["keepalived_cluster"]()
    paced = f"\tvrrp_garp_interval {render.KEEPALIVED_GARP_INTERVAL}\n"
    seen = {}
    for sites in range(1, 12):
        cluster = scale_cluster(example, sites)
        for balancer in cluster.balancers:
            content = render.keepalived_conf(cluster, balancer).content
            global_defs = content[content.index("global_defs {"):content.index("}", content.index("global_defs {"))]
            seen[len(cluster.floating_ips())] = paced in global_defs
            assert (paced in global_defs) == (len(cluster.floating_ips()) > render.KEEPALIVED_GARP_PACED_ABOVE)
    assert True in seen.values() and False in seen.values()


def test_keepalived_check_refuses_a_broken_file(reference, tmp_path):
    """The check the deploy relies on fails on a file keepalived would run wrongly."""
    keepalived = _keepalived()
    cluster = replace(reference, engine="keepalived")
    broken = _conf(cluster, cluster.master).replace("lb_algo wlc", "lb_algo fastest", 1)
    assert _check(keepalived, cluster, cluster.master, tmp_path, broken).returncode != 0
    # and on a script it cannot run (here: lvsha's program missing from its path)
    unknown = _conf(cluster, cluster.master).replace(render.KEEPALIVED_PROGRAM, "/usr/local/sbin/lvsha-missing")
    assert _check(keepalived, cluster, cluster.master, tmp_path, unknown).returncode != 0


def test_keepalived_accepts_the_file_it_runs_with_a_drained_host_and_a_failover_request(reference, tmp_path):
    """The file lvsha-drain derives (drained reals at weight 0) passes keepalived's own check,
    as does the model's with `lvsha failover`'s tracked file."""
    keepalived = _keepalived()
    cluster = replace(reference, engine="keepalived")
    deployed = tmp_path / "keepalived.conf"
    deployed.write_text(_conf(cluster, cluster.master))
    drained = tmp_path / "drained"
    vs = cluster.virtual_servers()[0]
    drained.write_text("".join(f"{v.address} {v.real_token(v.reals[0][1])}\n" for v in (vs, cluster.virtual_servers()[-1])))
    live = tmp_path / "run" / "keepalived.conf"
    result = subprocess.run([str(render.FILES / "lvsha" / "lvsha-drain"), "--engine", "keepalived", "render"],
                            env={**os.environ, "LVSHA_KEEPALIVED_CONF": str(deployed), "LVSHA_DRAINED": str(drained),
                                 "LVSHA_KEEPALIVED_LIVE": str(live), "LVSHA_KEEPALIVED": "true"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    content = live.read_text()
    assert content.count("\t\tweight 0    # lvsha-drain ") == 2
    result = _check(keepalived, cluster, cluster.master, tmp_path, content)
    assert result.returncode == 0, result.stderr


# keepalived 2.3.3 (Debian 13) as it meets a track file whose directory is missing:
# realpath() fails and `keepalived -t` dies (SIGSEGV, exit 139; seen on a fresh install).
TRACK_FILE_DIRS_CHECKED = """#!/bin/sh
for config; do :; done
sed -n 's/^[[:space:]]*file "\\(.*\\)"$/\\1/p' "$config" | while read -r file; do
    [ -d "${file%/*}" ] || { echo "realpath() error 2 (No such file or directory) for $file" >&2; exit 139; }
done
"""


def test_the_deploys_check_makes_the_track_files_directories_first(model, tmp_path):
    """On a host lvsha never ran on (/run and /var/lib empty), the deploy's check of
    keepalived.conf (render.KEEPALIVED_CHECK) passes a keepalived that, as 2.3.3 does,
    dies of a track file whose directory is missing: it makes them first."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("runs in a namespace of its own: needs root and unshare")
    fake = tmp_path / "keepalived"
    fake.write_text(TRACK_FILE_DIRS_CHECKED)
    fake.chmod(0o755)
    _, cluster = model
    balancer = cluster.balancers[0]
    tracked = [line.split('"')[1] for line in _conf(cluster, balancer).splitlines() if line.strip().startswith("file ")]
    assert sorted({str(Path(f).parent) for f in tracked}) == list(render.KEEPALIVED_TRACK_DIRS)
    result = _check(str(fake), cluster, balancer, tmp_path)
    assert result.returncode == 0, result.stderr
