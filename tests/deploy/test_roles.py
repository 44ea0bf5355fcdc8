"""Operation-level tests of the deploy, against simulated hosts (fixed facts)."""

import shlex
from dataclasses import replace

import pytest
from pyinfra.api.exceptions import DeployError

from lvsha import render
from lvsha.inventory import CLUSTER_KEY, WEB_SERVER_KEY
from lvsha.lab.model import ROOT
from tasks.operations import IPTABLES_RESTORE
from tasks.packages import BALANCER_PACKAGES, WEB_SERVER_PACKAGES
from tasks.roles import cluster_host
from tests.conftest import TEST_SECRET
from tests.deploy.harness import (LDIRECTORD_CF_OP, LDIRECTORD_RELOAD, OLD_AUTHKEYS, changing, plan,
                                  prepare_run, reload_and_wait)
from tests.deploy.machine import converged_balancer, converged_web_host, fresh


def _director(cluster, machine, name="balancer1", others=None, peer=None):
    """The operations on balancer `name` (facts: `machine`); its peer is `peer`,
    by default converged."""
    if others is None:
        peer = peer or converged_balancer(cluster, cluster.peer(cluster.balancer(name)))
        others = {b.name: peer.fact for b in cluster.balancers if b.name != name}
    return plan(cluster_host, cluster, name, host_name=name, facts=machine.fact, others=others)


def _real_server(cluster, machine, name="hostA", web=True):
    return plan(cluster_host, cluster, name, web, host_name=name, facts=machine.fact)


@pytest.mark.parametrize("name", ["balancer1", "balancer2"])
def test_converged_balancer_gets_no_change(reference, name):
    machine = converged_balancer(reference, reference.balancer(name))
    ops = _director(reference, machine, name)
    assert len(ops) > 15
    assert changing(ops) == {}


@pytest.mark.parametrize("name", ["hostA", "hostB", "hostC"])
def test_converged_web_host_gets_no_change(reference, name):
    ops = _real_server(reference, converged_web_host(reference, reference.web_host(name)), name)
    assert changing(ops) == {}


def test_fresh_balancer_is_fully_configured(reference):
    ops = _director(reference, fresh("balancer1", ["eth0", "eth1"]))
    changes = changing(ops)
    commands = [c for cs in changes.values() for c in cs]
    text = "\n".join(commands)
    assert any("apt-get" in c and "install" in c and "heartbeat" in c and "ldirectord" in c for c in commands)
    assert "modprobe -a ip_vs ip_vs_wlc nf_conntrack" in commands
    assert "sysctl net.ipv4.ip_forward=1" in commands
    for path in (render.HA_CF, render.HARESOURCES, render.LDIRECTORD_CF, render.SYSCTL_CONF, render.MODULES_CONF):
        assert path in text, path
    assert "ip addr replace 10.0.0.254/24 dev eth0" in commands
    assert "ip addr replace 192.168.0.252/24 dev eth1" in commands
    # heartbeat is started after its files and the firewall are in place
    names = list(changes)
    assert names.index("Enable and start heartbeat") > names.index("Write /etc/ha.d/haresources")
    for rules in render.firewall_files(reference, reference.balancer("balancer1")).values():
        assert names.index("Enable and start heartbeat") > names.index(f"Load {rules.path}")


def _rules_path(cluster, family: int) -> str:
    return render.firewall_files(cluster, cluster.balancers[0])[family].path


@pytest.mark.parametrize("family", [4, 6])
def test_firewall_is_tested_before_it_replaces_anything(reference, family):
    path, restore, record = _rules_path(reference, family), IPTABLES_RESTORE[family], render.FIREWALL_RECORDS[family]
    ops = _director(reference, fresh("balancer1", ["eth0", "eth1"]))
    (load,) = [op for op in ops if op.name == f"Load {path}"]
    candidate = f"{path}.lvsha-candidate"
    test_at = load.commands.index(f"{restore} --test {candidate}")
    load_at = load.commands.index(f"{restore} {candidate}")
    record_at = next(i for i, c in enumerate(load.commands) if c.startswith(f"{render.APPLIED_SCRIPT} record {record} "))
    upload_to_rules = next(i for i, c in enumerate(load.commands) if "FileUploadCommand" in c and f"{path})" in c)
    # tested, loaded, recorded, and only then the file replaced
    assert test_at < load_at < record_at < upload_to_rules
    # pyinfra stops at a failed command: a ruleset that fails its test leaves the file
    # and the loaded firewall alone (only the candidate was written)
    before_test = load.commands[:test_at + 1]
    assert not any(path in c.replace(candidate, "") for c in before_test)
    assert not any(c.startswith(f"{restore} ") and "--test" not in c for c in before_test)


@pytest.mark.parametrize("family", [4, 6])
def test_a_changed_ruleset_is_tested_then_loaded_and_nothing_else(reference, family):
    path, restore = _rules_path(reference, family), IPTABLES_RESTORE[family]
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    older = render.RenderedFile(path, "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", mode="0640")
    machine.put(older)  # the rules an older model rendered, loaded and recorded
    machine.applied[render.FIREWALL_RECORDS[family]][:1] = render.applied_record([older])
    changes = changing(_director(reference, machine))
    assert list(changes) == [f"Load {path}"]
    candidate = f"{path}.lvsha-candidate"
    load = changes[f"Load {path}"]
    assert load.index(f"{restore} --test {candidate}") < load.index(f"{restore} {candidate}")


def test_authkeys_secret_never_appears_in_commands(reference):
    ops = _director(reference, fresh("balancer1", ["eth0", "eth1"]))
    (authkeys,) = [op for op in ops if op.name == f"Write {render.AUTHKEYS}"]
    from tasks.operations import PRIVATE_STAGING
    # a sudo upload lands first in a folder only the SSH user can enter, then in a file created 0600
    assert shlex.split(authkeys.commands[0]) == ["sh", "-c", f'install -d -m 700 -o "${{SUDO_USER:-$(id -un)}}" {PRIVATE_STAGING}']
    assert authkeys.commands[1].startswith(f"install -m 600 -o root -g root /dev/null {render.AUTHKEYS}")
    assert authkeys.commands[2].endswith(f" via {PRIVATE_STAGING}/authkeys.lvsha-new")
    assert all(TEST_SECRET not in c for op in ops for c in op.commands)
    # what is uploaded: the secret goes only into authkeys' private staging, nowhere else
    carrying = {(op.name, path) for op in ops for path, text in op.uploads.items() if TEST_SECRET in text}
    assert carrying == {(f"Write {render.AUTHKEYS}", f"{render.AUTHKEYS}.lvsha-new")}, carrying
    assert sum(len(op.uploads) for op in ops) > 20  # every rendered file was seen, not none


def test_changed_ha_cf_restarts_heartbeat_but_not_ldirectord(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.files[render.HA_CF] = ("# an old configuration\n", 644)
    changes = changing(_director(reference, machine))
    assert set(changes) == {f"Write {render.HA_CF}", "Restart heartbeat for its new configuration (2 of 2: balancer1)"}


RESTARTS = ["Restart heartbeat for its new configuration (1 of 2: balancer2)",
            "Restart heartbeat for its new configuration (2 of 2: balancer1)"]


@pytest.mark.parametrize("name", ["balancer1", "balancer2"])
def test_heartbeat_restarts_are_one_operation_per_balancer_the_backup_first(reference, name):
    """What the restart does is lvsha-heartbeat-restart's (run against fakes in
    tests/unit/test_heartbeat_scripts.py). Each balancer's restart is its own
    operation, the backup's first: with FAIL_PERCENT = 0 (config.py) a failed
    restart stops the run before the other balancer's."""
    machine = converged_balancer(reference, reference.balancer(name))
    machine.files[render.HARESOURCES] = ("balancer1 IPaddr2::10.0.0.1/24/eth0\n", 644)
    ops = _director(reference, machine, name)
    names = [op.name for op in ops]
    assert names.index(RESTARTS[0]) < names.index(RESTARTS[1])
    changes = changing(ops)
    (mine,) = [r for r in RESTARTS if r.endswith(f": {name})")]
    assert changes[mine] == [render.HEARTBEAT_RESTART]
    assert set(RESTARTS) & set(changes) == {mine}
    # the script and its settings are written before the restart runs
    for path in (render.HEARTBEAT_RESTART, render.HEARTBEAT_ENV, render.HEARTBEAT_GUARD):
        assert names.index(f"Write {path}") < names.index(RESTARTS[0])


def test_project_config_stops_a_run_at_the_first_failed_host():
    from tests.conftest import ROOT
    namespace = {}
    exec((ROOT / "config.py").read_text(), namespace)
    assert namespace["FAIL_PERCENT"] == 0


def test_new_heartbeat_dropin_reloads_systemd_without_restarting_heartbeat(reference):
    machine = converged_balancer(reference, reference.balancer("balancer2"))
    machine.files[render.HEARTBEAT_DROPIN] = ("[Service]\nRestart=no\n", 644)
    changes = changing(_director(reference, machine, "balancer2"))
    assert set(changes) == {f"Write {render.HEARTBEAT_DROPIN}", "Reload systemd for lvsha's unit drop-ins"}


def test_new_floating_ips_script_alone_does_not_restart_heartbeat(reference):
    machine = converged_balancer(reference, reference.balancer("balancer2"))
    machine.files[render.FLOATING_IPS_SCRIPT] = ("#!/bin/sh\n", 755)
    assert set(changing(_director(reference, machine, "balancer2"))) == {f"Write {render.FLOATING_IPS_SCRIPT}"}


LDIRECTORD_RESTART = "Restart ldirectord for its new unit drop-in"
LDIRECTORD_OP = "ldirectord runs on both balancers, enabled at boot"


@pytest.mark.parametrize("name", ["balancer1", "balancer2"])
def test_changed_ldirectord_cf_reloads_ldirectord_on_both_then_waits_for_its_table(reference, name):
    """Never a restart while it runs the same unit: SIGHUP, and ldirectord edits IPVS in
    place; the wait (lvsha-ipvs-ready --strict) returns once IPVS holds every service of the file."""
    machine = converged_balancer(reference, reference.balancer(name))
    machine.files[render.LDIRECTORD_CF] = ("virtual=10.0.0.1:0\n", 644)
    changes = changing(_director(reference, machine, name))
    assert changes == {LDIRECTORD_CF_OP: changes[LDIRECTORD_CF_OP],
                       LDIRECTORD_RELOAD: reload_and_wait(reference)}


def test_ldirectord_cf_is_checked_by_ldirectord_on_the_host_before_it_replaces_the_one_in_place(reference):
    """Uploaded beside it, checked there (lvsha-ldirectord-check: ldirectord's own reading
    of a copy, run against a fake ldirectord in tests/unit/test_ldirectord_check_script.py),
    and only then renamed: pyinfra stops at a failed check, and the file ldirectord starts
    and reloads with stays as it was (a reload of a refused file removes its pid file)."""
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.files[render.LDIRECTORD_CF] = ("virtual=10.0.0.1:0\n", 644)
    ops = _director(reference, machine)
    commands = changing(ops)[LDIRECTORD_CF_OP]
    staged = f"{render.LDIRECTORD_CF}.lvsha-new"
    check = f"{render.LDIRECTORD_CHECK_SCRIPT} {staged}"
    upload = next(i for i, c in enumerate(commands) if "FileUploadCommand" in c)
    assert staged in commands[upload].split(" via ")[0]
    assert commands.index(check) > upload
    assert commands[commands.index(check) + 1:] == [f"mv -f {staged} {render.LDIRECTORD_CF}"]
    names = [op.name for op in ops]
    assert names.index(f"Write {render.LDIRECTORD_CHECK_SCRIPT}") < names.index(LDIRECTORD_CF_OP)


def test_the_ldirectord_check_is_installed_on_its_own(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    del machine.files[render.LDIRECTORD_CHECK_SCRIPT]
    changes = changing(_director(reference, machine))
    assert list(changes) == [f"Write {render.LDIRECTORD_CHECK_SCRIPT}"]
    assert any(c.startswith(f"chmod 0755 {render.LDIRECTORD_CHECK_SCRIPT}") for c in changes[list(changes)[0]])


def test_a_new_ldirectord_dropin_restarts_ldirectord_onto_the_drained_file(reference):
    """Upgrading from ldirectord run by heartbeat: the running one restarts with the drop-in's
    file (a changed unit is only run from a start), and is not reloaded besides."""
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.files[render.LDIRECTORD_DROPIN] = ("[Service]\nRestart=on-failure\n", 644)
    machine.files[render.OLD_LDIRECTORD_SCRIPT] = ("#!/bin/sh\n", 755)
    machine.files[render.LDIRECTORD_CF] = ("virtual=10.0.0.1:0\n", 644)  # a new file too: the restart reads it
    changes = changing(_director(reference, machine))
    assert set(changes) == {f"Write {render.LDIRECTORD_DROPIN}", "Reload systemd for ldirectord's drop-in",
                            LDIRECTORD_CF_OP, LDIRECTORD_RESTART, f"No {render.OLD_LDIRECTORD_SCRIPT}"}
    assert changes[f"No {render.OLD_LDIRECTORD_SCRIPT}"] == [f"rm -f {render.OLD_LDIRECTORD_SCRIPT}"]
    names = [op.name for op in _director(reference, machine)]
    assert names.index("Reload systemd for ldirectord's drop-in") < names.index(LDIRECTORD_RESTART)


@pytest.mark.parametrize("name", ["balancer1", "balancer2"])
def test_a_stopped_or_disabled_ldirectord_is_started_and_enabled_not_restarted(reference, name):
    """ldirectord runs on both balancers (IPVS loaded before a takeover), started
    once its file, its drop-in and the drain script are in place."""
    machine = converged_balancer(reference, reference.balancer(name))
    machine.running["ldirectord.service"] = False
    machine.enabled["ldirectord.service"] = False
    machine.files.pop(render.LDIRECTORD_CF)
    ops = _director(reference, machine, name)
    changes = changing(ops)
    assert changes[LDIRECTORD_OP] == ["systemctl start ldirectord.service", "systemctl enable ldirectord.service"]
    assert LDIRECTORD_RESTART not in changes
    names = [op.name for op in ops]
    for before in (LDIRECTORD_CF_OP, f"Write {render.LDIRECTORD_DROPIN}", f"Write {render.DRAIN_SCRIPT}"):
        assert names.index(before) < names.index(LDIRECTORD_OP)


def test_ldirectord_running_with_files_it_was_never_reloaded_for_is_reloaded(reference):
    """A run died after writing ldirectord.cf, before the reload: the next run applies it."""
    machine = converged_balancer(reference, reference.balancer("balancer2"))
    machine.applied["ldirectord"] = ["digest-of-an-older-ldirectord.cf"]
    assert changing(_director(reference, machine, "balancer2")) == {LDIRECTORD_RELOAD: reload_and_wait(reference)}


@pytest.mark.parametrize("kept", [0, 1])
def test_a_running_ldirectord_whose_ipvs_lacks_a_virtual_service_is_restarted(reference, kept):
    """The fresh-machine run's outage: ldirectord active over an empty (or partial) table.
    The deploy treats it as drift and restarts ldirectord there, nothing else."""
    backup = reference.peer(reference.master)
    machine = converged_balancer(reference, backup)
    machine.ipvs = machine.ipvs[:kept]
    lacking = ", ".join(vs.address for vs in reference.virtual_servers()[kept:])
    assert changing(_director(reference, machine, backup.name)) == {
        f"Restart ldirectord: its IPVS table lacks {lacking}": ["systemctl restart ldirectord.service"]}


def test_a_stopped_ldirectord_with_an_empty_table_is_started_not_restarted(reference):
    backup = reference.peer(reference.master)
    machine = converged_balancer(reference, backup)
    machine.ipvs, machine.running["ldirectord.service"] = [], False
    assert changing(_director(reference, machine, backup.name)) == {LDIRECTORD_OP: ["systemctl start ldirectord.service"]}


def test_heartbeat_running_with_files_it_was_never_restarted_for_is_restarted(reference):
    machine = converged_balancer(reference, reference.balancer("balancer2"))
    machine.applied["heartbeat"] = ["digest-of-an-older-ha.cf"]
    assert changing(_director(reference, machine, "balancer2")) == {
        "Restart heartbeat for its new configuration (1 of 2: balancer2)": [render.HEARTBEAT_RESTART]}


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("drift", ["flushed by hand", "never recorded"])
def test_a_loaded_firewall_that_differs_from_the_model_is_loaded_again(reference, drift, family):
    path, restore, record = _rules_path(reference, family), IPTABLES_RESTORE[family], render.FIREWALL_RECORDS[family]
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    if drift == "flushed by hand":
        machine.applied[f"{record}-now"] = ["digest-of-an-empty-ruleset"]
    else:
        del machine.applied[record]
    changes = changing(_director(reference, machine))
    assert list(changes) == [f"Load {path}"]
    load = changes[f"Load {path}"]
    assert f"{restore} {path}.lvsha-candidate" in load
    assert any(c.startswith(f"{render.APPLIED_SCRIPT} record {record} ") for c in load)


def test_wrong_node_name_stops_before_any_operation(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.hostname = "lb1.example.net"
    with pytest.raises(DeployError, match=r"`uname -n` is 'lb1.example.net' but the model names this balancer 'balancer1'"):
        _director(reference, machine)


@pytest.mark.parametrize("distro", [("Ubuntu", 22), ("Debian", 11), ("Debian", 14)])
def test_unsupported_distribution_is_named(reference, distro):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.distro = distro
    with pytest.raises(DeployError, match=rf"{distro[0]} {distro[1]} is not supported \(supported: Debian 12, Debian 13\)"):
        _director(reference, machine)


def test_debian_13_hosts_get_the_same_deploy(reference):
    """Debian 13's heartbeat, ldirectord, conntrackd and netfilter-persistent keep
    Debian 12's names, paths and options (only their unit files moved to /usr/lib):
    a converged Debian 13 host is a no-op, a fresh one gets the same operations."""
    machine = converged_balancer(reference, reference.master)
    machine.distro = ("Debian", 13)
    assert changing(_director(reference, machine, reference.master.name)) == {}
    web = converged_web_host(reference, reference.web_hosts[0])
    web.distro = ("Debian", 13)
    assert changing(_real_server(reference, web, reference.web_hosts[0].name)) == {}
    name, interfaces = reference.master.name, [i for i, _ in reference.own_addresses(reference.master)]
    twelve, thirteen = fresh(name, interfaces), fresh(name, interfaces)
    thirteen.distro = ("Debian", 13)
    assert list(changing(_director(reference, thirteen, name))) == list(changing(_director(reference, twelve, name)))


def test_firewall_that_would_cut_ssh_is_refused(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.addresses["eth2"] = ["172.30.0.5/24"]
    machine.ssh = {"client": "172.30.0.1", "client_port": 40000, "server": "172.30.0.5", "server_port": 22}
    with pytest.raises(DeployError, match=r"SSH session \(172.30.0.1 -> 172.30.0.5:22 on eth2\) would be dropped"):
        _director(reference, machine)


def test_ssh_over_the_management_interface_is_kept(reference):
    balancer = replace(reference.balancer("balancer1"), management_interface="eth2")
    cluster = replace(reference, balancers=(balancer, reference.balancers[1]))
    machine = converged_balancer(cluster, balancer)
    machine.addresses["eth2"] = ["10.0.2.15/24"]
    machine.ssh = {"client": "10.0.2.2", "client_port": 40000, "server": "10.0.2.15", "server_port": 22}
    assert changing(_director(cluster, machine)) == {}


def test_ssh_routed_by_an_interface_the_firewall_drops_is_refused(reference):
    """Weak host model: the session's address is on the external interface, but the
    kernel routes it by a NIC outside the model (asymmetric routing), which the ruleset
    drops: judged by the route, refused before anything changes."""
    balancer = reference.balancer("balancer1")
    machine = converged_balancer(reference, balancer)
    machine.addresses["eth3"] = ["172.31.0.5/24"]
    machine.ssh = {**machine.ssh, "route_interface": "eth3"}
    with pytest.raises(DeployError, match=rf"routed by eth3 though {balancer.external_interface} holds "
                                          rf"{balancer.external_ip}\) would be dropped by the new firewall"):
        _director(reference, machine)
    machine.ssh = {**machine.ssh, "route_interface": balancer.external_interface}
    assert changing(_director(reference, machine)) == {}


def test_ssh_from_outside_allowed_sources_is_refused(reference):
    from lvsha.model import Service
    cluster = replace(reference, firewall=replace(reference.firewall, services=(Service("ssh", "tcp", 22, ("198.51.100.0/24",)),)))
    machine = converged_balancer(cluster, cluster.balancer("balancer1"))
    with pytest.raises(DeployError, match="would be dropped"):
        _director(cluster, machine)


def test_web_host_loses_competing_default_route(reference):
    machine = converged_web_host(reference, reference.web_host("hostB"))
    machine.routes = [{"gateway": "10.0.2.2", "dev": "eth1"}, {"gateway": "192.168.0.254", "dev": "eth0"}]
    changes = changing(_real_server(reference, machine, "hostB"))
    assert changes == {"Default route via the floating gateway": ["ip route del default via 10.0.2.2 dev eth1"]}


def test_fresh_web_host_gets_addresses_route_and_web_server(reference):
    changes = changing(_real_server(reference, fresh("hostC", ["eth0"]), "hostC"))
    commands = [c for cs in changes.values() for c in cs]
    for ip in ("192.168.0.7", "192.168.0.8", "192.168.0.9"):
        assert f"ip addr replace {ip}/24 dev eth0" in commands
    assert "ip route replace default via 192.168.0.254 dev eth0" in commands
    assert "networkctl reload" in commands
    assert any("nginx" in c and "install" in c for c in commands)


def test_a_changed_set_of_sites_reloads_nginx_and_a_fresh_host_restarts_it(reference):
    """A site added or removed: nginx's graceful reload (no connection refused while it
    applies, which a restart would show the balancers' health checks); its default site
    traded for lvsha's (a fresh host): a restart, which a reload cannot do. After either,
    the deploy waits until nginx listens on each of the host's site addresses, on each
    of the site's real ports (a reload exits 0 when a new address cannot be bound)."""
    def listening(name):
        host = reference.web_host(name)
        wanted = [f"{address}:{port}" for site, address in reference.site_addresses(host)
                  for port in site.real_ports]
        assert len(wanted) == sum(len(site.real_ports) for site in reference.sites) > len(host.internal_ips)
        return shlex.join([render.LISTENING_SCRIPT, "--exact", str(render.NGINX_LISTEN_TIMEOUT), *wanted])

    converged, new = reference.web_hosts[0], reference.web_hosts[-1]
    machine = converged_web_host(reference, converged)
    path = render.web_server_file(reference, converged).path
    content, mode = machine.files[path]
    machine.files[path] = (content.replace("server {", "server {\n    # an older set of sites", 1), mode)
    changes = changing(_real_server(reference, machine, converged.name))
    assert changes["Reload nginx for its new sites"] == ["systemctl reload nginx.service", listening(converged.name),
                                                         NGINX_RECORD]
    assert "Restart nginx for lvsha's sites in place of its default one" not in changes
    ops = _real_server(reference, fresh(new.name, [new.interface]), new.name)
    changes = changing(ops)
    assert changes["Restart nginx for lvsha's sites in place of its default one"] == [
        "systemctl restart nginx.service", listening(new.name), NGINX_RECORD]
    assert "Reload nginx for its new sites" not in changes
    # the check and the record are installed before the restart runs them
    names = [op.name for op in ops]
    for script in (render.LISTENING_SCRIPT, render.APPLIED_SCRIPT):
        assert names.index(f"Write {script}") < names.index("Restart nginx for lvsha's sites in place of its default one")
        assert any("FileUploadCommand" in c for c in changes[f"Write {script}"])


NGINX_RELOAD = "Reload nginx for its new sites"
# What the reload and the restart run last, once nginx listens on every site address.
NGINX_RECORD = f"{render.APPLIED_SCRIPT} record {render.NGINX_RECORD}"


@pytest.mark.parametrize("recorded", [["digest-of-an-older-sites-file"], None])
def test_nginx_serving_another_sites_file_than_the_one_on_disk_is_reloaded(reference, recorded):
    """A run that wrote the model's sites file, then died before nginx's reload (or whose
    listening check failed), leaves the file on disk as the model's: the next run sees
    from lvsha-applied's record (an older file's, or none: no deploy has applied one)
    that nginx serves another file, and reloads it (graceful: not a restart), waits
    until it listens, and records; nothing else changes."""
    host = reference.web_hosts[0]
    machine = converged_web_host(reference, host)
    if recorded is None:
        del machine.applied[render.NGINX_RECORD]
    else:
        machine.applied[render.NGINX_RECORD] = recorded
    changes = changing(_real_server(reference, machine, host.name))
    assert list(changes) == [NGINX_RELOAD]
    reload, check, record = changes[NGINX_RELOAD]
    assert reload == "systemctl reload nginx.service" and check.startswith(f"{render.LISTENING_SCRIPT} ")
    assert record == NGINX_RECORD


def test_a_run_after_the_reload_changes_nothing(reference):
    """The run that reloads nginx for a new sites file records it (lvsha-applied record
    nginx: the sha1 of the file, test_applied_script); the next run, with the file and the
    record it left, changes nothing."""
    host = reference.web_hosts[0]
    machine = converged_web_host(reference, host)
    sites = render.web_server_file(reference, host)
    older = sites.content.replace("server {", "server {\n    # an older set of sites", 1)
    machine.files[sites.path] = (older, int(sites.mode[1:]))
    machine.applied[render.NGINX_RECORD] = render.applied_record([replace(sites, content=older)])
    changes = changing(_real_server(reference, machine, host.name))
    assert set(changes) == {f"Write {sites.path}", NGINX_RELOAD} and changes[NGINX_RELOAD][-1] == NGINX_RECORD
    machine.put(sites)  # what the run leaves
    machine.applied[render.NGINX_RECORD] = render.applied_record([sites])
    assert changing(_real_server(reference, machine, host.name)) == {}


def test_nginx_listening_check_is_as_shipped(reference):
    """What a fresh web host gets at LISTENING_SCRIPT is files/lvsha/lvsha-listening, executable."""
    host = reference.web_hosts[0]
    (write,) = [op for op in _real_server(reference, fresh(host.name, [host.interface]), host.name)
                if op.name == f"Write {render.LISTENING_SCRIPT}"]
    (uploaded,) = write.uploads.values()
    assert uploaded == (render.FILES / "lvsha" / "lvsha-listening").read_text()
    assert f"chmod 0755 {render.LISTENING_SCRIPT}.lvsha-new" in write.commands


def test_web_server_is_optional(reference):
    ops = _real_server(reference, converged_web_host(reference, reference.web_host("hostA"), web_server=False), web=False)
    assert changing(ops) == {}
    assert not any("nginx" in op.name for op in ops)


@pytest.mark.parametrize("mode, owner", [(644, "root"), (600, "www-data")])
def test_authkeys_mode_or_owner_drift_is_corrected_without_rewriting_it(reference, mode, owner):
    machine = converged_balancer(reference, reference.balancer("balancer2"))
    content, _ = machine.files[render.AUTHKEYS]
    machine.files[render.AUTHKEYS] = (content, mode)
    machine.owners[render.AUTHKEYS] = owner
    changes = changing(_director(reference, machine, "balancer2"))
    (fix,) = changes.values()  # no rewrite of the secret, no heartbeat restart
    assert list(changes) == [f"{render.AUTHKEYS} is private"]
    assert any(c.startswith("chmod 600") for c in fix) if mode != 600 else any("chown" in c for c in fix)


def test_converged_host_with_an_old_apt_cache_stays_a_no_op(reference):
    from datetime import timedelta

    from tests.deploy.machine import NOW
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.apt_updated = NOW - timedelta(days=3)
    assert changing(_director(reference, machine)) == {}


def test_missing_package_refreshes_the_lists_then_installs(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.packages.discard("ldirectord")
    (install,) = changing(_director(reference, machine)).values()
    assert install[0].startswith("apt-get update") and "ldirectord" in install[-1]


@pytest.mark.parametrize("family", [4, 6])
def test_firewall_is_loaded_before_forwarding_is_turned_on(reference, family):
    load = f"Load {_rules_path(reference, family)}"
    names = [op.name for op in _director(reference, fresh("balancer1", ["eth0", "eth1"]))]
    assert names.index(load) < names.index("Forward between the networks (the firewall is loaded)")
    assert not any("ip_forward" in n for n in names[:names.index(load)])


@pytest.mark.parametrize("client, server, match", [
    # an operator at 10.0.5.20: allowed by firewall.services (0.0.0.0/0), dropped in raw
    ("10.0.5.20", "10.0.0.254", r"10.0.5.20 -> 10.0.0.254:22 on eth0\) would be dropped by the new "
                                r"firewall \(-A PREROUTING -i eth0 -s 10.0.4.0/22 -j DROP\)"),
    # rules.v6 accepts no new connection: the next deploy could not connect this way
    ("fe80::1", "fe80::5054:ff:fe00:1", r"SSH session \(fe80::1 -> \[fe80::5054:ff:fe00:1\]:22\) is over IPv6, "
                                        r"which the new firewall drops"),
], ids=["from an anti-spoofed source", "over IPv6"])
def test_ssh_the_new_firewall_drops_is_refused_before_anything_changes(reference, client, server, match):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.ssh = {"client": client, "client_port": 40000, "server": server, "server_port": 22}
    with pytest.raises(DeployError, match=match):
        _director(reference, machine)


def test_a_run_without_the_other_balancer_changes_nothing(reference):
    """--limit balancer1, or balancer2 unreachable and dropped: refused before any operation."""
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.files[render.HA_CF] = ("# an old configuration\n", 644)
    with pytest.raises(DeployError, match="balancer balancer2 is not in this run .* both balancers in one run or neither"):
        _director(reference, machine, others=("hostA",))


def test_a_site_removed_from_the_model_leaves_no_address_and_no_ipvs_service(reference):
    """The active balancer still carries the old site's VIP and IPVS service."""
    smaller = replace(reference, sites=reference.sites[:2],
                      web_hosts=tuple(replace(h, internal_ips=h.internal_ips[:2]) for h in reference.web_hosts))
    machine = converged_balancer(smaller, smaller.balancer("balancer1"))
    for ip in reference.floating_ips():
        machine.addresses[ip.interface].append(ip.cidr)
    machine.ipvs = [f"TCP {vs.vip}:{vs.port}" for vs in reference.virtual_servers()]
    machine.running["ldirectord.service"] = True
    machine.applied["ldirectord"] = render.applied_record([render.ldirectord_file(smaller)])
    changes = changing(_director(smaller, machine))
    assert set(changes) == {"No address on eth0 the model does not have", "No IPVS service the model does not have"}
    (address,) = changes["No address on eth0 the model does not have"]
    shell, flag, script = shlex.split(address)
    assert (shell, flag) == ("sh", "-c") and script.endswith("|| ip addr del 10.0.0.5/24 dev eth0")
    (service,) = changes["No IPVS service the model does not have"]
    shell, flag, script = shlex.split(service)
    # deleted, or gone already (ldirectord's reload removes a service its old file named, maybe at that moment)
    assert (shell, flag, script) == ("sh", "-c", "ipvsadm -D -t 10.0.0.5:0 2>/dev/null "
                                                 "|| ! ipvsadm -Ln -t 10.0.0.5:0 >/dev/null 2>&1")


def test_a_web_host_loses_the_address_of_a_removed_site(reference):
    smaller = replace(reference, sites=reference.sites[:2],
                      web_hosts=tuple(replace(h, internal_ips=h.internal_ips[:2]) for h in reference.web_hosts))
    machine = converged_web_host(smaller, smaller.web_host("hostA"))
    machine.addresses["eth0"].append("192.168.0.3/24")
    changes = changing(_real_server(smaller, machine))
    assert list(changes) == ["No address on eth0 the model does not have"]


def test_a_new_secret_on_a_running_pair_is_rotated_in_place_not_restarted(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.files[render.AUTHKEYS] = ("auth 1\n1 sha1 the-old-secret-0123456789\n", 600)
    ops = _director(reference, machine)
    changes = changing(ops)
    phases = [name for name in changes if name.startswith("Rotate the heartbeat key")]
    assert [changes[p] for p in phases] == [[f"{render.AUTHKEYS_SCRIPT} {phase}"]
                                            for phase in ("accept", "sign", "bridge", "resign", "final")]
    assert set(changes) == {"Stage the new authkeys", *phases}  # no rewrite, no restart
    names = [op.name for op in ops]
    # before anything heartbeat rereads could change (a changed ha.cf would restart it)
    assert names.index(phases[-1]) < names.index(f"Write {render.HA_CF}")


def test_a_new_secret_on_a_stopped_heartbeat_is_written(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.files[render.AUTHKEYS] = ("auth 1\n1 sha1 the-old-secret-0123456789\n", 600)
    machine.running["heartbeat.service"] = False
    changes = changing(_director(reference, machine))
    assert f"Write {render.AUTHKEYS}" in changes
    assert not any(name.startswith("Rotate") for name in changes)


# lvsha-authkeys's resign phase done, its final not: the new key as 1 and as 2
HALF_ROTATED = f"auth 1\n1 sha1 {TEST_SECRET}\n2 sha1 {TEST_SECRET}\n"
ROTATION_PHASES = ("accept", "sign", "bridge", "resign", "final")


def _rotation(changes: dict) -> list:
    return [(name, commands) for name, commands in changes.items()
            if name == "Stage the new authkeys" or name.startswith("Rotate the heartbeat key")]


def _with_authkeys(cluster, name, content, running=True):
    machine = converged_balancer(cluster, cluster.balancer(name))
    machine.files[render.AUTHKEYS] = (content, 600)
    machine.running["heartbeat.service"] = running
    return machine


@pytest.mark.parametrize("done", ["balancer1", "balancer2"])
def test_a_rotation_a_failed_run_left_done_on_one_node_runs_on_both(reference, done):
    """The last run's final phase failed on one node after it had run on the other:
    the next run rotates the pair, both nodes the same phases (the one done does
    nothing in them: tests/unit/test_authkeys_rotation.py), not the unfinished
    node alone, which would sign with an index the other does not have."""
    behind = reference.peer(reference.balancer(done)).name
    machines = {done: converged_balancer(reference, reference.balancer(done)),
                behind: _with_authkeys(reference, behind, HALF_ROTATED)}
    plans = {name: changing(_director(reference, machines[name], name, peer=machines[other]))
             for name, other in ((done, behind), (behind, done))}
    for name, changes in plans.items():
        assert [commands for _, commands in _rotation(changes)][1:] == [
            [f"{render.AUTHKEYS_SCRIPT} {phase}"] for phase in ROTATION_PHASES], name
    assert set(plans[done]) == {name for name, _ in _rotation(plans[done])}


def test_a_node_whose_heartbeat_is_stopped_does_not_hold_up_its_peers_rotation(reference):
    machine = _with_authkeys(reference, "balancer1", OLD_AUTHKEYS)
    peer = _with_authkeys(reference, "balancer2", OLD_AUTHKEYS, running=False)
    assert len(_rotation(changing(_director(reference, machine, peer=peer)))) == 1 + len(ROTATION_PHASES)
    changes = changing(_director(reference, peer, "balancer2", peer=machine))
    assert f"Write {render.AUTHKEYS}" in changes and not _rotation(changes)


@pytest.mark.parametrize("stale", ["balancer1", "balancer2"])
def test_a_pending_heartbeat_restart_comes_before_the_rotation(reference, stale):
    """heartbeat on `stale` runs an ha.cf other than the one on disk (a run died
    before the restart): the rotation's SIGHUP would make heartbeat restart
    itself. The pair restarts first (the backup first), then rotates, on both."""
    machines = {name: _with_authkeys(reference, name, OLD_AUTHKEYS) for name in ("balancer1", "balancer2")}
    machines[stale].applied["heartbeat"] = ["digest-of-an-older-ha.cf", *machines[stale].applied["heartbeat"][1:]]
    for name, other in (("balancer1", "balancer2"), ("balancer2", "balancer1")):
        ops = _director(reference, machines[name], name, peer=machines[other])
        names = [op.name for op in ops]
        changes = changing(ops)
        rotation = [name for name, _ in _rotation(changes)]
        assert len(rotation) == 1 + len(ROTATION_PHASES)
        assert names.index(RESTARTS[1]) < names.index(rotation[0])
        mine = f"Restart heartbeat for its new configuration ({'1 of 2' if name == 'balancer2' else '2 of 2'}: {name})"
        assert (mine in changes) == (name == stale)


def test_a_pending_restart_with_a_stopped_peer_and_a_new_secret_is_refused(reference):
    machine = _with_authkeys(reference, "balancer1", OLD_AUTHKEYS)
    machine.applied["heartbeat"] = ["digest-of-an-older-ha.cf", *machine.applied["heartbeat"][1:]]
    peer = _with_authkeys(reference, "balancer2", OLD_AUTHKEYS, running=False)
    with pytest.raises(DeployError, match="heartbeat is stopped on balancer2 .* Start heartbeat there"):
        _director(reference, machine, peer=peer)


@pytest.mark.parametrize("role", ["balancer1", "balancer2", "web host", "web host without web server"])
def test_a_converged_host_is_checked_in_one_command(every_model, role):
    """Each fact loaded is one SSH round trip, and a run waits for every host at
    each operation: a converged host of any role is read by the one fact the
    role declares (tasks/roles.py: facts_read), nothing else."""
    cluster = every_model
    if role.startswith("balancer"):
        balancer = cluster.balancers[int(role[-1]) - 1]
        machine = converged_balancer(cluster, balancer)
        machine.ssh = None  # not over SSH: whether the firewall keeps a session is other tests'
        assert changing(_director(cluster, machine, balancer.name)) == {}
    else:
        web_host, web = cluster.web_hosts[0], role == "web host"
        machine = converged_web_host(cluster, web_host, web_server=web)
        assert changing(_real_server(cluster, machine, web_host.name, web=web)) == {}
    assert machine.loads == ["FactBundle"]


def test_without_external_gateway_a_balancer_keeps_the_default_route_it_has(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.routes = [{"gateway": "10.0.0.99", "dev": "eth0"}]  # from DHCP or the installer
    ops = _director(reference, machine)
    assert changing(ops) == {}
    assert not any("route" in op.name.lower() for op in ops)
    external = next(f for f in render.balancer_network_files(reference, reference.balancer("balancer1"))
                    if f.path == render.network_file_path("eth0"))
    assert "Gateway=" not in external.content


def test_an_external_gateway_becomes_the_only_default_route_persisted(reference):
    cluster = replace(reference, external_gateway="10.0.0.250")
    external = next(f for f in render.balancer_network_files(cluster, cluster.balancer("balancer1"))
                    if f.path == render.network_file_path("eth0"))
    assert "Gateway=10.0.0.250" in external.content.splitlines()
    machine = converged_balancer(cluster, cluster.balancer("balancer1"))
    machine.routes = [{"gateway": "10.0.0.99", "dev": "eth0"}, {"gateway": "192.168.0.254", "dev": "eth1"}]
    changes = changing(_director(cluster, machine))
    assert changes == {"Default route upstream": ["ip route del default via 10.0.0.99 dev eth0",
                                                  "ip route del default via 192.168.0.254 dev eth1",
                                                  "ip route replace default via 10.0.0.250 dev eth0"]}


CONNTRACKD_OP = "conntrackd runs on both balancers, enabled at boot"
SYNC_DAEMONS_OP = "IPVS sync daemons run on both balancers, enabled at boot"
CONNTRACKD_RESTART = "Restart conntrackd for its new configuration"


def test_a_fresh_balancer_syncs_state_before_heartbeat_can_take_anything_over(reference):
    changes = changing(_director(reference, fresh("balancer1", ["eth0", "eth1"])))
    names = list(changes)
    assert any("install" in c and "conntrackd" in c for cs in changes.values() for c in cs)
    assert changes[CONNTRACKD_OP] == ["systemctl start conntrackd.service", "systemctl enable conntrackd.service"]
    assert changes[SYNC_DAEMONS_OP] == ["systemctl start lvsha-ipvs-sync.service",
                                        "systemctl enable lvsha-ipvs-sync.service"]
    for path in (render.CONNTRACKD_CONF, render.CONNTRACKD_DROPIN, render.IPVS_SYNC_UNIT, render.IPVS_READY_SCRIPT):
        assert names.index(f"Write {path}") < names.index(CONNTRACKD_OP), path
    # the sync daemons wait for ldirectord's IPVS table (lvsha-ipvs-ready): ldirectord is started first
    assert names.index("ldirectord runs on both balancers, enabled at boot") < names.index(SYNC_DAEMONS_OP)
    # the sync ports are open (firewall) before the daemons start, and both run before heartbeat
    assert names.index(f"Load {render.FIREWALL_RULES}") < names.index(CONNTRACKD_OP)
    assert names.index("Reload systemd for the state sync units") < names.index(SYNC_DAEMONS_OP)
    assert names.index(SYNC_DAEMONS_OP) < names.index("Enable and start heartbeat")
    assert names.index(CONNTRACKD_OP) < names.index("Enable and start heartbeat")
    assert names.index(f"Write {render.CONNTRACKD_SCRIPT}") < names.index("Enable and start heartbeat")


def test_a_changed_conntrackd_conf_restarts_conntrackd_alone(reference):
    machine = converged_balancer(reference, reference.balancer("balancer2"))
    machine.files[render.CONNTRACKD_CONF] = ("Stats {\n}\n", 644)  # Debian's statistics-only file
    changes = changing(_director(reference, machine, "balancer2"))
    assert set(changes) == {f"Write {render.CONNTRACKD_CONF}", CONNTRACKD_RESTART}


def test_conntrackd_running_with_a_file_it_was_never_restarted_for_is_restarted(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.applied["conntrackd"] = ["0" * 40]
    assert changing(_director(reference, machine)) == {CONNTRACKD_RESTART: ["systemctl restart conntrackd.service"]}


def test_a_changed_sync_unit_restarts_the_sync_daemons_not_heartbeat(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))
    machine.files[render.IPVS_SYNC_UNIT] = ("[Service]\nExecStart=/bin/true\n", 644)
    changes = changing(_director(reference, machine))
    assert changes == {f"Write {render.IPVS_SYNC_UNIT}": changes[f"Write {render.IPVS_SYNC_UNIT}"],
                       "Reload systemd for the state sync units": ["systemctl daemon-reload"],
                       "Restart the IPVS sync daemons for their new unit": ["systemctl restart lvsha-ipvs-sync.service"]}


def test_state_sync_switched_off_stops_both_and_heartbeat_drops_the_commit(reference):
    machine = converged_balancer(reference, reference.balancer("balancer1"))  # converged with sync on
    unsynced = replace(reference, state_sync=replace(reference.state_sync, enabled=False))
    ops = _director(unsynced, machine)
    changes = changing(ops)
    names = [op.name for op in ops]
    assert changes["conntrackd stopped and disabled (state sync off)"] == [
        "systemctl stop conntrackd.service", "systemctl disable conntrackd.service"]
    assert changes["IPVS sync daemons stopped and disabled (state sync off)"] == [
        "systemctl stop lvsha-ipvs-sync.service", "systemctl disable lvsha-ipvs-sync.service"]
    assert f"No {render.IPVS_SYNC_UNIT}" in changes and f"No {render.CONNTRACKD_DROPIN}" in changes
    # haresources loses lvsha-conntrackd: heartbeat restarts (backup first, each its own turn)
    assert f"Write {render.HARESOURCES}" in changes and RESTARTS[1] in changes
    assert names.index("IPVS sync daemons stopped and disabled (state sync off)") < names.index(RESTARTS[0])
    # and switched on again from there: started before heartbeat restarts with the commit in its group
    again = changing(_director(reference, converged_balancer(unsynced, unsynced.balancer("balancer1"))))
    order = list(again)
    assert order.index(SYNC_DAEMONS_OP) < order.index(RESTARTS[1])
    assert order.index(CONNTRACKD_OP) < order.index(RESTARTS[1])


def test_every_host_installs_its_packages_in_one_operation_of_the_real_deploy_file(reference):
    """deploy.py as the `pyinfra` command prepares it: the balancers' and the web
    hosts' installs are one operation (side by side), the first of the run."""
    machines = {b.name: fresh(b.name, [i for i, _ in reference.own_addresses(b)]) for b in reference.balancers}
    machines |= {h.name: fresh(h.name, [h.interface]) for h in reference.web_hosts}
    operations = prepare_run(ROOT / "deploy.py", machines, {CLUSTER_KEY: reference, WEB_SERVER_KEY: True})
    names, hosts = operations[0]
    assert sorted(hosts) == sorted(machines)
    assert names == ["Packages | Install " + ", ".join(BALANCER_PACKAGES), "Packages | Install " + ", ".join(WEB_SERVER_PACKAGES)]
    assert not any("Install" in name for names, _ in operations[1:] for name in names)


def test_a_changed_file_is_staged_beside_it_and_renamed_over_it(reference):
    """A running service (a script heartbeat runs, lvsha.env every helper reads) never
    reads half a file: the upload goes to a name beside it, gets its owner and mode,
    then one rename replaces the file."""
    backup = reference.peer(reference.master)
    machine = converged_balancer(reference, backup)
    machine.put(render.RenderedFile(render.HEARTBEAT_ENV, "LVSHA_NODE=an-older-one\n", mode="0644"))
    changes = changing(_director(reference, machine, backup.name))
    staged = f"{render.HEARTBEAT_ENV}.lvsha-new"
    mkdir, upload, chown, chmod, rename = changes[f"Write {render.HEARTBEAT_ENV}"]
    assert mkdir == f"mkdir -p {render.HEARTBEAT_ENV.rsplit('/', 1)[0]}"
    assert staged in upload.split(" via ")[0]  # uploaded to the staged name, not over the file
    assert (chown, chmod, rename) == (f"chown root:root {staged}", f"chmod 0644 {staged}",
                                      f"mv -f {staged} {render.HEARTBEAT_ENV}")
