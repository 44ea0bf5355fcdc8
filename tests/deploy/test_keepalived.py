"""Operation-level tests of the deploy on engine "keepalived", against simulated hosts."""

from dataclasses import replace

import pytest
from pyinfra.api.exceptions import DeployError

from lvsha import render
from lvsha.inventory import CLUSTER_KEY, WEB_SERVER_KEY
from lvsha.lab.model import ROOT
from tasks.keepalived import KEEPALIVED_CHECK
from tasks.packages import KEEPALIVED_BALANCER_PACKAGES, WEB_SERVER_PACKAGES
from tasks.roles import cluster_host
from tests.deploy.harness import changing, plan, prepare_run
from tests.deploy.machine import converged_balancer, fresh

CONF_OP = f"Check and write {render.KEEPALIVED_CONF}"
START_OP = "keepalived runs on both balancers, enabled at boot"
RELOAD_OP = "Reload keepalived for its new configuration"


@pytest.fixture(scope="module", params=["reference", "edge"])
def cluster(request):
    """Each example model on keepalived."""
    return replace(request.getfixturevalue(request.param), engine="keepalived")


def _converged(cluster, balancer):
    """converged_balancer, its deploy's SSH client at a routable address (the edge
    model's anti-spoofing drops the harness's 10.0.0.99)."""
    m = converged_balancer(cluster, balancer)
    m.ssh = {**m.ssh, "client": "198.51.100.99"}
    return m


def _director(cluster, machine, name=None, peer=None):
    name = name or cluster.master.name
    peer = peer or _converged(cluster, cluster.peer(cluster.balancer(name)))
    return plan(cluster_host, cluster, name, host_name=name, facts=machine.fact,
                others={b.name: peer.fact for b in cluster.balancers if b.name != name})


def test_converged_balancer_gets_no_change(cluster):
    for balancer in cluster.balancers:
        ops = _director(cluster, _converged(cluster, balancer), balancer.name)
        assert len(ops) > 15
        assert changing(ops) == {}


def _fresh(cluster, balancer):
    return fresh(balancer.name, [i for i, _ in cluster.own_addresses(balancer)])


def test_fresh_balancer_gets_keepalived_and_neither_heartbeat_nor_ldirectord(cluster):
    balancer = cluster.master
    ops = _director(cluster, _fresh(cluster, balancer))
    changes = changing(ops)
    names = list(changes)
    text = "\n".join(c for cs in changes.values() for c in cs)
    (install,) = [c for c in changes[f"Install {', '.join(KEEPALIVED_BALANCER_PACKAGES)}"] if "install" in c]
    assert "keepalived" in install and "heartbeat" not in install and "ldirectord" not in install
    for path in (render.HA_CF, render.HARESOURCES, render.AUTHKEYS, render.LDIRECTORD_CF):
        assert path not in text
    assert not any(op.name in ("Enable and start heartbeat", "ldirectord runs on both balancers, enabled at boot")
                   for op in ops)
    # the program keepalived.conf names is in place before the file is checked; the firewall
    # is loaded (and conntrackd runs) before keepalived starts; started once, not reloaded
    assert names.index(f"Write {render.KEEPALIVED_PROGRAM}") < names.index(CONF_OP) < names.index(START_OP)
    for rules in render.firewall_files(cluster, balancer).values():
        assert names.index(f"Load {rules.path}") < names.index(START_OP)
    if cluster.state_sync.enabled:
        assert names.index("conntrackd runs on both balancers, enabled at boot") < names.index(START_OP)
        assert names.index(f"Write {render.KEEPALIVED_CONNTRACKD_SCRIPT}") < names.index(CONF_OP)
    assert changes[START_OP] == ["systemctl start keepalived.service", "systemctl enable keepalived.service"]
    assert RELOAD_OP not in changes


def test_keepalived_conf_is_checked_on_the_host_before_it_replaces_the_running_one(cluster):
    balancer = cluster.master
    machine = _converged(cluster, balancer)
    machine.files[render.KEEPALIVED_CONF] = ("# an older configuration\n", 644)
    changes = changing(_director(cluster, machine))
    staged = f"{render.KEEPALIVED_CONF}.lvsha-new"
    commands = changes[CONF_OP]
    check = KEEPALIVED_CHECK.replace("{}", staged)
    # the track files' directories made first (2.3.3's -t dies of one missing), then keepalived's own check, bounded
    made, checked = check.split(" && ")
    assert made.split() == ["mkdir", "-p", *render.KEEPALIVED_TRACK_DIRS]
    assert checked.split()[:3] == ["timeout", "60", "/usr/sbin/keepalived"] and checked.split()[3:] == ["-t", "-f", staged]
    upload = next(i for i, c in enumerate(commands) if "FileUploadCommand" in c)
    assert staged in commands[upload].split(" via ")[0]
    # uploaded beside it, checked there, and only then renamed: pyinfra stops at a failed
    # check (any non-zero exit), leaving the file keepalived runs with as it was
    assert commands.index(check) > upload
    assert commands[commands.index(check) + 1:] == [f"mv -f {staged} {render.KEEPALIVED_CONF}"]
    assert not any(render.KEEPALIVED_CONF in c.replace(staged, "") for c in commands[:commands.index(check) + 1])


def test_a_changed_configuration_is_applied_by_reload_and_nothing_else(cluster):
    """A changed site or health check: keepalived reloads (it applies the differences:
    no address moves, unchanged virtual servers keep their connections); never a restart."""
    site = cluster.sites[0]
    changed = replace(cluster, sites=(replace(site, health=replace(site.health, request="/status")), *cluster.sites[1:]))
    for balancer in cluster.balancers:
        machine = _converged(cluster, balancer)
        changes = changing(_director(changed, machine, balancer.name,
                                     peer=_converged(cluster, cluster.peer(balancer))))
        assert set(changes) == {CONF_OP, RELOAD_OP}
        assert changes[RELOAD_OP] == ["systemctl reload keepalived.service"]
        assert not any("restart" in c for cs in changes.values() for c in cs)


def test_a_file_written_but_never_applied_is_reloaded(cluster):
    """A run that died between the rename and the reload: the file on disk is the
    model's, keepalived runs an older one (its drop-in's record says so)."""
    machine = _converged(cluster, cluster.master)
    machine.keepalived_applied = "0" * 40
    assert changing(_director(cluster, machine)) == {RELOAD_OP: ["systemctl reload keepalived.service"]}


def test_a_stopped_keepalived_is_started_not_reloaded(cluster):
    machine = _converged(cluster, cluster.master)
    machine.running["keepalived.service"] = False
    machine.files[render.KEEPALIVED_CONF] = ("# an older configuration\n", 644)
    changes = changing(_director(cluster, machine))
    assert set(changes) == {CONF_OP, START_OP} and changes[START_OP] == ["systemctl start keepalived.service"]


def test_a_new_dropin_reloads_systemd_and_leaves_keepalived_running(cluster):
    machine = _converged(cluster, cluster.master)
    machine.files[render.KEEPALIVED_DROPIN] = ("[Service]\nRestart=no\n", 644)
    assert set(changing(_director(cluster, machine))) == {f"Write {render.KEEPALIVED_DROPIN}",
                                                          "Reload systemd for keepalived's drop-in"}


DROPIN_LEFT_OP = f"No runtime drop-in of a migration left for keepalived ({render.KEEPALIVED_MIGRATE_DROPIN}: " \
                "systemd restarts keepalived again)"


@pytest.mark.parametrize("running", [True, False])
def test_a_runtime_dropin_lvsha_migrate_left_is_removed_before_keepalived_starts(cluster, running):
    """lvsha-migrate retire killed while it ended keepalived (SIGKILL: no trap runs) leaves its
    runtime drop-in (Restart=no) in /run: removed, systemd reloaded, before keepalived starts;
    a converged node without it changes nothing (test_converged_balancer_gets_no_change)."""
    machine = _converged(cluster, cluster.master)
    machine.migrate_dropin = True
    machine.running["keepalived.service"] = running
    ops = _director(cluster, machine)
    changes = changing(ops)
    assert changes[DROPIN_LEFT_OP] == [f"rm -f {render.KEEPALIVED_MIGRATE_DROPIN}", "systemctl daemon-reload"]
    assert set(changes) == {DROPIN_LEFT_OP, *([] if running else [START_OP])}
    names = [op.name for op in ops]
    assert names.index(DROPIN_LEFT_OP) < names.index(START_OP)


def test_the_other_engine_stays_disabled_whatever_passed_the_check(cluster, monkeypatch):
    """Each engine's deploy disables the other's services where they are installed and
    stopped (preflight.check_engine refuses them enabled; the deploy holds it anyway)."""
    from tasks import preflight

    monkeypatch.setattr(preflight, "check_engine", lambda cluster: None)
    machine = _converged(cluster, cluster.master)
    for service in ("heartbeat", "ldirectord"):
        machine.running[f"{service}.service"], machine.enabled[f"{service}.service"] = False, True
    changes = changing(_director(cluster, machine))
    assert changes == {f"{s} is stopped and not enabled (engine keepalived)": [f"systemctl disable {s}.service"]
                       for s in ("heartbeat", "ldirectord")}
    on_heartbeat = replace(cluster, engine="heartbeat")
    machine = _converged(on_heartbeat, on_heartbeat.master)
    machine.running["keepalived.service"], machine.enabled["keepalived.service"] = False, True
    changes = changing(_director(on_heartbeat, machine, peer=_converged(on_heartbeat, on_heartbeat.balancers[1])))
    assert changes == {"keepalived is stopped and not enabled (engine heartbeat)": ["systemctl disable keepalived.service"]}


@pytest.mark.parametrize("active", ["activating", "deactivating"])
def test_the_other_engine_restarting_or_stopping_is_stopped_not_only_disabled(cluster, monkeypatch, active):
    """ldirectord between two attempts of its Restart= (activating, not running) or still
    stopping is stopped as well as disabled: disabled alone, systemd's pending restart
    would bring it back beside keepalived."""
    from tasks import preflight

    monkeypatch.setattr(preflight, "check_engine", lambda cluster: None)
    machine = _converged(cluster, cluster.master)
    machine.running["ldirectord.service"], machine.enabled["ldirectord.service"] = False, False
    machine.actives["ldirectord.service"] = active
    changes = changing(_director(cluster, machine))
    assert changes == {"ldirectord is stopped and not enabled (engine keepalived)": ["systemctl stop ldirectord.service"]}


@pytest.mark.parametrize("active, sub", [("inactive", "dead-before-auto-restart"),
                                         ("failed", "failed-before-auto-restart")])
def test_the_other_engine_between_two_restarts_on_systemd_254_is_stopped(cluster, monkeypatch, active, sub):
    """systemd 254 and later (Debian 13) wait between two attempts of Restart= in ActiveState
    inactive or failed with a restart pending (SubState *-before-auto-restart): not off,
    so it is stopped, not only disabled (facts.unit_off)."""
    from tasks import preflight

    monkeypatch.setattr(preflight, "check_engine", lambda cluster: None)
    machine = _converged(cluster, cluster.master)
    machine.running["ldirectord.service"], machine.enabled["ldirectord.service"] = False, False
    machine.actives["ldirectord.service"], machine.states["ldirectord.service"] = active, sub
    changes = changing(_director(cluster, machine))
    assert changes == {"ldirectord is stopped and not enabled (engine keepalived)": ["systemctl stop ldirectord.service"]}


HOLD_OP = "The migration's hold left on"


@pytest.mark.parametrize("peer_carries", [False, True])
def test_a_hold_left_set_is_cleared_once_the_peer_runs_no_heartbeat(cluster, peer_carries):
    """A migration that stopped half-way (or an operator) left the hold set: keepalived
    there stays in FAULT, across reboots. The pair's deploy clears it, without moving the
    group: the model's master with auto_failback on yields to a peer that carries it."""
    for balancer in cluster.balancers:
        machine = _converged(cluster, balancer)
        machine.hold = True
        peer = _converged(cluster, cluster.peer(balancer))
        if peer_carries:
            for ip in cluster.floating_ips():
                peer.addresses.setdefault(ip.interface, []).append(ip.cidr)
        changes = changing(_director(cluster, machine, balancer.name, peer=peer))
        (name,) = changes
        assert name.startswith(f"{HOLD_OP} {balancer.name} cleared ({cluster.peer(balancer).name} runs no heartbeat)")
        yields = peer_carries and cluster.heartbeat.auto_failback and balancer.name == cluster.master.name
        assert changes[name] == [*([f"{render.KEEPALIVED_PROGRAM} failover 1"] if yields else []),
                                 f"{render.KEEPALIVED_PROGRAM} hold 0"]
        # the peer's deploy changes nothing for this node's hold
        assert changing(_director(cluster, peer, cluster.peer(balancer).name, peer=machine)) == {}


def test_the_firewall_accepts_vrrp_from_the_peer_before_keepalived_starts(cluster):
    balancer = cluster.master
    ops = _director(cluster, _fresh(cluster, balancer))
    (load,) = [op for op in ops if op.name == f"Load {render.FIREWALL_RULES}"]
    (rules,) = [text for path, text in load.uploads.items() if path.endswith(".lvsha-candidate")]
    interface, address, peer = cluster.vrrp_link(balancer)
    assert f"-A INPUT -i {interface} -s {peer}/32 -d {address}/32 -p 112 -j ACCEPT" in rules
    assert "--dport 694" not in rules


def test_a_heartbeat_model_is_not_deployed_beside_a_running_keepalived(reference):
    """A pair that cannot be migrated back (neither node carries the group) is refused."""
    keepalived_node = converged_balancer(replace(reference, engine="keepalived"), reference.master)
    with pytest.raises(DeployError, match=r"the model's engine is heartbeat, and keepalived runs, would start or is "
                                          r"enabled on balancer1, and the pair cannot be migrated to heartbeat: .*"
                                          r"settle the pair first"):
        _director(reference, converged_balancer(reference, reference.peer(reference.master)),
                  reference.peer(reference.master).name, peer=keepalived_node)


@pytest.mark.parametrize("state, enabled", [("auto-restart", False), ("activating", False), ("dead", True),
                                            ("failed", True)])
@pytest.mark.parametrize("where", ["this node", "the peer"])
def test_the_other_engine_restarting_or_enabled_is_refused_too(reference, state, enabled, where):
    """A keepalived systemd will start again (auto-restart: Restart=always between
    attempts; starting), or one stopped but enabled at boot: a second engine beside
    heartbeat, now or at the next reboot. Refused from either node's facts, naming each
    node's state."""
    node, other = reference.master, reference.peer(reference.master)
    odd = converged_balancer(reference, node if where == "this node" else other)
    odd.running["keepalived.service"], odd.enabled["keepalived.service"] = False, enabled
    odd.states["keepalived.service"] = state
    machine, peer = (odd, converged_balancer(reference, other)) if where == "this node" else (
        converged_balancer(reference, node), odd)
    with pytest.raises(DeployError) as refused:
        _director(reference, machine, node.name, peer=peer)
    message = str(refused.value)
    assert "the model's engine is heartbeat, and keepalived runs, would start or is enabled" in message
    assert f"{odd.hostname}: heartbeat running enabled, ldirectord running enabled, keepalived {state} " \
           f"{'enabled' if enabled else 'disabled'}, carries 0 of " in message
    fine = other if odd.hostname == node.name else node
    assert f"{fine.name}: heartbeat running enabled, ldirectord running enabled, keepalived dead disabled" in message


@pytest.mark.parametrize("state", ["dead", "failed"])
def test_a_stopped_disabled_keepalived_is_no_obstacle(reference, state):
    machine = converged_balancer(reference, reference.master)
    machine.running["keepalived.service"], machine.enabled["keepalived.service"] = False, False
    machine.states["keepalived.service"] = state
    assert changing(_director(reference, machine, peer=converged_balancer(reference, reference.balancers[1]))) == {}


def test_every_host_installs_its_packages_in_one_operation_of_the_real_deploy_file(reference):
    cluster = replace(reference, engine="keepalived")
    machines = {b.name: fresh(b.name, [i for i, _ in cluster.own_addresses(b)]) for b in cluster.balancers}
    machines |= {h.name: fresh(h.name, [h.interface]) for h in cluster.web_hosts}
    operations = prepare_run(ROOT / "deploy.py", machines, {CLUSTER_KEY: cluster, WEB_SERVER_KEY: True})
    names, hosts = operations[0]
    assert sorted(hosts) == sorted(machines)
    assert names == ["Packages | Install " + ", ".join(KEEPALIVED_BALANCER_PACKAGES),
                     "Packages | Install " + ", ".join(WEB_SERVER_PACKAGES)]
    # both balancers run the keepalived operations as one (side by side)
    (reload_op,) = [(n, h) for n, h in operations if any(name.endswith(RELOAD_OP) for name in n)]
    assert sorted(reload_op[1]) == sorted(b.name for b in cluster.balancers)
