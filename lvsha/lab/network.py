"""Lab networks: everything lives in network namespaces, nothing in the root one.

  lab netns (lvsha-lab):      one Linux bridge per segment (external, internal),
                              the VMs' taps, and the lab end of the client veth.
  client netns (lvsha-client): eth0 (veth to the external bridge) with the client
                              address and nothing else (no default route).

QEMU runs in the root netns; its tap fds are opened from inside the lab netns
(setns on the calling thread only) and handed to it, so the lab segments never
touch the root netns and nothing forwards them anywhere.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
from contextlib import contextmanager

import netaddr

from . import LabError, run_command

LAB_NETNS = "lvsha-lab"
CLIENT_NETNS = "lvsha-client"
SEGMENTS = ("external", "internal")
CLIENT_VETH_LAB = "veth-client"   # lab netns end, on the external bridge
CLIENT_IFACE = "eth0"             # client netns end

_CLONE_NEWNET = 0x40000000
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_libc = ctypes.CDLL(None, use_errno=True)


def bridge_name(segment: str) -> str:
    """Bridge of a segment inside the lab netns."""
    return f"br-{segment}"


def client_address(cluster) -> netaddr.IPNetwork:
    """Highest host address of the external network not used by the model, with its prefix."""
    # Accept both shapes: IPNetwork or str, and a used_addresses method or (cached) property.
    net = netaddr.IPNetwork(str(cluster.external_network))
    used = cluster.used_addresses
    used = {netaddr.IPAddress(str(a)) for a in (used() if callable(used) else used)}
    hosts = list(net.iter_hosts())
    for addr in reversed(hosts):
        if addr not in used:
            return netaddr.IPNetwork(f"{addr}/{net.prefixlen}")
    raise LabError(f"no free address left in {net} for the lab client")


def netns_exists(name: str) -> bool:
    """True if /run/netns/NAME exists (made by `ip netns add`)."""
    return os.path.exists(f"/run/netns/{name}")


def _ip(netns: str | None, *args, check: bool = True):
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    return run_command(cmd, timeout=30, check=check)


def _sysctl(netns: str, key: str, value: str) -> None:
    """Set a sysctl inside netns if it exists there (bridge-nf ones only exist with br_netfilter)."""
    path = "/proc/sys/" + key.replace(".", "/")
    with netns_entered(netns):
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write(value)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def netns_entered(name: str):
    """Run the body with the *calling thread* in netns NAME, then switch back.

    Python 3.11 has no os.setns, hence ctypes. Only this thread moves; /proc/sys
    and newly opened sockets/tun fds inside the body belong to netns NAME.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def create(cluster, client_addr: netaddr.IPNetwork, lab_netns: str = LAB_NETNS,
           client_netns: str = CLIENT_NETNS) -> None:
    """Create both namespaces, the segment bridges and the client veth.

    Guarantees: bridges up with STP off and zero forward delay (frames flow as soon
    as ports have carrier), bridge netfilter off, IPv6 off in the lab netns (the
    bridges carry no addresses at all), client netns with only lo and eth0 holding
    client_addr and the model's external ping nodes. Raises LabError if a namespace of that name already exists.
    """
    for ns in (lab_netns, client_netns):
        if netns_exists(ns):
            raise LabError(f"netns {ns} already exists: run `lab down` first")
    run_command(["ip", "netns", "add", lab_netns], timeout=30)
    run_command(["ip", "netns", "add", client_netns], timeout=30)
    for ns in (lab_netns, client_netns):
        _sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        _sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
    for key in ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
                "net.bridge.bridge-nf-call-arptables"):
        _sysctl(lab_netns, key, "0")
    _ip(lab_netns, "link", "set", "lo", "up")
    for seg in SEGMENTS:
        br = bridge_name(seg)
        _ip(lab_netns, "link", "add", br, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        _ip(lab_netns, "link", "set", br, "type", "bridge", "nf_call_iptables", "0", check=False)
        _ip(lab_netns, "link", "set", br, "up")
    # The veth is born in the lab netns with its peer directly in the client netns,
    # so it never appears in the root netns.
    _ip(lab_netns, "link", "add", CLIENT_VETH_LAB, "type", "veth", "peer", "name", CLIENT_IFACE,
        "netns", client_netns)
    _ip(lab_netns, "link", "set", CLIENT_VETH_LAB, "master", bridge_name("external"), "up")
    _ip(client_netns, "link", "set", "lo", "up")
    _ip(client_netns, "link", "set", CLIENT_IFACE, "address", "52:54:00:4c:ff:fe")
    _ip(client_netns, "addr", "add", str(client_addr), "dev", CLIENT_IFACE)
    # The model's external ping nodes (its upstream router) answer from the client's side.
    for node in cluster.external_ping_nodes():
        _ip(client_netns, "addr", "add", f"{node}/{client_addr.prefixlen}", "dev", CLIENT_IFACE)
    _ip(client_netns, "link", "set", CLIENT_IFACE, "up")


def add_tap(tap: str, segment: str, lab_netns: str = LAB_NETNS) -> None:
    """Create persistent tap TAP in the lab netns, enslaved to SEGMENT's bridge, up."""
    if segment not in SEGMENTS:
        raise LabError(f"unknown segment {segment}")
    _ip(lab_netns, "tuntap", "add", "dev", tap, "mode", "tap")
    _ip(lab_netns, "link", "set", tap, "master", bridge_name(segment), "up")


def open_tap(tap: str, lab_netns: str = LAB_NETNS) -> int:
    """Open an fd on the existing tap TAP of the lab netns (IFF_TAP|IFF_NO_PI).

    The fd is what QEMU gets (-netdev tap,fd=N); it is non-inheritable, so pass it
    with Popen(pass_fds=...). /dev/net/tun must be opened while the thread is in
    the lab netns because TUNSETIFF looks the name up in the netns of the open.
    """
    with netns_entered(lab_netns):
        fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", tap.encode(), _IFF_TAP | _IFF_NO_PI))
        except OSError:
            os.close(fd)
            raise
    return fd


def destroy(lab_netns: str = LAB_NETNS, client_netns: str = CLIENT_NETNS) -> list[str]:
    """Delete both namespaces (and with them bridges, taps, veth). Idempotent.

    Returns the names that could not be deleted (empty on success). Call after the
    QEMU processes are gone: an open tap fd keeps the lab netns alive.
    """
    left = []
    for ns in (client_netns, lab_netns):
        if netns_exists(ns):
            cp = run_command(["ip", "netns", "del", ns], timeout=30, check=False)
            if cp.returncode != 0 or netns_exists(ns):
                left.append(ns)
    return left


def links(netns: str) -> str:
    """`ip -br link` of a netns, for status/debugging."""
    return _ip(netns, "-br", "link", check=False).stdout
