"""Checks run while pyinfra prepares the deploy, before any host is changed.

pyinfra executes the deploy file for every host before running a single
operation, so a `DeployError` raised here stops the whole run with nothing
changed on any host.
"""

from __future__ import annotations

from netaddr import IPAddress, IPNetwork
from pyinfra import host, state
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Hostname

from lvsha import ifupdown, render
from lvsha.firewall_check import Packet, UnsupportedRule, judge
from lvsha.model import Balancer, Cluster
from tasks import engines, migration
from tasks.facts import IfupdownFiles, InterfaceAddresses, OsRelease, SshConnection, fact

SUPPORTED = {("Debian", 12), ("Debian", 13)}  # the lab builds and deploys both (lvsha/lab/image.py)


def check_distribution() -> None:
    """Only distributions the deploy was tested on are touched."""
    release = fact(OsRelease)
    version = release.get("VERSION_ID", "").split(".")[0]
    found = ("Debian" if release.get("ID") == "debian" else release.get("NAME") or release.get("ID"),
             int(version) if version.isdigit() else None)
    if found not in SUPPORTED:
        supported = ", ".join(f"{n} {v}" for n, v in sorted(SUPPORTED))
        raise DeployError(
            f"{host.name}: {found[0] or 'an unknown system'} {found[1] or ''} is not supported "
            f"(supported: {supported})"
        )


def check_pair_in_run(cluster: Cluster) -> None:
    """Both balancers are in this run (connected, prepared, not left out by
    --limit): a pair is changed together or not at all. pyinfra stops a run
    whose host cannot be reached (config.py: FAIL_PERCENT = 0)."""
    in_run = {h.name for h in state.inventory.get_active_hosts()}
    missing = [b.name for b in cluster.balancers if b.name not in in_run]
    if missing:
        raise DeployError(
            f"{host.name}: balancer {', '.join(missing)} is not in this run (unreachable, failed, or left out "
            "by --limit); lvsha changes both balancers in one run or neither"
        )


# The services of each engine (tasks/engines.py; the lab's tests read them here).
ENGINE_SERVICES = engines.ENGINE_SERVICES


def check_engine(cluster: Cluster):
    """The pair runs the model's engine, or is migrated to it live: returns the
    migration this run makes (tasks/migration.py), or None. heartbeat -> keepalived and
    back are migrated one balancer at a time; a pair that cannot be migrated safely (not
    one holder, a node unreachable or unhealthy, the other engine's service where it
    would take the addresses too) is refused naming each node's state, before anything
    changes. An idle pair (no floating address carried, neither engine running: the other
    engine's packages installed, never configured) is no migration: the model's engine's
    deploy stops and disables the other's services before it starts its own. Decided from
    both nodes' facts (so both plan the same, or both refuse)."""
    return migration.plan(cluster)


def check_node_name(balancer: Balancer) -> None:
    """heartbeat silently refuses to start when a node name is not `uname -n`."""
    actual = fact(Hostname)
    if actual != balancer.name:
        raise DeployError(
            f"{host.name}: `uname -n` is {actual!r} but the model names this balancer {balancer.name!r}; "
            "heartbeat would not start. Set the host name or fix balancers[].name."
        )


def check_interfaces(own_addresses: list[tuple[str, list[str]]]) -> None:
    """The model's interfaces exist, and those ifupdown configures (a stock Debian
    install's primary NIC) can move to systemd-networkd as they are: IPv4,
    static, with addresses the model gives them, nothing else ifupdown would run.
    The move then keeps every address in place, and the session with it."""
    present = fact(InterfaceAddresses)
    missing = [i for i, _ in own_addresses if i not in present]
    if missing:
        raise DeployError(f"{host.name}: interface(s) {', '.join(missing)} named in the model do not exist")
    files = fact(IfupdownFiles)
    try:
        stanzas, _ = ifupdown.parse(files)
    except ifupdown.IfupdownError as error:
        raise DeployError(f"{host.name}: {error}") from None
    for interface, model_cidrs in own_addresses:
        where = f"{host.name}: {interface} in {', '.join(sorted({s.path for s in stanzas.get(interface, [])}) or ifupdown.INTERFACES)}"
        model = ", ".join(model_cidrs)
        for stanza in stanzas.get(interface, []):
            if stanza.family != "inet":
                raise DeployError(f"{where}: `iface {interface} {stanza.family} {stanza.method}`; lvsha's model is "
                                  "IPv4 and systemd-networkd would drop it: remove that stanza first")
            if stanza.method not in ("static", "manual"):
                raise DeployError(f"{where}: ifupdown configures it by {stanza.method}; lvsha gives it the model's "
                                  f"static address(es) {model}: configure it statically (or remove the stanza) first")
            lost = stanza.uncarried_options()
            if lost:
                raise DeployError(f"{where}: ifupdown also does {', '.join(lost)} for it, which systemd-networkd would "
                                  "not: move that elsewhere or remove it first")
            try:
                ifupdown_cidrs = [str(a) for a in stanza.addresses()]
            except ValueError as error:
                raise DeployError(f"{where}: cannot read its address: {error}") from None
            foreign = [c for c in ifupdown_cidrs if c not in model_cidrs]
            if foreign:
                raise DeployError(f"{where}: ifupdown gives it {', '.join(foreign)}, which the model does not "
                                  f"(the model: {model}); moving it to systemd-networkd would remove it: "
                                  "put the address in the model or remove it from the host first")


def check_ssh_survives_firewall(cluster: Cluster, balancer: Balancer) -> None:
    """Refuse to load a firewall that would drop the SSH session this deploy uses.

    The session's first packet, as a new connection from the same client, is
    judged against the whole rendered ruleset (raw, nat, filter), so that both
    this session and the next deploy's get through, also after a reboot. A
    session over IPv6 is refused: rules.v6 accepts no new IPv6 connection.
    """
    conn = fact(SshConnection)
    if conn is None:
        return
    server, client, port = IPAddress(conn["server"]), IPAddress(conn["client"]), conn["server_port"]
    if server.version == 6:
        raise DeployError(f"{host.name}: this deploy's SSH session ({client} -> [{server}]:{port}) is over IPv6, "
                          "which the new firewall drops (the model is IPv4: rules.v6 accepts no new connection); "
                          "connect to the balancer's IPv4 address")
    addresses = fact(InterfaceAddresses)
    # The interface the kernel routes the session by (the weak host model lets it arrive on
    # another one than the address's: a management NIC, asymmetric routing); failing that,
    # the one holding the server's address.
    holding = [name for name, cidrs in addresses.items() if any(IPNetwork(c).ip == server for c in cidrs)]
    arriving_on = [conn["route_interface"]] if conn.get("route_interface") else holding
    routed = f", routed by {arriving_on[0]} though {holding[0]} holds {server}" \
        if conn.get("route_interface") and holding and holding != arriving_on else ""
    session = (f"this deploy's SSH session ({client} -> {server}:{port} on "
               f"{', '.join(arriving_on) or 'an unknown interface'}{routed})")
    fix = ("allow it in firewall.services (own external address), narrow firewall.spoofed_sources, "
           "or set the balancer's management_interface")
    if len(arriving_on) != 1:
        raise DeployError(f"{host.name}: cannot tell which interface {session} arrives on; refusing to load a firewall")
    local = {IPNetwork(c).ip for cidrs in addresses.values() for c in cidrs} | {IPAddress(balancer.external_ip)}
    packet = Packet(arriving_on[0], client, server, "tcp", port)
    try:
        verdict = judge(render.firewall_file(cluster, balancer).content, packet, local)
    except UnsupportedRule as error:
        raise DeployError(f"{host.name}: cannot judge whether the new firewall keeps {session}: {error}") from None
    if not verdict.accepted:
        raise DeployError(f"{host.name}: {session} would be dropped by the new firewall ({verdict.why}); {fix}")
