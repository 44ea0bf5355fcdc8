"""IP forwarding and IPVS for the directors."""

from pyinfra.api import deploy
from pyinfra.operations import server

from lvsha import render
from lvsha.model import Cluster
from tasks.operations import sysctl_values
from tasks.rendered import put


def _sysctls(content: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in content.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@deploy("Kernel: forwarding and IPVS")
def kernel(cluster: Cluster):
    """IPVS modules are loaded now and at boot; the IPVS sysctls hold now and
    at boot (one sysctl.d file, applied after modules-load); forwarding is on
    now. Runs after the firewall has loaded (at boot, netfilter-persistent
    turns forwarding on once it has loaded the firewall)."""
    sysctl_file, modules_file = render.kernel_files(cluster)
    put(modules_file)
    server.modprobe(
        name="Load IPVS modules",
        module=[m for m in modules_file.content.splitlines() if m and not m.startswith("#")],
    )
    put(sysctl_file)
    ipvs = _sysctls(sysctl_file.content)
    forwarding = {"net.ipv4.ip_forward": "1"}
    every_key = tuple(sorted({**ipvs, **forwarding}))  # one fact reads them all
    sysctl_values(name="IPVS sysctls", values=ipvs, keys=every_key)
    sysctl_values(name="Forward between the networks (the firewall is loaded)", values=forwarding, keys=every_key)
