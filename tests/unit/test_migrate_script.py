"""files/keepalived/lvsha-migrate, run for real against fakes of what it calls (systemctl,
ip, ping, iptables-save, systemd-run and lvsha-keepalived's hold): each step of the
migration on one balancer waits, bounded, for what it says, and fails naming what is left."""

import subprocess
import time
from pathlib import Path

import pytest

from lvsha import render
from tests.unit.fakes import fake_programs

PROGRAM = str(render.FILES / "keepalived" / Path(render.MIGRATE_SCRIPT).name)
KEEPALIVED_PROGRAM = str(render.FILES / "keepalived" / Path(render.KEEPALIVED_PROGRAM).name)
ADDRESSES = ["192.168.0.254/24/eth1", "10.0.0.10/24/eth0"]
CIDRS = [a.rsplit("/", 1)[0] for a in ADDRESSES]  # ADDRESS/PREFIX of each, as the program names them
GATEWAY = "192.168.0.254"
PORT = str(render.HEARTBEAT_UDP_PORT)
# retire's runtime drop-in, under the fixture's LVSHA_RUNTIME_UNITS (systemd's /run/systemd/system)
DROPIN = Path(render.KEEPALIVED_MIGRATE_DROPIN).relative_to("/run/systemd/system")
OWNER, OTHER = "balancer1", "balancer2"  # haresources' node (the model's master), the other; OTHER runs the script


@pytest.fixture
def run(tmp_path):
    fake_programs(tmp_path, {
        # systemctl: calls recorded (not the reads). A unit's ActiveState, which `is-active` and
        # `show` name alike (each read of it is one read, counted below): keepalived's active while
        # $FAKE/active exists and a process of $FAKE/pids lives (when it lists any), or for as many
        # more reads as $FAKE/lingers says once its processes ended (systemd not done with it yet),
        # the first of them sending SIGHUP to lvsha-migrate while $FAKE/hup-on-linger exists;
        # heartbeat's active while $FAKE/active-heartbeat exists (deactivating while a stop runs,
        # below); inactive otherwise; $FAKE/word-UNIT names UNIT's instead (activating,
        # deactivating, failed...). Its SubState: $FAKE/sub-UNIT (systemd 254's
        # dead-before-auto-restart...), or the one that goes with its ActiveState (running,
        # stop-sigterm, start, reload, failed, dead). `is-active` prints the ActiveState unless
        # --quiet, exit 3 for any but active, as systemctl does; while $FAKE/is-active-hangs exists
        # it hangs (a real sleep: the fakes' PATH may name another) for as many seconds as it says,
        # then fails saying nothing on stdout, as systemctl does when systemd does not answer within
        # D-Bus's own time limit. `show -p ActiveState -p SubState UNIT` prints NAME=VALUE lines,
        # with -P or --value the values alone, in systemd's order (its D-Bus interface's:
        # ActiveState first) whatever the order asked; it hangs as `is-active` does while
        # $FAKE/state-hangs exists. Every `show` of heartbeat.service hangs while $FAKE/show-hangs
        # exists. `stop heartbeat` (waiting for the whole stop) removes the addresses (heartbeat's
        # release, its guard's) unless $FAKE/stuck exists, and leaves it inactive; `stop --no-block
        # heartbeat` fails with $FAKE/stop-refused, or begins the stop: the addresses removed
        # (unless $FAKE/stuck), heartbeat deactivating (stop-sigterm) for as many more reads of its
        # state as $FAKE/stop-tail says (none: its stop never ends; $FAKE/stopping-heartbeat counts
        # them down, gone once it ended), or, with $FAKE/stop-undone, still active (a restart took
        # the stop's place); `start heartbeat` makes it active (and removes the addresses with
        # $FAKE/released: its guard released them); keepalived's cgroup is named while a process of
        # it lives; its Restart= is "no" while lvsha-migrate's runtime drop-in exists, unless
        # $FAKE/restart-stays.
        "systemctl": """
            alive() { for p in $(cat "$FAKE/pids" 2>/dev/null); do
                          read -r st 2>/dev/null < /proc/$p/stat || continue; st=${st##*) }; [ "${st%% *}" = Z ] || return 0
                      done; return 1; }
            parent() { read -r st < "/proc/$1/stat"; st=${st##*) }; set -- $st; echo "$2"; }
            # the program itself, not `timeout` nor a subshell of it between it and this call
            caller() { pid=$PPID; while tr '\\0' ' ' < "/proc/$(parent $pid)/cmdline" | grep -q "keepalived/lvsha-migrate "; do
                           pid=$(parent $pid); done; echo "$pid"; }
            lingers() { n=$(cat "$FAKE/lingers" 2>/dev/null || echo 0); [ "$n" -gt 0 ] || return 1
                        echo $((n - 1)) > "$FAKE/lingers"
                        if [ -f "$FAKE/hup-on-linger" ]; then rm -f "$FAKE/hup-on-linger"; kill -HUP "$(caller)"; fi; }
            hangs() {  # a read of systemd's state without an answer, while $FAKE/$1 exists
                [ -f "$FAKE/$1" ] || return 0
                /bin/sleep "$(cat "$FAKE/$1")" </dev/null >/dev/null 2>&1
                echo "Failed to retrieve unit state: Connection timed out" >&2; exit 1; }
            active_state() {  # UNIT's ActiveState (one read: a stop's tail and a linger count it)
                if [ -f "$FAKE/word-$1" ]; then cat "$FAKE/word-$1"; return; fi
                case $1 in
                heartbeat.service)
                    if [ -f "$FAKE/stopping-heartbeat" ]; then
                        n=$(cat "$FAKE/stopping-heartbeat")
                        if [ "$n" = never ]; then echo deactivating
                        elif [ "$n" -gt 0 ]; then echo $((n - 1)) > "$FAKE/stopping-heartbeat"; echo deactivating
                        else rm -f "$FAKE/stopping-heartbeat"; echo inactive; fi
                    elif [ -f "$FAKE/active-heartbeat" ]; then echo active
                    else echo inactive; fi ;;
                *) if [ -f "$FAKE/active" ] && { [ ! -f "$FAKE/pids" ] || alive || lingers; }; then echo active
                   else echo inactive; fi ;;
                esac; }
            sub_state() {  # sub_state UNIT ACTIVESTATE
                if [ -f "$FAKE/sub-$1" ]; then cat "$FAKE/sub-$1"; return; fi
                case $2 in active) echo running ;; deactivating) echo stop-sigterm ;; activating) echo start ;;
                           reloading) echo reload ;; failed) echo failed ;; *) echo dead ;; esac; }
            case "$1" in
            is-active) shift; quiet=; [ "$1" = --quiet ] && { quiet=1; shift; }
                       hangs is-active-hangs
                       state=$(active_state "$1")
                       [ -n "$quiet" ] || echo "$state"
                       [ "$state" = active ] && exit 0; exit 3 ;;
            show) case "$*" in *heartbeat*) [ -f "$FAKE/show-hangs" ] && exec sleep 600 ;; esac
                  case "$*" in
                  *ActiveState* | *SubState*)
                      hangs state-hangs
                      for unit; do :; done
                      state=$(active_state "$unit"); sub=$(sub_state "$unit" "$state")
                      case " $* " in *" -P "* | *" --value "*) value=1 ;; *) value= ;; esac
                      prop() { if [ -n "$value" ]; then echo "$2"; else echo "$1=$2"; fi; }
                      case "$*" in *ActiveState*) prop ActiveState "$state" ;; esac
                      case "$*" in *SubState*) prop SubState "$sub" ;; esac ;;
                  *ControlGroup*) alive && echo /system.slice/keepalived.service || echo ;;
                  *MainPID*) echo "main $*" >> "$FAKE/reads"; head -n 1 "$FAKE/pids" 2>/dev/null || echo 0 ;;
                  *Restart*) [ -f "$RUNTIME/keepalived.service.d/zz-lvsha-migrate.conf" ] && [ ! -f "$FAKE/restart-stays" ] \
                                 && grep -q '^Restart=no$' "$RUNTIME/keepalived.service.d/zz-lvsha-migrate.conf" \
                                 && echo no || echo always ;;
                  esac; exit 0 ;;
            esac
            echo "systemctl $*" >> "$FAKE/calls"
            case "$1" in
            stop) if [ "$2 $3" = "--no-block heartbeat.service" ]; then
                      [ -f "$FAKE/stop-refused" ] && exit 1
                      [ -f "$FAKE/stuck" ] || rm -f "$FAKE"/addr-*
                      [ -f "$FAKE/stop-undone" ] && exit 0
                      rm -f "$FAKE/active-heartbeat"
                      cat "$FAKE/stop-tail" > "$FAKE/stopping-heartbeat" 2>/dev/null || echo never > "$FAKE/stopping-heartbeat"
                  elif [ "$2" = heartbeat.service ]; then
                      rm -f "$FAKE/active-heartbeat" "$FAKE/stopping-heartbeat"
                      [ -f "$FAKE/stuck" ] || rm -f "$FAKE"/addr-*
                  fi ;;
            start) [ "$2" = heartbeat.service ] && touch "$FAKE/active-heartbeat" && [ -f "$FAKE/released" ] && rm -f "$FAKE"/addr-* ;;
            disable) [ -f "$FAKE/disable-hangs" ] && /bin/sleep "$(cat "$FAKE/disable-hangs")" </dev/null >/dev/null 2>&1 ;;
            esac
            true""",
        # cl_status: rscstatus from $FAKE/rscstatus, nodestatus from $FAKE/peer
        "cl_status": 'case "$1" in rscstatus) cat "$FAKE/rscstatus" ;; nodestatus) cat "$FAKE/peer" ;; esac',
        "guard": 'echo "guard $*" >> "$FAKE/calls"',
        # the floating addresses' resource script: `start` adds every address it is given
        "floating-ips": """
            echo "floating-ips $*" >> "$FAKE/calls"
            for a; do [ "$a" = start ] && break; i=${a##*/}; c=${a%/*}
                      grep -qF " inet $c " "$FAKE/addr-$i" 2>/dev/null || echo " inet $c " >> "$FAKE/addr-$i"; done""",
        # ip: `addr show dev IF` prints $FAKE/addr-IF; `-4 neigh show to ADDRESS dev IF` answers
        # while $FAKE/arp-ADDRESS exists (something on the link holds ADDRESS)
        "ip": 'case "$*" in *"addr show dev"*) for a; do :; done; cat "$FAKE/addr-$a" 2>/dev/null ;; '
              '*"neigh show"*) [ -f "$FAKE/arp-$5" ] && echo "$5 lladdr 52:54:00:00:00:01 REACHABLE" ;; '
              '*) true ;; esac',
        "ping": 'for a; do :; done; [ -f "$FAKE/arp-$a" ]',
        # iptables-save: the migration's firewall, the peer's heartbeat packets counted on two links
        # ($FAKE/packets, each link; one more at each read while $FAKE/peer-alive exists); no
        # heartbeat rule while $FAKE/no-heartbeat-rule exists
        "iptables-save": f"""
            echo "*filter"; echo "[9:900] -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"
            [ -f "$FAKE/no-heartbeat-rule" ] && exit 0
            n=$(cat "$FAKE/packets" 2>/dev/null || echo 40)
            [ -f "$FAKE/peer-alive" ] && echo $((n + 1)) > "$FAKE/packets"
            echo "[$n:$((n * 150))] -A INPUT -i eth1 -s 192.168.0.2/32 -p udp -m udp --dport {PORT} -j ACCEPT"
            echo "[$n:$((n * 150))] -A INPUT -i eth0 -s 10.0.0.2/32 -p udp -m udp --dport {PORT} -j ACCEPT"
            echo "[7:700] -A INPUT -p udp -m udp --dport {int(PORT) + 1} -j ACCEPT"
            echo COMMIT""",
        # systemd-run: calls recorded; while $FAKE/run-hangs exists it hangs for as many seconds
        # as it says (a real sleep, in its place: killed with it), then succeeds
        "systemd-run": """
            echo "systemd-run $*" >> "$FAKE/calls"
            [ -f "$FAKE/run-hangs" ] && exec /bin/sleep "$(cat "$FAKE/run-hangs")" </dev/null >/dev/null 2>&1
            true""",
        # kill: each call recorded in $FAKE/kills, then made (the shell's own kill); after a
        # SIGSTOP, SIGHUP to the caller while $FAKE/hup-on-stop exists (once)
        "kill": """
            echo "$*" >> "$FAKE/kills"
            kill "$@"; made=$?
            if [ "$1" = -STOP ] && [ -f "$FAKE/hup-on-stop" ]; then rm -f "$FAKE/hup-on-stop"; kill -HUP $PPID; fi
            exit $made""",
        "logger": 'shift 3; echo "$*" >> "$FAKE/logged"',
    })
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKE": str(tmp_path), "LVSHA_SYSTEMCTL": str(tmp_path / "systemctl"),
           "LVSHA_SYSTEMD_RUN": str(tmp_path / "systemd-run"), "LVSHA_IP": str(tmp_path / "ip"),
           "LVSHA_PING": str(tmp_path / "ping"), "LVSHA_IPTABLES_SAVE": str(tmp_path / "iptables-save"),
           "LVSHA_KEEPALIVED_PROGRAM": KEEPALIVED_PROGRAM,
           "LVSHA_HOLD_FILE": str(tmp_path / "lib" / "vrrp-hold"), "LVSHA_VRRP_STATE": str(tmp_path / "vrrp-state"),
           "LVSHA_FAILOVER_FILE": str(tmp_path / "vrrp-failover"), "LVSHA_CL_STATUS": str(tmp_path / "cl_status"),
           "LVSHA_HEARTBEAT_GUARD": str(tmp_path / "guard"), "LVSHA_FLOATING_IPS_SCRIPT": str(tmp_path / "floating-ips"),
           "LVSHA_RUNTIME_UNITS": str(tmp_path / "runtime"), "RUNTIME": str(tmp_path / "runtime"),
           "LVSHA_CGROUP_ROOT": str(tmp_path / "cgroup"), "LVSHA_KILL": str(tmp_path / "kill"), "LVSHA_POLL": "0.05"}

    def run(*args, node=OTHER):
        result = subprocess.run([PROGRAM, *args], capture_output=True, text=True, env={**env, "LVSHA_NODE": node},
                                timeout=60)
        calls = tmp_path / "calls"
        made = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return result, made

    def carry(*specs):
        for spec in specs:
            address, prefix, interface = spec.split("/")
            with open(tmp_path / f"addr-{interface}", "a") as f:
                f.write(f"3: {interface}    inet {address}/{prefix} brd + scope global {interface}\n")

    def answers(*addresses):  # something on the link answers ARP for each of `addresses`
        for address in addresses:
            (tmp_path / f"arp-{address}").touch()

    run.dir, run.carry, run.answers, run.hold = tmp_path, carry, answers, Path(env["LVSHA_HOLD_FILE"])
    run.on = lambda node: lambda *args: run(*args, node=node)  # run on the node named `node` (`uname -n`)
    run.env = env
    run.hold_value = lambda: run.hold.read_text().strip() if run.hold.exists() else "0"
    return run


def test_held_passes_when_keepalived_runs_held_and_carries_nothing(run):
    (run.dir / "active").touch()
    run.hold.parent.mkdir()
    run.hold.write_text("1\n")
    result, _ = run("held", "5", *ADDRESSES)
    assert result.returncode == 0, result.stderr
    assert "held out of MASTER, no floating address here after" in result.stderr


@pytest.mark.parametrize("wrong", ["not held", "carries", "not active"])
def test_held_fails_naming_what_it_found(run, wrong):
    (run.dir / "active").touch()
    run.hold.parent.mkdir()
    run.hold.write_text("1\n")
    if wrong == "not held":
        run.hold.write_text("0\n")
    elif wrong == "carries":
        run.carry(ADDRESSES[1])
    else:
        (run.dir / "active").unlink()
    result, _ = run("held", "1", *ADDRESSES)
    assert result.returncode == 1
    assert "waited 1 s for keepalived active, held out of MASTER" in result.stderr
    assert "not ready for the handover" in result.stderr
    if wrong == "carries":
        assert "carries: 10.0.0.10/24" in result.stderr
    if wrong == "not held":
        assert "hold 0" in result.stderr


def _heartbeat_holding(run):
    (run.dir / "active-heartbeat").touch()
    run.carry(*ADDRESSES)


def test_release_returns_once_nothing_is_left_while_heartbeats_stop_goes_on(run):
    """heartbeat gives its group up early in its stop: the release does not wait for the
    stop's tail (`stopped` does, later), so that the peer's take-over follows at once."""
    _heartbeat_holding(run)
    result, calls = run("release", "5", *ADDRESSES)
    assert result.returncode == 0, result.stderr
    assert calls == ["systemctl disable --quiet heartbeat.service", "systemctl stop --no-block heartbeat.service"]
    assert "heartbeat stopping, every floating address given up after" in result.stderr
    assert (run.dir / "stopping-heartbeat").read_text().strip() == "never", "still stopping when release returned"
    assert not list(run.dir.glob("addr-*"))


def test_release_fails_naming_the_addresses_still_carried(run):
    _heartbeat_holding(run)
    (run.dir / "stuck").touch()
    result, _ = run("release", "1", *ADDRESSES)
    assert result.returncode == 1
    assert f"heartbeat deactivating (stop-sigterm), still carried here: {' '.join(CIDRS)}" in result.stderr


def test_release_does_not_return_while_heartbeat_is_active_even_without_addresses(run):
    """A stop undone (a restart in its place) brings heartbeat back: not released."""
    _heartbeat_holding(run)
    (run.dir / "stop-undone").touch()
    result, _ = run("release", "1", *ADDRESSES)
    assert result.returncode == 1
    assert "waited 1 s for heartbeat stopping, every floating address given up" in result.stderr
    assert "heartbeat active (running), still carried here: none" in result.stderr


# systemd 254 and later between two attempts of a unit's Restart=: ActiveState inactive or failed,
# the restart pending (SubState): `systemctl is-active` says "inactive" or "failed", yet not off.
BETWEEN_RESTARTS = [("inactive", "dead-before-auto-restart"), ("failed", "failed-before-auto-restart")]


def _between_restarts(run, unit, active, sub):
    (run.dir / f"word-{unit}").write_text(f"{active}\n")
    (run.dir / f"sub-{unit}").write_text(f"{sub}\n")


@pytest.mark.parametrize("active, sub", BETWEEN_RESTARTS)
def test_release_does_not_take_heartbeat_between_two_restarts_for_stopping(run, active, sub):
    """A stop undone and heartbeat waiting to start again (systemd 254: inactive or failed, a
    restart pending) is neither stopping nor stopped: not released, its state said with the
    SubState that tells it."""
    _heartbeat_holding(run)
    (run.dir / "stop-undone").touch()
    _between_restarts(run, "heartbeat.service", active, sub)
    result, _ = run("release", "1", *ADDRESSES)
    assert result.returncode == 1, result.stderr
    assert "waited 1 s for heartbeat stopping, every floating address given up" in result.stderr
    assert f"heartbeat {active} ({sub}), still carried here: none" in result.stderr


def test_release_fails_at_once_when_systemd_does_not_take_the_stop(run):
    _heartbeat_holding(run)
    (run.dir / "stop-refused").touch()
    result, _ = run("release", "5", *ADDRESSES)
    assert result.returncode == 1
    assert "could not ask systemd to stop heartbeat (heartbeat active (running)): nothing released" in result.stderr
    assert "waited" not in result.stderr


def test_release_fails_when_systemd_does_not_answer_a_disable(run):
    """A change asked of systemd is bounded too (LVSHA_SYSTEMD_TIMEOUT): a `systemctl disable`
    that hangs fails the step, naming it, and nothing is stopped."""
    _heartbeat_holding(run)
    (run.dir / "disable-hangs").write_text("30\n")
    run.env["LVSHA_SYSTEMD_TIMEOUT"] = "1"
    result, calls = run("release", "60", *ADDRESSES)
    assert result.returncode == 1, result.stderr
    assert "could not disable heartbeat" in result.stderr  # without the bound: disabled after 30 s, and on
    assert not [c for c in calls if c.startswith("systemctl stop")]


def test_stopped_waits_until_heartbeats_stop_has_ended(run):
    _heartbeat_holding(run)
    (run.dir / "stop-tail").write_text("3\n")
    assert run("release", "5", *ADDRESSES)[0].returncode == 0
    assert (run.dir / "stopping-heartbeat").exists()
    result, calls = run("stopped", "5", *ADDRESSES)
    assert result.returncode == 0, result.stderr
    assert calls == [] and not (run.dir / "stopping-heartbeat").exists()
    assert "heartbeat stopped (its stop ended), no floating address here after" in result.stderr


def test_stopped_fails_naming_heartbeats_state_when_its_stop_does_not_end(run):
    _heartbeat_holding(run)
    assert run("release", "5", *ADDRESSES)[0].returncode == 0
    result, _ = run("stopped", "1", *ADDRESSES)
    assert result.returncode == 1
    assert "waited 1 s for heartbeat stopped (its stop ended), no floating address here" in result.stderr
    assert ("heartbeat's stop here has not ended: heartbeat deactivating (stop-sigterm), carries: none "
            "(journalctl -u heartbeat)") in result.stderr


def test_stopped_fails_naming_the_addresses_still_carried_while_the_stop_goes_on(run):
    _heartbeat_holding(run)
    assert run("release", "5", *ADDRESSES)[0].returncode == 0
    run.carry(ADDRESSES[1])  # taken again
    result, _ = run("stopped", "1", *ADDRESSES)
    assert result.returncode == 1
    assert (f"heartbeat's stop here has not ended: heartbeat deactivating (stop-sigterm), carries: {CIDRS[1]} "
            "(journalctl -u heartbeat)") in result.stderr


@pytest.mark.parametrize("step", ["release", "stopped"])
def test_a_hung_systemctl_does_not_hold_a_step_its_state_is_unknown(run, step):
    """systemctl show heartbeat.service hangs: each read is ended after LVSHA_READ_TIMEOUT s
    and heartbeat's state is unknown, neither stopping nor stopped; the step fails at its
    limit, saying so."""
    _heartbeat_holding(run)
    if step == "stopped":
        assert run("release", "5", *ADDRESSES)[0].returncode == 0
    (run.dir / "show-hangs").touch()
    run.env["LVSHA_READ_TIMEOUT"] = "0.5"  # timeout(1) takes fractions
    result, _ = run(step, "1", *ADDRESSES)
    assert result.returncode == 1, result.stderr
    if step == "release":
        assert "waited 1 s for heartbeat stopping, every floating address given up" in result.stderr
        assert "heartbeat unknown (unknown), still carried here: none" in result.stderr
    else:
        assert "waited 1 s for heartbeat stopped (its stop ended), no floating address here" in result.stderr
        assert ("heartbeat's stop here has not ended: heartbeat unknown (unknown), carries: none "
                "(journalctl -u heartbeat)") in result.stderr


def test_stopped_fails_naming_an_address_left_after_the_stop(run):
    run.carry(ADDRESSES[1])
    result, _ = run("stopped", "1", *ADDRESSES)
    assert result.returncode == 1
    assert f"heartbeat's stop here has ended (heartbeat inactive (dead)), but this node carries: {CIDRS[1]}" \
        in result.stderr


@pytest.mark.parametrize("active, sub", BETWEEN_RESTARTS)
def test_stopped_waits_while_a_restart_of_heartbeat_is_pending(run, active, sub):
    """heartbeat inactive or failed with a restart pending (systemd 254 and later) has not
    stopped: the step waits, then fails saying systemd is to restart it; once the restart is
    given up (SubState dead or failed) the stop has ended."""
    _between_restarts(run, "heartbeat.service", active, sub)
    result, _ = run("stopped", "1", *ADDRESSES)
    assert result.returncode == 1, result.stderr
    assert "waited 1 s for heartbeat stopped (its stop ended), no floating address here" in result.stderr
    assert (f"heartbeat here is not off, systemd is to restart it: heartbeat {active} ({sub}), carries: none "
            "(journalctl -u heartbeat)") in result.stderr
    (run.dir / "sub-heartbeat.service").unlink()
    result, _ = run("stopped", "5", *ADDRESSES)
    assert result.returncode == 0, result.stderr


def test_take_over_clears_the_hold_and_waits_for_every_address(run):
    run.hold.parent.mkdir()
    run.hold.write_text("1\n")
    # keepalived (here: the test) adds the addresses once the hold is cleared
    watcher = subprocess.Popen(["sh", "-c", f'while grep -qx 1 "{run.hold}"; do sleep 0.05; done; '
                                            f'echo " inet 192.168.0.254/24 " > "{run.dir}/addr-eth1"; '
                                            f'echo " inet 10.0.0.10/24 " > "{run.dir}/addr-eth0"'])
    result, _ = run("take-over", "10", *ADDRESSES)
    watcher.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    assert run.hold_value() == "0"
    assert "no floating address answers ARP: hold cleared" in result.stderr
    assert "keepalived carries every floating address after" in result.stderr


def test_take_over_leaves_the_hold_while_a_floating_address_answers_arp(run):
    """The held node carries none: an address that answers is held elsewhere (its peer's
    heartbeat did not give it up, or took it again): the hold stays, naming it."""
    run.hold.parent.mkdir()
    run.hold.write_text("1\n")
    run.answers("10.0.0.10")
    result, _ = run("take-over", "5", *ADDRESSES)
    assert result.returncode == 1
    assert run.hold_value() == "1"
    assert "the hold stays: 10.0.0.10 still answered ARP" in result.stderr


def test_take_over_fails_when_keepalived_does_not_take_everything(run):
    run.carry(ADDRESSES[0])
    (run.dir / "vrrp-state").write_text("FAULT\n")
    result, _ = run("take-over", "1", *ADDRESSES)
    assert result.returncode == 1
    assert "keepalived carries 1 of 2 floating addresses (VRRP FAULT)" in result.stderr


def test_arm_starts_the_watch_as_a_transient_unit_replacing_an_earlier_one(run):
    result, calls = run("arm", "90", "10", PORT, *ADDRESSES)
    assert result.returncode == 0, result.stderr
    assert calls == ["systemctl stop lvsha-migrate-watch.service", "systemctl reset-failed lvsha-migrate-watch.service",
                     f"systemd-run --unit=lvsha-migrate-watch --collect --quiet {PROGRAM} watch 90 10 {PORT} "
                     + " ".join(ADDRESSES)]


def test_arm_fails_when_systemd_run_does_not_return_within_the_bound(run):
    """The watch's start is a change asked of systemd, bounded as the others are
    (LVSHA_SYSTEMD_TIMEOUT): a systemd-run that hangs fails the step within the bound,
    naming what it waited for, instead of holding the handover."""
    (run.dir / "run-hangs").write_text("30\n")
    run.env["LVSHA_SYSTEMD_TIMEOUT"] = "1"
    began = time.monotonic()
    result, calls = run("arm", "90", "10", PORT, *ADDRESSES)
    took = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    assert took < 10, f"arm took {took:.1f} s with a bound of 1 s"  # without the bound: 30 s, then armed
    assert calls[-1].startswith("systemd-run --unit=lvsha-migrate-watch ")
    assert "waited 1 s for systemd to start the watch (lvsha-migrate-watch): no answer" in result.stderr
    assert "armed" not in result.stderr


def _held(run):
    run.hold.parent.mkdir()
    run.hold.write_text("1\n")


def test_the_watch_clears_the_hold_once_nothing_answers_and_the_peers_heartbeat_is_silent_for_deadtime(run):
    _held(run)
    result, _ = run("watch", "20", "1", PORT, *ADDRESSES)  # nothing answers ARP, the count stays
    assert result.returncode == 0, result.stderr
    assert run.hold_value() == "0" and "hold cleared" in result.stderr


def test_the_watch_leaves_the_hold_while_the_gateway_answers(run):
    _held(run)
    run.answers(GATEWAY)
    result, _ = run("watch", "2", "1", PORT, *ADDRESSES)
    assert result.returncode == 1
    assert run.hold_value() == "1" and "the hold stays" in result.stderr
    assert f"{GATEWAY} still answered on eth1" in result.stderr


def test_the_watch_leaves_the_hold_while_the_peers_heartbeat_is_heard(run):
    """The gateway silent (a transient ARP miss, or heartbeat restarting on the peer, which
    takes the group again): packets from the peer's heartbeat within deadtime keep the hold."""
    _held(run)
    (run.dir / "peer-alive").touch()
    result, _ = run("watch", "2", "1", PORT, *ADDRESSES)  # past deadtime: packets ignored would clear the hold
    assert result.returncode == 1
    assert run.hold_value() == "1"
    assert "the hold stays" in result.stderr and "a heartbeat packet from the peer" in result.stderr


def test_the_watch_never_takes_no_count_for_silence(run):
    _held(run)
    (run.dir / "no-heartbeat-rule").touch()
    result, _ = run("watch", "2", "1", PORT, *ADDRESSES)  # past deadtime: no count taken for silence would clear it
    assert result.returncode == 1
    assert run.hold_value() == "1" and f"no count of the peer's heartbeat packets to read (no firewall rule " \
                                      f"accepting UDP {PORT})" in result.stderr


def test_the_watch_leaves_the_hold_while_any_floating_address_answers(run):
    """A release that failed half-way: the gateway gone from the peer, a VIP still there."""
    _held(run)
    run.answers("10.0.0.10")
    result, _ = run("watch", "3", "1", PORT, *ADDRESSES)  # 2 s past deadtime, probing every address
    assert result.returncode == 1
    assert run.hold_value() == "1" and "10.0.0.10 still answered" in result.stderr


def test_joined_waits_for_backup_without_addresses(run):
    (run.dir / "active").touch()
    (run.dir / "vrrp-state").write_text("BACKUP\n")
    assert run("joined", "5", *ADDRESSES)[0].returncode == 0
    (run.dir / "vrrp-state").write_text("MASTER\n")
    run.carry(*ADDRESSES)
    result, _ = run("joined", "1", *ADDRESSES)
    assert result.returncode == 1 and "VRRP MASTER, carries: 192.168.0.254/24 10.0.0.10/24" in result.stderr


def _cidrs(specs: list[str]) -> list[str]:
    """ADDRESS/PREFIX of each ADDRESS/PREFIX/INTERFACE argument."""
    return [spec.rsplit("/", 1)[0] for spec in specs]


def test_master_holds_only_for_a_steady_master_carrying_everything(run):
    """After the reload to the model's file: MASTER with every address, checked three times;
    a node that dropped to BACKUP, or lacks an address, fails naming what it saw."""
    (run.dir / "active").touch()
    (run.dir / "vrrp-state").write_text("MASTER\n")
    run.carry(*ADDRESSES)
    assert run("master", "5", *ADDRESSES)[0].returncode == 0
    (run.dir / "vrrp-state").write_text("BACKUP\n")
    result, _ = run("master", "1", *ADDRESSES)
    assert result.returncode == 1 and f"VRRP BACKUP, carries: {' '.join(_cidrs(ADDRESSES))}" in result.stderr
    (run.dir / "vrrp-state").write_text("MASTER\n")
    for carried in run.dir.glob("addr-*"):
        carried.unlink()
    run.carry(ADDRESSES[0])
    result, _ = run("master", "1", *ADDRESSES)
    assert result.returncode == 1 and f"VRRP MASTER, carries: {_cidrs(ADDRESSES[:1])[0]}" in result.stderr


@pytest.mark.parametrize("args", [[], ["held"], ["held", "soon"], ["stopped", "soon"], ["arm", "5", "10", PORT],
                                  ["watch", "5", "ten", PORT, ADDRESSES[0]], ["nothing"]])
def test_bad_arguments_are_refused(run, args):
    result, calls = run(*args)
    assert result.returncode == 2 and "usage" in result.stderr and calls == []


# ---- keepalived -> heartbeat ----------------------------------------------------

def test_carries_passes_when_every_address_is_here_and_fails_naming_how_many(run):
    run.carry(*ADDRESSES)
    assert run("carries", "5", *ADDRESSES)[0].returncode == 0
    (run.dir / "addr-eth0").unlink()
    result, _ = run("carries", "1", *ADDRESSES)
    assert result.returncode == 1 and "this node carries 1 of 2 floating addresses" in result.stderr


# what `off` waits for: both engines off by the one rule (ActiveState inactive or failed, SubState dead or failed)
OFF = "keepalived and heartbeat off here (neither active nor to restart), no floating address here"


@pytest.mark.parametrize("busy", ["keepalived", "heartbeat", "an address"])
def test_off_waits_for_neither_engine_and_no_address(run, busy):
    assert run("off", "5", *ADDRESSES)[0].returncode == 0
    if busy == "keepalived":
        (run.dir / "active").touch()
    elif busy == "heartbeat":
        (run.dir / "active-heartbeat").touch()
    else:
        run.carry(ADDRESSES[0])
    result, _ = run("off", "1", *ADDRESSES)
    assert result.returncode == 1 and f"waited 1 s for {OFF}" in result.stderr
    if busy == "an address":
        assert "carries: 192.168.0.254/24" in result.stderr


@pytest.mark.parametrize("unit, word", [("keepalived.service", "activating"), ("heartbeat.service", "deactivating")])
def test_off_takes_a_restart_pending_or_a_stop_running_for_not_off(run, unit, word):
    """keepalived between a crash and its restart (Restart=always: activating) or heartbeat
    whose stop still runs (deactivating) is not "off", whatever else `is-active` says."""
    (run.dir / f"word-{unit}").write_text(f"{word}\n")
    result, _ = run("off", "1", *ADDRESSES)
    assert result.returncode == 1 and f"waited 1 s for {OFF}" in result.stderr
    assert word in result.stderr
    (run.dir / f"word-{unit}").write_text("failed\n")
    assert run("off", "5", *ADDRESSES)[0].returncode == 0


def _systemd_does_not_answer(run):
    """Each read of a unit's state (`systemctl is-active`, `systemctl show` of its ActiveState and
    SubState) hangs longer than the program's bound on a read (LVSHA_READ_TIMEOUT, 0.5 s here:
    timeout(1) takes fractions), then fails without a word, as systemctl does past D-Bus's own
    time limit."""
    (run.dir / "is-active-hangs").write_text("3\n")
    (run.dir / "state-hangs").write_text("3\n")
    run.env["LVSHA_READ_TIMEOUT"] = "0.5"


def test_off_never_takes_a_systemd_that_does_not_answer_for_engines_off(run):
    """Neither engine runs and nothing is carried, but systemd cannot tell: each read of an
    engine's state is cut at LVSHA_READ_TIMEOUT and counts as "cannot tell", not as off; the
    wait goes on to its limit and fails naming what it waited for."""
    _systemd_does_not_answer(run)
    result, calls = run("off", "1", *ADDRESSES)
    assert result.returncode == 1, result.stderr
    assert f"waited 1 s for {OFF}" in result.stderr
    assert "not ready: keepalived unknown, heartbeat unknown, carries: " in result.stderr
    assert calls == []


def test_off_waits_through_reads_without_an_answer(run):
    """"cannot tell" is "not yet": once systemd answers again (neither engine active), the wait
    that went on through the reads without an answer ends."""
    _systemd_does_not_answer(run)
    answers_again = subprocess.Popen(["sh", "-c", f'sleep 1; rm -f "{run.dir}/is-active-hangs" "{run.dir}/state-hangs"'])
    result, _ = run("off", "30", *ADDRESSES)
    answers_again.wait()
    assert result.returncode == 0, result.stderr
    assert f"{OFF} after" in result.stderr


@pytest.mark.parametrize("unit", ["keepalived.service", "heartbeat.service"])
@pytest.mark.parametrize("active, sub", BETWEEN_RESTARTS)
def test_off_takes_an_engine_between_two_restarts_for_not_off(run, unit, active, sub):
    """An engine between two attempts of its Restart= on systemd 254 and later (inactive or
    failed, a restart pending) is about to run again: not off. The wait fails naming its
    SubState; once the restart is given up (SubState dead or failed) it is off."""
    _between_restarts(run, unit, active, sub)
    result, _ = run("off", "1", *ADDRESSES)
    assert result.returncode == 1, result.stderr
    assert f"waited 1 s for {OFF}" in result.stderr
    assert f"{unit.removesuffix('.service')} {active} ({sub})" in result.stderr
    (run.dir / f"sub-{unit}").unlink()
    result, _ = run("off", "5", *ADDRESSES)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("step", ["off", "retire"])
def test_a_show_of_a_units_state_without_an_answer_is_cannot_tell_not_off(run, step):
    """`systemctl is-active` answers "inactive", but the read of ActiveState and SubState (which
    says off) hangs: cut at LVSHA_READ_TIMEOUT, it is "cannot tell", never off. `off` waits to
    its limit and fails; `retire` does not take keepalived for ended, and the hold stays."""
    (run.dir / "state-hangs").write_text("3\n")
    run.env["LVSHA_READ_TIMEOUT"] = "0.5"  # timeout(1) takes fractions
    if step == "off":
        result, _ = run("off", "1", *ADDRESSES)
        assert result.returncode == 1, result.stderr
        assert f"waited 1 s for {OFF}" in result.stderr
        assert "not ready: keepalived unknown, heartbeat unknown, carries: " in result.stderr
    else:
        run.carry(*ADDRESSES)
        run.hold.parent.mkdir()
        run.hold.write_text("1\n")
        result, _ = run("retire", "1", *ADDRESSES)
        assert result.returncode == 1, result.stderr
        assert "keepalived.service not ended: processes none, systemd says unknown" in result.stderr
        assert run.hold_value() == "1"
        assert not (run.dir / "runtime" / DROPIN).exists()


def test_adopt_starts_nothing_when_systemd_cannot_tell_whether_heartbeat_runs(run):
    """A heartbeat that may run already is not started again beside keepalived on a guess: the
    step fails before it changes anything, naming what it could not read."""
    run.carry(*ADDRESSES)
    (run.dir / "active").touch()
    _systemd_does_not_answer(run)
    result, calls = run("adopt", "30", *ADDRESSES)
    assert result.returncode == 1, result.stderr
    assert calls == []
    assert "systemd cannot tell whether heartbeat runs here (systemctl is-active heartbeat.service: no answer " \
           "within 0.5 s): nothing changed" in result.stderr


def test_adopt_starts_heartbeat_keeping_the_addresses_keepalived_carries(run):
    run.carry(*ADDRESSES)
    (run.dir / "active").touch()
    result, calls = run("adopt", "30", *ADDRESSES)
    assert result.returncode == 0, result.stderr
    # keepalived disabled and heartbeat enabled before it starts: a reboot from then on starts heartbeat alone
    assert calls == ["systemctl disable --quiet keepalived.service", "systemctl enable --quiet heartbeat.service",
                     "guard adopt 30", "systemctl start heartbeat.service"]
    assert "every floating address kept" in result.stderr


def test_adopt_fails_when_the_guard_released_the_addresses(run):
    run.carry(*ADDRESSES)
    (run.dir / "released").touch()
    result, _ = run("adopt", "30", *ADDRESSES)
    assert result.returncode == 1
    assert "carries 0 of 2 floating addresses: its guard released them" in result.stderr


def test_adopt_starts_nothing_on_a_node_not_carrying_every_address(run):
    run.carry(ADDRESSES[0])
    result, calls = run("adopt", "30", *ADDRESSES)
    assert result.returncode == 1 and calls == []
    assert "carries 1 of 2 floating addresses: nothing to keep, heartbeat not started" in result.stderr


def test_adopt_leaves_a_running_heartbeat_as_it_is(run):
    (run.dir / "active-heartbeat").touch()
    result, calls = run("adopt", "30", *ADDRESSES)
    assert result.returncode == 0, result.stderr
    assert calls == ["systemctl disable --quiet keepalived.service", "systemctl enable --quiet heartbeat.service"]


# heartbeat's `cl_status rscstatus` on a node, and whether it holds the group by it (haresources'
# one group, owned by OWNER): "local" is the group on its owner only, an empty set on the other
# node; "foreign" the group on the other node only.
HOLDS = [(OWNER, "all", True), (OWNER, "local", True), (OWNER, "foreign", False), (OWNER, "none", False),
         (OWNER, "transition", False), (OTHER, "all", True), (OTHER, "local", False), (OTHER, "foreign", True),
         (OTHER, "none", False), (OTHER, "transition", False)]


@pytest.mark.parametrize("node, resources, holds", HOLDS)
def test_adopted_waits_until_heartbeat_holds_the_group_and_every_address(run, node, resources, holds):
    run.carry(*ADDRESSES)
    (run.dir / "rscstatus").write_text(f"{resources}\n")
    result, _ = run.on(node)("adopted", "1", OWNER, *ADDRESSES)
    assert result.returncode == (0 if holds else 1), result.stderr
    if not holds:
        assert f"heartbeat's resources: {resources} ({node}; the group's owner: {OWNER}), this node carries 2 of 2 " \
               "floating addresses" in result.stderr


def test_adopted_fails_while_an_address_is_missing(run):
    run.carry(ADDRESSES[0])
    (run.dir / "rscstatus").write_text("all\n")
    result, _ = run.on(OWNER)("adopted", "1", OWNER, *ADDRESSES)
    assert result.returncode == 1 and "this node carries 1 of 2 floating addresses" in result.stderr


@pytest.fixture
def keepalived_processes(run):
    """keepalived.service's processes (here: sleeps) and its cgroup, as the fake systemctl names it."""
    children = [subprocess.Popen(["sleep", "300"]) for _ in range(3)]
    (run.dir / "pids").write_text("".join(f"{c.pid}\n" for c in children))
    procs = run.dir / "cgroup" / "system.slice" / "keepalived.service" / "cgroup.procs"
    procs.parent.mkdir(parents=True)
    procs.write_text("".join(f"{c.pid}\n" for c in children))
    (run.dir / "active").touch()
    yield children
    for child in children:
        child.kill()
        child.wait()


def test_retire_kills_every_process_of_keepalived_leaving_the_addresses(run, keepalived_processes):
    run.carry(*ADDRESSES)
    run.hold.parent.mkdir()
    run.hold.write_text("1\n")
    (run.dir / "vrrp-failover").write_text("1\n")
    (run.dir / "vrrp-state").write_text("MASTER\n")
    result, calls = run("retire", "10", *ADDRESSES)
    assert result.returncode == 0, result.stderr
    # SIGKILL (the fake takes a zombie for ended), never a signal keepalived would shut down on;
    # every process frozen first, the main process (systemd's MainPID, here the first) killed last
    assert [child.wait(timeout=5) for child in keepalived_processes] == [-9, -9, -9]
    assert "MainPID keepalived.service" in (run.dir / "reads").read_text()
    main, *others = [str(child.pid) for child in keepalived_processes]
    assert _kills(run) == [f"-STOP {main} {' '.join(others)}", *(f"-KILL {pid}" for pid in others), f"-KILL {main}"]
    # told not to restart it first, the drop-in gone after; nothing started or stopped by systemd
    assert calls == ["systemctl disable --quiet keepalived.service", "systemctl daemon-reload",
                     "systemctl reset-failed keepalived.service", "systemctl daemon-reload"]
    assert not (run.dir / "runtime" / DROPIN).exists()
    assert all(a.split("/")[0] in (run.dir / f"addr-{a.split('/')[2]}").read_text() for a in ADDRESSES)
    assert run.hold_value() == "0" and (run.dir / "vrrp-failover").read_text().strip() == "0"
    assert not (run.dir / "vrrp-state").exists()
    assert "every floating address left in place for heartbeat" in result.stderr


def _kills(run):
    kills = run.dir / "kills"
    return kills.read_text().splitlines() if kills.exists() else []


@pytest.mark.parametrize("when", ["between SIGSTOP and SIGKILL", "waiting for keepalived to end"])
def test_retire_finishes_what_it_began_on_a_signal(run, keepalived_processes, when):
    """SIGHUP (the deploy's connection lost) while retire ends keepalived: no keepalived is left
    frozen (a later stop would wake it into the shutdown that removes the addresses), the
    kill rounds run to the end, main process last, and are waited for; the drop-in telling
    systemd not to restart keepalived is removed after; the step fails."""
    run.carry(*ADDRESSES)
    if when == "between SIGSTOP and SIGKILL":
        (run.dir / "hup-on-stop").touch()
    else:
        (run.dir / "lingers").write_text("5\n")
        (run.dir / "hup-on-linger").touch()
    result, calls = run("retire", "10", *ADDRESSES)
    assert result.returncode == 129, result.stderr
    assert "SIGHUP while ending keepalived: finishing what was begun" in result.stderr
    assert not (run.dir / "hup-on-stop").exists() and not (run.dir / "hup-on-linger").exists()  # the signal was sent
    assert [child.wait(timeout=5) for child in keepalived_processes] == [-9, -9, -9]
    main, *others = [str(child.pid) for child in keepalived_processes]
    kills = _kills(run)
    assert kills[-1] == f"-KILL {main}" and sorted(kills[-3:-1]) == sorted(f"-KILL {pid}" for pid in others)
    if when == "between SIGSTOP and SIGKILL":  # the first round stopped them only: the trap's killed them
        assert kills == [f"-STOP {main} {' '.join(others)}"] * 2 + kills[-3:]
    assert "every process of keepalived ended" in result.stderr
    assert calls == ["systemctl disable --quiet keepalived.service", "systemctl daemon-reload",
                     "systemctl reset-failed keepalived.service", "systemctl daemon-reload"]
    assert not (run.dir / "runtime" / DROPIN).exists()
    assert "every floating address left in place" not in result.stderr


def test_retire_carries_on_when_its_output_is_gone(run, keepalived_processes):
    """The deploy's connection lost without a SIGHUP: what retire writes gets SIGPIPE. It
    finishes all the same: keepalived killed, the drop-in removed, the hold cleared."""
    run.carry(*ADDRESSES)
    run.hold.parent.mkdir()
    run.hold.write_text("1\n")
    retire = subprocess.Popen([PROGRAM, "retire", "10", *ADDRESSES], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**run.env, "LVSHA_NODE": OTHER})
    retire.stdout.close()
    retire.stderr.close()  # nobody reads: the first message is SIGPIPE
    assert retire.wait(timeout=60) == 0
    assert [child.wait(timeout=5) for child in keepalived_processes] == [-9, -9, -9]
    assert not (run.dir / "runtime" / DROPIN).exists() and run.hold_value() == "0"
    assert "keepalived ended, every floating address left in place for heartbeat" in (run.dir / "logged").read_text()


def test_retire_leaves_keepalived_running_when_systemd_would_restart_it(run, keepalived_processes):
    run.carry(*ADDRESSES)
    (run.dir / "restart-stays").touch()
    result, calls = run("retire", "5", *ADDRESSES)
    assert result.returncode == 1
    assert "systemd would still restart keepalived (Restart=always): keepalived left running" in result.stderr
    assert all(child.poll() is None for child in keepalived_processes) and _kills(run) == []
    assert not (run.dir / "runtime" / DROPIN).exists()
    assert calls[-1] == "systemctl daemon-reload"


def test_retire_never_takes_a_systemd_that_does_not_answer_for_keepalived_ended(run):
    """keepalived.service has no process left to read, but systemd cannot tell whether it is
    active: not taken for ended. The wait for its end goes on to the limit and fails naming
    keepalived's state; the hold and the failover request stay, systemd's Restart= is given back."""
    run.carry(*ADDRESSES)
    run.hold.parent.mkdir()
    run.hold.write_text("1\n")
    (run.dir / "active").touch()
    _systemd_does_not_answer(run)
    result, _ = run("retire", "1", *ADDRESSES)
    assert result.returncode == 1, result.stderr
    assert "waited 1 s for every process of keepalived ended, the addresses left in place" in result.stderr
    assert "keepalived.service not ended: processes none, systemd says unknown" in result.stderr
    assert run.hold_value() == "1"
    assert not (run.dir / "runtime" / DROPIN).exists()


@pytest.mark.parametrize("active, sub", BETWEEN_RESTARTS)
def test_retire_never_takes_keepalived_between_two_restarts_for_ended(run, active, sub):
    """keepalived has no process left, but systemd is to start it again (systemd 254 and later:
    inactive or failed, a restart pending): not ended. The wait for its end fails naming its
    SubState; the hold and failover request stay, systemd's Restart= is given back."""
    run.carry(*ADDRESSES)
    run.hold.parent.mkdir()
    run.hold.write_text("1\n")
    _between_restarts(run, "keepalived.service", active, sub)
    result, _ = run("retire", "1", *ADDRESSES)
    assert result.returncode == 1, result.stderr
    assert "waited 1 s for every process of keepalived ended, the addresses left in place" in result.stderr
    assert f"keepalived.service not ended: processes none, systemd says {active} ({sub})" in result.stderr
    assert run.hold_value() == "1"
    assert not (run.dir / "runtime" / DROPIN).exists()


def test_retire_adds_back_an_address_found_missing(run):
    run.carry(ADDRESSES[0])  # keepalived not running: nothing to end
    result, calls = run("retire", "5", *ADDRESSES)
    assert result.returncode == 0, result.stderr
    assert calls == ["systemctl disable --quiet keepalived.service", f"floating-ips {' '.join(ADDRESSES)} start"]
    assert "some floating addresses were missing: added again" in result.stderr


def _peer_of(node):
    return OTHER if node == OWNER else OWNER


@pytest.mark.parametrize("node, resources, holds", HOLDS)
def test_join_as_standby_waits_until_the_group_is_the_peers_by_heartbeats_word(run, node, resources, holds):
    """Standby: this node hears its peer, its resource status is settled and leaves the group
    to the peer, and it carries no address. After heartbeat's failback (auto_failback on) both
    nodes answer "local": the node that is not the owner is then standby; the owner's standby
    (auto_failback off) answers "none"."""
    peer = _peer_of(node)
    (run.dir / "peer").write_text("active\n")
    (run.dir / "rscstatus").write_text(f"{resources}\n")
    result, calls = run.on(node)("join", "1", peer, OWNER, "standby", *ADDRESSES)
    assert calls == ["systemctl enable --quiet heartbeat.service", "systemctl start heartbeat.service"]
    standby = not holds and resources != "transition"
    assert result.returncode == (0 if standby else 1), result.stderr
    if standby:
        assert f"heartbeat hears {peer} and has settled standby: the group {peer}'s, no floating address here" \
               in result.stderr
    else:
        assert f"{peer} active, resources {resources} ({node}; the group's owner: {OWNER}), carries: " in result.stderr


def test_join_after_a_failback_both_nodes_answering_local_is_standby_on_the_node_that_is_not_the_owner(run):
    """The way back's common case: the group on the model's master (the node swapped under
    the addresses) with auto_failback on, the other node joining: it takes its own, empty,
    resource set and answers "local", as the master does."""
    (run.dir / "peer").write_text("active\n")
    (run.dir / "rscstatus").write_text("local\n")
    result, _ = run.on(OTHER)("join", "5", OWNER, OWNER, "standby", *ADDRESSES)
    assert result.returncode == 0, result.stderr
    run.carry(ADDRESSES[1])  # an address here after all: not standby
    result, _ = run.on(OTHER)("join", "1", OWNER, OWNER, "standby", *ADDRESSES)
    assert result.returncode == 1 and "carries: 10.0.0.10/24" in result.stderr


@pytest.mark.parametrize("node, resources, holds", HOLDS)
def test_join_to_carry_waits_until_heartbeat_holds_the_group_and_every_address(run, node, resources, holds):
    (run.dir / "peer").write_text("active\n")
    (run.dir / "rscstatus").write_text(f"{resources}\n")
    run.carry(*ADDRESSES)
    result, _ = run.on(node)("join", "1", _peer_of(node), OWNER, "carry", *ADDRESSES)
    assert result.returncode == (0 if holds else 1), result.stderr
    if holds:
        assert "has settled holding the group and every floating address" in result.stderr


def test_join_fails_naming_what_it_saw(run):
    (run.dir / "peer").write_text("dead\n")
    (run.dir / "rscstatus").write_text("all\n")
    run.carry(*ADDRESSES)
    result, _ = run.on(OTHER)("join", "1", OWNER, OWNER, "standby", *ADDRESSES)
    assert result.returncode == 1
    assert f"{OWNER} dead, resources all ({OTHER}; the group's owner: {OWNER}), carries: 192.168.0.254/24 " \
           "10.0.0.10/24" in result.stderr


@pytest.mark.parametrize("args", [["adopt"], ["retire", "x"], ["adopted", "5", OWNER],
                                  ["join", "5", "balancer1", OWNER, "maybe", ADDRESSES[0]],
                                  ["join", "5", "balancer1", "standby", ADDRESSES[0]],
                                  ["join", "5", "balancer1", OWNER, "standby"], ["off", "soon"]])
def test_bad_arguments_of_the_way_back_are_refused(run, args):
    result, calls = run(*args)
    assert result.returncode == 2 and "usage" in result.stderr and calls == []
