"""The live migration of a running pair from heartbeat to keepalived (docs/engines.md#migrating).

Decided for the pair from both nodes' facts while the run is planned, so that both
balancers plan the same steps; each step is an operation that runs on one node (its
`_if`), in the order below, and pyinfra (FAIL_PERCENT = 0) stops the run at the first
that fails. The steps, from a pair on heartbeat whose holder carries every floating
address:

1. on the node that carries nothing (converted first): keepalived held out of MASTER
   (the hold: a tracked file of weight 0, FAULT while it is 1, persistent), heartbeat
   and ldirectord stopped and disabled (IPVS stays loaded: ldirectord's cleanstop=no;
   keepalived takes the table over, adding what exists already is no error for it),
   keepalived started and enabled (held: no address, no advertisement);
2. the handover: the node converted first is checked (held, idle); heartbeat is
   disabled on the holder (it still runs and holds the group, but a reboot there no
   longer starts it); a watch is armed on the node converted first that clears the
   hold once the holder has let go (no floating address answers ARP, and its heartbeat
   has been silent for deadtime); heartbeat stops on the holder (its guard gives every
   address up), and the node converted first takes them (hold cleared, VRRP MASTER
   after its down timer): the one interruption;
3. on the old holder: ldirectord stopped and disabled, keepalived started and enabled
   without hold, joining as BACKUP (with auto_failback on and this node the model's
   master, with `lvsha failover`'s request set, so that it does not preempt: one move);
4. both: the firewall without heartbeat's rules (it accepted heartbeat and VRRP both
   while the pair migrated).

Connection state: the state sync deploy, which runs before, has already switched
conntrackd on both nodes to keepalived's configuration (the peer's states written into
the standby's kernel as they change: nothing to commit at the handover) and the IPVS
sync daemons' unit; step 1 asks the holder for its whole table once more.

A run that dies half-way leaves at most one holder (none when it dies after the holder
let go and the watch expires without clearing the hold: docs/engines.md#migrating); the
next run finds the pair half-migrated and continues from the step it reached, or refuses
naming each node's state and the hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import server

from lvsha import render
from lvsha.model import HEARTBEAT_UDP_PORT, Balancer, Cluster
from tasks.facts import InterfaceAddresses, IpvsVirtualServices, KeepalivedHold, fact, on_host, unit_state

# The SubStates of a service that neither runs nor is about to (systemd's "inactive" is "dead").
STOPPED_STATES = ("dead", "failed")
OLD_SERVICES = ("heartbeat", "ldirectord")  # preflight.ENGINE_SERVICES["heartbeat"]
# Stages, in order; a run starts at the one the pair has reached.
CONVERT_FIRST, HANDOVER, CONVERT_SECOND = "convert-first", "handover", "convert-second"
STAGES = (CONVERT_FIRST, HANDOVER, CONVERT_SECOND)
# s a step's wait may take: keepalived's start; heartbeat's bounded stop (2 x 30 s) and
# its guard; the watch's life (the handover's steps and pyinfra's between them).
START_TIMEOUT = 60
RELEASE_TIMEOUT = 2 * render.STOP_TIMEOUT + 30
WATCH_TIMEOUT = RELEASE_TIMEOUT + 120
RESYNC_TIMEOUT = 10
HOW_TO_UNDO = "docs/engines.md#migrating"


@dataclass(frozen=True)
class Node:
    name: str
    units: dict  # service -> {"running", "enabled", "state"}
    carried: int  # floating addresses it carries
    ipvs_missing: tuple[str, ...]  # the model's virtual services its IPVS lacks
    held: bool = False  # the migration's hold is set (keepalived kept in FAULT)

    def runs(self, service: str) -> bool:
        return self.units[service]["state"] not in STOPPED_STATES

    def live(self, service: str) -> bool:
        """Runs, is about to, or starts at boot."""
        return self.runs(service) or self.units[service]["enabled"]

    @property
    def off_heartbeat(self) -> bool:
        return not any(self.live(s) for s in OLD_SERVICES)

    @property
    def converted(self) -> bool:
        return self.off_heartbeat and self.runs("keepalived")

    def describe(self, total: int) -> str:
        services = ", ".join(f"{s} {u['state']} {'enabled' if u['enabled'] else 'disabled'}"
                             for s, u in self.units.items())
        missing = f", IPVS lacks {' '.join(self.ipvs_missing)}" if self.ipvs_missing else ""
        held = f", the migration's hold set ({render.KEEPALIVED_HOLD_FILE})" if self.held else ""
        return f"{self.name}: {services}, carries {self.carried} of {total} floating addresses{missing}{held}"


@dataclass(frozen=True)
class Migration:
    """heartbeat -> keepalived: `first` is converted first and ends holding the group,
    `second` (the holder on heartbeat) joins last; `stage` is where this run starts."""

    first: str
    second: str
    stage: str

    def runs(self, stage: str) -> bool:
        return STAGES.index(stage) >= STAGES.index(self.stage)


def read_node(cluster: Cluster, balancer: Balancer) -> Node:
    services = [*OLD_SERVICES, "keepalived"]
    with on_host(balancer.name):
        addresses = fact(InterfaceAddresses)
        ipvs = fact(IpvsVirtualServices)
        units = {s: unit_state(s) for s in services}
        held = fact(KeepalivedHold)
    carried = sum(ip.cidr in addresses.get(ip.interface, []) for ip in cluster.floating_ips())
    missing = tuple(vs.address for vs in cluster.virtual_servers() if f"TCP {vs.address}" not in ipvs)
    return Node(balancer.name, units, carried, missing, held)


def plan(cluster: Cluster) -> Migration | None:
    """The migration this run makes, from both nodes' facts: None when there is none to
    make (no node runs, would run or starts heartbeat or ldirectord at boot: the
    engine's own deploy), or a DeployError naming each node's state and what to do."""
    nodes = [read_node(cluster, b) for b in cluster.balancers]
    total = len(cluster.floating_ips())
    if cluster.engine != "keepalived":
        if not any(n.live("keepalived") for n in nodes):
            return None
        _refuse(cluster.engine, nodes, total, _back_to_heartbeat(nodes, total))
    if all(n.off_heartbeat for n in nodes):
        return None
    holders = [n for n in nodes if n.carried == total]
    others = [n for n in nodes if n.carried == 0]
    if len(holders) != 1 or len(others) != 1:
        _refuse(cluster.engine, nodes, total, "the pair cannot be migrated to it: a migration starts from one "
                "balancer carrying every floating address and the other none; settle the pair first (lvsha status)"
                + "".join(_held_note(n, nodes, total) for n in nodes if n.held))
    holder, other = holders[0], others[0]
    if holder.runs("heartbeat"):
        if holder.units["heartbeat"]["state"] != "running":
            _refuse(cluster.engine, nodes, total,
                    f"heartbeat on {holder.name} is {holder.units['heartbeat']['state']}, not running")
        if holder.runs("keepalived"):
            _refuse(cluster.engine, nodes, total,
                    f"keepalived runs on {holder.name} beside its heartbeat: stop it there first")
        if other.runs("keepalived") and not other.off_heartbeat:
            _refuse(cluster.engine, nodes, total,
                    f"keepalived runs on {other.name} beside heartbeat or ldirectord: stop it there first")
        if other.ipvs_missing:
            _refuse(cluster.engine, nodes, total, f"IPVS on {other.name}, which would carry the sites after the "
                    f"handover, lacks {', '.join(other.ipvs_missing)}: check ldirectord there (journalctl -u ldirectord)")
        return Migration(other.name, holder.name, HANDOVER if other.converted else CONVERT_FIRST)
    if holder.converted:
        if other.runs("heartbeat"):
            _refuse(cluster.engine, nodes, total, f"heartbeat runs on {other.name} while {holder.name} carries the "
                    f"addresses on keepalived: heartbeat there would take them too; `systemctl disable --now heartbeat` on "
                    f"{other.name}, then deploy again")
        return Migration(holder.name, other.name, CONVERT_SECOND)
    _refuse(cluster.engine, nodes, total,
            f"{holder.name} carries the floating addresses with neither heartbeat nor keepalived running")


def _back_to_heartbeat(nodes: list[Node], total: int) -> str:
    """Why a pair with keepalived live is refused on engine heartbeat, and the way back by hand."""
    held = [n for n in nodes if n.held and n.live("keepalived") and n.carried == 0 and not n.runs("heartbeat")]
    serving = [n for n in nodes if n.carried == total and n.units["heartbeat"]["state"] == "running"
               and not n.live("keepalived")]
    if len(held) == 1 and len(serving) == 1:
        b, h = held[0].name, serving[0].name
        return (f"the migration to keepalived stopped before its handover: {b} runs keepalived held out of MASTER "
                f"by the migration's hold ({render.KEEPALIVED_HOLD_FILE}) and carries no floating address, and {h} "
                f"serves on heartbeat. Going back costs no interruption (nothing moves): on {b}, `systemctl disable "
                f"--now keepalived`, then `{render.KEEPALIVED_PROGRAM} hold 0` (only once keepalived is stopped "
                f"there: cleared while it runs, it would take the addresses {h} carries), then deploy (heartbeat and "
                f"ldirectord start on {b} again); or deploy with engine='keepalived' (the migration continues)")
    return ("keepalived runs, would start or is enabled on a balancer, and the migration from keepalived back to "
            "heartbeat is not built. By hand (the sites are down until heartbeat takes over, about initdead): "
            "`systemctl disable --now keepalived` on the backup, then on the master, then deploy; or deploy with "
            "engine='keepalived'")


def _held_note(node: Node, nodes: list[Node], total: int) -> str:
    """A refusal's word on a node the migration's hold keeps out of MASTER."""
    (peer,) = [n for n in nodes if n is not node]
    busy = [f"carries {peer.carried} of {total} floating addresses"] if peer.carried else []
    busy += [f"runs heartbeat ({peer.units['heartbeat']['state']})"] if peer.runs("heartbeat") else []
    now = (f"not yet: {peer.name} {' and '.join(busy)}" if busy
           else f"{peer.name} carries nothing and runs no heartbeat")
    return (f"; {node.name} is held out of MASTER by the migration's hold ({render.KEEPALIVED_HOLD_FILE} is set): "
            f"its keepalived takes nothing until `{render.KEEPALIVED_PROGRAM} hold 0` there, which is safe once "
            f"{peer.name} carries no floating address and its heartbeat is stopped ({now}); then deploy again")


def _refuse(engine: str, nodes: list[Node], total: int, why: str):
    raise DeployError(f"{host.name}: the model's engine is {engine}, and {why}. Nothing was changed. "
                      f"The balancers: {'; '.join(n.describe(total) for n in nodes)}. See {HOW_TO_UNDO}.")


def _addresses(cluster: Cluster) -> str:
    return " ".join(render.floating_ips_arguments(cluster))


def _step(name: str, on: str, balancer: Balancer, commands: list[str]):
    """One step, run on the node `on` only (both balancers plan it: the same operations in the same order)."""
    server.shell(name=name, commands=commands, _if=lambda: balancer.name == on)


def operations(cluster: Cluster, balancer: Balancer, migration: Migration):
    """The migration's steps from its stage on, each an operation on one node (module docstring)."""
    first, second = migration.first, migration.second
    addresses = _addresses(cluster)
    program, migrate = render.KEEPALIVED_PROGRAM, render.MIGRATE_SCRIPT
    if migration.runs(CONVERT_FIRST):
        _step(f"Migration 1/4: {second} keeps heartbeat for now, keepalived stays off there", second, balancer,
              ["systemctl disable keepalived.service", "systemctl stop keepalived.service"])
        _step(f"Migration 1/4: keepalived on {first} held out of MASTER before it starts ({first} carries no address)",
              first, balancer, [f"{program} hold 1"])
        _step(f"Migration 1/4: heartbeat and ldirectord stopped and disabled on {first} (IPVS stays loaded)", first,
              balancer, ["systemctl disable heartbeat.service ldirectord.service",
                         "systemctl stop heartbeat.service ldirectord.service"])
        if cluster.state_sync.enabled:
            _step(f"Migration 1/4: conntrackd on {first} asks {second} for every connection state", first, balancer,
                  [f"timeout {RESYNC_TIMEOUT} conntrackd -C {render.CONNTRACKD_CONF} -n"])
        _step(f"Migration 1/4: keepalived started and enabled on {first}, held (no address)", first, balancer,
              ["systemctl enable keepalived.service", "systemctl start keepalived.service"])
    if migration.runs(HANDOVER):
        deadtime = cluster.heartbeat.deadtime  # the watch's silence: as long as heartbeat takes to call a peer dead
        _step(f"Migration 2/4: keepalived on {first} runs held and carries no address (at most {START_TIMEOUT} s)",
              first, balancer, [f"{migrate} held {START_TIMEOUT} {addresses}"])
        _step(f"Migration 2/4: heartbeat disabled on {second}, which still runs it and carries the group (a reboot "
              f"there no longer starts it)", second, balancer, ["systemctl disable heartbeat.service"])
        _step(f"Migration 2/4: {first} clears its hold once {second} gives the addresses up: none answers ARP and "
              f"its heartbeat is silent for {deadtime} s (armed for {WATCH_TIMEOUT} s)", first, balancer,
              # the addresses with the internal gateway first (floating_ips): the one probed every round
              [f"{migrate} arm {WATCH_TIMEOUT} {deadtime} {HEARTBEAT_UDP_PORT} {addresses}"])
        _step(f"Migration 2/4: heartbeat stops on {second}, which gives every floating address up (the interruption "
              f"begins; at most {RELEASE_TIMEOUT} s)", second, balancer, [f"{migrate} release {RELEASE_TIMEOUT} {addresses}"])
        _step(f"Migration 2/4: keepalived on {first} takes every floating address (the interruption ends; at most "
              f"{_takeover_timeout(cluster)} s)", first, balancer,
              [f"{migrate} take-over {_takeover_timeout(cluster)} {addresses}"])
    if migration.runs(CONVERT_SECOND):
        _step(f"Migration 3/4: heartbeat and ldirectord stopped and disabled on {second} (IPVS stays loaded)", second,
              balancer, ["systemctl disable heartbeat.service ldirectord.service",
                         "systemctl stop heartbeat.service ldirectord.service"])
        yields = cluster.heartbeat.auto_failback and second == cluster.master.name
        _step(f"Migration 3/4: keepalived started and enabled on {second}, joining as BACKUP"
              + (f" (it yields to {first}: `lvsha failover --to {second}` moves the group back)" if yields else ""),
              second, balancer, [f"{program} hold 0", *([f"{program} failover 1"] if yields else []),
                                 "systemctl enable keepalived.service", "systemctl start keepalived.service"])
        _step(f"Migration 3/4: keepalived on {second} is VRRP BACKUP and carries no address (at most "
              f"{START_TIMEOUT} s)", second, balancer, [f"{migrate} joined {START_TIMEOUT} {addresses}"])


def _takeover_timeout(cluster: Cluster) -> int:
    """keepalived's down timer (deadtime, plus under one advertisement of skew), the watch's
    probes, and a margin."""
    return cluster.heartbeat.deadtime + 2 * cluster.heartbeat.keepalive + 30
