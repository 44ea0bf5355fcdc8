"""The live migration heartbeat -> keepalived at the operation level (tasks/migration.py):
the steps in order, each on its node; the half-migrated states continued; the pairs
refused, naming each node's state; nothing to do after a completed migration."""

from dataclasses import replace

import pytest
from pyinfra.api.exceptions import DeployError

from lvsha import render
from tasks import migration
from tasks.roles import cluster_host
from tests.deploy.harness import changing, plan
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


def _pair(on_heartbeat, holder=None):
    holder = holder or on_heartbeat.master.name
    return {b.name: _machine(on_heartbeat, b, holds=b.name == holder) for b in on_heartbeat.balancers}


def _migration_ops(ops):
    return [op for op in ops if op.name.startswith("Migration")]


def test_heartbeat_to_keepalived_backup_first_one_handover(models):
    on_heartbeat, on_keepalived = models
    machines = _pair(on_heartbeat)
    first, second = on_keepalived.peer(on_keepalived.master).name, on_keepalived.master.name
    plans = {name: _plan(on_keepalived, machines, name) for name in machines}
    # both balancers plan the same operations in the same order: each step runs on one node
    assert [op.name for op in plans[first]] == [op.name for op in plans[second]]
    names = [op.name for op in plans[first]]
    runs_on = {op.name: name for name, ops in plans.items() for op in _migration_ops(ops) if op.changes}
    steps = [op.name for op in _migration_ops(plans[first])]
    assert all(name in runs_on for name in steps), "every step runs on one node"
    commands = {op.name: op.commands for ops in plans.values() for op in ops if op.changes}

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
    stop_second = step(f"heartbeat and ldirectord stopped and disabled on {second}")
    start_second = step(f"keepalived started and enabled on {second}, joining as BACKUP")
    joined = step(f"keepalived on {second} is VRRP BACKUP")
    final = [n for n in names if n.startswith("Migration 4/4: load")]
    order = [hold, stop_first, start_first, held, disable, arm, release, take, stop_second, start_second, joined]
    assert [names.index(n) for n in order] == sorted(names.index(n) for n in order)
    assert [runs_on[n] for n in order] == [first] * 4 + [second, first, second, first] + [second] * 3
    assert runs_on[hold] == runs_on[take] == first
    # the hold is set before keepalived starts, and cleared by the handover only
    assert commands[hold] == [f"{render.KEEPALIVED_PROGRAM} hold 1"]
    assert commands[start_first] == ["systemctl enable keepalived.service", "systemctl start keepalived.service"]
    addresses = " ".join(render.floating_ips_arguments(on_keepalived))
    assert commands[release] == [f"{render.MIGRATE_SCRIPT} release {migration.RELEASE_TIMEOUT} {addresses}"]
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
    steps = [op.name for op in _migration_ops(_plan(on_keepalived, machines, first.name))]
    assert not any(s.startswith("Migration 1/4") for s in steps)
    assert steps[0].startswith(f"Migration 2/4: keepalived on {first.name} runs held")
    assert any(f"heartbeat stops on {second.name}" in s for s in steps)


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
    assert changing(ops)[f"Migration 3/4: heartbeat and ldirectord stopped and disabled on {second.name} "
                         "(IPVS stays loaded)"]


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
        assert "Nothing was changed" in message
        for b in cluster.balancers:
            assert f"{b.name}: heartbeat " in message  # each node's state named
        for text in texts:
            assert text in message


@pytest.mark.parametrize("holders", [(), ("balancer1", "balancer2"), ("split",)])
def test_a_pair_without_one_holder_is_refused(reference, holders):
    on_keepalived = replace(reference, engine="keepalived")
    machines = {b.name: _machine(reference, b, holds=b.name in holders) for b in reference.balancers}
    if holders == ("split",):
        gateway = reference.floating_ips()[0]
        machines["balancer1"].addresses[gateway.interface].append(gateway.cidr)
    _refused(on_keepalived, machines, "one balancer carrying every floating address and the other none")


def test_ipvs_missing_on_the_node_to_convert_is_refused(reference):
    on_keepalived = replace(reference, engine="keepalived")
    machines = _pair(reference)
    backup = reference.peer(reference.master).name
    lost = reference.virtual_servers()[0]
    machines[backup].ipvs.remove(f"TCP {lost.address}")
    _refused(on_keepalived, machines, f"IPVS on {backup}", f"lacks {lost.address}")


def test_heartbeat_not_running_on_the_holder_is_refused(reference):
    on_keepalived = replace(reference, engine="keepalived")
    machines = _pair(reference)
    machines[reference.master.name].states["heartbeat.service"] = "auto-restart"
    _refused(on_keepalived, machines, f"heartbeat on {reference.master.name} is auto-restart, not running")


def test_heartbeat_beside_a_keepalived_holder_is_refused(reference):
    on_keepalived = replace(reference, engine="keepalived")
    first, second = reference.peer(reference.master), reference.master
    machines = {first.name: _keepalived_node(on_keepalived, first, reference, holds=True),
                second.name: _machine(reference, second)}
    _refused(on_keepalived, machines, f"heartbeat runs on {second.name} while {first.name} carries the addresses",
             "systemctl disable --now heartbeat")


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


def test_going_back_to_heartbeat_before_the_handover_is_refused_with_the_way_that_costs_nothing(models):
    """B held (keepalived running, carrying nothing), H serving on heartbeat: disabling
    keepalived on B moves nothing, unlike the general way back."""
    on_heartbeat, on_keepalived = models
    first, second = on_keepalived.peer(on_keepalived.master), on_keepalived.master
    machines = {first.name: _held_node(on_keepalived, first, on_heartbeat),
                second.name: _machine(on_heartbeat, second, holds=True)}
    _refused(on_heartbeat, machines,
             f"the migration to keepalived stopped before its handover: {first.name} runs keepalived held out of "
             f"MASTER by the migration's hold ({render.KEEPALIVED_HOLD_FILE}) and carries no floating address, and "
             f"{second.name} serves on heartbeat. Going back costs no interruption",
             f"on {first.name}, `systemctl disable --now keepalived`, then `{render.KEEPALIVED_PROGRAM} hold 0` "
             f"(only once keepalived is stopped there")
    for name in machines:
        with pytest.raises(DeployError) as refused:
            _plan(on_heartbeat, machines, name)
        assert "the sites are down" not in str(refused.value)
    # not held (keepalived started by hand beside heartbeat): the general way back
    machines[first.name].hold = False
    _refused(on_heartbeat, machines, "the sites are down until heartbeat takes over")
