"""The cluster model: the single source of truth for an LVS-NAT balancer pair.

Everything deployed (floating IPs, heartbeat and ldirectord configuration,
firewall rules, web-host addresses and routes) is derived from one `Cluster`
instance. Fields hold what the operator typed (strings); `lvsha.validate`
checks them all and only a cluster that validates is ever rendered or
deployed, so the derived views below may assume well-formed values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

from netaddr import IPAddress, IPNetwork, IPSet

HEARTBEAT_UDP_PORT = 694
# The failover engines a model may name (`Cluster.engine`).
ENGINES = ("heartbeat", "keepalived")
# keepalived: VRRP (IP protocol 112), unicast between the balancers on one link; one
# virtual router, whose id both nodes must share (no virtual MAC is used, and the
# firewall accepts VRRP from the peer's address only, so the id names nothing outside).
VRRP_PROTOCOL = 112
VRRP_ROUTER_ID = 51
# The master's and the backup's VRRP priorities (balancer order); a failed link
# check costs more than their difference, so the node that reaches less yields.
VRRP_PRIORITIES = (150, 100)
# Addresses one VRRPv2 advertisement carries: its count field is 8 bits (keepalived 2.2.7's
# VRRP_MAX_ADDR; a packet has room for more on any MTU from 1070 up). keepalived moves the
# rest to eVIPs and reports a configuration error, which fails `keepalived -t`.
VRRP_MAX_ADDRESSES = 255
# IPVS connection sync: the kernel's fixed multicast group and port (TTL 1).
IPVS_SYNC_GROUP = "224.0.0.81"
IPVS_SYNC_PORT = 8848

# Sources that cannot legitimately arrive on the external interface of a
# balancer facing the Internet: the default of `Firewall.spoofed_sources`.
BOGON_SOURCES = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/5",
)


@dataclass(frozen=True)
class Balancer:
    """One director. `name` must equal `uname -n` on the machine."""

    name: str
    external_ip: str
    internal_ip: str
    external_interface: str = "eth0"
    internal_interface: str = "eth1"
    # An out-of-band management NIC on which SSH is accepted (the lab has one).
    management_interface: str | None = None
    # A dedicated link for connection state sync (`StateSync.network`): its NIC and address.
    sync_interface: str | None = None
    sync_ip: str | None = None


@dataclass(frozen=True)
class HealthCheck:
    """How ldirectord decides that a real server is alive."""

    service: str = "http"
    checktype: str = "negotiate"
    # The port the check talks to; required when the virtual service is port 0.
    checkport: int | None = 80
    request: str = "/"
    # Text the response must contain; empty means "the site's name".
    receive: str = ""
    # The Host: header of an http/https check; empty means "the site's name"
    # (a real site answers a bare address with a redirect or a default vhost).
    virtualhost: str = ""
    negotiatetimeout: int = 10
    checktimeout: int = 10


@dataclass(frozen=True)
class Site:
    """A balanced web site: a VIP on the external network."""

    name: str
    vip: str
    # Ports opened to the VIP in the firewall.
    ports: tuple[int, ...] = (80, 443)
    # The IPVS virtual service port; 0 balances every port (needs persistence).
    virtual_port: int = 0
    scheduler: str = "wlc"
    persistent: int | None = 3600
    quiescent: bool = False
    health: HealthCheck = field(default_factory=HealthCheck)
    # Where new connections go while every real server fails its check:
    # "ADDRESS" or "ADDRESS:PORT" of a sorry server (ldirectord's fallback, NAT
    # like the real servers). None: the site has no real server then and new
    # connections to it fail.
    fallback: str | None = None

    @property
    def receive(self) -> str:
        return self.health.receive or self.name

    @property
    def virtualhost(self) -> str:
        return self.health.virtualhost or self.name

    @property
    def checked_port(self) -> int | None:
        """The port of a real server the health check talks to: `health.checkport`, else
        the virtual port (validation refuses neither for an all-ports service); None for
        a check that talks to no port (ping, or the checktypes "on" and "off")."""
        if self.health.checktype not in ("negotiate", "connect"):
            return None
        return self.health.checkport or self.virtual_port

    @property
    def real_ports(self) -> tuple[int, ...]:
        """The TCP ports of each real server (its address for this site) the balancers
        forward to or check, ascending: the virtual port, or every one of `ports` (those
        the firewall opens to the VIP) for an all-ports service (IPVS keeps the client's
        port), and `checked_port`. What a web server of the site listens on."""
        forwarded = {self.virtual_port} if self.virtual_port else set(self.ports)
        checked = {self.checked_port} if self.checked_port else set()
        return tuple(sorted(forwarded | checked))

    @property
    def fallback_address(self) -> str | None:
        """The fallback as ldirectord.cf names a real server: ADDRESS:PORT, the
        virtual port by default; ADDRESS alone for an all-ports service, as its reals."""
        if self.fallback is None or ":" in self.fallback or not self.virtual_port:
            return self.fallback
        return f"{self.fallback}:{self.virtual_port}"


@dataclass(frozen=True)
class WebHost:
    """A real server on the internal network, one internal IP per site."""

    name: str
    # Internal addresses in the order of `Cluster.sites`.
    internal_ips: tuple[str, ...]
    mail_ip: str
    interface: str = "eth0"
    public_ip: str | None = None


@dataclass(frozen=True)
class HeartbeatAuth:
    method: str = "sha1"
    # Never printed: repr() and to_json() hide it.
    secret: str | None = field(default=None, repr=False)
    # `crc` authenticates nothing; it is refused unless this says otherwise.
    allow_insecure: bool = False


@dataclass(frozen=True)
class Heartbeat:
    keepalive: int = 2
    deadtime: int = 10
    warntime: int = 5
    initdead: int = 30
    auto_failback: bool = True
    # Which networks carry heartbeats: "internal" and/or "external".
    links: tuple[str, ...] = ("internal", "external")
    # "ucast" (to the peer's address) or "bcast".
    media: str = "ucast"
    auth: HeartbeatAuth = field(default_factory=HeartbeatAuth)
    logfacility: str = "local0"
    # A failed link (ipfail): addresses on the external network that answer
    # ping, e.g. the upstream router; empty means the external gateway when the
    # model has one. The internal side pings the web hosts. The balancer that
    # sees fewer of them than its peer when a heartbeat link dies hands the
    # resources over. With no external ping node a failed link is not detected.
    ping_nodes: tuple[str, ...] = ()

    @property
    def deadping(self) -> int:
        """Seconds before a ping node is declared dead: before the heartbeat link
        (deadtime) is, so that ipfail counts it when the link dies."""
        return self.deadtime - 2 * self.keepalive


@dataclass(frozen=True)
class Service:
    """A management service on each balancer's own external address."""

    name: str
    protocol: str
    port: int
    sources: tuple[str, ...] = ("0.0.0.0/0",)


@dataclass(frozen=True)
class Firewall:
    services: tuple[Service, ...] = (Service("ssh", "tcp", 22),)
    # "mail-ip": a web host's other outbound traffic also leaves from its
    # (floating) mail IP; "masquerade": from the active balancer's own address.
    outbound_nat: str = "mail-ip"
    allow_ping: bool = True
    # Anti-spoofing: sources dropped on arrival at the external interface (raw
    # table), before anything else sees them. The cluster's own external network
    # is always exempt (the recipe's "public" addresses are private examples). A
    # balancer on a private network narrows this list, or empties it to disable.
    spoofed_sources: tuple[str, ...] = BOGON_SOURCES


# ldirectord (fork=no) checks every real server of every site in turn, then sleeps
# checkinterval: a cycle lasts the sum of the checks. Past this many seconds of checks
# per checkinterval, at this much each (an HTTP check of a server on the LAN takes
# milliseconds; a slow machine is given room), it checks each site in a process of its
# own (fork=yes): docs/scale.md.
SERIAL_CHECK_SECONDS = 0.1


@dataclass(frozen=True)
class Ldirectord:
    checkinterval: int = 5
    # Let ldirectord expire persistence templates of removed real servers.
    expire_quiescent_template: bool = True
    # One checking process per site (True) or one for all (False); None: decided from
    # the model (Cluster.ldirectord_forks).
    fork: bool | None = None


@dataclass(frozen=True)
class StateSync:
    """Connection state shared by the two balancers, so that a takeover keeps
    established connections (and persistence): the kernel's IPVS sync daemons
    (both roles on both nodes) and conntrackd (FTFW over unicast UDP) for the
    stateful firewall and the mail NAT."""

    enabled: bool = True
    # A dedicated sync network (CIDR); each balancer then names its NIC and address
    # on it (Balancer.sync_interface, .sync_ip). None: the internal network.
    network: str | None = None
    # IPVS sync id (0-255): a daemon ignores messages of another id.
    syncid: int = 1
    conntrackd_port: int = 3780
    # Seconds: an active connection is re-sent at least this often, so that a node
    # that joins (or reboots) learns every active connection within this time.
    refresh_period: int = 10


@dataclass(frozen=True)
class Monitoring:
    """Prometheus monitoring of the balancers (off by default): Debian's node_exporter
    (its ipvs collector included) and lvsha's own metrics, written by
    lvsha-metrics every `interval` seconds into node_exporter's textfile directory;
    its port opened to `sources` only."""

    enabled: bool = False
    # Networks allowed to scrape (CIDR): a source inside the internal network reaches
    # each balancer's internal address, any other its external address.
    sources: tuple[str, ...] = ()
    # node_exporter's TCP port.
    port: int = 9100
    # Seconds between two runs of lvsha-metrics.
    interval: int = 5


@dataclass(frozen=True)
class SyncLink:
    """Where one balancer exchanges connection state with its peer."""

    interface: str
    address: IPAddress
    peer_address: IPAddress


@dataclass(frozen=True)
class FloatingIP:
    address: IPAddress
    prefixlen: int
    interface: str
    purpose: str

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class VirtualServer:
    site: Site
    vip: IPAddress
    port: int
    reals: tuple[tuple[WebHost, IPAddress], ...]

    @property
    def address(self) -> str:
        """VIP:PORT, as ldirectord.cf's `virtual=` and ipvsadm name the service."""
        return f"{self.vip}:{self.port}"

    def real_address(self, ip: IPAddress) -> str:
        """A real server of this service as ipvsadm names it (IP:PORT, port 0 included)."""
        return f"{ip}:{self.port}"

    def real_token(self, ip: IPAddress) -> str:
        """A real server as ldirectord.cf's `real=` names it: no port where the
        service balances every port."""
        return f"{ip}:{self.port}" if self.port else str(ip)


@dataclass(frozen=True)
class MailRoute:
    host: WebHost
    mail_ip: IPAddress
    internal_ips: tuple[IPAddress, ...]


@dataclass(frozen=True)
class Cluster:
    """A pair of LVS-NAT directors in failover, their sites and web hosts."""

    name: str
    external_network: str
    internal_network: str
    internal_gateway: str
    balancers: tuple[Balancer, ...]
    sites: tuple[Site, ...]
    web_hosts: tuple[WebHost, ...]
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    firewall: Firewall = field(default_factory=Firewall)
    ldirectord: Ldirectord = field(default_factory=Ldirectord)
    state_sync: StateSync = field(default_factory=StateSync)
    monitoring: Monitoring = field(default_factory=Monitoring)
    # The upstream router of the external network, if the balancers need one.
    external_gateway: str | None = None
    # The failover engine: "heartbeat" (heartbeat 3 + ldirectord) or "keepalived"
    # (VRRP and IPVS health checks in one daemon), both from this same model.
    engine: str = "heartbeat"

    def to_json(self) -> dict:
        """What `pyinfra debug-inventory` shows: the model, secret hidden."""
        data = asdict(self)
        if data["heartbeat"]["auth"]["secret"]:
            data["heartbeat"]["auth"]["secret"] = "<hidden>"
        return data

    # ---- parsed networks -------------------------------------------------
    @cached_property
    def external_net(self) -> IPNetwork:
        return IPNetwork(self.external_network)

    @cached_property
    def internal_net(self) -> IPNetwork:
        return IPNetwork(self.internal_network)

    @property
    def gateway(self) -> IPAddress:
        return IPAddress(self.internal_gateway)

    # ---- lookups ---------------------------------------------------------
    @property
    def master(self) -> Balancer:
        """The preferred owner of the resources (haresources' node)."""
        return self.balancers[0]

    def peer(self, balancer: Balancer) -> Balancer:
        (other,) = [b for b in self.balancers if b.name != balancer.name]
        return other

    def balancer(self, name: str) -> Balancer:
        return {b.name: b for b in self.balancers}[name]

    def web_host(self, name: str) -> WebHost:
        return {h.name: h for h in self.web_hosts}[name]

    # ---- derived lists ---------------------------------------------------
    def virtual_servers(self) -> list[VirtualServer]:
        """One IPVS virtual service per site; each web host serves every site."""
        return [
            VirtualServer(
                site=site,
                vip=IPAddress(site.vip),
                port=site.virtual_port,
                reals=tuple((h, IPAddress(h.internal_ips[i])) for h in self.web_hosts),
            )
            for i, site in enumerate(self.sites)
        ]

    def site_addresses(self, host: WebHost) -> list[tuple[Site, IPAddress]]:
        return [(site, IPAddress(ip)) for site, ip in zip(self.sites, host.internal_ips)]

    def mail_routes(self) -> list[MailRoute]:
        return [
            MailRoute(h, IPAddress(h.mail_ip), tuple(IPAddress(ip) for ip in h.internal_ips))
            for h in self.web_hosts
        ]

    def floating_ips(self) -> list[FloatingIP]:
        """Everything heartbeat moves: the internal gateway, then the VIPs and
        mail IPs.

        Interfaces are the master's; both balancers must use the same names
        because haresources is one file shared by both nodes.
        """
        ext, intl = self.master.external_interface, self.master.internal_interface
        ips = [FloatingIP(self.gateway, self.internal_net.prefixlen, intl, "internal gateway")]
        ips += [FloatingIP(IPAddress(s.vip), self.external_net.prefixlen, ext, f"site {s.name}") for s in self.sites]
        ips += [
            FloatingIP(IPAddress(h.mail_ip), self.external_net.prefixlen, ext, f"mail {h.name}")
            for h in self.web_hosts
        ]
        return ips

    def heartbeat_peers(self, balancer: Balancer) -> list[tuple[str, IPAddress]]:
        """(interface, the peer's address there) for every heartbeat link of
        `balancer`: where it sends heartbeats, and whom its firewall lets in."""
        peer = self.peer(balancer)
        where = {
            "internal": (balancer.internal_interface, peer.internal_ip),
            "external": (balancer.external_interface, peer.external_ip),
        }
        return [(where[link][0], IPAddress(where[link][1])) for link in self.heartbeat.links]

    @cached_property
    def sync_net(self) -> IPNetwork | None:
        """The dedicated state sync network, if the model has one."""
        return IPNetwork(self.state_sync.network) if self.state_sync.network else None

    def sync_link(self, balancer: Balancer) -> SyncLink:
        """Where `balancer` sends and hears connection state: the dedicated
        sync network, or else the internal network."""
        peer = self.peer(balancer)
        if self.sync_net is not None:
            return SyncLink(balancer.sync_interface, IPAddress(balancer.sync_ip), IPAddress(peer.sync_ip))
        return SyncLink(balancer.internal_interface, IPAddress(balancer.internal_ip), IPAddress(peer.internal_ip))

    def own_addresses(self, host: Balancer | WebHost) -> list[tuple[str, list[str]]]:
        """(interface, [CIDR, ...]) a host carries itself; floating ones are heartbeat's."""
        if isinstance(host, Balancer):
            addresses = [
                (host.external_interface, [f"{host.external_ip}/{self.external_net.prefixlen}"]),
                (host.internal_interface, [f"{host.internal_ip}/{self.internal_net.prefixlen}"]),
            ]
            if self.sync_net is not None:
                addresses.append((host.sync_interface, [f"{host.sync_ip}/{self.sync_net.prefixlen}"]))
            return addresses
        return [(host.interface, [f"{ip}/{self.internal_net.prefixlen}" for ip in host.internal_ips])]

    def own_networks(self, balancer: Balancer) -> list[tuple[str, str, list[str]]]:
        """(interface, its network, [CIDR, ...] the balancer carries itself there), for
        each interface of `own_addresses`: what an interface may hold besides the
        floating addresses (both engines' deploys remove anything else in that network)."""
        networks = [self.external_network, self.internal_network]
        if self.sync_net is not None:
            networks.append(self.state_sync.network)
        return [(interface, network, cidrs)
                for (interface, cidrs), network in zip(self.own_addresses(balancer), networks, strict=True)]

    def spoofed_sources(self) -> list[IPNetwork]:
        """Sources dropped on arrival at the external interface (the external network exempt)."""
        dropped = IPSet(self.firewall.spoofed_sources) - IPSet([self.external_net])
        return list(dropped.iter_cidrs())

    def ldirectord_forks(self) -> bool:
        """Whether ldirectord checks each site in a process of its own: as
        `ldirectord.fork` says, else when one serial cycle of every real server's
        check (at SERIAL_CHECK_SECONDS each) would outlast checkinterval."""
        if self.ldirectord.fork is not None:
            return self.ldirectord.fork
        checks = len(self.sites) * len(self.web_hosts)
        return checks * SERIAL_CHECK_SECONDS > self.ldirectord.checkinterval

    def monitoring_rules(self, balancer: Balancer) -> list[tuple[str, str, str]]:
        """(interface, source, this balancer's address) where each monitoring source
        may scrape `balancer`: a source inside the internal network on the internal
        interface and address, any other on the external ones."""
        rules = []
        for source in self.monitoring.sources:
            if IPNetwork(source) in self.internal_net:
                rules.append((balancer.internal_interface, source, balancer.internal_ip))
            else:
                rules.append((balancer.external_interface, source, balancer.external_ip))
        return rules

    def scheduler_modules(self) -> list[str]:
        return sorted({f"ip_vs_{s.scheduler}" for s in self.sites})

    def external_ping_nodes(self) -> list[IPAddress]:
        """What the balancers ping on the external network (link failure detection)."""
        nodes = self.heartbeat.ping_nodes or ((self.external_gateway,) if self.external_gateway else ())
        return [IPAddress(a) for a in nodes]

    # ---- keepalived (engine "keepalived") ------------------------------------
    def vrrp_link(self, balancer: Balancer) -> tuple[str, IPAddress, IPAddress]:
        """(interface, own address, the peer's address) of the link VRRP advertisements
        travel on, unicast: the first of `heartbeat.links`."""
        link = self.heartbeat.links[0]
        peer = self.peer(balancer)
        if link == "external":
            return balancer.external_interface, IPAddress(balancer.external_ip), IPAddress(peer.external_ip)
        return balancer.internal_interface, IPAddress(balancer.internal_ip), IPAddress(peer.internal_ip)

    def vrrp_priority(self, balancer: Balancer) -> int:
        """The balancer's VRRP priority: the master's is the higher (balancer order)."""
        return VRRP_PRIORITIES[[b.name for b in self.balancers].index(balancer.name)]

    def vrrp_down_adverts(self) -> int:
        """Missed advertisements after which the backup declares the master dead:
        `deadtime` in whole `keepalive`s (validation refuses what does not divide)."""
        return self.heartbeat.deadtime // self.heartbeat.keepalive

    def internal_ping_group(self) -> list[IPAddress]:
        """The web hosts' first internal addresses: the internal link is up while one answers."""
        return [IPAddress(h.internal_ips[0]) for h in self.web_hosts]

    def used_addresses(self) -> set[IPAddress]:
        """Every address the model assigns anywhere (for picking free ones)."""
        found = {self.gateway} | {IPAddress(a) for a in self.heartbeat.ping_nodes}
        for b in self.balancers:
            found |= {IPAddress(b.external_ip), IPAddress(b.internal_ip)}
            if b.sync_ip:
                found.add(IPAddress(b.sync_ip))
        for s in self.sites:
            found.add(IPAddress(s.vip))
        for h in self.web_hosts:
            found |= {IPAddress(ip) for ip in h.internal_ips}
            found.add(IPAddress(h.mail_ip))
            if h.public_ip:
                found.add(IPAddress(h.public_ip))
        if self.external_gateway:
            found.add(IPAddress(self.external_gateway))
        return found
