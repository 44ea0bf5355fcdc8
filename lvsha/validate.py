"""Validation of a `Cluster` before anything is rendered or any host is touched.

Every rule reports the field it concerns and the offending value, and all
problems are reported at once so an operator fixes the inventory in one pass.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from netaddr import AddrFormatError, IPAddress, IPNetwork, IPSet

from lvsha.model import ENGINES, HEARTBEAT_UDP_PORT, IPVS_SYNC_PORT, VRRP_MAX_ADDRESSES, Cluster

IPVS_SCHEDULERS = {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}
LDIRECTORD_SERVICES = {
    "http", "https", "ftp", "smtp", "pop", "pops", "imap", "imaps", "ldap", "nntp",
    "dns", "mysql", "pgsql", "sip", "simpletcp", "none",
}
LDIRECTORD_CHECKTYPES = {"negotiate", "connect", "ping", "off", "on"}
HEARTBEAT_AUTH_METHODS = {"sha1", "md5", "crc"}
# keepalived (VRRPv2, Debian 12's 2.2.7 and 13's 2.3.3): an advertisement interval of
# 1-255 whole seconds; the master is declared dead after down_timer_adverts (1-100)
# missed ones, and lvsha asks for 3 at least (the RFC's count: one lost packet is no takeover).
VRRP_ADVERT_MAX = 255
VRRP_DOWN_ADVERTS = (3, 100)
# What keepalived's checkers can run of ldirectord's checks: a negotiate check of these
# services (HTTP_GET / SSL_GET), and connect (TCP_CHECK), ping (PING_CHECK), on (no check).
KEEPALIVED_NEGOTIATE_SERVICES = {"http", "https"}
KEEPALIVED_CHECKTYPES = {"negotiate", "connect", "ping", "on"}
INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
VIRTUAL_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
NODE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
SITE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
# Characters that would break out of a quoted ldirectord value or a line.
UNSAFE_IN_CONFIG = re.compile(r'["\n\r]')


@dataclass(frozen=True)
class Problem:
    field: str
    value: object
    message: str

    def __str__(self) -> str:
        return f"{self.field} = {self.value!r}: {self.message}"


class ValidationError(ValueError):
    """The cluster model is inconsistent; nothing was rendered or deployed."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"the cluster model has {len(problems)} problem(s):\n{lines}")


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, field: str, value: object, message: str) -> None:
        self.problems.append(Problem(field, value, message))

    def address(self, field: str, value: object) -> IPAddress | None:
        if not isinstance(value, str):
            self.fail(field, value, "must be an IPv4 address written as a string")
            return None
        try:
            address = IPAddress(value, 4)
        except (AddrFormatError, ValueError):
            self.fail(field, value, "is not an IPv4 address")
            return None
        if str(address) != value:
            self.fail(field, value, f"is not written canonically (did you mean {address}?)")
        return address

    def network(self, field: str, value: object) -> IPNetwork | None:
        try:
            network = IPNetwork(value, version=4)
        except (AddrFormatError, ValueError, TypeError):
            self.fail(field, value, "is not an IPv4 network in CIDR notation")
            return None
        if network.ip != network.network:
            self.fail(field, value, f"has host bits set (did you mean {network.cidr}?)")
        return network

    def within(self, field: str, value: str, address: IPAddress | None, net: IPNetwork | None, what: str) -> None:
        if address is None or net is None:
            return
        if address not in net:
            self.fail(field, value, f"is outside the {what} {net.cidr}")
        elif net.prefixlen < 31 and address in (net.network, net.broadcast):
            self.fail(field, value, f"is the network or broadcast address of {net.cidr}")

    def port(self, field: str, value: object, allow_zero: bool = False) -> None:
        low = 0 if allow_zero else 1
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 65535:
            self.fail(field, value, f"must be a port number from {low} to 65535")

    def positive(self, field: str, value: object) -> bool:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            self.fail(field, value, "must be a whole number of seconds above 0")
            return False
        return True

    def interface(self, field: str, value: object) -> None:
        if not isinstance(value, str) or not INTERFACE_NAME.match(value):
            self.fail(field, value, "is not a valid interface name (1-15 of letters, digits, '.', '-', '_')")

    def text(self, field: str, value: object) -> None:
        if not isinstance(value, str) or UNSAFE_IN_CONFIG.search(value):
            self.fail(field, value, "must be text without double quotes or line breaks")


def _fallback(c, cluster: Cluster, site, field: str) -> None:
    """A site's fallback: ADDRESS[:PORT], a unicast address that is not one of
    the cluster's own (a VIP, the gateway, a balancer) nor a real server of it."""
    if not isinstance(site.fallback, str):
        c.fail(field, site.fallback, "must be ADDRESS or ADDRESS:PORT written as a string")
        return
    text, _, port = site.fallback.partition(":")
    if port:
        if not port.isdigit():
            c.fail(field, site.fallback, "the port after ':' must be a number")
            return
        c.port(field, int(port))
    address = c.address(field, text)
    if address is None:
        return
    # Compared as written: the fields themselves are checked elsewhere.
    own = {cluster.internal_gateway, *(s.vip for s in cluster.sites), *(h.mail_ip for h in cluster.web_hosts)}
    for b in cluster.balancers:
        own |= {b.external_ip, b.internal_ip}
    if str(address) in own:
        c.fail(field, site.fallback, "is one of the balancers' own or floating addresses, not a server to fall back to")
    index = cluster.sites.index(site)
    if any(index < len(h.internal_ips) and h.internal_ips[index] == str(address) for h in cluster.web_hosts):
        c.fail(field, site.fallback, "is a real server of this site: it fails with the others")


def problems(cluster: Cluster) -> list[Problem]:
    """Every problem in the model; an empty list means it may be deployed."""
    c = _Checker()
    ext = c.network("external_network", cluster.external_network)
    intl = c.network("internal_network", cluster.internal_network)
    if ext is not None and intl is not None and (IPSet([ext]) & IPSet([intl])):
        c.fail("internal_network", cluster.internal_network, f"overlaps external_network {cluster.external_network}")

    owners: dict[IPAddress, list[str]] = defaultdict(list)

    def own(field: str, value: str | None, net: IPNetwork | None, what: str) -> IPAddress | None:
        address = c.address(field, value)
        if address is not None:
            owners[address].append(field)
            c.within(field, value, address, net, what)
        return address

    own("internal_gateway", cluster.internal_gateway, intl, "internal network")
    if cluster.external_gateway is not None:
        own("external_gateway", cluster.external_gateway, ext, "external network")

    _check_balancers(c, cluster, own, ext, intl)
    _check_sites(c, cluster, own, ext)
    _check_web_hosts(c, cluster, own, ext, intl)
    engine = _check_engine(c, cluster)
    _check_heartbeat(c, cluster, engine)
    if engine == "keepalived":
        _check_keepalived(c, cluster)
    for i, node in enumerate(cluster.heartbeat.ping_nodes):
        if node == cluster.external_gateway:  # the gateway itself, named as a ping node
            continue
        own(f"heartbeat.ping_nodes[{i}]", node, ext, "external network")
    _check_firewall(c, cluster)
    _check_state_sync(c, cluster, own, ext, intl)
    _check_monitoring(c, cluster, intl)
    c.positive("ldirectord.checkinterval", cluster.ldirectord.checkinterval)
    if not (cluster.ldirectord.fork is None or isinstance(cluster.ldirectord.fork, bool)):
        c.fail("ldirectord.fork", cluster.ldirectord.fork, "must be True, False or None (decided from the model)")

    for address, fields in owners.items():
        if len(fields) > 1:
            c.fail(fields[1], str(address), f"is used twice: also by {', '.join(f for f in fields if f != fields[1])}")
    if not c.problems:  # the files can be rendered: what the engine would read of them
        if engine == "heartbeat":
            _check_heartbeat_buffers(c, cluster)
        elif engine == "keepalived":
            _check_keepalived_lines(c, cluster)
    return c.problems


def _check_heartbeat_buffers(c: _Checker, cluster: Cluster) -> None:
    """heartbeat 3.0.6 reads ha.cf, haresources and the group's key through buffers of
    MAXLINE bytes (docs/scale.md): measured on the files as rendered."""
    from lvsha import render  # (render validates with this module)

    line_max, key_max = render.HEARTBEAT_LINE_MAX, render.GROUP_KEY_MAX
    where = f"(heartbeat 3.0.6 reads it through a buffer of {render.HEARTBEAT_MAXLINE} bytes, MAXLINE)"
    ha_cf, haresources, _ = render.heartbeat_files(cluster, cluster.master)
    for line in ha_cf.content.splitlines():
        if len(line) > line_max:
            directive = line.split()[0]
            if directive == "ping_group":
                c.fail("web_hosts", len(cluster.web_hosts),
                       f"ha.cf's ping_group line (every web host's first internal address) is {len(line)} characters, "
                       f"over the {line_max} heartbeat reads as one line {where}")
            else:
                c.fail(f"heartbeat ({directive})", len(line),
                       f"ha.cf's {directive} line is {len(line)} characters, over the {line_max} heartbeat reads "
                       f"as one line {where}")
    lines = [line for line in haresources.content.splitlines() if line and not line.startswith("#")]
    for line in lines:
        if len(line) > line_max:
            c.fail("sites", len(cluster.sites),
                   f"haresources has a line of {len(line)} characters ({len(cluster.floating_ips())} floating "
                   f"addresses), over the {line_max} heartbeat reads as one line {where}")
            break
    joined = "".join(line[:-1] if line.endswith("\\") else line for line in lines)  # as ResourceManager joins it
    key = joined.split()[1] if len(joined.split()) > 1 else ""
    if len(key) > key_max:
        c.fail("sites", len(cluster.sites),
               f"the resource group's first resource (its key) is {len(key)} characters "
               f"({len(cluster.floating_ips())} floating addresses), over the {key_max} heartbeat passes on "
               f"(\"{render.RESOURCE_MANAGER} givegroup KEY\") {where}")


# What a site's keepalived.conf lines carry of the model (in its virtual_server block).
_KEEPALIVED_SITE_FIELDS = {"regex": "health.receive", "path": "health.request", "virtualhost": "health.virtualhost"}


def _check_keepalived_lines(c: _Checker, cluster: Cluster) -> None:
    """keepalived 2.2.7 reads keepalived.conf through a buffer of MAXBUF bytes: each
    balancer's file as rendered, every line within it, the field that made a longer one named."""
    from lvsha import render  # (render validates with this module)

    line_max = render.KEEPALIVED_LINE_MAX
    where = f"(keepalived reads it through a buffer of {render.KEEPALIVED_MAXBUF} bytes, MAXBUF)"
    sites = {f"{vs.vip} {vs.port}": vs.site.name for vs in cluster.virtual_servers()}
    checks = render.keepalived_track_scripts(cluster)
    web_hosts = checks[-1].script if checks else None  # the last check: the web hosts, one group
    reported = set()
    for balancer in cluster.balancers:
        site = None
        for line in render.keepalived_conf(cluster, balancer).content.splitlines():
            words = line.split()
            if line.startswith("virtual_server "):
                site = sites.get(" ".join(words[1:3]))
            if len(line) <= line_max:
                continue
            directive = words[0]
            if directive == "script" and web_hosts and web_hosts in line:
                field, value = "web_hosts", len(cluster.web_hosts)
                what = "the web hosts' track script (every web host's first internal address)"
            elif site is not None:
                field, value = f"sites[{site}].{_KEEPALIVED_SITE_FIELDS.get(directive, 'name')}", len(line)
                what = f"the site's {directive} line"
            else:
                field, value, what = f"keepalived.conf ({directive})", len(line), f"its {directive} line"
            if field not in reported:
                reported.add(field)
                c.fail(field, value, f"keepalived.conf's {what} is {len(line)} characters, over the {line_max} "
                                     f"keepalived reads as one line {where}")


def _check_balancers(c: _Checker, cluster: Cluster, own, ext, intl) -> None:
    if len(cluster.balancers) != 2:
        c.fail("balancers", [b.name for b in cluster.balancers], "there must be exactly two balancers (master first)")
    names = [b.name for b in cluster.balancers]
    for b in cluster.balancers:
        where = f"balancers[{b.name}]"
        if not isinstance(b.name, str) or not NODE_NAME.match(b.name):
            c.fail(f"{where}.name", b.name, "must be a host name as `uname -n` prints it")
        if names.count(b.name) > 1:
            c.fail(f"{where}.name", b.name, "is used by two balancers")
        own(f"{where}.external_ip", b.external_ip, ext, "external network")
        own(f"{where}.internal_ip", b.internal_ip, intl, "internal network")
        c.interface(f"{where}.external_interface", b.external_interface)
        c.interface(f"{where}.internal_interface", b.internal_interface)
        if b.external_interface == b.internal_interface:
            c.fail(f"{where}.internal_interface", b.internal_interface, "is the same as external_interface")
        if b.management_interface is not None:
            c.interface(f"{where}.management_interface", b.management_interface)
            if b.management_interface in (b.external_interface, b.internal_interface):
                c.fail(f"{where}.management_interface", b.management_interface, "must be a third interface")
    if len(cluster.balancers) == 2:
        first, second = cluster.balancers
        # haresources is one file for both nodes, so interface names must agree.
        for attr in ("external_interface", "internal_interface"):
            if getattr(first, attr) != getattr(second, attr):
                c.fail(
                    f"balancers[{second.name}].{attr}", getattr(second, attr),
                    f"differs from {first.name}'s {getattr(first, attr)!r}; haresources is shared by both nodes",
                )


def _check_sites(c: _Checker, cluster: Cluster, own, ext) -> None:
    if not cluster.sites:
        c.fail("sites", [], "at least one site is needed")
    names = [s.name for s in cluster.sites]
    for s in cluster.sites:
        where = f"sites[{s.name}]"
        if not isinstance(s.name, str) or not SITE_NAME.match(s.name):
            c.fail(f"{where}.name", s.name, "must be a DNS name")
        if names.count(s.name) > 1:
            c.fail(f"{where}.name", s.name, "is used by two sites")
        own(f"{where}.vip", s.vip, ext, "external network")
        if not s.ports:
            c.fail(f"{where}.ports", s.ports, "at least one port must be open to the VIP")
        for port in s.ports:
            c.port(f"{where}.ports", port)
        c.port(f"{where}.virtual_port", s.virtual_port, allow_zero=True)
        if s.virtual_port and s.virtual_port not in s.ports:
            c.fail(f"{where}.virtual_port", s.virtual_port, f"is not among the ports opened to the VIP {list(s.ports)}")
        if s.scheduler not in IPVS_SCHEDULERS:
            c.fail(f"{where}.scheduler", s.scheduler, f"is not an IPVS scheduler ({', '.join(sorted(IPVS_SCHEDULERS))})")
        if s.persistent is not None:
            c.positive(f"{where}.persistent", s.persistent)
        h = s.health
        if s.virtual_port == 0:
            # IPVS accepts an all-ports virtual service only when it is persistent.
            if not s.persistent:
                c.fail(f"{where}.persistent", s.persistent, "virtual_port 0 (all ports) requires persistence")
            if h.checktype in ("negotiate", "connect") and h.checkport is None:
                c.fail(
                    f"{where}.health.checkport", h.checkport,
                    "virtual_port 0 has no port to check: set the port the health check talks to",
                )
        if h.checkport is not None:
            c.port(f"{where}.health.checkport", h.checkport)
        if h.service not in LDIRECTORD_SERVICES:
            c.fail(f"{where}.health.service", h.service, f"is not an ldirectord service ({', '.join(sorted(LDIRECTORD_SERVICES))})")
        if h.checktype not in LDIRECTORD_CHECKTYPES:
            c.fail(f"{where}.health.checktype", h.checktype, f"is not an ldirectord checktype ({', '.join(sorted(LDIRECTORD_CHECKTYPES))})")
        if h.checktype == "negotiate" and not s.receive:
            c.fail(f"{where}.health.receive", h.receive, "a negotiate check needs text to expect")
        c.text(f"{where}.health.request", h.request)
        c.text(f"{where}.health.receive", h.receive)
        if not isinstance(h.virtualhost, str) or not VIRTUAL_HOST.match(h.virtualhost or "x"):
            c.fail(f"{where}.health.virtualhost", h.virtualhost, "must be a host name (the Host: header of the check)")
        if h.service == "https" and h.checkport == 80:
            c.fail(f"{where}.health.checkport", h.checkport, "an https check on port 80: set the port TLS is served on")
        if s.fallback is not None:
            _fallback(c, cluster, s, f"{where}.fallback")
        c.positive(f"{where}.health.negotiatetimeout", h.negotiatetimeout)
        c.positive(f"{where}.health.checktimeout", h.checktimeout)
        if not cluster.web_hosts:
            c.fail(f"{where}", s.name, "has no real servers: the cluster has no web hosts")


def _check_web_hosts(c: _Checker, cluster: Cluster, own, ext, intl) -> None:
    names = [h.name for h in cluster.web_hosts] + [b.name for b in cluster.balancers]
    for h in cluster.web_hosts:
        where = f"web_hosts[{h.name}]"
        if not isinstance(h.name, str) or not NODE_NAME.match(h.name):
            c.fail(f"{where}.name", h.name, "must be a host name")
        if names.count(h.name) > 1:
            c.fail(f"{where}.name", h.name, "is used by another host")
        c.interface(f"{where}.interface", h.interface)
        if len(h.internal_ips) != len(cluster.sites):
            c.fail(
                f"{where}.internal_ips", list(h.internal_ips),
                f"needs exactly one internal IP per site ({len(cluster.sites)}), in the order of `sites`",
            )
        for i, ip in enumerate(h.internal_ips):
            own(f"{where}.internal_ips[{i}]", ip, intl, "internal network")
        own(f"{where}.mail_ip", h.mail_ip, ext, "external network")
        if h.public_ip is not None:
            own(f"{where}.public_ip", h.public_ip, ext, "external network")


def _check_engine(c: _Checker, cluster: Cluster) -> str | None:
    """The engine's name, or None when it is not one (reported)."""
    if cluster.engine not in ENGINES:
        c.fail("engine", cluster.engine, f"is not a failover engine ({', '.join(ENGINES)})")
        return None
    return cluster.engine


def _check_heartbeat(c: _Checker, cluster: Cluster, engine: str | None = "heartbeat") -> None:
    """heartbeat's settings; on keepalived, the timers, links and ping nodes (which
    it maps) are checked and the rules of heartbeat's own machinery are not."""
    hb = cluster.heartbeat
    on_heartbeat = engine == "heartbeat"
    timers = all(
        c.positive(f"heartbeat.{name}", getattr(hb, name)) for name in ("keepalive", "deadtime", "warntime", "initdead")
    )
    if timers:
        if hb.deadtime <= hb.keepalive:
            c.fail("heartbeat.deadtime", hb.deadtime, f"must be above keepalive ({hb.keepalive})")
    if timers and on_heartbeat:
        if not hb.keepalive <= hb.warntime < hb.deadtime:
            c.fail("heartbeat.warntime", hb.warntime, f"must be from keepalive ({hb.keepalive}) to below deadtime ({hb.deadtime})")
        if hb.initdead < 2 * hb.deadtime:
            c.fail("heartbeat.initdead", hb.initdead, f"must be at least twice deadtime ({2 * hb.deadtime})")
    if not hb.links:
        c.fail("heartbeat.links", hb.links, "at least one heartbeat link is needed")
    for link in hb.links:
        if link not in ("internal", "external"):
            c.fail("heartbeat.links", link, "must be 'internal' or 'external'")
    if len(set(hb.links)) != len(hb.links):
        c.fail("heartbeat.links", hb.links, "names a link twice")
    if (hb.ping_nodes or cluster.external_gateway) and on_heartbeat:
        if "external" not in hb.links:
            c.fail("heartbeat.links", hb.links, "ping nodes need heartbeat on the external link too: "
                   "ipfail acts when a heartbeat link dies")
        if hb.deadtime < 4 * hb.keepalive:
            c.fail("heartbeat.deadtime", hb.deadtime, f"must be at least 4 x keepalive ({4 * hb.keepalive}) with "
                   "ping nodes: a ping node is declared dead 2 keepalives before the link")
    if hb.media not in ("ucast", "bcast"):
        c.fail("heartbeat.media", hb.media, "must be 'ucast' or 'bcast'")
    if not isinstance(hb.logfacility, str) or not re.match(r"^(local[0-7]|daemon|none)$", hb.logfacility):
        c.fail("heartbeat.logfacility", hb.logfacility, "must be local0-local7, daemon or none")
    if not on_heartbeat:
        return  # heartbeat.auth is heartbeat's authkeys: keepalived has no use for it
    auth = hb.auth
    if auth.method not in HEARTBEAT_AUTH_METHODS:
        c.fail("heartbeat.auth.method", auth.method, f"must be one of {', '.join(sorted(HEARTBEAT_AUTH_METHODS))}")
    elif auth.method == "crc":
        if not auth.allow_insecure:
            c.fail(
                "heartbeat.auth.method", auth.method,
                "crc authenticates nothing (anyone on the link can forge heartbeats); "
                "use sha1, or set heartbeat.auth.allow_insecure=True to accept the risk",
            )
    elif not auth.secret:
        c.fail(
            "heartbeat.auth.secret", None,
            f"{auth.method} needs a secret: set LVSHA_HEARTBEAT_SECRET_FILE to a file outside the repository "
            "(or LVSHA_HEARTBEAT_SECRET)",
        )
    elif not re.match(r"^[\x21-\x7e]{16,}$", auth.secret):
        c.fail("heartbeat.auth.secret", "<hidden>", "must be at least 16 printable characters without spaces")


def _check_keepalived(c: _Checker, cluster: Cluster) -> None:
    """What the model must say for keepalived to carry it (engine "keepalived"):
    the timers map to VRRP's (advert_int = keepalive, the master declared dead after
    deadtime / keepalive missed advertisements), and each health check to one of
    keepalived's checkers."""
    hb = cluster.heartbeat
    timers_ok = all(isinstance(getattr(hb, n), int) and not isinstance(getattr(hb, n), bool) and getattr(hb, n) > 0
                    for n in ("keepalive", "deadtime"))
    if timers_ok:
        if hb.keepalive > VRRP_ADVERT_MAX:
            c.fail("heartbeat.keepalive", hb.keepalive,
                   f"on keepalived it is VRRP's advert_int: 1 to {VRRP_ADVERT_MAX} whole seconds")
        low, high = VRRP_DOWN_ADVERTS
        if hb.deadtime % hb.keepalive:
            c.fail("heartbeat.deadtime", hb.deadtime,
                   f"on keepalived the master is declared dead after a whole number of missed advertisements: "
                   f"deadtime must be a multiple of keepalive ({hb.keepalive})")
        elif not low <= hb.deadtime // hb.keepalive <= high:
            c.fail("heartbeat.deadtime", hb.deadtime,
                   f"on keepalived deadtime must be {low} to {high} keepalives ({low * hb.keepalive}-"
                   f"{high * hb.keepalive} s): VRRP's down_timer_adverts")
    if hb.media != "ucast":
        c.fail("heartbeat.media", hb.media,
               "on keepalived VRRP is sent unicast to the peer only (the firewall accepts it from there): use 'ucast'")
    if (hb.ping_nodes or cluster.external_gateway) and not hb.auto_failback:
        c.fail("heartbeat.auto_failback", hb.auto_failback,
               "on keepalived a ping node that stops answering lowers the node's VRRP priority, which nopreempt "
               "(auto_failback off) ignores: the group would never move; remove the ping nodes (and "
               "external_gateway) or turn auto_failback on")
    floating = 1 + len(cluster.sites) + len(cluster.web_hosts)  # Cluster.floating_ips(), uncomputed: unchecked fields
    if floating > VRRP_MAX_ADDRESSES:
        c.fail("sites", len(cluster.sites),
               f"on keepalived one VRRP instance carries every floating address: {floating} (the internal gateway, "
               f"{len(cluster.sites)} sites' VIPs, {len(cluster.web_hosts)} web hosts' mail IPs), over the "
               f"{VRRP_MAX_ADDRESSES} a VRRP advertisement holds (keepalived moves the rest out of the advertisement "
               "and `keepalived -t` fails)")
    for s in cluster.sites:
        h = s.health
        where = f"sites[{s.name}].health"
        if h.checktype not in KEEPALIVED_CHECKTYPES:
            c.fail(f"{where}.checktype", h.checktype,
                   f"keepalived has no such check (it runs {', '.join(sorted(KEEPALIVED_CHECKTYPES))})")
        elif h.checktype == "negotiate" and h.service not in KEEPALIVED_NEGOTIATE_SERVICES:
            c.fail(f"{where}.service", h.service,
                   "keepalived negotiates only http and https (HTTP_GET, SSL_GET): use checktype 'connect' for it")
        if isinstance(h.request, str) and (not h.request or re.search(r"\s", h.request)):
            c.fail(f"{where}.request", h.request,
                   "on keepalived the request is the url's path, one word: no spaces, not empty")


def _check_firewall(c: _Checker, cluster: Cluster) -> None:
    fw = cluster.firewall
    spoofed = [net for net in (c.network("firewall.spoofed_sources", s) for s in fw.spoofed_sources) if net is not None]
    ext = cluster.external_network
    dropped = IPSet(spoofed) - IPSet([ext]) if len(spoofed) == len(fw.spoofed_sources) and _is_network(ext) else None
    for svc in fw.services:
        where = f"firewall.services[{svc.name}]"
        if svc.protocol not in ("tcp", "udp"):
            c.fail(f"{where}.protocol", svc.protocol, "must be 'tcp' or 'udp'")
        c.port(f"{where}.port", svc.port)
        for source in svc.sources:
            net = c.network(f"{where}.sources", source)
            # 0.0.0.0/0 means "any routable source"; a narrower source must not be dropped on arrival.
            if net is not None and dropped is not None and net.prefixlen > 0 and IPSet([net]) & dropped:
                overlap = ", ".join(str(n) for n in (IPSet([net]) & dropped).iter_cidrs())
                c.fail(f"{where}.sources", source,
                       f"is dropped on arrival at the external interface by firewall.spoofed_sources ({overlap}): "
                       "that service could never be reached from there; narrow firewall.spoofed_sources")
    if fw.outbound_nat not in ("mail-ip", "masquerade"):
        c.fail("firewall.outbound_nat", fw.outbound_nat, "must be 'mail-ip' or 'masquerade'")


def _check_state_sync(c: _Checker, cluster: Cluster, own, ext, intl) -> None:
    sync = cluster.state_sync
    if not isinstance(sync.enabled, bool):
        c.fail("state_sync.enabled", sync.enabled, "must be True or False")
    if not isinstance(sync.syncid, int) or isinstance(sync.syncid, bool) or not 0 <= sync.syncid <= 255:
        c.fail("state_sync.syncid", sync.syncid, "must be a number from 0 to 255 (ipvsadm --syncid)")
    c.port("state_sync.conntrackd_port", sync.conntrackd_port)
    if sync.conntrackd_port in (HEARTBEAT_UDP_PORT, IPVS_SYNC_PORT):
        c.fail("state_sync.conntrackd_port", sync.conntrackd_port,
               f"is taken on the same link (heartbeat {HEARTBEAT_UDP_PORT}, IPVS sync {IPVS_SYNC_PORT})")
    c.positive("state_sync.refresh_period", sync.refresh_period)
    if sync.network is None:
        for b in cluster.balancers:
            for attr in ("sync_interface", "sync_ip"):
                if getattr(b, attr) is not None:
                    c.fail(f"balancers[{b.name}].{attr}", getattr(b, attr),
                           "is for a dedicated sync link: set state_sync.network as well, or remove it")
        return
    net = c.network("state_sync.network", sync.network)
    for other, name in ((ext, "external_network"), (intl, "internal_network")):
        if net is not None and other is not None and IPSet([net]) & IPSet([other]):
            c.fail("state_sync.network", sync.network, f"overlaps {name} {other.cidr}")
    for b in cluster.balancers:
        where = f"balancers[{b.name}]"
        if b.sync_interface is None or b.sync_ip is None:
            c.fail(f"{where}.sync_interface" if b.sync_interface is None else f"{where}.sync_ip", None,
                   "state_sync.network names a dedicated sync link: each balancer needs sync_interface and sync_ip on it")
            continue
        c.interface(f"{where}.sync_interface", b.sync_interface)
        if b.sync_interface in (b.external_interface, b.internal_interface, b.management_interface):
            c.fail(f"{where}.sync_interface", b.sync_interface, "must be an interface of its own (the dedicated link)")
        own(f"{where}.sync_ip", b.sync_ip, net, "sync network")


def _check_monitoring(c: _Checker, cluster: Cluster, intl) -> None:
    mon = cluster.monitoring
    if not isinstance(mon.enabled, bool):
        c.fail("monitoring.enabled", mon.enabled, "must be True or False")
    c.port("monitoring.port", mon.port)
    for svc in cluster.firewall.services:
        if svc.protocol == "tcp" and svc.port == mon.port:
            c.fail("monitoring.port", mon.port, f"is taken by firewall.services[{svc.name}] (tcp {svc.port})")
    c.positive("monitoring.interval", mon.interval)
    if not isinstance(mon.sources, (tuple, list)):
        c.fail("monitoring.sources", mon.sources, "must be a tuple of networks")
        return
    if mon.enabled is True and not mon.sources:
        c.fail("monitoring.sources", mon.sources, "monitoring is enabled: name the networks allowed to scrape")
    dropped = _dropped_on_arrival(cluster)
    for source in mon.sources:
        net = c.network("monitoring.sources", source)
        if net is None or net.prefixlen == 0 or dropped is None:
            continue
        if intl is not None and net in intl:
            continue  # scraped on the internal interface: anti-spoofing is the external one's
        if IPSet([net]) & dropped:
            overlap = ", ".join(str(n) for n in (IPSet([net]) & dropped).iter_cidrs())
            c.fail("monitoring.sources", source,
                   f"is dropped on arrival at the external interface by firewall.spoofed_sources ({overlap}): "
                   "it could never scrape from there; narrow firewall.spoofed_sources")


def _dropped_on_arrival(cluster: Cluster) -> IPSet | None:
    """What anti-spoofing drops at the external interface (None: the fields are bad, reported elsewhere)."""
    if not all(_is_network(s) for s in cluster.firewall.spoofed_sources) or not _is_network(cluster.external_network):
        return None
    return IPSet(cluster.firewall.spoofed_sources) - IPSet([cluster.external_network])


def _is_network(value: object) -> bool:
    try:
        IPNetwork(value, version=4)
    except (AddrFormatError, ValueError, TypeError):
        return False
    return True


def validate(cluster: Cluster) -> Cluster:
    """Return the cluster unchanged, or raise `ValidationError` naming every problem."""
    found = problems(cluster)
    if found:
        raise ValidationError(found)
    return cluster
