"""The end-to-end tier: the real deploy against the lab's real Debian VMs.

The session fixture brings the lab up (unless LVSHA_LAB_REUSE=1 and one is
up), deploys with the real `pyinfra` command, waits until the cluster
serves, and tears the lab down at the end. On a machine that cannot run the
lab the tier is skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

import pytest

from lvsha.lab import lab as lab_api
from lvsha.lab import wait_until
from lvsha.lab.model import lab_cluster, topology_cluster
from lvsha.lab.run import deploy, format_report, record, start_report
from lvsha.model import Cluster

PREREQUISITES = ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4", "ip", "ssh", "curl", "apt-cacher-ng")
SETTLE_TIMEOUT = 420  # s: initdead + takeover + first checks; measured up to ~230 s in CI before the single address resource
_lab_used = False


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


def _missing_prerequisites() -> list[str]:
    missing = [p for p in PREREQUISITES if not (shutil.which(p) or shutil.which(p, path="/usr/sbin:/sbin"))]
    if os.geteuid() != 0:
        missing.append("root (network namespaces, taps)")
    return missing


def _parse_ipvsadm(out: str) -> dict[str, set[str]]:
    table: dict[str, set[str]] = {}
    current = None
    for line in out.splitlines():
        fields = line.split()
        if fields[:1] == ["TCP"]:
            current = fields[1]
            table[current] = set()
        elif fields[:1] == ["->"] and current and fields[1][0].isdigit():
            table[current].add(fields[1])
    return table


@dataclass
class Lab:
    """The running lab and the model deployed to it."""

    state: dict
    cluster: Cluster

    def ssh(self, host: str, command: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        argv = [*lab_api.ssh_argv(host), command]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"{host}: `{command}` failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def client(self, *args, timeout: float = 30) -> subprocess.CompletedProcess:
        return lab_api.client_exec(list(args), timeout=timeout)

    def holder_of(self, address: str) -> list[str]:
        """Which balancers carry `address` right now."""
        return [b.name for b in self.cluster.balancers
                if f" {address}/" in self.ssh(b.name, "ip -4 -o addr show", check=False).stdout]

    def ipvs_reals(self, balancer: str) -> dict[str, set[str]]:
        """{virtual "ip:port": {real "ip:port", ...}} from `ipvsadm -Ln` on `balancer`."""
        return _parse_ipvsadm(self.ssh(balancer, "ipvsadm -Ln", check=False).stdout)

    def floating(self) -> set[str]:
        """Every address heartbeat moves, from the model."""
        return {str(ip.address) for ip in self.cluster.floating_ips()}

    def carries_none(self, balancer: str) -> bool:
        """`balancer` has no floating address and an empty IPVS table."""
        addresses, table = self.carries(balancer)
        return not addresses & self.floating() and table == {}

    def carries(self, balancer: str) -> tuple[set[str], dict[str, set[str]]]:
        """(IPv4 addresses on `balancer`, its IPVS table), read in one command."""
        out = self.ssh(balancer, "ip -4 -o addr show; echo @@; ipvsadm -Ln", check=False).stdout
        addresses, _, table = out.partition("@@")
        return {f.split("/")[0] for line in addresses.splitlines() for f in line.split()[3:4]}, _parse_ipvsadm(table)

    def serving(self, timeout: float = 5) -> bool:
        """Every site's VIP answers HTTP with its own site name."""
        for site in self.cluster.sites:
            r = self.client("curl", "-s", "--max-time", str(timeout), f"http://{site.vip}/", timeout=timeout + 5)
            if site.name not in r.stdout:
                return False
        return True

    def wait_settled(self, owner: str, timeout: float = SETTLE_TIMEOUT) -> float:
        """Wait until `owner` carries every floating address, IPVS has every real
        server, and every VIP serves; return the seconds it took."""
        started = time.monotonic()
        reals = len(self.cluster.web_hosts)

        def settled():
            addresses, table = self.carries(owner)
            if not self.floating() <= addresses:
                return False
            return len(table) == len(self.cluster.sites) and all(len(r) == reals for r in table.values()) and self.serving()

        wait_until(settled, timeout, interval=2, what=f"{owner} to carry the cluster and serve every site")
        return time.monotonic() - started


@pytest.fixture(scope="session")
def lab():
    missing = _missing_prerequisites()
    if missing:
        message = f"the lab needs: {', '.join(missing)} (run bin/setup as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    global _lab_used
    _lab_used = True
    reuse = os.environ.get("LVSHA_LAB_REUSE") == "1" and lab_api.status().get("status") == "up"
    if reuse:
        state = lab_api.load_state()
    else:
        start_report()
        state = lab_api.up(topology_cluster(), progress=lambda m: print(f"[lab] {m}", flush=True))
        for key in ("image_s", "boot_s"):
            if key in state.get("timings", {}):
                record({"image_s": "image (build or cache)", "boot_s": "boot to SSH, all VMs"}[key], state["timings"][key])
    try:
        cluster = lab_cluster(state)
        handle = Lab(state, cluster)
        if not reuse:
            first = deploy()
            assert first.ok, f"first deploy failed:\n{first.output[-6000:]}"
            record("first deploy", first.seconds)
            record("cluster settled after deploy", handle.wait_settled(cluster.master.name))
        handle.first_deploy = None if reuse else first
        yield handle
    finally:
        if not reuse:
            problems = lab_api.down()
            assert not problems, f"lab teardown left: {problems}"


def pytest_terminal_summary(terminalreporter):
    from lvsha.lab.run import report_path

    if _lab_used and report_path().exists():
        terminalreporter.write_line(format_report())
