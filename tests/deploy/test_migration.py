"""The live migrations heartbeat -> keepalived and back at the operation level
(tasks/migration.py): the steps in order, each on its node; the half-migrated states
continued; the pairs refused, naming each node's state; nothing to do after a completed
migration."""

from dataclasses import replace

import pytest
from pyinfra.api.exceptions import DeployError

from lvsha import render
from tasks import migration
from tasks.operations import sha1_of
from tasks.roles import cluster_host
from tests.deploy.harness import changing, plan
from tests.deploy.test_config_change import _added
from tests.deploy.machine import converged_balancer


@pytest.fixture(params=["reference", "edge"])
def models(request):
    """(the model on heartbeat, the same on keepalived)."""
    on_heartbeat = request.getfixturevalue(request.param)
    return on_heartbeat, replace(on_heartbeat, engine="keepalived")


def _machine(cluster, balancer, holds=False):
    m = converged_balancer(cluster, balancer)
    m.ssh = {**m.ssh, "client": "198.51.100.99"}  # routable: the edge model's anti-spoofing drops 10.0.0.99
    if holds:
        for ip in cluster.floating_ips():
            m.addresses.setdefault(ip.interface, []).append(ip.cidr)
    return m


def _keepalived_node(on_keepalived, balancer, on_heartbeat, holds=False):
    """A node converted by the migration: keepalived's files and services, heartbeat's
    and ldirectord's installed, stopped and disabled."""
    m = _machine(on_keepalived, balancer, holds)
    m.packages |= {"heartbeat", "ldirectord"}
    for service in ("heartbeat", "ldirectord"):
        m.running[f"{service}.service"], m.enabled[f"{service}.service"] = False, False
    return m


def _plan(cluster, machines, name):
    (peer,) = [n for n in machines if n != name]
    return plan(cluster_host, cluster, name, host_name=name, facts=machines[name].fact,
                others={peer: machines[peer].fact})


def _pair(cluster, holder=None):
    """A pair converged on `cluster`'s engine, `holder` (the model's master by default) carrying the group."""
    holder = holder or cluster.master.name
    return {b.name: _machine(cluster, b, holds=b.name == holder) for b in cluster.balancers}


def _migration_ops(ops):
    return [op for op in ops if op.name.startswith("Migration")]


def _pair_plans(cluster, machines):
    """Both balancers' plans, checked to be the same operations in the same order, each
    migration step running on one node: (plans, operation names, the node each step runs
    on, the commands of each operation that changes something)."""
    plans = {name: _plan(cluster, machines, name) for name in machines}
    first, second = (ops for ops in plans.values())
    assert [op.name for op in first] == [op.name for op in second]
    runs_on = {op.name: name for name, ops in plans.items() for op in _migration_ops(ops) if op.changes}
    assert all(op.name in runs_on for op in _migration_ops(first)), "every step runs on one node"
    commands = {op.name: op.commands for ops in plans.values() for op in ops if op.changes}
    return plans, [op.name for op in first], runs_on, commands


def test_heartbeat_to_keepalived_backup_first_one_handover(models):
    on_heartbeat, on_keepalived = models
    machines = _pair(on_heartbeat)
    first, second = on_keepalived.peer(on_keepalived.master).name, on_keepalived.master.name
    plans, names, runs_on, commands = _pair_plans(on_keepalived, machines)
    steps = [op.name for op in _migration_ops(plans[first])]

    def step(text):
        (found,) = [n for n in steps if text in n]
        return found

    hold = step(f"keepalived on {first} held out of MASTER before it starts")
    stop_first = step(f"heartbeat and ldirectord stopped and disabled on {first}")
    start_first = step(f"keepalived started and enabled on {first}, held")
    held = step(f"keepalived on {first} runs held")
    disable = step(f"heartbeat disabled on {second}, which still runs it")
    arm = step(f"{first} clears its hold once {second} gives the addresses up")
    release = step(f"heartbeat stops on {second}")
    take = step(f"keepalived on {first} takes every floating address")
    model_timer = step(f"keepalived on {first} given the model's master-down timer again")
    steady = step(f"keepalived on {first} is VRRP MASTER and carries every floating address, three checks")
    stop_second = step(f"heartbeat and ldirectord stopped and disabled on {second}")
    start_second = step(f"keepalived started and enabled on {second}, joining as BACKUP")
    joined = step(f"keepalived on {second} is VRRP BACKUP")
    final = [n for n in names if n.startswith("Migration 4/4: load")]
    order = [hold, stop_first, start_first, held, disable, arm, release, take, model_timer, steady, stop_second,
             start_second, joined]
    assert [names.index(n) for n in order] == sorted(names.index(n) for n in order)
    assert [runs_on[n] for n in order] == [first] * 4 + [second, first, second, first, first, first] + [second] * 3
    # the node taking the group runs keepalived with the handover's master-down timer (one
    # advertisement: no VRRP peer, the hold keeps it out until the holder let go) from its
    # start until it carries the group, then the model's, by a reload, before its peer's starts
    conf = f"Check and write {render.KEEPALIVED_CONF}"
    assert names.index(conf) < names.index(hold)
    for name, handover in ((first, True), (second, False)):
        (written,) = [op for op in plans[name] if op.name == conf]
        (text,) = [t for p, t in written.uploads.items() if p.startswith(render.KEEPALIVED_CONF)]
        assert text == render.keepalived_conf(on_keepalived, on_keepalived.balancer(name), handover).content
    (back,) = [op for op in plans[first] if op.name == model_timer]
    (text,) = [t for p, t in back.uploads.items() if p.startswith(render.KEEPALIVED_CONF)]
    assert text == render.keepalived_conf(on_keepalived, on_keepalived.balancer(first)).content
    staged = f"{render.KEEPALIVED_CONF}.lvsha-new"
    assert commands[model_timer][-3:] == [render.KEEPALIVED_CHECK.replace("{}", staged),
                                          f"mv -f {staged} {render.KEEPALIVED_CONF}", "systemctl reload keepalived.service"]
    assert f"down_timer_adverts {render.KEEPALIVED_HANDOVER_DOWN_ADVERTS}\n" not in text
    assert runs_on[hold] == runs_on[take] == first
    # the hold is set before keepalived starts, and cleared by the handover only
    assert commands[hold] == [f"{render.KEEPALIVED_PROGRAM} hold 1"]
    assert commands[start_first] == ["systemctl enable keepalived.service", "systemctl start keepalived.service"]
    addresses = " ".join(render.floating_ips_arguments(on_keepalived))
    # the release returns once the holder carries nothing and its heartbeat is stopping; the
    # end of that stop is waited for (bounded) on the old holder before anything changes there
    assert commands[release] == [f"{render.MIGRATE_SCRIPT} release {migration.RELEASE_TIMEOUT} {addresses}"]
    assert "heartbeat is stopping" in release
    assert commands[stop_second] == [f"{render.MIGRATE_SCRIPT} stopped {migration.RELEASE_TIMEOUT} {addresses}",
                                     "systemctl disable heartbeat.service ldirectord.service",
                                     "systemctl stop heartbeat.service ldirectord.service"]
    assert commands[take][0].startswith(f"{render.MIGRATE_SCRIPT} take-over ") and commands[take][0].endswith(addresses)
    # the watch is armed once heartbeat on the holder no longer starts at boot; it clears the
    # hold only when no floating address answers (the gateway first: probed every round) and
    # the holder's heartbeat has been silent for deadtime
    assert commands[disable] == ["systemctl disable heartbeat.service"]
    assert commands[arm] == [f"{render.MIGRATE_SCRIPT} arm {migration.WATCH_TIMEOUT} {on_keepalived.heartbeat.deadtime} "
                             f"{render.HEARTBEAT_UDP_PORT} {addresses}"]
    assert addresses.split()[0] == f"{on_keepalived.gateway}/{on_keepalived.internal_net.prefixlen}/" \
                                   f"{on_keepalived.balancer(first).internal_interface}"
    yields = on_keepalived.heartbeat.auto_failback
    assert commands[start_second] == [f"{render.KEEPALIVED_PROGRAM} hold 0",
                                      *([f"{render.KEEPALIVED_PROGRAM} failover 1"] if yields else []),
                                      "systemctl enable keepalived.service", "systemctl start keepalived.service"]
    resync = [n for n in steps if "conntrackd on" in n]
    assert bool(resync) == on_keepalived.state_sync.enabled
    if resync:
        assert runs_on[resync[0]] == first and names.index(stop_first) < names.index(resync[0]) < names.index(start_first)
        # conntrackd is switched to keepalived's configuration (no external cache) on both before
        assert names.index("Restart conntrackd for its new configuration") < names.index(hold)
        assert all("Restart conntrackd for its new configuration" in changing(ops) for ops in plans.values())
    # keepalived never starts on both at once, and neither engine's usual start runs
    assert "keepalived runs on both balancers, enabled at boot" not in names
    assert "Enable and start heartbeat" not in names
    # the firewall hears both engines until the end, then the model's alone, on both
    for name, ops in plans.items():
        changes = changing(ops)
        (loaded,) = [op for op in ops if op.name == f"Load {render.FIREWALL_RULES}"]
        (rules,) = [t for p, t in loaded.uploads.items() if p.endswith(".lvsha-candidate")]
        assert "-p 112 -j ACCEPT" in rules and "--dport 694 -j ACCEPT" in rules
        (after,) = [op for op in ops if op.name in final]
        (rules,) = [t for p, t in after.uploads.items() if p.endswith(".lvsha-candidate")]
        assert "-p 112 -j ACCEPT" in rules and "--dport 694" not in rules
        assert rules == render.firewall_file(on_keepalived, on_keepalived.balancer(name)).content
        assert names.index(joined) < names.index(after.name) and after.name in changes


def test_the_node_carrying_nothing_is_converted_first_whichever_it_is(reference):
    on_keepalived = replace(reference, engine="keepalived")
    holder = on_keepalived.peer(on_keepalived.master).name  # the group on the backup (a takeover happened)
    machines = _pair(reference, holder=holder)
    ops = _plan(on_keepalived, machines, holder)
    steps = [op.name for op in _migration_ops(ops)]
    first = on_keepalived.master.name
    assert any(f"keepalived on {first} held out of MASTER" in s for s in steps)
    assert any(f"heartbeat stops on {holder}" in s for s in steps)
    # the master becomes the holder: the backup joins below it, no failover request needed
    (start,) = [op for op in ops if f"keepalived started and enabled on {holder}" in op.name]
    assert start.commands and not any("failover" in c for c in start.commands)


def test_a_run_that_died_after_the_first_conversion_continues_with_the_handover(models):
    on_heartbeat, on_keepalived = models
    first, second = on_keepalived.peer(on_keepalived.master), on_keepalived.master
    machines = {first.name: _keepalived_node(on_keepalived, first, on_heartbeat),
                second.name: _machine(on_heartbeat, second, holds=True)}
    ops = _plan(on_keepalived, machines, first.name)
    steps = [op.name for op in _migration_ops(ops)]
    assert not any(s.startswith("Migration 1/4") for s in steps)
    assert steps[0].startswith(f"Migration 2/4: keepalived on {first.name} runs held")
    assert any(f"heartbeat stops on {second.name}" in s for s in steps)
    # keepalived there (held: FAULT, whatever its file says) reloaded with the handover's file
    # before the handover, and with the model's once it carries the group
    changes, names = changing(ops), [op.name for op in ops]
    (written,) = [op for op in ops if op.name == f"Check and write {render.KEEPALIVED_CONF}"]
    (text,) = [t for p, t in written.uploads.items() if p.startswith(render.KEEPALIVED_CONF)]
    assert text == render.keepalived_conf(on_keepalived, first, handover=True).content
    assert names.index(written.name) < names.index("Reload keepalived for its new configuration") < names.index(steps[0])
    assert "Reload keepalived for its new configuration" in changes
    (back,) = [n for n in steps if "given the model's master-down timer again" in n]
    assert changes[back][-1] == "systemctl reload keepalived.service"


def test_a_run_that_died_after_the_handover_converts_the_old_holder(models):
    on_heartbeat, on_keepalived = models
    first, second = on_keepalived.peer(on_keepalived.master), on_keepalived.master
    old = _machine(on_heartbeat, second)
    old.running["heartbeat.service"], old.enabled["heartbeat.service"] = False, False  # stopped by the handover
    machines = {first.name: _keepalived_node(on_keepalived, first, on_heartbeat, holds=True), second.name: old}
    ops = _plan(on_keepalived, machines, second.name)
    steps = [op.name for op in _migration_ops(ops)]
    assert all(s.startswith(("Migration 3/4", "Migration 4/4")) for s in steps)
    assert f"keepalived started and enabled on {second.name}, joining as BACKUP" in " ".join(steps)
    addresses = " ".join(render.floating_ips_arguments(on_keepalived))
    (stop,) = [n for n in steps if f"heartbeat and ldirectord stopped and disabled on {second.name}" in n]
    assert changing(ops)[stop][0] == f"{render.MIGRATE_SCRIPT} stopped {migration.RELEASE_TIMEOUT} {addresses}"


def test_a_run_that_died_before_the_handovers_last_step_gives_the_new_holder_the_models_timer(models):
    """keepalived on the node that took the group still runs the handover's file (the run
    died, or the watch cleared the hold): the keepalived deploy writes the model's and
    reloads it (MASTER stays MASTER) before the old holder's keepalived starts."""
    on_heartbeat, on_keepalived = models
    first, second = on_keepalived.peer(on_keepalived.master), on_keepalived.master
    old = _machine(on_heartbeat, second)
    old.running["heartbeat.service"], old.enabled["heartbeat.service"] = False, False  # stopped by the handover
    new = _keepalived_node(on_keepalived, first, on_heartbeat, holds=True)
    handover = render.keepalived_conf(on_keepalived, first, handover=True)
    new.put(handover)
    new.keepalived_applied = sha1_of(handover.content)
    machines = {first.name: new, second.name: old}
    ops = _plan(on_keepalived, machines, first.name)
    changes, names = changing(ops), [op.name for op in ops]
    (text,) = [t for op in ops if op.name == f"Check and write {render.KEEPALIVED_CONF}"
               for p, t in op.uploads.items() if p.startswith(render.KEEPALIVED_CONF)]
    assert text == render.keepalived_conf(on_keepalived, first).content
    assert changes["Reload keepalived for its new configuration"] == ["systemctl reload keepalived.service"]
    (join,) = [n for n in names if n.startswith(f"Migration 3/4: keepalived started and enabled on {second.name}")]
    assert names.index("Reload keepalived for its new configuration") < names.index(join)
    assert not any("master-down timer" in n for n in names)  # the handover is not this run's


def test_a_completed_migration_is_a_no_op(models):
    on_heartbeat, on_keepalived = models
    first, second = on_keepalived.peer(on_keepalived.master), on_keepalived.master
    machines = {first.name: _keepalived_node(on_keepalived, first, on_heartbeat, holds=True),
                second.name: _keepalived_node(on_keepalived, second, on_heartbeat)}
    for name in machines:
        ops = _plan(on_keepalived, machines, name)
        assert changing(ops) == {} and not _migration_ops(ops)


def _refused(cluster, machines, *texts):
    for name in machines:
        with pytest.raises(DeployError) as refused:
            _plan(cluster, machines, name)
        message = str(refused.value)
        assert "Nothing was changed" in message and f"the model's engine is {cluster.engine}, and " in message
        for b in cluster.balancers:
            assert f"{b.name}: heartbeat " in message  # each node's state named
        for text in texts:
            assert text in message


def _installed_never_configured(cluster, balancer, engine):
    """A balancer with `engine`'s packages installed as Debian's postinst leaves them (the
    mover enabled and failed for want of a configuration, ldirectord running on its
    default), carrying nothing, converged otherwise on `cluster`'s engine: not started yet."""
    m = _machine(cluster, balancer)
    for service in migration.ENGINE_SERVICES[engine]:
        m.packages.add(service)
        m.enabled[f"{service}.service"] = True
        m.running[f"{service}.service"] = service == "ldirectord"
        if service in migration.MOVERS:
            m.states[f"{service}.service"] = "failed"
    for service in migration.ENGINE_SERVICES[cluster.engine]:
        m.running[f"{service}.service"], m.enabled[f"{service}.service"] = False, False
    return m


@pytest.mark.parametrize("to", ["keepalived", "heartbeat"])
def test_an_idle_pair_with_the_other_engine_installed_is_a_fresh_install(models, to):
    """Nobody carries an address and neither engine's mover runs (the other engine's
    packages installed, never configured): no migration; the other engine's services are
    stopped and disabled, on keepalived before keepalived starts."""
    cluster = models[1] if to == "keepalived" else models[0]
    other = migration.OTHER_ENGINE[to]
    machines = {b.name: _installed_never_configured(cluster, b, other) for b in cluster.balancers}
    for name in machines:
        ops = _plan(cluster, machines, name)
        names = [op.name for op in ops]
        assert not _migration_ops(ops)
        changes = changing(ops)
        if to == "keepalived":
            stops = {f"{s} is stopped and not enabled (engine keepalived)": [f"systemctl stop {s}.service"] * (
                s == "ldirectord") + [f"systemctl disable {s}.service"] for s in migration.OLD_SERVICES}
            assert {k: changes[k] for k in stops} == stops
            start = names.index("keepalived runs on both balancers, enabled at boot")
            assert all(names.index(k) < start for k in stops)
        else:
            stop = "keepalived is stopped and not enabled (engine heartbeat)"
            assert changes[stop] == ["systemctl disable keepalived.service"]  # failed: nothing to stop
            assert names.index(stop) < names.index("Enable and start heartbeat")


@pytest.mark.parametrize("to", ["keepalived", "heartbeat"])
def test_a_pair_whose_old_mover_runs_on_either_node_is_not_idle(models, to):
    """The same pair with the other engine's mover running on one node (a heartbeat in its
    initdead, a keepalived in BACKUP), though it carries nothing yet: refused, as any pair
    without one holder."""
    cluster = models[1] if to == "keepalived" else models[0]
    other = migration.OTHER_ENGINE[to]
    machines = {b.name: _installed_never_configured(cluster, b, other) for b in cluster.balancers}
    mover = f"{migration.ENGINE_SERVICES[other][0]}.service"
    machines[cluster.master.name].states.pop(mover)
    machines[cluster.master.name].running[mover] = True
    _refused(cluster, machines, "one balancer carrying every floating address and the other none")


@pytest.mark.parametrize("holders", [(), ("balancer1", "balancer2"), ("split",)])
def test_a_pair_without_one_holder_is_refused(reference, holders):
    on_keepalived = replace(reference, engine="keepalived")
    machines = {b.name: _machine(reference, b, holds=b.name in holders) for b in reference.balancers}
    if holders == ("split",):
        gateway = reference.floating_ips()[0]
        machines["balancer1"].addresses[gateway.interface].append(gateway.cidr)
    _refused(on_keepalived, machines, "one balancer carrying every floating address and the other none")


@pytest.mark.parametrize("to", ["keepalived", "heartbeat"])
def test_a_site_added_in_the_run_that_switches_the_engine_is_refused_naming_its_address(models, to):
    """The pair settled on the old engine (one balancer carrying every address it had, the
    other none), the model switching the engine and adding a site: the new VIP is carried by
    nobody. The refusal names it and says to deploy the site on the current engine first."""
    on_heartbeat, on_keepalived = models
    now, new = (on_heartbeat, on_keepalived) if to == "keepalived" else (on_keepalived, on_heartbeat)
    machines = _pair(now)
    added = _added(new)  # one site more (tests/deploy/test_config_change.py)
    (vip,) = [ip for ip in added.floating_ips() if ip.purpose == "site www.added.example"]
    holder, idle = now.master.name, now.peer(now.master).name
    old = migration.OTHER_ENGINE[to]
    _refused(added, machines, f"no balancer carries this floating address of the model, new in it: {vip.cidr} on "
                              f"{vip.interface} (site www.added.example)",
             f"({holder} carries the other {len(now.floating_ips())}, {idle} none",
             f"deploy the new site on the current engine first (engine = \"{old}\"), then switch the engine to {to}")
    with pytest.raises(DeployError) as refused:
        _plan(added, machines, holder)
    assert "settle the pair first" not in str(refused.value)


def test_ipvs_missing_on_the_node_to_convert_is_refused(reference):
    on_keepalived = replace(reference, engine="keepalived")
    machines = _pair(reference)
    backup = reference.peer(reference.master).name
    lost = reference.virtual_servers()[0]
    machines[backup].ipvs.remove(f"TCP {lost.address}")
    _refused(on_keepalived, machines, f"IPVS on {backup}", f"lacks {lost.address}")


@pytest.mark.parametrize("to", ["keepalived", "heartbeat"])
def test_the_old_engine_not_running_on_the_holder_is_refused(reference, to):
    """The holder's engine restarting (auto-restart: Restart=always between attempts), either way."""
    old = migration.OTHER_ENGINE[to]
    machines = _pair(replace(reference, engine=old))
    machines[reference.master.name].states[f"{old}.service"] = "auto-restart"
    _refused(replace(reference, engine=to), machines, f"{old} on {reference.master.name} is auto-restart, not running")


def test_heartbeat_beside_a_keepalived_holder_is_refused(reference):
    on_keepalived = replace(reference, engine="keepalived")
    first, second = reference.peer(reference.master), reference.master
    machines = {first.name: _keepalived_node(on_keepalived, first, reference, holds=True),
                second.name: _machine(reference, second)}
    _refused(on_keepalived, machines, f"heartbeat runs on {second.name} while {first.name} carries the addresses",
             "systemctl disable --now heartbeat")


@pytest.mark.parametrize("substate", ["stop-sigterm", "stop-post", "final-sigkill"])
def test_heartbeat_still_stopping_beside_a_keepalived_holder_is_refused_naming_its_stop(reference, substate):
    """A run that died after the handover, while the release's stop of heartbeat still ran on the
    old holder (the release does not wait for its end; step 3 does): systemd's ActiveState
    deactivating, whichever SubState of the stop, is named; the refusal says to wait, not to stop it."""
    on_keepalived = replace(reference, engine="keepalived")
    first, second = reference.peer(reference.master), reference.master
    old = _machine(reference, second)
    old.enabled["heartbeat.service"] = False
    old.states["heartbeat.service"], old.actives["heartbeat.service"] = substate, "deactivating"
    machines = {first.name: _keepalived_node(on_keepalived, first, reference, holds=True), second.name: old}
    _refused(on_keepalived, machines, f"heartbeat on {second.name} is still stopping ({substate}) while "
             f"{first.name} carries the addresses on keepalived: deploy again once its stop has ended")
    with pytest.raises(DeployError) as refused:
        _plan(on_keepalived, machines, first.name)
    assert "systemctl disable --now heartbeat" not in str(refused.value)


def test_heartbeat_in_a_state_of_its_own_beside_a_keepalived_holder_is_refused_as_running(reference):
    """Not deactivating (here: systemd restarting it, ActiveState activating): not a stop to wait
    for; refused as a heartbeat that runs, naming what to do."""
    on_keepalived = replace(reference, engine="keepalived")
    first, second = reference.peer(reference.master), reference.master
    old = _machine(reference, second)
    old.enabled["heartbeat.service"] = False
    old.states["heartbeat.service"], old.actives["heartbeat.service"] = "auto-restart", "activating"
    machines = {first.name: _keepalived_node(on_keepalived, first, reference, holds=True), second.name: old}
    _refused(on_keepalived, machines, f"heartbeat runs on {second.name} while {first.name} carries the addresses",
             f"`systemctl disable --now heartbeat` on {second.name}, then deploy again")
    with pytest.raises(DeployError) as refused:
        _plan(on_keepalived, machines, first.name)
    assert "still stopping" not in str(refused.value)


def test_a_peer_out_of_the_run_is_refused(reference):
    on_keepalived = replace(reference, engine="keepalived")
    machines = _pair(reference)
    name = reference.master.name
    with pytest.raises(DeployError, match="is not in this run"):
        plan(cluster_host, on_keepalived, name, host_name=name, facts=machines[name].fact, others=())


def _held_node(on_keepalived, balancer, on_heartbeat):
    """The node converted first, as step 1 leaves it: keepalived running, held, nothing carried."""
    m = _keepalived_node(on_keepalived, balancer, on_heartbeat)
    m.hold = True
    return m


@pytest.mark.parametrize("left", [0, 1])
def test_a_pair_nobody_serves_with_the_hold_left_is_refused_naming_the_hold(models, left):
    """The holder let go (or part of the group) and the watch expired: the node converted
    first is still held. The refusal names the hold and when clearing it is safe."""
    on_heartbeat, on_keepalived = models
    first, second = on_keepalived.peer(on_keepalived.master), on_keepalived.master
    old = _machine(on_heartbeat, second)
    old.running["heartbeat.service"], old.enabled["heartbeat.service"] = False, False  # released
    kept = on_keepalived.floating_ips()[-1]
    if left:  # the release failed half-way: the gateway gone, a VIP still there
        old.addresses.setdefault(kept.interface, []).append(kept.cidr)
    machines = {first.name: _held_node(on_keepalived, first, on_heartbeat), second.name: old}
    total = len(on_keepalived.floating_ips())
    _refused(on_keepalived, machines, "settle the pair first",
             f"{first.name} is held out of MASTER by the migration's hold ({render.KEEPALIVED_HOLD_FILE} is set)",
             f"`{render.KEEPALIVED_PROGRAM} hold 0` there, which is safe once {second.name} carries no floating "
             f"address and its heartbeat is stopped",
             f"carries 0 of {total} floating addresses, the migration's hold set ({render.KEEPALIVED_HOLD_FILE})",
             f"(not yet: {second.name} carries 1 of {total} floating addresses)" if left
             else f"({second.name} carries nothing and runs no heartbeat)")


def _steps_by_text(ops, *texts):
    """The name of the one migration step containing each of `texts`."""
    steps = [op.name for op in _migration_ops(ops)]
    found = []
    for text in texts:
        (name,) = [n for n in steps if text in n]
        found.append(name)
    return found


def test_keepalived_to_heartbeat_keeps_the_addresses_where_they_are_and_the_backup_joins(models):
    """From a pair on keepalived, the MASTER carrying every address: the BACKUP leaves
    keepalived first, the MASTER gets heartbeat under its addresses (kept, then keepalived
    frozen and killed), the BACKUP joins it; both balancers plan the same operations."""
    on_heartbeat, on_keepalived = models
    machines = _pair(on_keepalived)
    first, second = on_heartbeat.peer(on_heartbeat.master).name, on_heartbeat.master.name
    plans, names, runs_on, commands = _pair_plans(on_heartbeat, machines)
    stay_off, carries, leave, off, ipvs_first, ipvs_second, adopt, adopted, retire, join = order = _steps_by_text(
        plans[first], f"heartbeat stays off on {first}", f"{second} carries every floating address",
        f"keepalived stopped and disabled on {first}", f"{first} runs neither keepalived nor heartbeat",
        f"IPVS on {first} holds", f"IPVS on {second} holds", f"heartbeat enabled and started on {second}",
        f"heartbeat on {second} holds the group", f"keepalived on {second} frozen and killed",
        f"heartbeat started and enabled on {first}")
    assert [names.index(n) for n in order] == sorted(names.index(n) for n in order)
    assert [runs_on[n] for n in order] == [first, second, first, first, first, second, second, second, second, first]
    addresses = " ".join(render.floating_ips_arguments(on_heartbeat))
    started = render.heartbeat_start_timeout(on_heartbeat)
    # heartbeat never starts on the node carrying nothing before the holder's holds the group
    assert commands[stay_off] == ["systemctl disable heartbeat.service", "systemctl stop heartbeat.service"]
    assert commands[leave] == ["systemctl disable keepalived.service", "systemctl stop keepalived.service",
                               f"{render.KEEPALIVED_PROGRAM} hold 0", f"{render.KEEPALIVED_PROGRAM} failover 0"]
    assert commands[off] == [f"{render.MIGRATE_SCRIPT} off {migration.START_TIMEOUT} {addresses}"]
    assert commands[adopt] == [f"{render.MIGRATE_SCRIPT} adopt {started} {addresses}"]
    # heartbeat's word on who holds the group (cl_status rscstatus) is read against haresources' node: the master
    assert commands[adopted] == [f"{render.MIGRATE_SCRIPT} adopted {migration._adopted_timeout(on_heartbeat)} "
                                 f"{on_heartbeat.master.name} {addresses}"]
    assert commands[retire] == [f"{render.MIGRATE_SCRIPT} retire {migration.RETIRE_TIMEOUT} {addresses}"]
    assert commands[ipvs_first] == commands[ipvs_second] == [
        f"{render.IPVS_READY_SCRIPT} --strict {render.ipvs_takeover_timeout(on_heartbeat)}"]
    # the holder is the model's master: with or without auto_failback it keeps the group
    assert commands[join] == [f"{render.MIGRATE_SCRIPT} join {started} {second} {on_heartbeat.master.name} standby "
                              f"{addresses}"]
    assert "as standby" in join
    resync = [n for n in _migration_ops(plans[first]) if "conntrackd on" in n.name]
    assert bool(resync) == on_heartbeat.state_sync.enabled
    if resync:
        assert runs_on[resync[0].name] == first and names.index(leave) < names.index(resync[0].name) < names.index(off)
        # conntrackd switched to heartbeat's configuration (its external cache) on both before
        assert all("Restart conntrackd for its new configuration" in changing(ops) for ops in plans.values())
        assert names.index("Restart conntrackd for its new configuration") < names.index(stay_off)
    # ldirectord runs on both before the steps (beside keepalived's checker: the same table);
    # heartbeat's usual start and restarts do not run
    assert names.index("ldirectord runs on both balancers, enabled at boot") < names.index(stay_off)
    assert all("ldirectord runs on both balancers, enabled at boot" in changing(ops) for ops in plans.values())
    assert "Enable and start heartbeat" not in names and not [n for n in names if n.startswith("Restart heartbeat")]
    for name, ops in plans.items():
        changes = changing(ops)
        (loaded,) = [op for op in ops if op.name == f"Load {render.FIREWALL_RULES}"]
        (rules,) = [t for p, t in loaded.uploads.items() if p.endswith(".lvsha-candidate")]
        assert "-p 112 -j ACCEPT" in rules and "--dport 694 -j ACCEPT" in rules
        (after,) = [op for op in ops if op.name.startswith("Migration 4/4: load")]
        (rules,) = [t for p, t in after.uploads.items() if p.endswith(".lvsha-candidate")]
        assert "--dport 694 -j ACCEPT" in rules and "-p 112" not in rules
        assert rules == render.firewall_file(on_heartbeat, on_heartbeat.balancer(name)).content
        assert names.index(join) < names.index(after.name) and after.name in changes
        # the migration's program is the heartbeat deploy's too, for this migration
        assert "keepalived is not enabled (engine heartbeat)" in [op.name for op in ops]


def test_back_to_heartbeat_the_models_master_takes_the_group_back_by_heartbeats_failback(reference):
    """The group on the backup (a forward migration, or `lvsha failover`, left it there) and
    auto_failback on: the master, converted first, takes it back when its heartbeat joins."""
    on_keepalived = replace(reference, engine="keepalived")
    holder, master = reference.peer(reference.master).name, reference.master.name
    machines = _pair(on_keepalived, holder=holder)
    ops = _plan(reference, machines, master)
    (adopt, join) = _steps_by_text(ops, f"heartbeat enabled and started on {holder}",
                                   f"heartbeat started and enabled on {master}")
    (op,) = [op for op in ops if op.name == join]
    assert "takes the group back (heartbeat's failback: the one move)" in join
    assert op.commands[0].startswith(f"{render.MIGRATE_SCRIPT} join ") and f" {holder} {master} carry " in op.commands[0]
    # with auto_failback off the group stays where it is
    off = replace(reference, heartbeat=replace(reference.heartbeat, auto_failback=False))
    ops = _plan(off, _pair(replace(off, engine="keepalived"), holder=holder), master)
    (join,) = _steps_by_text(ops, f"heartbeat started and enabled on {master}")
    assert "as standby" in join


def _left_keepalived(on_keepalived, balancer):
    """The node that carried nothing after step 1 back to heartbeat: keepalived stopped
    and disabled, ldirectord running (the ldirectord deploy), heartbeat off."""
    m = _machine(on_keepalived, balancer)
    m.running["keepalived.service"], m.enabled["keepalived.service"] = False, False
    m.running["ldirectord.service"] = m.enabled["ldirectord.service"] = True
    return m


@pytest.mark.parametrize("heartbeat_started", [False, True])
def test_a_run_back_that_died_after_the_first_node_left_keepalived_continues_with_the_swap(models, heartbeat_started):
    """Step 1 done (and maybe heartbeat started on the holder, still beside keepalived): the
    next run continues with step 2, whose `adopt` leaves a running heartbeat as it is."""
    on_heartbeat, on_keepalived = models
    first, second = on_heartbeat.peer(on_heartbeat.master), on_heartbeat.master
    holder = _machine(on_keepalived, second, holds=True)
    if heartbeat_started:  # with the files the run that died wrote, keepalived disabled by `adopt`
        holder = _machine(on_heartbeat, second, holds=True)
        holder.running["keepalived.service"], holder.enabled["keepalived.service"] = True, False
    machines = {first.name: _left_keepalived(on_keepalived, first), second.name: holder}
    steps = [op.name for op in _migration_ops(_plan(on_heartbeat, machines, first.name))]
    assert not any(s.startswith("Migration 1/4") for s in steps)
    assert steps[1].startswith(f"Migration 2/4: {first.name} runs neither keepalived nor heartbeat")
    assert any(f"heartbeat enabled and started on {second.name}" in s for s in steps)
    assert any(f"heartbeat started and enabled on {first.name}" in s for s in steps)


def test_a_run_back_that_died_after_the_swap_is_the_heartbeat_deploy(reference):
    """keepalived gone from both, heartbeat holding the group on the old MASTER, the other
    node running neither: no migration left; the heartbeat deploy starts heartbeat there
    (step 3), and the firewall is heartbeat's."""
    on_keepalived = replace(reference, engine="keepalived")
    first, second = reference.peer(reference.master), reference.master
    holder = _machine(reference, second, holds=True)
    holder.running["keepalived.service"], holder.enabled["keepalived.service"] = False, False
    machines = {first.name: _left_keepalived(on_keepalived, first), second.name: holder}
    ops = _plan(reference, machines, first.name)
    assert not _migration_ops(ops)
    assert "Enable and start heartbeat" in changing(ops)
    (loaded,) = [op for op in ops if op.name == f"Load {render.FIREWALL_RULES}"]
    (rules,) = [t for p, t in loaded.uploads.items() if p.endswith(".lvsha-candidate")]
    assert "-p 112" not in rules


def test_going_back_to_heartbeat_before_the_forward_handover_moves_nothing(models):
    """The migration to keepalived stopped before its handover (B held, carrying nothing; H
    serving on heartbeat), the model back on heartbeat: B leaves keepalived (its hold
    cleared once it is stopped), H's heartbeat is left as it is, and B joins it."""
    on_heartbeat, on_keepalived = models
    first, second = on_keepalived.peer(on_keepalived.master), on_keepalived.master
    machines = {first.name: _held_node(on_keepalived, first, on_heartbeat),
                second.name: _machine(on_heartbeat, second, holds=True)}
    plans, _, _, commands = _pair_plans(on_heartbeat, machines)
    leave, adopt, join = _steps_by_text(plans[first.name], f"keepalived stopped and disabled on {first.name}",
                                        f"heartbeat enabled and started on {second.name}",
                                        f"heartbeat started and enabled on {first.name}")
    # the hold is cleared only once keepalived is stopped there: cleared while it runs, it would take the group
    assert commands[leave].index("systemctl stop keepalived.service") < \
        commands[leave].index(f"{render.KEEPALIVED_PROGRAM} hold 0")
    assert commands[adopt][0].startswith(f"{render.MIGRATE_SCRIPT} adopt ")  # a running heartbeat: left as it is
    assert " standby " in commands[join][0]


def test_back_to_heartbeat_with_heartbeat_running_on_the_node_carrying_nothing_is_refused(models):
    on_heartbeat, on_keepalived = models
    machines = _pair(on_keepalived)
    backup = on_heartbeat.peer(on_heartbeat.master).name
    machines[backup].running["heartbeat.service"] = True
    _refused(on_heartbeat, machines, f"heartbeat runs on {backup} while {on_heartbeat.master.name} carries",
                  f"`systemctl disable --now heartbeat` on {backup}")


@pytest.mark.parametrize("holders", [(), ("balancer1", "balancer2")])
def test_back_to_heartbeat_without_one_holder_is_refused(reference, holders):
    on_keepalived = replace(reference, engine="keepalived")
    machines = {b.name: _machine(on_keepalived, b, holds=b.name in holders) for b in reference.balancers}
    _refused(reference, machines, "keepalived runs, would start or is enabled on balancer1, balancer2, and the "
                  "pair cannot be migrated to heartbeat", "settle the pair first")


def test_back_to_heartbeat_with_both_engines_on_the_holder_and_keepalived_on_its_peer_is_refused(reference):
    """The refusal's advice leaves the addresses in place: keepalived stopped on the node
    carrying nothing, never heartbeat on the holder (its guard would release every address
    while keepalived there is MASTER); after it the next run resumes with step 2."""
    on_keepalived = replace(reference, engine="keepalived")
    holder, other = reference.master.name, reference.peer(reference.master).name
    both = _machine(reference, reference.balancer(holder), holds=True)  # heartbeat's files, heartbeat running
    both.running["keepalived.service"] = both.enabled["keepalived.service"] = True
    machines = {holder: both, other: _machine(on_keepalived, reference.balancer(other))}
    _refused(reference, machines, f"keepalived and heartbeat both run on {holder}",
             f"`systemctl disable --now keepalived` on {other}, which carries nothing (no address moves; leave "
             f"{holder} as it is), then deploy again: the migration resumes with step 2")
    with pytest.raises(DeployError) as refused:
        _plan(reference, machines, holder)
    assert "disable --now heartbeat" not in str(refused.value)
    machines[other].running["keepalived.service"] = machines[other].enabled["keepalived.service"] = False
    steps = [op.name for op in _migration_ops(_plan(reference, machines, other))]
    assert not any(s.startswith("Migration 1/4") for s in steps)
    assert any(f"heartbeat enabled and started on {holder}" in s for s in steps)


def test_keepalived_beside_heartbeat_on_the_holder_is_refused_advising_retire_not_a_stop(models):
    """To keepalived, keepalived running beside the holder's heartbeat: a plain stop would run
    VRRP's shutdown, which removes the addresses under heartbeat. The refusal advises
    lvsha-migrate retire there (frozen and killed, the addresses left to heartbeat)."""
    on_heartbeat, on_keepalived = models
    machines = _pair(on_heartbeat)
    holder = on_heartbeat.master.name
    machines[holder].running["keepalived.service"] = True
    addresses = " ".join(render.floating_ips_arguments(on_keepalived))
    _refused(on_keepalived, machines, f"keepalived runs on {holder} beside its heartbeat",
             f"do not stop it there (its VRRP's shutdown would remove them under heartbeat)",
             f"`{render.MIGRATE_SCRIPT} retire {migration.RETIRE_TIMEOUT} {addresses}` on {holder}")
    with pytest.raises(DeployError) as refused:
        _plan(on_keepalived, machines, holder)
    assert "stop it there first" not in str(refused.value)
