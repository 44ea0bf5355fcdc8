"""A failed link: the active balancer's external or internal cable pulled (its tap
taken down in the lab's switch: the guest sees no carrier change, heartbeats stop
on that link only) moves everything to the peer, which still reaches both sides;
the link restored, the pair settles as auto_failback says. A failed link on the
backup moves nothing. heartbeat's ping nodes and ipfail decide (see ha.cf), on
keepalived its track scripts (keepalived.conf); the lab's client side answers for
the model's external ping nodes.
"""

import os
import subprocess
import time

import pytest

from lvsha.lab import LabError, wait_until
from lvsha.lab.run import record
from tests.lab.conftest import Watch

TAKEOVER_TIMEOUT = 180  # s; the measured figures go to the report


@pytest.fixture(autouse=True)
def _needs_ping_nodes(lab):
    if not lab.cluster.external_ping_nodes():
        pytest.skip(f"the model {lab.cluster.name} names no external ping node: a failed link is not detected")


@pytest.fixture(autouse=True)
def _not_the_vrrp_link(lab, request):
    """The lab cuts a link in its switch (the carriers stay up). On keepalived, VRRP travels on
    the first heartbeat link only: cut there, neither node hears the other and both carry
    every address until it returns, by design (docs/limitations.md, "One VRRP link");
    heartbeat still hears its peer on its other link."""
    segment = request.node.callspec.params.get("segment")
    if lab.engine == "keepalived" and segment == lab.cluster.heartbeat.links[0]:
        pytest.skip(f"keepalived: the {segment} link carries VRRP alone; a cut there gives two masters while it "
                    "lasts (docs/limitations.md, One VRRP link)")


def _set_link(lab, balancer: str, segment: str, state: str) -> None:
    (tap,) = [nic["tap"] for nic in lab.state["vms"][balancer]["nics"] if nic["segment"] == segment]
    subprocess.run(["ip", "-n", lab.state["lab_netns"], "link", "set", tap, state], check=True)


def _one_carrier_again(lab) -> None:
    """After a failed check: wait (bounded) until one balancer alone carries the group, so
    the next test starts on a settled pair; the check's own failure is what is reported."""
    try:
        wait_until(lambda: Watch(lab).exactly_one_carrier(), TAKEOVER_TIMEOUT, interval=2,
                   what="one balancer alone to carry the group")
    except LabError:
        pass


@pytest.mark.parametrize("segment", ["external", "internal"])
def test_a_failed_link_on_the_active_balancer_moves_everything_to_the_peer(lab, segment):
    active = lab.carrier()
    peer = lab.other(active)
    cut_at = time.monotonic()
    _set_link(lab, active, segment, "down")
    failed = None
    try:
        lab.wait_settled(peer, timeout=TAKEOVER_TIMEOUT)
        record(f"{segment} link of the active balancer cut: the peer carries and serves", time.monotonic() - cut_at)
        assert Watch(lab).exactly_one_carrier() == peer
    except AssertionError as error:  # said after the pair has settled again: the next test starts on a settled pair
        failed = error
    finally:
        _set_link(lab, active, segment, "up")
    restored_at = time.monotonic()
    lab.wait_settled(lab.home_after_return(peer), timeout=TAKEOVER_TIMEOUT)
    record(f"{segment} link restored: settled", time.monotonic() - restored_at)
    if failed:
        _one_carrier_again(lab)
        raise failed
    assert Watch(lab).exactly_one_carrier() == lab.home_after_return(peer)


# On request (LVSHA_LAB_EXTRA=1), for CI's time: 57 s each in the CI-like run of a7be3de, whose
# 3,843 s were over the 60-minute budget. What they guard (ipfail on the backup keeps the group
# where it is) is ha.cf's ping-node setup, which the active-link cases above exercise as well.
@pytest.mark.skipif(os.environ.get("LVSHA_LAB_EXTRA") != "1",
                    reason="on request (CI's time): set LVSHA_LAB_EXTRA=1 to run it")
@pytest.mark.parametrize("segment", ["external", "internal"])
def test_a_failed_link_on_the_backup_moves_nothing(lab, segment):
    active = lab.carrier()
    backup = lab.other(active)
    hb = lab.cluster.heartbeat
    watch = Watch(lab, events=True)
    _set_link(lab, backup, segment, "down")
    failed = None
    try:
        # long enough for the link and the ping nodes to be declared dead and ipfail to compare
        until = time.monotonic() + 2 * hb.deadtime + 4 * hb.keepalive
        while time.monotonic() < until:
            assert watch.exactly_one_carrier() == active, f"the group moved: {watch.carriers()}"
            assert lab.serving(), f"a site stopped answering while {backup}'s {segment} link was down"
            time.sleep(2)
    except AssertionError as error:  # said after the pair has settled again (see above)
        failed = error
    finally:
        _set_link(lab, backup, segment, "up")
    if failed:
        _one_carrier_again(lab)
        raise failed
    time.sleep(2 * hb.deadtime)  # the link and the ping nodes come back; nothing may move then either
    assert watch.exactly_one_carrier() == active and lab.serving()
    assert watch.on_both() == [], f"addresses on both balancers: {watch.on_both()}"
