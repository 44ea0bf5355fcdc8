"""Packages for the balancers and web hosts (Debian)."""

from pyinfra.api import deploy
from pyinfra.operations import apt

from tasks.facts import FactRequest, InstalledPackages, read

# conntrackd whether or not the model syncs state: switching sync on needs no install.
BALANCER_PACKAGES = ["ipvsadm", "heartbeat", "ldirectord", "iptables", "iptables-persistent", "conntrackd"]
# engine "keepalived": keepalived instead of heartbeat and ldirectord; ping for its
# ping-node checks (heartbeat pings by itself).
KEEPALIVED_BALANCER_PACKAGES = ["ipvsadm", "keepalived", "iptables", "iptables-persistent", "conntrackd",
                                "iputils-ping"]
WEB_SERVER_PACKAGES = ["nginx", "ssl-cert"]
# With the model's monitoring on (its ipvs collector is on by default).
MONITORING_PACKAGES = ["prometheus-node-exporter"]


def balancer_packages(cluster) -> list[str]:
    """A balancer's packages for the model's engine, and its monitoring's when on."""
    engine = KEEPALIVED_BALANCER_PACKAGES if cluster.engine == "keepalived" else BALANCER_PACKAGES
    return engine + (MONITORING_PACKAGES if cluster.monitoring.enabled else [])


def installed(names: list[str]) -> FactRequest:
    """The fact telling which of `names` are installed."""
    return FactRequest.of(InstalledPackages, names=sorted(names))


@deploy("Packages")
def packages(names: list[str]):
    """`names` are installed, without recommends (heartbeat's would pull in
    pacemaker). The package lists are refreshed only when one is missing, so a
    converged host reports no change however old its apt cache (pyinfra's
    cache_time would report one). On a host that has them all, no operation:
    apt's own would read the package list once more.

    Called from one place for every host (tasks/roles.py: cluster_host), this is
    one pyinfra operation: the balancers' and the web hosts' installs run side by
    side instead of one role after the other."""
    if not names:
        return
    if set(names) <= read(installed(names)):
        return
    apt.packages(name=f"Install {', '.join(names)}", packages=names, no_recommends=True, update=True)
