"""The live state of a balancer pair, read from the tools themselves and judged
against the model: what `lvsha status` shows, and what `drain` and `failover`
check before and after they act.

Parsers take the text the real tools print (`ip -4 -o addr show`, `ipvsadm -Ln`,
`ipvsadm -Ln --rate`, `cl_status ...`, `lvsha-applied show`, `lvsha-drain list`);
`BalancerView.from_outputs` builds one balancer's view from those outputs, and
`ClusterStatus` puts both views next to the model. Nothing here connects
anywhere (lvsha.day2 does), so every rule is tested on captured outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lvsha import render
from lvsha.model import Cluster

# The commands a balancer's view is read from, by name. The heartbeat link
# commands take the peer's name and a link, known only once listhblinks answered.
COMMANDS = {
    "addresses": "ip -4 -o addr show",
    "ipvs": "ipvsadm -Ln",
    "rate": "ipvsadm -Ln --rate",
    "hbstatus": "cl_status hbstatus",
    "rscstatus": "cl_status rscstatus",
    "units": "systemctl is-active heartbeat.service ldirectord.service",
    "applied": f"{render.APPLIED_SCRIPT} show",
    "drained": f"{render.DRAIN_SCRIPT} list",
}
# On engine "keepalived": no heartbeat; keepalived's unit, the VRRP state its notify
# recorded, `lvsha failover`'s tracked file, the live migration's hold and the record of
# the file it runs with.
KEEPALIVED_COMMANDS = {
    "addresses": COMMANDS["addresses"],
    "ipvs": COMMANDS["ipvs"],
    "rate": COMMANDS["rate"],
    "units": "systemctl is-active keepalived.service",
    "applied": COMMANDS["applied"],
    "drained": COMMANDS["drained"],
    "vrrp": f"cat {render.KEEPALIVED_VRRP_STATE}",
    "failover": f"{render.KEEPALIVED_PROGRAM} failover show",
    "hold": f"{render.KEEPALIVED_PROGRAM} hold show",
    "keepalived_applied": f"cat {render.KEEPALIVED_APPLIED}",
}
VRRP_STATES = ("MASTER", "BACKUP", "FAULT", "STOP")
# Read too when the model syncs connection state: conntrackd's unit, the kernel's IPVS sync daemons.
SYNC_COMMANDS = {
    "conntrackd": "systemctl is-active conntrackd.service",
    "sync_daemons": "ipvsadm -L --daemon",
}


def commands(cluster: Cluster) -> dict[str, str]:
    """What one balancer's view is read from, for the model's engine and state sync."""
    base = KEEPALIVED_COMMANDS if cluster.engine == "keepalived" else COMMANDS
    return {**base, **(SYNC_COMMANDS if cluster.state_sync.enabled else {})}


def engine_keeper(cluster: Cluster) -> str:
    """The service that keeps IPVS loaded and applies weights: ldirectord or keepalived."""
    return "keepalived" if cluster.engine == "keepalived" else "ldirectord"


@dataclass(frozen=True)
class RealServer:
    address: str  # IP:PORT as ipvsadm prints it
    forward: str
    weight: int
    active: int
    inactive: int


@dataclass(frozen=True)
class VirtualService:
    protocol: str
    address: str  # VIP:PORT
    scheduler: str
    flags: str  # "persistent 900", or ""
    reals: dict[str, RealServer]


@dataclass(frozen=True)
class Rate:
    cps: int
    in_pps: int
    out_pps: int
    in_bps: int
    out_bps: int


def parse_addresses(text: str) -> dict[str, list[str]]:
    """`ip -4 -o addr show` -> {interface: ["ADDRESS/PREFIX", ...]} in the order shown."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "inet":
            found.setdefault(fields[1], []).append(fields[3])
    return found


def parse_ipvsadm(text: str) -> dict[str, VirtualService]:
    """`ipvsadm -Ln` -> {"VIP:PORT": VirtualService}. An empty table (or no IPVS) is {}."""
    services: dict[str, VirtualService] = {}
    current: VirtualService | None = None
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] in (["TCP"], ["UDP"], ["SCTP"], ["FWM"]) and len(fields) >= 3:
            current = VirtualService(fields[0], fields[1], fields[2], " ".join(fields[3:]), {})
            services[current.address] = current
        elif fields[:1] == ["->"] and current is not None and len(fields) == 6 and fields[1][0].isdigit():
            address, forward, weight, active, inactive = fields[1:]
            current.reals[address] = RealServer(address, forward, int(weight), int(active), int(inactive))
    return services


def parse_ipvsadm_rate(text: str) -> dict[tuple[str, str | None], Rate]:
    """`ipvsadm -Ln --rate` -> {(VIP:PORT, None): service rate, (VIP:PORT, IP:PORT): real's rate}."""
    rates: dict[tuple[str, str | None], Rate] = {}
    virtual = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 7 and fields[0] in ("TCP", "UDP", "SCTP", "FWM"):
            virtual = fields[1]
            rates[(virtual, None)] = Rate(*map(int, fields[2:]))
        elif len(fields) == 7 and fields[0] == "->" and virtual and fields[1][0].isdigit():
            rates[(virtual, fields[1])] = Rate(*map(int, fields[2:]))
    return rates


def parse_sync_daemons(text: str) -> list[str]:
    """`ipvsadm -L --daemon` -> the roles of the running IPVS sync daemons, ["master", "backup"]."""
    return [line.split()[0] for line in text.splitlines()
            if line.split()[:1] in (["master"], ["backup"]) and line.split()[1:3] == ["sync", "daemon"]]


def parse_words(text: str) -> list[str]:
    """cl_status listnodes / listhblinks: one name per line, indented or not."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_applied(text: str) -> dict[str, list[str]]:
    """`lvsha-applied show` -> {"heartbeat": [sha1...], "ldirectord": [...], "firewall": [rules, loaded],
    "firewall-now": [loaded]}."""
    return {fields[0]: fields[1:] for fields in (line.split() for line in text.splitlines()) if fields}


def parse_drained(text: str) -> set[tuple[str, str]]:
    """`lvsha-drain list` -> {(VIRTUAL, REAL)} as ldirectord.cf names them."""
    return {(fields[0], fields[1]) for fields in (line.split() for line in text.splitlines()) if len(fields) == 2}


@dataclass
class HeartbeatView:
    running: bool
    resources: str  # rscstatus: all, local, foreign, none, transition; "" when not running
    peer: str  # the peer as this node sees it: active, up, dead, ... ("" when not running)
    links: dict[str, str]  # the peer's heartbeat links: {"eth1": "up", ...}


@dataclass
class BalancerView:
    """One balancer as its tools describe it; `reachable` False when the
    connection failed (`error` says why) and nothing else is known."""

    name: str
    reachable: bool
    error: str = ""
    addresses: dict[str, list[str]] = field(default_factory=dict)
    ipvs: dict[str, VirtualService] = field(default_factory=dict)
    rates: dict[tuple[str, str | None], Rate] = field(default_factory=dict)
    heartbeat: HeartbeatView = field(default_factory=lambda: HeartbeatView(False, "", "", {}))
    units: dict[str, str] = field(default_factory=dict)
    applied: dict[str, list[str]] = field(default_factory=dict)
    drained: set[tuple[str, str]] = field(default_factory=set)
    # State sync, when it was read (SYNC_COMMANDS): conntrackd.service's state and the
    # running IPVS sync daemons' roles; None when not read.
    conntrackd: str | None = None
    sync_daemons: list[str] | None = None
    # Engine "keepalived" (KEEPALIVED_COMMANDS): the VRRP state lvsha-keepalived's notify
    # recorded ("" when none), `lvsha failover`'s tracked file ("0", "1"), the migration's
    # hold ("0", "1"), the sha1 of the deployed keepalived.conf it (re)started with.
    engine: str = "heartbeat"
    vrrp: str = ""
    failover: str = ""
    hold: str = ""
    keepalived_applied: str = ""

    @classmethod
    def unreachable(cls, name: str, error: str) -> BalancerView:
        return cls(name, False, error)

    @classmethod
    def from_outputs(cls, name: str, outputs: dict[str, tuple[int, str]]) -> BalancerView:
        """Build the view from {command name: (exit status, stdout)}: COMMANDS'
        names, plus "peer" (cl_status nodestatus PEER), "links" (cl_status
        listhblinks PEER), "link:IFACE" (cl_status hblinkstatus PEER IFACE), and
        SYNC_COMMANDS' names when state sync was read. With KEEPALIVED_COMMANDS'
        names (their "vrrp" key) it is a keepalived balancer's view."""

        def out(key: str) -> str:
            rc, text = outputs.get(key, (1, ""))
            return text if rc == 0 else ""

        if "vrrp" in outputs:
            state = out("vrrp").strip()
            return cls(
                name, True, engine="keepalived",
                addresses=parse_addresses(out("addresses")),
                ipvs=parse_ipvsadm(out("ipvs")),
                rates=parse_ipvsadm_rate(out("rate")),
                units={"keepalived": (outputs.get("units", (1, ""))[1].split() or ["unknown"])[0]},
                applied=parse_applied(outputs.get("applied", (1, ""))[1]),
                drained=parse_drained(out("drained")),
                conntrackd=(outputs["conntrackd"][1].strip() or "unknown") if "conntrackd" in outputs else None,
                sync_daemons=parse_sync_daemons(out("sync_daemons")) if "sync_daemons" in outputs else None,
                vrrp=state if state in VRRP_STATES else "",
                failover=out("failover").strip() or "0",
                hold=out("hold").strip() or "0",
                keepalived_applied=(out("keepalived_applied").split() or [""])[0],
            )

        running = outputs.get("hbstatus", (1, ""))[0] == 0
        links = {key.split(":", 1)[1]: out(key).strip() or "unknown" for key in outputs if key.startswith("link:")}
        units = dict(zip(("heartbeat", "ldirectord"),
                         (outputs.get("units", (1, ""))[1].split() + ["unknown", "unknown"])[:2]))
        return cls(
            name, True,
            addresses=parse_addresses(out("addresses")),
            ipvs=parse_ipvsadm(out("ipvs")),
            rates=parse_ipvsadm_rate(out("rate")),
            heartbeat=HeartbeatView(running, out("rscstatus").strip() if running else "",
                                    out("peer").strip() if running else "", links if running else {}),
            units=units,
            applied=parse_applied(outputs.get("applied", (1, ""))[1]),
            drained=parse_drained(out("drained")),
            conntrackd=(outputs["conntrackd"][1].strip() or "unknown") if "conntrackd" in outputs else None,
            sync_daemons=parse_sync_daemons(out("sync_daemons")) if "sync_daemons" in outputs else None,
        )

    def carries(self, cidr: str, interface: str) -> bool:
        return cidr in self.addresses.get(interface, [])


def floating_held(cluster: Cluster, addresses: dict[str, list[str]]) -> int:
    """How many of the model's floating addresses `addresses` (parse_addresses) holds."""
    return sum(ip.cidr in addresses.get(ip.interface, []) for ip in cluster.floating_ips())


IPVS_COMPLETE = "every virtual service"
# Why a keepalived balancer is in FAULT while the live migration's hold is set on it.
HELD_BY_MIGRATION = "held by a migration (vrrp-hold set)"  # BalancerStatus.ipvs of a table with every site's virtual service


def missing_virtual_services(cluster: Cluster, ipvs: dict[str, VirtualService]) -> list[str]:
    """The model's virtual services (VIP:PORT) that the IPVS table `ipvs` does not have."""
    return [vs.address for vs in cluster.virtual_servers() if vs.address not in ipvs]


def serves_every_site(cluster: Cluster, ipvs: dict[str, VirtualService]) -> bool:
    """Every site's virtual service is in `ipvs` with a real server of weight above 0."""
    return all(vs.address in ipvs and any(r.weight > 0 for r in ipvs[vs.address].reals.values())
               for vs in cluster.virtual_servers())


@dataclass
class RealStatus:
    host: str
    address: str  # IP:PORT as ipvsadm names it
    state: str  # "in rotation", "drained", "draining" (drained, weight not yet 0), "failed health check", "unknown"
    weight: int | None
    active: int | None
    inactive: int | None
    cps: int | None


@dataclass
class SiteStatus:
    name: str
    virtual: str
    loaded: bool  # the virtual service is in the holder's IPVS table
    reals: list[RealStatus]


@dataclass
class AddressStatus:
    address: str
    purpose: str
    holders: list[str]


@dataclass
class BalancerStatus:
    name: str
    reachable: bool
    error: str
    heartbeat: str  # "running" / "stopped" / "unreachable"
    resources: str
    peer_seen_as: str
    links: dict[str, str]
    ldirectord: str
    ipvs: str  # "every virtual service", "missing VIP:PORT, ..." (a takeover by it would not serve those), "unknown"
    firewall: str  # "loaded as rendered", "differs from the model", "not recorded", "unknown"
    config: str  # heartbeat and ldirectord run with the model's files: "current" / "stale: ..." / "unknown"
    drained: list[list[str]]
    # Connection state sync: "running", "DOWN: ..." (a takeover would drop connections), "off" (the
    # model's), "not read", "unknown"; conntrackd.service's state and the running IPVS sync daemons.
    state_sync: str = "unknown"
    conntrackd: str = ""
    ipvs_sync_daemons: list[str] = field(default_factory=list)
    # The engine; on "keepalived" heartbeat, resources, peer_seen_as, links and ldirectord
    # are empty and these say the rest: keepalived.service's state, the node's VRRP state
    # ("MASTER", "BACKUP", "FAULT"; "STOP" when keepalived does not run; "unknown" when it
    # runs with none recorded), "requested" while `lvsha failover`'s tracked file is
    # set on the node (it yields the group), else "none", and "set" while the live
    # migration's hold is (render.KEEPALIVED_HOLD_FILE: FAULT until cleared), else "none".
    # All "" on heartbeat.
    engine: str = "heartbeat"
    keepalived: str = ""
    vrrp: str = ""
    failover: str = ""
    hold: str = ""


@dataclass
class ClusterStatus:
    """The pair next to its model; `problems` empty means healthy."""

    cluster: str
    holder: str | None  # the balancer carrying every floating address, if exactly one does
    addresses: list[AddressStatus]
    sites: list[SiteStatus]
    balancers: list[BalancerStatus]
    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return asdict(self)


def cluster_status(cluster: Cluster, views: dict[str, BalancerView]) -> ClusterStatus:
    """Judge both balancers' views against the model."""
    problems: list[str] = []
    reachable = [views[b.name] for b in cluster.balancers if views[b.name].reachable]
    for b in cluster.balancers:
        if not views[b.name].reachable:
            problems.append(f"{b.name} is unreachable: {views[b.name].error}")

    addresses = []
    for ip in cluster.floating_ips():
        holders = [v.name for v in reachable if v.carries(ip.cidr, ip.interface)]
        addresses.append(AddressStatus(ip.cidr, ip.purpose, holders))
        if len(holders) > 1:
            problems.append(f"SPLIT BRAIN: {ip.cidr} ({ip.purpose}) is on both balancers")
        elif not holders:
            problems.append(f"{ip.cidr} ({ip.purpose}) is on no reachable balancer")
    full = [v.name for v in reachable if all(v.name in a.holders for a in addresses)]
    holder = full[0] if len(full) == 1 else None
    if holder is None and all(a.holders for a in addresses) and not any(len(a.holders) > 1 for a in addresses):
        problems.append("the floating addresses are split between the balancers")

    # The holder's IPVS is what serves; with no holder, any reachable balancer's view still says something.
    source = views[holder] if holder else (reachable[0] if reachable else None)
    sites = []
    for vs in cluster.virtual_servers():
        service = source.ipvs.get(vs.address) if source else None
        reals = []
        for web_host, ip in vs.reals:
            address = vs.real_address(ip)
            drained = source is not None and (vs.address, vs.real_token(ip)) in source.drained
            real = service.reals.get(address) if service else None
            rate = source.rates.get((vs.address, address)) if source else None
            if source is None:
                state = "unknown"
            elif drained:
                state = "drained" if real is None or real.weight == 0 else "draining"
            elif real is None or real.weight == 0:
                state = "failed health check"
            else:
                state = "in rotation"
            reals.append(RealStatus(web_host.name, address, state, real.weight if real else None,
                                    real.active if real else None, real.inactive if real else None,
                                    rate.cps if rate else None))
            if state == "failed health check":
                problems.append(f"{vs.site.name}: {web_host.name} ({address}) failed its health check")
            elif state == "draining":
                problems.append(f"{vs.site.name}: {web_host.name} is drained but still has weight {real.weight}")
        sites.append(SiteStatus(vs.site.name, vs.address, service is not None, reals))
        if source is not None and service is None:
            problems.append(f"{vs.site.name}: no IPVS virtual service {vs.address} on {source.name}")
        elif service is not None and not any(r.state == "in rotation" for r in reals):
            problems.append(f"{vs.site.name}: no real server in rotation")

    drained_sets = {frozenset(v.drained) for v in reachable}
    if len(drained_sets) > 1:
        problems.append("the balancers disagree on drained real servers: " +
                        "; ".join(f"{v.name}: {sorted(v.drained) or 'none'}" for v in reachable))

    balancers = [_balancer_status(cluster, views[b.name], problems) for b in cluster.balancers]
    if cluster.engine == "keepalived":
        masters = [b.name for b in balancers if b.vrrp == "MASTER"]
        if len(masters) > 1:
            problems.append(f"SPLIT BRAIN: both balancers are VRRP MASTER ({' and '.join(masters)})")
        elif not masters and all(b.keepalived == "active" for b in balancers):
            problems.append("no balancer is VRRP MASTER")
        requesting = [b.name for b in balancers if b.failover == "requested"]
        if len(requesting) > 1:
            problems.append(f"`lvsha failover`'s request is set on both balancers ({render.KEEPALIVED_FAILOVER_FILE}): "
                            "neither yields to the other; run `lvsha failover --to` the one that should carry the group")
    return ClusterStatus(cluster.name, holder, addresses, sites, balancers, problems)


def _balancer_status(cluster: Cluster, view: BalancerView, problems: list[str]) -> BalancerStatus:
    if not view.reachable:
        return BalancerStatus(view.name, False, view.error, "unreachable", "", "", {}, "unknown", "unknown",
                              "unknown", "unknown", [], engine=cluster.engine,
                              **({"keepalived": "unknown", "vrrp": "unknown", "failover": "unknown", "hold": "unknown"}
                                 if cluster.engine == "keepalived" else {}))
    state_sync = _state_sync(cluster, view, problems)
    balancer = cluster.balancer(view.name)
    if cluster.engine == "keepalived":
        engine, stale = _keepalived_status(cluster, view, problems)
    else:
        engine, stale = _heartbeat_status(cluster, view, problems)
    # Both balancers' tables count: the standby's is what serves the moment it takes over.
    missing = missing_virtual_services(cluster, view.ipvs)
    ipvs = f"missing {', '.join(missing)}" if missing else IPVS_COMPLETE
    if missing:
        problems.append(f"{view.name}: IPVS lacks the virtual service(s) {', '.join(missing)}: "
                        f"{view.name} would not serve those sites if it carried the addresses (deploy to repair)")

    rules = render.firewall_file(cluster, balancer)
    recorded = view.applied.get("firewall")
    if not recorded:
        firewall = "not recorded"
        problems.append(f"{view.name}: no record of the firewall being loaded")
    elif recorded[:1] == render.applied_record([rules]) and recorded[1:] == view.applied.get("firewall-now"):
        firewall = "loaded as rendered"
    else:
        firewall = "differs from the model"
        problems.append(f"{view.name}: the loaded firewall differs from the model (deploy to fix)")

    config = f"stale: {', '.join(stale)} (deploy to apply the model)" if stale else "current"
    if stale:
        problems.append(f"{view.name}: {' and '.join(stale)} run with other files than the model's")

    return BalancerStatus(view.name, True, "", ipvs=ipvs, firewall=firewall, config=config,
                          drained=[list(d) for d in sorted(view.drained)], state_sync=state_sync,
                          conntrackd=view.conntrackd or "", ipvs_sync_daemons=list(view.sync_daemons or []),
                          engine=cluster.engine, **engine)


def _heartbeat_status(cluster: Cluster, view: BalancerView, problems: list[str]) -> tuple[dict, list[str]]:
    """heartbeat's and ldirectord's fields of a reachable balancer, and which of them run stale files."""
    balancer = cluster.balancer(view.name)
    peer = cluster.peer(balancer).name
    hb = view.heartbeat
    if not hb.running:
        problems.append(f"{view.name}: heartbeat is not running")
    else:
        if hb.peer != "active":
            problems.append(f"{view.name}: sees {peer} as {hb.peer or 'unknown'}")
        for link, state in sorted(hb.links.items()):
            if state != "up":
                problems.append(f"{view.name}: heartbeat link {link} to {peer} is {state}")
    ldirectord = view.units.get("ldirectord", "unknown")
    if ldirectord != "active":
        problems.append(f"{view.name}: ldirectord is {ldirectord}")
    stale = []
    heartbeat_files = render.heartbeat_files(cluster, balancer)
    if hb.running and view.applied.get("heartbeat") != render.applied_record(heartbeat_files):
        stale.append("heartbeat")
    if ldirectord == "active" and view.applied.get("ldirectord") != render.applied_record([render.ldirectord_file(cluster)]):
        stale.append("ldirectord")
    return {"heartbeat": "running" if hb.running else "stopped", "resources": hb.resources,
            "peer_seen_as": hb.peer, "links": dict(hb.links), "ldirectord": ldirectord}, stale


def _keepalived_status(cluster: Cluster, view: BalancerView, problems: list[str]) -> tuple[dict, list[str]]:
    """keepalived's fields of a reachable balancer (its unit, VRRP state, failover request),
    and ["keepalived"] when it runs another file than the model's."""
    balancer = cluster.balancer(view.name)
    unit = view.units.get("keepalived", "unknown")
    held = sum(view.carries(ip.cidr, ip.interface) for ip in cluster.floating_ips())
    if unit != "active":
        vrrp = "STOP"
        problems.append(f"{view.name}: keepalived is {unit}")
    elif not view.vrrp:
        vrrp = "unknown"
        problems.append(f"{view.name}: keepalived runs but no VRRP state is recorded ({render.KEEPALIVED_VRRP_STATE})")
    else:
        vrrp = view.vrrp
    requested = view.failover not in ("", "0")
    held_back = view.hold not in ("", "0")
    clear = (f"{render.KEEPALIVED_HOLD_FILE} is {view.hold}: the live migration from heartbeat sets it until its "
             f"handover. If no migration is under way: deploy (it clears a hold left once the peer runs no heartbeat), "
             f"or `{render.KEEPALIVED_PROGRAM} hold 0` on {view.name} once the peer runs no heartbeat")
    if vrrp == "FAULT":
        if held_back:
            why = f"{HELD_BY_MIGRATION}; {clear}"
        elif requested and not cluster.heartbeat.auto_failback:
            why = (f"held there by `lvsha failover`'s request ({render.KEEPALIVED_FAILOVER_FILE} is {view.failover}: "
                   f"an interrupted failover; run `lvsha failover` again, or `{render.KEEPALIVED_PROGRAM} failover 0` "
                   f"on {view.name})")
        else:
            why = "a tracked interface or check failed: journalctl -u keepalived"
        problems.append(f"{view.name}: VRRP is in FAULT ({why})")
    elif held_back:
        problems.append(f"{view.name}: {HELD_BY_MIGRATION}: keepalived there stays in FAULT whenever it runs ({clear})")
    if vrrp == "MASTER" and held < len(cluster.floating_ips()):
        problems.append(f"{view.name} is VRRP MASTER but carries {held} of {len(cluster.floating_ips())} floating addresses")
    elif vrrp not in ("MASTER", "unknown") and held:
        problems.append(f"{view.name} is VRRP {vrrp} but carries {held} floating address(es)")
    stale = []
    if unit == "active" and [view.keepalived_applied] != render.applied_record([render.keepalived_conf(cluster, balancer)]):
        stale.append("keepalived")
    return {"heartbeat": "", "resources": "", "peer_seen_as": "", "links": {}, "ldirectord": "",
            "keepalived": unit, "vrrp": vrrp, "failover": "requested" if requested else "none",
            "hold": "set" if held_back else "none"}, stale


def _state_sync(cluster: Cluster, view: BalancerView, problems: list[str]) -> str:
    """With the model's state sync: "running" when conntrackd and both IPVS sync daemons
    run, else "DOWN: ..." (a problem: a takeover to or from it would drop connections)."""
    if not cluster.state_sync.enabled:
        return "off"
    if view.conntrackd is None or view.sync_daemons is None:
        return "not read"
    down = [] if view.conntrackd == "active" else [f"conntrackd {view.conntrackd}"]
    down += [f"IPVS sync daemon {role} not running" for role in ("master", "backup") if role not in view.sync_daemons]
    if not down:
        return "running"
    problems.append(f"{view.name}: state sync is down ({', '.join(down)}): a takeover would drop connections")
    return f"DOWN: {', '.join(down)}"


def format_status(status: ClusterStatus) -> str:
    """The one screen `lvsha status` prints."""
    lines = [f"cluster {status.cluster}: " + ("healthy" if status.healthy else "DEGRADED")
             + (f", {status.holder} carries every floating address" if status.holder else "")]
    lines.append("")
    lines.append("balancers:")
    for b in status.balancers:
        if not b.reachable:
            lines.append(f"  {b.name}: UNREACHABLE ({b.error})")
            continue
        if b.engine == "keepalived":
            request = ", FAILOVER REQUESTED (it yields the group: lvsha failover)" if b.failover == "requested" else ""
            request += f", HELD BY A MIGRATION ({render.KEEPALIVED_HOLD_FILE})" if b.hold == "set" else ""
            lines.append(f"  {b.name}: keepalived {b.keepalived}, VRRP {b.vrrp}{request}")
            lines.append(f"  {' ' * len(b.name)}  IPVS {b.ipvs}, firewall {b.firewall}, configuration {b.config}")
        else:
            links = ", ".join(f"{k} {v}" for k, v in sorted(b.links.items())) or "-"
            lines.append(f"  {b.name}: heartbeat {b.heartbeat}, resources {b.resources or '-'}, "
                         f"peer {b.peer_seen_as or '-'}, links {links}")
            lines.append(f"  {' ' * len(b.name)}  ldirectord {b.ldirectord}, IPVS {b.ipvs}, firewall {b.firewall}, "
                         f"configuration {b.config}")
        if b.state_sync not in ("off", "not read"):
            daemons = ", ".join(b.ipvs_sync_daemons) or "none"
            lines.append(f"  {' ' * len(b.name)}  state sync {b.state_sync} (conntrackd {b.conntrackd or '-'}, "
                         f"IPVS sync daemons: {daemons})")
    lines.append("")
    lines.append("floating addresses:")
    width = max(len(a.address) for a in status.addresses)
    for a in status.addresses:
        where = " + ".join(a.holders) if a.holders else "NOWHERE"
        if len(a.holders) > 1:
            where += "   <-- SPLIT BRAIN"
        lines.append(f"  {a.address.ljust(width)}  {where.ljust(20)} {a.purpose}")
    lines.append("")
    for site in status.sites:
        lines.append(f"site {site.name} ({site.virtual}){'' if site.loaded else ': NOT IN IPVS'}")
        for r in site.reals:
            counts = (f"weight {r.weight}, active {r.active}, inactive {r.inactive}, {r.cps} conn/s"
                      if r.weight is not None else "not in IPVS")
            lines.append(f"  {r.host.ljust(12)} {r.address.ljust(21)} {r.state.ljust(20)} {counts}")
    if status.problems:
        lines.append("")
        lines.append("problems:")
        lines += [f"  - {p}" for p in status.problems]
    return "\n".join(lines)
