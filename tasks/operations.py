"""Small operations the stock pyinfra ones do not cover. Each reads facts
first and yields commands only when the host differs from the target."""

from __future__ import annotations

import hashlib
from io import StringIO
from pathlib import PurePosixPath

from netaddr import IPNetwork
from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.server import Sysctl
from pyinfra.operations import files, server

from lvsha import render
from tasks.facts import (Applied, DefaultRoutes, InterfaceAddresses, IpvsVirtualServices, LoadedModules, fact,
                         managed_state, unit_name, unit_off, unit_state)


def sha1_of(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


# Where a secret is staged when pyinfra uploads through sudo (it uploads as the
# SSH user first, then copies as root): a folder only that user can enter, in
# root's /run, never a world-readable file in /tmp.
PRIVATE_STAGING = "/run/lvsha-upload"


@operation()
def secret_file(content: str, path: str):
    """Ensure `path` holds `content`, mode 0600, root-owned; the content is never
    shown in diffs or logs, and is never on disk with a wider mode, not even
    staged by a non-root deploy (--sudo)."""
    if (managed_state(path) or {}).get("sha1") == sha1_of(content):
        host.noop(f"{path} holds the expected secret")
        return
    staged = f"{path}.lvsha-new"
    yield StringCommand("sh", "-c", QuoteString(f'install -d -m 700 -o "${{SUDO_USER:-$(id -un)}}" {PRIVATE_STAGING}'))
    yield StringCommand("install", "-m", "600", "-o", "root", "-g", "root", "/dev/null", staged)
    upload = FileUploadCommand(StringIO(content), staged,
                               remote_temp_filename=f"{PRIVATE_STAGING}/{PurePosixPath(staged).name}")
    yield upload
    yield StringCommand("mv", "-f", staged, path)


# Each IP family's loader (the kernel's rulesets are per family).
IPTABLES_RESTORE = {4: "iptables-restore", 6: "ip6tables-restore"}


@operation()
def iptables_rules(family: int, rules: str, path: str, mode: str = "0640"):
    """Ensure `rules` are the loaded ruleset of IP `family` (4 or 6) and that
    `path` holds them.

    The loaded ruleset is compared with what was recorded when these rules were
    last loaded (lvsha-applied), so a failed load, a run that died half-way or
    a live `iptables -F` is noticed and undone. New rules are checked with
    `iptables-restore --test` (ip6tables-restore for IPv6), loaded in one
    transaction, and only then replace `path`: a ruleset that fails leaves both
    the file and the running firewall as they were.
    """
    restore, record = IPTABLES_RESTORE[family], render.FIREWALL_RECORDS[family]
    want = sha1_of(rules)
    applied = fact(Applied)
    recorded = applied.get(record, [None, None])
    loaded_as_rendered = recorded[0] == want and recorded[1:] == applied.get(f"{record}-now", [None])
    on_disk = (managed_state(path) or {}).get("sha1") == want
    if on_disk and loaded_as_rendered:
        host.noop(f"{path} is up to date and is the loaded ruleset")
        return
    if on_disk:
        logger.warning(f"{host.name}: the loaded firewall differs from {path} (changed by hand, or a load "
                       "that never happened): loading it again")
    candidate = f"{path}.lvsha-candidate"
    yield StringCommand("install", "-m", "600", "-D", "/dev/null", candidate)
    yield FileUploadCommand(StringIO(rules), candidate)
    yield StringCommand(restore, "--test", candidate)
    yield StringCommand(restore, candidate)
    yield StringCommand(render.APPLIED_SCRIPT, "record", record, want)
    yield from files.put._inner(src=StringIO(rules), dest=path, mode=mode)
    yield StringCommand("rm", "-f", candidate)


@operation()
def addresses_present(interface: str, addresses: list[str]):
    """Ensure `interface` is up and carries each CIDR in `addresses` now
    (the persisted configuration covers reboots)."""
    current = fact(InterfaceAddresses)
    if interface not in current:
        raise ValueError(f"interface {interface} does not exist on {host.name}")
    missing = [a for a in addresses if a not in current[interface]]
    if not missing:
        host.noop(f"{interface} carries {', '.join(addresses)}")
        return
    yield StringCommand("ip", "link", "set", "dev", interface, "up")
    for address in missing:
        yield StringCommand("ip", "addr", "replace", address, "dev", interface)


@operation()
def only_default_route(gateway: str, interface: str):
    """Ensure the one IPv4 default route is via `gateway` on `interface`."""
    routes = fact(DefaultRoutes)
    wanted = {"gateway": gateway, "dev": interface}
    if routes == [wanted]:
        host.noop(f"the only default route is via {gateway} dev {interface}")
        return
    for route in routes:
        if route != wanted:
            via = ["via", route["gateway"]] if route["gateway"] else []
            yield StringCommand("ip", "route", "del", "default", *via, "dev", route["dev"])
    if wanted not in routes:
        yield StringCommand("ip", "route", "replace", "default", "via", gateway, "dev", interface)


@operation()
def only_model_addresses(interface: str, network: str, keep: list[str]):
    """No address of `network` on `interface` but those in `keep` (CIDRs): an
    address the model no longer has (a removed site's VIP, a web host's old
    address) does not outlive it. Already gone by the time it runs is fine."""
    current = fact(InterfaceAddresses).get(interface, [])
    net = IPNetwork(network)
    stale = [cidr for cidr in current if IPNetwork(cidr).ip in net and cidr not in keep]
    if not stale:
        host.noop(f"{interface} has no address of {network} the model does not give it")
        return
    for cidr in stale:
        yield StringCommand("sh", "-c", QuoteString(f"! ip -4 -o addr show dev {interface} | grep -qF ' inet {cidr} ' "
                                                    f"|| ip addr del {cidr} dev {interface}"))


@operation()
def only_model_ipvs_services(services: list[str]):
    """No IPVS virtual service but `services` ("TCP 10.0.0.1:0"): a removed site's
    service does not outlive it (ldirectord only manages what its file names). One
    that is gone when it is deleted is fine: ldirectord's reload removes a service
    its old file named, maybe at the same moment."""
    extra = [svc for svc in fact(IpvsVirtualServices) if svc not in services]
    if not extra:
        host.noop("IPVS has no virtual service the model does not have")
        return
    for svc in extra:
        protocol, address = svc.split()
        flag = {"TCP": "-t", "UDP": "-u"}[protocol]
        yield StringCommand("sh", "-c", QuoteString(f"ipvsadm -D {flag} {address} 2>/dev/null "
                                                    f"|| ! ipvsadm -Ln {flag} {address} >/dev/null 2>&1"))


@operation()
def private_file(path: str):
    """`path`, if present, is mode 0600 and owned by root:root (its content is another
    operation's): drift of a secret's mode is fixed without rewriting it."""
    found = managed_state(path)
    if found is None or (found.get("mode"), found.get("user"), found.get("group")) == ("600", "root", "root"):
        host.noop(f"{path} is private")
        return
    yield StringCommand("chmod", "600", path)  # narrowed first
    yield StringCommand("chown", "root:root", path)


@operation()
def absent_file(path: str):
    """`path` (in one of the managed directories) does not exist."""
    if managed_state(path) is None:
        host.noop(f"{path} is absent")
        return
    yield StringCommand("rm", "-f", path)


@operation()
def sysctl_values(values: dict[str, str], keys: tuple[str, ...]):
    """Each sysctl in `values` holds its value now (persisting is a sysctl.d file's
    job). `keys` is every key the caller sets, read in one fact."""
    current = fact(Sysctl, keys=list(keys))
    wrong = {key: value for key, value in values.items() if str(current.get(key)) != str(value)}
    if not wrong:
        host.noop(f"{', '.join(values)} set")
        return
    for key, value in wrong.items():
        yield StringCommand("sysctl", f"{key}={value}")


@operation()
def unit(service: str, running: bool | None = None, enabled: bool | None = None):
    """systemd's `service`.service (or the timer `service`, "NAME.timer") is running
    or stopped, enabled or disabled, as asked (None: left as it is). Stopped means
    inactive or failed with no restart pending (facts.unit_off): a unit activating or
    between two attempts of Restart= (systemd 254's dead-before-auto-restart), or
    deactivating, is stopped too, or systemd's pending restart would bring it back.
    Every managed unit's state is read by one fact per host (pyinfra's systemd.service
    reads two per service)."""
    name = unit_name(service)
    state = unit_state(service)
    is_running, is_enabled = state["running"], state["enabled"]
    is_off = unit_off(state)
    commands = []
    if running is True and not is_running:
        commands.append(StringCommand("systemctl", "start", name))
    elif running is False and not is_off:
        commands.append(StringCommand("systemctl", "stop", name))
    if enabled is not None and enabled != is_enabled:
        commands.append(StringCommand("systemctl", "enable" if enabled else "disable", name))
    if not commands:
        host.noop(f"{name} is as it should be")
        return
    yield from commands


@operation()
def modules_loaded(modules: list[str]):
    """Each kernel module in `modules` is loaded (or built in); loading at boot is
    a modules-load.d file's job."""
    present = fact(LoadedModules)
    missing = [m for m in modules if m.replace("-", "_") not in present]
    if not missing:
        host.noop(f"{', '.join(modules)} loaded")
        return
    yield StringCommand("modprobe", "-a", *missing)


@operation()
def symlink(path: str, target: str | None):
    """`path` (in one of the managed directories) is a symbolic link to `target`,
    or, with None, absent."""
    found = managed_state(path)
    if (found or {}).get("link") == target or (found is None and target is None):
        host.noop(f"{path} is {'absent' if target is None else f'a link to {target}'}")
        return
    if target is None:
        yield StringCommand("rm", "-f", path)
    else:
        yield StringCommand("ln", "-sfnT", target, path)


def restart_for_new_files(started, service: str, name: str, changed) -> None:
    """Restart `service` when `changed()` says a file it reads was rewritten, unless
    `started` (the `unit` operation keeping it running) has just started it: one just
    started has read the new files already."""
    server.shell(name=name, commands=[f"systemctl restart {service}"],
                 _if=lambda: not started.did_change() and changed())
