"""`lvsha lab demo`: the cluster balancing and failing over on real VMs, then torn down.

The steps, each announced with the time since the demo began:
  1. the lab up: the image (cached after its first build), the apt proxy, the
     networks and one VM per model host, started with their role's packages;
  2. the first deploy of the model with the real `pyinfra`, an operation a line;
  3. the cluster's picture (`lvsha diagram --live`) and `lvsha status`;
  4. requests from distinct client addresses to every site: which web host
     answered each (balancing, and persistence where the site has it);
  5. a hard power-off of the active balancer while a client polls every VIP (8 of
     them, spread, past 8 sites: lab.poll_vips) with new connections and holds one keep-alive connection open: the longest wait,
     and whether the held connection carried on (state sync);
  6. the balancer booted again, and where the addresses settle;
  7. the lab torn down, also on Ctrl-C or SIGTERM (kept with --keep).

It only ever tears down a lab it brought up itself. Its figures are a run's
report of their own (`lvsha lab report`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lvsha.lab import LabError, cache_dir, wait_until
from lvsha.lab import lab as lab_api
from lvsha.lab.model import lab_cluster, source_inventory, topology_cluster
from lvsha.lab.run import LAB_INVENTORY, ROOT, deploy, format_report, record, start_report

STEPS = 7
CLIENTS = 3  # distinct client addresses for the balancing step
REQUESTS = 3  # per client address and site
FAILOVER_WINDOW = 60  # s the clients run through the power-off
POWER_OFF_AT = 5  # s into that window
HELD_TIMEOUT = 60  # s one answer on the held connection may take (TCP retransmits across the takeover)
SETTLE_TIMEOUT = 240  # s for the pair to carry the cluster and serve, after a deploy or a boot


class Demo:
    def __init__(self, echo, keep: bool, release: str):
        self.echo, self.keep, self.release = echo, keep, release
        self.started = time.monotonic()
        self.cluster = None
        self.state: dict | None = None
        self.sources: list[str] = []  # client addresses the demo added (removed when the lab is kept)

    # ---- output -------------------------------------------------------------------

    def clock(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60:2d}:{seconds % 60:02d}"

    def step(self, number: int, title: str) -> None:
        self.echo(f"\n[{self.clock()}] {number}/{STEPS} {title}")

    def say(self, line: str) -> None:
        self.echo(f"[{self.clock()}]     {line}")

    # ---- the lab ----------------------------------------------------------------------

    def ssh(self, host: str, command: str, timeout: float = 30) -> str:
        try:
            out = subprocess.run([*lab_api.ssh_argv(host), command], capture_output=True, text=True,
                                 timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return ""
        return out.stdout

    def lvsha(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command, *rest = args
        return subprocess.run([sys.executable, "-m", "lvsha", command, str(LAB_INVENTORY), *rest], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def holders(self) -> list[str]:
        """The balancers holding the internal gateway now (heartbeat moves it with the rest)."""
        gateway = f" {self.cluster.internal_gateway}/"
        return [b.name for b in self.cluster.balancers if gateway in self.ssh(b.name, "ip -4 -o addr show")]

    def answer(self, vip: str, source: str | None = None, timeout: float = 5) -> str:
        """The body's first line of http://VIP/ from the client side ("" if none)."""
        argv = ["curl", "-s", "--max-time", str(timeout), *(["--interface", source] if source else []), f"http://{vip}/"]
        try:
            return lab_api.client_exec(argv, timeout=timeout + 5).stdout.strip()
        except subprocess.TimeoutExpired:
            return ""

    def serving(self) -> bool:
        return all(self.answer(site.vip).startswith(site.name) for site in self.cluster.sites)

    def settled(self, owner: str | None) -> str:
        """Wait until one balancer (`owner`, if given) holds the addresses and every site answers."""
        def done():
            held = self.holders()
            return len(held) == 1 and (owner is None or held == [owner]) and self.serving() and held[0]
        return wait_until(done, SETTLE_TIMEOUT, interval=2,
                          what=f"{owner or 'one balancer'} to carry the cluster and every site to answer")

    def client_sources(self) -> list[str]:
        """Free addresses of the external network, added to the client side as distinct clients."""
        net = self.cluster.external_net
        used = {str(a) for a in self.cluster.used_addresses()} | {self.state["client"]["address"].split("/")[0]}
        free = [str(ip) for ip in reversed(list(net.iter_hosts())) if str(ip) not in used][:CLIENTS]
        for ip in free:
            lab_api.client_exec(["ip", "addr", "replace", f"{ip}/{net.prefixlen}", "dev", "eth0"], check=True)
        self.sources = [f"{ip}/{net.prefixlen}" for ip in free]
        return free

    # ---- the steps --------------------------------------------------------------------

    def up(self) -> None:
        self.step(1, f"Lab up: Debian {self.release} VMs for the model of {source_inventory()}")
        self.cluster = topology_cluster()
        self.state = lab_api.up(self.cluster, progress=self.say, provisioned=True, release=self.release)
        start_report("demo")  # only now: a demo refused (a lab already up) leaves that lab's report alone
        self.cluster = lab_cluster(self.state)
        timings = self.state.get("timings", {})
        if not timings.get("image_cached"):
            record("demo: image built (not cached)", timings.get("image_s", 0))
        record("demo: lab up (image cached)" if timings.get("image_cached") else "demo: lab up (image built)",
               timings.get("up_s", 0))

    def first_deploy(self) -> None:
        self.step(2, "First deploy: pyinfra lvsha/lab/inventory.py deploy.py (each operation as it starts)")
        result = deploy(progress=lambda line: self.say(f"deploy {line}"))
        if not result.ok:
            raise LabError(f"the first deploy failed ({result.errors} error(s)); its last lines:\n"
                           f"{result.output[-4000:]}")
        self.say(f"deployed: {result.changed} change(s) in {result.seconds:.0f} s")
        record("demo: first deploy", result.seconds)
        holder = self.settled(None)
        self.say(f"{holder} carries every floating address; every site answers")

    def picture_and_status(self) -> None:
        self.step(3, "The cluster: its picture, and `lvsha status`")
        svg = cache_dir() / "demo" / "cluster.svg"  # outlives the lab
        svg.parent.mkdir(parents=True, exist_ok=True)
        drawn = self.lvsha("diagram", "-o", str(svg), "--live")
        self.say(f"picture: {svg}" if drawn.returncode == 0 else f"no picture: {drawn.stderr.strip()}")
        shown = self.lvsha("status")
        for line in shown.stdout.rstrip().splitlines():
            self.say(f"  {line}")

    def balancing(self) -> None:
        self.step(4, f"Balancing: {REQUESTS} requests from each of {CLIENTS} client addresses to every site")
        sources = self.client_sources()
        for site in self.cluster.sites:
            kind = f"persistent {site.persistent} s" if site.persistent else "not persistent"
            self.say(f"{site.name} (VIP {site.vip}, scheduler {site.scheduler}, {kind}):")
            for source in sources:
                hosts = [self.answer(site.vip, source).rpartition(" served by ")[2] or "(no answer)"
                         for _ in range(REQUESTS)]
                self.say(f"  from {source:15} answered by {', '.join(hosts)}")

    def power_off(self) -> str:
        held = self.holders()
        if len(held) != 1:
            raise LabError(f"not one balancer holding the addresses before the power-off: {held or 'none'}")
        active = held[0]
        standby = self.cluster.peer(self.cluster.balancer(active)).name
        site = self.cluster.sites[0]
        source = self.client_sources()[0]
        self.step(5, f"Failover: {active} powered off while clients keep asking")
        polled = lab_api.poll_vips(s.vip for s in self.cluster.sites)
        which = ("every VIP" if len(polled) == len(self.cluster.sites)
                 else f"{len(polled)} of the {len(self.cluster.sites)} VIPs, spread over the sites")
        self.say(f"a client polls {which} with a new connection every 0.2 s; another holds one keep-alive "
                 f"connection to {site.name} from {source}, a request every 0.5 s")
        poller = lab_api.client_program("poll", FAILOVER_WINDOW, *polled)
        holder = lab_api.client_program("hold", site.vip, FAILOVER_WINDOW - 5, source, HELD_TIMEOUT)
        try:
            first = holder.stdout.readline().strip()
            if not first.startswith("HOLD "):
                raise LabError(f"the held connection did not open before the power-off: {first or 'no answer'}")
            self.say(f"held connection opened: {first.partition(' ')[2]} answers it")
            time.sleep(POWER_OFF_AT)
            self.say(f"powering off {active} (QEMU killed: no shutdown, no goodbye to its peer)")
            lab_api.vm_stop(active)
            off = time.monotonic()
            self.settled(standby)
            took = time.monotonic() - off
            self.say(f"{standby} carries every floating address and every site answers, "
                     f"{took:.1f} s after the power-off (heartbeat's deadtime: {self.cluster.heartbeat.deadtime} s)")
            record("demo: every site answers after the power-off", took)
            polled, _ = poller.communicate(timeout=FAILOVER_WINDOW + 30)
            held, _ = holder.communicate(timeout=FAILOVER_WINDOW + HELD_TIMEOUT)
        finally:
            for process in (poller, holder):
                if process.poll() is None:
                    process.kill()
                    process.wait()
        longest = next((line.split()[1] for line in polled.splitlines() if line.startswith("LONGEST ")), None)
        self.say(f"the longest a polling client went unanswered: {longest} s")
        if longest is not None:
            record("demo: longest a polling client went unanswered", float(longest))
        self._held(first, held, holder.returncode)
        return active

    def _held(self, first: str, held: str, code: int) -> None:
        answers = [line.split() for line in held.splitlines() if line.startswith("OK ")]
        hosts = {fields[1] for fields in answers} | ({first.split()[1]} if first.startswith("HOLD ") else set())
        stall = max((float(fields[2]) for fields in answers if len(fields) > 2), default=0.0)
        if code == 0:
            self.say(f"the held connection carried on: {len(answers)} answers on the same connection, "
                     f"from {', '.join(sorted(hosts))}; its longest answer took {stall:.1f} s")
            record("demo: held connection's longest answer", stall)
        elif not self.cluster.state_sync.enabled:
            self.say(f"the held connection broke, as it must without state sync in the model: "
                     f"{held.strip().splitlines()[-1] if held.strip() else 'no answer'}")
        else:
            self.say(f"THE HELD CONNECTION BROKE: {held.strip().splitlines()[-1] if held.strip() else 'no answer'}")
            raise LabError("an established connection did not survive the takeover, though the model syncs state")

    def back(self, active: str) -> None:
        self.step(6, f"{active} boots again")
        started = time.monotonic()
        lab_api.vm_start(active)
        self.say(f"{active} answers SSH after {time.monotonic() - started:.0f} s")
        home = self.cluster.master.name if self.cluster.heartbeat.auto_failback else None
        holder = self.settled(home)
        why = "auto_failback: the master takes the addresses back" if home else "no auto_failback: they stay"
        self.say(f"{holder} carries every floating address ({why}), "
                 f"{time.monotonic() - started:.0f} s after the boot began")
        shown = self.lvsha("status")
        self.say(f"lvsha status: {shown.stdout.strip().splitlines()[0] if shown.stdout.strip() else shown.stderr}")

    def teardown(self) -> None:
        self.step(7, "Tearing the lab down" if not self.keep else "The lab stays up (--keep)")
        if not self.keep:
            problems = lab_api.down(quiet=True)
            self.say("torn down" if not problems else f"teardown left: {problems}")
            return
        for address in self.sources:  # the client side as the lab's tests expect it
            lab_api.client_exec(["ip", "addr", "del", address, "dev", "eth0"])


def next_steps(keep: bool, state: dict | None, cluster) -> str:
    """What to try by hand next (with the lab kept up, or how to keep it)."""
    balancer = cluster.master.name if cluster else "balancer1"
    web = cluster.web_hosts[0].name if cluster else "web1"
    vip = cluster.sites[0].vip if cluster else "VIP"
    ssh_config = (state or {}).get("ssh_config", f"{lab_api.state_dir()}/ssh_config")
    inventory = LAB_INVENTORY.relative_to(ROOT)
    lvsha = ".venv/bin/lvsha"
    head = "What to try next, the lab being up:" if keep else "To try it by hand, keep the lab up: .venv/bin/lvsha lab demo --keep, then:"
    rows = [(f"ssh -F {ssh_config} {balancer}", "a balancer: ipvsadm -Ln, cl_status rscstatus, iptables -S"),
            (f"{lvsha} status {inventory}", "who holds what, each real server, problems"),
            (f"{lvsha} failover {inventory}", "hand the addresses to the other balancer"),
            (f"{lvsha} drain {inventory} {web}", "no new connections to it (undrain: back)"),
            (f"{lvsha} lab client-exec -- curl -s http://{vip}/", "a request from the client side"),
            (f"{lvsha} lab vm-stop {balancer}", "power it off (vm-start: boot it again)"),
            (f"{lvsha} lab deploy --dry", "after editing the inventory: what would change"),
            (f"{lvsha} lab down", "when done")]
    width = max(len(command) for command, _ in rows)
    return "\n".join(["", head, *(f"  {command.ljust(width)}  # {why}" for command, why in rows),
                      "More in docs/lab.md and docs/operating.md."])


def run_demo(echo, keep: bool = False, release: str = "12") -> int:
    """The demo, start to end; 0 when every step worked. Tears down the lab it brought
    up (not with `keep`), whatever happened, Ctrl-C and SIGTERM included."""
    demo = Demo(echo, keep, release)
    code = 1
    try:
        demo.up()  # tears down what it made if it fails; refuses when a lab is already up
    except LabError as error:
        echo(f"demo: {error}")
        return 1
    except (KeyboardInterrupt, lab_api.Terminated):
        echo("demo: interrupted while the lab came up; torn down")
        return 130
    with lab_api._signals_raise():
        try:
            demo.first_deploy()
            demo.picture_and_status()
            demo.balancing()
            active = demo.power_off()
            demo.back(active)
            code = 0
        except LabError as error:
            echo(f"\ndemo: {error}")
        except (KeyboardInterrupt, lab_api.Terminated):
            echo("\ndemo: interrupted")
            code = 130
        except Exception as error:  # noqa: BLE001 - a step's bug or a slow guest: said, then torn down
            echo(f"\ndemo: {type(error).__name__}: {error}")
        finally:
            with lab_api._signals_ignored():
                demo.teardown()
    record("demo: the whole demo", time.monotonic() - demo.started)
    echo(f"\n[{demo.clock()}] demo {'done' if code == 0 else 'FAILED'}.")
    echo(format_report())
    echo(next_steps(keep, demo.state, demo.cluster))
    return code
