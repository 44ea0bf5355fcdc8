"""The end-to-end tier: the real deploy against the lab's real Debian VMs.

The session fixture brings the lab up (unless LVSHA_LAB_REUSE=1 and one is
up), deploys with the real `pyinfra` command, waits until the cluster
serves, and tears the lab down at the end. On a machine that cannot run the
lab the tier is skipped, except under CI, where that is a failure.

Which models: with LVSHA_LAB_INVENTORY set, the whole tier on that inventory's
model. Otherwise (lab_models) the whole tier on the reference `inventory.py`,
then, on a second lab, the tests marked `every_model` on `examples/edge/inventory.py`
(a cluster different in every dimension) on the other Debian release
(image.SECOND_MODEL_RELEASE), then the same tests on `examples/edge-keepalived`
(the edge cluster on keepalived) without a lab of its own: the edge lab is not
torn down after its tests but handed over (TAKES_OVER), and the keepalived model's
deploy to it is the live migration heartbeat -> keepalived (tasks/migration.py),
recorded as that model's first deploy. So deploy, balancing, firewall and a
takeover run on both releases and both engines, with two boots. The hand-over
happens only when the edge lab's teardown runs as pytest sets up the first test
of the model taking it over (pytest tears a parametrized session fixture's
previous param down there, and the edge tests come first: params are grouped
in their order); any other teardown (the last test, -x, Ctrl-C, a taker not
selected) takes the lab down, and so does the taker's own teardown, whatever
failed (pytest_sessionfinish catches a lab handed over and never taken). The
taker refuses a lab laid out otherwise than its model's (lab_api.switch_model).
A taker handed no lab fails, saying so; with LVSHA_LAB_REUSE=1 it skips instead
(a model there runs only on a lab running its own model, or one handed over).
LVSHA_LAB_RELEASE puts every booted lab on one release. Tests take every name,
address, count and expectation from `lab.cluster`.

Engines: a test about one failover engine's own machinery is marked
`<engine>_internals` (`heartbeat_internals`: the guard, the takeover watch,
cl_status, authkeys, ha.cf restarts...; `keepalived_internals`: test_8_keepalived)
and runs only on models of that engine, decided from the model each lab
param loads (`Cluster.engine`). Every other test runs on both engines; what
differs (which service to stop or kill, what to show when a wait fails) comes
from `lab.engine_service` / `lab.engine_services`, and a test that needs a day-2
command (`lvsha status`, `drain`, `failover`) skips where it is not built yet
(`lab.require_day2`).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import pytest

from lvsha import render
from lvsha.lab import lab as lab_api
from lvsha.lab import LabError, cache_dir, image, wait_until
from lvsha.lab.addrwatch import Clock, Offset, Overlap, holding, overlaps, parse_monitor
from lvsha.lab.model import LAB_INVENTORY_ENV, REFERENCE_INVENTORY, ROOT, lab_cluster, topology_cluster
from lvsha.lab.run import LAB_INVENTORY, deploy, format_report, record, set_report_label, start_report
from lvsha.model import ENGINES, Cluster
from tasks.preflight import ENGINE_SERVICES

EXAMPLE_INVENTORY = ROOT / "examples" / "edge" / "inventory.py"
EDGE_KEEPALIVED_INVENTORY = ROOT / "examples" / "edge-keepalived" / "inventory.py"
# Models run after the reference one, on every_model tests only and on the other release.
SECOND_MODELS = (str(EXAMPLE_INVENTORY), str(EDGE_KEEPALIVED_INVENTORY))
# {model: the model whose running lab it takes over (no boot): its deploy there migrates the engine}.
TAKES_OVER = {str(EDGE_KEEPALIVED_INVENTORY): str(EXAMPLE_INVENTORY)}

PREREQUISITES = ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4", "ip", "ssh", "curl", "apt-cacher-ng")
# Whose log lines a failed wait shows: heartbeat's own and every lvsha script acting around it
# (lvsha-ipvs-ready: an idle start of heartbeat waits for it).
LOGGED_BY = " ".join(f"-t {name}" for name in ("heartbeat", "ipfail", "ResourceManager", *(
    Path(script).name for script in (render.HEARTBEAT_GUARD, render.FLOATING_IPS_SCRIPT, render.CONNTRACKD_SCRIPT,
                                     render.TAKEOVER_SCRIPT, render.TAKEOVER_WATCH, render.IPVS_READY_SCRIPT))))
# keepalived: its own log (its unit's) or that of a script it runs (notify, track scripts:
# lvsha-keepalived, lvsha-conntrackd), by name: their lines are logger's alone under
# systemd (docs/design.md), which journald may not tie to the unit. Matches joined by "+" (OR).
KEEPALIVED_LOGGED = " + ".join([*(f"_SYSTEMD_UNIT={unit}.service" for unit in ENGINE_SERVICES["keepalived"]),
                                *(f"SYSLOG_IDENTIFIER={Path(script).name}"
                                  for script in (render.KEEPALIVED_PROGRAM, render.KEEPALIVED_CONNTRACKD_SCRIPT))])
# The engines whose day-2 commands (lvsha status, drain, failover) are built (lvsha/day2.py).
DAY2_ENGINES = ("heartbeat", "keepalived")
SETTLE_TIMEOUT = 420  # s: initdead + takeover + first checks; measured up to ~230 s in CI before the single address resource
# Up to this many sites Lab.serving() asks each VIP in turn (curl); more, all at once.
SERVING_ONE_BY_ONE_MAX = 8
_lab_used = False
_report_started = False
_handed_over: str | None = None  # the model whose lab its teardown left up for the model taking it over
_setting_up: str | None = None  # the lab param of the test pytest is setting up (pytest_runtest_setup)


def lab_models(chosen: str | None) -> list[tuple[str, str]]:
    """(id, inventory) of each lab param, in the order they run: LVSHA_LAB_INVENTORY's
    model alone (`chosen`), else the reference, edge, and edge on keepalived (which
    takes over edge's lab: TAKES_OVER)."""
    if chosen:
        return [("chosen", os.path.abspath(chosen))]
    return [("reference", str(REFERENCE_INVENTORY)), ("edge", str(EXAMPLE_INVENTORY)),
            ("edge-keepalived", str(EDGE_KEEPALIVED_INVENTORY))]


def _models() -> list:
    return [pytest.param(inventory, id=id) for id, inventory in lab_models(os.environ.get(LAB_INVENTORY_ENV))]


def second_model(inventory: str) -> bool:
    """A model run after the reference one (every_model tests only, the other release):
    never when LVSHA_LAB_INVENTORY chooses the model."""
    return str(inventory) in SECOND_MODELS and not os.environ.get(LAB_INVENTORY_ENV)


def gives_over(inventory: str) -> str | None:
    """The model whose running lab the model of `inventory` takes over, or None: it
    boots its own (and always when LVSHA_LAB_INVENTORY chooses the model)."""
    return None if os.environ.get(LAB_INVENTORY_ENV) else TAKES_OVER.get(str(inventory))


def hands_over(inventory: str, setting_up: str | None) -> bool:
    """Whether the lab of `inventory`, being torn down, is left up for the model whose
    test pytest is setting up (`setting_up`; None: none, the session is ending)."""
    return setting_up is not None and gives_over(setting_up) == str(inventory)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """Note the lab param of the test being set up: a lab fixture torn down meanwhile is
    the previous param's, and `hands_over` decides from it."""
    global _setting_up
    _setting_up = getattr(getattr(item, "callspec", None), "params", {}).get("lab")
    try:
        return (yield)
    finally:
        _setting_up = None


def pytest_sessionfinish(session):
    """A lab handed over and never taken (the taker's setup did not reach it) comes down."""
    global _handed_over
    if _handed_over is not None:
        _handed_over = None
        problems = lab_api.down()
        assert not problems, f"lab teardown left: {problems}"


def internals_marker(engine: str) -> str:
    """The marker of a test about `engine`'s own machinery (runs on that engine's models only)."""
    return f"{engine}_internals"


DEFAULT_ENGINE = next(f.default for f in fields(Cluster) if f.name == "engine")


def pytest_configure(config):
    config.addinivalue_line("markers", "every_engine: also run on a second model whose engine the first "
                                          "model's (whole-tier) run does not cover: one run per engine")
    config.addinivalue_line("markers", "every_model: also run on the second models (examples/edge, "
                                          "examples/edge-keepalived) by default")
    for engine in ENGINES:
        config.addinivalue_line("markers", f"{internals_marker(engine)}: about {engine}'s own machinery: "
                                           f"runs only on models whose engine is {engine}")


@lru_cache(maxsize=None)
def model_engine(inventory: str) -> str | None:
    """The failover engine of the model `inventory` loads (None: it does not load;
    the lab fixture then reports why)."""
    try:
        return topology_cluster(Path(inventory)).engine
    except Exception:  # noqa: BLE001 - any failure is the fixture's to report, with the model's own error
        return None


def pytest_collection_modifyitems(config, items):
    """Every lab test runs on the first model; on the second ones only those marked
    `every_model`, and those marked `every_engine` where the second model's engine
    is not the first's (CI's budget), the whole tier only when LVSHA_LAB_INVENTORY
    chooses the model. A test marked `<engine>_internals` runs only on a model of
    that engine."""
    keep, drop = [], []
    for item in items:
        if "/tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)
            params = getattr(getattr(item, "callspec", None), "params", {})
            second = "lab" in params and second_model(params["lab"])
            if second and item.get_closest_marker("every_model") is None and not (
                    item.get_closest_marker("every_engine") is not None
                    and model_engine(params["lab"]) != model_engine(str(REFERENCE_INVENTORY))):
                drop.append(item)
                continue
            engine = model_engine(params["lab"]) if "lab" in params else None
            if engine and any(item.get_closest_marker(internals_marker(other)) for other in ENGINES if other != engine):
                drop.append(item)
                continue
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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
    first_deploy: object = None
    migrated_from: str | None = None  # the engine the first deploy migrated the running pair from

    def ssh(self, host: str, command: str, timeout: float = 60, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run `command` on `host` as root (`input`: its standard input)."""
        argv = [*lab_api.ssh_argv(host), command]
        stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"{host}: `{command}` failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def client(self, *args, timeout: float = 30) -> subprocess.CompletedProcess:
        return lab_api.client_exec(list(args), timeout=timeout)

    def client_program(self, name: str, *args) -> subprocess.Popen:
        """Start the client program NAME (lvsha/lab/clients/NAME.py, else
        tests/lab/clients/NAME.py) in the client netns (text lines on stdout)."""
        own = Path(__file__).parent / "clients" / f"{name}.py"
        return lab_api.client_program(name if (lab_api.CLIENTS / f"{name}.py").exists() else own, *args)

    def lvsha(self, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        """The real `lvsha` CLI (python -m lvsha) with the lab's inventory: `lab.lvsha("status")`."""
        command, *rest = args
        argv = [sys.executable, "-m", "lvsha", command, str(LAB_INVENTORY), *map(str, rest)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              cwd=ROOT)

    def holder_of(self, address: str) -> list[str]:
        """Which balancers carry `address` right now."""
        return [b.name for b in self.cluster.balancers
                if f" {address}/" in self.ssh(b.name, "ip -4 -o addr show", check=False).stdout]

    def ipvs_reals(self, balancer: str) -> dict[str, set[str]]:
        """{virtual "ip:port": {real "ip:port", ...}} from `ipvsadm -Ln` on `balancer`."""
        return _parse_ipvsadm(self.ssh(balancer, "ipvsadm -Ln", check=False).stdout)

    @property
    def engine(self) -> str:
        """The model's failover engine: "heartbeat" or "keepalived"."""
        return self.cluster.engine

    @property
    def engine_services(self) -> tuple[str, ...]:
        """The engine's systemd units on both balancers (heartbeat, ldirectord / keepalived)."""
        return ENGINE_SERVICES[self.engine]

    @property
    def engine_service(self) -> str:
        """The unit that moves the addresses: `systemctl stop` it for a takeover."""
        return self.engine_services[0]

    def engine_active(self) -> bool:
        """`engine_service` (heartbeat, keepalived) is active on both balancers."""
        return all(self.ssh(b.name, f"systemctl is-active {self.engine_service}", check=False).stdout.strip() == "active"
                   for b in self.cluster.balancers)

    def require_day2(self) -> None:
        """Skip the test where lvsha's day-2 commands are not built for the model's engine."""
        if self.engine not in DAY2_ENGINES:
            pytest.skip(f"needs lvsha's day-2 commands (status, drain, failover), which are not implemented for "
                        f"engine {self.engine!r} yet (issue 21, item 3; docs/limitations.md)")

    def floating(self) -> set[str]:
        """Every address the engine moves, from the model."""
        return {str(ip.address) for ip in self.cluster.floating_ips()}

    def expected_ipvs(self) -> dict[str, set[str]]:
        """The model's IPVS table, every real server in it (as `ipvs_reals` reads it)."""
        return {vs.address: {vs.real_address(ip) for _, ip in vs.reals} for vs in self.cluster.virtual_servers()}

    def carries_none(self, balancer: str) -> bool:
        """`balancer` has no floating address, and its IPVS is loaded all the same
        (ldirectord, or keepalived's checker, runs on both, so a takeover only moves addresses)."""
        addresses, table = self.carries(balancer)
        return not addresses & self.floating() and table == self.expected_ipvs()

    def carries(self, balancer: str) -> tuple[set[str], dict[str, set[str]]]:
        """(IPv4 addresses on `balancer`, its IPVS table), read in one command."""
        out = self.ssh(balancer, "ip -4 -o addr show; echo @@; ipvsadm -Ln", check=False).stdout
        addresses, _, table = out.partition("@@")
        return {f.split("/")[0] for line in addresses.splitlines() for f in line.split()[3:4]}, _parse_ipvsadm(table)

    def serving(self, timeout: float = 5) -> bool:
        """Every site's VIP answers HTTP with its own site name: one curl after
        another, or, for more than SERVING_ONE_BY_ONE_MAX sites (the scale benchmark's
        hundreds), every VIP asked at once by one client (clients/answers.py)."""
        if len(self.cluster.sites) > SERVING_ONE_BY_ONE_MAX:
            argv = ["python3", "-u", str(Path(__file__).parent / "clients" / "answers.py"), str(timeout),
                    *(f"{site.vip}={site.name}" for site in self.cluster.sites)]
            return self.client(*argv, timeout=timeout + 30).returncode == 0
        for site in self.cluster.sites:
            r = self.client("curl", "-s", "--max-time", str(timeout), f"http://{site.vip}/", timeout=timeout + 5)
            if site.name not in r.stdout:
                return False
        return True

    @property
    def pair(self) -> tuple[str, str]:
        """(master, backup) names: the model's preferred owner first."""
        master = self.cluster.master
        return master.name, self.cluster.peer(master).name

    def other(self, balancer: str) -> str:
        return self.cluster.peer(self.cluster.balancer(balancer)).name

    def home_after_return(self, holder: str) -> str:
        """Where the group settles once both nodes run again after `holder`
        carried it alone: the master with auto_failback (keepalived: preempt, after
        preempt_delay), else it stays (keepalived: nopreempt)."""
        return self.cluster.master.name if self.cluster.heartbeat.auto_failback else holder

    def carrier(self) -> str:
        """The balancer carrying the group now (asserted: exactly one, serving)."""
        holder = Watch(self).exactly_one_carrier()
        assert holder and self.serving(), f"not exactly one carrier serving: {Watch(self).carriers()}"
        return holder

    @property
    def settle_timeout(self) -> float:
        """How long a settle may take on this model: SETTLE_TIMEOUT, and on heartbeat
        ldirectord's start pass (render.ldirectord_start_pass: docs/scale.md, health checks)."""
        return SETTLE_TIMEOUT + (render.ldirectord_start_pass(self.cluster) if self.engine == "heartbeat" else 0)

    def wait_settled(self, owner: str | None, timeout: float | None = None) -> float:
        """Wait until `owner` (None: either balancer) carries every floating address,
        IPVS has every real server, and every VIP serves (at most `timeout`, by default
        the model's settle_timeout); return the seconds it took."""
        timeout = self.settle_timeout if timeout is None else timeout
        started = time.monotonic()
        reals = len(self.cluster.web_hosts)
        candidates = [owner] if owner else [b.name for b in self.cluster.balancers]

        def settled_on(name):
            addresses, table = self.carries(name)
            if not self.floating() <= addresses:
                return False
            return len(table) == len(self.cluster.sites) and all(len(r) == reals for r in table.values()) and self.serving()

        try:
            wait_until(lambda: any(settled_on(name) for name in candidates), timeout, interval=2,
                       what=f"{owner or 'a balancer'} to carry the cluster and serve every site")
        except LabError as error:
            raise LabError(f"{error}\n{self.diagnosis()}") from None
        return time.monotonic() - started

    def diagnosis(self, since: str = "-10min") -> str:
        """What each balancer holds and says, and which sites answer: printed when a wait fails."""
        parts = []
        for balancer in self.cluster.balancers:
            out = self.ssh(balancer.name, self._diagnosis_command(balancer.name, since), check=False, timeout=60)
            parts.append(f"--- {balancer.name} (rc {out.returncode})\n{out.stdout}{out.stderr}")
        for site in self.cluster.sites:
            r = self.client("curl", "-s", "--max-time", "5", f"http://{site.vip}/", timeout=10)
            parts.append(f"--- {site.name} http://{site.vip}/: rc {r.returncode} {r.stdout.strip()[:80]!r}")
        return "\n".join(parts)

    def _diagnosis_command(self, balancer: str, since: str) -> str:
        """What `diagnosis` runs on `balancer`: its addresses and IPVS table, the
        engine's view (heartbeat: cl_status; keepalived: its units) and its log."""
        if self.engine == "keepalived":
            return ("ip -4 -o addr show; ipvsadm -Ln; "
                    f"systemctl is-active {' '.join(self.engine_services)}; "
                    f"journalctl -q -o short-precise --since={since} --no-pager {KEEPALIVED_LOGGED} | tail -n 80")
        return ("ip -4 -o addr show; ipvsadm -Ln; cl_status rscstatus; "
                f"cl_status nodestatus {self.other(balancer)}; "
                f"journalctl -q -o short-precise --since={since} --no-pager {LOGGED_BY} "
                "| grep -v -e debug: -e 'WARN: Consider' | tail -n 80")


class AddressEvents:
    """Every address each balancer's kernel adds or deletes from now on, read back
    as holding intervals on the host's clock (lvsha/lab/addrwatch.py says how, and
    what the tolerance is): sees two holders of any floating address for longer
    than the clocks' tolerance (milliseconds), where sampling sees only those that
    outlast a sample's interval.

    On each balancer `ip -o -ts monitor address` runs as a transient unit (ended by
    `read`, or by systemd after RuntimeMaxSec should the test die) logging to /run;
    it is known to be listening once a marker address added and deleted on `lo` is
    in its log, and only then is the snapshot of what the node holds taken."""

    MARKER = "127.254.254.254"
    _count = 0

    def __init__(self, lab: Lab):
        AddressEvents._count += 1
        self.lab, self.id = lab, f"lvsha-lab-addrwatch-{os.getpid()}-{AddressEvents._count}"
        self.log = f"/run/lvsha-lab/{self.id}.log"
        self.names = [b.name for b in lab.cluster.balancers]
        self.undecided: list = []
        # after read: {balancer: {address: [(from, to), ...]}} each held the floating addresses, its own clock
        self.spans: dict[str, dict[str, list[tuple[float, float]]]] = {}
        self.first = {name: self._offset(name) for name in self.names}
        self.since, self.held = {}, {}
        for name in self.names:
            self.since[name], self.held[name] = self._start(name)

    def _start(self, name: str) -> tuple[float, set[str]]:
        marker = f"{self.MARKER}/32"
        out = self.lab.ssh(name, (
            "set -e; mkdir -p /run/lvsha-lab; "
            f"systemd-run --quiet --unit={self.id} --property=RuntimeMaxSec=7200 --setenv=TZ=UTC "
            f"/bin/sh -c 'exec ip -o -ts monitor address > {self.log}'; i=0; "
            f"until grep -q ' {marker} ' {self.log} 2>/dev/null; do "
            f"ip addr add {marker} dev lo 2>/dev/null || true; ip addr del {marker} dev lo 2>/dev/null || true; "
            "i=$((i + 1)); [ $i -lt 60 ] || { echo 'ip monitor logged nothing in 30 s' >&2; exit 1; }; sleep 0.5; done; "
            "date +%s.%N; ip -4 -o addr show"), timeout=90)
        since, _, addresses = out.stdout.partition("\n")
        return float(since), {f.split("/")[0] for line in addresses.splitlines() for f in line.split()[3:4]}

    def _offset(self, name: str, samples: int = 20) -> Offset:
        """The guest's clock against the host's, over one SSH session (no fork per sample)."""
        session = subprocess.Popen([*lab_api.ssh_argv(name), "exec bash -c 'while read -r _; do echo $EPOCHREALTIME; done'"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        taken = []
        try:
            for _ in range(samples):
                sent = time.time()
                session.stdin.write("\n")
                session.stdin.flush()
                if not select.select([session.stdout], [], [], 20)[0]:
                    raise AssertionError(f"{name}: no clock reading within 20 s")
                read = float(session.stdout.readline().strip().replace(",", "."))
                taken.append((sent, read, time.time()))
        finally:
            session.stdin.close()
            session.kill()
            session.wait(timeout=10)
        return Offset.of(taken)

    def lost(self, name: str) -> dict[str, list[tuple[float, float]]]:
        """After read: the floating addresses `name` held when the log started and did not
        hold without a break until it was read, with its holding intervals."""
        return {a: spans for a, spans in self.spans[name].items()
                if a in self.held[name] and (len(spans) != 1 or spans[0][0] != self.since[name])}

    def read(self) -> list[Overlap]:
        """Stops the logs; every time both balancers held a floating address at once
        beyond the clocks' tolerance (certain), in time order. Those within it are in
        `undecided`."""
        last = {name: self._offset(name) for name in self.names}
        spans, clocks = {}, {}
        for name in self.names:
            out = self.lab.ssh(name, f"date +%s.%N; cat {self.log}; systemctl stop {self.id} 2>/dev/null; rm -f {self.log}",
                               timeout=60).stdout
            until, _, log = out.partition("\n")
            spans[name] = holding(self.held[name], self.since[name], parse_monitor(log), float(until), self.lab.floating())
            clocks[name] = Clock(self.first[name], last[name])
        self.spans = spans
        found = overlaps(spans[self.names[0]], clocks[self.names[0]], spans[self.names[1]], clocks[self.names[1]])
        self.undecided = [o for o in found if not o.certain]
        return [o for o in found if o.certain]


class Watch:
    """Samples both balancers: who carries which floating address, and whether any
    address is on both at once (which must never be seen). With `events`, it also
    logs both balancers' address events from now on (AddressEvents): `on_both()`
    then sees two holders for any time longer than the clocks' tolerance, not only
    those a sample happens to fall on."""

    def __init__(self, lab: Lab, events: bool = False):
        self.lab, self.both = lab, []
        self.events = AddressEvents(lab) if events else None
        self.undecided: list[Overlap] = []  # within the clocks' tolerance
        self.overlaps: list[Overlap] = []  # certain, from the address events

    def on_both(self) -> list[str]:
        """Every time an address was seen, or logged, on both balancers at once (with
        events: read once, which ends the logs); each said with its address, and its
        length where the logs give one."""
        said = [f"sampled on both: {', '.join(addresses)}" for addresses in self.both]
        if self.events:
            self.overlaps = self.events.read()
            self.undecided, self.events = self.events.undecided, None
        return said + [str(o) for o in self.overlaps]

    def carriers(self) -> dict[str, set[str]]:
        held = {b.name: self.lab.carries(b.name)[0] & self.lab.floating() for b in self.lab.cluster.balancers}
        first, second = held.values()
        if first & second:
            self.both.append(sorted(first & second))
        return held

    def exactly_one_carrier(self) -> str | None:
        """The balancer carrying every floating address with its IPVS loaded, when
        the other carries none (None otherwise)."""
        held, tables = {}, {}
        for b in self.lab.cluster.balancers:
            addresses, tables[b.name] = self.lab.carries(b.name)
            held[b.name] = addresses & self.lab.floating()
        first, second = held.values()
        if first & second:
            self.both.append(sorted(first & second))
        full = [name for name, addresses in held.items() if addresses == self.lab.floating() and tables[name]]
        empty = [name for name, addresses in held.items() if not addresses]
        return full[0] if len(full) == 1 and len(empty) == 1 else None


@pytest.fixture(scope="module")
def client_sources(lab):
    """Extra client addresses (free ones in the external network) to act as distinct clients."""
    net = lab.cluster.external_net
    used = {str(a) for a in lab.cluster.used_addresses()} | {lab.state["client"]["address"].split("/")[0]}
    free = [str(ip) for ip in reversed(list(net.iter_hosts())) if str(ip) not in used][:6]
    for ip in free:
        lab.client("ip", "addr", "add", f"{ip}/{net.prefixlen}", "dev", "eth0")
    yield free
    for ip in free:
        lab.client("ip", "addr", "del", f"{ip}/{net.prefixlen}", "dev", "eth0")


def _progress(config):
    """A function printing a line to the terminal as it happens, also under pytest's
    output capture (the README's test command): the lab's long steps are never silent."""
    capture = config.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(line, flush=True)
    return say


@pytest.fixture(scope="session", params=_models())
def lab(request):
    """The lab for one model. pytest runs every test of one model before the next's
    (lab_models' order) and tears the lab down in between, except for a model that
    takes the lab over (TAKES_OVER): that lab stays up, and the taker's deploy to it
    is the taker's first (the engine's migration where the engines differ)."""
    missing = _missing_prerequisites()
    if missing:
        message = f"the lab needs: {', '.join(missing)} (run bin/setup as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    global _lab_used, _report_started, _handed_over
    say = _progress(request.config)
    _lab_used = True
    inventory = Path(request.param)
    giver = gives_over(request.param)
    taking_over = giver is not None and _handed_over == giver
    reuse = not taking_over and os.environ.get("LVSHA_LAB_REUSE") == "1" and lab_api.status().get("status") == "up"
    if not _report_started:  # this run's figures only, a reused lab's too (never an earlier run's)
        start_report()
        _report_started = True
    label = ""  # the report's prefix for this model's figures
    if reuse:
        state = lab_api.load_state()
        if Path(state.get("inventory", REFERENCE_INVENTORY)) != inventory:
            pytest.skip(f"the running lab has the model of {state.get('inventory')}, not {inventory}")
    elif giver is None:
        model = topology_cluster(inventory)
        # The second models run after the reference one has proven the install
        # path from bare Debian: their VMs start with their packages installed.
        second = second_model(request.param)
        release = os.environ.get(image.RELEASE_ENV) or (image.SECOND_MODEL_RELEASE if second else image.DEFAULT_RELEASE)
        label = f"{model.name} (Debian {release})" if second else ""
        set_report_label(label)
        state = lab_api.up(model, progress=lambda m: say(f"[lab] {m}"), inventory=inventory,
                           provisioned=second, release=release)
        for key in ("image_s", "boot_s"):
            if key in state.get("timings", {}):
                record({"image_s": "image (build or cache)", "boot_s": "boot to SSH, all VMs"}[key], state["timings"][key])
    elif not taking_over and os.environ.get("LVSHA_LAB_REUSE") == "1":
        pytest.skip(f"LVSHA_LAB_REUSE=1 and no lab is up: {inventory} runs on a lab already running its own model, "
                    f"or on the lab the tests of {giver} leave up in this run (it boots none), and none was handed "
                    f"over (run it with them, e.g. -k edge, or alone with {LAB_INVENTORY_ENV}={inventory})")
    elif not taking_over:
        pytest.fail(f"{inventory} runs on the lab that the tests of {giver} leave up (it boots none), and none was "
                    f"handed over (that lab did not come up, or those tests were not selected): run it with them "
                    f"(e.g. -k edge), or alone on a lab of its own with {LAB_INVENTORY_ENV}={inventory}", pytrace=False)
    previous = None  # taking over: the lab's model until this one's deploy
    try:
        if taking_over:
            _handed_over = None  # this model's lab from here: taken down below, whatever fails
            state = lab_api.load_state()
            previous = Lab(state, lab_cluster(state))
            label = f"{previous.cluster.name} (Debian {state.get('release')})"
            set_report_label(label)
            say(f"[lab] {inventory} takes over the lab of {giver}: waiting for the pair to settle on "
                f"{previous.engine} first")
            previous.wait_settled(None)  # and the peer carries nothing (what the migration starts from)
            wait_until(lambda: Watch(previous).exactly_one_carrier() is not None, 120, interval=3,
                       what=f"one balancer of {previous.cluster.name} to carry every floating address, the other none")
            state = lab_api.switch_model(inventory, topology_cluster(inventory))
        cluster = lab_cluster(state)
        if cluster.engine != DEFAULT_ENGINE:  # every figure says its engine: the report beside heartbeat's
            label = " ".join(filter(None, [label, cluster.engine]))
        # the model's column when the report sets several side by side: its engine and release
        set_report_label(label, column=f"{cluster.name} ({cluster.engine}, Debian {state.get('release', '?')})")
        handle = Lab(state, cluster)
        if not reuse:
            what, log = "first deploy", f"first-deploy-{cluster.name}.log"
            if previous is not None:
                handle.migrated_from = previous.engine if previous.engine != cluster.engine else None
                what += f" (migration from {previous.engine})" if handle.migrated_from else f" (on the lab of {giver})"
                log = f"first-deploy-{cluster.name}-{cluster.engine}-taken-over.log"
            first = deploy(progress=lambda line: say(f"[lab] {what} {line}"))
            first.save(cache_dir() / log)
            assert first.ok, f"{what} failed:\n{first.output[-6000:]}"
            record(what, first.seconds)
            if previous is None:  # started together, the pair settles on the master either way
                record("cluster settled after deploy", handle.wait_settled(cluster.master.name))
            else:  # the group stays where the deploy put it (the migration: on the node converted first)
                record(f"cluster settled after the {'migration' if handle.migrated_from else 'deploy'}",
                       handle.wait_settled(None))
            handle.first_deploy = first
        yield handle
    finally:
        if not reuse:
            if hands_over(request.param, _setting_up):
                _handed_over = request.param
                say(f"[lab] the lab of {inventory} is left up: {_setting_up} takes it over")
            else:
                problems = lab_api.down()
                assert not problems, f"lab teardown left: {problems}"


def pytest_terminal_summary(terminalreporter):
    from lvsha.lab.run import report_path

    if _lab_used and report_path().exists():
        terminalreporter.write_line(format_report())
