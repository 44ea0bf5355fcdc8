"""A site added and a health check changed on a running pair, by one deploy, on either
engine: nothing restarts, no address moves, every established connection on the other
sites carries on, the new site is served, and a second deploy changes nothing.

- heartbeat: ldirectord reloaded (SIGHUP: it edits IPVS in place), haresources and
  lvsha.env rewritten, the new VIP added on the node carrying the group by
  `lvsha-floating-ips reload`; heartbeat is not restarted
  (docs/operating.md#configuration-changes);
- keepalived: keepalived reloaded (it adds the new VIP and virtual server itself).

The web hosts get the changed model first, alone (`--limit web`: the new site's address,
nginx serving it, by a reload), and only then are the long-lived connections of tests/lab/sessions.py opened on
the existing sites: the deploy under test changes nothing they end at, so each of them
(through IPVS, the mail NAT, the outbound NAT) must carry on. Addresses are watched
from both kernels' address events (AddressEvents), not sampled. The model is then
restored by a deploy: the site removed, by reload as well, and gone from both
balancers (address, IPVS service, firewall rules) and from the client's reach.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from lvsha import render
from lvsha.lab import wait_until
from lvsha.lab.model import LAB_INVENTORY_ENV, lab_cluster, source_inventory
from lvsha.lab.run import deploy, record
from tests.lab.changes import ADDED_SITE, changed_inventory, free_internal_addresses
from tests.lab.conftest import AddressEvents
from tests.lab.sessions import KINDS, LongLived, fresh_client_address
from tests.lab.test_4_firewall import tcp

# The sessions' client and the added site's VIP: free external addresses of their own
# (test_7_failover's sessions use the first two).
SESSION_CLIENT, ADDED_VIP = 2, 4


def _main_pids(lab) -> dict[tuple[str, str], str]:
    """The main process of each of the engine's units on each balancer: a restart changes it, a reload does not."""
    return {(b.name, unit): lab.ssh(b.name, f"systemctl show -p MainPID --value {unit}").stdout.strip()
            for b in lab.cluster.balancers for unit in lab.engine_services}


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _not_applied(lab, cluster) -> list[str]:
    """What the engine on each balancer does not run of `cluster`, as its own records say:
    keepalived's recorded keepalived.conf (at each reload); ldirectord's recorded
    ldirectord.cf (ExecReload records it) and heartbeat's ha.cf, haresources, authkeys
    (the deploy records a haresources whose addresses alone changed)."""
    found = []
    for b in cluster.balancers:
        if lab.engine == "keepalived":
            got = lab.ssh(b.name, f"cat {render.KEEPALIVED_APPLIED}", check=False).stdout.split()[:1]
            if got != [_sha1(render.keepalived_conf(cluster, b).content)]:
                found.append(f"{b.name}: keepalived runs {got}")
            continue
        shown = {line.split()[0]: line.split()[1:] for line in
                 lab.ssh(b.name, f"{render.APPLIED_SCRIPT} show").stdout.splitlines() if line.split()}
        for name, files in (("ldirectord", [render.ldirectord_file(cluster)]),
                            ("heartbeat", render.heartbeat_files(cluster, b))):
            if shown.get(name) != render.applied_record(files):
                found.append(f"{b.name}: {name} runs {shown.get(name)}")
    return found


@pytest.mark.every_engine  # the reference's run covers heartbeat; edge-keepalived's keepalived
def test_a_site_added_and_a_health_check_changed_move_no_address_and_break_no_connection(lab, monkeypatch, tmp_path):
    holder = lab.carrier()
    other = lab.other(holder)
    source = str(source_inventory(lab.state))
    vip = fresh_client_address(lab, ADDED_VIP)
    changed = tmp_path / "site_added_health_changed.py"
    changed.write_text(changed_inventory(source, (ADDED_SITE, vip, tuple(
        free_internal_addresses(lab.cluster, len(lab.cluster.web_hosts))))))
    monkeypatch.setenv(LAB_INVENTORY_ENV, str(changed))
    model = lab_cluster(lab.state)  # the changed model, as the deploy reads it
    assert len(model.sites) == len(lab.cluster.sites) + 1
    try:
        staged = deploy("--limit", "web")
        record("config by reload: the web hosts given the new site first", staged.seconds)
        assert staged.ok, staged.output[-6000:]
        pids = _main_pids(lab)
        with LongLived(lab, fresh_client_address(lab, SESSION_CLIENT)) as sessions:
            events = AddressEvents(lab)
            result = deploy()
            overlaps = events.read()
            time.sleep(2)  # a connection broken at the deploy's end shows by now
            held = sessions.result()
        record("deploy adding a site and changing a health check (no restart)", result.seconds)
        assert result.ok, result.output[-6000:]
        assert _main_pids(lab) == pids, f"an engine service restarted: {pids} -> {_main_pids(lab)}"
        if lab.engine == "heartbeat":
            assert "Reload ldirectord for its new configuration" in result.output, result.output[-6000:]
        lost = events.lost(holder)
        taken = {address: spans for address, spans in events.spans[other].items() if spans}
        assert not lost and not taken and not overlaps, (
            f"addresses moved: {holder} lost {lost}, {other} held {taken}, on both {[str(o) for o in overlaps]}")
        record("config by reload: floating addresses moved (address events)", len(lost) + len(taken))
        broken = {kind: (c["error"], c["failed_at"]) for kind, c in held.items() if c["error"]}
        assert not broken, f"connections broken by the deploy: {broken}\n{held}"
        for kind in KINDS:
            record(f"config by reload: longest stall, {kind}", held[kind]["longest_stall"])
        wait_until(lambda: ADDED_SITE in lab.client("curl", "-s", "--max-time", "5", f"http://{vip}/", timeout=15).stdout,
                   60, interval=2, what=f"the added site {ADDED_SITE} to answer on {vip}")
        assert lab.holder_of(vip) == [holder]
        for b in lab.pair:
            assert any(virtual.startswith(f"{vip}:") for virtual in lab.ipvs_reals(b)), b
        assert _not_applied(lab, model) == []  # the new health check and site are what runs
        again = deploy()
        assert again.ok and again.changed == 0, again.output[-6000:]
    finally:
        monkeypatch.setenv(LAB_INVENTORY_ENV, source)
        restored = deploy()
        record("deploy removing the added site again", restored.seconds)
    assert restored.ok, restored.output[-6000:]
    assert _main_pids(lab) == pids, "an engine service restarted to remove the site"
    assert vip not in lab.carries(holder)[0] and not any(v.startswith(f"{vip}:") for v in lab.ipvs_reals(holder))
    # the model as the deploy reads it now: lab.cluster was read when the lab came up, and a
    # test before this one may have rotated the lab's heartbeat secret (test_8_config_change)
    assert _not_applied(lab, lab_cluster(lab.state)) == []
    assert lab.wait_settled(holder, timeout=60) < 60
    # The standby's table, as the holder's was, within what its health checks take to put
    # back a real server they saw fail (before nginx reloaded for a changed set of sites
    # (tasks/webserver.py), its restarts did that); an address there is never waited for.
    assert not lab.carries(other)[0] & lab.floating(), f"{other} carries {lab.carries(other)[0] & lab.floating()}"
    longest = 2 * lab.cluster.ldirectord.checkinterval + max(s.health.checktimeout for s in lab.cluster.sites)
    wait_until(lambda: lab.carries_none(other), longest + 30, interval=2,
               what=f"{other}'s IPVS to hold the model's table, carrying no address")
    # The removed site is gone from both balancers (its address, its IPVS service, its
    # firewall rules) and from the client's reach; the other sites answer.
    for b in lab.pair:
        addresses, table = lab.carries(b)
        assert vip not in addresses and not any(v.startswith(f"{vip}:") for v in table), (b, table)
        assert f"{vip}/32" not in lab.ssh(b, "iptables-save").stdout, b
    assert tcp(lab, vip, 80) != "open"
    for site in lab.cluster.sites:
        answer = lab.client("curl", "-s", "--max-time", "5", f"http://{site.vip}/", timeout=15).stdout
        assert site.name in answer, site.name
