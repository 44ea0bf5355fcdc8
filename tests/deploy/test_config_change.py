"""A configuration change on a running heartbeat pair, operation by operation: which
operations run for each kind of change. A site added or removed, a health check or a
real server changed: ldirectord reloaded (never restarted while it runs the same
unit), no heartbeat restart, the new addresses added where heartbeat carries the
group (lvsha-floating-ips reload, run against fakes in
tests/unit/test_floating_ips_script.py). ha.cf, authkeys, and haresources beyond
its addresses still restart heartbeat; a changed drop-in or drift in IPVS still
restarts ldirectord."""

import shlex
from dataclasses import replace

import pytest

from lvsha import render
from lvsha.inventory import CLUSTER_KEY, WEB_SERVER_KEY
from lvsha.lab.model import ROOT
from lvsha.model import Site
from tests.deploy.harness import (LDIRECTORD_CF_OP, LDIRECTORD_RELOAD, OLD_AUTHKEYS, changing,
                                  heartbeat_restart, ipvs_wait, plan_balancer, prepare_run, reload_and_wait)
from tests.deploy.machine import converged_balancer

ADD_ADDRESSES = "The group's floating addresses as the model has them where heartbeat carries it (no restart)"
RECORD = f"{render.APPLIED_SCRIPT} record haresources"


def _running_pair(cluster) -> dict:
    """Both balancers as the deploy of `cluster` left them, the master carrying the group."""
    machines = {b.name: converged_balancer(cluster, b) for b in cluster.balancers}
    for machine in machines.values():  # routable: the edge model's anti-spoofing drops 10.0.0.99
        machine.ssh = {**machine.ssh, "client": "198.51.100.99"}
    for ip in cluster.floating_ips():
        machines[cluster.master.name].addresses[ip.interface].append(ip.cidr)
    return machines


def _added(cluster):
    """`cluster` with one site more (a VIP and an address per web host it does not use)."""
    used = {str(a) for a in cluster.used_addresses()} | {str(cluster.internal_gateway)}
    free = [str(ip) for ip in cluster.internal_net.iter_hosts() if str(ip) not in used]
    vip = next(str(ip) for ip in cluster.external_net.iter_hosts() if str(ip) not in used)
    return replace(cluster, sites=(*cluster.sites, Site("www.added.example", vip=vip)),
                   web_hosts=tuple(replace(h, internal_ips=(*h.internal_ips, ip))
                                   for h, ip in zip(cluster.web_hosts, free)))


def _health_changed(cluster):
    last = cluster.sites[-1]
    checked = replace(last, health=replace(last.health, negotiatetimeout=last.health.negotiatetimeout + 1))
    return replace(cluster, sites=(*cluster.sites[:-1], checked))


def _real_changed(cluster):
    """The last site's real server on the first web host at another address (not its
    first: that one is heartbeat's ping group, in ha.cf)."""
    used = {str(a) for a in cluster.used_addresses()} | {str(cluster.internal_gateway)}
    free = next(str(ip) for ip in cluster.internal_net.iter_hosts() if str(ip) not in used)
    first = cluster.web_hosts[0]
    assert len(first.internal_ips) > 1
    moved = replace(first, internal_ips=(*first.internal_ips[:-1], free))
    return replace(cluster, web_hosts=(moved, *cluster.web_hosts[1:]))


def _removed(cluster):
    return replace(cluster, sites=cluster.sites[:-1],
                   web_hosts=tuple(replace(h, internal_ips=h.internal_ips[:-1]) for h in cluster.web_hosts))


def _no_restart(changes: dict, cluster) -> None:
    for b in cluster.balancers:
        assert heartbeat_restart(cluster, b.name) not in changes and ipvs_wait(cluster, b.name) not in changes
    assert not any(name.startswith("Restart ldirectord") for name in changes), list(changes)


@pytest.mark.parametrize("which", [0, 1])
def test_a_site_added_reloads_ldirectord_and_adds_its_address_without_a_restart(every_model, which):
    """On both balancers, whichever carries the group: ldirectord.cf written and
    reloaded (then the wait for its table), the firewall, lvsha.env and haresources
    (recorded as what heartbeat runs with: it reads it at each takeover) written, and
    the floating addresses' reload, which adds the new VIP on the node that carries
    the group. Nothing restarts, nothing else runs."""
    cluster = every_model
    added = _added(cluster)
    machines = _running_pair(cluster)
    changes = changing(plan_balancer(added, machines, cluster.balancers[which].name))
    _no_restart(changes, added)
    assert set(changes) == {LDIRECTORD_CF_OP, LDIRECTORD_RELOAD, f"Load {render.FIREWALL_RULES}",
                            f"Write {render.HEARTBEAT_ENV}", f"Write {render.HARESOURCES}", ADD_ADDRESSES}, list(changes)
    assert changes[LDIRECTORD_RELOAD] == reload_and_wait(added)
    assert changes[f"Write {render.HARESOURCES}"][-2:] == [f"mv -f {render.HARESOURCES}.lvsha-new {render.HARESOURCES}",
                                                         RECORD]
    (reload,) = changes[ADD_ADDRESSES]
    assert shlex.split(reload) == [render.FLOATING_IPS_SCRIPT, *render.floating_ips_arguments(added), "reload"]
    new_vip = next(ip for ip in added.floating_ips() if str(ip.address) == added.sites[-1].vip)
    assert f"{new_vip.cidr}/{new_vip.interface}" in reload


def test_the_addresses_are_added_after_both_nodes_have_the_new_files_and_ipvs_the_new_service(reference):
    """One operation on both balancers, run by pyinfra on every host before the next:
    the addresses come once both nodes' haresources and lvsha.env name them (a takeover
    from then on moves the new set) and both IPVS tables hold the new service."""
    added = _added(reference)
    machines = _running_pair(reference)
    operations = prepare_run(ROOT / "deploy.py", machines, {CLUSTER_KEY: added, WEB_SERVER_KEY: False})
    where = {name.rsplit(" | ", 1)[-1]: (at, sorted(hosts)) for at, (names, hosts) in enumerate(operations)
             for name in names}
    balancers = sorted(machines)
    order = [LDIRECTORD_RELOAD, f"Write {render.HEARTBEAT_ENV}", f"Write {render.HARESOURCES}", ADD_ADDRESSES]
    assert [where[name][1] for name in order] == [balancers] * len(order)
    assert [where[name][0] for name in order] == sorted(where[name][0] for name in order)


def test_a_health_check_changed_reloads_ldirectord_alone(every_model):
    cluster = every_model
    machines = _running_pair(cluster)
    for name in machines:
        changed = _health_changed(cluster)
        changes = changing(plan_balancer(changed, machines, name))
        assert changes == {LDIRECTORD_CF_OP: changes[LDIRECTORD_CF_OP],
                           LDIRECTORD_RELOAD: reload_and_wait(changed)}, list(changes)


def test_a_real_server_changed_reloads_ldirectord_and_loads_the_firewall(reference):
    machines = _running_pair(reference)
    for name in machines:
        changes = changing(plan_balancer(_real_changed(reference), machines, name))
        _no_restart(changes, reference)
        assert set(changes) == {LDIRECTORD_CF_OP, LDIRECTORD_RELOAD, f"Load {render.FIREWALL_RULES}"}


def test_a_site_removed_reloads_ldirectord_and_removes_its_address_and_service_without_a_restart(reference):
    """ldirectord's reload removes the service its old file named (so may the deploy's
    own removal, which accepts one gone meanwhile: test_roles); the carrier drops the VIP.
    The floating addresses' reload runs as for any change of haresources' addresses
    (it adds nothing here)."""
    removed = _removed(reference)
    machines = _running_pair(reference)
    master, backup = reference.master.name, reference.peer(reference.master).name
    on_master, on_backup = (changing(plan_balancer(removed, machines, n)) for n in (master, backup))
    for changes in (on_master, on_backup):
        _no_restart(changes, removed)
        assert ADD_ADDRESSES in changes
        assert changes[f"Write {render.HARESOURCES}"][-1] == RECORD
        assert LDIRECTORD_RELOAD in changes and "No IPVS service the model does not have" in changes
    assert "No address on eth0 the model does not have" in on_master
    assert "No address on eth0 the model does not have" not in on_backup


def test_a_carrier_lacking_an_address_of_the_model_gets_it_without_a_restart(reference):
    """A run that died after writing haresources, before adding the addresses: the next
    run adds them on the node that carries part of the group (its facts), nothing else."""
    added = _added(reference)
    machines = _running_pair(added)
    vip = next(ip for ip in added.floating_ips() if str(ip.address) == added.sites[-1].vip)
    machines[added.master.name].addresses[vip.interface].remove(vip.cidr)
    assert list(changing(plan_balancer(added, machines, added.master.name))) == [ADD_ADDRESSES]
    assert changing(plan_balancer(added, machines, added.peer(added.master).name)) == {}


@pytest.mark.parametrize("stopped", ["balancer1", "balancer2"])
def test_a_site_added_where_heartbeat_is_stopped_is_read_at_its_start(reference, stopped):
    """A stopped heartbeat is started with the new files: nothing recorded for it, no reload there."""
    added = _added(reference)
    machines = _running_pair(reference)
    machines[stopped].running["heartbeat.service"] = False
    changes = changing(plan_balancer(added, machines, stopped))
    assert ADD_ADDRESSES not in changes
    assert changes[f"Write {render.HARESOURCES}"][-1] != RECORD
    assert changes["Enable and start heartbeat"] == ["systemctl start heartbeat.service"]


def test_an_ipvs_table_lacking_an_old_service_is_still_repaired_by_a_restart(reference):
    """A site added while the table lacks a service the running file names (drift): the
    restart applies the new file too, and no reload runs besides."""
    added = _added(reference)
    machines = _running_pair(reference)
    backup = reference.peer(reference.master).name
    machines[backup].ipvs = machines[backup].ipvs[1:]
    changes = changing(plan_balancer(added, machines, backup))
    lacking = reference.virtual_servers()[0].address
    assert changes[f"Restart ldirectord: its IPVS table lacks {lacking}"] == ["systemctl restart ldirectord.service"]
    assert LDIRECTORD_RELOAD not in changes


def test_the_new_site_missing_from_ipvs_is_not_drift(reference):
    """Before the reload the table lacks the new site's service: not a reason to restart."""
    added = _added(reference)
    machines = _running_pair(reference)
    for name in machines:
        changes = changing(plan_balancer(added, machines, name))
        assert LDIRECTORD_RELOAD in changes and not any(n.startswith("Restart ldirectord") for n in changes)


def test_new_heartbeat_timers_still_restart_heartbeat_in_turn(reference):
    timed = replace(reference, heartbeat=replace(reference.heartbeat, deadtime=reference.heartbeat.deadtime + 2))
    machines = _running_pair(reference)
    for b in reference.balancers:
        changes = changing(plan_balancer(timed, machines, b.name))
        assert changes[heartbeat_restart(timed, b.name)] == [render.HEARTBEAT_RESTART]
        assert ADD_ADDRESSES not in changes and LDIRECTORD_RELOAD not in changes


def test_a_site_added_with_new_timers_restarts_heartbeat_and_adds_nothing_by_hand(reference):
    """A restart reads the new haresources: no reload of the addresses, nothing recorded by the deploy."""
    both = _added(replace(reference, heartbeat=replace(reference.heartbeat, deadtime=reference.heartbeat.deadtime + 2)))
    machines = _running_pair(reference)
    for b in reference.balancers:
        changes = changing(plan_balancer(both, machines, b.name))
        assert heartbeat_restart(both, b.name) in changes and ADD_ADDRESSES not in changes
        assert RECORD not in changes[f"Write {render.HARESOURCES}"]
        assert LDIRECTORD_RELOAD in changes


def test_a_new_group_owner_restarts_heartbeat(reference):
    """haresources beyond its addresses (here its owner, the model's master) is heartbeat's to restart for."""
    machines = _running_pair(reference)
    master, backup = (b.name for b in reference.balancers)
    for machine in machines.values():
        content, mode = machine.files[render.HARESOURCES]
        machine.files[render.HARESOURCES] = (content.replace(f"\n{master} ", f"\n{backup} "), mode)
    for name in machines:
        assert heartbeat_restart(reference, name) in changing(plan_balancer(reference, machines, name))


def test_heartbeat_running_an_older_haresources_than_the_one_on_disk_restarts(reference):
    """The addresses alone differ from the model's, but heartbeat did not start with the
    file on disk either (edited and restarted by hand, a run that died): restarted."""
    added = _added(reference)
    machines = _running_pair(reference)
    name = reference.peer(reference.master).name
    machines[name].applied["heartbeat"][1] = "0" * 40
    assert heartbeat_restart(added, name) in changing(plan_balancer(added, machines, name))


def _other_addresses_on_disk(cluster, machines: dict) -> None:
    """heartbeat runs the model's haresources, and the one on disk differs in its
    addresses alone (edited by hand; a run whose record failed, the model then put back)."""
    for name, machine in machines.items():
        _, other, _ = render.heartbeat_files(_added(cluster), cluster.balancer(name))
        machine.files[render.HARESOURCES] = (other.content, 644)


def test_a_rotation_is_not_put_after_restarts_for_a_haresources_differing_in_its_addresses(reference):
    """heartbeat runs the model's haresources while the one on disk differs in its
    addresses alone: no restart is due for it (heartbeat_runs_stale), so none is waited
    for: the key rotates first, before anything heartbeat rereads is written."""
    machines = _running_pair(reference)
    _other_addresses_on_disk(reference, machines)
    for machine in machines.values():
        machine.files[render.AUTHKEYS] = (OLD_AUTHKEYS, 600)
    for name in machines:
        ops = plan_balancer(reference, machines, name)
        changes = changing(ops)
        _no_restart(changes, reference)
        rotation = [n for n in changes if n.startswith("Rotate the heartbeat key")]
        assert len(rotation) == 5
        names = [op.name for op in ops]
        assert names.index(rotation[-1]) < names.index(f"Write {render.HARESOURCES}")


@pytest.mark.parametrize("stopped", ["balancer1", "balancer2"])
def test_a_rotation_with_a_stopped_node_is_not_refused_for_a_haresources_differing_in_its_addresses(reference,
                                                                                                   stopped):
    """The refusal is for a restart that needs the stopped node serving: none is due here."""
    machines = _running_pair(reference)
    _other_addresses_on_disk(reference, machines)
    for machine in machines.values():
        machine.files[render.AUTHKEYS] = (OLD_AUTHKEYS, 600)
    machines[stopped].running["heartbeat.service"] = False
    running = reference.peer(reference.balancer(stopped)).name
    changes = changing(plan_balancer(reference, machines, running))
    _no_restart(changes, reference)
    assert len([n for n in changes if n.startswith("Rotate the heartbeat key")]) == 5
    assert f"Write {render.AUTHKEYS}" in changing(plan_balancer(reference, machines, stopped))
