"""IP forwarding and IPVS for the directors."""

from pyinfra.api import deploy
from pyinfra.operations import server

from lvsha import render
from lvsha.model import Cluster
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
    for key, value in _sysctls(sysctl_file.content).items():
        server.sysctl(name=f"Set {key}", key=key, value=value)
    server.sysctl(name="Forward between the networks (the firewall is loaded)", key="net.ipv4.ip_forward", value=1)
