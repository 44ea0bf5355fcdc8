"""The live migrations of a running pair between the engines, heartbeat -> keepalived and
back (docs/engines.md#migrating).

Decided for the pair from both nodes' facts while the run is planned, so that both
balancers plan the same steps; each step is an operation that runs on one node (its
`_if`), in the order below, and pyinfra (FAIL_PERCENT = 0) stops the run at the first
that fails. Either way one balancer is changed at a time, the one that carries nothing
(B) first, while the holder (H) of every floating address serves; the firewall accepts
both engines' messages until the last step (tasks/firewall.py); and the state sync
deploy, which runs before the steps, has already switched conntrackd on both nodes to
the new engine's configuration and the IPVS sync daemons to its unit.

heartbeat -> keepalived, from a pair on heartbeat whose holder carries every floating
address:

1. on the node that carries nothing (converted first): keepalived held out of MASTER
   (the hold: a tracked file of weight 0, FAULT while it is 1, persistent), heartbeat
   and ldirectord stopped and disabled (IPVS stays loaded: ldirectord's cleanstop=no;
   keepalived takes the table over, adding what exists already is no error for it),
   keepalived started and enabled (held: no address, no advertisement) with the
   handover's keepalived.conf: the model's but for a master-down timer of one
   advertisement (render.KEEPALIVED_HANDOVER_DOWN_ADVERTS; the keepalived deploy writes
   it, hands_over_to). keepalived leaving FAULT (the hold cleared) enters BACKUP and
   waits its whole master-down timer before MASTER, hearing no peer (2.2.7 and 2.3.3:
   try_up_instance, vrrp_state_leave_fault): deadtime with the model's file, one
   advertisement and the skew with this one. No VRRP peer exists until step 3, and the
   hold, not the timer, keeps it from taking what heartbeat holds;
2. the handover: the node converted first is checked (held, idle); heartbeat is
   disabled on the holder (it still runs and holds the group, but a reboot there no
   longer starts it); a watch is armed on the node converted first that clears the
   hold once the holder has let go (no floating address answers ARP, and its heartbeat
   has been silent for deadtime); heartbeat's stop begun on the holder, the step done
   once the holder carries no floating address and its heartbeat is stopping (it gives
   its group up early in its stop; the rest of the stop is not waited for there), and
   the node converted first takes them (hold cleared once no floating address answers
   ARP there either, VRRP MASTER one advertisement and the skew later): the one
   interruption, the holder's release, pyinfra's next operation and that timer; then
   keepalived there gets the model's keepalived.conf (its deadtime) by a reload, before
   any VRRP peer runs: the instance stays MASTER and keeps every address (_model_timer);
3. on the old holder: the end of heartbeat's stop waited for (bounded; the run stops
   there, naming heartbeat's state, when it does not end), ldirectord stopped and
   disabled, keepalived started and enabled without hold, joining as BACKUP (with
   auto_failback on and this node the model's master, with `lvsha failover`'s request
   set, so that it does not preempt: one move);
4. both: the firewall without heartbeat's rules (it accepted heartbeat and VRRP both
   while the pair migrated).

Connection state: on keepalived's configuration conntrackd writes the peer's states
into the standby's kernel as they change (nothing to commit at the handover); step 1
asks the holder for its whole table once more.

keepalived -> heartbeat, from a pair on keepalived whose MASTER (H) carries every
floating address and whose BACKUP (B) none. heartbeat started alone waits initdead,
hears no peer (the other node runs keepalived, not heartbeat) and takes every address.
Started on B while H holds the group it would take it too (two holders); started on B
only once H has let go, the sites would be down for initdead and more, and with
auto_failback on (keepalived keeps the group on the model's master) H's heartbeat would
take the group back when it joins: a second interruption. So the addresses do not
move: heartbeat is started on H, where they are, and takes them over in place, and B
joins it:

1. on B: keepalived stopped and disabled (it carries nothing: nothing moves; its IPVS
   stays loaded, --dont-release-ipvs, and ldirectord, which the ldirectord deploy has
   started on both nodes beside keepalived's checker, keeps editing the same table),
   its hold and `lvsha failover`'s request cleared. heartbeat stays off on B (stopped
   and disabled: a reboot does not start it) until step 3;
2. on H, the engine swapped under the addresses: B checked (neither engine, no
   address); both nodes' IPVS checked (every virtual service: ldirectord's table);
   keepalived disabled and heartbeat enabled on H (a reboot of H from then on starts
   heartbeat alone, which takes the group after initdead: nobody else can); heartbeat
   started on H keeping the addresses (the guard's adopt, files/heartbeat/
   lvsha-heartbeat-guard: its one start that does not release, and only while H
   carries every floating address and B's heartbeat is silent); after initdead
   heartbeat declares B dead and takes the group over, finding every resource running
   where keepalived put it (the takeover watch and ResourceManager check each first:
   nothing is added or removed); then keepalived on H is frozen and killed (its VRRP
   never runs its shutdown, which would remove the addresses; systemd told not to
   restart it), leaving the addresses to heartbeat and IPVS to ldirectord;
3. on B: heartbeat started and enabled, joining H: as standby; or, when B is the
   model's master with auto_failback on (the group was away from it, as a forward
   migration or `lvsha failover` leaves it), heartbeat's own failback moves the group
   to B (H releases, then B acquires, committing the states conntrackd kept): the only
   move, one interruption about a failback's;
4. both: the firewall without keepalived's rules.

Exactly one node carries the addresses throughout: H until step 3, and B after a
failback. Connection state: conntrackd on heartbeat's configuration (its external
cache) keeps on B the states H sends; B's keepalived leaving in step 1 asks it to
shorten the kernel's copies it held on keepalived's configuration (lvsha-conntrackd
stop) and for H's whole table once more.

A run that dies half-way leaves at most one holder (to keepalived: none when it dies
after the holder let go and the watch expires without clearing the hold:
docs/engines.md#migrating); the next run finds the pair half-migrated and continues
from the step it reached (after the handover, the keepalived deploy gives the new
holder the model's keepalived.conf, by the reload that applies any new file, before the
old holder's keepalived starts), or refuses naming each node's state and the hold. Back to
heartbeat, a run that died after step 2 leaves the pair on heartbeat alone: the
heartbeat deploy, which starts heartbeat on B, is step 3.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import server

from lvsha import render
from lvsha.model import HEARTBEAT_UDP_PORT, Balancer, Cluster, FloatingIP
from tasks.engines import ENGINE_SERVICES, OTHER_ENGINE
from tasks.facts import (InterfaceAddresses, IpvsVirtualServices, KeepalivedHold, fact, on_host, unit_off,
                         unit_state)
from tasks.rendered import put, rendered_file

MOVERS = tuple(services[0] for services in ENGINE_SERVICES.values())  # each engine's that moves the addresses
OLD_SERVICES = ENGINE_SERVICES["heartbeat"]  # what the migration to keepalived leaves
# Stages of each migration (by the engine it goes to), in order; a run starts at the one the pair has reached.
CONVERT_FIRST, HANDOVER, CONVERT_SECOND = "convert-first", "handover", "convert-second"
LEAVE_FIRST, SWAP, JOIN = "leave-first", "swap", "join"
STAGES = {"keepalived": (CONVERT_FIRST, HANDOVER, CONVERT_SECOND), "heartbeat": (LEAVE_FIRST, SWAP, JOIN)}
# s a step's wait may take: keepalived's start; heartbeat's bounded stop (2 x 30 s) and
# its guard (the release's wait for the addresses to go, and step 3's for the stop's end);
# the watch's life (the handover's steps and pyinfra's between them); keepalived's
# processes ending once killed.
START_TIMEOUT = 60
RELEASE_TIMEOUT = 2 * render.STOP_TIMEOUT + 30
WATCH_TIMEOUT = RELEASE_TIMEOUT + 120
RESYNC_TIMEOUT = 10
RETIRE_TIMEOUT = 30
HOW_TO_UNDO = "docs/engines.md#migrating"


@dataclass(frozen=True)
class Node:
    name: str
    units: dict  # service -> {"running", "enabled", "state"}
    carried: int  # floating addresses it carries
    ipvs_missing: tuple[str, ...]  # the model's virtual services its IPVS lacks
    held: bool = False  # the migration's hold is set (keepalived kept in FAULT)
    carries: frozenset = frozenset()  # the model's floating addresses it carries (_key)

    def runs(self, service: str) -> bool:
        """Runs or is about to (facts.unit_off, the rule every operation keeps)."""
        return not unit_off(self.units[service])

    def stopping(self, service: str) -> bool:
        """Its stop runs: systemd's ActiveState "deactivating" (whichever SubState of the stop)."""
        return self.units[service]["active"] == "deactivating"

    def live(self, service: str) -> bool:
        """Runs, is about to, or starts at boot."""
        return self.runs(service) or self.units[service]["enabled"]

    def off(self, engine: str) -> bool:
        """None of `engine`'s services runs, is about to, or starts at boot."""
        return not any(self.live(s) for s in ENGINE_SERVICES[engine])

    @property
    def idle(self) -> bool:
        """Carries no floating address of the model, and neither engine's address-moving
        service (heartbeat, keepalived) runs or is about to here: on an idle pair nobody
        serves and nothing can take an address while the model's engine is installed (the
        other's may be enabled, ldirectord may run: packages installed, never configured)."""
        return self.carried == 0 and not any(self.runs(s) for s in MOVERS)

    @property
    def off_heartbeat(self) -> bool:
        return self.off("heartbeat")

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
    """To the engine `to`: `first`, the node carrying nothing when the migration began, is
    changed first; `second`, the holder, serves until its turn (to keepalived the group
    moves to `first` at the handover; to heartbeat it stays on `second`, unless heartbeat's
    failback gives it to `first`); `stage` is where this run starts."""

    first: str
    second: str
    stage: str
    to: str = "keepalived"

    def runs(self, stage: str) -> bool:
        stages = STAGES[self.to]
        return stages.index(stage) >= stages.index(self.stage)


def hands_over_to(migration: Migration | None, balancer: Balancer) -> bool:
    """`balancer` takes the group from heartbeat in this run (the node converted first, the
    handover still to come): its keepalived.conf is the handover rendering
    (render.keepalived_conf), a master-down timer of render.KEEPALIVED_HANDOVER_DOWN_ADVERTS
    advertisements, until the handover's last step gives it the model's again."""
    return (migration is not None and migration.to == "keepalived" and migration.runs(HANDOVER)
            and balancer.name == migration.first)


def read_node(cluster: Cluster, balancer: Balancer) -> Node:
    services = [s for engine in ENGINE_SERVICES.values() for s in engine]
    with on_host(balancer.name):
        addresses = fact(InterfaceAddresses)
        ipvs = fact(IpvsVirtualServices)
        units = {s: unit_state(s) for s in services}
        held = fact(KeepalivedHold)
    carries = frozenset(_key(ip) for ip in cluster.floating_ips() if ip.cidr in addresses.get(ip.interface, []))
    missing = tuple(vs.address for vs in cluster.virtual_servers() if f"TCP {vs.address}" not in ipvs)
    return Node(balancer.name, units, len(carries), missing, held, carries)


def _key(ip: FloatingIP) -> tuple[str, str]:
    return ip.cidr, ip.interface


def plan(cluster: Cluster) -> Migration | None:
    """The migration this run makes, from both nodes' facts: None when there is none to
    make (no node runs, would run or starts at boot a service of the other engine; or the
    pair is idle, Node.idle: the model's engine's own deploy), or a DeployError naming each
    node's state and what to do."""
    nodes = [read_node(cluster, b) for b in cluster.balancers]
    total = len(cluster.floating_ips())
    old = OTHER_ENGINE[cluster.engine]
    if all(n.off(old) for n in nodes):
        return None
    if all(n.idle for n in nodes):
        # Nothing to hand over: the engine's deploy stops and disables the other engine's
        # services before it starts its own (a fresh install where both are installed).
        return None
    holders = [n for n in nodes if n.carried == total]
    others = [n for n in nodes if n.carried == 0]
    if len(holders) != 1 or len(others) != 1:
        live = ", ".join(n.name for n in nodes if not n.off(old))
        _refuse_new_addresses(cluster, nodes, total, live)
        _refuse(cluster.engine, nodes, total, f"{' or '.join(ENGINE_SERVICES[old])} runs, would start or is enabled "
                f"on {live}, and the pair cannot be migrated to {cluster.engine}: a migration starts from one balancer "
                "carrying every floating address and the other none; settle the pair first (lvsha status)"
                + "".join(_held_note(n, nodes, total) for n in nodes if n.held))
    to = _to_keepalived if cluster.engine == "keepalived" else _to_heartbeat
    return to(cluster, nodes, total, holders[0], others[0])


def _refuse_new_addresses(cluster: Cluster, nodes: list[Node], total: int, live: str):
    """Refused naming them when addresses of the model are carried by neither node while one
    node carries all the others and its peer none, and each is new in the model (a site's VIP
    whose virtual service neither node's IPVS has, or a web host's mail address): the pair is
    settled on what it had, and the run adds a site as it changes the engine."""
    nobody = [ip for ip in cluster.floating_ips() if not any(_key(ip) in n.carries for n in nodes)]
    serving = [n for n in nodes if n.carried]
    if not nobody or len(serving) != 1 or serving[0].carried + len(nobody) != total:
        return
    unloaded = {str(vs.vip) for vs in cluster.virtual_servers() if all(vs.address in n.ipvs_missing for n in nodes)}
    if not all(str(ip.address) in unloaded or ip.purpose.startswith("mail ") for ip in nobody):
        return
    old = OTHER_ENGINE[cluster.engine]
    names = ", ".join(f"{ip.cidr} on {ip.interface} ({ip.purpose})" for ip in nobody)
    (idle,) = [n for n in nodes if n is not serving[0]]
    _refuse(cluster.engine, nodes, total, f"{' or '.join(ENGINE_SERVICES[old])} runs, would start or is enabled on "
            f"{live}, and the pair cannot be migrated to {cluster.engine} in this run: no balancer carries "
            f"{'this floating address' if len(nobody) == 1 else 'these floating addresses'} of the model, new in it: "
            f"{names} ({serving[0].name} carries the other {serving[0].carried}, {idle.name} none). A migration "
            f"starts from one balancer carrying every floating address of the model and adds nothing: deploy the "
            f"new site on the current engine first (engine = \"{old}\"), then switch the engine to {cluster.engine}")


def _to_keepalived(cluster: Cluster, nodes: list[Node], total: int, holder: Node, other: Node) -> Migration:
    """heartbeat -> keepalived: `other` is converted first and takes the group at the handover."""
    engine = cluster.engine
    if holder.runs("heartbeat"):
        if holder.units["heartbeat"]["state"] != "running":
            _refuse(engine, nodes, total, f"heartbeat on {holder.name} is {holder.units['heartbeat']['state']}, not running")
        if holder.runs("keepalived"):
            # A plain stop runs VRRP's shutdown, which removes the addresses it has (or finds) under heartbeat.
            _refuse(engine, nodes, total, f"keepalived runs on {holder.name} beside its heartbeat, which carries the "
                    f"floating addresses: do not stop it there (its VRRP's shutdown would remove them under heartbeat); "
                    f"end it with `{render.MIGRATE_SCRIPT} retire {RETIRE_TIMEOUT} {_addresses(cluster)}` on "
                    f"{holder.name} (keepalived disabled, frozen and killed, the addresses left to heartbeat; the "
                    f"program is files/keepalived/lvsha-migrate where it is not installed), then deploy again")
        if other.runs("keepalived") and not other.off_heartbeat:
            _refuse(engine, nodes, total,
                    f"keepalived runs on {other.name} beside heartbeat or ldirectord: stop it there first")
        if other.ipvs_missing:
            _refuse(engine, nodes, total, f"IPVS on {other.name}, which would carry the sites after the handover, "
                    f"lacks {', '.join(other.ipvs_missing)}: check ldirectord there (journalctl -u ldirectord)")
        return Migration(other.name, holder.name, HANDOVER if other.converted else CONVERT_FIRST)
    if holder.converted:
        if other.runs("heartbeat"):  # running or stopping: either way not off, and each says what to do
            beside = f"while {holder.name} carries the addresses on keepalived"
            if other.stopping("heartbeat"):
                # A run that died after the handover, before step 3 waited for the end of the release's stop.
                _refuse(engine, nodes, total, f"heartbeat on {other.name} is still stopping "
                        f"({other.units['heartbeat']['state']}) {beside}: deploy again once its stop has ended "
                        f"(`systemctl is-active heartbeat` on {other.name} says inactive or failed; systemd kills it "
                        "after TimeoutStopSec)")
            _refuse(engine, nodes, total, f"heartbeat runs on {other.name} {beside}: heartbeat there would take them "
                    f"too; `systemctl disable --now heartbeat` on {other.name}, then deploy again")
        return Migration(holder.name, other.name, CONVERT_SECOND)
    _refuse(engine, nodes, total, f"{holder.name} carries the floating addresses with neither heartbeat nor keepalived running")


def _to_heartbeat(cluster: Cluster, nodes: list[Node], total: int, holder: Node, other: Node) -> Migration:
    """keepalived -> heartbeat: `other` leaves keepalived first, `holder` keeps the group and
    gets heartbeat under it, then `other` joins (module docstring)."""
    engine = cluster.engine
    if other.runs("heartbeat"):
        _refuse(engine, nodes, total, f"heartbeat runs on {other.name} while {holder.name} carries the floating "
                f"addresses and keepalived is live on the pair: heartbeat there hears no heartbeat from "
                f"{holder.name} and would take them too; `systemctl disable --now heartbeat` on {other.name}, "
                "then deploy again")
    engines = [s for s in ("keepalived", "heartbeat") if holder.runs(s)]
    if not engines:
        _refuse(engine, nodes, total,
                f"{holder.name} carries the floating addresses with neither heartbeat nor keepalived running")
    unsettled = [f"{s} on {holder.name} is {holder.units[s]['state']}, not running"
                 for s in engines if holder.units[s]["state"] != "running"]
    if unsettled:
        _refuse(engine, nodes, total, "; ".join(unsettled))
    if not other.live("keepalived"):
        return Migration(other.name, holder.name, SWAP, "heartbeat")
    if len(engines) > 1:
        # Not heartbeat's stop on the holder: its guard releases every floating address while keepalived there is MASTER.
        _refuse(engine, nodes, total, f"keepalived and heartbeat both run on {holder.name} while keepalived runs or "
                f"starts at boot on {other.name} too: `systemctl disable --now keepalived` on {other.name}, which "
                f"carries nothing (no address moves; leave {holder.name} as it is), then deploy again: the migration "
                f"resumes with step 2 (the heartbeat running on {holder.name} is kept, its keepalived ended)")
    return Migration(other.name, holder.name, LEAVE_FIRST, "heartbeat")


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


def _stopped_and_disabled(*services: str) -> list[str]:
    units = " ".join(f"{s}.service" for s in services)
    return [f"systemctl disable {units}", f"systemctl stop {units}"]


def _resync(cluster: Cluster, balancer: Balancer, step: int, on: str, peer: str):
    """With state sync on, conntrackd on `on` asks `peer` for its whole table (bounded)."""
    if cluster.state_sync.enabled:
        _step(f"Migration {step}/4: conntrackd on {on} asks {peer} for every connection state", on, balancer,
              [f"timeout {RESYNC_TIMEOUT} conntrackd -C {render.CONNTRACKD_CONF} -n"])


def _master_with_failback(cluster: Cluster, name: str) -> bool:
    """`name` is the model's master and auto_failback is on: the engine gives it the group when it joins."""
    return cluster.heartbeat.auto_failback and name == cluster.master.name


def operations(cluster: Cluster, balancer: Balancer, migration: Migration):
    """The migration's steps from its stage on, each an operation on one node (module docstring)."""
    steps = _steps_to_keepalived if migration.to == "keepalived" else _steps_to_heartbeat
    steps(cluster, balancer, migration)


def _steps_to_keepalived(cluster: Cluster, balancer: Balancer, migration: Migration):
    first, second = migration.first, migration.second
    addresses = _addresses(cluster)
    program, migrate = render.KEEPALIVED_PROGRAM, render.MIGRATE_SCRIPT
    if migration.runs(CONVERT_FIRST):
        _step(f"Migration 1/4: {second} keeps heartbeat for now, keepalived stays off there", second, balancer,
              _stopped_and_disabled("keepalived"))
        _step(f"Migration 1/4: keepalived on {first} held out of MASTER before it starts ({first} carries no address)",
              first, balancer, [f"{program} hold 1"])
        _step(f"Migration 1/4: heartbeat and ldirectord stopped and disabled on {first} (IPVS stays loaded)", first,
              balancer, _stopped_and_disabled(*OLD_SERVICES))
        _resync(cluster, balancer, 1, first, second)
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
        # Returns once the addresses are gone and heartbeat is stopping, not at the end of its
        # stop (seconds later): the take-over follows at once; step 3 waits for that end.
        _step(f"Migration 2/4: heartbeat stops on {second}, which gives every floating address up (the interruption "
              f"begins): done once {second} carries none and its heartbeat is stopping (at most {RELEASE_TIMEOUT} s)",
              second, balancer, [f"{migrate} release {RELEASE_TIMEOUT} {addresses}"])
        _step(f"Migration 2/4: keepalived on {first} takes every floating address once none answers ARP (the "
              f"interruption ends after its handover master-down timer, {render.KEEPALIVED_HANDOVER_DOWN_ADVERTS} x "
              f"{cluster.heartbeat.keepalive} s and the skew; at most {_takeover_timeout(cluster)} s)", first, balancer,
              [f"{migrate} take-over {_takeover_timeout(cluster)} {addresses}"])
        _model_timer(cluster, balancer, first)
    if migration.runs(CONVERT_SECOND):
        # After the reload to the model's file (this run's or an earlier one's): MASTER with
        # everything, steadily, before anything changes on the old holder.
        _step(f"Migration 3/4: keepalived on {first} is VRRP MASTER and carries every floating address, three "
              f"checks in a row (at most {START_TIMEOUT} s)", first, balancer, [f"{migrate} master {START_TIMEOUT} {addresses}"])
        # heartbeat's stop, begun by the release, ended (its guard's ExecStopPost run) before
        # anything here rests on it: keepalived starts here next.
        _step(f"Migration 3/4: heartbeat and ldirectord stopped and disabled on {second} (heartbeat's stop, begun at the "
              f"handover, ended: at most {RELEASE_TIMEOUT} s; IPVS stays loaded)", second, balancer,
              [f"{migrate} stopped {RELEASE_TIMEOUT} {addresses}", *_stopped_and_disabled(*OLD_SERVICES)])
        yields = _master_with_failback(cluster, second)
        _step(f"Migration 3/4: keepalived started and enabled on {second}, joining as BACKUP"
              + (f" (it yields to {first}: `lvsha failover --to {second}` moves the group back)" if yields else ""),
              second, balancer, [f"{program} hold 0", *([f"{program} failover 1"] if yields else []),
                                 "systemctl enable keepalived.service", "systemctl start keepalived.service"])
        _step(f"Migration 3/4: keepalived on {second} is VRRP BACKUP and carries no address (at most "
              f"{START_TIMEOUT} s)", second, balancer, [f"{migrate} joined {START_TIMEOUT} {addresses}"])


def _steps_to_heartbeat(cluster: Cluster, balancer: Balancer, migration: Migration):
    first, second = migration.first, migration.second
    addresses = _addresses(cluster)
    program, migrate = render.KEEPALIVED_PROGRAM, render.MIGRATE_SCRIPT
    started = render.heartbeat_start_timeout(cluster)  # heartbeat.service's own start timeout
    put(render.migrate_script())
    _step(f"Migration: heartbeat stays off on {first} until it joins {second} (step 3)", first, balancer,
          _stopped_and_disabled("heartbeat"))
    if migration.runs(LEAVE_FIRST):
        _step(f"Migration 1/4: {second} carries every floating address (at most {START_TIMEOUT} s)", second, balancer,
              [f"{migrate} carries {START_TIMEOUT} {addresses}"])
        _step(f"Migration 1/4: keepalived stopped and disabled on {first}, which carries nothing (nothing moves; its "
              f"IPVS stays loaded, kept by ldirectord), its hold and failover request cleared", first, balancer,
              [*_stopped_and_disabled("keepalived"), f"{program} hold 0", f"{program} failover 0"])
        _resync(cluster, balancer, 1, first, second)
    if migration.runs(SWAP):
        adopted = _adopted_timeout(cluster)
        _step(f"Migration 2/4: {first} runs neither keepalived nor heartbeat and carries no address (at most "
              f"{START_TIMEOUT} s)", first, balancer, [f"{migrate} off {START_TIMEOUT} {addresses}"])
        # Both tables checked before anything changes on the holder: B may carry the group after step 3
        # (heartbeat's failback, or a takeover), H's is the one serving (ldirectord's checks with keepalived's).
        _ipvs_ready(cluster, 2, first, balancer, "(ldirectord's table, keepalived gone)")
        _ipvs_ready(cluster, 2, second, balancer, "(ldirectord's table, beside keepalived's checker)")
        _step(f"Migration 2/4: heartbeat enabled and started on {second}, keeping the floating addresses keepalived "
              f"carries there (keepalived disabled: a reboot starts heartbeat alone; at most {started} s)", second,
              balancer, [f"{migrate} adopt {started} {addresses}"])
        _step(f"Migration 2/4: heartbeat on {second} holds the group where keepalived put it (after initdead, "
              f"{cluster.heartbeat.initdead} s; at most {adopted} s)", second, balancer,
              [f"{migrate} adopted {adopted} {cluster.master.name} {addresses}"])
        _step(f"Migration 2/4: keepalived on {second} frozen and killed, the addresses left to heartbeat and IPVS to "
              f"ldirectord (at most {RETIRE_TIMEOUT} s)", second, balancer, [f"{migrate} retire {RETIRE_TIMEOUT} {addresses}"])
    if migration.runs(JOIN):
        takes = _master_with_failback(cluster, first)
        # the model's master named: haresources' node, which tells what each node's `cl_status rscstatus` means
        role = "carry" if takes else "standby"
        _step(f"Migration 3/4: heartbeat started and enabled on {first}, joining {second}"
              + (f": the model's master with auto_failback on, it takes the group back (heartbeat's failback: the one "
                 f"move)" if takes else " as standby") + f" (at most {started} s to start, {started} s to settle)", first, balancer,
              [f"{migrate} join {started} {second} {cluster.master.name} {role} {addresses}"])


def _model_timer(cluster: Cluster, balancer: Balancer, first: str):
    """keepalived on `first`, MASTER, gets the model's keepalived.conf again (its master-down
    timer: deadtime), checked and applied by reload before its peer's keepalived starts: the
    instance keeps its state (MASTER) and every address the new file still has, which is all
    of them (keepalived 2.2.7 and 2.3.3: vrrp.c vrrp_complete_init copies each old instance's
    state to the new one matched by vrrp_exist, which compares neither timer; clear_diff_vrrp
    removes only addresses the new file lacks; restore_vrrp_state marks it reload_master,
    which vrrp_scheduler.c vrrp_init_state leaves MASTER). A run that dies before it: the
    keepalived deploy's next run writes the model's file and reloads (its record of the file
    applied, KeepalivedApplied)."""
    handover = render.keepalived_conf(cluster, balancer, handover=True)
    rendered_file(name=f"Migration 2/4: keepalived on {first} given the model's master-down timer again "
                       f"({cluster.vrrp_down_adverts()} advertisements, deadtime) by a reload: it stays MASTER, no "
                       "address moves", rendered=render.keepalived_conf(cluster, balancer), check=render.KEEPALIVED_CHECK,
                  then=("systemctl reload keepalived.service",), after=handover.content,
                  _if=lambda: balancer.name == first)


def _ipvs_ready(cluster: Cluster, step: int, on: str, balancer: Balancer, why: str):
    """`on`'s IPVS holds every virtual service of the model (lvsha-ipvs-ready --strict, bounded)."""
    _step(f"Migration {step}/4: IPVS on {on} holds the model's virtual services {why} (at most "
          f"{render.ipvs_takeover_timeout(cluster)} s)", on, balancer,
          [f"{render.IPVS_READY_SCRIPT} --strict {render.ipvs_takeover_timeout(cluster)}"])


def _takeover_timeout(cluster: Cluster) -> int:
    """The ARP probes, keepalived's down timer (the handover's is one advertisement; the
    model's, deadtime, where its file was not the handover's), under one advertisement of
    skew, and a margin."""
    return cluster.heartbeat.deadtime + 2 * cluster.heartbeat.keepalive + 30


def _adopted_timeout(cluster: Cluster) -> int:
    """heartbeat's initdead (it then declares its silent peer dead), its takeover of the
    group (seconds of resource scripts on a slow guest: deadtime's worth), and heartbeat's
    start margin (a slow guest, as heartbeat.service's own start timeout allows)."""
    return cluster.heartbeat.initdead + cluster.heartbeat.deadtime + render.START_MARGIN
