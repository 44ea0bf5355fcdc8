"""The live migrations heartbeat -> keepalived and back on the running lab
(docs/engines.md#migrating): the model's engine changed and deployed while long-lived
client connections are held (tests/lab/sessions.py) and a client polls the VIPs
(lab_api.poll_vips) every 200 ms, one way, then the other. Each way: one holder throughout (both kernels' address
events), at most one interruption (the polling client's longest wait), no broken
connection with state sync on; the old engine's services stopped and disabled on both,
the new one's running and enabled; a second deploy changes nothing. Back to heartbeat,
where the group does not move (it stays on the node keepalived gave it to unless
heartbeat's failback takes it to the model's master), no address ever leaves its holder.

It changes the lab's engine, so it runs only when asked: LVSHA_LAB_MIGRATION=1, on a
lab running heartbeat. It leaves the lab on heartbeat, settled: by the way back, or, if
that failed, by the manual procedure (docs/engines.md#migrating, an outage)."""

import os
import time
from dataclasses import replace

import pytest

from lvsha import render
from lvsha.lab.model import LAB_ENGINE_ENV
from lvsha.lab.run import deploy, record
from tasks.preflight import ENGINE_SERVICES
from tests.lab.conftest import Lab, Watch
from tests.lab.sessions import KINDS, LongLived, fresh_client_address
from tests.lab.test_8_day2 import _poll_during

pytestmark = pytest.mark.skipif(os.environ.get("LVSHA_LAB_MIGRATION") != "1",
                                reason="changes the lab's engine: set LVSHA_LAB_MIGRATION=1 to run it")

# Client addresses of their own (no persistence template from another test), one per way.
SESSION_CLIENT = {"keepalived": 4, "heartbeat": 5}
# lvsha-migrate retire's runtime drop-in (systemd told not to restart keepalived): gone after.
NO_RESTART_DROPIN = render.KEEPALIVED_MIGRATE_DROPIN


def _unit(lab, balancer: str, service: str) -> tuple[str, str]:
    active = lab.ssh(balancer, f"systemctl is-active {service}.service", check=False).stdout.strip()
    enabled = lab.ssh(balancer, f"systemctl is-enabled {service}.service", check=False).stdout.strip()
    return active, enabled


def _keepalived_live(lab) -> list[str]:
    """The balancers where keepalived runs, is about to, or starts at boot."""
    return [b for b in lab.pair if _unit(lab, b, "keepalived") not in (("inactive", "disabled"), ("failed", "disabled"))]


def _restore_heartbeat(lab, monkeypatch):
    """The lab back on its model's engine, settled. After the way back, nothing to do but
    check; after a run that failed with keepalived still live, the manual way back (an
    outage): keepalived stopped and disabled, the backup first, then a deploy."""
    monkeypatch.delenv(LAB_ENGINE_ENV, raising=False)
    if _keepalived_live(lab):
        try:
            holder = lab.carrier()
        except AssertionError:  # a migration that failed half-way: the model's master last
            holder = lab.pair[0]
        for balancer in (lab.other(holder), holder):
            lab.ssh(balancer, f"systemctl disable --now keepalived.service; {render.KEEPALIVED_PROGRAM} failover 0; "
                              f"{render.KEEPALIVED_PROGRAM} hold 0", check=False, timeout=120)
        started = time.monotonic()
        result = deploy()
        assert result.ok, result.output[-5000:]
        record("migration: restoring heartbeat by hand (outage), deploy", time.monotonic() - started)
    record("migration: back on heartbeat, settled", lab.wait_settled(None))


def _migrate(lab, view, to: str, monkeypatch) -> dict:
    """Deploy the model on `to` while `view` (the lab as its engine now is) holds long-lived
    connections and a client polls the VIPs: what the deploy, the client, the sessions and
    both kernels' address events saw. `view` is what the sessions read the standby's
    connection states by (conntrackd's configuration is the engine's)."""
    holder = view.carrier()
    sync = lab.cluster.state_sync.enabled
    seen = {"holder": holder}
    with LongLived(view, fresh_client_address(lab, SESSION_CLIENT[to])) as held:
        if sync:
            record(f"migration to {to}: connections synced to the standby", held.wait_synced_to(lab.other(holder)))
        watch = Watch(lab, events=True)
        seen["events"] = watch.events
        if to == lab.cluster.engine:
            monkeypatch.delenv(LAB_ENGINE_ENV, raising=False)
        else:
            monkeypatch.setenv(LAB_ENGINE_ENV, to)

        def run():
            started = time.monotonic()
            seen["result"] = deploy(timeout=1800)
            seen["seconds"] = time.monotonic() - started

        seen["longest"], seen["failed"], seen["polls"] = _poll_during(lab, run)
        result = seen["result"]
        assert result.ok, result.output[-8000:]
        record(f"migration to {to}: deploy", seen["seconds"])
        record(f"migration to {to}: longest wait of a client polling every 200 ms", seen["longest"])
        record(f"migration to {to}: polls unanswered (each 1 s at most)", seen["failed"])
        seen["both"] = watch.on_both()
        seen["held"] = held.result()
    if sync:
        broken = {kind: (c["error"], c["failed_at"]) for kind, c in seen["held"].items() if c["error"]}
        assert not broken, f"connections broken by the migration to {to}: {broken}"
        for kind in KINDS:
            record(f"migration to {to}: longest stall, {kind}", seen["held"][kind]["longest_stall"])
    return seen


def _engine_is(lab, engine: str, old: str):
    """`engine`'s services running and enabled on both balancers, `old`'s stopped and disabled."""
    for balancer in lab.pair:
        for service in ENGINE_SERVICES[old]:
            assert _unit(lab, balancer, service) in (("inactive", "disabled"), ("failed", "disabled")), \
                (balancer, service)
        for service in ENGINE_SERVICES[engine]:
            assert _unit(lab, balancer, service) == ("active", "enabled"), (balancer, service)


def test_heartbeat_to_keepalived_and_back_each_with_one_interruption_at_most_and_connections_kept(lab, monkeypatch):
    if lab.engine != "heartbeat":
        pytest.skip("the migration starts from a lab running heartbeat")
    hb = lab.cluster.heartbeat
    takeover = hb.deadtime + 2 * hb.keepalive + 10  # a takeover's interruption: deadtime, the skew, the release
    on_keepalived = Lab(lab.state, replace(lab.cluster, engine="keepalived"))
    try:
        # heartbeat -> keepalived: the node that carried nothing takes the group over, once
        forward = _migrate(lab, lab, "keepalived", monkeypatch)
        holder = forward["holder"]
        assert not forward["both"], f"an address on both balancers during the migration: {forward['both']}"
        assert lab.carrier() == lab.other(holder) and lab.carries_none(holder)
        _engine_is(lab, "keepalived", "heartbeat")
        assert forward["longest"] < takeover, forward["polls"][-3000:]
        again = deploy()
        assert again.ok and again.changed == 0, again.output[-5000:]

        # keepalived -> heartbeat: the addresses stay where they are, the other node joins
        back = _migrate(lab, on_keepalived, "heartbeat", monkeypatch)
        holder = back["holder"]
        home = lab.home_after_return(holder)  # heartbeat's failback takes the group to the master, or it stays
        assert not back["both"], f"an address on both balancers during the way back: {back['both']}"
        assert lab.carrier() == home and lab.carries_none(lab.other(home))
        _engine_is(lab, "heartbeat", "keepalived")
        for balancer in lab.pair:
            left = lab.ssh(balancer, f"{render.KEEPALIVED_PROGRAM} hold show; {render.KEEPALIVED_PROGRAM} failover show; "
                                     f"test -e {NO_RESTART_DROPIN} && echo left || echo gone", check=False).stdout.split()
            assert left == ["0", "0", "gone"], (balancer, left)
        if home == holder:
            # the engine changed under the addresses: none left the holder, and no client waited for one
            lost = back["events"].lost(holder)
            assert not lost, f"addresses {holder} gave up during the way back: {lost}"
            record("migration to heartbeat: longest wait, the group staying", back["longest"])
            assert back["longest"] < 5, back["polls"][-3000:]
        else:
            record("migration to heartbeat: longest wait, heartbeat's failback the one move", back["longest"])
            assert back["longest"] < takeover, back["polls"][-3000:]
        again = deploy()
        assert again.ok and again.changed == 0, again.output[-5000:]
    finally:
        _restore_heartbeat(lab, monkeypatch)
