"""Facts the tasks read before changing anything."""

from __future__ import annotations

import json
import shlex

from pyinfra import host
from pyinfra.api import FactBase

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
    {"client": ip, "client_port": n, "server": ip, "server_port": n}, or None
    when not connected over SSH (e.g. @local)."""

    def command(self) -> str:
        return 'echo "${SSH_CONNECTION:-}"'

    def process(self, output):
        fields = " ".join(output).split()
        if len(fields) != 4:
            return None
        client, client_port, server, server_port = fields
        return {"client": client, "client_port": int(client_port), "server": server, "server_port": int(server_port)}


class IfupdownFiles(FactBase):
    """ifupdown's configuration as text: {path: text} of /etc/network/interfaces
    and the files it sources from /etc/network/interfaces.d (Debian's default);
    {} without ifupdown."""

    default = dict
    _MARK = "@@lvsha-file "

    def command(self) -> str:
        return (
            f"for f in {ifupdown.INTERFACES} {ifupdown.INTERFACES_D}/*; do "
            f'[ -f "$f" ] && printf "{self._MARK}%s\\n" "$f" && awk 1 "$f"; done; true'  # awk: a last line ends too
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
     "firewall-now": [digest of the ruleset loaded now]}; {} before lvsha-applied is installed."""

    default = dict

    def command(self) -> str:
        return "/usr/local/sbin/lvsha-applied show 2>/dev/null || true"

    def process(self, output):
        return {fields[0]: fields[1:] for fields in (line.split() for line in output) if fields}


class IpvsVirtualServices(FactBase):
    """IPVS virtual services as "TCP 10.0.0.1:0" strings ([] without ipvsadm or IPVS)."""

    default = list

    def command(self) -> str:
        return "ipvsadm -Ln 2>/dev/null || true"

    def process(self, output):
        return [" ".join(line.split()[:2]) for line in output if line.split()[:1] in (["TCP"], ["UDP"])]


class ManagedFiles(FactBase):
    """Every regular file directly in `directories`, read in one command:
    {path: {"sha1": ..., "mode": "644", "user": "root", "group": "root"}}.
    What lets a converged host be checked in one round trip instead of a few per file."""

    default = dict

    def command(self, directories) -> str:
        folders = " ".join(shlex.quote(d) for d in directories)
        return (f"find {folders} -maxdepth 1 -type f -printf 'meta %m %u %g %p\\n' 2>/dev/null; "
                f"find {folders} -maxdepth 1 -type f -exec sha1sum {{}} + 2>/dev/null; true")

    def process(self, output):
        found: dict[str, dict] = {}
        for line in output:
            fields = line.split()
            if fields[:1] == ["meta"] and len(fields) == 5:
                found.setdefault(fields[4], {}).update(mode=fields[1], user=fields[2], group=fields[3])
            elif len(fields) == 2:
                found.setdefault(fields[1], {})["sha1"] = fields[0]
        return found


def managed_state(path: str) -> dict | None:
    """{"sha1", "mode", "user", "group"} of `path` as the host has it now (one
    fact for every managed file of the host), or None when it is missing."""
    return host.get_fact(ManagedFiles, directories=render.MANAGED_DIRECTORIES).get(path)
