"""The balancers' iptables firewall and NAT (IPv4), and their IPv6 firewall."""

from pyinfra.api import deploy
from pyinfra.operations import systemd

from lvsha import render
from lvsha.model import Balancer, Cluster
from tasks.operations import iptables_rules, unit
from tasks.rendered import put


@deploy("Firewall")
def firewall(cluster: Cluster, balancer: Balancer, migrating: bool = False):
    """The model's rulesets, IPv4's and IPv6's, are the loaded ones (each
    tested, then loaded atomically) and netfilter-persistent loads both at
    boot, then turns forwarding on: a ruleset that fails to load leaves the
    host not forwarding. Runs before anything turns forwarding on. Run
    `preflight.check_ssh_survives_firewall` first (the director role does): it
    refuses a ruleset that would cut the deploy's own SSH session. While the pair
    migrates between the engines (`migrating`), IPv4's also accepts the other engine's
    messages (render.firewall_file), until firewall_after_migration."""
    put(render.applied_script())  # records what was loaded
    dropin = put(render.firewall_dropin_file())
    systemd.daemon_reload(name="Reload systemd for the firewall's drop-in", _if=dropin.did_change)
    for family, rules in render.firewall_files(cluster, balancer, migrating).items():
        iptables_rules(name=f"Load {rules.path}", family=family, rules=rules.content, path=rules.path, mode=rules.mode)
    unit(name="Load the firewall at boot", service="netfilter-persistent", running=True, enabled=True)


@deploy("Firewall after the migration")
def firewall_after_migration(cluster: Cluster, balancer: Balancer):
    """The model's IPv4 ruleset alone, once the migration's steps are done: heartbeat's
    messages no longer accepted (tasks/migration.py)."""
    rules = render.firewall_file(cluster, balancer)
    iptables_rules(name=f"Migration 4/4: load {rules.path} without the other engine's rules", family=4,
                   rules=rules.content, path=rules.path, mode=rules.mode)
