"""Facts the tasks read before changing anything."""

from __future__ import annotations

import json
import shlex
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyinfra import host, state
from pyinfra.api import FactBase
from pyinfra.context import ctx_host

from lvsha import ifupdown, render


class InterfaceAddresses(FactBase):
    """IPv4 addresses of every interface (also those with none, or down), as
    CIDR strings: {"eth0": ["10.0.0.254/24"], "eth1": []}."""

    default = dict

    def command(self) -> str:
        # Not `ip -4`: that leaves out interfaces without an IPv4 address.
        return "ip -j addr show"

    def requires_command(self) -> str:
        return "ip"

    def process(self, output):
        links = json.loads("".join(output) or "[]")
        return {
            link["ifname"]: [f'{a["local"]}/{a["prefixlen"]}' for a in link.get("addr_info", []) if a.get("family") == "inet"]
            for link in links
        }


class DefaultRoutes(FactBase):
    """IPv4 default routes in the main table: [{"gateway": "192.168.0.254", "dev": "eth0"}]."""

    default = list

    def command(self) -> str:
        return "ip -4 -j route show default"

    def requires_command(self) -> str:
        return "ip"

    def process(self, output):
        return [{"gateway": r.get("gateway"), "dev": r.get("dev")} for r in json.loads("".join(output) or "[]")]


class SshConnection(FactBase):
    """The SSH connection this deploy runs over, from the server's side:
    {"client": ip, "client_port": n, "server": ip, "server_port": n, "route_interface":
    the interface the kernel routes the session's packets to the client by (None if
    it cannot tell)}, or None when not connected over SSH (e.g. @local). With the weak
    host model a session can arrive on another interface than the one holding the
    server's address (a management NIC, asymmetric routing): the route is what counts."""

    def command(self) -> str:
        return ('set -- ${SSH_CONNECTION:-}; echo "$*"; '
                '[ $# -eq 4 ] && ip -o route get "$1" from "$3" 2>/dev/null; true')

    def process(self, output):
        fields = (output[0] if output else "").split()
        if len(fields) != 4:
            return None
        client, client_port, server, server_port = fields
        route = " ".join(output[1:]).split()
        interface = route[route.index("dev") + 1] if "dev" in route[:-1] else None
        return {"client": client, "client_port": int(client_port), "server": server, "server_port": int(server_port),
                "route_interface": interface}


class IfupdownFiles(FactBase):
    """ifupdown's configuration as text: {path: text} of /etc/network/interfaces
    and the files it sources from /etc/network/interfaces.d (Debian's default);
    {} without ifupdown."""

    default = dict
    _MARK = "@@lvsha-file "

    def command(self) -> str:
        return (
            f"for f in {ifupdown.INTERFACES} {ifupdown.INTERFACES_D}/*; do "
            f'[ -f "$f" ] || continue; printf "{self._MARK}%s\\n" "$f"; '
            # the shell's own read (no program started per file); a last line without newline ends too
            f'while IFS= read -r line || [ -n "$line" ]; do printf "%s\\n" "$line"; done < "$f"; done; true'
        )

    def process(self, output):
        files, current = {}, None
        for line in output:
            if line.startswith(self._MARK):
                current = line[len(self._MARK):]
                files[current] = []
            elif current is not None:
                files[current].append(line)
        return {path: "\n".join(lines) + "\n" for path, lines in files.items()}


class Applied(FactBase):
    """What the services and the firewall run with, as lvsha-applied recorded it:
    {"heartbeat": [digest], "ldirectord": [digest], "firewall": [rules sha1, ruleset digest],
     "firewall-now": [digest of the ruleset loaded now], "firewall6", "firewall6-now" the same
     for IPv6, "conntrackd", and on a web host "nginx": [digest of the sites file nginx
     serves]} (files/lvsha/lvsha-applied lists every record); {} before lvsha-applied is
     installed."""

    default = dict

    def command(self) -> str:
        return f"{render.APPLIED_SCRIPT} show 2>/dev/null || true"

    def process(self, output):
        return {fields[0]: fields[1:] for fields in (line.split() for line in output) if fields}


class KeepalivedApplied(FactBase):
    """The sha1 of the keepalived.conf keepalived last (re)started with, as its unit's
    drop-in recorded it (lvsha-keepalived record), or None."""

    def command(self) -> str:
        return f"cat {render.KEEPALIVED_APPLIED} 2>/dev/null; true"

    def process(self, output):
        words = " ".join(output).split()
        return words[0] if words else None


class KeepalivedMigrateDropin(FactBase):
    """Whether lvsha-migrate retire's runtime drop-in (render.KEEPALIVED_MIGRATE_DROPIN:
    systemd told not to restart keepalived) is left."""

    default = bool

    def command(self) -> str:
        return f"test -e {render.KEEPALIVED_MIGRATE_DROPIN} && echo left; true"

    def process(self, output):
        return "left" in " ".join(output).split()


class KeepalivedHold(FactBase):
    """Whether the live migration's hold is set (lvsha-keepalived hold: a non-zero
    number in render.KEEPALIVED_HOLD_FILE keeps keepalived in FAULT); False without the file."""

    def command(self) -> str:
        return f"cat {render.KEEPALIVED_HOLD_FILE} 2>/dev/null; true"

    def process(self, output):
        words = " ".join(output).split()
        return bool(words) and words[0].isdigit() and int(words[0]) != 0


class IpvsVirtualServices(FactBase):
    """IPVS virtual services as "TCP 10.0.0.1:0" strings ([] without ipvsadm or IPVS)."""

    default = list

    def command(self) -> str:
        return "ipvsadm -Ln 2>/dev/null || true"

    def process(self, output):
        return [" ".join(line.split()[:2]) for line in output if line.split()[:1] in (["TCP"], ["UDP"])]


class LdirectordServices(FactBase):
    """The virtual services the ldirectord.cf on disk names, by address as ipvsadm shows
    them ("10.0.0.1:0"); [] without the file."""

    default = list

    def command(self) -> str:
        return f"sed -n 's/^virtual=\\([^[:space:]]*\\).*/\\1/p' {render.LDIRECTORD_CF} 2>/dev/null; true"

    def process(self, output):
        return [line.strip() for line in output if line.strip()]


class ManagedFiles(FactBase):
    """Every regular file and symbolic link directly in `directories`, read in one
    command: {path: {"sha1": ..., "mode": "644", "user": "root", "group": "root"}}
    for a file, {path: {"link": target}} for a link."""

    default = dict

    def command(self, directories) -> str:
        folders = " ".join(shlex.quote(d) for d in directories)
        return (f"find {folders} -maxdepth 1 \\( -type f -printf 'meta %m %u %g %p\\n' \\) "
                f"-o \\( -type l -printf 'link %p %l\\n' \\) 2>/dev/null; "
                f"find {folders} -maxdepth 1 -type f -exec sha1sum {{}} + 2>/dev/null; true")

    def process(self, output):
        found: dict[str, dict] = {}
        for line in output:
            fields = line.split()
            if fields[:1] == ["meta"] and len(fields) == 5:
                found.setdefault(fields[4], {}).update(mode=fields[1], user=fields[2], group=fields[3])
            elif fields[:1] == ["link"] and len(fields) == 3:
                found[fields[1]] = {"link": fields[2]}
            elif len(fields) == 2:
                found.setdefault(fields[1], {})["sha1"] = fields[0]
        return found


class LoadedModules(FactBase):
    """Names of the kernel modules loaded now, or built in with parameters (as IPVS's
    are): the folders of /sys/module."""

    default = set

    def command(self) -> str:
        return 'for m in /sys/module/*; do echo "${m##*/}"; done'

    def process(self, output):
        return {line.strip().replace("-", "_") for line in output if line.strip()}


class InstalledPackages(FactBase):
    """Which of the Debian packages `names` are installed: a set of names."""

    default = set

    def command(self, names) -> str:
        return "dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n' " + " ".join(shlex.quote(n) for n in names) + " 2>/dev/null; true"

    def requires_command(self, names) -> str:
        return "dpkg-query"

    def process(self, output):
        return {fields[1].split(":")[0] for fields in (line.split() for line in output)
                if len(fields) == 2 and fields[0] == "ii"}


class OsRelease(FactBase):
    """/etc/os-release as {"ID": "debian", "VERSION_ID": "12", ...} (quotes removed)."""

    default = dict

    def command(self) -> str:
        return 'while IFS= read -r line; do printf "%s\\n" "$line"; done < /etc/os-release'  # no program to start

    def process(self, output):
        pairs = (line.split("=", 1) for line in output if "=" in line and not line.startswith("#"))
        return {key.strip(): " ".join(shlex.split(value)) for key, value in pairs}


class UnitStates(FactBase):
    """Whether each of `units` runs and starts at boot, as pyinfra's SystemdStatus and
    SystemdEnabled tell, its SubState as systemd names it ("dead", "auto-restart"...) and its
    ActiveState (systemd's generic state of any unit, of which the SubState is a finer,
    type-specific view: "active", "reloading", "inactive", "failed", "activating" or
    "deactivating", the unit's stop running; org.freedesktop.systemd1(5)), in one
    `systemctl show`: {"nginx.service": {"running": True, "enabled": True, "state": "running",
    "active": "active"}}."""

    default = dict
    RUNNING = ("running", "waiting", "exited", "listening", "mounted")
    ENABLED = ("enabled", "static")

    def command(self, units) -> str:
        return ("systemctl show --all --property Id --property ActiveState --property SubState "
                "--property UnitFileState "
                + " ".join(shlex.quote(u) for u in units))

    def requires_command(self, units) -> str:
        return "systemctl"

    def process(self, output):
        states, current = {}, None
        for line in output:
            key, _, value = line.partition("=")
            if key == "Id":
                current = states.setdefault(value, {"running": False, "enabled": False, "state": "dead",
                                                    "active": "inactive"})
            elif current is not None and key == "ActiveState":
                current["active"] = value or "inactive"
            elif current is not None and key == "SubState":
                current["running"] = value in self.RUNNING
                current["state"] = value or "dead"
            elif current is not None and key == "UnitFileState":
                current["enabled"] = value in self.ENABLED
        return states


# The units lvsha starts, stops, enables or watches: their states are read in one
# command (`systemctl show` of every unit costs seconds on a slow guest).
MANAGED_UNITS = ("heartbeat", "ldirectord", "netfilter-persistent", "systemd-networkd", "nginx",
                 "conntrackd", "lvsha-ipvs-sync", "keepalived", "prometheus-node-exporter", "lvsha-metrics.timer")


def unit_name(service: str) -> str:
    """systemd's name of a managed unit: "heartbeat" is heartbeat.service, "lvsha-metrics.timer" itself."""
    return service if service.endswith(".timer") else f"{service}.service"


# Reading facts: once per host while nothing changes, all at once to begin with.
#
# pyinfra 3 runs a fact's command every time an operation asks for it, one SSH
# round trip each, and a run waits for every host at each operation: a no-op
# deploy of ~80 operations cost ~35 round trips per host. Here every task reads
# facts through `read()`, which keeps what it read until an operation runs a
# command on any host of the run (a change on one balancer can move addresses on
# the other), and the first read loads every fact the host's role declared
# (`read_together`) in one command. Operations read their facts before they
# yield a command, as pyinfra's own do.

@dataclass(frozen=True)
class FactRequest:
    """One fact with its arguments, as a hashable key."""

    fact: type[FactBase]
    arguments: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, fact: type[FactBase], **arguments) -> FactRequest:
        return cls(fact, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in arguments.items())))

    @property
    def kwargs(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.arguments}

    def __repr__(self) -> str:
        return f"{self.fact.__name__}({', '.join(f'{k}={v!r}' for k, v in self.arguments)})"


class FactBundle(FactBase):
    """Several facts read by one command: {FactRequest: value} of each whose
    command ran (a missing program gives the fact's default, as pyinfra's own
    loading does while it prepares); a fact whose command failed is left out,
    for a read of its own to report."""

    default = dict
    _MARK = "@@lvsha-fact"
    _MISSING = "@@lvsha-missing-command"

    def command(self, requests: list[FactRequest]) -> str:
        self._requests = [(request, request.fact()) for request in requests]  # process() parses with the same objects
        parts = []
        for index, (request, fact) in enumerate(self._requests):
            command = fact.command(**request.kwargs)
            command = command.get_raw_value() if hasattr(command, "get_raw_value") else command
            required = fact.requires_command(**request.kwargs)
            if required:
                command = (f"if command -v {required} >/dev/null 2>&1; then ( {command} ); "
                           f"else echo {self._MISSING}; fi")
            else:
                command = f"( {command} )"
            # The newline ends a last line the fact's output leaves open.
            parts.append(f"{command} 2>/dev/null; printf '\\n{self._MARK} {index} %s\\n' $?")
        return "\n".join(parts)

    def process(self, output):
        values, lines = {}, []
        for line in output:
            fields = line.split()
            if fields[:1] != [self._MARK] or len(fields) != 3:
                lines.append(line)
                continue
            if lines and lines[-1] == "":
                lines.pop()
            request, fact = self._requests[int(fields[1])]
            if fields[2] == "0":
                try:
                    values[request] = fact.default() if lines in ([], [self._MISSING]) else fact.process(lines)
                except Exception:  # left to a read of its own, which reports it with pyinfra's context
                    pass
            lines = []
        return values


@dataclass
class _HostFacts:
    declared: tuple[FactRequest, ...] = ()
    scope: tuple | None = None
    values: dict = field(default_factory=dict)
    bundle_read: bool = False


_HOSTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _host_facts() -> _HostFacts:
    return _HOSTS.setdefault(ctx_host.get(), _HostFacts())


def _commands_run() -> int:
    """Operations that have run commands so far, on any host of the run."""
    count = 0
    for each_host in state.inventory:
        for op_hash in each_host.op_hash_order:
            try:
                count += state.get_op_data_for_host(each_host, op_hash).operation_meta.executed
            except KeyError:  # the operation being prepared now
                pass
    return count


def _scope() -> tuple:
    # Without -y, pyinfra shows the changes and waits for a yes before it runs
    # them: the run reads again. With -y it goes straight on, nothing read is stale.
    stage = state.current_stage if state.check_for_changes else None
    return stage, _commands_run()


def read_together(requests: list[FactRequest]) -> None:
    """Declare the facts the current host's deploy reads: the first `read()` loads
    them all in one command."""
    _host_facts().declared = tuple(dict.fromkeys(requests))


@contextmanager
def on_host(name: str):
    """Inside the block, the facts read are those of the run's host `name` (the
    balancer's peer: a decision for the pair is made from both nodes' facts),
    from the one command of what its role declares, as its own deploy reads them."""
    with ctx_host.use(state.inventory.get_host(name)):
        yield


def read(request: FactRequest) -> Any:
    """The value of `request` on the current host, loaded at most once until an
    operation runs a command in this run."""
    facts = _host_facts()
    scope = _scope()
    if facts.scope != scope:
        facts.scope, facts.values, facts.bundle_read = scope, {}, False
    if request not in facts.values:
        if facts.declared and not facts.bundle_read and scope[1] == 0:
            facts.bundle_read = True
            facts.values.update(host.get_fact(FactBundle, requests=list(facts.declared)))
        if request not in facts.values:
            facts.values[request] = host.get_fact(request.fact, **request.kwargs)
    return facts.values[request]


def fact(cls: type[FactBase], **arguments) -> Any:
    """`read()` of `cls` with `arguments`."""
    return read(FactRequest.of(cls, **arguments))


MANAGED_FILES = FactRequest.of(ManagedFiles, directories=list(render.MANAGED_DIRECTORIES))


def units(services: list[str]) -> FactRequest:
    """The fact reading the state of each of `services` (of MANAGED_UNITS) at once."""
    unknown = [s for s in services if s not in MANAGED_UNITS]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not in MANAGED_UNITS")
    return FactRequest.of(UnitStates, units=[unit_name(name) for name in services])


# The SubStates of a service that neither runs nor is about to: systemd's "inactive" is
# "dead". systemd 254 and later wait between two attempts of Restart= in
# "dead-before-auto-restart" or "failed-before-auto-restart", ActiveState inactive or failed
# with the restart pending: not off.
STOPPED_SUBSTATES = ("dead", "failed")


def unit_off(state: dict) -> bool:
    """A unit_state() that neither runs nor is about to: ActiveState inactive or failed, and
    no restart pending (SubState dead or failed). activating (auto-restart, a start) and
    deactivating (its stop under way) are not off."""
    return (not state.get("running", False) and state.get("active", "inactive") in ("inactive", "failed")
            and state.get("state", "dead") in STOPPED_SUBSTATES)


def unit_state(service: str) -> dict[str, bool | str]:
    """{"running": bool, "enabled": bool, "state": SubState, "active": ActiveState} of `service`.service (or
    of the timer `service`), from the units fact the host's role declared (or its own, for a unit the role
    did not name)."""
    name = unit_name(service)
    request = next((r for r in _host_facts().declared if r.fact is UnitStates and name in r.kwargs["units"]),
                   None) or units([service])
    return read(request).get(name, {"running": False, "enabled": False, "state": "dead", "active": "inactive"})


def managed_state(path: str) -> dict | None:
    """{"sha1", "mode", "user", "group"} of `path` as the host has it now, {"link":
    target} for a symbolic link (one fact for every managed file of the host),
    or None when it is missing."""
    return read(MANAGED_FILES).get(path)
