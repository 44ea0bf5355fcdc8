"""The lab's "never on both" from each balancer's kernel address events
(lvsha/lab/addrwatch.py), on fabricated `ip -o -ts monitor address` logs."""

import pytest

from lvsha.lab.addrwatch import Clock, Event, Offset, holding, overlaps, parse_monitor

VIP = "10.0.0.1"
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def stamp(t: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(t, timezone.utc).strftime("[%Y-%m-%dT%H:%M:%S.%f]")


def line(t: float, address: str, deleted: bool = False, interface: str = "eth0") -> str:
    return (f"{stamp(t)} {'Deleted ' if deleted else ''}2: {interface}    inet {address}/24 brd 10.0.0.255 "
            f"scope global secondary {interface}\\       valid_lft forever preferred_lft forever")


def exact(offset: float = 0.0, error: float = 0.0) -> Clock:
    return Clock(Offset(T0, offset, error), Offset(T0 + 100, offset, error))


def test_parse_reads_adds_and_deletes_in_utc_and_skips_the_rest():
    text = "\n".join([line(T0 + 1.5, VIP), "[2027-01-15T08:00:02.000000] 3: eth1    link/ether 52:54:00:00:00:01",
                      line(T0 + 2.25, VIP, deleted=True, interface="eth1"),
                      f"{stamp(T0 + 3)} 2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever"])
    assert parse_monitor(text) == [Event(T0 + 1.5, True, VIP, "eth0"), Event(T0 + 2.25, False, VIP, "eth1"),
                                   Event(T0 + 3, True, "fe80::1", "eth0")]


def test_holding_from_a_snapshot_and_the_events_after_it():
    events = parse_monitor("\n".join([line(T0 + 1, VIP, deleted=True), line(T0 + 5, VIP),
                                      line(T0 + 2, "10.0.0.3"), line(T0 + 9, "10.0.0.99")]))
    spans = holding({VIP, "192.168.0.252"}, T0, events, T0 + 10, {VIP, "10.0.0.3"})
    assert spans == {VIP: [(T0, T0 + 1), (T0 + 5, T0 + 10)], "10.0.0.3": [(T0 + 2, T0 + 10)]}


def test_an_event_both_in_the_snapshot_and_the_log_counts_once():
    """Around the snapshot: an add of an address already held, a delete of one not held."""
    events = parse_monitor("\n".join([line(T0 + 0.001, VIP), line(T0 + 0.002, "10.0.0.3", deleted=True),
                                      line(T0 + 4, VIP, deleted=True)]))
    assert holding({VIP}, T0, events, T0 + 10, {VIP, "10.0.0.3"}) == {VIP: [(T0, T0 + 4)], "10.0.0.3": []}


def test_events_before_the_snapshot_are_in_it_already():
    events = parse_monitor(line(T0 - 5, VIP, deleted=True))
    assert holding({VIP}, T0, events, T0 + 10, {VIP}) == {VIP: [(T0, T0 + 10)]}


def test_a_clean_handover_is_no_overlap():
    a = {VIP: [(T0, T0 + 5.000)]}
    b = {VIP: [(T0 + 5.040, T0 + 10)]}  # 40 ms after the release
    assert overlaps(a, exact(), b, exact()) == []


def test_an_overlap_of_a_few_milliseconds_is_seen_with_its_length_and_address():
    """What a sample every 2 s would miss."""
    a = {VIP: [(T0, T0 + 5.010)], "10.0.0.3": [(T0, T0 + 5.0)]}
    b = {VIP: [(T0 + 5.004, T0 + 10)], "10.0.0.3": [(T0 + 5.1, T0 + 10)]}
    (found,) = overlaps(a, exact(error=0.001), b, exact(error=0.001))
    assert found.address == VIP and found.certain and found.length == pytest.approx(0.006, abs=1e-5)
    assert str(found) == f"{VIP} on both for 0.006 s (clocks known to 0.002 s)"


def test_offsets_put_both_nodes_on_the_host_clock():
    """The second guest's clock runs 3 s ahead: its take-over 2.99 s "after" the release
    in its own clock is 10 ms before it on the host's: both held the address."""
    a = {VIP: [(T0, T0 + 5.0)]}
    b = {VIP: [(T0 + 7.99, T0 + 20)]}
    (found,) = overlaps(a, exact(), b, exact(offset=3.0, error=0.001))
    assert found.certain and found.length == pytest.approx(0.01, abs=1e-5)
    assert overlaps(a, exact(), {VIP: [(T0 + 8.01, T0 + 20)]}, exact(offset=3.0, error=0.001)) == []


def test_a_drifting_clock_is_interpolated_between_its_two_measurements():
    drifting = Clock(Offset(T0, 0.0, 0.001), Offset(T0 + 100, 1.0, 0.001))  # 10 ms/s
    assert drifting.to_host(T0 + 50) == pytest.approx(T0 + 49.5)
    assert drifting.to_host(T0 + 200) == pytest.approx(T0 + 199)  # held constant past the last measurement
    a = {VIP: [(T0, T0 + 50.0)]}
    # taken at 50.3 in its own clock (0.503 s ahead by then), 49.797 on the host's: before the release at 50
    (found,) = overlaps(a, exact(), {VIP: [(T0 + 50.3, T0 + 90)]}, drifting)
    assert found.certain and found.length == pytest.approx(0.203, abs=1e-5)
    assert overlaps(a, exact(), {VIP: [(T0 + 50.8, T0 + 90)]}, drifting) == []  # 50.292 on the host's: after it


def test_a_gap_or_an_overlap_within_the_tolerance_is_undecided_not_hidden():
    a = {VIP: [(T0, T0 + 5.0)]}
    (gap,) = overlaps(a, exact(error=0.01), {VIP: [(T0 + 5.005, T0 + 10)]}, exact(error=0.01))
    (short,) = overlaps(a, exact(error=0.01), {VIP: [(T0 + 4.995, T0 + 10)]}, exact(error=0.01))
    assert not gap.certain and not short.certain
    assert str(gap) == f"{VIP}: gap of 0.005 s, within the clocks' tolerance of 0.020 s (undecided)"
    assert str(short).startswith(f"{VIP}: overlap of 0.005 s")
    assert overlaps(a, exact(error=0.01), {VIP: [(T0 + 5.03, T0 + 10)]}, exact(error=0.01)) == []


def test_both_holding_at_the_end_of_the_window_is_an_overlap():
    spans = holding({VIP}, T0, [], T0 + 10, {VIP})
    (found,) = overlaps(spans, exact(), holding(set(), T0, parse_monitor(line(T0 + 8, VIP)), T0 + 10, {VIP}), exact())
    assert found.certain and found.length == pytest.approx(2.0, abs=1e-5)


def test_the_offset_is_the_shortest_round_trips():
    samples = [(100.0, 150.30, 100.4), (101.0, 150.95, 101.02), (102.0, 152.5, 103.0)]
    offset = Offset.of(samples)
    assert offset == Offset(150.95, pytest.approx(49.94), pytest.approx(0.01))
    with pytest.raises(ValueError):
        Offset.of([(5.0, 1.0, 4.0)])
