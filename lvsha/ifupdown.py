"""What ifupdown configures on a host (Debian's installer leaves its primary NIC
there), and the same files with chosen interfaces handed over to systemd-networkd.

Pure functions over the files' text (interfaces(5)): the deploy reads the files
with a fact, checks the stanzas against the model before anything changes
(tasks/preflight.py), and writes the rewritten files (tasks/network.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netaddr import IPAddress, IPNetwork

INTERFACES = "/etc/network/interfaces"
INTERFACES_D = "/etc/network/interfaces.d"
# ifupdown's files as they were before lvsha first rewrote them (outside
# interfaces.d, which ifupdown sources whole).
ORIGINALS = "/etc/network/lvsha-orig"
# ifupdown's record of the interfaces it brought up (ifupdown 0.8, Debian 12 and 13).
STATE = "/run/network/ifstate"
MARK = "# lvsha: "

# Lines that start a stanza (interfaces(5)); everything else indented or not
# belongs to the stanza above it.
_STANZA = ("iface", "mapping", "auto", "allow-", "source", "source-directory", "no-auto-down", "no-scripts")
# Options of a static stanza that systemd-networkd covers (addresses, the
# gateway) or that change nothing without resolvconf (dns-*): anything else
# (up/down commands, bridges, bonds, mtu...) would be lost in the move.
CARRIED_OPTIONS = {"address", "netmask", "broadcast", "network", "gateway"}


@dataclass
class Stanza:
    """One `iface NAME FAMILY METHOD` block and what mentions NAME."""

    interface: str
    family: str
    method: str
    path: str
    options: list[tuple[str, str]] = field(default_factory=list)

    def values(self, option: str) -> list[str]:
        return [value for key, value in self.options if key == option]

    def addresses(self) -> list[IPNetwork]:
        """The stanza's addresses with their prefix (`address A/N`, or `address A` + `netmask`)."""
        netmask = (self.values("netmask") or [None])[0]
        found = []
        for address in self.values("address"):
            if "/" not in address and netmask:
                address = f"{address}/{netmask}"
            found.append(IPNetwork(address))
        return found

    def gateway(self) -> IPAddress | None:
        gateways = self.values("gateway")
        return IPAddress(gateways[0]) if gateways else None

    def uncarried_options(self) -> list[str]:
        return sorted({key for key, _ in self.options if key not in CARRIED_OPTIONS and not key.startswith("dns-")})


class IfupdownError(ValueError):
    pass


def _starts_stanza(word: str) -> bool:
    return word.startswith(_STANZA)


def parse(files: dict[str, str]) -> tuple[dict[str, list[Stanza]], set[str]]:
    """({interface: its iface stanzas}, interfaces named on auto/allow-* lines) of `files` ({path: text})."""
    stanzas: dict[str, list[Stanza]] = {}
    started: set[str] = set()
    for path, text in files.items():
        current = None
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if _starts_stanza(words[0]):
                current = None
                if words[0] == "iface":
                    if len(words) < 4:
                        raise IfupdownError(f"{path}: cannot read {line.strip()!r}")
                    current = Stanza(words[1], words[2], words[3], path)
                    stanzas.setdefault(words[1], []).append(current)
                elif words[0] == "auto" or words[0].startswith("allow-"):
                    started.update(words[1:])
            elif current is not None:
                current.options.append((words[0], " ".join(words[1:])))
    return stanzas, started


def configured(files: dict[str, str]) -> set[str]:
    """Every interface ifupdown has a stanza for or brings up."""
    stanzas, started = parse(files)
    return (set(stanzas) | started) - {"lo"}


def hand_over(text: str, interfaces: set[str]) -> str:
    """`text` with `interfaces` no longer ifupdown's: their iface stanzas
    commented out (marked, kept for the record) and their names taken off the
    auto/allow-* lines (the original line kept as a comment). `text` itself
    when it names none of them, so a second run changes nothing."""
    out, inside, changed = [], False, False
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words and _starts_stanza(words[0]):
            inside = words[0] == "iface" and len(words) > 1 and words[1] in interfaces
            if (words[0] == "auto" or words[0].startswith("allow-")) and set(words[1:]) & interfaces:
                out.append(f"{MARK}{line.strip()}")
                kept = [w for w in words[1:] if w not in interfaces]
                if kept:
                    out.append(" ".join([words[0], *kept]))
                changed = True
                continue
        if inside and words:
            out.append(f"{MARK}{line}")
            changed = True
        else:
            out.append(line)
    if not changed:
        return text
    header = (f"{MARK}{', '.join(sorted(interfaces))}: configured by systemd-networkd from the cluster model "
              f"(/etc/systemd/network/50-lvsha-*.network); as it was: {ORIGINALS}")
    return "\n".join([header, *out]) + "\n"
