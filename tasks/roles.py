"""The two roles of the cluster, composed from the smaller deploys."""

from pyinfra.api import deploy
from pyinfra.facts.files import FileContents
from pyinfra.facts.server import Hostname

from lvsha import render
from lvsha.model import Balancer, Cluster, WebHost
from tasks import preflight
from tasks.facts import (MANAGED_FILES, Applied, DefaultRoutes, FactRequest, IfupdownFiles, InterfaceAddresses,
                         IpvsVirtualServices, KeepalivedApplied, KeepalivedHold, KeepalivedMigrateDropin,
                         LdirectordServices, LoadedModules, OsRelease, SshConnection, on_host, read_together, units)
from tasks.firewall import firewall, firewall_after_migration
from tasks.heartbeat import heartbeat, ldirectord
from tasks.keepalived import keepalived
from tasks.migration import Migration
from tasks.kernel import kernel, sysctls_read
from tasks.network import balancer_network, web_host_network
from tasks.monitoring import monitoring
from tasks.packages import WEB_SERVER_PACKAGES, balancer_packages, installed, packages
from tasks.statesync import state_sync
from tasks.webserver import web_server


def cluster_host(cluster: Cluster, name: str, with_web_server: bool = False):
    """The host `name` of the model converged to its role, the one entry point of deploy.py.

    Every check of the role runs first (a failing one raises while pyinfra
    prepares the run, before any operation runs on any host); then the role's
    packages, in the one operation every host shares; then the role. Every fact
    the role reads is loaded in one command, once (tasks/facts.py)."""
    balancer = next((b for b in cluster.balancers if b.name == name), None)
    web_host = None if balancer else cluster.web_host(name)
    read_together(facts_read(cluster, is_balancer=balancer is not None, with_web_server=with_web_server))
    if balancer:
        check_director(cluster, balancer)  # the peer is in the run: its facts are read too (tasks/heartbeat.py),
        with on_host(cluster.peer(balancer).name):  # in the one command of its own role
            read_together(facts_read(cluster, is_balancer=True, with_web_server=False))
        migrating = preflight.check_engine(cluster)  # from both nodes' facts
    else:
        check_real_server(cluster, web_host)
    # pyinfra tells operations apart by the lines of the calls that made them:
    # one call here, for every role, makes the installs one operation.
    packages(balancer_packages(cluster) if balancer else WEB_SERVER_PACKAGES if with_web_server else [])
    if balancer:
        director(cluster, balancer, migrating)
    else:
        real_server(cluster, web_host, with_web_server)


BALANCER_UNITS = ["heartbeat", "ldirectord", "netfilter-persistent", "systemd-networkd", "conntrackd", "lvsha-ipvs-sync",
                  "keepalived"]
MONITORING_UNITS = ["prometheus-node-exporter", "lvsha-metrics.timer"]
WEB_HOST_UNITS = ["systemd-networkd"]
WEB_SERVER_UNITS = [*WEB_HOST_UNITS, "nginx"]


def facts_read(cluster: Cluster, is_balancer: bool, with_web_server: bool) -> list[FactRequest]:
    """What a role's checks and operations read on a converged host."""
    every_host = [FactRequest.of(f) for f in (OsRelease, InterfaceAddresses, IfupdownFiles, DefaultRoutes)]
    every_host.append(MANAGED_FILES)
    if not is_balancer:
        if not with_web_server:
            return every_host + [units(WEB_HOST_UNITS)]
        # Applied: the sites file nginx serves, as recorded (tasks/webserver.py: reload)
        return every_host + [units(WEB_SERVER_UNITS), installed(WEB_SERVER_PACKAGES), FactRequest.of(Applied)]
    # KeepalivedHold on either engine: the migration's decisions (tasks/migration.py) read it.
    balancer_only = [FactRequest.of(f) for f in (Hostname, SshConnection, Applied, IpvsVirtualServices, LoadedModules,
                                                 KeepalivedHold)]
    if cluster.engine == "keepalived":
        balancer_only += [FactRequest.of(KeepalivedApplied), FactRequest.of(KeepalivedMigrateDropin)]
    else:  # what ldirectord's file names, and haresources' group (tasks/heartbeat.py: reload or restart)
        balancer_only += [FactRequest.of(LdirectordServices), FactRequest.of(FileContents, path=render.HARESOURCES)]
    monitored = MONITORING_UNITS if cluster.monitoring.enabled else []
    return every_host + balancer_only + [units(BALANCER_UNITS + monitored), installed(balancer_packages(cluster)),
                                         sysctls_read(cluster)]


def check_director(cluster: Cluster, balancer: Balancer):
    """Distribution, both balancers in the run, `uname -n`, interfaces, SSH surviving the firewall."""
    preflight.check_distribution()
    preflight.check_pair_in_run(cluster)
    preflight.check_node_name(balancer)
    preflight.check_interfaces(cluster.own_addresses(balancer))
    preflight.check_ssh_survives_firewall(cluster, balancer)


def check_real_server(cluster: Cluster, web_host: WebHost):
    """Distribution, interface."""
    preflight.check_distribution()
    preflight.check_interfaces(cluster.own_addresses(web_host))


@deploy("LVS director")
def director(cluster: Cluster, balancer: Balancer, migrating: Migration | None = None):
    """A balancer (checked, its packages installed: cluster_host) converged to
    the model: firewall, kernel (forwarding only once the firewall is loaded),
    own addresses, then the engine's: on heartbeat, ldirectord (IPVS loaded on
    both), connection state sync (before heartbeat can take anything over),
    heartbeat; on keepalived, connection state sync (conntrackd up before
    keepalived can make this node primary), keepalived; then, with the model's
    monitoring on, node_exporter and lvsha's metrics (off: their removal, where they were).

    `migrating` (a running pair on the other engine than the model's: preflight's plan,
    tasks/migration.py): the firewall accepts both engines' messages until the
    migration's steps, in the model's engine's deploy (keepalived, heartbeat), are done,
    then the model's alone. Back to heartbeat, ldirectord starts on both beside
    keepalived's checker (the same table) before the steps."""
    firewall(cluster, balancer, migrating=migrating is not None)
    kernel(cluster)
    balancer_network(cluster, balancer)
    if cluster.engine == "keepalived":
        state_sync(cluster, balancer)
        keepalived(cluster, balancer, migrating)
    else:
        ldirectord(cluster, balancer)
        state_sync(cluster, balancer)
        heartbeat(cluster, balancer, migrating)
    if migrating:
        firewall_after_migration(cluster, balancer)
    monitoring(cluster, balancer)


@deploy("Real server")
def real_server(cluster: Cluster, web_host: WebHost, with_web_server: bool = False):
    """A web host (checked, its packages installed: cluster_host) converged to the
    model: its site addresses and the floating gateway as its only default
    route; optionally nginx serving every site."""
    web_host_network(cluster, web_host)
    if with_web_server:
        web_server(cluster, web_host)
