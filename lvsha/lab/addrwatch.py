"""Who held which floating address when, from each balancer's own kernel events,
and whether the two ever held one at the same time (the lab's "never on both").

Sampling both balancers every few seconds cannot see two holders for less than a
sample's interval. Each balancer instead logs every address the kernel adds or
deletes (`ip -o -ts monitor address`, run with TZ=UTC: each line stamped with the
guest's wall clock, to the microsecond, when `ip` prints it), from a snapshot of
what it held when the log started. That gives each node's holding intervals, in
its own clock.

The two clocks are not the same clock: the lab's guests run no time sync (TCG,
no kvm-clock), so a guest's wall clock may be off the host's by any amount and
drift. Each guest's offset from the host is measured NTP-style over one SSH
session (`Offset.measure`'s samples: host time before, guest time, host time
after, keeping the sample with the shortest round trip: the guest read its clock
within that round trip, so the offset is known to half of it) when the log
starts and again when it is read, and interpolated between the two. Both nodes'
intervals are put on the host's clock; two intervals of one address that overlap
by more than the sum of both offsets' errors (the tolerance) are two holders for
certain, whatever the clocks did. An overlap, or a gap, shorter than the
tolerance cannot be decided by clocks: it is reported as such, with its length.
Not counted in the tolerance: `ip` stamps a line when it prints it, after the
kernel's event (milliseconds on an idle guest, the same on both sides).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

# `ip -o -ts monitor address`: "[2026-11-26T12:00:00.123456] [Deleted ]3: eth0    inet 10.0.0.1/24 ..."
_EVENT = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\]\s+(Deleted\s+)?\d+:\s+(\S+)\s+inet6?\s+([0-9A-Fa-f.:]+)/\d+")


@dataclass(frozen=True)
class Event:
    at: float  # the guest's wall clock, seconds since the epoch
    added: bool
    address: str
    interface: str


def parse_monitor(text: str) -> list[Event]:
    """The address events of `ip -o -ts monitor address` output (printed in UTC)."""
    events = []
    for line in text.splitlines():
        found = _EVENT.match(line.strip())
        if found:
            stamp, deleted, interface, address = found.groups()
            at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
            events.append(Event(at, not deleted, address, interface))
    return events


def holding(held: set[str], since: float, events: list[Event], until: float,
            watched: set[str]) -> dict[str, list[tuple[float, float]]]:
    """{address: [(from, to), ...]} of the `watched` addresses a node held between
    `since` (when it held `held`) and `until`, in its own clock. Events are applied
    in order and idempotently (an add of an address held, a delete of one not held,
    change nothing): an event that happened around the snapshot, in it and in the
    log both, is counted once."""
    start = {a: since for a in held & watched}
    spans: dict[str, list[tuple[float, float]]] = {a: [] for a in watched}
    for event in sorted((e for e in events if since <= e.at <= until and e.address in watched), key=lambda e: e.at):
        if event.added and event.address not in start:
            start[event.address] = event.at
        elif not event.added and event.address in start:
            spans[event.address].append((start.pop(event.address), event.at))
    for address, began in start.items():
        spans[address].append((began, until))
    return spans


@dataclass(frozen=True)
class Offset:
    """A guest's clock minus the host's, known to +-`error` s, measured at guest time `at`."""
    at: float
    offset: float
    error: float

    @staticmethod
    def of(samples: list[tuple[float, float, float]]) -> Offset:
        """From (host time sent, guest time read, host time answered) samples: the
        one with the shortest round trip."""
        sent, read, answered = min(samples, key=lambda s: s[2] - s[0])
        if answered < sent:
            raise ValueError(f"a clock sample answered before it was sent: {sent} > {answered}")
        return Offset(read, read - (sent + answered) / 2, (answered - sent) / 2)


@dataclass(frozen=True)
class Clock:
    """A guest's clock put on the host's: its offset measured before and after,
    interpolated linearly in between (held constant outside)."""
    first: Offset
    last: Offset

    @property
    def error(self) -> float:
        return max(self.first.error, self.last.error)

    def to_host(self, t: float) -> float:
        span = self.last.at - self.first.at
        share = 0.0 if span <= 0 else min(1.0, max(0.0, (t - self.first.at) / span))
        return t - (self.first.offset + share * (self.last.offset - self.first.offset))


@dataclass(frozen=True)
class Overlap:
    """Both nodes held `address` from `start` to `end` (host clock); a negative
    length is a gap shorter than the tolerance: undecided, like a short overlap."""
    address: str
    start: float
    end: float
    tolerance: float

    @property
    def length(self) -> float:
        return self.end - self.start

    @property
    def certain(self) -> bool:
        return self.length > self.tolerance

    def __str__(self) -> str:
        if self.certain:
            return f"{self.address} on both for {self.length:.3f} s (clocks known to {self.tolerance:.3f} s)"
        said = f"overlap of {self.length:.3f} s" if self.length >= 0 else f"gap of {-self.length:.3f} s"
        return f"{self.address}: {said}, within the clocks' tolerance of {self.tolerance:.3f} s (undecided)"


def overlaps(first: dict[str, list[tuple[float, float]]], first_clock: Clock,
             second: dict[str, list[tuple[float, float]]], second_clock: Clock) -> list[Overlap]:
    """Every time the two nodes held one address at once, or may have (within the
    tolerance), their intervals put on the host's clock; in time order."""
    tolerance = first_clock.error + second_clock.error
    found = []
    for address in sorted(set(first) & set(second)):
        for a_from, a_to in first[address]:
            for b_from, b_to in second[address]:
                start = max(first_clock.to_host(a_from), second_clock.to_host(b_from))
                end = min(first_clock.to_host(a_to), second_clock.to_host(b_to))
                if end - start > -tolerance:
                    found.append(Overlap(address, start, end, tolerance))
    return sorted(found, key=lambda o: o.start)
