"""Deploying to the lab and running its end-to-end tests: `lab deploy`, `lab test`, `lab run`.

`lab run` is the main job on a machine with no servers: it runs the lab's
pytest tier, whose session fixture brings the lab up, deploys the cluster
with the real `pyinfra` command, exercises it (balancing, firewall, health
checks, failover) and tears it down; then it prints the report of timings.
"""

from __future__ import annotations

import json
import os
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


def deploy(*extra: str, timeout: float = 1800, echo: bool = False) -> DeployResult:
    """Run `pyinfra [-y] lvsha/lab/inventory.py deploy.py EXTRA...` from the repository.

    `-y` (no prompt) is given except with --dry: pyinfra's -y also skips
    change detection, which is what a dry run is for."""
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

def report_path() -> Path:
    return cache_dir() / "last-report.json"


_label = ""


def set_report_label(label: str) -> None:
    """Prefix the figures recorded from now on (the model they were measured on)."""
    global _label
    _label = label


def record(name: str, seconds: float) -> None:
    """Add one timing (seconds) to the report of the current run."""
    if _label:
        name = f"{_label}: {name}"
    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = round(seconds, 1)
    path.write_text(json.dumps(data, indent=1) + "\n")


def start_report() -> None:
    report_path().unlink(missing_ok=True)


def format_report() -> str:
    path = report_path()
    if not path.exists():
        return "lab report: no figures recorded"
    data = json.loads(path.read_text())
    width = max(map(len, data)) if data else 0
    lines = ["lab report (seconds):"] + [f"  {k.ljust(width)}  {v:>7}" for k, v in data.items()]
    return "\n".join(lines)


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
    def report_command() -> None:
        """Print the timings of the last lab run."""
        click.echo(format_report())
