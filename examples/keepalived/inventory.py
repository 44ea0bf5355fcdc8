"""The reference cluster on the other failover engine: keepalived (VRRP and IPVS
health checks in one daemon) instead of heartbeat and ldirectord. Written as an
operator would: `inventory.py` copied, `engine="keepalived"` added; nothing else
changes meaning (docs/engines.md, docs/model.md).

    pyinfra examples/keepalived/inventory.py deploy.py --dry --diff

No heartbeat secret: keepalived has no use for heartbeat's authkeys (VRRP is
accepted from the peer's address only: docs/engines.md).

The lab deploys it on VMs laid out like the reference lab:
`LVSHA_LAB_INVENTORY=examples/keepalived/inventory.py lvsha lab up`, then
`lvsha lab deploy`; `LVSHA_LAB_INVENTORY=examples/keepalived/inventory.py lvsha lab run`
runs the lab tier on it (docs/lab.md, "On keepalived").
"""

from lvsha.inventory import production_groups, validated_or_exit
from lvsha.model import Balancer, Cluster, Firewall, Heartbeat, Service, Site, WebHost


def keepalived_cluster() -> Cluster:
    return Cluster(
        name="reference-keepalived",
        engine="keepalived",
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
        # keepalive: VRRP's advert_int; deadtime: the master is declared dead after
        # deadtime / keepalive = 5 missed advertisements (plus under one of skew).
        # 10.0.0.250 (the upstream router; the lab answers for it) is pinged to tell a
        # failed link from a failed peer, as heartbeat's ipfail does.
        heartbeat=Heartbeat(keepalive=2, deadtime=10, auto_failback=True, ping_nodes=("10.0.0.250",)),
        firewall=Firewall(services=(Service("ssh", "tcp", 22), Service("snmp", "udp", 161))),
    )


CLUSTER = validated_or_exit(keepalived_cluster)

_groups = production_groups(CLUSTER)
balancers = _groups["balancers"]
web = _groups["web"]
