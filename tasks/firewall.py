"""The balancers' iptables firewall and NAT."""

from pyinfra.api import deploy
from pyinfra.operations import systemd

from lvsha import render
from lvsha.model import Balancer, Cluster
from tasks.operations import iptables_rules


@deploy("Firewall")
def firewall(cluster: Cluster, balancer: Balancer):
    """The model's ruleset is the loaded one (tested, then loaded atomically)
    and netfilter-persistent loads it at boot. Run
    `preflight.check_ssh_survives_firewall` first (the director role does):
    it refuses a ruleset that would cut the deploy's own SSH session."""
    rules = render.firewall_file(cluster, balancer)
    iptables_rules(name=f"Load {rules.path}", rules=rules.content, path=rules.path, mode=rules.mode)
    systemd.service(name="Load the firewall at boot", service="netfilter-persistent", enabled=True)
