"""Lab hosts that look like a stock Debian install.

Debian's installer leaves a server's primary NIC to ifupdown, with the host's
address and default gateway in /etc/network/interfaces. The lab gives one
balancer (the backup) and one web host (the last) that file on their first
boot (QEMU fw_cfg, written by lvsha-lab-init), so that every lab run proves the
deploy takes such a host over as it is: the address stays, the balancer keeps
its default route, the web host trades it for the floating gateway, and both
come back the same after a reboot.
"""

from __future__ import annotations


def installer_interfaces(interface: str, cidr: str, gateway: str) -> str:
    """/etc/network/interfaces as Debian's installer writes it for a static address."""
    return f"""# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
allow-hotplug {interface}
iface {interface} inet static
\taddress {cidr}
\tgateway {gateway}
\t# dns-* options are implemented by the resolvconf package, if installed
\tdns-nameservers {gateway}
\tdns-search example.net
"""


def stock_installs(cluster, client_address) -> dict[str, dict]:
    """{host name: {"interface", "cidr", "gateway", "interfaces"}} of the lab's
    stock-install hosts. The balancer's gateway is the model's upstream router
    (its first external ping node), else the lab client, which stands on the
    external segment; the web host's is the master's internal address, a router
    that is not the floating gateway, so the deploy has to replace it."""
    backup = cluster.peer(cluster.master)
    (b_interface, (b_cidr,)), *_ = cluster.own_addresses(backup)
    upstream = cluster.external_ping_nodes()
    web = cluster.web_hosts[-1]
    ((w_interface, (w_cidr, *_)),) = cluster.own_addresses(web)
    chosen = {
        backup.name: (b_interface, b_cidr, str(upstream[0] if upstream else client_address.ip)),
        web.name: (w_interface, w_cidr, str(cluster.master.internal_ip)),
    }
    return {name: {"interface": i, "cidr": c, "gateway": g, "interfaces": installer_interfaces(i, c, g)}
            for name, (i, c, g) in chosen.items()}
