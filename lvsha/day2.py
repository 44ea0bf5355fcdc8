"""Day-2 commands on a deployed pair, from the same inventory file as the deploy:
`lvsha status`, `lvsha drain` / `lvsha undrain`, `lvsha failover`.

Hosts are reached with the inventory's own pyinfra connection data (user, key,
port, known hosts, jump), through pyinfra's API: what the deploy reaches, these
commands reach. Only the balancers are contacted. Every command reads the live
state first (lvsha.live) and refuses, naming the host and the reason, when
acting would leave the pair worse off.
"""

from __future__ import annotations

import json
import secrets
import shlex
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
from pyinfra.api import Config, Inventory, State

from lvsha import live, render
from lvsha.inventory import CLUSTER_KEY
from lvsha.loader import InventoryError, run_inventory
from lvsha.model import Cluster

FAILOVER_TIMEOUT = 120  # s: a handover moves addresses only (IPVS is loaded on both)
# lvsha-takeover waits this long for heartbeat to start the handover (the holder's release included).
TAKEOVER_REQUEST_TIMEOUT = 60
COMMAND_TIMEOUT = 60  # s: any one command on a balancer (a read takes a second; a drain's reload a few)
DRAIN_WAIT_TIMEOUT = 600
# ldirectord applies a reload (new weights) after rereading its file: seconds, more on a slow guest.
WEIGHT_TIMEOUT = 90


class Day2Error(click.ClickException):
    """A failure the operator reads: names the host and what failed."""

    def show(self, file=None) -> None:
        click.echo(f"lvsha: {self.message}", err=True)


@dataclass
class Pair:
    """The model and a connection to each balancer (None when it could not connect)."""

    cluster: Cluster
    inventory: Inventory
    sudo: bool = False
    hosts: dict = field(default_factory=dict)  # name -> pyinfra Host, connected
    errors: dict = field(default_factory=dict)  # name -> why it is unreachable
    # SSH commands run on each balancer (one round trip each: on a busy guest each costs
    # a process start or more), for the phases' progress lines.
    commands_run: Counter = field(default_factory=Counter)

    def connect(self) -> Pair:
        """Connect to both balancers side by side; an unreachable one is recorded, not fatal."""

        def connect(host):
            try:
                host.connect(show_errors=False, raise_exceptions=True)
                self.hosts[host.name] = host
            except Exception as error:  # noqa: BLE001 -- any connection failure is reported per host
                self.errors[host.name] = f"cannot connect: {error}"

        threads = [threading.Thread(target=connect, args=(h,)) for h in self.inventory]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return self

    def run(self, name: str, command: str, timeout: int = COMMAND_TIMEOUT,
            label: str | None = None) -> tuple[int, str, str]:
        """(0 or 1, stdout, stderr) of `command` on balancer `name`; a command that does
        not finish within `timeout` seconds, or a connection lost under it, is a Day2Error
        naming the balancer and the command (`label`, when given, instead of its text:
        a batch's script) -- never a hang, never a traceback."""
        kwargs = {"_sudo": True} if self.sudo else {}
        shown = label or f"`{command}`"
        self.commands_run[name] += 1
        try:
            ok, output = self.hosts[name].run_shell_command(command, _timeout=timeout, **kwargs)
        except TimeoutError:
            raise Day2Error(f"{name}: no answer to {shown} within {timeout} s "
                            "(the balancer, or the SSH connection to it, hangs)") from None
        except Exception as error:  # noqa: BLE001 -- paramiko, socket and gevent errors alike
            raise Day2Error(f"{name}: the connection was lost during {shown}: "
                            f"{str(error) or type(error).__name__}") from None
        return (0 if ok else 1), output.stdout, output.stderr

    def run_batch(self, name: str, commands: dict[str, str], what: str,
                  timeout: int = COMMAND_TIMEOUT) -> dict[str, tuple[int, str]]:
        """{key: (exit status, stdout)} of each of `commands` ({key: command}), run one
        after the other on balancer `name` in ONE SSH command (batch_script): one round
        trip instead of one per command. `timeout` bounds the whole batch; a hang, a lost
        connection or an answer cut short is a Day2Error naming `what`."""
        token = f"lvsha-{secrets.token_hex(8)}"
        _, out, err = self.run(name, batch_script(list(commands.values()), token), timeout, label=what)
        return parse_batch(out, token, list(commands), f"{name}: {what}", err)

    def require(self, name: str, command: str, what: str, timeout: int = COMMAND_TIMEOUT) -> str:
        rc, out, err = self.run(name, command, timeout)
        if rc != 0:
            raise Day2Error(f"{name}: {what} failed (`{command}`): {(err or out).strip() or 'no output'}")
        return out

    def reachable(self) -> list[str]:
        return [b.name for b in self.cluster.balancers if b.name in self.hosts]


def load_pair(inventory: str, sudo: bool = False, connect_timeout: int = 10) -> Pair:
    """Read the inventory file as pyinfra would: the model and pyinfra's hosts
    for both balancers (not connected yet: `Pair.connect`)."""
    try:
        namespace = run_inventory(inventory)
    except InventoryError as error:
        raise Day2Error(str(error)) from None
    except SystemExit as stop:  # validated_or_exit has printed the problems
        raise Day2Error(f"inventory {inventory}: the model does not validate") from stop
    group = namespace.get("balancers")
    if not (isinstance(group, tuple) and group and group[0]):
        raise Day2Error(f"inventory {inventory}: no `balancers` group (build it with lvsha.inventory.groups)")
    cluster = group[0][0][1].get(CLUSTER_KEY)
    if not isinstance(cluster, Cluster):
        raise Day2Error(f"inventory {inventory}: the balancers carry no cluster model")
    pyinfra_inventory = Inventory((list(group[0]), {}), balancers=group)
    State(pyinfra_inventory, Config(CONNECT_TIMEOUT=connect_timeout))
    return Pair(cluster, pyinfra_inventory, sudo)


BATCH_PROGRAM = render.FILES / "lvsha" / "lvsha-batch"


def batch_script(commands: list[str], token: str) -> str:
    """One SSH command running each of `commands` in turn: files/lvsha/lvsha-batch sent
    inline (`sh -c PROGRAM lvsha-batch TOKEN COMMAND...`; not installed on the balancers,
    so it reads pairs deployed before it too). Its output: for each command a line
    `TOKEN INDEX STATUS` and its stdout, and `TOKEN end` last (parse_batch)."""
    return shlex.join(["sh", "-c", BATCH_PROGRAM.read_text(), "lvsha-batch", token, *commands])


def parse_batch(text: str, token: str, keys: list[str], what: str, stderr: str = "") -> dict[str, tuple[int, str]]:
    """batch_script's output -> {key: (exit status, stdout)}, `keys` naming its commands
    in order; a Day2Error naming `what` when it ends before `TOKEN end` or lacks one
    of them (the shell or the connection broke off: nothing of it is guessed)."""
    found: dict[str, tuple[int, str]] = {}
    current, status, lines, ended = None, 0, [], False
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == [token]:
            if current is not None:
                found[current] = (status, "\n".join(lines))
            current = None
            if fields[1:] == ["end"]:
                ended = True
                break
            if len(fields) == 3 and fields[1].isdigit() and int(fields[1]) < len(keys) and fields[2].isdigit():
                current, status, lines = keys[int(fields[1])], int(fields[2]), []
        elif current is not None:
            lines.append(line)
    missing = [k for k in keys if k not in found]
    if not ended or missing:
        why = "its answer stops half-way" if not ended else f"no answer for {', '.join(missing)}"
        detail = (stderr or "").strip().splitlines()[-1:] or ["no error output"]
        raise Day2Error(f"{what} failed: {why} ({detail[0]})")
    return found


def read_outputs(pair: Pair, name: str) -> dict[str, tuple[int, str]]:
    """What live.BalancerView.from_outputs reads: live.commands(cluster) on balancer
    `name` (the engine's, and live.SYNC_COMMANDS when the model syncs connection state),
    then, on heartbeat, its view of the peer and of each of its links. One SSH command
    (a batch) on keepalived; two on heartbeat (the links' names are known from the first)."""
    peer = pair.cluster.peer(pair.cluster.balancer(name)).name
    commands = dict(live.commands(pair.cluster))
    heartbeat = "hbstatus" in commands
    if heartbeat:
        commands.update(peer=f"cl_status nodestatus {peer}", links=f"cl_status listhblinks {peer}")
    outputs = pair.run_batch(name, commands, "reading its state")
    if heartbeat:
        if outputs["hbstatus"][0] != 0:  # heartbeat is not running: nothing of it is kept
            del outputs["peer"], outputs["links"]
        elif links := live.parse_words(outputs["links"][1]):
            outputs.update(pair.run_batch(name, {f"link:{link}": f"cl_status hblinkstatus {peer} {shlex.quote(link)}"
                                                 for link in links}, "reading its heartbeat links"))
    return outputs


def read_view(pair: Pair, name: str, save_raw: Path | None = None) -> live.BalancerView:
    """One balancer's live view; with `save_raw`, its raw outputs go to SAVE_RAW/NAME.json."""
    if name not in pair.hosts:
        return live.BalancerView.unreachable(name, pair.errors.get(name, "not connected"))
    try:
        outputs = read_outputs(pair, name)
    except Exception as error:  # noqa: BLE001 -- a connection lost half-way
        return live.BalancerView.unreachable(name, f"lost the connection: {error}")
    if save_raw is not None:
        save_raw.mkdir(parents=True, exist_ok=True)
        (save_raw / f"{name}.json").write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    return live.BalancerView.from_outputs(name, outputs)


def read_status(pair: Pair, save_raw: Path | None = None) -> live.ClusterStatus:
    views = {}

    def read(name):
        views[name] = read_view(pair, name, save_raw)

    threads = [threading.Thread(target=read, args=(b.name,)) for b in pair.cluster.balancers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return live.cluster_status(pair.cluster, views)


def drain_pairs(cluster: Cluster, host: str, site: str | None) -> list[tuple[str, str]]:
    """(VIRTUAL, REAL) as ldirectord.cf names them, for web host `host` on every site or on `site`."""
    names = [h.name for h in cluster.web_hosts]
    if host not in names:
        raise Day2Error(f"web host {host!r} is not in the model (web hosts: {', '.join(names)})")
    sites = [s.name for s in cluster.sites]
    if site is not None and site not in sites:
        raise Day2Error(f"site {site!r} is not in the model (sites: {', '.join(sites)})")
    pairs = []
    for vs in cluster.virtual_servers():
        if site is None or vs.site.name == site:
            for web_host, ip in vs.reals:
                if web_host.name == host:
                    pairs.append((vs.address, vs.real_token(ip)))
    return pairs


def active_connections(status: live.ClusterStatus, host: str, site: str | None) -> int:
    return sum(r.active or 0 for s in status.sites if site is None or s.name == site for r in s.reals if r.host == host)


# ---- commands ------------------------------------------------------------------

_inventory = click.argument("inventory", type=click.Path(dir_okay=False))
_sudo = click.option("--sudo", is_flag=True, help="run the balancers' commands with sudo (non-root SSH user)")


def _progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


@click.command("status")
@_inventory
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON (for monitoring)")
@click.option("--save-raw", type=click.Path(file_okay=False, path_type=Path),
              help="also write each balancer's raw tool outputs to DIR/NAME.json (for a bug report)")
@_sudo
def status_command(inventory, as_json, save_raw, sudo):
    """Who holds each floating address, heartbeat's view of both nodes and links,
    each site's real servers (in rotation, failed, drained; weight, connections,
    rate), whether the firewall and the configuration are the model's, and
    connection state sync (conntrackd, the IPVS sync daemons) on each balancer.
    Exit 0 when healthy, 1 when degraded (reasons on stderr)."""
    pair = load_pair(inventory, sudo).connect()
    status = read_status(pair, save_raw)
    if as_json:
        click.echo(json.dumps(status.to_json(), indent=1))
    else:
        click.echo(live.format_status(status))
    for problem in status.problems:
        click.echo(f"lvsha status: {problem}", err=True)
    sys.exit(0 if status.healthy else 1)


def drain_script(cluster: Cluster) -> str:
    """lvsha-drain as the model's engine runs it (keepalived: the file keepalived runs)."""
    return f"{render.DRAIN_SCRIPT} --engine keepalived" if cluster.engine == "keepalived" else render.DRAIN_SCRIPT


def _change_drain(inventory, host, site, sudo, action: str) -> tuple[Pair, list[tuple[str, str]]]:
    pair = load_pair(inventory, sudo)
    pairs = drain_pairs(pair.cluster, host, site)  # a typo fails before connecting anywhere
    pair.connect()
    unreachable = [b.name for b in pair.cluster.balancers if b.name not in pair.hosts]
    if unreachable:
        # Both balancers hold the list: a node that missed it would undo it on takeover.
        raise Day2Error(f"{', '.join(f'{n} ({pair.errors[n]})' for n in unreachable)}: cannot {action}: "
                        "the drained list lives on both balancers; bring it back first")
    arguments = " ".join(f"{v} {r}" for v, r in pairs)
    script = drain_script(pair.cluster)
    done = []
    for name in pair.reachable():
        try:
            pair.require(name, f"{script} {'add' if action == 'drain' else 'remove'} {arguments}",
                         f"{action} {host}")
        except Day2Error as error:
            held = (f"; {', '.join(done)} has it already, so the balancers disagree until "
                    f"`lvsha {action} {host}` succeeds on both (running it again is safe)") if done else \
                "; nothing was changed"
            raise Day2Error(f"{error}{held}") from None
        done.append(name)
    return pair, pairs


def _weights(pair: Pair, host: str, site: str | None) -> dict[str, list[int | None]]:
    """{balancer: [IPVS weight of each of the host's real servers (None: not in IPVS)]}."""
    found = {}
    for name in pair.reachable():
        table = live.parse_ipvsadm(pair.require(name, live.COMMANDS["ipvs"], "reading IPVS"))
        found[name] = [
            (table[vs.address].reals.get(vs.real_address(ip)).weight
             if vs.address in table and vs.real_address(ip) in table[vs.address].reals else None)
            for vs in pair.cluster.virtual_servers() if site is None or vs.site.name == site
            for web_host, ip in vs.reals if web_host.name == host]
    return found


def _wait_for_weights(pair: Pair, host: str, site: str | None, drained: bool) -> str:
    """Wait until the engine (ldirectord, or keepalived's checker) has applied the
    change on every balancer: every real server of the host at weight 0 or out of
    IPVS (drained), or back in IPVS above 0 (undrained). A real server that stays
    out (or at 0) after an undrain is failing its health check: said, not an error."""
    keeper = live.engine_keeper(pair.cluster)
    started = time.monotonic()
    while True:
        weights = _weights(pair, host, site)
        flat = [w for ws in weights.values() for w in ws]
        elapsed = time.monotonic() - started
        if drained and all(w in (0, None) for w in flat):
            return ""
        if not drained and all(w for w in flat):
            return ""
        if elapsed >= WEIGHT_TIMEOUT:
            if drained:
                raise Day2Error(f"{keeper} has not applied the drain of {host} after {WEIGHT_TIMEOUT} s: "
                                f"weights {weights} (the drain is recorded; see `lvsha status`)")
            return (f"; not all back after {WEIGHT_TIMEOUT} s, weights {weights} "
                    "(out of IPVS or at 0: failing the health check)")
        _progress(f"waiting for {keeper} to apply it: weights {weights}")
        time.sleep(2)


@click.command("drain")
@_inventory
@click.argument("host")
@click.option("--site", help="only this site (default: every site)")
@click.option("--wait", is_flag=True, help="return once the host has no active connection left (or --timeout)")
@click.option("--timeout", default=DRAIN_WAIT_TIMEOUT, show_default=True, help="seconds --wait waits at most")
@_sudo
def drain_command(inventory, host, site, wait, timeout, sudo):
    """Take web host HOST out of rotation: no new connections (IPVS weight 0),
    established ones continue; returns once the engine (ldirectord, keepalived) has
    set the weights on both balancers. Held across failovers, restarts, reloads and
    deploys, until `lvsha undrain`."""
    pair, pairs = _change_drain(inventory, host, site, sudo, "drain")
    note = _wait_for_weights(pair, host, site, drained=True)
    where = f"site {site}" if site else "every site"
    click.echo(f"{host} drained on {where} ({len(pairs)} real server(s)) on {', '.join(pair.reachable())}{note}")
    if not wait:
        return
    started = time.monotonic()
    while True:
        left = active_connections(read_status(pair), host, site)
        elapsed = time.monotonic() - started
        if left == 0:
            click.echo(f"{host}: no active connection left after {elapsed:.0f} s")
            return
        if elapsed >= timeout:
            click.echo(f"{host}: still {left} active connection(s) after {timeout} s (the drain stays)")
            sys.exit(3)
        _progress(f"{host}: {left} active connection(s), {elapsed:.0f} s")
        time.sleep(5)


@click.command("undrain")
@_inventory
@click.argument("host")
@click.option("--site", help="only this site (default: every site)")
@_sudo
def undrain_command(inventory, host, site, sudo):
    """Put web host HOST back into rotation (on every site, or one); returns once
    the engine has restored its weight (at its next successful health check)."""
    pair, pairs = _change_drain(inventory, host, site, sudo, "undrain")
    note = _wait_for_weights(pair, host, site, drained=False)
    click.echo(f"{host} back in rotation on {f'site {site}' if site else 'every site'} "
               f"({len(pairs)} real server(s)) on {', '.join(pair.reachable())}{note}")


def _fit_to_carry(status: live.ClusterStatus, target: str) -> list[str]:
    """Why `target` cannot take the group over now (empty: it can)."""
    view = next(b for b in status.balancers if b.name == target)
    reasons = []
    if not view.reachable:
        return [f"{target} is unreachable ({view.error})"]
    if view.engine == "keepalived":
        if view.keepalived != "active":
            reasons.append(f"keepalived is {view.keepalived} on {target}")
        elif view.vrrp != "BACKUP":
            if view.hold == "set":
                why = (f" ({live.HELD_BY_MIGRATION}: {render.KEEPALIVED_HOLD_FILE}; see `lvsha status` for how to "
                       f"clear it)")
            else:
                why = " (a tracked interface or check failed)" if view.vrrp == "FAULT" else ""
            reasons.append(f"{target} is VRRP {view.vrrp}, not BACKUP: it would not take the group{why}")
        elif view.hold == "set":
            reasons.append(f"{target} is {live.HELD_BY_MIGRATION} ({render.KEEPALIVED_HOLD_FILE}): it would not take "
                           f"the group")
    else:
        if view.heartbeat != "running":
            reasons.append(f"heartbeat is {view.heartbeat} on {target}")
        elif view.peer_seen_as != "active":
            reasons.append(f"{target} sees its peer as {view.peer_seen_as or 'unknown'}")
        if view.ldirectord != "active":
            reasons.append(f"ldirectord is {view.ldirectord} on {target}: its IPVS is not loaded")
    if view.ipvs != live.IPVS_COMPLETE:
        reasons.append(f"the IPVS table of {target} is {view.ipvs}: it would not serve those sites")
    if view.firewall != "loaded as rendered":
        reasons.append(f"the firewall of {target} is {view.firewall}")
    if view.engine != "keepalived" and not any(state == "up" for state in view.links.values()):
        reasons.append(f"no heartbeat link of {target} is up")
    return reasons


def _request_failover(pair: Pair, name: str, value: int) -> None:
    """`lvsha failover`'s tracked file on keepalived (lvsha-keepalived failover 0|1)."""
    pair.require(name, f"{render.KEEPALIVED_PROGRAM} failover {value}", f"writing {value} to the failover request")


def _master_down_seconds(cluster: Cluster, name: str) -> float:
    """VRRP's master-down interval of balancer `name`: the missed advertisements, plus
    the skew of its priority ((256 - priority) / 256 advertisement)."""
    keepalive = cluster.heartbeat.keepalive
    return cluster.vrrp_down_adverts() * keepalive + (256 - cluster.vrrp_priority(cluster.balancer(name))) / 256 * keepalive


def _keepalived_handover(pair: Pair, holder: str, target: str,
                         requested: dict[str, bool]) -> tuple[list[str], list[str]]:
    """keepalived has no takeover command: lvsha's tracked file (keepalived.conf's
    vrrp_track_file) changes the priorities instead. Returns (nodes whose request is
    undone once `target` carries everything, nodes whose request is undone if it does
    not in time). With auto_failback on, 1 on the holder lowers its priority under the
    target's, which preempts; the request stays while the target carries the group
    (a holder of lower model priority needs none: clearing the target's own is the
    way back). With auto_failback off, 1 holds the holder in FAULT until the target is
    MASTER, then is cleared (nopreempt keeps the group there). `requested`: whether
    each node's request is set now (read just before); a 0 is written only where one is."""
    cluster = pair.cluster
    if requested[target]:
        _request_failover(pair, target, 0)
    if not cluster.heartbeat.auto_failback:
        _progress(f"holding {holder} in FAULT ({render.KEEPALIVED_FAILOVER_FILE}) until {target} is MASTER")
        _request_failover(pair, holder, 1)
        return [holder], [holder]
    if cluster.vrrp_priority(cluster.balancer(target)) > cluster.vrrp_priority(cluster.balancer(holder)):
        # keepalived.conf's preempt_delay (render.keepalived_conf: the master's only) delays the preemption.
        delay = render.sync_listen(cluster) if target == cluster.master.name else 0
        down = _master_down_seconds(cluster, target)
        waits = (f"keepalived's preempt_delay ({delay} s: its IPVS sync daemons' listening time) and VRRP's "
                 f"master-down interval ({down:.1f} s)" if delay else f"VRRP's master-down interval ({down:.1f} s)")
        _progress(f"clearing the failover request on both: {target} has the higher priority and preempts "
                  f"after {waits}, about {delay + down:.0f} s")
        if requested[holder]:
            _request_failover(pair, holder, 0)
        return [], []
    _progress(f"lowering the VRRP priority of {holder} under {target}'s ({render.KEEPALIVED_FAILOVER_FILE}: "
              f"until `lvsha failover --to {holder}`); {target} takes the group after VRRP's master-down "
              f"interval ({_master_down_seconds(cluster, target):.1f} s)")
    _request_failover(pair, holder, 1)
    return [], [holder]


class _Phases:
    """How long each phase of a command took and how many SSH commands it ran on each
    balancer, said as each ends (progress lines), and all of them at the end."""

    def __init__(self) -> None:
        self.pair: Pair | None = None
        self.started = self._mark = time.monotonic()
        self._counted: Counter = Counter()
        self.done: list[tuple[str, float]] = []

    def watch(self, pair: Pair) -> Pair:
        """Count `pair`'s SSH commands from now on."""
        self.pair, self._counted = pair, Counter(pair.commands_run)
        return pair

    def end(self, what: str, note: str = "") -> float:
        now = time.monotonic()
        seconds = now - self._mark
        counts = self.pair.commands_run if self.pair is not None else Counter()
        ran = ", ".join(f"{name} {counts[name] - self._counted[name]}" for name in sorted(counts)
                        if counts[name] > self._counted[name])
        _progress(f"{what}: {seconds:.1f} s" + (f" (SSH commands: {ran}{note})" if ran else
                                                 (f" ({note.lstrip(', ')})" if note else "")))
        self.done.append((what, seconds))
        self._mark, self._counted = now, Counter(counts)
        return seconds

    def summary(self) -> str:
        return (f"took {time.monotonic() - self.started:.1f} s in all: "
                + ", ".join(f"{what} {seconds:.1f} s" for what, seconds in self.done))


@click.command("failover")
@_inventory
@click.option("--to", "target", help="the balancer to hand everything to (default: the one not carrying it)")
@click.option("--timeout", default=FAILOVER_TIMEOUT, show_default=True, help="seconds to wait for the handover")
@_sudo
def failover_command(inventory, target, timeout, sudo):
    """Hand every floating address to the other balancer (or --to BALANCER) and
    return once it carries them all and its IPVS serves every site. Refuses when
    the receiving balancer is not healthy. Handing back is the same command. On
    keepalived, a priority change the pair honours (docs/operating.md), undone by
    handing back. Each phase's duration and SSH commands are said as it ends."""
    phases = _Phases()
    pair = phases.watch(load_pair(inventory, sudo))
    names = [b.name for b in pair.cluster.balancers]
    if target is not None and target not in names:
        raise Day2Error(f"--to {target}: not a balancer of the model ({', '.join(names)})")
    pair.connect()
    phases.end("loading the inventory and connecting to " + " and ".join(names))
    status = read_status(pair)
    phases.end("reading both balancers' state")
    if status.holder is None:
        raise Day2Error("no single balancer carries every floating address now; see `lvsha status` "
                        "(a handover needs one holder to hand over from)")
    target = target or next(n for n in names if n != status.holder)
    if target == status.holder:
        click.echo(f"{target} already carries every floating address: nothing to do")
        return
    reasons = _fit_to_carry(status, target)
    if reasons:
        raise Day2Error(f"refusing to hand over to {target}: " + "; ".join(reasons))
    holder = status.holder
    click.echo(f"handing every floating address from {holder} to {target}")
    started = time.monotonic()
    keepalived = pair.cluster.engine == "keepalived"
    if keepalived:
        requested = {b.name: b.failover != "none" for b in status.balancers}
        clear_after, clear_on_failure = _keepalived_handover(pair, holder, target, requested)
    else:
        request_timeout = min(timeout, TAKEOVER_REQUEST_TIMEOUT)
        _progress(f"asking heartbeat on {target} to take everything over from {holder} "
                  f"(at most {request_timeout} s for {holder} to release it)")
        # On the receiver: hb_takeover, then the addresses added the moment heartbeat
        # starts acquiring them (files/heartbeat/lvsha-takeover).
        pair.require(target, f"{render.TAKEOVER_SCRIPT} {holder} {request_timeout}", "the takeover request",
                     timeout=request_timeout + COMMAND_TIMEOUT)
    phases.end("the request")
    rounds = [0]
    try:
        elapsed = _wait_for_handover(pair, holder, target, timeout, started, rounds)
    except Day2Error as error:
        if keepalived and clear_on_failure:
            # Fail closed: the holder takes its model priority back (it still carries the group,
            # or takes it back if the target took part of it).
            for name in clear_on_failure:
                _request_failover(pair, name, 0)
            raise Day2Error(f"{error}; the failover request on {', '.join(clear_on_failure)} is undone") from None
        raise
    phases.end("the handover", f", {rounds[0]} round(s) of one on each")
    if keepalived and clear_after:
        for name in clear_after:
            _request_failover(pair, name, 0)  # nopreempt: the group stays on the target
        phases.end(f"clearing the failover request on {', '.join(clear_after)}")
    _progress(phases.summary())
    click.echo(f"{target} carries every floating address and serves every site after {elapsed:.1f} s")


HANDOVER_ROUND_INTERVAL = 1.0  # s: at most one round of reads a second (more would slow a small machine)


def _on_each(calls: dict[str, Callable[[], object]]) -> dict:
    """{name: calls[name]()} run side by side (one per balancer); the first error raised again."""
    results, errors = {}, {}

    def run(name):
        try:
            results[name] = calls[name]()
        except Exception as error:  # noqa: BLE001 -- raised again below, in this thread
            errors[name] = error

    threads = [threading.Thread(target=run, args=(name,)) for name in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in calls:
        if name in errors:
            raise errors[name]
    return results


def _wait_for_handover(pair: Pair, holder: str, target: str, timeout: int, started: float,
                       rounds: list[int] | None = None) -> float:
    """Seconds until `target` carries every floating address, `holder` none, and the
    target's IPVS serves every site; a Day2Error after `timeout` seconds. Each round
    reads both balancers side by side, one SSH command on each (addresses, the target's
    IPVS, the VRRP state on keepalived), at most one round a second; each round's
    progress line says what is still waited for. `rounds[0]` counts the rounds."""
    cluster = pair.cluster
    total = len(cluster.floating_ips())
    vrrp = {"vrrp": live.KEEPALIVED_COMMANDS["vrrp"]} if cluster.engine == "keepalived" else {}
    reads = {target: {"addresses": live.COMMANDS["addresses"], "ipvs": live.COMMANDS["ipvs"], **vrrp},
             holder: {"addresses": live.COMMANDS["addresses"], **vrrp}}
    while True:
        round_started = time.monotonic()
        if rounds is not None:
            rounds[0] += 1
        seen = _on_each({name: (lambda name=name: pair.run_batch(name, reads[name], "reading addresses and IPVS"))
                         for name in (target, holder)})
        for name, outputs in seen.items():
            if outputs["addresses"][0] != 0:
                raise Day2Error(f"{name}: reading addresses failed (`{live.COMMANDS['addresses']}`)")
        held = live.floating_held(cluster, live.parse_addresses(seen[target]["addresses"][1]))
        left = live.floating_held(cluster, live.parse_addresses(seen[holder]["addresses"][1]))
        serves = seen[target]["ipvs"][0] == 0 and live.serves_every_site(cluster, live.parse_ipvsadm(seen[target]["ipvs"][1]))
        elapsed = time.monotonic() - started
        if held == total and left == 0 and serves:
            return elapsed
        if elapsed >= timeout:
            raise Day2Error(f"{target} does not carry everything after {timeout} s: {target} holds {held}/{total} "
                            f"floating addresses, {holder} {left}, {target}'s IPVS "
                            f"{'serves' if serves else 'does not serve'} every site; see `lvsha status`")
        waiting = ([f"{target} to carry every address"] if held < total else []) + \
            ([f"{holder} to release its {left}"] if left else []) + \
            ([] if serves else [f"{target}'s IPVS to serve every site"])
        states = (f" (VRRP: {holder} {seen[holder]['vrrp'][1].strip() or 'unknown'}, "
                  f"{target} {seen[target]['vrrp'][1].strip() or 'unknown'})") if vrrp else ""
        _progress(f"{elapsed:.1f} s: {target} carries {held}/{total} floating addresses, {holder} {left}{states}; "
                  f"waiting for {', '.join(waiting)}")
        time.sleep(max(0.0, HANDOVER_ROUND_INTERVAL - (time.monotonic() - round_started)))


COMMANDS = (status_command, drain_command, undrain_command, failover_command)
