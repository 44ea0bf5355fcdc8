"""files/keepalived/lvsha-migrate, run for real against fakes of what it calls (systemctl,
ip, ping, iptables-save, systemd-run and lvsha-keepalived's hold): each step of the
migration on one balancer waits, bounded, for what it says, and fails naming what is left."""

import subprocess
from pathlib import Path

import pytest

from lvsha import render
from tests.unit.fakes import fake_programs

PROGRAM = str(render.FILES / "keepalived" / Path(render.MIGRATE_SCRIPT).name)
KEEPALIVED_PROGRAM = str(render.FILES / "keepalived" / Path(render.KEEPALIVED_PROGRAM).name)
ADDRESSES = ["192.168.0.254/24/eth1", "10.0.0.10/24/eth0"]
GATEWAY = "192.168.0.254"
PORT = str(render.HEARTBEAT_UDP_PORT)


@pytest.fixture
def run(tmp_path):
    fake_programs(tmp_path, {
        # systemctl: calls recorded; `is-active` answers from $FAKE/active; `stop heartbeat`
        # removes the addresses (the guard's release) unless $FAKE/stuck exists
        "systemctl": 'echo "systemctl $*" >> "$FAKE/calls"; case "$1" in is-active) [ -f "$FAKE/active" ] ;; '
                     'stop) [ "$2" = heartbeat.service ] && [ ! -f "$FAKE/stuck" ] && rm -f "$FAKE"/addr-*; true ;; '
                     '*) true ;; esac',
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
        "systemd-run": 'echo "systemd-run $*" >> "$FAKE/calls"',
        "logger": 'shift 3; echo "$*" >> "$FAKE/logged"',
    })
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKE": str(tmp_path), "LVSHA_SYSTEMCTL": str(tmp_path / "systemctl"),
           "LVSHA_SYSTEMD_RUN": str(tmp_path / "systemd-run"), "LVSHA_IP": str(tmp_path / "ip"),
           "LVSHA_PING": str(tmp_path / "ping"), "LVSHA_IPTABLES_SAVE": str(tmp_path / "iptables-save"),
           "LVSHA_KEEPALIVED_PROGRAM": KEEPALIVED_PROGRAM,
           "LVSHA_HOLD_FILE": str(tmp_path / "lib" / "vrrp-hold"), "LVSHA_VRRP_STATE": str(tmp_path / "vrrp-state"),
           "LVSHA_POLL": "0.05"}

    def run(*args):
        result = subprocess.run([PROGRAM, *args], capture_output=True, text=True, env=env, timeout=60)
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


def test_release_disables_and_stops_heartbeat_and_waits_until_nothing_is_left(run):
    run.carry(*ADDRESSES)
    result, calls = run("release", "5", *ADDRESSES)
    assert result.returncode == 0, result.stderr
    assert calls == ["systemctl disable --quiet heartbeat.service", "systemctl stop heartbeat.service"]
    assert "every floating address given up after" in result.stderr


def test_release_fails_naming_the_addresses_still_carried(run):
    run.carry(*ADDRESSES)
    (run.dir / "stuck").touch()
    result, _ = run("release", "1", *ADDRESSES)
    assert result.returncode == 1
    assert "still carried here: 192.168.0.254/24 10.0.0.10/24" in result.stderr


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
    assert "keepalived carries every floating address after" in result.stderr


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
    result, _ = run("watch", "3", "2", PORT, *ADDRESSES)
    assert result.returncode == 1
    assert run.hold_value() == "1"
    assert "the hold stays" in result.stderr and "a heartbeat packet from the peer" in result.stderr


def test_the_watch_never_takes_no_count_for_silence(run):
    _held(run)
    (run.dir / "no-heartbeat-rule").touch()
    result, _ = run("watch", "3", "1", PORT, *ADDRESSES)
    assert result.returncode == 1
    assert run.hold_value() == "1" and f"no count of the peer's heartbeat packets to read (no firewall rule " \
                                      f"accepting UDP {PORT})" in result.stderr


def test_the_watch_leaves_the_hold_while_any_floating_address_answers(run):
    """A release that failed half-way: the gateway gone from the peer, a VIP still there."""
    _held(run)
    run.answers("10.0.0.10")
    result, _ = run("watch", "6", "1", PORT, *ADDRESSES)
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


@pytest.mark.parametrize("args", [[], ["held"], ["held", "soon"], ["arm", "5", "10", PORT],
                                  ["watch", "5", "ten", PORT, ADDRESSES[0]], ["nothing"]])
def test_bad_arguments_are_refused(run, args):
    result, calls = run(*args)
    assert result.returncode == 2 and "usage" in result.stderr and calls == []
