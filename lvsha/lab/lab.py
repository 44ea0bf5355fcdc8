"""Lab orchestration: up / down / status / vm_stop / vm_start / client_exec.

Everything the lab makes is recorded in <state dir>/state.json as soon as it
exists, so that down() -- from this or any fresh process -- can undo it using the
state dir alone. Processes are only ever killed after checking that their command
line mentions the state dir (they are the ones we started).

state.json (read by the deploy's lab inventory):
  {"ssh_user": "root", "ssh_key": ".../id_ed25519", "known_hosts": ".../known_hosts",
   "ssh_config": ".../ssh_config", "heartbeat_secret_file": ".../heartbeat.secret",
   "hosts": {"balancer1": {"ssh_host": "127.0.0.1", "ssh_port": 2201,
                           "management_interface": "eth2", "pid": 1234, "role": "balancer"}, ...},
   "client": {"netns": "lvsha-client", "address": "10.0.0.252/24"},
   "lab_netns": "lvsha-lab", "status": "up", "accel": "tcg",
   "timings": {"image_s": ..., "boot_s": ..., ...},
   "proxy": {"pid": ..., "port": ...}, "image": {...}, "vms": {name: vm spec}}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from . import LabError, pid_cmdline, pid_is_ours, run_command, state_dir
from . import aptproxy, image, network, stock, vm
from .model import source_inventory, topology_cluster

SSH_TIMEOUT = 300  # s, from QEMU start to SSH accepting the lab key, per boot


# --- state file --------------------------------------------------------------------

def state_file() -> Path:
    return state_dir() / "state.json"


def _marker() -> str:
    """What every process we start has in its command line: the state dir path."""
    return str(state_dir()) + "/"


def load_state() -> dict:
    """The current state.json as a dict; LabError if there is no lab."""
    try:
        return json.loads(state_file().read_text())
    except FileNotFoundError:
        raise LabError(f"no lab state at {state_file()} (is the lab up?)") from None


def _save_state(state: dict) -> None:
    """Write state.json atomically (temp file + rename)."""
    tmp = state_file().with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, state_file())


@contextlib.contextmanager
def _locked():
    """Serialise state read-modify-write across processes."""
    sdir = state_dir()
    sdir.mkdir(parents=True, exist_ok=True)
    with open(sdir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# --- progress / signals ------------------------------------------------------------

class _Progress:
    """Prints '[  12.3s] message' lines, elapsed since up() started."""

    def __init__(self, sink):
        self.t0 = time.monotonic()
        self.sink = sink or (lambda line: print(line, flush=True))

    def __call__(self, msg: str) -> None:
        self.sink(f"[{self.elapsed():7.1f}s] {msg}")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM/SIGHUP so that cleanup code runs."""


@contextlib.contextmanager
def _signals_raise():
    """During the body, SIGTERM/SIGHUP raise Terminated (SIGINT raises KeyboardInterrupt)."""
    def handler(signum, frame):
        raise Terminated(f"signal {signum}")
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _signals_ignored():
    """Teardown must not be cut short by a second Ctrl-C (it is bounded anyway)."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --- up ----------------------------------------------------------------------------

def _running_pids(state: dict) -> list[int]:
    pids = [h.get("pid") for h in state.get("hosts", {}).values()]
    pids.append(state.get("proxy", {}).get("pid"))
    return [p for p in pids if p and pid_is_ours(p, _marker())]


def _make_secrets(sdir: Path) -> dict:
    """Fresh per-lab ed25519 keypair, authorized_keys for fw_cfg, heartbeat secret (all 0600)."""
    key = sdir / "id_ed25519"
    run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lvsha-lab", "-f", key], timeout=30)
    os.chmod(key, 0o600)
    auth = sdir / "authorized_keys"
    auth.write_text((sdir / "id_ed25519.pub").read_text())
    os.chmod(auth, 0o600)
    hb = sdir / "heartbeat.secret"
    fd = os.open(hb, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return {"ssh_key": str(key), "authorized_keys": str(auth), "heartbeat_secret_file": str(hb)}


def up(cluster, progress=None, inventory: Path | None = None, provisioned: bool = False,
       release: str = image.DEFAULT_RELEASE) -> dict:
    """Bring the whole lab up for `cluster`; return the final state dict.

    `inventory` is the file `cluster` came from (default: the lab's source
    inventory); the state remembers it, and the lab deploys its model.
    `provisioned`: the VMs start with their role's packages installed (see
    image.py); otherwise from bare Debian, as the deploy's install path needs.
    `release`: the guests' Debian major version (image.RELEASES).

    Guarantees on return: one VM per model host, each answering SSH as root with
    the lab key on 127.0.0.1:<ssh_port>, host keys in known_hosts, client netns
    holding the client address, state.json complete with status "up".
    On any failure or interrupt (Ctrl-C, SIGTERM, SIGHUP), everything created so
    far is torn down before the exception propagates.
    """
    p = _Progress(progress)
    image.suite(release)  # an unknown release is refused before anything starts
    sdir = state_dir()
    if state_file().exists():
        try:
            old = load_state()
        except (LabError, ValueError):
            old = {}
        if _running_pids(old):
            raise LabError(f"a lab is already up (state in {sdir}); run `lab down` first")
        owner = old.get("owner_pid")
        if old.get("status") == "starting" and owner and owner != os.getpid() and pid_cmdline(owner):
            raise LabError(f"a lab is coming up (process {owner}, state in {sdir}); wait for it, or `lab down`")
    down(quiet=True)  # leftovers of a crashed run, if any
    with _signals_raise():
        try:
            return _up(cluster, p, sdir, inventory or source_inventory(), provisioned, str(release))
        except BaseException as e:
            with _signals_ignored():
                p(f"up failed ({type(e).__name__}: {e}); tearing down")
                down()
                p("teardown done")
            raise


def _up(cluster, p: _Progress, sdir: Path, inventory: Path, provisioned: bool, release: str) -> dict:
    sdir.mkdir(parents=True, exist_ok=True)
    os.chmod(sdir, 0o700)
    caddr = network.client_address(cluster)
    state = {
        "version": 1, "status": "starting", "owner_pid": os.getpid(), "state_dir": str(sdir), "ssh_user": "root",
        "inventory": str(Path(inventory).resolve()), "cluster": cluster.name, "provisioned": provisioned,
        "release": release,
        "known_hosts": str(sdir / "known_hosts"), "ssh_config": str(sdir / "ssh_config"),
        "lab_netns": network.LAB_NETNS,
        "client": {"netns": network.CLIENT_NETNS, "address": str(caddr)},
        "hosts": {}, "vms": {}, "timings": {},
    }
    with _locked():
        state.update(_make_secrets(sdir))
        _save_state(state)

    t = time.monotonic()
    state["proxy"] = aptproxy.start(sdir)
    with _locked():
        _save_state(state)
    p(f"apt proxy up on 127.0.0.1:{state['proxy']['port']} (pid {state['proxy']['pid']})")

    t = time.monotonic()
    cached = image.cached_image(release) is not None
    img = image.ensure_image(state["proxy"]["port"], release, progress=p)
    state["image"] = img
    state["timings"]["image_s"] = round(time.monotonic() - t, 1)
    state["timings"]["image_cached"] = cached
    p(f"image ready (Debian {release}, {'cached' if cached else 'built'}) {img['dir']}")

    state["accel"] = vm.choose_accel(img, progress=p)
    p(f"accelerator: {state['accel']}")

    t = time.monotonic()
    # Record the netns names before creating them so down() removes them even if create fails.
    with _locked():
        _save_state(state)
    network.create(cluster, caddr)
    taken = {state["proxy"]["port"]}
    ports = []
    for _ in vm.nic_plan(cluster):
        port = aptproxy.pick_port(vm.FIRST_SSH_PORT, 100, taken)
        taken.add(port)
        ports.append(port)
    state["stock_installs"] = stock.stock_installs(cluster, caddr)
    specs = vm.make_specs(cluster, sdir, ports, state["stock_installs"])
    for spec in specs:
        for nic in spec["nics"]:
            network.add_tap(nic["tap"], nic["segment"])
    state["timings"]["network_s"] = round(time.monotonic() - t, 1)
    p(f"networks up: netns {network.LAB_NETNS} (bridges {', '.join(network.bridge_name(s) for s in network.SEGMENTS)}), "
      f"client netns {network.CLIENT_NETNS} at {caddr}")

    t_boot = time.monotonic()
    for spec in specs:
        vm.create_overlay(spec, img, provisioned)
        state["vms"][spec["name"]] = spec
        state["hosts"][spec["name"]] = {
            "ssh_host": "127.0.0.1", "ssh_port": spec["ssh_port"], "role": spec["role"],
            "management_interface": spec["management_interface"], "pid": None,
        }
        pid = vm.start(spec, img, state["accel"], state["proxy"]["port"], state["authorized_keys"])
        state["hosts"][spec["name"]]["pid"] = pid
        with _locked():
            _save_state(state)
        p(f"vm {spec['name']} started (pid {pid}, ssh 127.0.0.1:{spec['ssh_port']}, "
          f"{', '.join(n['ifname'] + '->' + n['segment'] for n in spec['nics'])}, "
          f"mgmt {spec['management_interface']})")

    ready = _wait_ssh(state, [s["name"] for s in specs], p, t_boot)
    state["timings"]["boot_s"] = round(time.monotonic() - t_boot, 1)
    state["timings"]["ssh_ready_s"] = ready
    _write_known_hosts(state)
    _write_ssh_config(state)
    state["status"] = "up"
    state["timings"]["up_s"] = round(p.elapsed(), 1)
    with _locked():
        _save_state(state)
    p(f"lab up: {len(specs)} VMs answering SSH in {state['timings']['boot_s']}s; state {state_file()}")
    return state


def _wait_ssh(state: dict, names: list[str], p: _Progress, t0: float, timeout: float = SSH_TIMEOUT) -> dict:
    """Wait (bounded) until every named VM accepts the lab key; fail fast if a QEMU dies.

    Probes all pending VMs concurrently (one ssh process each, each bounded).
    Returns {name: seconds from t0 to ready}.
    """
    pending = list(names)
    ready = {}
    deadline = time.monotonic() + timeout
    said = time.monotonic()
    while pending:
        if time.monotonic() - said >= 30:  # never silent for long: say what it waits for
            p(f"waiting for SSH on {', '.join(pending)} ({time.monotonic() - t0:.0f}s after boot start, "
              f"at most {timeout:.0f}s)")
            said = time.monotonic()
        for name in pending:
            if pid_cmdline(state["hosts"][name]["pid"]) is None:
                log = Path(state["vms"][name]["dir"], "qemu.log").read_text(errors="replace")[-1000:]
                raise LabError(f"QEMU of {name} died while booting:\n{log}")
        procs = {}
        for name in pending:
            port = state["hosts"][name]["ssh_port"]
            procs[name] = subprocess.Popen(vm.ssh_base(state["ssh_key"], port) + ["true"],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        round_end = time.monotonic() + 12
        try:
            for name, proc in procs.items():
                try:
                    rc = proc.wait(timeout=max(0.1, round_end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    rc = None
                if rc == 0:
                    ready[name] = round(time.monotonic() - t0, 1)
                    p(f"vm {name} ssh ready ({ready[name]}s after boot start)")
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=5)
        pending = [n for n in pending if n not in ready]
        if pending:
            if time.monotonic() > deadline:
                tails = "".join(
                    f"\n--- {n} console (last lines) ---\n" + _tail(Path(state["vms"][n]["dir"], "console.log"))
                    for n in pending)
                raise LabError(f"SSH not ready after {timeout}s on: {', '.join(pending)}{tails}")
            time.sleep(2)
    return ready


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _write_known_hosts(state: dict) -> None:
    """known_hosts with every VM's ed25519 host key for [127.0.0.1]:PORT."""
    lines = []
    for name, h in sorted(state["hosts"].items()):
        lines += vm.host_key_lines(h["ssh_port"])
    Path(state["known_hosts"]).write_text("\n".join(lines) + "\n")


def _write_ssh_config(state: dict) -> None:
    """An ssh_config so that `ssh -F <state>/ssh_config balancer1` just works."""
    out = []
    for name, h in sorted(state["hosts"].items()):
        out += [f"Host {name}", "  HostName 127.0.0.1", f"  Port {h['ssh_port']}", "  User root",
                f"  IdentityFile {state['ssh_key']}", "  IdentitiesOnly yes",
                f"  UserKnownHostsFile {state['known_hosts']}", "  StrictHostKeyChecking yes",
                "  LogLevel ERROR",
                *[f"  {key} {value}" for key, value in vm.shared_connection_options(_control_path(name)).items()], ""]
    Path(state["ssh_config"]).write_text("\n".join(out))


# --- another model on the running lab ----------------------------------------------

def layout(cluster) -> dict:
    """What the lab builds from a model (up()): each VM with its role and its NICs'
    segments, every host's own addresses, the networks, the client's address, the
    addresses the client answers for (the external ping nodes) and the stock-install
    hosts. Two models with the same layout can run on one lab."""
    client = network.client_address(cluster)
    return {
        "networks": (str(cluster.external_net), str(cluster.internal_net)),
        "VMs (name, role, NICs)": vm.nic_plan(cluster),
        "own addresses": {h.name: cluster.own_addresses(h) for h in (*cluster.balancers, *cluster.web_hosts)},
        "client address": str(client),
        "addresses the client answers for": [str(a) for a in cluster.external_ping_nodes()],
        "stock-install hosts": stock.stock_installs(cluster, client),
    }


def layout_differences(running, other) -> list[str]:
    """Where the lab of model `other` would differ from that of `running` (empty: none),
    each item naming what differs and both values."""
    ours, theirs = layout(running), layout(other)
    return [f"{key}: {ours[key]!r} ({running.name}) against {theirs[key]!r} ({other.name})"
            for key in ours if ours[key] != theirs[key]]


def switch_model(inventory: Path, cluster) -> dict:
    """Make the running lab's model `cluster`, from `inventory` (its next deploy
    deploys it: lvsha/lab/inventory.py reads the state's inventory). Refused with a
    LabError naming every difference if its lab would be laid out otherwise than the
    running one's. Returns the new state."""
    with _locked():
        state = load_state()
        if state.get("status") != "up":
            raise LabError(f"the lab is not up (status {state.get('status')!r}): no lab to deploy {inventory} to")
        running = topology_cluster(Path(state["inventory"]))
        differences = layout_differences(running, cluster)
        if differences:
            raise LabError(f"{inventory} cannot take over the lab of {state['inventory']}: its lab would differ "
                           f"({'; '.join(differences)})")
        state["inventory"], state["cluster"] = str(Path(inventory).resolve()), cluster.name
        _save_state(state)
    return state


# --- down --------------------------------------------------------------------------

def _our_processes(marker: str) -> list[int]:
    """PIDs of QEMU / apt-cacher-ng processes whose command line mentions marker.

    Catches processes started just before a crash, before their PID reached state.json.
    """
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        argv = pid_cmdline(int(d))
        if not argv:
            continue
        exe = os.path.basename(argv[0])
        if exe in (vm.QEMU, "apt-cacher-ng") and any(marker in a for a in argv):
            found.append(int(d))
    return found


def down(quiet: bool = False) -> list[str]:
    """Tear the lab down: VMs, proxy, namespaces (bridges, taps, veth), state dir.

    Works from a fresh process with only the state dir; idempotent (nothing to do
    is fine). Returns a list of problems (empty when everything is gone). The
    image/package cache is kept.
    """
    sdir = state_dir()
    marker = _marker()
    problems: list[str] = []
    try:
        state = load_state()
    except (LabError, ValueError):
        state = {}
    say = (lambda m: None) if quiet else (lambda m: print(m, flush=True))
    for name, h in state.get("hosts", {}).items():
        vm.close_ssh_master(_control_path(name))
        spec = state.get("vms", {}).get(name)
        if h.get("pid") and spec and pid_is_ours(h["pid"], marker):
            vm.stop(spec, h["pid"], marker)
            say(f"vm {name} stopped")
    if state.get("proxy", {}).get("pid"):
        aptproxy.stop(state["proxy"]["pid"], sdir)
    from . import kill_ours
    for pid in _our_processes(marker):  # anything not (yet) recorded in state.json
        kill_ours(pid, marker, timeout=5)
    for pid in _our_processes(marker):
        problems.append(f"process {pid} still alive")
    # Namespace names are global: only remove them if this state dir recorded them
    # (up() records them before creating them).
    if state.get("lab_netns"):
        for ns in network.destroy(state["lab_netns"], state["client"]["netns"]):
            problems.append(f"netns {ns} could not be removed")
    if sdir.exists():
        try:
            image.safe_rmtree(sdir)
        except LabError as e:
            problems.append(str(e))
        if sdir.exists():
            problems.append(f"state dir {sdir} could not be removed")
    for msg in problems:
        say(f"down: {msg}")
    if not problems and state:
        say("lab down")
    return problems


# --- single VMs, client, status ----------------------------------------------------

def vm_stop(name: str) -> None:
    """Hard power-off of VM `name` (QMP quit, SIGKILL fallback). Idempotent."""
    with _locked():
        state = load_state()
        if name not in state["hosts"]:
            raise LabError(f"no VM named {name}; have {', '.join(state['hosts'])}")
        vm.close_ssh_master(_control_path(name))
        vm.stop(state["vms"][name], state["hosts"][name]["pid"], _marker())
        state["hosts"][name]["pid"] = None
        _save_state(state)


def vm_start(name: str, timeout: float = SSH_TIMEOUT) -> None:
    """Boot VM `name` again (same overlay, taps, MACs, port) and wait for SSH.

    No-op if it is already running. Its host key is unchanged (it lives in the
    overlay), but known_hosts is refreshed anyway.
    """
    with _locked():
        state = load_state()
        if name not in state["hosts"]:
            raise LabError(f"no VM named {name}; have {', '.join(state['hosts'])}")
        pid = state["hosts"][name]["pid"]
        if pid and pid_is_ours(pid, _marker()):
            return
        spec = state["vms"][name]
        state["hosts"][name]["pid"] = vm.start(spec, state["image"], state["accel"],
                                               state["proxy"]["port"], state["authorized_keys"],
                                               state["lab_netns"])
        _save_state(state)
    _wait_ssh(state, [name], lambda m: None, time.monotonic(), timeout)
    with _locked():
        state = load_state()
        _write_known_hosts(state)


def client_exec(args, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    """Run argv `args` inside the client netns (`ip netns exec`), capturing text output.

    Raises subprocess.TimeoutExpired after `timeout` seconds (the command is killed),
    subprocess.CalledProcessError if check and it fails.
    """
    state = load_state()
    return subprocess.run(["ip", "netns", "exec", state["client"]["netns"], *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=check)


CLIENTS = Path(__file__).resolve().parent / "clients"  # programs run in the client netns (poll, hold)

# The poller (clients/poll.py) asks each VIP it is given every 0.2 s on a new connection,
# which the active balancer NATs to a web host. At the scale benchmark's 250 sites that is
# 1,250 connections a second asked, more than the lab's balancer (one emulated vCPU) forwards:
# measured with nothing failing (keepalived, checkinterval 25), about 275 a second were made,
# the active balancer ran at 0 % idle, 708 of 8,234 polls in 30 s went unanswered, keepalived's checkers ran up to
# 10 s late and real servers dropped out of IPVS on both balancers, so the failures the
# benchmark saw were the poller's own. Past POLL_VIPS_MAX sites the lab polls that many VIPs
# spread evenly over the sites, the first and the last included (the last VIP announced
# is among them; the mail IPs and the gateway, announced after the VIPs, are not polled): the same load as at 8 sites (40 polls a second: 0 unanswered, longest
# wait 0.7 s on the same pair). That every VIP answers is asked separately, all at once
# (the lab's serving check after a takeover: tests/lab/clients/answers.py).
POLL_VIPS_MAX = 8


def poll_vips(vips: list) -> list:
    """The VIPs the poller asks: every one of `vips` up to POLL_VIPS_MAX, else
    POLL_VIPS_MAX of them evenly spread, in their order, the first and the last included."""
    vips = list(vips)
    if len(vips) <= POLL_VIPS_MAX:
        return vips
    last = len(vips) - 1
    return [vips[round(i * last / (POLL_VIPS_MAX - 1))] for i in range(POLL_VIPS_MAX)]


def client_program(path: Path | str, *args) -> subprocess.Popen:
    """Start the Python program `path` (a name: lvsha/lab/clients/NAME.py) in the
    client netns, unbuffered, its output (text lines) on the Popen's stdout."""
    path = Path(path) if Path(path).suffix == ".py" else CLIENTS / f"{path}.py"
    state = load_state()
    return subprocess.Popen(["ip", "netns", "exec", state["client"]["netns"], "python3", "-u", str(path),
                             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)


def ssh_argv(name: str) -> list[str]:
    """ssh argv prefix (strict host key checking) to run a command as root on VM `name`."""
    state = load_state()
    return vm.ssh_base(state["ssh_key"], state["hosts"][name]["ssh_port"], state["known_hosts"],
                       control_path=_control_path(name))


def _control_path(name: str) -> str:
    """Socket of the shared SSH connection to VM `name` (in the state dir, removed by down)."""
    return str(state_dir() / f"mux-{name}")


def status() -> dict:
    """{'state_dir', 'status', 'hosts': {name: {'running', 'ssh_port', 'pid'}}, 'proxy_running',
    'netns': {name: exists}} -- or {'status': 'down'} if there is no lab."""
    try:
        state = load_state()
    except (LabError, ValueError):
        return {"status": "down", "state_dir": str(state_dir())}
    marker = _marker()
    return {
        "state_dir": str(state_dir()), "status": state.get("status"), "accel": state.get("accel"),
        "cluster": state.get("cluster"), "inventory": state.get("inventory"), "client": state.get("client"),
        "hosts": {n: {"running": bool(h.get("pid") and pid_is_ours(h["pid"], marker)),
                      "ssh_port": h["ssh_port"], "pid": h.get("pid"),
                      "management_interface": h["management_interface"]}
                  for n, h in state.get("hosts", {}).items()},
        "proxy_running": pid_is_ours(state.get("proxy", {}).get("pid"), marker),
        "netns": {ns: network.netns_exists(ns)
                  for ns in (state.get("lab_netns"), state.get("client", {}).get("netns")) if ns},
        "timings": state.get("timings", {}),
    }
