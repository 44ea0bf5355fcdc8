"""The deploy never hands the floating addresses, by a heartbeat restart, to a node
whose IPVS does not hold the model's virtual services: before each balancer's
restart its peer waits for its IPVS (lvsha-ipvs-ready --strict, run against a fake
ipvsadm in tests/unit/test_ipvs_ready_script.py), and only in a run that restarts."""

from dataclasses import replace

import pytest

from lvsha import render
from lvsha.inventory import CLUSTER_KEY, WEB_SERVER_KEY
from lvsha.lab.model import ROOT
from tests.deploy.harness import changing, heartbeat_restart, ipvs_wait, plan_balancer, prepare_run
from tests.deploy.machine import converged_balancer

def wait(cluster) -> str:
    """The deploy's wait on the peer: its bound from the model (render.ipvs_takeover_timeout)."""
    return f"{render.IPVS_READY_SCRIPT} --strict {render.ipvs_takeover_timeout(cluster)}"


def _pair(cluster):
    return {b.name: converged_balancer(cluster, b) for b in cluster.balancers}


def _old_ha_cf(machine):
    machine.files[render.HA_CF] = ("# an old configuration\n", 644)


def _old_haresources(machine):
    machine.files[render.HARESOURCES] = ("balancer1 IPaddr2::10.0.0.1/24/eth0\n", 644)


def _stale(machine):
    machine.applied["heartbeat"] = ["digest-of-an-older-ha.cf"]


def _stopped(machine):
    _old_ha_cf(machine)
    machine.running["heartbeat.service"] = False


def _disabled(machine):
    _old_ha_cf(machine)
    machine.enabled["heartbeat.service"] = False


def _new_secret(machine):  # a running pair rotates a new key in place: no restart
    machine.files[render.AUTHKEYS] = ("auth 1\n1 sha1 an-older-secret\n", 600)


def _new_secret_stopped(machine):  # written, and heartbeat started with it: no restart
    _new_secret(machine)
    machine.running["heartbeat.service"] = False


def _nothing(machine):
    pass


@pytest.mark.parametrize("change", [_old_ha_cf, _old_haresources, _stale, _stopped, _disabled, _new_secret,
                                    _new_secret_stopped, _nothing])
@pytest.mark.parametrize("restarted", ["balancer1", "balancer2"])
def test_the_peer_waits_for_its_ipvs_exactly_when_the_node_restarts(reference, change, restarted):
    """restart_due, read from the node's facts on its peer, agrees with the node's own
    restart operation, in each case that restarts heartbeat and each that does not."""
    machines = _pair(reference)
    change(machines[restarted])
    peer = reference.peer(reference.balancer(restarted)).name
    on_node, on_peer = (changing(plan_balancer(reference, machines, n)) for n in (restarted, peer))
    restarts = heartbeat_restart(reference, restarted) in on_node
    assert restarts == (change in (_old_ha_cf, _old_haresources, _stale))  # the cases mean what they say
    assert (on_peer.get(ipvs_wait(reference, restarted)) == [wait(reference)]) == restarts
    # never on the node itself, never for the peer's restart that does not happen
    assert ipvs_wait(reference, restarted) not in on_node
    assert ipvs_wait(reference, peer) not in on_node and ipvs_wait(reference, peer) not in on_peer


@pytest.mark.parametrize("name", ["balancer1", "balancer2"])
def test_a_no_op_run_waits_for_nothing(reference, name):
    machines = _pair(reference)
    ops = plan_balancer(reference, machines, name)
    assert changing(ops) == {}
    assert {ipvs_wait(reference, b.name) for b in reference.balancers} <= {op.name for op in ops}  # there, not run


def test_when_both_restart_each_waits_for_the_other_just_before_and_in_turn(reference):
    """A new ha.cf on both: the master waits before the backup's restart, then the
    backup before the master's; each wait is the operation just before the restart."""
    machines = _pair(reference)
    for machine in machines.values():
        _old_ha_cf(machine)
    backup, master = reference.peer(reference.master).name, reference.master.name
    order = [step(reference, name) for name in (backup, master) for step in (ipvs_wait, heartbeat_restart)]
    for name in (backup, master):
        ops = plan_balancer(reference, machines, name)
        names = [op.name for op in ops]
        assert [names.index(n) for n in order] == list(range(names.index(order[0]), names.index(order[0]) + 4))
        changes = changing(ops)
        mine = [n for n in order if n in changes]
        assert mine == ([order[1], order[2]] if name == backup else [order[0], order[3]]), mine
        assert all(changes[n] == [wait(reference)] for n in mine if n.startswith("IPVS on"))


def test_a_peer_whose_ldirectord_is_restarted_in_this_run_waits_after_that_restart(reference):
    """The fresh-machine run's case: the peer's table empty, its ldirectord restarted
    by this run (it loads IPVS seconds later), the node's heartbeat restarted later in
    the same run: the peer's wait comes between the two."""
    machines = _pair(reference)
    node, peer = reference.master.name, reference.peer(reference.master).name
    _old_ha_cf(machines[node])
    machines[peer].ipvs = []
    changes = changing(plan_balancer(reference, machines, peer))
    lacking = ", ".join(vs.address for vs in reference.virtual_servers())
    names = list(changes)
    assert names == [f"Restart ldirectord: its IPVS table lacks {lacking}", ipvs_wait(reference, node)], names
    assert changes[ipvs_wait(reference, node)] == [wait(reference)]


def test_a_failed_wait_stops_the_run_before_the_restart_on_any_host(reference):
    """pyinfra runs an operation on every host before the next starts, and with
    FAIL_PERCENT = 0 (config.py, test_roles) a failure stops the run there: each wait
    is one operation shared by both balancers, ordered before the restart it guards,
    so a wait that fails (lvsha-ipvs-ready --strict exits 1 after its timeout) leaves
    the node's heartbeat running as it was."""
    machines = _pair(reference)
    for machine in machines.values():
        _old_ha_cf(machine)
    operations = prepare_run(ROOT / "deploy.py", machines, {CLUSTER_KEY: reference, WEB_SERVER_KEY: False})
    balancers = sorted(b.name for b in reference.balancers)
    where = {}
    for at, (names, hosts) in enumerate(operations):
        for name in names:
            where[name.rsplit(" | ", 1)[-1]] = (at, sorted(hosts))
    for b in reference.balancers:
        wait_at, wait_hosts = where[ipvs_wait(reference, b.name)]
        restart_at, restart_hosts = where[heartbeat_restart(reference, b.name)]
        assert wait_hosts == restart_hosts == balancers
        assert wait_at == restart_at - 1


@pytest.mark.parametrize("sync", [True, False])
def test_the_wait_is_installed_with_ldirectord_state_sync_or_not(reference, sync):
    cluster = replace(reference, state_sync=replace(reference.state_sync, enabled=sync))
    machines = _pair(cluster)
    del machines[cluster.master.name].files[render.IPVS_READY_SCRIPT]
    ops = plan_balancer(cluster, machines, cluster.master.name)
    names = [op.name for op in ops]
    assert set(changing(ops)) == {f"Write {render.IPVS_READY_SCRIPT}"}
    assert names.index(f"Write {render.IPVS_READY_SCRIPT}") < names.index(ipvs_wait(cluster, cluster.master.name))
