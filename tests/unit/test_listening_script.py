"""files/lvsha/lvsha-listening, run for real against a fake `ss` (and once against the
real one): the deploy's check, after reloading or restarting nginx, that something
listens on each of a web host's site addresses and ports (render.web_server_listens),
bounded, naming what nothing listens on."""

import shutil
import socket
import subprocess
import time

import pytest

from lvsha import render
from tests.unit.fakes import fake_programs

SCRIPT = str(render.FILES / "lvsha" / "lvsha-listening")


def ss_lines(*local: str) -> str:
    """`ss -Hltn` with a listening socket on each LOCAL address:port."""
    return "".join(f"LISTEN 0      511    {a:<20} {'[::]:*' if a.startswith('[') else '0.0.0.0:*'}\n" for a in local)


@pytest.fixture
def wanted(reference):
    """What the deploy waits for on the first web host: each site address on each of its
    site's real ports."""
    host = reference.web_hosts[0]
    listens = render.web_server_listens(reference, host)
    assert len(listens) == sum(len(site.real_ports) for site in reference.sites) > len(reference.sites)
    return listens


@pytest.fixture
def run(tmp_path):
    shown = tmp_path / "ss-shows"
    fake_programs(tmp_path, {
        "ss": f'echo "ss $*" >> "{tmp_path}/calls"\n'
              f'[ -e "{tmp_path}/ss-fails" ] && {{ echo "Cannot open netlink socket: Permission denied" >&2; exit 1; }}\n'
              f'cat "{shown}"',
        "logger": "exit 0",
    })

    def run(timeout: str, *args: str, shows: tuple[str, ...] = ("",), every: float = 0.0):
        """Run with `shows` listed by ss one after another, `every` seconds apart; ss asked
        0.2 s apart (LVSHA_POLL), not a second."""
        shown.write_text(shows[0])
        started = time.monotonic()
        process = subprocess.Popen([SCRIPT, timeout, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin", "LVSHA_POLL": "0.2"})
        for later in shows[1:]:
            time.sleep(every)
            shown.write_text(later)
        out, err = process.communicate(timeout=60)
        return process.returncode, out + err, time.monotonic() - started

    run.calls = lambda: (tmp_path / "calls").read_text().splitlines()
    run.ss_fails = lambda: (tmp_path / "ss-fails").write_text("")
    return run


def test_every_address_listened_on_passes_at_once(run, wanted):
    rc, said, _ = run("10", *wanted, shows=(ss_lines("127.0.0.1:22", *wanted),))
    assert rc == 0, said
    assert run.calls() == ["ss -Hltn"]
    assert f"something listens on each of TCP {' '.join(wanted)}" in said


def test_it_waits_for_a_reloaded_server_to_bind_the_new_addresses(run, wanted):
    old, new = wanted[:-2], wanted[-2:]  # the last site is the new one
    rc, said, took = run("10", *wanted, shows=(ss_lines(*old), ss_lines(*old, new[0]), ss_lines(*old, *new)),
                         every=0.4)
    assert rc == 0 and took >= 0.8, said  # the last address appeared 0.8 s after the start
    assert len(run.calls()) >= 3, run.calls()


def test_an_address_never_bound_fails_at_the_timeout_naming_it(run, wanted):
    """nginx's reload exits 0 with a new address it cannot bind, its old workers serving
    the old set of sites: the check fails, naming exactly what nothing listens on."""
    old, new = wanted[:-2], wanted[-2:]
    rc, said, took = run("2", *wanted, shows=(ss_lines(*old),))
    assert rc == 1, said
    assert took > 1  # the 2 s timeout, counted in whole seconds
    assert "after 2 s nothing on " in said and f" listens on TCP {' '.join(new)}:" in said
    assert not any(f" {a} " in said or f" {a}:" in said for a in old), said
    assert "/var/log/nginx/error.log" in said
    assert len(run.calls()) >= 2  # asked again until the timeout


def test_a_timeout_of_zero_asks_once(run, wanted):
    rc, said, _ = run("0", *wanted, shows=(ss_lines(*wanted[1:]),))
    assert rc == 1 and f"listens on TCP {wanted[0]}:" in said, said
    assert run.calls() == ["ss -Hltn"]


def test_a_like_address_or_port_is_not_the_one_wanted(run, wanted):
    address, port = wanted[0].rsplit(":", 1)
    lookalikes = (f"{address}0:{port}", f"{address}:{port}0", f"1{address}:{port}", f"{address}:{port[:-1]}")
    rc, said, _ = run("0", wanted[0], shows=(ss_lines(*lookalikes),))
    assert rc == 1 and f"listens on TCP {wanted[0]}:" in said, said


@pytest.mark.parametrize("listener, ok", [
    ("0.0.0.0:{port}", True),   # the IPv4 wildcard accepts connections to every address
    ("*:{port}", True),          # a dual-stack wildcard too
    ("[::]:{port}", False),      # nginx's [::] is IPv6 only
    ("0.0.0.0:1{port}", False),
    ("{address}%eth0:{port}", True),  # bound to a device as well
])
def test_wildcard_listeners(run, wanted, listener, ok):
    address, port = wanted[0].rsplit(":", 1)
    rc, said, _ = run("0", wanted[0], shows=(ss_lines(listener.format(address=address, port=port)),))
    assert rc == (0 if ok else 1), said


@pytest.mark.parametrize("listener, ok", [
    ("{address}:{port}", True),
    ("{address}%eth0:{port}", True),
    ("0.0.0.0:{port}", False),   # a wildcard left on the port (Debian's default site) is not the address's socket
    ("*:{port}", False),
])
def test_exact_only_the_addresss_own_socket_counts(run, wanted, listener, ok):
    address, port = wanted[0].rsplit(":", 1)
    rc, said, _ = run("--exact", "0", wanted[0], shows=(ss_lines(listener.format(address=address, port=port)),))
    assert rc == (0 if ok else 1), said


def test_an_ipv6_address_in_brackets(run):
    rc, said, _ = run("0", "[2001:db8::7]:80", "[2001:db8::8]:443",
                      shows=(ss_lines("[2001:db8::7]:80", "[::]:443", "0.0.0.0:80"),))
    assert rc == 0, said
    rc, said, _ = run("0", "[2001:db8::7]:80", shows=(ss_lines("0.0.0.0:80"),))
    assert rc == 1 and "listens on TCP [2001:db8::7]:80:" in said, said


def test_lines_other_than_listening_sockets_are_ignored(run, wanted):
    shown = "".join(f"ESTAB 0 0 {a} 10.0.0.9:40000\n" for a in wanted) + "garbage\n\n"
    rc, said, _ = run("0", *wanted, shows=(shown,))
    assert rc == 1 and f"listens on TCP {' '.join(wanted)}:" in said, said


def test_ss_failing_is_named_in_the_failure(run, wanted):
    run.ss_fails()
    rc, said, _ = run("1", *wanted, shows=(ss_lines(*wanted),))
    assert rc == 1, said
    assert "ss -Hltn failed (exit 1): Cannot open netlink socket: Permission denied" in said
    assert f"listens on TCP {' '.join(wanted)}" in said


@pytest.mark.parametrize("args, why", [
    ((), ""),
    (("10",), ""),
    (("ten", "192.168.0.4:80"), "TIMEOUT: whole seconds, not 'ten'"),
    (("-1", "192.168.0.4:80"), "TIMEOUT: whole seconds, not '-1'"),
    (("10", "192.168.0.4"), "not ADDRESS:PORT: '192.168.0.4'"),
    (("10", "192.168.0.4:"), "not ADDRESS:PORT: '192.168.0.4:'"),
    (("10", ":80"), "not ADDRESS:PORT: ':80'"),
    (("10", "192.168.0.4:http"), "not ADDRESS:PORT: '192.168.0.4:http'"),
    (("10", "192.168.0.4:80", "192.168.0.5 :80"), "not ADDRESS:PORT: '192.168.0.5 :80'"),
])
def test_usage(run, args, why):
    result = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result
    assert result.stderr.startswith("usage: lvsha-listening [--exact] TIMEOUT ADDRESS:PORT..."), result
    assert why in result.stderr


@pytest.mark.skipif(shutil.which("ss") is None, reason="no ss (iproute2) here")
def test_against_the_real_ss():
    """The real `ss -Hltn`'s lines: a socket listening on 127.0.0.1:PORT is found;
    once it is closed, nothing is."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        wanted = f"127.0.0.1:{listener.getsockname()[1]}"
        found = subprocess.run([SCRIPT, "5", wanted], capture_output=True, text=True, timeout=30)
        assert found.returncode == 0, found
    gone = subprocess.run([SCRIPT, "0", wanted], capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and f"listens on TCP {wanted}:" in gone.stderr, gone
