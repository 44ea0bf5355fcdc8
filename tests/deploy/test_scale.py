"""At hundreds of sites the deploy runs the same operations and reads the same facts as
at three (issue 22): what grows with the sites is the files' content and the commands
of an operation, never the count of operations or of SSH round trips. On each failover
engine: the scale model (examples/scale/inventory.py) as `lvsha lab bench --sites
--engine` deploys it, heartbeat's grown from the reference, keepalived's from
examples/keepalived."""

from __future__ import annotations

import time

import pytest

from lvsha import render
from lvsha.lab.bench import SCALE_INVENTORY
from lvsha.lab.scale import ENGINE_ENV, SITES_ENV, scale_cluster
from lvsha.model import ENGINES
from tasks.roles import cluster_host
from tests.conftest import load_with_test_secret
from tests.deploy.harness import LDIRECTORD_RELOAD, changing, ipvs_wait, plan, plan_balancer
from tests.deploy.machine import converged_balancer, converged_web_host, fresh

SITES = 250


def _scale_model(engine: str, sites: int):
    """The scale inventory's model of `sites` sites on `engine`."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ENGINE_ENV, engine)
        env.setenv(SITES_ENV, str(sites))
        return load_with_test_secret(SCALE_INVENTORY)


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture(scope="module")
def base(engine):
    """The engine's example: the scale model of its own three sites."""
    cluster = _scale_model(engine, 3)
    assert cluster.engine == engine and len(cluster.sites) == 3
    return cluster


@pytest.fixture(scope="module")
def scaled(engine):
    cluster = _scale_model(engine, SITES)
    assert cluster.engine == engine and len(cluster.sites) == SITES
    return cluster


def _balancer_run(cluster, name, machine):
    peer = cluster.peer(cluster.balancer(name))
    others = {peer.name: converged_balancer(cluster, peer).fact}
    started = time.monotonic()
    ops = plan(cluster_host, cluster, name, host_name=name, facts=machine.fact, others=others)
    print(f"\n{cluster.name}: {name}'s deploy planned in {time.monotonic() - started:.2f} s, {len(ops)} operations")
    return ops


def _shape(ops, machine):
    """What costs a run time whatever the content: the operations, and the fact reads (SSH round trips;
    pyinfra reads TmpDir once a process, whichever run comes first)."""
    return [op.path for op in ops], [fact for fact in machine.loads if fact != "TmpDir"]


@pytest.mark.parametrize("index", [0, 1])
def test_a_converged_balancer_runs_the_same_operations_and_reads_at_250_sites(base, scaled, index):
    shapes = []
    for cluster in (base, scaled):
        name = cluster.balancers[index].name
        machine = converged_balancer(cluster, cluster.balancer(name))
        ops = _balancer_run(cluster, name, machine)
        assert changing(ops) == {}
        shapes.append(_shape(ops, machine))
    assert shapes[0] == shapes[1]


def test_a_fresh_balancer_runs_the_same_operations_at_250_sites(base, scaled):
    shapes = []
    for cluster in (base, scaled):
        name = cluster.master.name
        machine = fresh(name, [cluster.master.external_interface, cluster.master.internal_interface])
        ops = _balancer_run(cluster, name, machine)
        shapes.append(([op.path for op in ops], sorted(changing(ops))))
    assert shapes[0] == shapes[1]


def test_a_web_host_runs_the_same_operations_and_reads_at_250_sites(base, scaled):
    shapes = []
    for cluster in (base, scaled):
        host = cluster.web_hosts[1]
        for machine in (converged_web_host(cluster, host), fresh(host.name, [host.interface])):
            ops = plan(cluster_host, cluster, host.name, True, host_name=host.name, facts=machine.fact)
            shapes.append((_shape(ops, machine), sorted(changing(ops))))
    assert shapes[:2] == shapes[2:]
    assert shapes[0][1] == []  # converged: no change


def test_sites_removed_at_scale_are_one_operation_however_many(base, scaled):
    """A balancer of 250 sites deployed with 50: the 200 virtual services left over go
    in the operations a converged run has, not in one each."""
    fewer = scale_cluster(base, 50)
    name = fewer.master.name
    machine = converged_balancer(fewer, fewer.master)
    machine.ipvs = [f"TCP {vs.address}" for vs in scaled.virtual_servers()]
    ops = _balancer_run(fewer, name, machine)
    converged = converged_balancer(fewer, fewer.master)
    assert [op.path for op in ops] == [op.path for op in _balancer_run(fewer, name, converged)]
    (removal,) = changing(ops).values()
    assert sum(f"{vs.vip}:" in " ".join(removal) for vs in scaled.virtual_servers()[50:]) == 200


def test_the_deploys_waits_for_ipvs_allow_for_ldirectords_start_pass_where_it_forks(reference):
    """At 250 sites on heartbeat ldirectord forks (fork=yes past a number of checks), and its
    start pass (a reload's too) adds and checks every real server in turn before IPVS holds
    every service. The peer's wait before a heartbeat restart, and the wait after ldirectord's
    reload (lvsha-ipvs-ready --strict), are bounded by the model's render.ipvs_takeover_timeout,
    which allows for that pass: longer than the reference's, where ldirectord does not fork."""
    cluster = _scale_model("heartbeat", SITES)
    assert cluster.ldirectord_forks() and render.ldirectord_start_pass(cluster) > 0
    assert not reference.ldirectord_forks()
    bound = render.ipvs_takeover_timeout(cluster)
    assert bound > render.ipvs_takeover_timeout(reference)
    machines = {b.name: converged_balancer(cluster, b) for b in cluster.balancers}
    node, peer = cluster.master.name, cluster.peer(cluster.master).name
    machines[node].files[render.HA_CF] = ("# an old configuration\n", 644)  # heartbeat restarts on the node
    machines[peer].applied["ldirectord"] = ["digest-of-an-older-ldirectord.cf"]  # ldirectord reloaded on the peer
    changes = changing(plan_balancer(cluster, machines, peer))
    assert changes[ipvs_wait(cluster, node)] == [f"{render.IPVS_READY_SCRIPT} --strict {bound}"]
    assert changes[LDIRECTORD_RELOAD] == ["systemctl reload ldirectord.service",
                                          f"{render.IPVS_READY_SCRIPT} --strict --reloaded {bound}"]
