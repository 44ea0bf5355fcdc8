"""`lvsha lab bench`: what a no-op deploy and a dry run cost against pyinfra's own floor;
with `--sites N,...`, the scale benchmark (below).

Runs, on the running lab, `pyinfra exec -- true` (connecting to every host and
running one command: the floor), a no-op deploy and a dry run (`--dry --diff`),
interleaved round by round so that the machine's noise falls on all three
alike, and reports each one's median and spread and the ratios of the medians
to the floor's.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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


# ---- the scale benchmark: the same lab, N sites (issue 22) -----------------------------
#
# `lvsha lab bench --sites 3,50,250` brings the lab's five VMs up with the scale model
# (examples/scale/inventory.py, LVSHA_SCALE_SITES=N) once per N, runs the lab tests that
# take the figures it compares (each records its own), and tears the lab down: a pytest
# run of the lab tier per N, as `lvsha lab run` is. The figures of every N land in one
# table (format_scale), which `--into docs/scale.md` writes between its markers.

SCALE_INVENTORY = ROOT / "examples" / "scale" / "inventory.py"
SCALE_FIGURES = ROOT / "tests" / "lab" / "scale_figures.py"
# The lab tests whose figures the scale benchmark compares, by name (tests/lab).
SCALE_TESTS = (
    "test_scale_figures_of_the_deployed_pair",            # scale_figures.py: processes, rules, IPVS
    "test_first_deploy_converged",                        # first deploy (the session fixture records it)
    "test_second_deploy_changes_nothing",                 # no-op deploy
    "test_benchmark_no_op_and_dry_run_against_the_floor",  # no-op deploy and dry run against pyinfra's floor
    "test_stopped_web_server_leaves_and_rejoins_rotation",  # a real server stopped: out of every site
    "test_heartbeat_stop_moves_everything",               # takeover after a service stop: every VIP answers
    "test_power_off_moves_everything",                    # takeover after a power-off: every VIP answers
    "test_failover_hands_everything_over",                # lvsha failover, a client polling every VIP
    "test_config_change_restarts_heartbeat",              # a configuration change: heartbeat restarted on both
)
SCALE_REPORT = "scale-report.json"
SCALE_BEGIN = "<!-- lvsha lab bench --sites: begin (lvsha lab bench --sites ... --into FILE writes between these) -->"
SCALE_END = "<!-- lvsha lab bench --sites: end -->"


def parse_sites(text: str) -> list[int]:
    """"3,50,250" -> [3, 50, 250]; ValueError naming what is not a number of sites."""
    sites = []
    for part in (p.strip() for p in text.split(",")):
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--sites {text!r}: {part!r} is not a number of sites (comma-separated, each 1 or more)")
        sites.append(int(part))
    return sites


def scale_argv(pytest_args=()) -> list[str]:
    """The pytest run of one N: the lab tier's tests that SCALE_TESTS names, scale_figures first.
    The lab tier's files are named one by one: named beside its folder, scale_figures.py
    was collected only as part of the folder's collection (pytest 9 drops a path inside
    another it is given), which skips it (no test_ prefix)."""
    files = [SCALE_FIGURES, *sorted((ROOT / "tests" / "lab").glob("test_*.py"))]
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-v", *map(str, files),
            "-k", " or ".join(SCALE_TESTS), *pytest_args]


def scale_environment(sites: int, environ: dict) -> dict:
    """The environment of one N's run: the scale model with N sites, for the lab and
    every pyinfra run it makes (they inherit it)."""
    from lvsha.lab.model import LAB_INVENTORY_ENV
    from lvsha.lab.scale import SITES_ENV

    return {**environ, LAB_INVENTORY_ENV: str(SCALE_INVENTORY), SITES_ENV: str(sites)}


def scale_bench(sites: list[int], environ: dict, pytest_args=(), call=subprocess.call,
                progress=lambda line: None) -> dict:
    """Run the lab per N in `sites` (each its own up, deploy, tests, down); return and
    save (cache_dir()/SCALE_REPORT) {N: {"exit": pytest's status, "run": ..., "figures": ...}}."""
    from lvsha.lab import cache_dir
    from lvsha.lab.run import report_path

    results: dict = {}
    for n in sites:
        progress(f"scale bench: {n} sites (lab up, deploy, tests, down)")
        code = call(scale_argv(pytest_args), cwd=ROOT, env=scale_environment(n, environ))
        report = json.loads(report_path().read_text()) if report_path().exists() else {}
        results[str(n)] = {"exit": code, "run": report.get("run", {}), "figures": report.get("figures", {})}
        path = cache_dir() / SCALE_REPORT
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")
        progress(f"scale bench: {n} sites done (pytest exit {code}, {len(results[str(n)]['figures'])} figures)")
    return results


def format_scale(results: dict) -> str:
    """A markdown table: a row per figure (in the order first recorded), a column per N."""
    columns = list(results)
    names: list[str] = []
    for n in columns:
        names += [name for name in results[n]["figures"] if name not in names]
    about = "; ".join(f"{n} sites: {', '.join(str(v) for v in results[n]['run'].values()) or 'run not recorded'}"
                      + ("" if results[n]["exit"] == 0 else f", pytest exit {results[n]['exit']} (a test failed)")
                      for n in columns)
    lines = [f"Measured by `lvsha lab bench --sites {','.join(columns)}` ({about}); seconds unless marked:", "",
             "| figure | " + " | ".join(f"{n} sites" for n in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for name in names:
        cells = [str(results[n]["figures"].get(name, "-")) for n in columns]
        lines.append(f"| {name.replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_scale_into(path: Path, results: dict) -> None:
    """Replace what stands between SCALE_BEGIN and SCALE_END in `path` with format_scale's table."""
    text = path.read_text()
    if SCALE_BEGIN not in text or SCALE_END not in text.split(SCALE_BEGIN, 1)[1]:
        raise LabError(f"{path}: no place for the table (a line {SCALE_BEGIN!r}, later {SCALE_END!r})")
    head, rest = text.split(SCALE_BEGIN, 1)
    _, tail = rest.split(SCALE_END, 1)
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(f"{head}{SCALE_BEGIN}\n{format_scale(results)}\n{SCALE_END}{tail}")
    staged.replace(path)
