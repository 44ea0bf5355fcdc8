"""Packages for the balancers and web hosts (Debian)."""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt

# conntrackd whether or not the model syncs state: switching sync on needs no install.
BALANCER_PACKAGES = ["ipvsadm", "heartbeat", "ldirectord", "iptables", "iptables-persistent", "conntrackd"]
WEB_SERVER_PACKAGES = ["nginx", "ssl-cert"]


def _installed(name: str, packages: list[str]):
    """`packages` are installed, without recommends; the package lists are
    refreshed only when one is missing, so a converged host reports no change
    however old its apt cache (pyinfra's cache_time would report one)."""
    installed = host.get_fact(DebPackages)
    missing = [p for p in packages if p not in installed]
    apt.packages(name=name, packages=packages, no_recommends=True, update=bool(missing))


@deploy("Balancer packages")
def balancer_packages():
    """ipvsadm, heartbeat, ldirectord, iptables (with boot-time loading) and conntrackd are installed.

    Recommends are skipped: heartbeat's would pull in pacemaker.
    """
    _installed("Install LVS, heartbeat, ldirectord, iptables and conntrackd", BALANCER_PACKAGES)


@deploy("Web server packages")
def web_server_packages():
    """nginx and a self-signed certificate for HTTPS are installed."""
    _installed("Install nginx", WEB_SERVER_PACKAGES)
