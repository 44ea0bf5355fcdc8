"""`lvsha lab bench`: what a no-op deploy and a dry run cost against pyinfra's own floor.

Runs, on the running lab, `pyinfra exec -- true` (connecting to every host and
running one command: the floor), a no-op deploy and a dry run (`--dry --diff`),
interleaved round by round so that the machine's noise falls on all three
alike, and reports each one's median and spread and the ratios of the medians
to the floor's.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from lvsha.lab import LabError
from lvsha.lab.run import LAB_INVENTORY, ROOT, deploy

FLOOR = "floor: pyinfra exec -- true"
NO_OP = "no-op deploy"
DRY = "dry run (--dry --diff)"


@dataclass(frozen=True)
class Figures:
    name: str
    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        return max(self.seconds) - min(self.seconds)


def _floor() -> float:
    started = time.monotonic()
    argv = [sys.executable, "-m", "pyinfra", "-y", str(LAB_INVENTORY), "exec", "--", "true"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    if result.returncode != 0:
        raise LabError(f"pyinfra exec -- true failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return time.monotonic() - started


def _timed_deploy(*extra: str) -> float:
    result = deploy(*extra, timeout=900)
    if not result.ok or ("--dry" not in extra and result.changed):
        raise LabError(f"the converged lab is not a no-op ({result.changed} changes, {result.errors} errors):\n"
                       f"{result.output[-3000:]}")
    return result.seconds


def bench(rounds: int = 3, progress=lambda line: None) -> list[Figures]:
    """Each measurement `rounds` times, interleaved; the lab must be up and converged."""
    runs = {FLOOR: _floor, NO_OP: _timed_deploy, DRY: lambda: _timed_deploy("--dry", "--diff")}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(1, rounds + 1):
        for name, run in runs.items():
            seconds[name].append(round(run(), 1))
            progress(f"bench round {round_}/{rounds}: {name} {seconds[name][-1]} s")
    return [Figures(name, tuple(values)) for name, values in seconds.items()]


def ratios(figures: list[Figures]) -> dict[str, float]:
    """Median of each measurement over the floor's median."""
    floor = next(f for f in figures if f.name == FLOOR).median
    return {f.name: round(f.median / floor, 2) for f in figures if f.name != FLOOR}


def format_figures(figures: list[Figures]) -> str:
    lines = [f"{'':28} {'median':>8} {'spread':>8}  runs (s)"]
    lines += [f"{f.name:28} {f.median:8.1f} {f.spread:8.1f}  {', '.join(map(str, f.seconds))}" for f in figures]
    lines += [f"{name + ' / floor':28} {ratio:8.2f}x" for name, ratio in ratios(figures).items()]
    return "\n".join(lines)
