"""A heartbeat configuration change: the deploy restarts heartbeat one balancer
at a time and returns only once the pair has settled back on the master."""

import secrets
import threading
from pathlib import Path

from lvsha.lab.run import deploy, record
from lvsha.render import AUTHKEYS, HA_CF


def test_config_change_restarts_heartbeat_and_the_pair_settles_on_the_master(lab):
    master, backup = (b.name for b in lab.cluster.balancers)
    for name in (master, backup):  # a hand edit on both, which the deploy reverts
        lab.ssh(name, f"echo '# hand edit made by the lab test' >> {HA_CF}")
    result = deploy()
    record("deploy restarting heartbeat on both", result.seconds)
    assert result.ok, result.output[-6000:]
    assert result.output.count("Restart heartbeat for its new configuration") >= 1
    assert result.changed == 4, result.output[-6000:]  # ha.cf and the restart, on each balancer
    for name in (master, backup):
        assert "hand edit" not in lab.ssh(name, f"cat {HA_CF}").stdout
    # settled when the deploy returned: the master carries everything and serves, the backup nothing
    assert lab.wait_settled(master, timeout=30) < 30
    assert lab.carries_none(backup)


def test_secret_rotation_keeps_the_pair_authenticated_and_on_the_master(lab):
    """A new secret, one deploy: rotated in place (no restart), and the floating
    addresses are never seen on both balancers (sampled every 2 s)."""
    master, backup = (b.name for b in lab.cluster.balancers)
    secret_file = Path(lab.state["heartbeat_secret_file"])
    new_secret = secrets.token_hex(32)
    secret_file.write_text(new_secret + "\n")  # stays 0600
    seen_on_both, done = [], threading.Event()

    def sample():
        while not done.is_set():
            held = [lab.carries(b.name)[0] & lab.floating() for b in lab.cluster.balancers]
            if held[0] & held[1]:
                seen_on_both.append(sorted(held[0] & held[1]))
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
    assert seen_on_both == [], f"floating addresses on both balancers during the rotation: {seen_on_both}"
    for name in (master, backup):
        assert new_secret in lab.ssh(name, f"cat {AUTHKEYS}").stdout
    assert lab.wait_settled(master, timeout=60) < 60
    assert lab.carries_none(backup)
    assert deploy().changed == 0
