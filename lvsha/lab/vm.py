"""QEMU VMs of the lab: one per host of the model.

A VM is described by a JSON-able *spec* (stored in state.json) so that a fresh
process can power it off/on again with the same overlay, taps, MACs and port:

  {"name": "balancer1", "index": 0, "memory": 1024, "ssh_port": 2201,
   "overlay": ".../vms/balancer1/disk.qcow2", "dir": ".../vms/balancer1",
   "nics": [{"ifname": "eth0", "segment": "external", "tap": "tap0n0", "mac": "52:54:00:4c:00:00"}, ...],
   "management_interface": "eth2"}

NIC order: lab NICs at PCI slots 0x10+K so that, with net.ifnames=0, the model's
"ethK" is the K-th NIC; the QEMU user-mode management NIC comes last.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from . import LabError, cache_dir, kill_ours, pid_cmdline, pid_is_ours, run_command
from . import network

QEMU = "qemu-system-x86_64"
# Same MAC in every VM: each VM has its own slirp, and the image's networkd file
# (files/lab/10-lvsha-mgmt.network) matches on it.
MGMT_MAC = "52:54:00:00:ff:01"
MGMT_GUEST_ADDR = "10.0.2.15"   # slirp's default guest address = hostfwd's default target
PROXY_GUEST_ADDR = "10.0.2.100"  # files/lab/apt-proxy.conf points apt here
PROXY_GUEST_PORT = 3142
BALANCER_MEMORY = 1024
WEB_MEMORY = 512
# Each ldirectord checker process (fork=yes: one per virtual service) costs about this much:
# measured 3.8 MiB of Pss each at 50 sites (docs/scale.md, "Health checks").
LDIRECTORD_CHECKER_MEMORY = 4
FIRST_PCI_SLOT = 0x10
FIRST_SSH_PORT = 2201
# A shared SSH connection left idle this long closes itself (lab down closes it at once).
CONTROL_PERSIST_S = 300


def _eth_index(ifname: str) -> int:
    m = re.fullmatch(r"eth(\d+)", ifname)
    if not m:
        raise LabError(f"lab needs interfaces named ethK (kernel names with net.ifnames=0), got {ifname!r}")
    return int(m.group(1))


def nic_plan(cluster) -> list[tuple[str, str, dict[str, str]]]:
    """[(vm name, role, {ifname: segment})] for every host of the model, balancers first."""
    plan = []
    for b in cluster.balancers:
        plan.append((b.name, "balancer", {b.external_interface: "external", b.internal_interface: "internal"}))
    for h in cluster.web_hosts:
        plan.append((h.name, "web", {h.interface: "internal"}))
    names = [p[0] for p in plan]
    if len(set(names)) != len(names):
        raise LabError(f"duplicate host names in the model: {names}")
    return plan


def balancer_memory(cluster) -> int:
    """MiB of a balancer VM: BALANCER_MEMORY, plus LDIRECTORD_CHECKER_MEMORY per virtual
    service where the model's ldirectord forks a checker for each (heartbeat past 50
    checks: some 1 GiB more at 250 sites), so that the lab measures the engine, not swapping."""
    if cluster.engine == "heartbeat" and cluster.ldirectord_forks():
        return BALANCER_MEMORY + LDIRECTORD_CHECKER_MEMORY * len(cluster.virtual_servers())
    return BALANCER_MEMORY


def make_specs(cluster, sdir: Path, ports: list[int], stock_installs: dict | None = None) -> list[dict]:
    """VM specs for the model (see module doc); ports[i] is the i-th VM's SSH port;
    `stock_installs` ({name: {"interfaces": text, ...}}, lvsha/lab/stock.py): the
    VMs that boot with a stock install's /etc/network/interfaces."""
    specs = []
    for i, (name, role, ifmap) in enumerate(nic_plan(cluster)):
        idx = sorted(_eth_index(n) for n in ifmap)
        if idx != list(range(len(idx))):
            raise LabError(f"{name}: interfaces must be eth0..ethN without gaps, got {sorted(ifmap)}")
        nics = []
        for ifname in sorted(ifmap, key=_eth_index):
            k = _eth_index(ifname)
            nics.append({"ifname": ifname, "segment": ifmap[ifname], "tap": f"tap{i}n{k}",
                         "mac": f"52:54:00:4c:{i:02x}:{k:02x}"})
        vdir = sdir / "vms" / name
        specs.append({
            "name": name, "role": role, "index": i,
            "memory": balancer_memory(cluster) if role == "balancer" else WEB_MEMORY,
            "ssh_port": ports[i], "dir": str(vdir), "overlay": str(vdir / "disk.qcow2"),
            "nics": nics, "management_interface": f"eth{len(nics)}",
            "stock_interfaces": (stock_installs or {}).get(name, {}).get("interfaces"),
        })
    return specs


def create_overlay(spec: dict, image: dict, provisioned: bool = False) -> None:
    """qcow2 overlay over the cached base image (or, `provisioned`, over the
    variant with the VM's role's packages installed), in the VM's state dir."""
    Path(spec["dir"]).mkdir(parents=True, exist_ok=True)
    if spec.get("stock_interfaces"):
        (Path(spec["dir"]) / "interfaces").write_text(spec["stock_interfaces"])
    base = image["provisioned"][spec["role"]] if provisioned else image["disk"]
    run_command(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", image["format"],
         spec["overlay"]], timeout=60)


def qemu_argv(spec: dict, image: dict, accel: str, proxy_port: int, keys_file: str,
              tap_fds: list[int]) -> list[str]:
    """The QEMU command line of a VM (tap fds already open, one per lab NIC)."""
    d = spec["dir"]
    append = (f"console=ttyS0 root=/dev/vda rw net.ifnames=0 systemd.hostname={spec['name']} "
              "quiet systemd.show_status=false")
    argv = [
        QEMU, "-name", f"lvsha-{spec['name']}",
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
        "-machine", "pc", "-smp", "1", "-m", str(spec["memory"]),
        "-kernel", image["kernel"], "-initrd", image["initrd"], "-append", append,
        "-drive", f"file={spec['overlay']},format=qcow2,if=virtio",
        "-device", "virtio-rng-pci",
        "-fw_cfg", f"name=opt/lvsha/authorized_keys,file={keys_file}",
        *(["-fw_cfg", f"name=opt/lvsha/interfaces,file={d}/interfaces"] if spec.get("stock_interfaces") else []),
        "-serial", f"file:{d}/console.log",
        "-qmp", f"unix:{d}/qmp.sock,server=on,wait=off",
    ]
    # tb-size: TCG's translation cache defaults to 1 GiB per VM; 256 MiB is plenty here.
    argv += ["-accel", "tcg,thread=multi,tb-size=256"] if accel == "tcg" else ["-accel", "kvm"]
    for nic, fd in zip(spec["nics"], tap_fds):
        k = _eth_index(nic["ifname"])
        argv += ["-netdev", f"tap,id=n{k},fd={fd}",
                 "-device", f"virtio-net-pci,netdev=n{k},mac={nic['mac']},addr={FIRST_PCI_SLOT + k:#x}"]
    # Management NIC: isolated slirp (restrict=on: no way out) with exactly two
    # explicit forwards: host loopback port -> guest sshd, guest apt proxy address
    # -> the lab's apt-cacher-ng on host loopback (socat per connection).
    mgmt = (f"user,id=mgmt,restrict=on,net=10.0.2.0/24,"
            f"hostfwd=tcp:127.0.0.1:{spec['ssh_port']}-{MGMT_GUEST_ADDR}:22,"
            f"guestfwd=tcp:{PROXY_GUEST_ADDR}:{PROXY_GUEST_PORT}-cmd:socat STDIO TCP:127.0.0.1:{proxy_port}")
    argv += ["-netdev", mgmt, "-device",
             f"virtio-net-pci,netdev=mgmt,mac={MGMT_MAC},addr={FIRST_PCI_SLOT + len(spec['nics']):#x}"]
    return argv


def start(spec: dict, image: dict, accel: str, proxy_port: int, keys_file: str,
          lab_netns: str = network.LAB_NETNS) -> int:
    """Power the VM on (its taps must exist). Returns the QEMU PID.

    QEMU runs in the root netns in its own session (Ctrl-C on the terminal does not
    reach it; teardown stops it by PID). Its stdout/stderr go to qemu.log in the VM dir.
    """
    fds = [network.open_tap(nic["tap"], lab_netns) for nic in spec["nics"]]
    try:
        argv = qemu_argv(spec, image, accel, proxy_port, keys_file, fds)
        Path(spec["dir"], "argv.json").write_text(json.dumps(argv, indent=1))
        with open(Path(spec["dir"]) / "qemu.log", "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    pass_fds=fds, start_new_session=True)
    finally:
        for fd in fds:
            os.close(fd)
    # Catch immediate failures (bad option, port taken) here rather than as an SSH timeout.
    time.sleep(0.5)
    if proc.poll() is not None:
        tail = Path(spec["dir"], "qemu.log").read_text(errors="replace")[-1500:]
        raise LabError(f"QEMU for {spec['name']} exited at once ({proc.returncode}):\n{tail}")
    return proc.pid


def _qmp_quit(sock_path: str, timeout: float = 5.0) -> bool:
    """Send QMP `quit` (immediate power-off; QEMU still closes its disk cleanly)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            f = s.makefile("rwb")
            f.readline()  # greeting
            for cmd in ({"execute": "qmp_capabilities"}, {"execute": "quit"}):
                f.write(json.dumps(cmd).encode() + b"\n")
                f.flush()
                f.readline()
        return True
    except OSError:
        return False


def stop(spec: dict, pid, marker: str, timeout: float = 15.0) -> None:
    """Hard power-off of the VM whose QEMU is PID (only if that PID is ours). Idempotent."""
    if not pid or not pid_is_ours(pid, marker):
        return
    _qmp_quit(str(Path(spec["dir"]) / "qmp.sock"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_cmdline(int(pid)) is not None:
        try:
            os.waitpid(int(pid), os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    kill_ours(pid, marker, timeout=2.0)  # no-op if already gone


def ssh_base(key: str, port: int, known_hosts: str | None = None,
             control_path: str | None = None) -> list[str]:
    """ssh argv prefix to reach a VM's root over its forwarded port.

    With control_path, commands share one SSH connection (ControlMaster): a fresh
    login costs a TCG guest about 2 s of CPU, enough to slow down the very
    failover a test is timing; a command on a shared connection costs a tenth.
    """
    opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            "-o", "IdentitiesOnly=yes"]
    if known_hosts:
        opts += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"]
    else:
        opts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    if control_path:
        for option, value in shared_connection_options(control_path).items():
            opts += ["-o", f"{option}={value}"]
    return ["ssh", "-i", key, "-p", str(port), *opts, "root@127.0.0.1"]


def shared_connection_options(control_path: str) -> dict[str, str]:
    """ssh_config options that make commands share one connection (see ssh_base)."""
    return {"ControlMaster": "auto", "ControlPath": control_path, "ControlPersist": str(CONTROL_PERSIST_S),
            "ServerAliveInterval": "5", "ServerAliveCountMax": "3"}


def close_ssh_master(control_path: str) -> None:
    """Ask the shared SSH connection behind control_path (if any) to exit."""
    if not Path(control_path).exists():
        return
    subprocess.run(["ssh", "-o", f"ControlPath={control_path}", "-O", "exit", "lvsha-lab"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=10, check=False)


def ssh_ready(key: str, port: int) -> bool:
    """True if root can log in with the lab key on 127.0.0.1:port right now (bounded ~12 s)."""
    try:
        cp = subprocess.run(ssh_base(key, port) + ["true"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=12)
    except subprocess.TimeoutExpired:
        return False
    return cp.returncode == 0


def host_key_lines(port: int) -> list[str]:
    """known_hosts lines for [127.0.0.1]:port (ed25519, the only host key the image has)."""
    cp = run_command(["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
             timeout=30, check=False)
    lines = [l for l in cp.stdout.splitlines() if l.startswith(f"[127.0.0.1]:{port} ")]
    if not lines:
        raise LabError(f"ssh-keyscan got no host key from port {port}")
    return lines


# --- accelerator -------------------------------------------------------------------

def choose_accel(image: dict, progress=print) -> str:
    """'kvm' only if a bounded probe boots a kernel under KVM, else 'tcg'.

    env LVSHA_LAB_ACCEL=tcg|kvm skips the probe. The probe result is cached for the
    current machine boot (boot_id) in the cache dir, so it costs once per boot.
    """
    forced = os.environ.get("LVSHA_LAB_ACCEL")
    if forced in ("tcg", "kvm"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    memo = cache_dir() / "accel-probe.json"
    try:
        data = json.loads(memo.read_text())
        if data.get("boot_id") == boot_id and data.get("accel") in ("tcg", "kvm"):
            return data["accel"]
    except (OSError, ValueError):
        pass
    accel = "kvm" if _kvm_boots(image) else "tcg"
    progress(f"accelerator probe: {accel}")
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"boot_id": boot_id, "accel": accel}))
    return accel


def _kvm_boots(image: dict, timeout: float = 12.0) -> bool:
    """Boot the kernel (no root fs) under KVM; True if it reaches its root-mount panic in time."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="lvsha-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        argv = [QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-accel", "kvm",
                "-m", "256", "-kernel", image["kernel"], "-no-reboot",
                "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent rootwait=0",
                "-serial", f"file:{log}"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        ok = False
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace") if log.exists() else ""
                if "Kernel panic" in text or "VFS:" in text:
                    ok = True
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # stuck in the kernel; it is ours and SIGKILLed, nothing more to do
        return ok
