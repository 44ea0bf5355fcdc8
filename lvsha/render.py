"""Render every managed file of every host from the cluster model.

The deploy tasks and the `render` command both call these functions, so what
an operator reviews with `lvsha render` is byte for byte what is deployed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from netaddr import IPAddress

from lvsha.model import (HEARTBEAT_UDP_PORT, IPVS_SYNC_GROUP, IPVS_SYNC_PORT, VRRP_PRIORITIES, VRRP_PROTOCOL,
                         VRRP_ROUTER_ID, Balancer, Cluster, Site, WebHost)
from lvsha.validate import validate

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FILES = Path(__file__).resolve().parent.parent / "files"

# Where each file lives on the hosts.
HA_CF = "/etc/ha.d/ha.cf"
HARESOURCES = "/etc/ha.d/haresources"
AUTHKEYS = "/etc/ha.d/authkeys"
LDIRECTORD_CF = "/etc/ha.d/ldirectord.cf"
FLOATING_IPS_SCRIPT = "/etc/ha.d/resource.d/lvsha-floating-ips"
# lvsha before 0.6 ran ldirectord as a heartbeat resource through this script; the deploy removes it.
OLD_LDIRECTORD_SCRIPT = "/etc/ha.d/resource.d/lvsha-ldirectord"
HEARTBEAT_ENV = "/etc/ha.d/lvsha.env"
# heartbeat's link failure plugin (Debian's heartbeat package).
IPFAIL = "/usr/libexec/heartbeat/ipfail"
HEARTBEAT_GUARD = "/usr/local/sbin/lvsha-heartbeat-guard"
HEARTBEAT_RESTART = "/usr/local/sbin/lvsha-heartbeat-restart"
AUTHKEYS_SCRIPT = "/usr/local/sbin/lvsha-authkeys"
TAKEOVER_SCRIPT = "/usr/local/sbin/lvsha-takeover"
# Run by heartbeat (respawn): the addresses up as soon as heartbeat takes over from the peer.
TAKEOVER_WATCH = "/usr/local/sbin/lvsha-takeover-watch"
# What lvsha-takeover-watch records (since when heartbeat calls the peer dead, the firewall's
# count of the peer's heartbeat packets then) and what lvsha-heartbeat-guard kept across
# heartbeat's restart on it ("SINCE PACKETS KEPT_AT INVOCATION"): the scripts' default state folder.
HEARTBEAT_PEER_DEAD = "/run/lvsha/peer-dead"
HEARTBEAT_KEPT = "/run/lvsha/kept"
# Gratuitous ARP for a large group of floating addresses from one process (FLOATING_IPS_SCRIPT runs it).
ANNOUNCE_SCRIPT = "/usr/local/sbin/lvsha-announce"
# Connection state sync: conntrackd primary/backup (the group's first resource),
# its configuration, and the unit running the kernel's IPVS sync daemons.
CONNTRACKD_SCRIPT = "/etc/ha.d/resource.d/lvsha-conntrackd"
CONNTRACKD_CONF = "/etc/conntrackd/conntrackd.conf"
IPVS_SYNC_UNIT = "/etc/systemd/system/lvsha-ipvs-sync.service"
CONNTRACKD_DROPIN = "/etc/systemd/system/conntrackd.service.d/lvsha.conf"
HEARTBEAT_DROPIN = "/etc/systemd/system/heartbeat.service.d/lvsha.conf"
LDIRECTORD_DROPIN = "/etc/systemd/system/ldirectord.service.d/lvsha.conf"
FIREWALL_DROPIN = "/etc/systemd/system/netfilter-persistent.service.d/lvsha.conf"
APPLIED_SCRIPT = "/usr/local/sbin/lvsha-applied"
DRAIN_SCRIPT = "/usr/local/sbin/lvsha-drain"
IPVS_READY_SCRIPT = "/usr/local/sbin/lvsha-ipvs-ready"
# Whether ldirectord accepts a file: the deploy's check of the staged ldirectord.cf.
LDIRECTORD_CHECK_SCRIPT = "/usr/local/sbin/lvsha-ldirectord-check"
# How long a node waits (lvsha-ipvs-ready) for its IPVS to hold every virtual service of the
# model before it may be handed the group: the deploy before its peer's heartbeat restarts,
# heartbeat.service before heartbeat starts, the sync daemons before they start (at boot):
# an ldirectord just started (Perl, then a first health check of each real server, each up
# to checktimeout) loads its table seconds later. With fork=yes, more: ipvs_takeover_timeout.
IPVS_TAKEOVER_TIMEOUT = 90
# s lvsha-ipvs-sync.service's start may take beyond its wait for IPVS (heartbeat's engine):
# the two daemons' start and the wait's own bounded reads.
SYNC_START_MARGIN = 60
# s lvsha-ipvs-sync.service's start may take on keepalived (no wait for IPVS: the daemons'
# start alone; the value it always had, so that an upgrade does not restart the daemons).
KEEPALIVED_SYNC_START_TIMEOUT = 90
# With fork=yes (many sites), ldirectord's start pass (and a reload's) adds, removes and checks
# every real server in turn before its first checker: the deploy's wait grows by this much per
# real server (ipvs_takeover_timeout). Measured on the lab's emulated 1-vCPU balancers at 250
# sites: 0.85-1.0 s per real server added and removed, ~0.4 s per check (docs/scale.md).
LDIRECTORD_START_PASS_PER_REAL = 2
# What ldirectord.service runs with: LDIRECTORD_CF with the drained real servers at weight 0.
# Named "ldirectord" so that ldirectord's pid file stays Debian's /run/ldirectord.ldirectord.pid.
LDIRECTORD_LIVE_CF = "/run/lvsha/ldirectord"
# keepalived (engine "keepalived"): its configuration, lvsha's unit drop-in, the
# program it runs (notify, track_script, record), conntrackd's primary/backup
# script (the one heartbeat runs from haresources, installed where keepalived's
# script security accepts it), and the sha1 of the file it runs with.
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
KEEPALIVED_BINARY = "/usr/sbin/keepalived"  # Debian's
KEEPALIVED_DROPIN = "/etc/systemd/system/keepalived.service.d/lvsha.conf"
KEEPALIVED_PROGRAM = "/usr/local/sbin/lvsha-keepalived"
KEEPALIVED_CONNTRACKD_SCRIPT = "/usr/local/sbin/lvsha-conntrackd"
KEEPALIVED_APPLIED = "/run/lvsha/keepalived.applied"
# s after a node goes back to backup (conntrackd -t) before conntrackd flushes its kernel's
# states (conntrackd.conf's PurgeTimeout; heartbeat's configuration only: lvsha-conntrackd).
CONNTRACKD_PURGE_TIMEOUT = 60
# What keepalived.service runs with: KEEPALIVED_CONF with the drained real servers at
# weight 0, written (and checked with keepalived -t) by `lvsha-drain --engine keepalived
# render` before every start and reload.
KEEPALIVED_LIVE_CONF = "/run/lvsha/keepalived.conf"
# The VRRP state lvsha-keepalived's notify applied last: one word (MASTER, BACKUP, FAULT,
# STOP) and a newline. `lvsha status` and the metrics read it: keep path and format.
KEEPALIVED_VRRP_STATE = "/run/lvsha/vrrp-state"
# `lvsha failover`'s request on keepalived (lvsha-keepalived failover 0|1), a vrrp_track_file.
KEEPALIVED_FAILOVER_FILE = "/run/lvsha/vrrp-failover"
KEEPALIVED_FAILOVER_TRACK = "lvsha_failover"
# The hold (lvsha-keepalived hold 1|0), a vrrp_track_file of weight 0: any non-zero value
# holds the node in FAULT (no address, no advertisement). The live migration from
# heartbeat sets it on a node whose keepalived starts while its peer still runs heartbeat
# (tasks/migration.py). Persistent (a reboot keeps it); the drop-in creates its directory
# before keepalived starts (keepalived ignores a track file whose directory is missing).
KEEPALIVED_HOLD_FILE = "/var/lib/lvsha/vrrp-hold"
KEEPALIVED_HOLD_TRACK = "lvsha_hold"
# The directories of keepalived.conf's track files: keepalived ignores a track file whose
# directory is missing when it starts or reloads, and 2.3.3's `keepalived -t` dies of it
# (realpath() error, then SIGSEGV: exit 139, seen on a fresh Debian 13 install).
KEEPALIVED_TRACK_DIRS = tuple(sorted({str(PurePosixPath(f).parent)
                                      for f in (KEEPALIVED_FAILOVER_FILE, KEEPALIVED_HOLD_FILE)}))
# keepalived's own check of a file (`{}`: the file), bounded, the track files' directories
# made first; any non-zero exit is a failure (2.2.7 reports configuration errors with 3
# to 5, 124 is the time limit).
KEEPALIVED_CHECK_TIMEOUT = 60
KEEPALIVED_CHECK = (f"mkdir -p {' '.join(KEEPALIVED_TRACK_DIRS)} && "
                    f"timeout {KEEPALIVED_CHECK_TIMEOUT} {KEEPALIVED_BINARY} -t -f {{}}")
# The master-down timer, in advertisements, of the node converted first while the live
# migration from heartbeat hands the group over to it (keepalived_conf's handover
# rendering): it leaves FAULT (the hold cleared) for BACKUP and, hearing no VRRP peer (the
# other node runs heartbeat, stopped), becomes MASTER after down_timer_adverts x advert_int
# plus the skew (keepalived 2.2.7 and 2.3.3: vrrp_scheduler.c try_up_instance,
# vrrp.c vrrp_state_leave_fault), not after the model's deadtime. The hold, not this timer,
# keeps it from taking what heartbeat holds; the model's value is restored by a reload once
# it carries the group (tasks/migration.py).
KEEPALIVED_HANDOVER_DOWN_ADVERTS = 1
# keepalived sends its gratuitous ARPs (vrrp_garp_master_repeat, 5 rounds of every address) at
# once on becoming MASTER: at 254 addresses the lab's balancer got "Error 11 (Resource temporarily
# unavailable) sending gratuitous ARP" for some (the packet socket's send buffer full) and those
# addresses waited for the second set, 5 s later. Past KEEPALIVED_GARP_PACED_ABOVE addresses (as
# heartbeat's lvsha-floating-ips hands over to lvsha-announce: ANNOUNCE_ONE_BY_ONE_MAX), keepalived
# paces them, vrrp_garp_interval apart: round by round, every address's first within
# addresses x interval (0.25 s at 254), all five rounds within 1.3 s.
KEEPALIVED_GARP_PACED_ABOVE = 8
KEEPALIVED_GARP_INTERVAL = "0.001"  # s (keepalived: decimal seconds, microsecond resolution)
# The live migration's steps on a balancer (files/keepalived/lvsha-migrate).
MIGRATE_SCRIPT = "/usr/local/sbin/lvsha-migrate"
# lvsha-migrate retire's runtime drop-in (Restart=no for keepalived while it ends it; removed
# after): one left (the script killed) is removed by the keepalived deploy before it starts keepalived.
KEEPALIVED_MIGRATE_DROPIN = "/run/systemd/system/keepalived.service.d/zz-lvsha-migrate.conf"
# Its weight with auto_failback on: keepalived's lowest (2.2.7, 2.3.3: [-253, 253]); the
# priority it leaves is at least 1, under the peer's (a value * weight of -254 or less is FAULT).
KEEPALIVED_FAILOVER_WEIGHT = -253
# s each ping of a track script (lvsha-keepalived reach) waits for its answer. The script
# runs every keepalive, at least every REACH_WAIT + 1 s. An unanswered ping fails it in
# REACH_WAIT; its timeout (TRACK_SCRIPT_TIMEOUT) is only for a run that hangs: a run late
# because the node is busy (measured in the lab at advert_int 1: runs killed at a 2 s
# timeout every half minute, each dropping the master's priority) is waited for, and
# keepalived skips the runs due meanwhile.
REACH_WAIT = 1
# s a track script run may take before keepalived counts it as failed (at least the
# model's deadtime).
TRACK_SCRIPT_TIMEOUT = 10
# Consecutive failed runs before a track script counts as down, at least (and as many
# more as heartbeat's deadping allows): one late or lost ping is noise, not a failed link.
TRACK_SCRIPT_FALL = 2
# The one VRRP instance: every floating address.
VRRP_INSTANCE = "lvsha"
# keepalived 2.2.7 reads keepalived.conf with fgets(buf, MAXBUF) (lib/parser.h: 1024 bytes):
# a longer line is read in pieces, each parsed as a line of its own.
KEEPALIVED_MAXBUF = 1024
KEEPALIVED_LINE_MAX = KEEPALIVED_MAXBUF - 1  # characters before the newline
FIREWALL_RULES = "/etc/iptables/rules.v4"
FIREWALL6_RULES = "/etc/iptables/rules.v6"
# What lvsha-applied records each IP family's loaded ruleset as ("firewall" predates IPv6).
FIREWALL_RECORDS = {4: "firewall", 6: "firewall6"}
SYSCTL_CONF = "/etc/sysctl.d/60-lvsha.conf"
MODULES_CONF = "/etc/modules-load.d/lvsha.conf"
NETWORKD_DIR = "/etc/systemd/network"
# Monitoring (Cluster.monitoring): Debian's node_exporter, with lvsha's metrics in its
# textfile directory (Debian's default), written by lvsha-metrics on a timer.
METRICS_SCRIPT = "/usr/local/sbin/lvsha-metrics"
METRICS_SERVICE = "/etc/systemd/system/lvsha-metrics.service"
METRICS_TIMER = "/etc/systemd/system/lvsha-metrics.timer"
# lvsha-metrics' settings (the engine, the floating addresses...), rendered from the model.
METRICS_ENV = "/etc/lvsha/metrics.env"
NODE_EXPORTER_DROPIN = "/etc/systemd/system/prometheus-node-exporter.service.d/lvsha.conf"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
METRICS_FILE = f"{TEXTFILE_DIR}/lvsha.prom"
# Each command lvsha-metrics runs is ended after this many seconds; a run after this many.
METRICS_COMMAND_TIMEOUT = 3
METRICS_RUN_TIMEOUT = 60
# Where `lvsha render` writes the Prometheus alert rules (beside the hosts' folders:
# a host name has no dot).
ALERT_RULES = "prometheus-rules.yml"
NGINX_SITES = "/etc/nginx/sites-available/lvsha-sites"
NGINX_SITE_LINK = "/etc/nginx/sites-enabled/lvsha-sites"
NGINX_DEFAULT_SITE_LINK = "/etc/nginx/sites-enabled/default"
# nginx serves each site on the site's own address, on the ports the balancers forward to
# and check there (Site.real_ports). The model says which port speaks TLS only for an https
# health check: nginx serves TLS (Debian's snakeoil certificate) on the port an https check
# talks to, and on this one, as the well-known HTTPS port (every other port: plain HTTP).
NGINX_TLS_PORT = 443
# Waits until something listens on each ADDRESS:PORT given (web hosts): the deploy's check
# after reloading or restarting nginx, whose reload succeeds even when a new address
# cannot be bound; it waits at most NGINX_LISTEN_TIMEOUT s.
LISTENING_SCRIPT = "/usr/local/sbin/lvsha-listening"
NGINX_LISTEN_TIMEOUT = 30
# What lvsha-applied records, once nginx was reloaded or restarted and listens on every
# site address, as the sites file nginx serves (the sha1 of NGINX_SITES).
NGINX_RECORD = "nginx"
# Every folder a managed file lives in: the deploy reads them all in one command.
MANAGED_DIRECTORIES = tuple(sorted({
    str(PurePosixPath(path).parent) for path in (
        HA_CF, FLOATING_IPS_SCRIPT, FIREWALL_RULES, SYSCTL_CONF, MODULES_CONF, HEARTBEAT_GUARD,
        HEARTBEAT_DROPIN, LDIRECTORD_DROPIN, FIREWALL_DROPIN, NGINX_SITES, NGINX_SITE_LINK, f"{NETWORKD_DIR}/x",
        CONNTRACKD_CONF, IPVS_SYNC_UNIT, CONNTRACKD_DROPIN, KEEPALIVED_CONF, KEEPALIVED_DROPIN,
        NODE_EXPORTER_DROPIN, METRICS_ENV,
    )
}))

# A restarted heartbeat waits at most this long for its peer to finish taking
# over (lvsha-heartbeat-guard rejoin): seconds on hardware, up to ~60 s in the TCG lab.
REJOIN_TIMEOUT = 120
# lvsha-heartbeat-restart fails if the pair has not settled after this long.
SETTLE_TIMEOUT = 600
# s heartbeat.service's start may take beyond its waits (deadtime, rejoin, sync listen):
# the guard's listening (warntime), ending a crashed heartbeat's processes (<= 5 s),
# conntrackd's bounded requests, heartbeat's own start.
START_MARGIN = 60
# s heartbeat.service's stop may take, twice (heartbeat -k, then SIGTERM), before systemd
# kills it (Debian's: 30 min, no SIGKILL). A clean stop takes ~8 s on a slow guest.
STOP_TIMEOUT = 30
# systemd restarts a heartbeat that stopped by itself after this many seconds.
RESTART_DELAY = 2
# A node's IPVS sync daemons listen this long past one refresh period before its
# heartbeat starts (lvsha-heartbeat-guard rejoin): the peer's re-sends are batched.
SYNC_LISTEN_MARGIN = 2

# heartbeat 3.0.6 reads its configuration files, and the keys of haresources that
# ResourceManager prints, through fixed buffers of MAXLINE bytes (cluster-glue's
# clplumbing/cl_log.h: 512*10); docs/scale.md says where.
HEARTBEAT_MAXLINE = 5120
# config.c reads ha.cf and haresources with fgets(buf, MAXLINE-1): a longer line is
# read in pieces, each taken for a line of its own (haresources: "Bad nodename").
HEARTBEAT_LINE_MAX = HEARTBEAT_MAXLINE - 3  # characters before the newline
# hb_resource.c runs "ResourceManager givegroup KEY" (and "takegroup", "req_resource")
# from MAXLINE buffers, where KEY is the group's first resource: a longer one is cut.
RESOURCE_MANAGER = "/usr/share/heartbeat/ResourceManager"
GROUP_KEY_MAX = HEARTBEAT_MAXLINE - 1 - len(f"{RESOURCE_MANAGER} givegroup ")
# haresources' resource line is wrapped (a backslash ends each piece; heartbeat and
# ResourceManager join them) past this many characters, so that it never nears a buffer.
HARESOURCES_WRAP = 1000
# iptables-restore (1.8) refuses a parameter of 1024 characters or more ("Parameter
# too long!"): a list of sources longer than that is written as several rules, which is
# what iptables makes of a list anyway (one rule per source).
IPTABLES_PARAMETER_MAX = 1023
# The kernel's neighbour (ARP) table: past gc_thresh2 (512 entries by default) entries
# idle for 5 s are thrown out, past gc_thresh3 (1024) no new neighbour is learnt. A
# balancer talks to every real server's address, and to its external network.
NEIGHBOUR_GC_THRESH2 = 512
NEIGHBOUR_RESERVE = 256  # neighbours beyond the model's: the external network's routers and hosts


@dataclass(frozen=True)
class RenderedFile:
    path: str
    content: str
    mode: str = "0644"


def _quoted(value: object) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    return json.dumps(str(value))


_environment = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)
_environment.filters["quoted"] = _quoted


def source_lists(addresses, limit: int = IPTABLES_PARAMETER_MAX) -> list[str]:
    """`addresses` as iptables `-s` parameters ("A/32,B/32,..."), each at most `limit`
    characters: one parameter while they fit (the same rules, one line)."""
    lists, current = [], ""
    for address in addresses:
        item = f"{address}/32"
        if current and len(current) + 1 + len(item) > limit:
            lists.append(current)
            current = ""
        current = f"{current},{item}" if current else item
    return [*lists, current] if current else lists


_environment.filters["source_lists"] = source_lists


def _render(template: str, cluster: Cluster, **context) -> str:
    return _environment.get_template(template).render(cluster=cluster, **context)


def network_file_path(interface: str) -> str:
    return f"{NETWORKD_DIR}/50-lvsha-{interface}.network"


def heartbeat_files(cluster: Cluster, balancer: Balancer) -> list[RenderedFile]:
    """heartbeat's configuration (a change needs a restart) and authkeys."""
    hb = cluster.heartbeat
    return [
        RenderedFile(
            HA_CF,
            _render("ha.cf.j2", cluster, balancer=balancer, hb=hb, peers=cluster.heartbeat_peers(balancer),
                    udp_port=HEARTBEAT_UDP_PORT, ping_nodes=cluster.external_ping_nodes(),
                    ping_group=cluster.internal_ping_group(), ipfail=IPFAIL, takeover_watch=TAKEOVER_WATCH),
        ),
        RenderedFile(HARESOURCES, _render("haresources.j2", cluster, resources=haresources_group(cluster),
                                          resource_lines=haresources_lines(cluster),
                                          floating_ips=cluster.floating_ips(),
                                          floating_ips_script=Path(FLOATING_IPS_SCRIPT).name)),
        RenderedFile(AUTHKEYS, _render("authkeys.j2", cluster, auth=hb.auth), mode="0600"),
    ]


def sync_listen(cluster: Cluster) -> int:
    """Seconds a rejoining node's IPVS sync daemons listen before its heartbeat
    starts (0: the model syncs no state)."""
    sync = cluster.state_sync
    return sync.refresh_period + SYNC_LISTEN_MARGIN if sync.enabled else 0


def heartbeat_helper_files(cluster: Cluster, balancer: Balancer) -> list[RenderedFile]:
    """What runs around heartbeat, read afresh at each use (no restart needed):
    the resource scripts, the guard, restart, key rotation and planned takeover
    scripts, and their settings."""
    hb = cluster.heartbeat
    sync = cluster.state_sync
    return [
        *(_shipped("heartbeat", path, mode="0755")
          for path in (FLOATING_IPS_SCRIPT, ANNOUNCE_SCRIPT, HEARTBEAT_GUARD, HEARTBEAT_RESTART, AUTHKEYS_SCRIPT,
                       TAKEOVER_SCRIPT, TAKEOVER_WATCH, CONNTRACKD_SCRIPT)),
        RenderedFile(HEARTBEAT_ENV, _render(
            "lvsha.env.j2", cluster, balancer=balancer, peer=cluster.peer(balancer), hb=hb,
            udp_port=HEARTBEAT_UDP_PORT, rejoin_timeout=REJOIN_TIMEOUT, settle_timeout=SETTLE_TIMEOUT,
            floating_ips_script=FLOATING_IPS_SCRIPT, floating_ips=floating_ips_arguments(cluster),
            takeover_watch=TAKEOVER_WATCH, ipvs_ready=IPVS_READY_SCRIPT, ipvs_wait=ipvs_takeover_timeout(cluster),
            state_script=CONNTRACKD_SCRIPT if sync.enabled else "",
            sync_listen=sync_listen(cluster) or "")),
    ]


def state_sync_files(cluster: Cluster, balancer: Balancer) -> list[RenderedFile]:
    """conntrackd's configuration and unit drop-in, and the IPVS sync daemons'
    unit (used only when the model syncs connection state)."""
    link, peer = cluster.sync_link(balancer), cluster.peer(balancer)
    # Both balancers' own addresses and the gateway: no forwarded connection ends there.
    ignored = sorted({IPAddress(a) for b in cluster.balancers for a in (b.external_ip, b.internal_ip, b.sync_ip) if a}
                     | {cluster.gateway})
    files = [
        RenderedFile(CONNTRACKD_CONF, _render(
            "conntrackd.conf.j2", cluster, balancer=balancer, peer=peer, link=link, sync=cluster.state_sync,
            state_script=Path(CONNTRACKD_SCRIPT).name, ignored=ignored, purge_timeout=CONNTRACKD_PURGE_TIMEOUT)),
        _shipped("systemd", CONNTRACKD_DROPIN, source="conntrackd-lvsha.conf"),
        RenderedFile(IPVS_SYNC_UNIT, _render(
            "ipvs-sync.service.j2", cluster, balancer=balancer, peer=peer, link=link, sync=cluster.state_sync,
            group=IPVS_SYNC_GROUP, port=IPVS_SYNC_PORT, ready_script=IPVS_READY_SCRIPT,
            ready_timeout=ipvs_takeover_timeout(cluster),
            start_timeout=KEEPALIVED_SYNC_START_TIMEOUT if cluster.engine == "keepalived"
            else ipvs_takeover_timeout(cluster) + SYNC_START_MARGIN)),
    ]
    # No wait on keepalived (lvsha-ipvs-ready reads ldirectord.cf, heartbeat's engine installs
    # it: ipvs_ready_script): a boot's first moments may sync connections before IPVS is loaded
    # (ipvs-sync.service.j2, docs/limitations.md).
    return files


def monitoring_files(cluster: Cluster, balancer: Balancer) -> list[RenderedFile]:
    """lvsha-metrics and its settings, its service and timer, and node_exporter's
    drop-in (used only when the model's monitoring is on)."""
    mon = cluster.monitoring
    engine_units = ["keepalived.service"] if cluster.engine == "keepalived" else ["heartbeat.service", "ldirectord.service"]
    return [
        _shipped("lvsha", METRICS_SCRIPT, mode="0755"),
        RenderedFile(METRICS_ENV, _render(
            "lvsha-metrics.env.j2", cluster, balancer=balancer, peer=cluster.peer(balancer),
            floating_ips=floating_ips_arguments(cluster))),
        RenderedFile(METRICS_SERVICE, _render(
            "lvsha-metrics.service.j2", cluster, balancer=balancer, script=METRICS_SCRIPT, textfile_dir=TEXTFILE_DIR,
            command_timeout=METRICS_COMMAND_TIMEOUT, run_timeout=METRICS_RUN_TIMEOUT, engine_units=engine_units)),
        RenderedFile(METRICS_TIMER, _render("lvsha-metrics.timer.j2", cluster, interval=mon.interval)),
        RenderedFile(NODE_EXPORTER_DROPIN, _render(
            "node-exporter-dropin.conf.j2", cluster, balancer=balancer, port=mon.port, textfile_dir=TEXTFILE_DIR)),
    ]


def alert_rules(cluster: Cluster) -> str:
    """The Prometheus alert rules for the cluster's lvsha metrics (`lvsha render`
    writes them as ALERT_RULES; a Prometheus server loads them)."""
    # Every floating address, as a PromQL regular expression (its dots escaped: 10\\.0\\.0\\.1).
    addresses = "|".join(str(ip.address).replace(".", "\\\\.") for ip in cluster.floating_ips())
    return _render("prometheus-rules.yml.j2", cluster, virtual_servers=cluster.virtual_servers(), addresses=addresses,
                   gateway=cluster.gateway, mon=cluster.monitoring,
                   stale_after=3 * cluster.monitoring.interval + METRICS_RUN_TIMEOUT)


def drain_script() -> RenderedFile:
    """lvsha-drain: what ldirectord.service (or keepalived.service) starts and reloads
    with (its drop-in)."""
    return _shipped("lvsha", DRAIN_SCRIPT, mode="0755")


def ipvs_ready_script() -> RenderedFile:
    """lvsha-ipvs-ready: waits for ldirectord's IPVS (the sync daemons at boot; with
    --strict, heartbeat's idle start, in the guard's rejoin, and the deploy on a node
    before its peer's heartbeat restarts)."""
    return _shipped("lvsha", IPVS_READY_SCRIPT, mode="0755")


def ldirectord_check_script() -> RenderedFile:
    """lvsha-ldirectord-check: whether ldirectord accepts a file (the deploy checks the
    staged ldirectord.cf with it before renaming it into place)."""
    return _shipped("lvsha", LDIRECTORD_CHECK_SCRIPT, mode="0755")


def migrate_script() -> RenderedFile:
    """lvsha-migrate: the live migrations' steps on a balancer (tasks/migration.py), either way."""
    return _shipped("keepalived", MIGRATE_SCRIPT, mode="0755")


def heartbeat_start_timeout(cluster: Cluster) -> int:
    """s heartbeat.service's start may take (its TimeoutStartSec): the guard's rejoin waits
    (this node's IPVS: ipvs_takeover_timeout; deadtime + 2 keepalives, the rejoin timeout,
    the sync listen) and START_MARGIN."""
    hb = cluster.heartbeat
    return (ipvs_takeover_timeout(cluster) + hb.deadtime + 2 * hb.keepalive + REJOIN_TIMEOUT + sync_listen(cluster)
            + START_MARGIN)


def unit_dropin_files(cluster: Cluster) -> list[RenderedFile]:
    """systemd drop-ins for heartbeat.service and ldirectord.service (a change needs daemon-reload)."""
    return [
        RenderedFile(HEARTBEAT_DROPIN, _render(
            "heartbeat-dropin.conf.j2", cluster, hb=cluster.heartbeat, guard=HEARTBEAT_GUARD,
            ipvs_timeout=ipvs_takeover_timeout(cluster),
            rejoin_timeout=REJOIN_TIMEOUT, restart_delay=RESTART_DELAY, start_margin=START_MARGIN, stop_timeout=STOP_TIMEOUT,
            start_timeout=heartbeat_start_timeout(cluster), sync_listen=sync_listen(cluster),
            sync_units=["conntrackd.service", Path(IPVS_SYNC_UNIT).name] if cluster.state_sync.enabled else [])),
        _shipped("systemd", LDIRECTORD_DROPIN, source="ldirectord-lvsha.conf"),
    ]


def ipvs_takeover_timeout(cluster: Cluster) -> int:
    """How long a node waits (lvsha-ipvs-ready) for its IPVS to hold the model's sites before
    it may be handed the group: the deploy before its peer's heartbeat restarts and after
    ldirectord's reload, heartbeat.service before heartbeat starts, the sync daemons at boot.
    IPVS_TAKEOVER_TIMEOUT, and with fork=yes ldirectord's start pass over every real server
    (LDIRECTORD_START_PASS_PER_REAL s each), which must end before a node is handed the group."""
    return IPVS_TAKEOVER_TIMEOUT + ldirectord_start_pass(cluster)


def ldirectord_start_pass(cluster: Cluster) -> int:
    """Seconds allowed for ldirectord's start pass with fork=yes: LDIRECTORD_START_PASS_PER_REAL
    per real server (0 without fork: a few checks)."""
    if not cluster.ldirectord_forks():
        return 0
    return LDIRECTORD_START_PASS_PER_REAL * sum(len(vs.reals) for vs in cluster.virtual_servers())


def _shipped(folder: str, path: str, mode: str = "0644", source: str | None = None) -> RenderedFile:
    """A file shipped as it is under files/FOLDER/ (no model content)."""
    return RenderedFile(path, (FILES / folder / (source or Path(path).name)).read_text(), mode=mode)


def floating_ips_arguments(cluster: Cluster) -> list[str]:
    """ADDRESS/PREFIX/INTERFACE of each floating address, as FLOATING_IPS_SCRIPT takes them."""
    return [f"{ip.cidr}/{ip.interface}" for ip in cluster.floating_ips()]


def haresources_group(cluster: Cluster) -> list[tuple[str, str]]:
    """(resource, why) in start order; heartbeat stops them in reverse.

    Only the floating addresses, in one resource: heartbeat runs each resource
    through several shell scripts, one at a time, and a takeover is then one
    step. IPVS is not a resource: ldirectord runs on both balancers (systemd
    keeps it running), so the virtual services and their health-checked real
    servers are already loaded on the node that takes over; traffic follows
    the addresses. (A resource running on the idle node would also stop
    heartbeat's start: it refuses to start with a resource active.)

    The group's first resource is its key, which heartbeat passes through buffers
    of its own (GROUP_KEY_MAX): without state sync, addresses too many for one
    key are split in several resources of the same script, each within it.
    """
    script = Path(FLOATING_IPS_SCRIPT).name
    addresses = floating_ips_arguments(cluster)
    chunks, current = [], script
    for address in addresses:
        if current != script and not cluster.state_sync.enabled and len(current) + 2 + len(address) > GROUP_KEY_MAX:
            chunks.append(current)
            current = script
        current = f"{current}::{address}"
    chunks.append(current)
    if len(chunks) == 1:
        group = [(chunks[0], "every floating address, added and removed together")]
    else:
        group = [(chunk, f"floating addresses, part {i} of {len(chunks)} (one resource would be a group key longer "
                         f"than heartbeat's {GROUP_KEY_MAX} characters)") for i, chunk in enumerate(chunks, 1)]
    if cluster.state_sync.enabled:
        group.insert(0, (Path(CONNTRACKD_SCRIPT).name,
                         "conntrackd primary: the peer's connection states committed before the addresses arrive"))
    return group


@dataclass(frozen=True)
class TrackScript:
    """A keepalived `vrrp_script`: while it fails, the node's priority is `weight` lower."""

    name: str
    script: str
    fall: int
    weight: int
    why: str
    timeout: int
    interval: int


def keepalived_track_scripts(cluster: Cluster) -> list[TrackScript]:
    """ipfail's rule on keepalived: with external ping nodes, one check per node and one
    for the web hosts as a group. Each failing check costs more than the difference of
    the two nodes' priorities, so the node that reaches fewer of them than its peer
    yields the group; one that both miss moves nothing. A check fails after as many
    misses as heartbeat's deadping allows (before the peer would be declared dead), and
    never after fewer than TRACK_SCRIPT_FALL: one missed ping moves nothing."""
    nodes = cluster.external_ping_nodes()
    if not nodes:
        return []
    weight = -(VRRP_PRIORITIES[0] - VRRP_PRIORITIES[1] + 1)
    # Every keepalive, but never less than one ping's wait and a second: at advert_int 1
    # the checks run every 2 s. A run that is late is waited for (see REACH_WAIT).
    interval = max(cluster.heartbeat.keepalive, REACH_WAIT + 1)
    timeout = max(TRACK_SCRIPT_TIMEOUT, cluster.heartbeat.deadtime)
    fall = max(TRACK_SCRIPT_FALL, cluster.heartbeat.deadping // interval)
    reach = f"{KEEPALIVED_PROGRAM} reach {REACH_WAIT}"
    checks = [TrackScript(f"lvsha_ping_{str(node).replace('.', '_')}", f"{reach} {node}", fall, weight,
                          f"ping node {node} (external network)", timeout, interval)
              for node in nodes]
    group = " ".join(str(a) for a in cluster.internal_ping_group())
    checks.append(TrackScript("lvsha_web_hosts", f"{reach} {group}", fall, weight,
                              "the web hosts, one group: up while one answers, the first answer ending the check",
                              timeout, interval))
    return checks


def keepalived_conf(cluster: Cluster, balancer: Balancer, handover: bool = False) -> RenderedFile:
    """keepalived.conf of `balancer`: one VRRP instance carrying every floating
    address, and a virtual server per site with ldirectord's checks. `handover`: the
    live migration's rendering for the node that takes the group from heartbeat, the
    same but for its master-down timer (KEEPALIVED_HANDOVER_DOWN_ADVERTS)."""
    interface, address, peer_address = cluster.vrrp_link(balancer)
    sync = cluster.state_sync
    notify = (f"{KEEPALIVED_PROGRAM} notify {KEEPALIVED_CONNTRACKD_SCRIPT} {Path(IPVS_SYNC_UNIT).name}"
              if sync.enabled else f"{KEEPALIVED_PROGRAM} notify - -")
    hold = {"name": KEEPALIVED_HOLD_TRACK, "file": KEEPALIVED_HOLD_FILE}
    failover = {"name": KEEPALIVED_FAILOVER_TRACK, "file": KEEPALIVED_FAILOVER_FILE, "program": KEEPALIVED_PROGRAM,
                "weight": KEEPALIVED_FAILOVER_WEIGHT if cluster.heartbeat.auto_failback else 0}
    # The instance's own interface is tracked by keepalived anyway (naming it is an error).
    tracked = [i for i in dict.fromkeys(i for i, _ in cluster.heartbeat_peers(balancer)) if i != interface]
    return RenderedFile(KEEPALIVED_CONF, _render(
        "keepalived.conf.j2", cluster, balancer=balancer, hb=cluster.heartbeat, instance=VRRP_INSTANCE,
        router_id=VRRP_ROUTER_ID, priority=cluster.vrrp_priority(balancer), down_adverts=cluster.vrrp_down_adverts(),
        handover_down_adverts=KEEPALIVED_HANDOVER_DOWN_ADVERTS if handover else None,
        sync_listen=sync_listen(cluster),
        # keepalived delays every preemption by it: only the master's, returning, waits.
        preempt_delay=sync_listen(cluster) if balancer.name == cluster.master.name else 0, vrrp_interface=interface, vrrp_address=address, vrrp_peer=peer_address,
        tracked_interfaces=tracked, track_scripts=keepalived_track_scripts(cluster), reach_wait=REACH_WAIT,
        floating_ips=cluster.floating_ips(), notify=notify, sync_notify=sync.enabled, vrrp_state=KEEPALIVED_VRRP_STATE,
        failover=failover, hold=hold, virtual_servers=cluster.virtual_servers(),
        garp_interval=KEEPALIVED_GARP_INTERVAL if len(cluster.floating_ips()) > KEEPALIVED_GARP_PACED_ABOVE else None))


def keepalived_files(cluster: Cluster, balancer: Balancer, handover: bool = False) -> list[RenderedFile]:
    """What keepalived runs with: lvsha's program (before the file that names it:
    `keepalived -t` checks the scripts), lvsha-drain (the drop-in derives the file
    keepalived runs with it), conntrackd's primary/backup script with state sync on,
    the unit drop-in, then keepalived.conf (its `handover` rendering: keepalived_conf)."""
    sync_units = ["conntrackd.service"] if cluster.state_sync.enabled else []
    files = [_shipped("keepalived", KEEPALIVED_PROGRAM, mode="0755"), migrate_script(), drain_script()]
    if cluster.state_sync.enabled:
        files.append(_shipped("heartbeat", KEEPALIVED_CONNTRACKD_SCRIPT, mode="0755"))
    files.append(RenderedFile(KEEPALIVED_DROPIN, _render(
        "keepalived-dropin.conf.j2", cluster, sync_units=sync_units, program=KEEPALIVED_PROGRAM, binary=KEEPALIVED_BINARY,
        config=KEEPALIVED_CONF, applied=KEEPALIVED_APPLIED, restart_delay=RESTART_DELAY,
        render_live=f"{DRAIN_SCRIPT} --engine keepalived render", live=KEEPALIVED_LIVE_CONF,
        track_dirs=" ".join(KEEPALIVED_TRACK_DIRS))))
    files.append(keepalived_conf(cluster, balancer, handover))
    return files


def haresources_lines(cluster: Cluster, wrap: int | None = None) -> list[str]:
    """The group's line of haresources (the master, then the resources), written as
    physical lines of at most `wrap` characters where it is longer: each but the last
    ends with a backslash, and is cut only between resources or at a "::" inside
    one. heartbeat's config.c skips such continuation lines, and ResourceManager joins
    them, the backslash and newline removed, into the line as it would be unwrapped
    (docs/scale.md)."""
    wrap = wrap or HARESOURCES_WRAP
    pieces = [f"{cluster.master.name} "]
    resources = [resource for resource, _ in haresources_group(cluster)]
    for n, resource in enumerate(resources):
        first, *rest = resource.split("::")
        parts = [first, *(f"::{part}" for part in rest)]
        if n < len(resources) - 1:
            parts[-1] += " "
        pieces += parts
    lines, current = [], ""
    for piece in pieces:
        if current and len(current) + len(piece) + 1 > wrap:
            lines.append(f"{current}\\")
            current = ""
        current += piece
    return [*lines, current]


def haresources_shape(text: str) -> tuple[tuple[str, ...], ...]:
    """haresources as heartbeat's restart depends on it: each group's line as
    ResourceManager reads it (comments removed, a line ending in a backslash joined
    to the next), its owner then its resources, where a floating addresses' resource
    is its script's name alone (several in a row count as one: a split group). Two
    files of the same shape differ only in the addresses the group moves, which
    heartbeat does not hold: ResourceManager reads haresources at every takeover and
    release (heartbeat 3.0.6 itself reads only its node names, at start; SIGHUP
    rereads ha.cf and authkeys, not haresources), so they need no restart
    (tasks/heartbeat.py)."""
    script = Path(FLOATING_IPS_SCRIPT).name
    lines, current = [], ""
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        if line.endswith("\\"):
            current += line[:-1]
            continue
        lines.append(current + line)
        current = ""
    lines.append(current)
    shape = []
    for line in lines:
        words = line.split()
        if not words:
            continue
        resources: list[str] = []
        for resource in words[1:]:
            name = script if resource.split("::")[0] == script else resource
            if not (name == script and resources and resources[-1] == script):
                resources.append(name)
        shape.append((words[0], *resources))
    return tuple(shape)


def neighbour_thresholds(cluster: Cluster) -> tuple[int, int] | None:
    """(gc_thresh2, gc_thresh3) for a balancer whose neighbours (every real server's
    address, the peer, the fallbacks, NEIGHBOUR_RESERVE on the external network)
    would pass the kernel's default gc_thresh2; None while they stay within it."""
    needed = (len(cluster.sites) * len(cluster.web_hosts) + 2 + len({s.fallback for s in cluster.sites if s.fallback})
              + NEIGHBOUR_RESERVE)
    if needed <= NEIGHBOUR_GC_THRESH2:
        return None
    thresh2 = -(-2 * needed // 256) * 256
    return thresh2, 2 * thresh2


def ldirectord_file(cluster: Cluster) -> RenderedFile:
    return RenderedFile(LDIRECTORD_CF, _render("ldirectord.cf.j2", cluster, virtual_servers=cluster.virtual_servers()))


def firewall_file(cluster: Cluster, balancer: Balancer, migrating: bool = False) -> RenderedFile:
    """rules.v4 of `balancer`. `migrating` (a live migration between the engines,
    tasks/migration.py): heartbeat's rules and VRRP's both, so that the pair's heartbeats
    keep hearing each other until they stop, and keepalived hears its peer once it starts."""
    keepalived = cluster.engine == "keepalived"
    content = _render(
        "rules.v4.j2", cluster, balancer=balancer, peer_links=cluster.heartbeat_peers(balancer),
        spoofed_sources=cluster.spoofed_sources(), mail_routes=cluster.mail_routes(),
        external_floating=[ip for ip in cluster.floating_ips() if ip.interface == balancer.external_interface],
        udp_port=HEARTBEAT_UDP_PORT, vrrp_protocol=VRRP_PROTOCOL,
        vrrp_link=cluster.vrrp_link(balancer) if keepalived or migrating else None,
        heartbeat_rules=not keepalived or migrating,
        sync=cluster.state_sync, sync_net=cluster.sync_net,
        sync_link=cluster.sync_link(balancer), ipvs_sync_group=IPVS_SYNC_GROUP, ipvs_sync_port=IPVS_SYNC_PORT,
        monitoring=cluster.monitoring_rules(balancer) if cluster.monitoring.enabled else [],
    )
    return RenderedFile(FIREWALL_RULES, content, mode="0640")


def firewall6_file(cluster: Cluster, balancer: Balancer) -> RenderedFile:
    """The IPv6 ruleset: the model has no IPv6 address, so no new IPv6
    connection is accepted (sshd listens on every address, IPv6 too)."""
    return RenderedFile(FIREWALL6_RULES, _render("rules.v6.j2", cluster, balancer=balancer), mode="0640")


def firewall_files(cluster: Cluster, balancer: Balancer, migrating: bool = False) -> dict[int, RenderedFile]:
    """Each IP family's ruleset, by family (4, 6), IPv4's first (`migrating`: firewall_file)."""
    return {4: firewall_file(cluster, balancer, migrating), 6: firewall6_file(cluster, balancer)}


def applied_script() -> RenderedFile:
    """lvsha-applied: records what the services and the firewall were started with."""
    return _shipped("lvsha", APPLIED_SCRIPT, mode="0755")


def applied_record(files: list[RenderedFile]) -> list[str]:
    """What `lvsha-applied` records for a service started with `files`: the sha1 of each."""
    return [hashlib.sha1(f.content.encode()).hexdigest() for f in files]


def firewall_dropin_file() -> RenderedFile:
    """netfilter-persistent turns forwarding on once the firewall has loaded."""
    return _shipped("systemd", FIREWALL_DROPIN, source="netfilter-persistent-lvsha.conf")


def kernel_files(cluster: Cluster) -> list[RenderedFile]:
    return [
        RenderedFile(SYSCTL_CONF, _render("sysctl.conf.j2", cluster, neighbours=neighbour_thresholds(cluster))),
        RenderedFile(MODULES_CONF, _render("modules-load.conf.j2", cluster,
                                           scheduler_modules=cluster.scheduler_modules())),
    ]


def _network_file(cluster, interface, purpose, addresses, gateway=None, floating=False) -> RenderedFile:
    return RenderedFile(
        network_file_path(interface),
        _render("interface.network.j2", cluster, interface=interface, purpose=purpose,
                addresses=addresses, gateway=gateway, floating=floating),
    )


def carried_gateway_path(interface: str) -> str:
    return f"{network_file_path(interface)}.d/ifupdown-gateway.conf"


def carried_gateway_file(cluster: Cluster, interface: str, gateway, source: str) -> RenderedFile:
    """A balancer's default route from ifupdown (`source`), kept by systemd-networkd
    once `interface` is networkd's, when the model names no external gateway."""
    return RenderedFile(carried_gateway_path(interface),
                        _render("carried-gateway.conf.j2", cluster, interface=interface, gateway=gateway, source=source))


def balancer_network_files(cluster: Cluster, balancer: Balancer) -> list[RenderedFile]:
    (ext, ext_addresses), (intl, int_addresses), *sync = cluster.own_addresses(balancer)
    files = [
        _network_file(cluster, ext, "External network: this balancer's own address.",
                      ext_addresses, cluster.external_gateway, floating=True),
        _network_file(cluster, intl, "Internal network: this balancer's own address.",
                      int_addresses, floating=True),
    ]
    for interface, addresses in sync:
        files.append(_network_file(cluster, interface, "Connection state sync link: this balancer's own address.",
                                   addresses))
    return files


def web_host_network_file(cluster: Cluster, host: WebHost) -> RenderedFile:
    ((interface, addresses),) = cluster.own_addresses(host)
    return _network_file(
        cluster, interface,
        "Internal network: one address per site; the only default route is the floating gateway.",
        addresses, cluster.internal_gateway,
    )


def nginx_ports(site: Site) -> list[tuple[int, bool]]:
    """(port, whether nginx serves TLS there) for each port nginx serves `site` on: the
    site's real_ports, TLS on the port an https check talks to and on NGINX_TLS_PORT,
    unless an http check talks to that one (the check would get nginx's "plain HTTP
    request sent to HTTPS port" and take every real server out)."""
    speaks = site.health.service if site.health.checktype == "negotiate" else None
    tls = {NGINX_TLS_PORT} - ({site.checked_port} if speaks == "http" else set())
    if speaks == "https":
        tls.add(site.checked_port)
    return [(port, port in tls) for port in site.real_ports]


def web_server_file(cluster: Cluster, host: WebHost) -> RenderedFile:
    sites = []  # (site, its address, nginx_ports, whether any of them is TLS)
    for site, address in cluster.site_addresses(host):
        ports = nginx_ports(site)
        sites.append((site, address, ports, any(tls for _, tls in ports)))
    return RenderedFile(NGINX_SITES, _render("nginx-sites.conf.j2", cluster, host=host, sites=sites))


def web_server_listens(cluster: Cluster, host: WebHost) -> list[str]:
    """ADDRESS:PORT of every socket nginx listens on with web_server_file: each site
    address of the host, on each of that site's real_ports (what the balancers forward
    to and check)."""
    return [f"{address}:{port}" for site, address in cluster.site_addresses(host) for port, _ in nginx_ports(site)]


def listening_script() -> RenderedFile:
    """lvsha-listening: waits until something listens on each ADDRESS:PORT given (the
    deploy, after reloading or restarting nginx: web_server_listens)."""
    return _shipped("lvsha", LISTENING_SCRIPT, mode="0755")


def web_server_files(cluster: Cluster, host: WebHost) -> list[RenderedFile]:
    """nginx's sites, the program that checks nginx listens on them, and the one that
    records the sites file nginx serves once it does (lvsha-applied record nginx)."""
    return [web_server_file(cluster, host), listening_script(), applied_script()]


def engine_files(cluster: Cluster, balancer: Balancer) -> list[RenderedFile]:
    """The failover engine's files: heartbeat's and ldirectord's, or keepalived's."""
    if cluster.engine == "keepalived":
        return keepalived_files(cluster, balancer)
    return [
        *heartbeat_files(cluster, balancer),
        *heartbeat_helper_files(cluster, balancer),
        drain_script(),
        ipvs_ready_script(),
        ldirectord_check_script(),
        *unit_dropin_files(cluster),
        ldirectord_file(cluster),
    ]


def balancer_files(cluster: Cluster, balancer: Balancer) -> list[RenderedFile]:
    return [
        *engine_files(cluster, balancer),
        *(state_sync_files(cluster, balancer) if cluster.state_sync.enabled else []),
        *(monitoring_files(cluster, balancer) if cluster.monitoring.enabled else []),
        *firewall_files(cluster, balancer).values(),
        firewall_dropin_file(),
        applied_script(),
        *kernel_files(cluster),
        *balancer_network_files(cluster, balancer),
    ]


def web_host_files(cluster: Cluster, host: WebHost) -> list[RenderedFile]:
    return [web_host_network_file(cluster, host), *web_server_files(cluster, host)]


def all_files(cluster: Cluster) -> dict[str, list[RenderedFile]]:
    """Every host's managed files, keyed by host name; validates first."""
    validate(cluster)
    files = {b.name: balancer_files(cluster, b) for b in cluster.balancers}
    files.update({h.name: web_host_files(cluster, h) for h in cluster.web_hosts})
    return files


def write_tree(cluster: Cluster, out: Path) -> list[Path]:
    """Write `all_files` under out/HOST/<absolute path>, each created with its
    mode (authkeys is never on disk wider than 0600, not even for a moment),
    and, with monitoring on, the Prometheus alert rules as out/ALERT_RULES."""
    written = []
    every_host = all_files(cluster)  # validates first
    if cluster.monitoring.enabled:
        out.mkdir(parents=True, exist_ok=True)
        (out / ALERT_RULES).write_text(alert_rules(cluster))
        written.append(out / ALERT_RULES)
    for host, files in every_host.items():
        for f in files:
            target = out / host / f.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = int(f.mode, 8)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "w") as stream:
                os.fchmod(fd, mode)  # a file already there keeps its old mode through O_CREAT
                stream.write(f.content)
            written.append(target)
    return written
