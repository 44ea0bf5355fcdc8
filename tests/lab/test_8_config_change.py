"""A heartbeat configuration change: the deploy restarts heartbeat one balancer
at a time and returns only once the pair has settled back on the master."""

from lvsha.lab.run import deploy, record
from lvsha.render import HA_CF


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
