"""What the scale benchmark (`lvsha lab bench --sites N`) measures on top of the lab
tier's own figures: how the balancers carry N sites. Not collected by a plain test
run (no test_ prefix): the benchmark names this file; it runs first, on the freshly
deployed lab. docs/scale.md."""

import time

from lvsha import render
from lvsha.lab import wait_until
from lvsha.lab.run import record


def _ldirectord_start(lab, master: str) -> tuple[float | None, float | None, list[float]]:
    """ldirectord's last start on `master` from its journal (this boot): (start, its first
    "Added real server" before the first checker, each "Spawned child" since the start or
    since its last reload, which forks every checker again), on the guest's clock."""
    log = lab.ssh(master, "journalctl -q -b -t ldirectord -o short-unix --no-pager | "
                          "grep -e 'Starting Linux Director' -e 'Reloading Linux Director' "
                          "-e 'Added real server' -e 'Spawned child'").stdout
    start = added = None
    spawned: list[float] = []
    for line in log.splitlines():
        when = float(line.split()[0])
        if "Starting Linux Director" in line:
            start, added, spawned = when, None, []
        elif "Reloading Linux Director" in line:
            spawned = []
        elif "Spawned child" in line and start is not None:
            spawned.append(when)
        elif "Added real server" in line and start is not None and not spawned and added is None:
            added = when
    return start, added, spawned


def test_scale_figures_of_the_deployed_pair(lab):
    master = lab.cluster.master.name
    forks = lab.engine == "heartbeat" and lab.cluster.ldirectord_forks()
    if forks:
        # ldirectord's start pass (docs/scale.md, health checks): from its last start to its first
        # checker forked ("Spawned child"), and the share of it before its checks add the first real
        # server (readdquiescent=yes: the virtual services added, then the table read once per real
        # server missing from IPVS, which logs nothing; its first "Added real server"). Its
        # processes are counted once it has forked a checker per virtual service: the pair serves
        # before the last ones are forked (50 sites: 36 of 51 processes counted at the first look).
        checkers = len(lab.cluster.virtual_servers())
        read: list = []

        def forked() -> bool:
            read[:] = _ldirectord_start(lab, master)
            return read[0] is not None and len(read[2]) >= checkers

        wait_until(forked, render.ldirectord_start_pass(lab.cluster), interval=5,
                   what=f"ldirectord on {master} to fork its {checkers} checkers (one per virtual service) "
                        "since its last start")
        start, added, spawned = read
        record("ldirectord start pass, start to first checker forked", spawned[0] - start)
        record("ldirectord start pass, start to last checker forked", spawned[checkers - 1] - start)
        if added is not None:
            record("ldirectord start pass, start to the first real server its checks added", added - start)
    # The health checker's unit: ldirectord (one process per site with fork=yes, docs/scale.md),
    # or keepalived (its parent, VRRP and checker processes, and the scripts it runs).
    checker = lab.engine_services[-1]
    # its processes and their memory, every process of its unit (ldirectord's children rename
    # themselves: `ps -C` would miss them), each one's proportional share (Pss: pages shared
    # after the fork counted once in all)
    out = lab.ssh(master, f"for pid in $(cat /sys/fs/cgroup/system.slice/{checker}.service/cgroup.procs); do "
                          "awk '/^Pss:/ { print $2 }' /proc/$pid/smaps_rollup 2>/dev/null; done | "
                          "awk '{ n++; kib += $1 } END { print n + 0, kib + 0 }'").stdout
    processes, kib = (int(x) for x in out.split())
    assert processes >= 1, f"{checker}.service has no process"
    record(f"{checker} processes (count)", processes)
    record(f"{checker} memory, its processes' Pss summed (MiB)", kib / 1024)
    record("balancer memory available (MiB)",
           int(lab.ssh(master, "awk '/^MemAvailable:/ { print $2 }' /proc/meminfo").stdout) / 1024)
    # the firewall: rules loaded, and what checking its ruleset costs (the deploy tests before it loads)
    record("iptables rules loaded (count)", int(lab.ssh(master, "iptables-save | grep -c '^-A'").stdout))
    started = time.monotonic()
    lab.ssh(master, f"iptables-restore --test {render.FIREWALL_RULES}")
    record("iptables-restore --test of the ruleset", time.monotonic() - started)
    # IPVS as loaded
    table = lab.ipvs_reals(master)
    record("IPVS virtual services (count)", len(table))
    record("IPVS real servers (count)", sum(len(reals) for reals in table.values()))
    assert table == lab.expected_ipvs()
    # every VIP asked at once (clients/answers.py beyond 8 sites): what a check of "every VIP answers" costs
    started = time.monotonic()
    assert lab.serving()
    record("every VIP answered, one check", time.monotonic() - started)
