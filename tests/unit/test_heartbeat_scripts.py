"""files/heartbeat/lvsha-heartbeat-guard and lvsha-heartbeat-restart, run for real
against fakes of the tools they call (systemctl, cl_status, ip, ping, pkill and
the floating addresses' resource script), each branch of each.

The fakes answer from files in a state folder and log every call; the lab tier
runs the scripts against the real heartbeat.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from lvsha import render
from tests.conftest import ROOT, load_with_test_secret

# The settings file is lvsha.env as rendered for the reference cluster's master, with
# the tools replaced by fakes and heartbeat's timers shortened (seconds, not tens), and
# lvsha-heartbeat-restart's checks 0.2 s apart, not a keepalive (LVSHA_SETTLE_EVERY,
# centiseconds; test_settled_takes_three_checks_a_keepalive_apart... keeps the keepalive).
CLUSTER = load_with_test_secret(ROOT / "inventory.py")
NODE, PEER = CLUSTER.master, CLUSTER.peer(CLUSTER.master)
PROBE = NODE.internal_interface
PEER_ADDRESS, GATEWAY = PEER.internal_ip, CLUSTER.internal_gateway
ADDRESSES = " ".join(render.floating_ips_arguments(CLUSTER))
FAST = {"LVSHA_KEEPALIVE": "1", "LVSHA_DEADTIME": "2", "LVSHA_REJOIN_TIMEOUT": "3", "LVSHA_SETTLE_TIMEOUT": "10",
        "LVSHA_API_TIMEOUT": "1", "LVSHA_WARNTIME": "1", "LVSHA_SETTLE_EVERY": "20"}


def rendered_env(balancer) -> dict[str, str]:
    """KEY: VALUE of lvsha.env as the deploy renders it for `balancer`."""
    (env,) = [f for f in render.heartbeat_helper_files(CLUSTER, balancer) if f.path == render.HEARTBEAT_ENV]
    return dict(line.split("=", 1) for line in env.content.splitlines() if line and not line.startswith("#"))

# systemd's invocation ID of the start the guard's ExecStartPre belongs to (heartbeat's too)
INVOCATION = "5e1f0c6a9d2b4e7f8a3c1d0e9b8a7f6e"

GUARD = str(render.FILES / "heartbeat" / Path(render.HEARTBEAT_GUARD).name)
RESTART = str(render.FILES / "heartbeat" / Path(render.HEARTBEAT_RESTART).name)

# Each fake logs "NAME ARGS..." to $FAKE/calls and answers from files in $FAKE.
FAKES = {
    # records how long a script would wait, and returns at once unless the test needs time to pass
    "sleep": """
        echo "sleep $*" >> "$FAKE/calls"
        [ -f "$FAKE/sleep-removes" ] && rm -f "$(cat "$FAKE/sleep-removes")"  # something else acts meanwhile
        [ -f "$FAKE/sleep-for-real" ] && exec /bin/sleep "$@"
        case $1 in *.*) exec /bin/sleep "$@" ;; esac  # short pauses (a killed process dying) are real
        exit 0""",
    "systemctl": """
        echo "systemctl $*" >> "$FAKE/calls"
        case "$1" in
        is-active)
            [ "$2" = --quiet ] && { [ -f "$FAKE/active-$3" ]; exit $?; }
            # heartbeat.service's states, one a call, the last one kept ("inactive" without any)
            states="$FAKE/states-$2"
            state=$(head -n 1 "$states" 2>/dev/null); state=${state:-inactive}
            [ "$(wc -l < "$states" 2>/dev/null || echo 0)" -gt 1 ] && sed -i 1d "$states"
            echo "$state"; [ "$state" = active ]; exit $? ;;
        show)
            case "$*" in
            *ExecMainExitTimestampMonotonic*) cat "$FAKE/exited" 2>/dev/null || echo 0 ;;
            *ControlGroup*) cat "$FAKE/control-group" 2>/dev/null || echo ;;
            *"-P Restart "*) cat "$FAKE/restart-setting" 2>/dev/null || echo always ;;
            *"-P Job "*) cat "$FAKE/job" 2>/dev/null ;;  # empty: no job (a crash, an exit nobody asked for)
            *"-P JobType "*) cat "$FAKE/job-type" ;;
            *) cat "$FAKE/sync-since" 2>/dev/null || echo 0 ;;
            esac
            exit 0 ;;
        stop) [ "$2" = heartbeat.service ] && rm -f "$FAKE/carries" ;;
        restart|start)
            [ "$1" = restart ] && rm -f "$FAKE/carries"  # heartbeat hands the group over when it stops
            [ -f "$FAKE/$1-fails" ] && exit 1
            [ -f "$FAKE/carries-after-start" ] && touch "$FAKE/carries" ;;
        esac
        exit 0""",
    "cl_status": """
        echo "cl_status $*" >> "$FAKE/calls"
        [ -f "$FAKE/hb-hung" ] && exec /bin/sleep 300  # heartbeat hung: its API never answers
        case "$1" in
        hbstatus) [ -f "$FAKE/hb-running" ] ;;
        rscstatus) [ -f "$FAKE/hb-running" ] && cat "$FAKE/rscstatus" ;;
        nodestatus) cat "$FAKE/peer" ;;
        esac""",
    "ip": """
        echo "ip $*" >> "$FAKE/calls"
        case "$*" in
        "-o -4 addr show")  # the first floating address alone, when the node carries some of them
            [ -f "$FAKE/carries-some" ] && echo "3: eth1    inet $SOME/24 brd + scope global eth1" ;;
        "-4 neigh show to "*)
            address=$5
            if [ -f "$FAKE/answers-$address" ]; then
                left=$(cat "$FAKE/answers-$address")  # answers once this many probes have gone unanswered
                if [ "$left" -gt 0 ]; then echo $((left - 1)) > "$FAKE/answers-$address"; exit 0; fi
                echo "$address lladdr 52:54:00:4c:01:01 REACHABLE"
            fi ;;
        esac
        exit 0""",
    "ping": 'echo "ping $*" >> "$FAKE/calls"; exit 1',
    # The filter table with its counters: the peer's heartbeat packets grow by 3 between
    # two reads while the peer's heartbeat is alive ("peer-alive"), not while it is silent.
    "iptables-save": """
        echo "iptables-save $*" >> "$FAKE/calls"
        # "rule-reads": how many more reads show heartbeat's rules (a firewall reload removes them meanwhile)
        if [ -f "$FAKE/rule-reads" ]; then
            left=$(cat "$FAKE/rule-reads"); echo $((left - 1)) > "$FAKE/rule-reads"
            [ "$left" -gt 0 ] || touch "$FAKE/no-heartbeat-rule"
        fi
        [ -f "$FAKE/no-heartbeat-rule" ] && { echo "*filter"; echo "[9:900] -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"; exit 0; }
        n=$(cat "$FAKE/packets" 2>/dev/null || echo 40)
        [ -f "$FAKE/peer-alive" ] && echo $((n + 3)) > "$FAKE/packets"
        [ -f "$FAKE/counters-reset" ] && echo 0 > "$FAKE/packets"  # the firewall reloaded between two reads
        echo "*filter"
        echo ":INPUT DROP [12:3400]"
        echo "[9:900] -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"
        echo "[$n:$((n * 150))] -A INPUT -i $PROBE -s $PEER_ADDRESS/32 -p udp -m udp --dport $PORT -j ACCEPT"
        echo "[$n:$((n * 150))] -A INPUT -i $OTHER -s $PEER_OTHER/32 -p udp -m udp --dport $PORT -j ACCEPT"
        echo "[5:500] -A INPUT -p udp -m udp --dport 6940 -j ACCEPT"
        echo COMMIT""",
    "pkill": 'echo "pkill $*" >> "$FAKE/calls"; exit 1',
    "systemd-run": 'echo "systemd-run $*" >> "$FAKE/calls"; [ ! -f "$FAKE/systemd-run-fails" ]',
    "logger": "exit 0",
    "lvsha-applied": 'echo "lvsha-applied $*" >> "$FAKE/calls"',
    # lvsha-ipvs-ready: this node's IPVS ready, or not ("ipvs-not-ready": it fails, as at its bound)
    "ipvs-ready": 'echo "ipvs-ready $*" >> "$FAKE/calls"; [ ! -f "$FAKE/ipvs-not-ready" ]',
    "state": 'echo "state $*" >> "$FAKE/calls"; exit "$(cat "$FAKE/state-rc" 2>/dev/null || echo 0)"',
    "floating-ips": """
        echo "floating-ips $*" >> "$FAKE/calls"
        eval "action=\\${$#}"
        case $action in
        stop) rm -f "$FAKE/carries"; exit "$(cat "$FAKE/stop-rc" 2>/dev/null || echo 0)" ;;
        status) [ -f "$FAKE/carries" ] || exit 3 ;;
        esac""",
}

class Fake:
    def __init__(self, root: Path, balancer=NODE, **settings):
        self.root, self.state = root, root / "state"
        self.bin = root / "bin"
        self.state.mkdir(parents=True)
        self.bin.mkdir()
        for name, body in FAKES.items():
            path = self.bin / name
            path.write_text("#!/bin/sh\n" + "\n".join(line.strip() for line in body.splitlines()) + "\n")
            path.chmod(0o755)
        env = {
            **rendered_env(balancer), **FAST,
            "LVSHA_FLOATING_IPS_SCRIPT": str(self.bin / "floating-ips"),
            "LVSHA_IPVS_READY": str(self.bin / "ipvs-ready"),
            "LVSHA_STATE_SCRIPT": "", "LVSHA_SYNC_LISTEN": "",  # see the state sync tests below
            **settings,
        }
        self.env_file = root / "lvsha.env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        self.run_dir = root / "run"
        self.invocation = INVOCATION  # systemd's $INVOCATION_ID for the scripts it runs ("": none)

    def set(self, name: str, content: str = "") -> None:
        (self.state / name).write_text(content)

    def run(self, script: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE": str(self.state), "LVSHA_ENV_FILE": str(self.env_file),
               "LVSHA_STATE_DIR": str(self.run_dir), "SERVICE_RESULT": "signal",
               "LVSHA_CGROUP_ROOT": str(self.root / "cgroup"),
               # what the fake iptables-save prints: the reference's heartbeat rules
               "PROBE": PROBE, "PEER_ADDRESS": PEER_ADDRESS, "OTHER": NODE.external_interface,
               "PEER_OTHER": PEER.external_ip, "PORT": str(render.HEARTBEAT_UDP_PORT),
               "SOME": ADDRESSES.split("/")[0]}
        if self.invocation:
            env["INVOCATION_ID"] = self.invocation
        return subprocess.run([script, *args], capture_output=True, text=True, env=env, timeout=timeout)

    def calls(self) -> list[str]:
        path = self.state / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def waits(self) -> list[int]:
        """The seconds of each whole-second sleep the scripts asked for (not the short pauses)."""
        return [int(call.split()[1]) for call in self.calls() if call.startswith("sleep ") and "." not in call]

    @property
    def stopped_marker(self) -> Path:
        return self.run_dir / "heartbeat-stopped"

    @property
    def kept(self) -> Path:
        """What the guard kept across heartbeat's restart ("SINCE PACKETS KEPT_AT")."""
        return self.run_dir / Path(render.HEARTBEAT_KEPT).name


@pytest.fixture
def fake(tmp_path):
    fake = Fake(tmp_path)
    fake.set("active-netfilter-persistent.service")  # the firewall loaded
    fake.set("peer-alive")  # the peer's heartbeat packets arrive (tests of a silent peer remove it)
    return fake


# ---- lvsha-heartbeat-guard ----------------------------------------------------

def _not_listening(calls: list[str]) -> list[str]:
    return [c for c in calls if not c.startswith(("systemctl show", "iptables-save", "sleep ")) and not c.endswith(" status")]


def test_release_records_the_stop_and_gives_up_every_address_keeping_ldirectord(fake):
    fake.set("carries")
    result = fake.run(GUARD, "release")
    assert result.returncode == 0, result.stderr
    assert abs(int(fake.stopped_marker.read_text()) - _uptime()) < 5  # seconds since boot
    assert _not_listening(fake.calls()) == [
        # no cgroup to read (not under systemd): the takeover watch and heartbeat's processes by name
        f"pkill -KILL -f ^/bin/sh {render.TAKEOVER_WATCH}",  # before the addresses go: it adds none after
        "pkill -KILL -f ^heartbeat: ",
        f"floating-ips {ADDRESSES} stop",
    ]
    assert "holds no floating address" in result.stderr


def test_release_records_when_heartbeats_process_ended_not_when_the_release_runs(fake):
    """The peer's deadtime runs from heartbeat's last packet: the rejoin waits from the
    main process's exit (systemd's monotonic stamp), which ExecStopPost follows by seconds."""
    exited = _uptime() - 8
    fake.set("exited", str(int(exited * 1_000_000)))
    result = fake.run(GUARD, "release")
    assert result.returncode == 0, result.stderr
    assert exited <= int(fake.stopped_marker.read_text()) <= exited + 1  # rounded up to whole seconds, never early
    assert "systemctl show -P ExecMainExitTimestampMonotonic heartbeat.service" in fake.calls()


def test_the_stop_is_recorded_on_the_monotonic_clock_whatever_the_wall_clock_says(fake):
    """A clock step at boot (chrony's makestep) must not end a wait early or make it endless."""
    fake.set("exited", str(int((_uptime() - 8) * 1_000_000)))
    date = fake.bin / "date"
    date.write_text("#!/bin/sh\necho 4102444800\n")  # the year 2100
    date.chmod(0o755)
    assert fake.run(GUARD, "release").returncode == 0
    assert abs(int(fake.stopped_marker.read_text()) - (_uptime() - 7)) <= 2
    result = fake.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    # deadtime 2 + 2 keepalives since the stop, 8 s ago: no wait left whatever the date says
    assert fake.waits() == [1], fake.calls()  # only the listening (warntime)


@pytest.fixture
def heartbeat_cgroup(fake):
    """heartbeat.service's cgroup with processes left in it: heartbeat's children and the
    shell chain one of them runs (here: long sleeps that could add an address later)."""
    group = "/system.slice/heartbeat.service"
    fake.set("control-group", group + "\n")
    folder = fake.root / "cgroup" / group.lstrip("/")
    folder.mkdir(parents=True)
    children = [subprocess.Popen(["sleep", "300"]) for _ in range(3)]
    (folder / "cgroup.procs").write_text("".join(f"{c.pid}\n" for c in children))
    yield children
    for child in children:
        child.kill()
        child.wait()


def test_release_ends_every_process_of_heartbeats_cgroup_before_removing_the_addresses(fake, heartbeat_cgroup):
    """A resource chain still running (harc, ResourceManager, a resource script, the
    watch's child) could add the addresses back after release: it is ended first."""
    fake.set("carries")
    fake.set("watched", "".join(f"{c.pid}\n" for c in heartbeat_cgroup))
    probe = fake.bin / "floating-ips"
    # the address script records which of the cgroup's processes were still alive when it ran
    probe.write_text(probe.read_text().replace(
        'echo "floating-ips $*" >> "$FAKE/calls"',
        'echo "floating-ips $*" >> "$FAKE/calls"\n'
        'for p in $(cat "$FAKE/watched"); do read -r st 2>/dev/null < /proc/$p/stat || continue; st=${st##*) }; '
        '[ "${st%% *}" = Z ] || echo "alive $p" >> "$FAKE/calls"; done'))  # gone, or a zombie: dead
    result = fake.run(GUARD, "release")
    assert result.returncode == 0, result.stderr
    for child in heartbeat_cgroup:
        assert child.wait(timeout=5) == -9  # SIGKILL
    calls = fake.calls()
    assert not any(c.startswith("alive ") for c in calls), (calls, result.stderr)
    assert not any(c.startswith("pkill") for c in calls)  # the cgroup says it all
    assert calls.index(f"floating-ips {ADDRESSES} stop") > calls.index("systemctl show -P ControlGroup heartbeat.service")


def test_the_only_node_serving_restarts_at_once_while_its_peers_heartbeat_is_silent(fake):
    """The peer's heartbeat silent, but this node's heartbeat never called it dead (no
    record from the takeover watch): the release removes the addresses, as it must
    when unsure, but the rejoin waits for nobody: no deadtime, no gateway (before:
    14 s + 120 s)."""
    (fake.state / "peer-alive").unlink()
    fake.set("carries")
    assert fake.run(GUARD, "release").returncode == 0
    assert not (fake.state / "carries").exists()
    fake.set(f"answers-{PEER_ADDRESS}", "0")
    rejoined = fake.run(GUARD, "rejoin")
    assert rejoined.returncode == 0, rejoined.stderr
    assert fake.waits() == [int(FAST["LVSHA_WARNTIME"])], fake.calls()  # the listening alone
    assert not any(c.startswith(("ping", "ip neigh")) for c in fake.calls())
    assert f"{PEER.name}'s heartbeat is silent: nobody is taking over, heartbeat starts now" in rejoined.stderr


# ---- keeping the addresses across heartbeat's own restart --------------------
# Maintenance on the peer (its heartbeat stopped, its machine up), then heartbeat
# crashes on the only serving node: nobody else can take the addresses, so they stay.

PEER_PACKETS = 2 * 40  # what the fake firewall counts from the peer: 40 on each of its two links (FAKES' iptables-save)


def _peer_dead(fake, since: int = 100, packets: int = PEER_PACKETS) -> None:
    """The takeover watch's record: heartbeat here has called the peer dead since `since`
    (seconds since boot), when the firewall had counted `packets` of its packets."""
    fake.run_dir.mkdir(exist_ok=True)
    (fake.run_dir / Path(render.HEARTBEAT_PEER_DEAD).name).write_text(f"{since} {packets}\n")
    (fake.state / "peer-alive").unlink(missing_ok=True)


def _removed(fake) -> bool:
    return any(c.startswith("floating-ips") and c.endswith(" stop") for c in fake.calls())


PEER_DEAD_FILE = Path(render.HEARTBEAT_PEER_DEAD).name
NOT_KEEPING = "lvsha-heartbeat-guard: not keeping the floating addresses across heartbeat's restart: "
GIVING_UP = "lvsha-heartbeat-guard: giving the kept addresses up: "


def _the_line(stderr: str, start: str) -> str:
    """The one line the guard logged that starts with `start` (its reason follows)."""
    (line,) = [line for line in stderr.splitlines() if line.startswith(start)]
    return line[len(start):]


def test_a_crash_while_the_peers_heartbeat_is_dead_keeps_every_address(fake):
    fake.set("carries")
    _peer_dead(fake)
    result = fake.run(GUARD, "release")  # SERVICE_RESULT=signal, no job: Restart=always starts it again
    assert result.returncode == 0, result.stderr
    assert (fake.state / "carries").exists() and not _removed(fake), fake.calls()
    assert fake.kept.read_text().split()[:2] == ["100", str(PEER_PACKETS)]
    assert not (fake.run_dir / Path(render.HEARTBEAT_PEER_DEAD).name).exists()  # the next heartbeat's watch records afresh
    (expire,) = [c for c in fake.calls() if c.startswith("systemd-run ")]
    assert expire.endswith(f"{GUARD} expire") and f"--setenv=LVSHA_STATE_DIR={fake.run_dir}" in expire
    assert "--no-block" in expire and "RuntimeMaxSec=" in expire
    assert "keeping every floating address across heartbeat's restart (its process ended by itself (signal)" \
        in result.stderr
    # with what it read: the record (its file), since when, and the count then and now
    (kept_line,) = [line for line in result.stderr.splitlines() if "keeping every floating address" in line]
    assert f"{PEER.name}'s heartbeat is known dead ({PEER.name} called dead since 100 s after boot " \
        f"({fake.run_dir / PEER_DEAD_FILE})" in kept_line
    assert f"the firewall counted {PEER_PACKETS} of its heartbeat packets then, {PEER_PACKETS} now" in kept_line
    assert "not keeping" not in result.stderr
    # heartbeat's processes are ended all the same: none of the old chain survives
    assert _not_listening(fake.calls())[:2] == [f"pkill -KILL -f ^/bin/sh {render.TAKEOVER_WATCH}", "pkill -KILL -f ^heartbeat: "]


def test_a_kept_node_rejoins_at_once_with_its_addresses(fake):
    fake.set("carries")
    _peer_dead(fake)
    assert fake.run(GUARD, "release").returncode == 0
    rejoined = fake.run(GUARD, "rejoin")
    assert rejoined.returncode == 0, rejoined.stderr
    assert (fake.state / "carries").exists() and not _removed(fake), fake.calls()
    assert fake.waits() == [int(FAST["LVSHA_WARNTIME"])]  # listening once more, then at once
    assert "heartbeat starts with the floating addresses this node kept" in rejoined.stderr
    (line,) = [line for line in rejoined.stderr.splitlines() if "heartbeat starts with the floating addresses" in line]
    assert f"the firewall counted {PEER_PACKETS} of its heartbeat packets then, {PEER_PACKETS} now" in line
    assert f"listening for 1 s: {PEER_PACKETS} of its heartbeat packets counted, then {PEER_PACKETS}" in line
    assert line.endswith(f"(for invocation {INVOCATION})")
    assert fake.kept.exists()  # for the takeover watch to settle once heartbeat runs
    # named for this start: the watch settles the addresses for the heartbeat this ExecStartPre starts only
    assert fake.kept.read_text().split()[:2] == ["100", str(PEER_PACKETS)]
    assert fake.kept.read_text().split()[3] == INVOCATION
    assert fake.calls()[-1] == "lvsha-applied record heartbeat"


def test_a_start_systemd_gives_no_invocation_id_gives_the_kept_addresses_up(fake):
    """Without the start's name the watch could not tell its own start's lines: release."""
    fake.set("carries")
    _peer_dead(fake)
    assert fake.run(GUARD, "release").returncode == 0 and fake.kept.exists()
    fake.invocation = ""
    rejoined = fake.run(GUARD, "rejoin")
    assert rejoined.returncode == 0, rejoined.stderr
    assert _removed(fake) and not fake.kept.exists()
    assert _the_line(rejoined.stderr, GIVING_UP).startswith("systemd gave this start no invocation ID")


def test_each_start_names_itself_in_the_record(fake):
    """A second crash before the watch settled: the next start's rejoin names the next start."""
    fake.set("carries")
    _peer_dead(fake)
    assert fake.run(GUARD, "release").returncode == 0
    assert fake.run(GUARD, "rejoin").returncode == 0
    assert fake.run(GUARD, "release").returncode == 0  # crashed again in its initdead: the kept record stands in
    fake.invocation = "0" * 31 + "1"
    assert fake.run(GUARD, "rejoin").returncode == 0
    assert not _removed(fake) and fake.kept.read_text().split()[3] == "0" * 31 + "1"


def _released_with_job(fake, job_type: str):
    """The guard's release on the node carrying everything, the peer's heartbeat dead,
    heartbeat.service's job (4242) of `job_type`."""
    fake.set("carries")
    _peer_dead(fake)
    fake.set("job", "4242\n")
    fake.set("job-type", f"{job_type}\n")
    result = fake.run(GUARD, "release")
    assert result.returncode == 0, result.stderr
    return result


def test_a_systemctl_restart_keeps_the_addresses_heartbeat_left(fake):
    """heartbeat's clean stop gives the group up itself; what a stop that had to kill it
    left is kept when the job is a restart."""
    result = _released_with_job(fake, "restart")
    assert not _removed(fake) and fake.kept.exists()
    assert "systemctl show -P JobType 4242" in fake.calls()
    assert "(systemctl restart)" in result.stderr


def test_an_operators_stop_releases_even_with_the_peers_heartbeat_dead(fake):
    """`systemctl stop heartbeat` (or a shutdown): the operator wants the node out, and a
    node keeping addresses with no heartbeat running would never give them up."""
    result = _released_with_job(fake, "stop")
    assert _removed(fake) and not fake.kept.exists()
    assert not any(c.startswith("systemd-run") for c in fake.calls())
    assert "holds no floating address" in result.stderr
    assert _the_line(result.stderr, NOT_KEEPING) == \
        "heartbeat does not come back by itself: a stop job (4242) on heartbeat.service (systemctl stop, a shutdown): the node leaves"


# What the one line of a release names, per case: the condition that failed and the values read.
RELEASED_BECAUSE = {
    "peer-packets-since": [f"a heartbeat packet came from {PEER.name} since it was called dead, or the firewall was reloaded",
                           f"the firewall counted {PEER_PACKETS - 3} of its heartbeat packets then, {PEER_PACKETS} now"],
    "never-called-dead": [f"no record that this node's heartbeat called {PEER.name} dead (neither {{run}}/{PEER_DEAD_FILE}"
                          f" nor {{run}}/{Path(render.HEARTBEAT_KEPT).name}: the takeover watch did not record it, or removed it)"],
    "restart-not-always": ["heartbeat does not come back by itself: Restart=on-failure, not always"],
    "carries-some": ["this node does not carry every floating address (lvsha-floating-ips status said 'nothing', exit 3)"],
    "no-transient-unit": ["could not start the transient unit that would remove kept addresses should heartbeat not come back"
                          " (systemd-run exit 1)"],
    "no-count": [f"the count of {PEER.name}'s heartbeat packets cannot be read now",
                 f"the firewall counted {PEER_PACKETS} of its heartbeat packets then, none now"],
    "systemd-unreachable": ["heartbeat does not come back by itself: systemd cannot tell (systemctl show -P Job failed, exit 1)"],
    "systemd-hangs": ["heartbeat does not come back by itself: systemd cannot tell (systemctl show -P Job failed, exit 124)"],
    "firewall-reloaded": [f"the firewall counted {PEER_PACKETS} of its heartbeat packets then, 0 now"],
    "count-still-for-less-than-warntime": [f"{PEER.name} has been silent for less than warntime (30 s): "
                                           f"{PEER.name} called dead since {{since}} s after boot ({{run}}/{PEER_DEAD_FILE})"],
    "kept-unwritable": [f"could not write {{run}}/{Path(render.HEARTBEAT_KEPT).name}"],
}


# How each condition's failure begins (a release names each that failed, the others not at all).
CONDITIONS = ["this node does not carry every floating address", "heartbeat does not come back by itself",
              "no record that this node's heartbeat called", "is not 'SINCE PACKETS'", "is the migration's adopt record",
              "cannot be read now", "since it was called dead, or the firewall was reloaded",
              "has been silent for less than warntime", "could not start the transient unit", "could not write"]


@pytest.mark.parametrize("case", list(RELEASED_BECAUSE))
def test_a_crash_releases_whenever_the_addresses_could_be_someone_elses(fake, case):
    fake.set("carries")
    # count-still-for-less-than-warntime: the watch saw the count move a moment ago (a peer
    # shutting down still sends after its notice): not yet known dead
    since = 100
    if case == "count-still-for-less-than-warntime":
        fake.env_file.write_text(fake.env_file.read_text().replace("LVSHA_WARNTIME=1\n", "LVSHA_WARNTIME=30\n"))
        assert "LVSHA_WARNTIME=30\n" in fake.env_file.read_text()
        since = int(_uptime()) - 2
    _peer_dead(fake, since=since, packets=PEER_PACKETS - 3 if case == "peer-packets-since" else PEER_PACKETS)
    if case == "never-called-dead":
        (fake.run_dir / Path(render.HEARTBEAT_PEER_DEAD).name).unlink()
    elif case == "restart-not-always":
        fake.set("restart-setting", "on-failure\n")
    elif case == "carries-some":
        (fake.state / "carries").unlink()
    elif case == "no-transient-unit":
        fake.set("systemd-run-fails")
    elif case == "kept-unwritable":
        (fake.run_dir / f"{fake.kept.name}.tmp").mkdir()  # the record's temporary name cannot be written
    elif case == "no-count":
        fake.set("no-heartbeat-rule")
    elif case == "firewall-reloaded":
        fake.set("packets", "0")  # counters reset since the watch recorded the peer dead: fails safe, releases
    elif case == "systemd-unreachable":
        systemctl = fake.bin / "systemctl"
        systemctl.write_text(systemctl.read_text().replace('show)', 'show) [ "$3" = Job ] && exit 1', 1))
    elif case == "systemd-hangs":  # each read bounded (LVSHA_READ_TIMEOUT): one that hangs is no keep
        fake.env_file.write_text(fake.env_file.read_text() + "LVSHA_READ_TIMEOUT=0.3\n")  # timeout(1) takes fractions
        systemctl = fake.bin / "systemctl"
        systemctl.write_text(systemctl.read_text().replace('show)', 'show) [ "$3" = Job ] && exec /bin/sleep 30', 1))
    result = fake.run(GUARD, "release")
    assert result.returncode == 0, result.stderr
    assert _removed(fake), fake.calls()
    assert not fake.kept.exists()
    assert "keeping every floating address" not in result.stderr
    # one line names the failed condition and what was read, and only that one (the others held)
    because = _the_line(result.stderr, NOT_KEEPING)
    for words in RELEASED_BECAUSE[case]:
        assert words.format(run=fake.run_dir, since=since) in because, because
    assert sum(because.count(condition) for condition in CONDITIONS) == 1, because
    lines = result.stderr.splitlines()
    assert lines.index(NOT_KEEPING + because) < lines.index("lvsha-heartbeat-guard: this node holds no floating address")


def test_a_release_names_every_condition_that_failed(fake):
    """Not carrying, a stop job and no record at once: all three in the one line, not the first alone."""
    fake.set("carries-some")
    fake.set("job", "4242\n")
    fake.set("job-type", "stop\n")
    result = fake.run(GUARD, "release")
    assert result.returncode == 0 and _removed(fake), result.stderr
    because = _the_line(result.stderr, NOT_KEEPING).split("; ")
    assert [b.split(" (")[0] for b in because] == [
        "this node does not carry every floating address",
        "heartbeat does not come back by itself: a stop job",
        f"no record that this node's heartbeat called {PEER.name} dead"], because


def test_the_stop_says_how_heartbeat_ended_and_which_start_it_ends(fake):
    fake.set("carries")
    result = fake.run(GUARD, "release")
    assert "lvsha-heartbeat-guard: heartbeat stopped (signal; invocation " + INVOCATION + ")" in result.stderr.splitlines()


def test_a_kept_record_that_is_not_since_and_count_is_named(fake):
    """A second crash: the kept record stands in; one that cannot be read as SINCE PACKETS is said as read."""
    fake.set("carries")
    fake.run_dir.mkdir()
    fake.kept.write_text("garbled\n")
    (fake.state / "peer-alive").unlink()
    result = fake.run(GUARD, "release")
    assert _removed(fake)
    assert _the_line(result.stderr, NOT_KEEPING) == f"{fake.kept} is not 'SINCE PACKETS' (read 'garbled')"


def test_both_heartbeats_restarting_at_once_keep_nothing_and_wait_for_nobody(fake):
    """Item 1's tie-break holds with the keep: heartbeat restarting on both nodes at once
    (each heard the other until then: the watch recorded no dead peer), neither keeps its
    addresses, and neither waits for the other (its heartbeat is silent): they meet as at boot."""
    fake.set("carries")
    (fake.state / "peer-alive").unlink()  # the peer's heartbeat stopped at the same moment
    result = fake.run(GUARD, "release")
    assert result.returncode == 0, result.stderr
    assert _removed(fake) and not fake.kept.exists()
    assert not any(c.startswith("systemd-run") for c in fake.calls())
    fake.set(f"answers-{PEER_ADDRESS}", "0")
    rejoined = fake.run(GUARD, "rejoin")
    assert rejoined.returncode == 0, rejoined.stderr
    assert fake.waits() == [int(FAST["LVSHA_WARNTIME"])]  # the listening alone
    assert f"{PEER.name}'s heartbeat is silent: nobody is taking over, heartbeat starts now" in rejoined.stderr


def test_a_second_crash_before_the_watch_recorded_again_still_keeps(fake):
    """The restarted heartbeat dies again in its initdead: the watch has not recorded the
    peer dead yet, but what was kept says since when, and the count has not moved."""
    fake.set("carries")
    _peer_dead(fake)
    assert fake.run(GUARD, "release").returncode == 0
    assert fake.run(GUARD, "rejoin").returncode == 0
    again = fake.run(GUARD, "release")
    assert again.returncode == 0, again.stderr
    assert not _removed(fake) and fake.kept.read_text().split()[:2] == ["100", str(PEER_PACKETS)]


# What rejoin's one line of giving the kept addresses up names, per case.
GIVEN_UP_BECAUSE = {
    "packets-since-the-keep": f"a heartbeat packet came from {PEER.name} since it was called dead, or the firewall was "
                              f"reloaded: {PEER.name} called dead since 100 s after boot ({{kept}})",
    # the first read still counts as before (80), then the peer's packets: 86, and 92 warntime later
    "packets-while-listening": f"{PEER.name}'s heartbeat is alive (listening for 1 s: 86 of its heartbeat packets"
                               " counted, then 92)",
    "firewall-not-loaded": "the firewall is not loaded (netfilter-persistent.service is not active)",
    "not-carrying": "this node does not carry every floating address (lvsha-floating-ips status said 'nothing', exit 3)",
    "expired-meanwhile": "{kept} is gone: expire gave the kept addresses up meanwhile",
    "record-unwritable": "could not write {kept}",
}


@pytest.mark.parametrize("how", list(GIVEN_UP_BECAUSE))
def test_a_kept_node_whose_peers_heartbeat_came_back_releases_at_rejoin(fake, how):
    fake.set("carries")
    _peer_dead(fake)
    assert fake.run(GUARD, "release").returncode == 0
    if how == "packets-since-the-keep":
        fake.set("packets", "41")  # one more packet on each link
    elif how == "packets-while-listening":
        fake.set("peer-alive")  # the first read still counts as before, the one after warntime more
    elif how == "not-carrying":
        (fake.state / "carries").unlink()
    elif how == "expired-meanwhile":
        fake.set("sleep-removes", str(fake.kept))  # expire gave them up while rejoin listened
    elif how == "record-unwritable":
        (fake.run_dir / f"{fake.kept.name}.tmp").mkdir()  # the start cannot be named in the record
    else:
        (fake.state / "active-netfilter-persistent.service").unlink()
    fake.set(f"answers-{PEER_ADDRESS}", "0")
    fake.set(f"answers-{GATEWAY}", "0")
    result = fake.run(GUARD, "rejoin")
    assert _removed(fake) and not (fake.state / "carries").exists(), fake.calls()
    assert not fake.kept.exists()
    assert GIVEN_UP_BECAUSE[how].format(kept=fake.kept) in _the_line(result.stderr, GIVING_UP), result.stderr
    assert result.returncode == (1 if how == "firewall-not-loaded" else 0), result.stderr


def _kept_by_release(fake) -> None:
    fake.set("carries")
    _peer_dead(fake)
    assert fake.run(GUARD, "release").returncode == 0
    assert fake.kept.exists()


def test_expire_removes_kept_addresses_when_heartbeat_is_stopped_in_its_restart_delay(fake):
    """`systemctl stop heartbeat` while systemd waits to restart it: systemd runs no
    ExecStopPost then, and nothing else would ever remove the kept addresses."""
    _kept_by_release(fake)
    fake.set("states-heartbeat.service", "activating\nactivating\ninactive\n")
    result = fake.run(GUARD, "expire")
    assert result.returncode == 0, result.stderr
    assert _removed(fake) and not fake.kept.exists()
    assert "heartbeat was stopped (inactive) before it came back to the kept floating addresses" in result.stderr


@pytest.mark.parametrize("job_type", ["restart", "start"])
def test_expire_keeps_the_addresses_through_the_inactive_instant_of_a_restart(fake, job_type):
    """`systemctl restart heartbeat` (or systemd's own restart after the delay) passes
    through inactive between its stop and its start, its job pending (a restart, a start
    once the stop half is done): heartbeat is coming back, the addresses stay."""
    _kept_by_release(fake)
    fake.set("states-heartbeat.service", "activating\ninactive\nactivating\nactive\n")
    fake.set("job", "4242\n")
    fake.set("job-type", f"{job_type}\n")
    result = fake.run(GUARD, "expire")
    assert result.returncode == 0, result.stderr
    assert not _removed(fake) and fake.kept.exists(), fake.calls()
    assert "systemctl show -P JobType 4242" in fake.calls()


def test_expire_reads_the_state_again_when_no_job_is_left(fake):
    """The start job completed between the state read and the job read: the second
    read of the state sees heartbeat starting, the addresses stay."""
    _kept_by_release(fake)
    fake.set("states-heartbeat.service", "inactive\nactivating\nactive\n")
    result = fake.run(GUARD, "expire")
    assert result.returncode == 0, result.stderr
    assert not _removed(fake) and fake.kept.exists(), fake.calls()


def test_expire_removes_kept_addresses_when_a_stop_job_follows(fake):
    _kept_by_release(fake)
    fake.set("states-heartbeat.service", "failed\n")
    fake.set("job", "4242\n")
    fake.set("job-type", "stop\n")
    result = fake.run(GUARD, "expire")
    assert result.returncode == 0, result.stderr
    assert _removed(fake) and not fake.kept.exists()
    assert "heartbeat was stopped (failed) before it came back" in result.stderr


def test_expire_leaves_the_addresses_to_heartbeat_once_it_runs(fake):
    _kept_by_release(fake)
    fake.set("states-heartbeat.service", "activating\nactive\n")
    result = fake.run(GUARD, "expire")
    assert result.returncode == 0, result.stderr
    assert not _removed(fake) and fake.kept.exists()


def test_expire_removes_kept_addresses_heartbeat_has_not_come_back_to_in_time(fake):
    _kept_by_release(fake)
    since, packets, _ = fake.kept.read_text().split()
    fake.kept.write_text(f"{since} {packets} {int(_uptime()) - int(FAST['LVSHA_REJOIN_TIMEOUT'])}\n")
    fake.set("states-heartbeat.service", "activating\n")
    result = fake.run(GUARD, "expire")
    assert result.returncode == 0, result.stderr
    assert _removed(fake) and not fake.kept.exists()
    assert f"has not come back to the kept floating addresses in {FAST['LVSHA_REJOIN_TIMEOUT']} s" in result.stderr


def test_expire_with_nothing_kept_does_nothing(fake):
    result = fake.run(GUARD, "expire")
    assert result.returncode == 0, result.stderr
    assert not _removed(fake) and not any(c.startswith("systemctl") for c in fake.calls())


@pytest.mark.parametrize("rule", ["no-heartbeat-rule", "no-iptables", "counters-reset"])
def test_a_peer_whose_heartbeat_cannot_be_heard_of_is_taken_as_alive(fake, rule):
    """No counters to read (no rule for heartbeat's port loaded, no iptables-save), or
    counters that went back (the firewall reloaded while listening): the rejoin waits
    for the peer as before, rather than guess it silent."""
    (fake.state / "peer-alive").unlink()
    if rule == "no-iptables":
        (fake.bin / "iptables-save").write_text("#!/bin/sh\nexit 1\n")
    else:
        fake.set(rule)
    _stopped(fake, 0)
    result = fake.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    assert "heartbeat is silent" not in result.stderr
    assert "declares this node dead before it rejoins" in result.stderr  # the deadtime wait


def test_release_that_cannot_remove_an_address_fails(fake):
    fake.set("stop-rc", "1")
    result = fake.run(GUARD, "release")
    assert result.returncode == 1
    assert "could not remove every floating address" in result.stderr


def test_rejoin_at_boot_releases_and_does_not_wait(fake):
    result = fake.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    assert fake.waits() == []
    assert _not_listening(fake.calls())[:3] == [
        f"pkill -KILL -f ^/bin/sh {render.TAKEOVER_WATCH}", "pkill -KILL -f ^heartbeat: ",
        f"floating-ips {ADDRESSES} stop"]
    assert not any(c.startswith(("ping", "ip ", "iptables-save")) for c in fake.calls())
    assert fake.calls()[-1] == "lvsha-applied record heartbeat"  # what heartbeat starts with


def test_an_idle_start_waits_for_this_nodes_ipvs_to_hold_every_site_within_the_models_bound(fake):
    """At boot (and at every start that begins idle) heartbeat may be handed the group at
    once (auto_failback, a dead peer): it starts only once IPVS holds every site, after the
    release, and not at all when the wait fails at its bound (systemd tries again)."""
    bound = render.ipvs_takeover_timeout(CLUSTER)
    assert rendered_env(NODE)["LVSHA_IPVS_WAIT"] == str(bound)
    assert rendered_env(NODE)["LVSHA_IPVS_READY"] == render.IPVS_READY_SCRIPT
    result = fake.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    calls = fake.calls()
    waited = calls.index(f"ipvs-ready --strict {bound}")
    assert calls.index(f"floating-ips {ADDRESSES} stop") < waited < calls.index("lvsha-applied record heartbeat")
    fake.set("ipvs-not-ready")
    result = fake.run(GUARD, "rejoin")
    assert result.returncode == 1
    assert f"IPVS does not hold every site of ldirectord.cf after {bound} s" in result.stderr
    assert "heartbeat does not start" in result.stderr
    assert fake.calls()[-1] == f"ipvs-ready --strict {bound}"  # nothing recorded as started


def test_a_node_that_kept_its_addresses_rejoins_without_waiting_for_its_ipvs(fake):
    """The only serving node, its heartbeat crashed: it serves from its table as it is, and a
    wait that failed or outlasted the rejoin timeout would take its addresses away (the
    release after a failed start, or expire): the kept start does not wait."""
    fake.set("carries")
    _peer_dead(fake)
    fake.set("ipvs-not-ready")
    assert fake.run(GUARD, "release").returncode == 0 and fake.kept.exists()
    rejoined = fake.run(GUARD, "rejoin")
    assert rejoined.returncode == 0, rejoined.stderr
    assert "heartbeat starts with the floating addresses this node kept" in rejoined.stderr
    assert not any(c.startswith("ipvs-ready") for c in fake.calls())


def test_rejoin_refuses_to_start_heartbeat_without_the_firewall(fake):
    (fake.state / "active-netfilter-persistent.service").unlink()
    result = fake.run(GUARD, "rejoin")
    assert result.returncode == 1
    assert "the firewall is not loaded" in result.stderr


def _stopped(fake, seconds_ago: float) -> None:
    fake.run_dir.mkdir(exist_ok=True)
    fake.stopped_marker.write_text(str(int(_uptime() - seconds_ago)))


def test_rejoin_waits_until_the_peer_has_declared_this_node_dead(fake):
    """Peer's heartbeat alive, its machine silent on the probe link: wait deadtime (2) +
    2 keepalives (1) since the stop, listening included, then start alone."""
    _stopped(fake, 0)
    result = fake.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    listen, *rest = fake.waits()
    # what is left of 4 s since the stop, the listening and the run's own time taken off
    assert listen == 1 and len(rest) == 1 and 1 <= rest[0] <= 4, fake.calls()
    assert f"does not answer on {PROBE}: starting heartbeat alone" in result.stderr
    assert not fake.stopped_marker.exists()


def test_rejoin_waits_for_the_peer_to_finish_taking_over(fake):
    """Peer up: wait until the internal gateway answers ARP (the peer's last resource is up)."""
    _stopped(fake, 10)  # the peer had time to see us leave
    fake.set(f"answers-{PEER_ADDRESS}", "0")
    fake.set(f"answers-{GATEWAY}", "2")  # the gateway appears at the third probe
    result = fake.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    gateway_probes = [c for c in fake.calls() if c == f"ping -q -n -c 1 -W 1 -I {PROBE} {GATEWAY}"]
    assert len(gateway_probes) == 3
    assert "starting heartbeat anyway" not in result.stderr
    # every probe starts from a fresh neighbour entry, so a stale one cannot pass
    assert fake.calls().count(f"ip neigh flush to {GATEWAY} dev {PROBE}") == 3


def test_rejoin_gives_up_waiting_for_a_peer_that_never_takes_over(fake):
    _stopped(fake, 10)
    fake.env_file.write_text(fake.env_file.read_text().replace("LVSHA_REJOIN_TIMEOUT=3\n", "LVSHA_REJOIN_TIMEOUT=2\n"))
    assert "LVSHA_REJOIN_TIMEOUT=2\n" in fake.env_file.read_text()
    fake.set(f"answers-{PEER_ADDRESS}", "0")
    fake.set("sleep-for-real")  # the timeout is counted on the clock
    result = fake.run(GUARD, "rejoin")
    assert result.returncode == 0
    probes = fake.waits()[1:]  # after the listening
    assert 1 <= len(probes) <= 3  # probes a second apart until the rejoin timeout (2 s, in whole seconds)
    assert "has not taken the floating addresses in 2 s; starting heartbeat anyway" in result.stderr


def test_both_heartbeats_restarting_at_once_do_not_wait_for_each_other(fake):
    """A healed partition, both crashed, `apt upgrade` on both: each node's peer answers
    ARP but its heartbeat is silent. Neither waits for the other to take the gateway
    (before: each waited the whole rejoin timeout); both start as at boot."""
    (fake.state / "peer-alive").unlink()
    _stopped(fake, 0)
    fake.set(f"answers-{PEER_ADDRESS}", "0")
    result = fake.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    assert fake.waits() == [int(FAST["LVSHA_WARNTIME"])]  # the listening alone: no deadtime, no gateway
    assert not any(c.startswith(("ping", "ip neigh")) for c in fake.calls())
    assert f"{PEER.name}'s heartbeat is silent: nobody is taking over, heartbeat starts now" in result.stderr


# ---- lvsha-heartbeat-restart --------------------------------------------------

def _pair(fake, peer="active", carries=False, carries_after_start=False, rsc="local", hb=True):
    fake.set("peer", peer + "\n")
    fake.set("rscstatus", rsc + "\n")
    if hb:
        fake.set("hb-running")
    if carries:
        fake.set("carries")
    if carries_after_start:
        fake.set("carries-after-start")


def test_master_with_auto_failback_restarts_and_settles_carrying_the_group(fake):
    _pair(fake, carries=True, carries_after_start=True)
    result = fake.run(RESTART)
    assert result.returncode == 0, result.stderr
    assert "systemctl restart heartbeat.service" in fake.calls()
    assert "settled" in result.stdout and "this node carries the floating addresses" in result.stdout


def test_settled_takes_three_checks_a_keepalive_apart_counted_from_each_checks_start(tmp_path):
    fake = Fake(tmp_path, LVSHA_KEEPALIVE="1", LVSHA_SETTLE_EVERY="")  # the default: a keepalive apart
    fake.set("sleep-for-real")
    _pair(fake, carries=True, carries_after_start=True)
    started = time.monotonic()
    result = fake.run(RESTART)
    assert result.returncode == 0, result.stderr
    sleeps = [float(c.split()[1]) for c in fake.calls() if c.startswith("sleep ")]
    assert len(sleeps) == 2 and all(0 < s <= 1 for s in sleeps), sleeps  # the check's own time is not slept again
    assert 2 <= time.monotonic() - started < 4
    # one look at heartbeat per check: the final words say what the third check saw
    assert sum(c.startswith("cl_status rscstatus") for c in fake.calls()) == 3
    assert not any(c.startswith("cl_status hbstatus") for c in fake.calls())


def _settle_checked_thrice(fake) -> bool:
    """A not-settling case proves something only if at least 3 checks ran within its
    timeout (were each seen as settled, the script would have passed): the settle looks
    at heartbeat once per check."""
    return sum(c.startswith("cl_status rscstatus") for c in fake.calls()) >= 3


def test_master_that_does_not_get_the_group_back_fails_naming_what_it_saw(tmp_path):
    fake = Fake(tmp_path, LVSHA_SETTLE_TIMEOUT="1")  # some 5 checks 0.2 s apart: were it settled, 3 would pass
    fake.set("sleep-for-real")  # the settle timeout is counted on the clock
    _pair(fake, carries=True)  # after the restart the group stays on the peer
    result = fake.run(RESTART)
    assert result.returncode == 1 and _settle_checked_thrice(fake)
    assert "did not settle in 1 s (expected this node to carry the floating addresses)" in result.stderr
    assert f"{PEER.name} 'active'" in result.stderr


@pytest.mark.parametrize("settings", [{"balancer": PEER}, {"LVSHA_AUTO_FAILBACK": "off"}], ids=["backup", "no-failback"])
def test_backup_or_no_auto_failback_settles_carrying_nothing(tmp_path, settings):
    fake = Fake(tmp_path, **settings)
    _pair(fake, rsc="none")
    result = fake.run(RESTART)
    assert result.returncode == 0, result.stderr
    assert "systemctl restart heartbeat.service" in fake.calls()
    fake2 = Fake(tmp_path / "carrying", **{**settings, "LVSHA_SETTLE_TIMEOUT": "1"})
    fake2.set("sleep-for-real")
    _pair(fake2, rsc="all", carries_after_start=True)  # it took the group: not what a restart should do
    assert fake2.run(RESTART).returncode == 1 and _settle_checked_thrice(fake2)


def test_a_node_carrying_some_addresses_is_not_settled_carrying_none(tmp_path):
    """The backup must end with none of the group: some of it is not none."""
    fake = Fake(tmp_path, balancer=PEER, LVSHA_SETTLE_TIMEOUT="1")
    fake.set("sleep-for-real")
    _pair(fake, rsc="none")
    fake.set("carries-some")
    result = fake.run(RESTART)
    assert result.returncode == 1 and _settle_checked_thrice(fake)
    assert "expected this node to carry none of the floating addresses" in result.stderr
    assert "carries some of the floating addresses, not all" in result.stderr


def test_the_settle_deadline_is_taken_from_the_monotonic_clock(tmp_path):
    fake = Fake(tmp_path, LVSHA_SETTLE_TIMEOUT="1")
    fake.set("sleep-for-real")
    date = fake.bin / "date"
    date.write_text("#!/bin/sh\necho 4102444800\n")  # a clock stepped to 2100 mid-wait would end it at once
    date.chmod(0o755)
    _pair(fake, rsc="transition", carries_after_start=True)
    started = time.monotonic()
    result = fake.run(RESTART)
    assert result.returncode == 1 and "did not settle in 1 s" in result.stderr and _settle_checked_thrice(fake)
    assert time.monotonic() - started >= 1  # lower bound only: the deadline was honoured


def test_the_only_node_serving_is_not_restarted(fake):
    _pair(fake, peer="dead", carries=True, rsc="all")
    result = fake.run(RESTART)
    assert result.returncode == 1
    assert f"refusing to restart heartbeat on {NODE.name}: {PEER.name} is 'dead'" in result.stderr
    assert not any(c.startswith("systemctl") for c in fake.calls())


def test_a_node_alone_and_serving_nothing_restarts_without_waiting_for_the_peer(fake):
    _pair(fake, peer="dead", rsc="none", carries_after_start=True)
    fake.run_dir.mkdir()
    fake.stopped_marker.write_text("0")
    result = fake.run(RESTART)
    assert result.returncode == 0, result.stderr
    systemctl = [c for c in fake.calls() if c.startswith("systemctl")]
    assert systemctl == ["systemctl stop heartbeat.service", "systemctl start heartbeat.service"]
    assert not fake.stopped_marker.exists()


def test_transition_is_never_settled(tmp_path):
    fake = Fake(tmp_path, LVSHA_SETTLE_TIMEOUT="1")
    fake.set("sleep-for-real")
    _pair(fake, carries_after_start=True, rsc="transition")
    result = fake.run(RESTART)
    assert result.returncode == 1 and _settle_checked_thrice(fake)
    assert "resources 'transition'" in result.stderr


def test_a_hung_heartbeat_api_is_bounded_and_reported(tmp_path):
    """cl_status blocks while heartbeat hangs: each call is bounded, and the script ends
    saying what it saw instead of hanging (or being killed by the deploy's own timeout)."""
    fake = Fake(tmp_path, LVSHA_SETTLE_TIMEOUT="1", LVSHA_API_TIMEOUT="0.3")  # timeout(1) takes fractions
    _pair(fake)
    fake.set("hb-hung")
    result = fake.run(RESTART, timeout=120)
    assert result.returncode == 1
    assert "heartbeat not running, resources 'unknown'" in result.stderr
    assert f"{PEER.name} 'unknown'" in result.stderr


def test_failed_systemctl_restart_is_reported(fake):
    _pair(fake)
    fake.set("restart-fails")
    result = fake.run(RESTART)
    assert result.returncode == 1
    assert f"systemctl restart heartbeat failed on {NODE.name}" in result.stderr




# ---- lvsha-heartbeat-guard adopt (the migration from keepalived) ----------------

@pytest.fixture
def adopting(fake):
    """The node carrying every floating address on keepalived, its peer running no heartbeat
    (its packet count still), the migration's request made."""
    (fake.state / "peer-alive").unlink()
    fake.set("carries")
    result = fake.run(GUARD, "adopt", "60")
    assert result.returncode == 0, result.stderr
    return fake


def _released(fake) -> bool:
    return f"floating-ips {ADDRESSES} stop" in fake.calls()


def test_adopt_lets_the_next_start_keep_the_addresses_once(adopting):
    result = adopting.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    assert not _released(adopting) and (adopting.state / "carries").exists()
    assert "heartbeat starts keeping every floating address this node carries" in result.stderr
    assert adopting.calls()[-1] == "lvsha-applied record heartbeat"  # what heartbeat starts with
    assert not (adopting.run_dir / "heartbeat-adopt").exists()  # consumed
    # recorded for this start, as kept addresses are: the takeover watch settles them alike
    mark, packets, _, invocation = adopting.kept.read_text().split()
    assert (mark, packets, invocation) == ("adopt", str(PEER_PACKETS), INVOCATION)
    # heartbeat stopping or restarting afterwards: the usual release
    again = adopting.run(GUARD, "rejoin")
    assert again.returncode == 0, again.stderr
    assert _released(adopting) and not (adopting.state / "carries").exists()


def test_adopts_record_keeps_its_fields_in_place_when_the_count_cannot_be_read_again(adopting):
    """The peer found silent (two reads), then no count to record (the firewall reloaded
    meanwhile): a placeholder, so that the takeover watch still reads this start's
    invocation ID in the fourth field (not the kept time in the third, which would have it
    remove the addresses keepalived carries during the migration)."""
    adopting.set("rule-reads", "2")
    result = adopting.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    assert not _released(adopting)
    mark, packets, kept_at, invocation = adopting.kept.read_text().split()
    assert (mark, packets, invocation) == ("adopt", "-", INVOCATION)
    assert kept_at.isdigit()


def test_adopts_record_is_never_a_reason_to_keep_at_a_later_stop(adopting):
    """Once: heartbeat crashing after the adopted start releases, the peer's heartbeat silent or not."""
    assert adopting.run(GUARD, "rejoin").returncode == 0 and adopting.kept.exists()
    result = adopting.run(GUARD, "release")
    assert result.returncode == 0, result.stderr
    assert _released(adopting) and not adopting.kept.exists()
    assert "keeping every floating address" not in result.stderr
    assert f"{adopting.kept} is the migration's adopt record ('adopt " in _the_line(result.stderr, NOT_KEEPING)


def test_adopt_without_an_invocation_id_records_nothing_and_still_adopts(adopting):
    adopting.invocation = ""
    result = adopting.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    assert not _released(adopting) and not adopting.kept.exists()
    assert "the takeover watch leaves the addresses to heartbeat" in result.stderr


@pytest.mark.parametrize("why, said", [
    # a peer whose heartbeat runs would take the group too, as one starting during a kept node's initdead did in the lab
    ("peer-alive", f"{PEER.name}'s heartbeat is alive (it would take the group too): releasing as usual"),
    # no count to read is never a silent peer
    ("no-heartbeat-rule", f"{PEER.name}'s heartbeat is unknown"),
    ("counters-reset", f"{PEER.name}'s heartbeat is unknown"),
    ("not carrying", "does not carry every floating address: nothing to keep, releasing as usual"),
    ("expired", "the request to keep the floating addresses expired: releasing as usual"),
])
def test_adopt_keeps_nothing_unless_it_is_safe_and_the_start_releases_as_usual(adopting, why, said):
    if why == "not carrying":
        (adopting.state / "carries").unlink()
    elif why == "expired":
        (adopting.run_dir / "heartbeat-adopt").write_text(f"{int(_uptime()) - 1}\n")
    else:
        adopting.set(why)
    result = adopting.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    assert _released(adopting) and said in result.stderr
    assert not (adopting.run_dir / "heartbeat-adopt").exists()  # consumed all the same


def test_adopt_never_starts_heartbeat_without_the_firewall(adopting):
    (adopting.state / "active-netfilter-persistent.service").unlink()
    result = adopting.run(GUARD, "rejoin")
    assert result.returncode == 1
    assert "the firewall is not loaded" in result.stderr


@pytest.mark.parametrize("args", [["adopt"], ["adopt", "soon"]])
def test_adopt_without_seconds_is_refused(fake, args):
    result = fake.run(GUARD, *args)
    assert result.returncode == 2 and "usage" in result.stderr
    assert not (fake.run_dir / "heartbeat-adopt").exists()


# ---- connection state sync ----------------------------------------------------

@pytest.fixture
def synced(tmp_path):
    fake = Fake(tmp_path, LVSHA_STATE_SCRIPT=str(tmp_path / "bin" / "state"), LVSHA_SYNC_LISTEN="30")
    assert rendered_env(NODE)["LVSHA_STATE_SCRIPT"] == render.CONNTRACKD_SCRIPT  # the reference syncs
    fake.set("active-netfilter-persistent.service")
    fake.set("peer-alive")
    return fake


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def test_release_puts_conntrackd_back_to_backup_after_the_addresses_are_gone(synced):
    synced.set("carries")
    synced.set("state-rc", "1")  # a failed conntrackd request never keeps the addresses
    result = synced.run(GUARD, "release")
    assert result.returncode == 0, result.stderr
    calls = synced.calls()
    assert calls.index(f"floating-ips {ADDRESSES} stop") < calls.index("state stop")


def test_a_kept_node_stays_conntrackd_primary(synced):
    """The node keeps serving: its connection states stay committed (no backup)."""
    synced.set("carries")
    _peer_dead(synced)
    result = synced.run(GUARD, "release")
    assert result.returncode == 0, result.stderr
    assert synced.kept.exists()
    assert not any(c.startswith("state") for c in synced.calls())


def test_rejoin_waits_until_the_sync_daemons_have_listened_one_refresh_period(synced):
    synced.set("sync-since", str(int((_uptime() - 10) * 1_000_000)))  # started 10 s ago
    result = synced.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    # the rest of the 30 s, give or take the whole seconds the script rounds to
    assert len(synced.waits()) == 1 and 18 <= synced.waits()[0] <= 21, synced.calls()
    assert "active connections (IPVS sync refresh)" in result.stderr


def test_rejoin_after_the_sync_daemons_have_listened_long_enough_does_not_wait(synced):
    synced.set("sync-since", str(int((_uptime() - 60) * 1_000_000)))
    result = synced.run(GUARD, "rejoin")
    assert result.returncode == 0, result.stderr
    assert synced.waits() == [] and "IPVS sync refresh" not in result.stderr


def test_rejoin_without_the_sync_daemons_says_so_and_does_not_wait(synced):
    result = synced.run(GUARD, "rejoin")  # systemctl show prints 0: not active
    assert result.returncode == 0, result.stderr
    assert synced.waits() == []
    assert "established connections will not survive a takeover by this node" in result.stderr
