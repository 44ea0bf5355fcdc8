"""IP forwarding and IPVS for the directors."""

from pyinfra.api import deploy
from pyinfra.facts.server import Sysctl

from lvsha import render
from lvsha.model import Cluster
from tasks.facts import FactRequest
from tasks.operations import modules_loaded, sysctl_values
from tasks.rendered import put


def _sysctls(content: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in content.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


FORWARDING = {"net.ipv4.ip_forward": "1"}


def sysctls_read(cluster: Cluster) -> FactRequest:
    """The one fact that reads every sysctl the kernel deploy sets."""
    return FactRequest.of(Sysctl, keys=sorted({**_sysctls(render.kernel_files(cluster)[0].content), **FORWARDING}))


@deploy("Kernel: forwarding and IPVS")
def kernel(cluster: Cluster):
    """IPVS modules are loaded now and at boot; the IPVS sysctls hold now and
    at boot (one sysctl.d file, applied after modules-load); forwarding is on
    now. Runs after the firewall has loaded (at boot, netfilter-persistent
    turns forwarding on once it has loaded the firewall)."""
    sysctl_file, modules_file = render.kernel_files(cluster)
    put(modules_file)
    modules_loaded(name="Load IPVS modules",
                   modules=[m for m in modules_file.content.splitlines() if m and not m.startswith("#")])
    put(sysctl_file)
    every_key = tuple(sysctls_read(cluster).kwargs["keys"])  # one fact reads them all
    sysctl_values(name="IPVS sysctls", values=_sysctls(sysctl_file.content), keys=every_key)
    sysctl_values(name="Forward between the networks (the firewall is loaded)", values=FORWARDING, keys=every_key)
