"""Packages for the balancers and web hosts (Debian)."""

from pyinfra.api import deploy
from pyinfra.operations import apt

BALANCER_PACKAGES = ["ipvsadm", "heartbeat", "ldirectord", "iptables", "iptables-persistent"]
WEB_SERVER_PACKAGES = ["nginx", "ssl-cert"]


@deploy("Balancer packages")
def balancer_packages():
    """ipvsadm, heartbeat, ldirectord and iptables (with boot-time loading) are installed.

    Recommends are skipped: heartbeat's would pull in pacemaker.
    """
    apt.packages(
        name="Install LVS, heartbeat, ldirectord and iptables",
        packages=BALANCER_PACKAGES,
        no_recommends=True,
        update=True,
        cache_time=3600,
    )


@deploy("Web server packages")
def web_server_packages():
    """nginx and a self-signed certificate for HTTPS are installed."""
    apt.packages(name="Install nginx", packages=WEB_SERVER_PACKAGES, no_recommends=True, update=True, cache_time=3600)
