"""Facts the tasks read before changing anything."""

from __future__ import annotations

import json

from pyinfra.api import FactBase


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


class NetworkInterfacesFile(FactBase):
    """Interfaces that ifupdown configures in /etc/network/interfaces(.d)."""

    default = list

    def command(self) -> str:
        return (
            "cat /etc/network/interfaces /etc/network/interfaces.d/* 2>/dev/null "
            "| awk '$1 == \"iface\" {print $2} $1 == \"auto\" || $1 == \"allow-hotplug\" {for (i = 2; i <= NF; i++) print $i}' "
            "|| true"
        )

    def process(self, output):
        return sorted({word for line in output for word in line.split()})


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
