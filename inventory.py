"""The reference cluster of the recipe, described once.

Usage: `pyinfra inventory.py deploy.py --dry --diff`, then without `--dry`.
The heartbeat secret comes from LVSHA_HEARTBEAT_SECRET_FILE (a 0600 file
outside this repository). Connection settings are kept apart from the model:
the lab reuses `CLUSTER` with its own (see lvsha/lab/inventory.py).

This fixes the recipe's inconsistencies by construction: every list (floating
IPs, firewall VIPs, virtual servers, mail NAT) is derived from `sites` and
`web_hosts`, and each site's real servers are the web hosts' addresses for
that site (hostA .1 / hostB .4 / hostC .7 for the first site, and so on).
"""

from lvsha.inventory import production_groups, validated_or_exit
from lvsha.model import (
    Balancer,
    Cluster,
    Firewall,
    Heartbeat,
    HeartbeatAuth,
    Service,
    Site,
    WebHost,
)
from lvsha.secrets import heartbeat_secret


def reference_cluster(secret: str | None = None) -> Cluster:
    return Cluster(
        name="reference",
        external_network="10.0.0.0/24",
        internal_network="192.168.0.0/24",
        internal_gateway="192.168.0.254",
        balancers=(
            Balancer("balancer1", external_ip="10.0.0.254", internal_ip="192.168.0.252"),
            Balancer("balancer2", external_ip="10.0.0.253", internal_ip="192.168.0.253"),
        ),
        sites=(
            Site("www.mysite.com", vip="10.0.0.1"),
            Site("www.myothersite.com", vip="10.0.0.3"),
            Site("www.mythirdsite.net", vip="10.0.0.5"),
        ),
        web_hosts=(
            WebHost("hostA", ("192.168.0.1", "192.168.0.2", "192.168.0.3"), mail_ip="10.0.0.21", public_ip="10.0.0.101"),
            WebHost("hostB", ("192.168.0.4", "192.168.0.5", "192.168.0.6"), mail_ip="10.0.0.22", public_ip="10.0.0.102"),
            WebHost("hostC", ("192.168.0.7", "192.168.0.8", "192.168.0.9"), mail_ip="10.0.0.23", public_ip="10.0.0.103"),
        ),
        # 10.0.0.250: the upstream router on the external network (the lab answers for it),
        # pinged to tell a failed link from a failed peer.
        heartbeat=Heartbeat(keepalive=2, warntime=5, deadtime=10, initdead=30, auto_failback=True,
                            auth=HeartbeatAuth("sha1", secret=secret), ping_nodes=("10.0.0.250",)),
        firewall=Firewall(services=(Service("ssh", "tcp", 22), Service("snmp", "udp", 161))),
    )


CLUSTER = validated_or_exit(lambda: reference_cluster(heartbeat_secret()))

_groups = production_groups(CLUSTER)
balancers = _groups["balancers"]
web = _groups["web"]
