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


# ---- the scale benchmark: the same lab, N sites, on each failover engine (issue 22) ------
#
# `lvsha lab bench --sites 3,50,250 --engine heartbeat,keepalived` brings the lab's five VMs
# up with the scale model (examples/scale/inventory.py, LVSHA_SCALE_SITES=N,
# LVSHA_SCALE_ENGINE=engine) once per engine and N, runs the lab tests that take the
# figures it compares (each records its own), and tears the lab down: a pytest run of the
# lab tier per engine and N, as `lvsha lab run` is. Each engine's figures land in a table
# of their own (format_scale), a column per N, which `--into docs/scale.md` writes between
# that engine's markers (scale_markers): a run of one engine rewrites its table only.
# Each engine's record of its figures is committed beside the tables (scale_record_path):
# a run on any machine replaces the N it measures and keeps the others, the record read again
# before each write (save_scale): what a git pull brought meanwhile is kept too.

SCALE_INVENTORY = ROOT / "examples" / "scale" / "inventory.py"
SCALE_FIGURES = ROOT / "tests" / "lab" / "scale_figures.py"
# The lab tests whose figures the scale benchmark compares, by name (tests/lab), per engine:
# the same measurements on each, taken by the tests that run on it (a test marked
# `<engine>_internals` runs on that engine's models only: tests/lab/conftest.py).
_SCALE_TESTS_BOTH = (
    "test_scale_figures_of_the_deployed_pair",            # scale_figures.py: processes, rules, IPVS
    "test_first_deploy_converged",                        # first deploy (the session fixture records it)
    "test_second_deploy_changes_nothing",                 # no-op deploy
    "test_benchmark_no_op_and_dry_run_against_the_floor",  # no-op deploy and dry run against pyinfra's floor
    "test_stopped_web_server_leaves_and_rejoins_rotation",  # a real server stopped: out of every site
    "test_heartbeat_stop_moves_everything",               # takeover after the engine's service stop: every VIP answers
    "test_power_off_moves_everything",                    # takeover after a power-off: every VIP answers
    "test_failover_hands_everything_over",                # lvsha failover, a client polling the VIPs (lab.poll_vips)
    # a configuration change applied in place (a site added, a health check changed, both
    # undone): addresses moved, connections broken, the deploy's time
    "test_a_site_added_and_a_health_check_changed_move_no_address",
)
SCALE_TESTS = {
    "heartbeat": (
        *_SCALE_TESTS_BOTH,
        "test_config_change_restarts_heartbeat",          # an ha.cf change: heartbeat restarted on both
    ),
    "keepalived": (
        *_SCALE_TESTS_BOTH,
        # keepalived's own takeovers: the longest wait of a client polling the VIPs (lab.poll_vips)
        "test_systemctl_stop_keepalived_on_the_active_node_is_taken_over",
        "test_power_off_of_the_active_node_is_taken_over",
    ),
}
# Each engine's record of its scale benchmark, committed beside the tables it makes
# (docs/scale.md): {engine}.json in this folder (scale_record_path).
SCALE_RECORDS = ROOT / "docs" / "scale"


def scale_markers(engine: str) -> tuple[str, str]:
    """The lines between which `--into FILE` writes `engine`'s table."""
    return (f"<!-- lvsha lab bench --sites --engine {engine}: begin (lvsha lab bench --sites ... --engine {engine} "
            f"--into FILE writes between these) -->",
            f"<!-- lvsha lab bench --sites --engine {engine}: end -->")


def parse_sites(text: str) -> list[int]:
    """"3,50,250" -> [3, 50, 250]; ValueError naming what is not a number of sites, or is
    named twice (a record keeps one run per N: the first run's exit would be lost)."""
    sites: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--sites {text!r}: {part!r} is not a number of sites (comma-separated, each 1 or more)")
        if int(part) in sites:
            raise ValueError(f"--sites {text!r}: {part!r} is named twice")
        sites.append(int(part))
    return sites


def parse_engines(text: str) -> list[str]:
    """"heartbeat,keepalived" -> ["heartbeat", "keepalived"]; ValueError naming what is not
    a failover engine, or is named twice."""
    from lvsha.model import ENGINES

    engines: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if part not in ENGINES:
            raise ValueError(f"--engine {text!r}: {part!r} is not a failover engine "
                             f"(comma-separated, each one of {', '.join(ENGINES)})")
        if part in engines:
            raise ValueError(f"--engine {text!r}: {part!r} is named twice")
        engines.append(part)
    return engines


def scale_argv(engine: str, pytest_args=()) -> list[str]:
    """The pytest run of one engine and N: the lab tier's tests that SCALE_TESTS names for
    `engine`, scale_figures first. The lab tier's files are named one by one: named beside
    its folder, scale_figures.py was collected only as part of the folder's collection
    (pytest 9 drops a path inside another it is given), which skips it (no test_ prefix)."""
    files = [SCALE_FIGURES, *sorted((ROOT / "tests" / "lab").glob("test_*.py"))]
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-v", *map(str, files),
            "-k", " or ".join(SCALE_TESTS[engine]), *pytest_args]


def scale_environment(sites: int, engine: str, environ: dict) -> dict:
    """The environment of one run: the scale model with N sites on `engine`, for the lab
    and every pyinfra run it makes (they inherit it). The model says the engine: the lab's
    own override (LVSHA_LAB_ENGINE, the migration's) is left out."""
    from lvsha.lab.model import LAB_ENGINE_ENV, LAB_INVENTORY_ENV
    from lvsha.lab.scale import ENGINE_ENV, SITES_ENV

    kept = {k: v for k, v in environ.items() if k != LAB_ENGINE_ENV}
    return {**kept, LAB_INVENTORY_ENV: str(SCALE_INVENTORY), SITES_ENV: str(sites), ENGINE_ENV: engine}


def scale_record_path(engine: str) -> Path:
    """`engine`'s record of the scale benchmark: in the repository (SCALE_RECORDS), not a
    machine's cache, so that every machine's run starts from the N measured before."""
    return SCALE_RECORDS / f"{engine}.json"


def saved_scale(engine: str) -> dict:
    """`engine`'s saved benchmark ({N: {"exit", "run", "figures"}}, each N its last
    measurement), or {} when there is none (no file in SCALE_RECORDS). LabError naming the
    file and what is wrong when it cannot be read as one (a merge's conflict markers, say): a
    run never replaces a record it could not read with the N it measures alone. LabError
    naming the folder when SCALE_RECORDS is not one: not the repository's checkout, whose
    records are not "none"."""
    path = scale_record_path(engine)
    if not path.parent.is_dir():
        raise LabError(f"{path.parent}: no such folder, where each engine's scale record is committed "
                       f"(docs/scale/<engine>.json): run lvsha from a checkout of the repository that has it")
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LabError(f"{path}: not a scale record ({error}): mend it (its git history) first") from None
    if not isinstance(saved, dict):
        raise LabError(f"{path}: not a scale record: a JSON object of N: measurement, not a {type(saved).__name__}")
    for n, r in saved.items():  # what a run records: N (a number) -> {"exit", "run", "figures"}
        if not (n.isdigit() and isinstance(r, dict) and isinstance(r.get("exit"), int)
                and isinstance(r.get("run"), dict) and isinstance(r.get("figures"), dict)):
            raise LabError(f"{path}: {n!r}: not one N's measurement (a number of sites: "
                           f'{{"exit": int, "run": {{...}}, "figures": {{...}}}}): {str(r)[:200]}')
    return saved


def save_scale(engine: str, n: int, measurement: dict, started: str) -> dict:
    """Put `measurement` of `n` sites into `engine`'s record as the record is now: read again
    (saved_scale) just before it is written, so that a change made to it while the run took
    its hours (a git pull bringing another machine's column) is kept, this N replaced. The
    record is written whole or not at all (under a temporary name beside it, then renamed).
    Returns the record written, N in ascending order.
    When the record cannot be read again, it is left as it is and LabError says why and where
    the measurement is instead: a file of its own beside it, <engine>.<N>.<started>.json, in a
    record's form ({N: measurement}), never over another; or, when even that cannot be written,
    the run's report (the lab's cache), which holds its run and figures. A write that fails
    (its OSError) leaves the record as it was and no temporary file."""
    from lvsha.lab.run import report_path

    path = scale_record_path(engine)
    try:
        record = saved_scale(engine)
    except LabError as error:
        side = path.with_name(f"{engine}.{n}.{started}.json")
        try:
            with side.open("x") as file:
                file.write(json.dumps({str(n): measurement}, indent=1) + "\n")
        except OSError as side_error:
            raise LabError(f"{engine}, {n} sites: this measurement is in no record: {path} could not be read again "
                           f"before writing it ({error}), nor could {side} be written ({side_error}); its run and "
                           f"figures are in the run's report, {report_path()} (pytest exit {measurement['exit']}), "
                           f"until the next lab run replaces it") from None
        raise LabError(f"{engine}, {n} sites: this measurement is saved in {side}, not in {path}, which could not be "
                       f"read again before writing it ({error}); once {path} is mended, put {side.name}'s "
                       f"{str(n)!r} into it") from None
    record[str(n)] = measurement
    record = dict(sorted(record.items(), key=lambda item: int(item[0])))
    staged = path.with_name(f".{path.name}.new")  # .gitignore'd
    try:
        staged.write_text(json.dumps(record, indent=1) + "\n")
        staged.replace(path)
    finally:
        staged.unlink(missing_ok=True)  # there only when the rename did not happen
    return record


def scale_bench(sites: list[int], engines: list[str], environ: dict, pytest_args=(), call=subprocess.call,
                progress=lambda line: None) -> dict:
    """Run the lab per engine in `engines` and N in `sites` (each its own up, deploy, tests,
    down); return {engine: {N: {"exit": pytest's status, "run": ..., "figures": ...}}}.
    Each engine's record (scale_record_path(engine), committed) keeps every N's last
    measurement: a run replaces the N it measures, saved as each ends (save_scale, into the
    record as it is then), and keeps the others (a benchmark of hours can be taken one N at a
    time, on any machine; each column names its own run: commit, machine, start). Every
    record is read before the first run: one that cannot be read is refused before hours are
    spent. A record that cannot be read when a run ends stops the benchmark (save_scale's
    LabError, which says where that run's measurement is).
    The result is the engine's whole record, N in ascending order."""
    from lvsha.lab.run import report_path

    results = {engine: saved_scale(engine) for engine in engines}  # every record read before the first run
    for engine in engines:
        for n in sites:
            progress(f"scale bench: {engine}, {n} sites (lab up, deploy, tests, down)")
            started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            report_path().unlink(missing_ok=True)  # an earlier run's figures are never this one's
            code = call(scale_argv(engine, pytest_args), cwd=ROOT, env=scale_environment(n, engine, environ))
            report = json.loads(report_path().read_text()) if report_path().exists() else {}
            measurement = {"exit": code, "run": report.get("run", {}), "figures": report.get("figures", {})}
            results[engine] = save_scale(engine, n, measurement, started)
            progress(f"scale bench: {engine}, {n} sites done (pytest exit {code}, "
                     f"{len(measurement['figures'])} figures)")
    return results


def scale_runs_passed(results: dict, engines: list[str], sites: list[int]) -> bool:
    """Whether every run of this benchmark (each engine in `engines`, each N in `sites`)
    passed: the records' other N, kept from earlier runs, are not this run's to answer for."""
    return all(results[engine][str(n)]["exit"] == 0 for engine in engines for n in sites)


def _figure_name(name: str, engine: str) -> str:
    """A figure's name as the table shows it: without the engine the lab's report prefixes
    to a figure taken on another engine than the default (the table says the engine)."""
    return name.removeprefix(f"{engine}: ")


def format_scale(engine: str, results: dict) -> str:
    """`engine`'s markdown table: a row per figure (in the order first recorded), a column per N."""
    columns = list(results)
    figures = {n: {_figure_name(k, engine): v for k, v in results[n]["figures"].items()} for n in columns}
    names: list[str] = []
    for n in columns:
        names += [name for name in figures[n] if name not in names]
    def run_words(run: dict) -> str:  # commit, machine, start, and the model run ("columns": its label)
        words = [str(v) for k, v in run.items() if k not in ("kind", "columns")]
        return ", ".join([*words, *(str(label) for label in run.get("columns", {}).values())])

    about = "; ".join(f"{n} sites: {run_words(results[n]['run']) or 'run not recorded'}"
                      + ("" if results[n]["exit"] == 0 else f", pytest exit {results[n]['exit']} (a test failed)")
                      for n in columns)
    lines = [f"Engine {engine}, measured by `lvsha lab bench --sites N --engine {engine}`, a run per N "
             f"({about}); seconds unless marked:", "",
             "| figure | " + " | ".join(f"{n} sites" for n in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for name in names:
        cells = [str(figures[n].get(name, "-")) for n in columns]
        lines.append(f"| {name.replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_scale_place(path: Path, engines: list[str]) -> None:
    """LabError unless `path` has each engine's markers, begin before end (checked before
    a benchmark of hours, not after it)."""
    text = path.read_text()
    for engine in engines:
        begin, end = scale_markers(engine)
        if begin not in text or end not in text.split(begin, 1)[1]:
            raise LabError(f"{path}: no place for {engine}'s table (a line {begin!r}, later {end!r})")


def write_scale_into(path: Path, results: dict) -> None:
    """Replace what stands between each engine's markers in `path` with format_scale's
    table of that engine (results: {engine: {N: ...}}); other engines' tables are kept."""
    check_scale_place(path, list(results))
    text = path.read_text()
    for engine, ours in results.items():
        begin, end = scale_markers(engine)
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{format_scale(engine, ours)}\n{end}{tail}"
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text)
    staged.replace(path)
