"""A second cluster, written as a new operator would: copy `inventory.py`, change
the model, keep `deploy.py` and `tasks/` as they are.

    LVSHA_HEARTBEAT_SECRET_FILE=~/secrets/edge-heartbeat pyinfra examples/edge/inventory.py deploy.py --dry --diff

It differs from the reference cluster in every dimension the model has:
other host names; a public external network (a documentation range here) and
a /16 internal network, with the sites' addresses in their own /24s inside it;
two sites, one of which is plain HTTP on port 80 only, round robin and
without persistence; two web hosts; faster heartbeat timers; and
`auto_failback` off, so the group stays where a takeover put it (no second
outage when the old master returns); and no connection state sync, so a
takeover resets established connections (the lab shows that they break here
and survive on the reference cluster).

The lab runs its end-to-end tier against it: `LVSHA_LAB_INVENTORY=examples/edge/inventory.py
lvsha lab run` (the whole tier), and the default test run includes a subset
on it (deploy, traffic, firewall, a takeover, a heartbeat configuration change).
"""

from lvsha.inventory import production_groups, validated_or_exit
from lvsha.model import (
    Balancer,
    Cluster,
    Firewall,
    HealthCheck,
    Heartbeat,
    HeartbeatAuth,
    Service,
    Site,
    StateSync,
    WebHost,
)
from lvsha.secrets import heartbeat_secret


def edge_cluster(secret: str | None = None) -> Cluster:
    return Cluster(
        name="edge",
        external_network="203.0.113.0/24",
        internal_network="10.20.0.0/16",
        internal_gateway="10.20.0.1",
        balancers=(
            Balancer("lb-a", external_ip="203.0.113.2", internal_ip="10.20.0.2"),
            Balancer("lb-b", external_ip="203.0.113.3", internal_ip="10.20.0.3"),
        ),
        sites=(
            # HTTP and HTTPS, weighted least connections, a client kept on one web host for 15 min.
            Site("shop.example.org", vip="203.0.113.10", persistent=900),
            # Plain HTTP only: one port, round robin, no persistence.
            Site("static.example.org", vip="203.0.113.11", ports=(80,), virtual_port=80,
                 scheduler="rr", persistent=None, health=HealthCheck(checkport=None)),
        ),
        web_hosts=(
            # One internal address per site, in the order of `sites`: 10.20.1.x shop, 10.20.2.x static.
            WebHost("web-1", ("10.20.1.11", "10.20.2.11"), mail_ip="203.0.113.25"),
            WebHost("web-2", ("10.20.1.12", "10.20.2.12"), mail_ip="203.0.113.26"),
        ),
        heartbeat=Heartbeat(keepalive=1, warntime=3, deadtime=6, initdead=20, auto_failback=False,
                            auth=HeartbeatAuth("sha1", secret=secret)),
        firewall=Firewall(services=(Service("ssh", "tcp", 22),)),
        # No IPVS sync daemons, no conntrackd: clients reconnect after a takeover.
        state_sync=StateSync(enabled=False),
    )


CLUSTER = validated_or_exit(lambda: edge_cluster(heartbeat_secret()))

_groups = production_groups(CLUSTER)
balancers = _groups["balancers"]
web = _groups["web"]
