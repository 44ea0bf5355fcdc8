"""Deploying to the lab and running its end-to-end tests: `lab deploy`, `lab test`, `lab run`.

`lab run` is the main job on a machine with no servers: it runs the lab's
pytest tier, whose session fixture brings the lab up, deploys the cluster
with the real `pyinfra` command, exercises it (balancing, firewall, health
checks, failover) and tears it down; then it prints the report of timings.
"""

from __future__ import annotations

import json
import os
import platform
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from lvsha.lab import LabError, cache_dir
from lvsha.lab.image import DEFAULT_RELEASE, RELEASE_ENV, RELEASES, SECOND_MODEL_RELEASE
from lvsha.lab.model import ROOT

LAB_INVENTORY = ROOT / "lvsha" / "lab" / "inventory.py"
DEPLOY = ROOT / "deploy.py"
OPERATION_START = "--> Starting operation: "  # what pyinfra prints as each operation begins
GRAND_TOTAL = re.compile(r"Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")


@dataclass
class DeployResult:
    returncode: int
    output: str
    seconds: float
    changed: int  # operation-host pairs that changed something
    errors: int
    timed_output: str = ""  # the output, each line prefixed with the seconds since the start

    def save(self, path: Path) -> Path:
        """Write the timed output to `path` (where the seconds of a deploy went)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.timed_output)
        return path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.errors == 0


QUIET = 30.0  # s: a deploy silent this long is reported as still running


def follow(fd: int, deadline: float, on_line, on_quiet, quiet: float = QUIET) -> None:
    """Read the pipe `fd` line by line, calling on_line(line) for each line and
    on_quiet(seconds) after every `quiet` seconds without one; a LabError at
    `deadline` (time.monotonic()) if the pipe has not ended by then.

    Waits with select() in the calling thread, never a reader thread: the test
    tier runs under pyinfra's gevent, where a thread blocked on a pipe stalls the
    whole process (gevent's select is cooperative)."""
    pending, last = b"", time.monotonic()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LabError("no end of output by the deadline")
        ready, _, _ = select.select([fd], [], [], max(0.0, min(quiet - (time.monotonic() - last), left)))
        if not ready:
            if time.monotonic() - last >= quiet and time.monotonic() < deadline:
                on_quiet(time.monotonic() - last)
                last = time.monotonic()  # the next report after another quiet stretch
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            if pending:
                on_line(pending.decode(errors="replace"))
            return
        last = time.monotonic()
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            on_line(line.decode(errors="replace") + "\n")


def deploy(*extra: str, timeout: float = 1800, echo: bool = False, progress=None) -> DeployResult:
    """Run `pyinfra [-y] lvsha/lab/inventory.py deploy.py EXTRA...` from the repository.

    `-y` (no prompt) is given except with --dry: pyinfra's -y also skips
    change detection, which is what a dry run is for. With `progress` (a function
    taking a line), each operation is reported as it starts, and a long one every
    30 s while it runs (with the seconds since the deploy began), so a long deploy
    is never silent. A deploy still running after `timeout` seconds is ended and a
    LabError says where it was, with its last lines."""
    yes = [] if "--dry" in extra else ["-y"]
    argv = [sys.executable, "-m", "pyinfra", *yes, str(LAB_INVENTORY), str(DEPLOY), *extra]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    lines, timed = [], []
    current = ["connecting and reading facts"]

    def on_line(line: str) -> None:
        lines.append(line)
        timed.append(f"{time.monotonic() - started:7.1f} {line}")
        if echo:
            click.echo(line, nl=False)
        if progress and line.startswith(OPERATION_START):
            current[0] = line[len(OPERATION_START):].strip()
            progress(f"{time.monotonic() - started:6.1f}s {current[0]}")

    def on_quiet(silent: float) -> None:
        if progress:
            progress(f"{time.monotonic() - started:6.1f}s still running: {current[0]}")

    try:
        follow(proc.stdout.fileno(), started + timeout, on_line, on_quiet)
        proc.wait(timeout=max(1.0, started + timeout - time.monotonic()))
    except (LabError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
        raise LabError(f"the deploy did not finish within {timeout:g} s (at: {current[0]}); its last lines:\n"
                       + "".join(lines[-20:])) from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    output = "".join(lines)
    changed = errors = 0
    match = GRAND_TOTAL.search(output)
    if match:
        changed = 0 if match.group(2) == "-" else int(match.group(2))
        errors = 0 if match.group(3) == "-" else int(match.group(3))
    return DeployResult(proc.returncode, output, round(time.monotonic() - started, 1), changed, errors, "".join(timed))


# ---- the report ----------------------------------------------------------------
#
# One run's figures: {"run": {"kind", "commit", "machine", "started"}, "figures": {name: seconds}}.
# A run starts a new report (start_report), so a report never carries an earlier run's
# figures (a test skipped now, a lab that did not come up now, show nothing). Its kind
# is the command that made it: "run" (the lab's test tier), "demo" or "bench"; a page
# has one place per kind (markers), so a demo's report never overwrites a run's.

REPORT_BEGIN = "<!-- lvsha lab report: begin (lvsha lab report --markdown --into FILE writes between these) -->"
REPORT_END = "<!-- lvsha lab report: end -->"


def report_markers(kind: str = "run") -> tuple[str, str]:
    """The lines between which `lvsha lab report --into FILE` writes a report of `kind`."""
    if kind == "run":
        return REPORT_BEGIN, REPORT_END
    return f"<!-- lvsha lab report ({kind}): begin -->", f"<!-- lvsha lab report ({kind}): end -->"


def report_path() -> Path:
    return cache_dir() / "last-report.json"


_label = ""


def set_report_label(label: str, column: str | None = None) -> None:
    """Prefix the figures recorded from now on (the model they were measured on); `column`
    names that model's column when the report puts several side by side (its engine and
    release: format_report)."""
    global _label
    _label = label
    if column is not None:
        data = _load_report()
        data["run"].setdefault("columns", {})[label] = column
        _write_report(data)


def _load_report() -> dict:
    path = report_path()
    data = json.loads(path.read_text()) if path.exists() else {}
    if "figures" not in data:  # none yet, or a report of an older lvsha: figures only
        data = {"run": {}, "figures": data}
    return data


def _write_report(data: dict) -> None:
    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(json.dumps(data, indent=1) + "\n")
    staged.replace(path)


def record(name: str, seconds: float) -> None:
    """Add one timing (seconds) to the report of the current run."""
    bare = name
    if _label:
        name = f"{_label}: {name}"
    data = _load_report()
    data["figures"][name] = round(seconds, 1)
    data.setdefault("labels", {})[name] = [_label, bare]
    _write_report(data)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _machine() -> str:
    try:
        kib = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")).split()[1])
        memory = f", {round(kib / 1024 / 1024)} GiB"
    except (OSError, StopIteration, ValueError, IndexError):
        memory = ""
    return f"{os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, QEMU guests"


def start_report(kind: str = "run") -> None:
    """A new report for the run that starts now (`lvsha lab KIND`): its commit and machine, no figures."""
    _write_report({"run": {"kind": kind, "commit": _commit(), "machine": _machine(),
                           "started": time.strftime("%Y-%m-%d %H:%M %Z")}, "figures": {}})


def format_report(markdown: bool = False) -> str:
    """The current run's figures: aligned text, or a markdown table (with its commit and machine)."""
    data = _load_report()
    figures, run = data["figures"], data["run"]
    if not figures:
        return "lab report: no figures recorded"
    about = ", ".join(f"{key} {run[key]}" for key in ("commit", "machine", "started") if run.get(key))
    table = _side_by_side(data)
    if table:
        header, rows = table
        if markdown:
            lines = [f"Measured by `lvsha lab {run.get('kind', 'run')}` ({about or 'run not recorded'}), "
                     "seconds unless marked (x), each model's lab a column:", "",
                     "| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
            lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
            return "\n".join(lines)
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [f"lab report (seconds{'; ' + about if about else ''}; each model's lab a column):"]
        lines += ["  " + "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))])
                  for row in [header, *rows]]
        return "\n".join(lines)
    if markdown:
        lines = [f"Measured by `lvsha lab {run.get('kind', 'run')}` ({about or 'run not recorded'}), "
                 "seconds unless marked (x):", "",
                 "| figure | seconds |", "| --- | ---: |"]
        lines += [f"| {name.replace('|', '/')} | {value} |" for name, value in figures.items()]
        return "\n".join(lines)
    width = max(map(len, figures))
    lines = [f"lab report (seconds{'; ' + about if about else ''}):"]
    lines += [f"  {k.ljust(width)}  {v:>7}" for k, v in figures.items()]
    return "\n".join(lines)


def _side_by_side(data: dict) -> tuple[list[str], list[list[str]]] | None:
    """The figures of a run that measured several models (the reference, edge on heartbeat,
    edge on keepalived...) as one row per figure and one column per model, so that the
    same figure on each engine and release reads across; None for a run of one model."""
    labels = data.get("labels", {})
    placed = {name: labels.get(name) or _prefixed(name) for name in data["figures"]}
    order = list(dict.fromkeys(label for label, _ in placed.values()))
    if len(order) < 2:
        return None
    names = data["run"].get("columns", {})
    header = ["figure", *(names.get(label) or label or "reference model" for label in order)]
    cells: dict[str, dict[str, str]] = {}
    for name, value in data["figures"].items():
        label, bare = placed[name]
        cells.setdefault(bare, {})[label] = str(value)
    return header, [[bare, *(row.get(label, "-") for label in order)] for bare, row in cells.items()]


def _prefixed(name: str) -> list[str]:
    """[label, figure] of a figure recorded without its label apart (a report of an older
    lvsha): the labels the lab tier sets, "MODEL (Debian N)" and an engine after it."""
    match = re.match(r"^(\S+ \(Debian \d+\)(?: \w+)?): (.+)$", name)
    return [match[1], match[2]] if match else ["", name]


def write_report_into(path: Path) -> None:
    """Replace what stands between the markers of the report's kind in `path` with its table."""
    begin, end = report_markers(_load_report()["run"].get("kind", "run"))
    text = path.read_text()
    if begin not in text or end not in text.split(begin, 1)[1]:
        raise click.ClickException(f"{path}: no place for the report (a line {begin!r}, later {end!r})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(f"{head}{begin}\n{format_report(markdown=True)}\n{end}{tail}")
    staged.replace(path)


# ---- commands --------------------------------------------------------------------

def add_commands(lab: click.Group) -> None:
    @lab.command("deploy")
    @click.option("--dry", is_flag=True, help="show what would change (with file diffs), change nothing")
    def deploy_command(dry: bool) -> None:
        """Deploy the cluster to the running lab with pyinfra."""
        extra = ("--dry", "--diff") if dry else ()
        result = deploy(*extra, echo=True)
        click.echo(f"lab deploy: {'dry run, ' if dry else ''}{result.changed} change(s), "
                   f"{result.errors} error(s) in {result.seconds}s")
        sys.exit(0 if result.ok else 1)

    @lab.command("test", context_settings={"ignore_unknown_options": True})
    @click.argument("pytest_args", nargs=-1)
    def test_command(pytest_args) -> None:
        """Run the end-to-end tests against the lab that is already up (and deployed)."""
        env = {**os.environ, "LVSHA_LAB_REUSE": "1"}
        sys.exit(subprocess.call([sys.executable, "-m", "pytest", "tests/lab", *pytest_args], cwd=ROOT, env=env))

    @lab.command("run", context_settings={"ignore_unknown_options": True})
    @click.option("--release", type=click.Choice(sorted(RELEASES)), default=None,
                  help="every model's lab on this Debian release (default: the reference model's whole "
                       f"tier on Debian {DEFAULT_RELEASE}, the second model's on Debian {SECOND_MODEL_RELEASE})")
    @click.argument("pytest_args", nargs=-1)
    def run_command(release, pytest_args) -> None:
        """The whole lab: up, deploy, test (balancing, firewall, failover), report, down."""
        env = {**os.environ, RELEASE_ENV: release} if release else None
        # -s shows the lab's progress lines as they happen; -v names each check.
        code = subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-v", "tests/lab",
                                *pytest_args], cwd=ROOT, env=env)
        click.echo(format_report())
        sys.exit(code)

    @lab.command("demo")
    @click.option("--keep", is_flag=True, help="leave the lab up at the end, to try things by hand")
    @click.option("--release", type=click.Choice(sorted(RELEASES)), envvar=RELEASE_ENV, default=DEFAULT_RELEASE,
                  show_default=True, help="the guests' Debian release")
    def demo_command(keep: bool, release: str) -> None:
        """See it work: lab up, deploy, balance, power off the active balancer, back, down."""
        from lvsha.lab.demo import run_demo

        sys.exit(run_demo(click.echo, keep=keep, release=release))

    @lab.command("bench", context_settings={"ignore_unknown_options": True})
    @click.option("--rounds", default=3, show_default=True, help="measurements of each kind, interleaved")
    @click.option("--sites", "sites", default=None, metavar="N[,N...]",
                  help="the scale benchmark instead: the lab brought up, deployed, measured and torn down "
                       "with the scale model of N sites (examples/scale/inventory.py), for each N")
    @click.option("--engine", "engines", default=None, metavar="ENGINE[,ENGINE]",
                  help="with --sites: the scale model's failover engine, heartbeat (the default) or keepalived; "
                       "both comma-separated: each engine its own run per N and its own table")
    @click.option("--into", "into", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="with --sites: write each engine's table into FILE, between that engine's markers "
                       "(docs/scale.md)")
    @click.argument("pytest_args", nargs=-1)
    def bench_command(rounds: int, sites: str | None, engines: str | None, into: Path | None, pytest_args) -> None:
        """Time pyinfra's floor, a no-op deploy and a dry run on the running, deployed lab;
        with --sites, compare the lab at N sites, on each --engine (no lab may be up: each
        engine and N brings its own)."""
        from lvsha.lab import LabError
        from lvsha.lab.bench import bench, format_figures, ratios

        if sites is not None:
            _scale_bench(sites, engines, into, pytest_args)
            return
        if into is not None or engines is not None or pytest_args:
            raise click.UsageError("--engine, --into and pytest arguments go with --sites")
        start_report("bench")  # a run of its own: its report holds its figures alone
        try:
            figures = bench(rounds, progress=click.echo)
        except LabError as error:
            raise click.ClickException(str(error)) from None
        click.echo(format_figures(figures))
        for figure in figures:
            record(f"bench: {figure.name}, median of {rounds}", figure.median)
        for name, ratio in ratios(figures).items():
            record(f"bench: {name} / floor (x)", ratio)

    def _scale_report(into: Path | None) -> None:
        """The scale benchmark's tables from each engine's record, printed, and with `into`
        written between each engine's markers; an engine without a record is left as it is."""
        from lvsha.lab import LabError
        from lvsha.lab.bench import check_scale_place, format_scale, saved_scale, write_scale_into
        from lvsha.model import ENGINES

        try:
            results = {engine: saved for engine in ENGINES if (saved := saved_scale(engine))}
        except LabError as error:
            raise click.ClickException(str(error)) from None
        if not results:
            raise click.ClickException("no scale benchmark on record (lvsha lab bench --sites N first)")
        for engine, ours in results.items():
            click.echo(format_scale(engine, ours))
        if into is not None:
            try:
                check_scale_place(into, list(results))
            except LabError as error:
                raise click.ClickException(str(error)) from None
            write_scale_into(into, results)
            click.echo(f"scale tables ({', '.join(results)}) written into {into}")

    def _scale_bench(sites: str, engines: str | None, into: Path | None, pytest_args) -> None:
        from lvsha.lab import LabError
        from lvsha.lab import lab as lab_api
        from lvsha.lab.bench import (check_scale_place, format_scale, parse_engines, parse_sites, saved_scale,
                                     scale_bench, scale_runs_passed, write_scale_into)
        from lvsha.lab.scale import DEFAULT_ENGINE

        try:
            counts = parse_sites(sites)
            chosen = parse_engines(engines if engines is not None else DEFAULT_ENGINE)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        try:  # before a benchmark of hours, not after it
            for engine in chosen:
                saved_scale(engine)
            if into is not None:
                check_scale_place(into, chosen)
        except LabError as error:
            raise click.ClickException(str(error)) from None
        if lab_api.status().get("status") != "down":
            raise click.ClickException("a lab is up: the scale benchmark brings its own for each N (lvsha lab down first)")
        try:
            results = scale_bench(counts, chosen, dict(os.environ), pytest_args, progress=click.echo)
        except LabError as error:  # a record that could not be read again: where the measurement went instead
            raise click.ClickException(str(error)) from None
        for engine, ours in results.items():
            click.echo(format_scale(engine, ours))
        if into is not None:
            write_scale_into(into, results)
            click.echo(f"scale tables ({', '.join(results)}) written into {into}")
        sys.exit(0 if scale_runs_passed(results, chosen, counts) else 1)

    @lab.command("report")
    @click.option("--markdown", is_flag=True, help="a markdown table, with the run's commit and machine")
    @click.option("--scale", is_flag=True,
                  help="the scale benchmark's tables instead: each engine's record, every N's last measurement "
                       "(lvsha lab bench --sites)")
    @click.option("--into", "into", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="write the markdown table into FILE, between its report markers (docs/performance.md; "
                       "with --scale: each engine's, between that engine's markers: docs/scale.md)")
    def report_command(markdown: bool, scale: bool, into: Path | None) -> None:
        """Print the figures of the last lab run (only that run's)."""
        if scale:
            _scale_report(into)
            return
        if into is not None:
            write_report_into(into)
            click.echo(f"lab report written into {into}")
            return
        click.echo(format_report(markdown=markdown))
