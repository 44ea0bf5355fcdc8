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
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from lvsha.lab import cache_dir
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


def deploy(*extra: str, timeout: float = 1800, echo: bool = False, progress=None) -> DeployResult:
    """Run `pyinfra [-y] lvsha/lab/inventory.py deploy.py EXTRA...` from the repository.

    `-y` (no prompt) is given except with --dry: pyinfra's -y also skips
    change detection, which is what a dry run is for. With `progress` (a function
    taking a line), each operation is reported as it starts, with the seconds since
    the deploy began. (Read in this thread, line by line: the test tier runs under
    pyinfra's gevent, where a reader thread and a blocking pipe would stall it.)"""
    yes = [] if "--dry" in extra else ["-y"]
    argv = [sys.executable, "-m", "pyinfra", *yes, str(LAB_INVENTORY), str(DEPLOY), *extra]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    lines, timed = [], []
    try:
        for line in proc.stdout:
            lines.append(line)
            timed.append(f"{time.monotonic() - started:7.1f} {line}")
            if echo:
                click.echo(line, nl=False)
            if progress and line.startswith(OPERATION_START):
                progress(f"{time.monotonic() - started:6.1f}s {line[len(OPERATION_START):].strip()}")
        proc.wait(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    output = "".join(lines)
    changed = errors = 0
    match = GRAND_TOTAL.search(output)
    if match:
        changed = 0 if match.group(2) == "-" else int(match.group(2))
        errors = 0 if match.group(3) == "-" else int(match.group(3))
    return DeployResult(proc.returncode, output, round(time.monotonic() - started, 1), changed, errors, "".join(timed))


# ---- the report ----------------------------------------------------------------
#
# One run's figures: {"run": {"commit", "machine", "started"}, "figures": {name: seconds}}.
# A run starts a new report (start_report), so a report never carries an earlier run's
# figures (a test skipped now, a lab that did not come up now, show nothing).

REPORT_BEGIN = "<!-- lvsha lab report: begin (lvsha lab report --markdown --into FILE writes between these) -->"
REPORT_END = "<!-- lvsha lab report: end -->"


def report_path() -> Path:
    return cache_dir() / "last-report.json"


_label = ""


def set_report_label(label: str) -> None:
    """Prefix the figures recorded from now on (the model they were measured on)."""
    global _label
    _label = label


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
    if _label:
        name = f"{_label}: {name}"
    data = _load_report()
    data["figures"][name] = round(seconds, 1)
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


def start_report() -> None:
    """A new report for the run that starts now: its commit and machine, no figures."""
    _write_report({"run": {"commit": _commit(), "machine": _machine(),
                           "started": time.strftime("%Y-%m-%d %H:%M %Z")}, "figures": {}})


def format_report(markdown: bool = False) -> str:
    """The current run's figures: aligned text, or a markdown table (with its commit and machine)."""
    data = _load_report()
    figures, run = data["figures"], data["run"]
    if not figures:
        return "lab report: no figures recorded"
    about = ", ".join(f"{key} {run[key]}" for key in ("commit", "machine", "started") if run.get(key))
    if markdown:
        lines = [f"Measured by `lvsha lab run` ({about or 'run not recorded'}), seconds unless marked (x):", "",
                 "| figure | seconds |", "| --- | ---: |"]
        lines += [f"| {name.replace('|', '/')} | {value} |" for name, value in figures.items()]
        return "\n".join(lines)
    width = max(map(len, figures))
    lines = [f"lab report (seconds{'; ' + about if about else ''}):"]
    lines += [f"  {k.ljust(width)}  {v:>7}" for k, v in figures.items()]
    return "\n".join(lines)


def write_report_into(path: Path) -> None:
    """Replace what stands between REPORT_BEGIN and REPORT_END in `path` with the report's table."""
    text = path.read_text()
    if REPORT_BEGIN not in text or REPORT_END not in text.split(REPORT_BEGIN, 1)[1]:
        raise click.ClickException(f"{path}: no place for the report (a line {REPORT_BEGIN!r}, later {REPORT_END!r})")
    head, rest = text.split(REPORT_BEGIN, 1)
    _, tail = rest.split(REPORT_END, 1)
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(f"{head}{REPORT_BEGIN}\n{format_report(markdown=True)}\n{REPORT_END}{tail}")
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

    @lab.command("bench")
    @click.option("--rounds", default=3, show_default=True, help="measurements of each kind, interleaved")
    def bench_command(rounds: int) -> None:
        """Time pyinfra's floor, a no-op deploy and a dry run on the running, deployed lab."""
        from lvsha.lab import LabError
        from lvsha.lab.bench import bench, format_figures, ratios

        start_report()  # a run of its own: its report holds its figures alone
        try:
            figures = bench(rounds, progress=click.echo)
        except LabError as error:
            raise click.ClickException(str(error)) from None
        click.echo(format_figures(figures))
        for figure in figures:
            record(f"bench: {figure.name}, median of {rounds}", figure.median)
        for name, ratio in ratios(figures).items():
            record(f"bench: {name} / floor (x)", ratio)

    @lab.command("report")
    @click.option("--markdown", is_flag=True, help="a markdown table, with the run's commit and machine")
    @click.option("--into", "into", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="write the markdown table into FILE, between its report markers (docs/performance.md)")
    def report_command(markdown: bool, into: Path | None) -> None:
        """Print the figures of the last lab run (only that run's)."""
        if into is not None:
            write_report_into(into)
            click.echo(f"lab report written into {into}")
            return
        click.echo(format_report(markdown=markdown))
