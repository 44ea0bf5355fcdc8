"""Judge one packet against a rendered iptables-restore ruleset, as the kernel would.

Used before any host is changed: the deploy's own SSH session must survive the
whole ruleset it is about to load (raw, then nat, then filter), not a partial
re-derivation of it. Only what lvsha's template generates is understood; any
other match or target raises `UnsupportedRule`, so the caller fails closed
rather than guessing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from netaddr import IPAddress, IPNetwork


class UnsupportedRule(ValueError):
    """The ruleset holds something this judge does not model."""


@dataclass(frozen=True)
class Packet:
    """A new connection's first packet arriving on `interface`."""

    interface: str
    source: IPAddress
    destination: IPAddress
    protocol: str
    port: int
    dnat: bool = False  # conntrack's DNAT state: the destination was rewritten


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    why: str  # the deciding rule, or the chain policy


@dataclass(frozen=True)
class _Rule:
    text: str
    matches: dict
    negated: set
    target: str
    target_args: dict


def _parse(rules: str) -> tuple[dict, dict]:
    """({(table, chain): policy}, {(table, chain): [rule, ...]})."""
    policies, chains, table = {}, {}, None
    for line in rules.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            policies[(table, name)] = policy
            chains.setdefault((table, name), [])
        elif line.startswith("-A "):
            tokens = shlex.split(line)
            chains.setdefault((table, tokens[1]), []).append(_rule(line, tokens[2:]))
        else:
            raise UnsupportedRule(f"cannot read: {line}")
    return policies, chains


_VALUED = {"-i", "-o", "-s", "-d", "-p", "--dport", "--dports", "--ctstate", "--icmp-type"}
_MODULES = {"tcp", "udp", "icmp", "multiport", "conntrack"}


def _rule(text: str, tokens: list[str]) -> _Rule:
    matches, negated, target, target_args = {}, set(), None, {}
    i, negate = 0, False
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            negate = True
        elif token == "-m":
            if tokens[i + 1] not in _MODULES:
                raise UnsupportedRule(f"match module {tokens[i + 1]!r} in: {text}")
            i += 1
        elif token in _VALUED:
            matches[token] = tokens[i + 1]
            if negate:
                negated.add(token)
            negate = False
            i += 1
        elif token == "-j":
            target = tokens[i + 1]
            rest = tokens[i + 2:]
            target_args = dict(zip(rest[::2], rest[1::2]))
            break
        else:
            raise UnsupportedRule(f"{token!r} in: {text}")
        i += 1
    if target is None:
        raise UnsupportedRule(f"no target in: {text}")
    return _Rule(text, matches, negated, target, target_args)


def _matches(rule: _Rule, packet: Packet) -> bool:
    def test(option: str, value: str) -> bool:
        if option == "-i":
            return packet.interface == value
        if option == "-o":
            raise UnsupportedRule(f"-o on an incoming packet's path: {rule.text}")
        if option in ("-s", "-d"):
            address = packet.source if option == "-s" else packet.destination
            return any(address in IPNetwork(net) for net in value.split(","))
        if option == "-p":
            return packet.protocol == value
        if option == "--dport":
            return packet.port == int(value)
        if option == "--dports":
            return packet.port in {int(p) for p in value.split(",")}
        if option == "--ctstate":
            states = set(value.split(","))
            return "NEW" in states or (packet.dnat and "DNAT" in states)
        if option == "--icmp-type":
            return False  # reached only for -p icmp packets, which are not judged here
        raise UnsupportedRule(f"{option} in: {rule.text}")

    # The protocol first: --icmp-type and ports only mean something for their protocol.
    order = sorted(rule.matches, key=lambda option: option != "-p")
    return all(test(o, rule.matches[o]) != (o in rule.negated) for o in order)


def _walk(policies, chains, table: str, chain: str, packet: Packet) -> tuple[str, Packet, str]:
    """(ACCEPT or DROP, the packet as it leaves the chain, why)."""
    for rule in chains.get((table, chain), []):
        if not _matches(rule, packet):
            continue
        if rule.target == "ACCEPT":
            return "ACCEPT", packet, rule.text
        if rule.target in ("DROP", "REJECT"):
            return "DROP", packet, rule.text
        if rule.target == "DNAT":
            to = rule.target_args.get("--to-destination", "").split(":")[0]
            return "ACCEPT", replace(packet, destination=IPAddress(to), dnat=True), rule.text
        if rule.target == "LOG":
            continue
        raise UnsupportedRule(f"target {rule.target} in: {rule.text}")
    policy = policies.get((table, chain), "ACCEPT")
    return policy, packet, f"the policy of {table} {chain} ({policy})"


def judge(rules: str, packet: Packet, local_addresses: set[IPAddress]) -> Verdict:
    """Would `packet`, the first of a new connection to this host, reach a local socket?"""
    policies, chains = _parse(rules)
    for table in ("raw", "mangle", "nat"):
        verdict, packet, why = _walk(policies, chains, table, "PREROUTING", packet)
        if verdict != "ACCEPT":
            return Verdict(False, why)
    if packet.destination not in local_addresses:
        return Verdict(False, f"rewritten to {packet.destination}, which is not this host")
    for table in ("mangle", "nat", "filter"):
        verdict, packet, why = _walk(policies, chains, table, "INPUT", packet)
        if verdict != "ACCEPT":
            return Verdict(False, why)
    return Verdict(True, why)
