"""A heartbeat configuration change: the deploy restarts heartbeat one balancer
at a time and returns only once the pair has settled: on the master with
auto_failback, on one node without it. Both tests are heartbeat's own (ha.cf,
authkeys); a site added and a health check changed, applied by reload on either engine,
are test_8_config_reload's."""

import secrets
import threading
from pathlib import Path

import pytest

from lvsha.lab.run import deploy, record
from lvsha.render import AUTHKEYS, HA_CF
from tests.lab.conftest import Watch


def _settled_when_the_deploy_returned(lab) -> None:
    """Already settled: one node carries everything and serves (the master with
    auto_failback), the other carries nothing."""
    owner = lab.cluster.master.name if lab.cluster.heartbeat.auto_failback else None
    assert lab.wait_settled(owner, timeout=30) < 30
    assert lab.carries_none(lab.other(lab.carrier()))


# Not every_model: CI's budget (the edge lab on Debian 13 ran it in ~100 s); `lvsha lab run` on a model runs it.
@pytest.mark.heartbeat_internals
def test_config_change_restarts_heartbeat_and_the_pair_settles(lab):
    master, backup = lab.pair
    edited = [HA_CF]  # the files the test edits by hand on each balancer
    for name in (master, backup):  # a hand edit on both, which the deploy reverts
        for path in edited:
            lab.ssh(name, f"echo '# hand edit made by the lab test' >> {path}")
    result = deploy()
    record("deploy restarting heartbeat on both", result.seconds)
    assert result.ok, result.output[-6000:]
    assert result.output.count("Restart heartbeat for its new configuration") >= 1
    # What changes, per balancer (tasks/heartbeat.py's heartbeat deploy; result.changed sums
    # the operation-host pairs that changed): each file edited, written back; its own
    # heartbeat restart (one operation per balancer, run on that node only); and the wait
    # for its IPVS it runs before its peer's restart (lvsha-ipvs-ready --strict, a shell
    # command: a change whenever it runs, and it runs because the peer restarts). Nothing
    # else: ldirectord's file and the key are as rendered (no ldirectord restart, no key
    # rotation), and heartbeat ran with the rendered files (the edit was never applied).
    # tests/deploy/test_ipvs_before_restart.py's test_when_both_restart_... plans the same.
    per_balancer = len(edited) + 1 + 1
    assert result.changed == len(lab.cluster.balancers) * per_balancer, result.output[-6000:]
    for name in (master, backup):
        assert "hand edit" not in lab.ssh(name, f"cat {HA_CF}").stdout
    _settled_when_the_deploy_returned(lab)


@pytest.mark.heartbeat_internals
def test_secret_rotation_keeps_the_pair_authenticated_and_the_group_where_it_is(lab):
    """A new secret, one deploy: rotated in place (no restart), the group never
    moves, and the floating addresses are never on both balancers (sampled every 2 s, and
    from both kernels' address events)."""
    holder = lab.carrier()
    secret_file = Path(lab.state["heartbeat_secret_file"])
    new_secret = secrets.token_hex(32)
    secret_file.write_text(new_secret + "\n")  # stays 0600
    watch, done = Watch(lab, events=True), threading.Event()

    def sample():
        while not done.is_set():
            watch.carriers()
            done.wait(2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = deploy()
    finally:
        done.set()
        sampler.join(timeout=60)
    record("deploy rotating the heartbeat secret", result.seconds)
    assert result.ok, result.output[-6000:]
    assert "Rotate the heartbeat key 5/5" in result.output
    assert result.changed == 2 * 6, result.output[-6000:]  # staged + 5 phases on each balancer, no restart
    assert watch.on_both() == [], f"floating addresses on both balancers during the rotation: {watch.on_both()}"
    for name in lab.pair:
        assert new_secret in lab.ssh(name, f"cat {AUTHKEYS}").stdout
    assert lab.wait_settled(holder, timeout=60) < 60
    assert lab.carries_none(lab.other(holder))
    assert deploy().changed == 0
