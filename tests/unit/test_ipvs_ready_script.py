"""files/lvsha/lvsha-ipvs-ready, run for real against a fake ipvsadm: the IPVS
sync daemons and heartbeat start once ldirectord has loaded every virtual service
with a real server, and never wait forever for it (the sync daemons start at the
bound all the same; heartbeat, --strict, does not)."""

import re
import subprocess
import time

import pytest

from lvsha import render

SCRIPT = str(render.FILES / "lvsha" / "lvsha-ipvs-ready")
HEADER = ("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n"
          "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def table(cluster, loaded: int, reals: bool = True) -> str:
    """`ipvsadm -Ln` with the model's first `loaded` virtual services, the last one
    with its real servers only if `reals`, the others with theirs."""
    lines = [HEADER]
    for i, vs in enumerate(cluster.virtual_servers()[:loaded]):
        lines.append(f"TCP  {vs.address} {vs.site.scheduler}\n")
        if reals or i < loaded - 1:
            lines += [f"  -> {vs.real_address(ip):<26} Masq    1      0          0\n" for _, ip in vs.reals]
    return "".join(lines)


@pytest.fixture
def run(tmp_path, reference):
    (tmp_path / "ldirectord.cf").write_text(render.ldirectord_file(reference).content)
    table = tmp_path / "table"
    ipvsadm = tmp_path / "ipvsadm"
    ipvsadm.write_text(f'#!/bin/sh\necho "ipvsadm $*" >> "{tmp_path}/calls"\ncat "{table}"\n')
    ipvsadm.chmod(0o755)
    (tmp_path / "logger").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "logger").chmod(0o755)
    # ldirectord.service's ActiveEnterTimestampMonotonic: run.ldirectord_since, none by default (systemd cannot
    # tell); its MainPID: run.checkers, none by default
    (tmp_path / "systemctl").write_text(
        f'#!/bin/sh\ncase "$*" in *MainPID*) cat "{tmp_path}/mainpid" 2>/dev/null ;;\n'
        f'*) cat "{tmp_path}/ldirectord-since" 2>/dev/null ;; esac\n')
    (tmp_path / "systemctl").chmod(0o755)
    # ps -o etimes=,args= --ppid MAINPID: the processes run.checkers gives, only for that pid
    (tmp_path / "ps").write_text(f'#!/bin/sh\necho "ps $*" >> "{tmp_path}/ps-calls"\n'
                                 f'[ "$*" = "-o etimes=,args= --ppid 4242" ] && cat "{tmp_path}/children"\n')
    (tmp_path / "ps").chmod(0o755)

    def run(timeout: str, *tables: str, every: float = 0.0, strict: bool = False, reloaded: bool = False):
        """Run with `tables` shown by ipvsadm one after another, `every` seconds apart; IPVS
        read 0.2 s apart (LVSHA_POLL), not a second."""
        table.write_text(tables[0])
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LVSHA_LDIRECTORD_CF": str(tmp_path / "ldirectord.cf"),
               "LVSHA_POLL": "0.2"}
        started = time.monotonic()
        options = (["--strict"] if strict else []) + (["--reloaded"] if reloaded else [])
        process = subprocess.Popen([SCRIPT, *options, timeout], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env)
        for later in tables[1:]:
            time.sleep(every)
            table.write_text(later)
        _, err = process.communicate(timeout=30)
        return process.returncode, err, time.monotonic() - started

    run.reads = lambda: len((tmp_path / "calls").read_text().splitlines())  # how often it read the table
    run.ldirectord_since = lambda us: (tmp_path / "ldirectord-since").write_text(f"{us}\n")

    def checkers(*children: str):
        """ldirectord's MainPID 4242, its children `children` ("ETIMES ARGS" lines, as ps shows them)."""
        (tmp_path / "mainpid").write_text("4242\n")
        (tmp_path / "children").write_text("".join(f"{child}\n" for child in children))

    run.checkers = checkers
    return run


def test_a_loaded_table_is_ready_at_once(run, reference):
    every = len(reference.virtual_servers())
    rc, err, took = run("10", table(reference, every))
    assert rc == 0 and run.reads() == 1, err
    assert "holds every virtual service" in err and all(vs.address in err for vs in reference.virtual_servers())


def test_it_waits_for_ldirectord_to_load_every_virtual_service(run, reference):
    every = len(reference.virtual_servers())
    rc, err, took = run("10", HEADER, table(reference, every - 1, reals=False), table(reference, every), every=0.4)
    assert rc == 0 and took >= 0.8 and run.reads() >= 3, err  # the full table appeared 0.8 s after the start
    assert "each with a real server" in err


def test_a_site_without_real_servers_stops_the_wait_at_the_timeout_not_the_sync(run, reference):
    """ldirectord's first round of checks not over by the bound (systemd cannot tell when it
    started: the round counts from now, longer than 2 s): the sync goes on, naming the site."""
    every = len(reference.virtual_servers())
    last = reference.virtual_servers()[every - 1].address
    rc, err, took = run("2", table(reference, every, reals=False))
    assert rc == 0 and took > 1, err  # the 2 s timeout, counted in whole seconds
    assert f"after 2 s, IPVS on " in err and f"has no real server for {last}: going on all the same" in err


def test_a_site_down_on_a_long_running_ldirectord_does_not_hold_the_sync_up(run, reference):
    """A site whose real servers all fail their checks, ldirectord long started: named at
    once, not waited for to the bound (at boot, heartbeat waits behind the sync daemons)."""
    every = len(reference.virtual_servers())
    last = reference.virtual_servers()[every - 1].address
    run.ldirectord_since(1_000_000)
    rc, err, _ = run("600", table(reference, every, reals=False))
    assert rc == 0 and run.reads() == 1, err
    assert f"no real server for {last} after a round of ldirectord's health checks" in err


def test_a_bad_timeout_is_a_usage_error(run):
    rc, err, _ = run("soon", HEADER)
    assert rc == 2


def test_the_timeout_is_counted_on_the_monotonic_clock(run, reference, tmp_path):
    """chrony's makestep at boot: a wall clock stepped forward must not end the wait
    early (nor one stepped back make it endless)."""
    date = tmp_path / "date"
    # stepped 100 s forward at every reading
    date.write_text(f"#!/bin/sh\nn=$(cat {tmp_path}/now 2>/dev/null || echo 1700000000)\n"
                    f"echo $((n + 100)) > {tmp_path}/now\necho $n\n")
    date.chmod(0o755)
    every = len(reference.virtual_servers())
    rc, err, took = run("2", table(reference, every, reals=False))
    assert rc == 0 and took > 1, err  # the 2 s timeout, not the first tick of a racing clock


# --strict: the deploy's check of a node about to be handed the group (tasks/heartbeat.py).

def test_strict_a_table_holding_every_virtual_service_is_ready_at_once(run, reference):
    every = len(reference.virtual_servers())
    rc, err, _ = run("10", table(reference, every), strict=True)
    assert rc == 0 and run.reads() == 1, err
    assert all(vs.address in err for vs in reference.virtual_servers())


def test_strict_waits_for_an_ldirectord_still_starting(run, reference):
    """ldirectord restarted in the same run: an empty table, then services without
    real servers (first health checks), then the full table."""
    every = len(reference.virtual_servers())
    rc, err, took = run("20", HEADER, table(reference, every, reals=False), table(reference, every),
                        every=0.4, strict=True)
    assert rc == 0 and took >= 0.8 and run.reads() >= 3, err
    assert "holds every virtual service" in err


def test_strict_an_empty_table_fails_at_the_timeout_naming_every_missing_service(run, reference):
    rc, err, took = run("2", HEADER, strict=True)
    assert rc == 1 and took > 1, err
    missing = " ".join(vs.address for vs in reference.virtual_servers())
    assert f"lacks virtual service(s) {missing} of " in err and "after waiting 2 s" in err
    assert "not ready to be handed the floating addresses" in err


def test_strict_checks_each_service_by_address_not_by_count(run, reference):
    """As many services as ldirectord.cf has, one of them another address: the
    boot-time count would call it loaded, the strict check names the one missing."""
    every = len(reference.virtual_servers())
    first = reference.virtual_servers()[0].address
    wrong = table(reference, every).replace(f"TCP  {first} ", "TCP  192.0.2.99:0 ")
    rc, err, _ = run("1", wrong)  # at the timeout either way: the shortest
    assert rc == 0 and f"lacks virtual service(s) {first} of " in err and "going on all the same" in err, err
    rc, err, _ = run("1", wrong, strict=True)
    assert rc == 1 and f"lacks virtual service(s) {first} of " in err, err


def test_strict_a_service_without_real_servers_is_named_but_does_not_fail(run, reference):
    """A site whose real servers all fail their checks has none on either node:
    handing over does not make it worse; the wait says so after the timeout."""
    every = len(reference.virtual_servers())
    last = reference.virtual_servers()[every - 1].address
    rc, err, took = run("2", table(reference, every, reals=False), strict=True)
    assert rc == 0 and took > 1, err
    assert f"has no real server for {last}" in err and "lacks" not in err


def test_strict_a_service_without_real_servers_does_not_hold_up_a_long_running_ldirectord(run, reference):
    """ldirectord has run its health checks many times over (started 1 s after boot):
    a service still without a real server is a site down everywhere, not a check
    pending. Named, and no wait (not the timeout: 600 s)."""
    every = len(reference.virtual_servers())
    last = reference.virtual_servers()[every - 1].address
    run.ldirectord_since(1_000_000)
    rc, err, _ = run("600", table(reference, every, reals=False), strict=True)
    assert rc == 0 and run.reads() == 1, err
    assert f"no real server for {last} after a round of ldirectord's health checks" in err and "lacks" not in err


def test_strict_a_service_without_real_servers_waits_one_round_of_checks_not_the_timeout(run, reference, tmp_path):
    """systemd cannot tell when ldirectord started: one round of its health checks
    (checkinterval + the longest check timeout of ldirectord.cf) from when IPVS first
    lacks nothing, then the services still without a real server are named and it passes."""
    cf = tmp_path / "ldirectord.cf"
    text = re.sub(r"(?m)^checkinterval=\d+$", "checkinterval=1", cf.read_text())
    text = re.sub(r"(?m)^(\s*(?:checktimeout|negotiatetimeout))=\d+$", r"\1=1", text)
    assert "checkinterval=1\n" in text
    cf.write_text(text)
    every = len(reference.virtual_servers())
    last = reference.virtual_servers()[every - 1].address
    rc, err, took = run("600", table(reference, every, reals=False), strict=True)
    assert rc == 0 and took > 1 and run.reads() >= 2, err  # it waited for the round (2 s), in whole seconds
    assert f"no real server for {last} after a round of ldirectord's health checks (2 s)" in err


def test_strict_after_a_reload_a_service_without_real_servers_gets_its_first_checks(run, reference):
    """A site the reload added to a long-running ldirectord: its service is in IPVS
    before its first health checks pass. The wait is for them (a round from when IPVS
    lacks nothing), not passed at once as for a service down on a long-running ldirectord."""
    every = len(reference.virtual_servers())
    run.ldirectord_since(1_000_000)
    rc, err, took = run("600", table(reference, every, reals=False), table(reference, every), every=0.4, strict=True,
                        reloaded=True)
    assert rc == 0 and took >= 0.4 and run.reads() >= 2, err
    assert "each with a real server" in err and "no real server" not in err


def test_strict_after_a_reload_a_service_whose_real_servers_fail_is_named_after_a_round(run, reference, tmp_path):
    cf = tmp_path / "ldirectord.cf"
    text = re.sub(r"(?m)^checkinterval=\d+$", "checkinterval=1", cf.read_text())
    cf.write_text(re.sub(r"(?m)^(\s*(?:checktimeout|negotiatetimeout))=\d+$", r"\1=1", text))
    every = len(reference.virtual_servers())
    last = reference.virtual_servers()[every - 1].address
    run.ldirectord_since(1_000_000)
    rc, err, took = run("600", table(reference, every, reals=False), strict=True, reloaded=True)
    assert rc == 0 and took > 1 and run.reads() >= 2, err
    assert f"no real server for {last} after a round of ldirectord's health checks (2 s)" in err


def test_strict_without_a_virtual_service_in_the_file_fails(run, tmp_path):
    (tmp_path / "ldirectord.cf").write_text("checkinterval=5\n")
    rc, err, _ = run("2", HEADER, strict=True)
    assert rc == 1 and "no virtual= service" in err
    rc, err, took = run("60", HEADER)  # the sync daemons: nothing to wait for
    assert rc == 0 and took < 30 and "no virtual= service" in err


@pytest.mark.parametrize("arguments", [["--strict", "soon"], ["--strict", "5", "6"], ["--loose"],
                                       ["--reloaded", "5"], ["--strict", "--reloaded", "5", "6"]])
def test_bad_arguments_are_a_usage_error(arguments, tmp_path):
    done = subprocess.run([SCRIPT, *arguments], capture_output=True, text=True, timeout=10,
                          env={"PATH": "/usr/bin:/bin", "LVSHA_LDIRECTORD_CF": str(tmp_path / "none")})
    assert done.returncode == 2 and "usage:" in done.stderr


# ---- fork=yes: the round counts from the end of ldirectord's start pass ----

def _forking(tmp_path, cluster, interval: int = 1) -> None:
    """ldirectord.cf of `cluster` with fork=yes (Ldirectord.fork), checkinterval and every check timeout `interval`."""
    from dataclasses import replace

    forked = replace(cluster, ldirectord=replace(cluster.ldirectord, fork=True))
    text = render.ldirectord_file(forked).content
    assert "\nfork=yes\n" in text
    text = re.sub(r"(?m)^checkinterval=\d+$", f"checkinterval={interval}", text)
    (tmp_path / "ldirectord.cf").write_text(re.sub(r"(?m)^(\s*(?:checktimeout|negotiatetimeout))=\d+$",
                                                    rf"\1={interval}", text))


def _checker(cluster, etimes: int, index: int = 0) -> str:
    """A checker as ps shows it: run_child's $0, "ldirectord VIRTUAL"."""
    return f"{etimes:>7} ldirectord tcp:{cluster.virtual_servers()[index].address}"


DAEMON = "/usr/bin/perl -w /usr/sbin/ldirectord /run/lvsha/ldirectord start"


def test_forking_a_service_without_real_servers_waits_for_the_start_pass_to_end(run, reference, tmp_path):
    """fork=yes, long started (systemd says so), but no checker forked yet: ldirectord is
    still in its start pass (adding and checking every real server in turn). The wait is
    not passed after a round from the service's start (as without fork): it goes on to
    TIMEOUT, then fails naming the pass (nothing checked those real servers; this node
    would serve none of those sites). The daemon's own short-lived forks (perl's command
    line) are not checkers."""
    _forking(tmp_path, reference)
    every = len(reference.virtual_servers())
    run.ldirectord_since(1_000_000)
    first = reference.virtual_servers()[0]
    run.checkers(f"      5 {DAEMON}", f"      0 ipvsadm -a -t {first.address} -r {first.real_address(first.reals[0][1])} -m")
    rc, err, took = run("3", table(reference, every, reals=False), strict=True)
    assert rc == 1 and took > 2 and run.reads() >= 2, err
    assert "start pass has not ended" in err and "no checker forked yet" in err and "is not ready to be handed" in err
    assert "after a round" not in err and "lacks" not in err


def test_forking_the_start_pass_not_ended_at_the_bound_is_said_and_the_sync_goes_on(run, reference, tmp_path):
    """At boot with many sites: the sync daemons' wait ends at its bound all the same,
    saying that ldirectord's start pass has not ended (no checker forked yet)."""
    _forking(tmp_path, reference)
    every = len(reference.virtual_servers())
    run.ldirectord_since(1_000_000)
    run.checkers(f"      5 {DAEMON}")
    rc, err, took = run("2", table(reference, every, reals=False))
    assert rc == 0 and took > 1, err
    assert "start pass has not ended" in err and "going on all the same" in err


def test_forking_the_round_counts_from_the_oldest_checker(run, reference, tmp_path):
    """A checker forked long ago (beside one forked just now: a checker that died and was
    forked again): the pass ended long ago, the round is over, a service still without a
    real server is named at once. Only checkers forked just now: their round is waited for."""
    _forking(tmp_path, reference)
    every = len(reference.virtual_servers())
    last = reference.virtual_servers()[every - 1].address
    run.checkers(f"      9 {DAEMON}", _checker(reference, 0, 1), _checker(reference, 1000), _checker(reference, 0, 2))
    rc, err, _ = run("600", table(reference, every, reals=False), strict=True)
    assert rc == 0 and run.reads() == 1, err
    assert f"no real server for {last} after a round of ldirectord's health checks (2 s)" in err
    run.checkers(f"      9 {DAEMON}", _checker(reference, 0), _checker(reference, 0, 1))
    rc, err, took = run("600", table(reference, every, reals=False), strict=True)
    assert rc == 0 and took > 1 and run.reads() >= 2, err
    assert f"no real server for {last} after a round of ldirectord's health checks (2 s)" in err


def test_forking_the_real_servers_arriving_end_the_wait_before_any_checker(run, reference, tmp_path):
    _forking(tmp_path, reference)
    every = len(reference.virtual_servers())
    run.checkers(f"      9 {DAEMON}")
    rc, err, took = run("600", table(reference, every, reals=False), table(reference, every), every=0.4, strict=True)
    assert rc == 0 and took >= 0.4, err
    assert "each with a real server" in err


def test_forking_after_a_reload_only_a_checker_forked_since_counts(run, reference, tmp_path):
    """A reload ends every checker and runs the start pass again before forking new ones:
    a checker older than this wait (the reload's predecessor, not yet ended) is not the
    pass's end, and TIMEOUT fails naming the pass; one forked since the wait began is, and
    its round is waited for."""
    _forking(tmp_path, reference)
    every = len(reference.virtual_servers())
    last = reference.virtual_servers()[every - 1].address
    run.ldirectord_since(1_000_000)
    run.checkers(_checker(reference, 500))
    rc, err, took = run("3", table(reference, every, reals=False), strict=True, reloaded=True)
    assert rc == 1 and took > 2, err
    assert "start pass has not ended" in err
    run.checkers(_checker(reference, 500), _checker(reference, 0, 1))
    rc, err, took = run("600", table(reference, every, reals=False), strict=True, reloaded=True)
    assert rc == 0 and took > 1 and run.reads() >= 2, err
    assert f"no real server for {last} after a round of ldirectord's health checks (2 s)" in err


def test_forking_no_main_process_of_ldirectord_fails_at_the_timeout_saying_so(run, reference, tmp_path):
    _forking(tmp_path, reference)
    every = len(reference.virtual_servers())
    rc, err, took = run("2", table(reference, every, reals=False), strict=True)
    assert rc == 1 and took > 1, err
    assert "systemd names no main process of ldirectord.service" in err and "start pass" not in err


def test_the_deploys_wait_allows_for_ldirectords_start_pass(reference):
    """render.ipvs_takeover_timeout: IPVS_TAKEOVER_TIMEOUT where ldirectord does not fork (its
    pass is a few checks), plus LDIRECTORD_START_PASS_PER_REAL per real server where it does."""
    from lvsha.lab.scale import scale_cluster

    assert not reference.ldirectord_forks()
    assert render.ipvs_takeover_timeout(reference) == render.IPVS_TAKEOVER_TIMEOUT
    grown = scale_cluster(reference, 250)
    reals = sum(len(vs.reals) for vs in grown.virtual_servers())
    assert grown.ldirectord_forks() and reals == 250 * len(reference.web_hosts)
    assert render.ipvs_takeover_timeout(grown) == render.IPVS_TAKEOVER_TIMEOUT + render.LDIRECTORD_START_PASS_PER_REAL * reals


def test_strict_at_250_sites_names_exactly_the_services_lacking_or_bare(run, reference, tmp_path):
    """The scale model: one pass over the table names the services IPVS lacks and those
    without a real server, in the file's order, whatever their number."""
    from lvsha.lab.scale import scale_cluster

    cluster = scale_cluster(reference, 250)
    (tmp_path / "ldirectord.cf").write_text(render.ldirectord_file(cluster).content)
    services = cluster.virtual_servers()
    assert len(services) >= 250
    lines = [HEADER]
    for i, vs in enumerate(services):
        if i in (7, 200):
            continue  # lacking
        lines.append(f"TCP  {vs.address} {vs.site.scheduler}\n")
        if i not in (3, 249):  # bare
            lines += [f"  -> {vs.real_address(ip):<26} Masq    1      0          0\n" for _, ip in vs.reals]
    rc, err, _ = run("1", "".join(lines), strict=True)
    assert rc == 1, err
    assert f"lacks virtual service(s) {services[7].address} {services[200].address} of" in err
    assert f"no real server for {services[3].address} {services[249].address} (their" in err
