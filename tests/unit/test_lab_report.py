"""The lab's report (lvsha.lab.run): one run's figures only, as text or a markdown
table with the run's commit and machine, written into docs/performance.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvsha.cli import main
from lvsha.lab import run


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LVSHA_LAB_CACHE", str(tmp_path / "cache"))
    run.set_report_label("")
    yield tmp_path / "cache"
    run.set_report_label("")


def test_a_new_run_never_shows_an_earlier_runs_figures():
    """The issue's case: a run on another model printed an earlier run's link-failure
    and edge figures, carried over from the cache."""
    run.start_report()
    run.record("external link of the active balancer cut: the peer carries and serves", 24.1)
    run.set_report_label("edge (Debian 13)")
    run.record("first deploy", 78.04)
    run.set_report_label("")
    run.start_report()  # the next run
    run.record("first deploy", 433.2)
    text = run.format_report()
    assert "first deploy" in text and "433.2" in text
    assert "24.1" not in text and "edge" not in text


def test_the_report_says_which_commit_and_machine_it_measured():
    run.start_report()
    run.record("takeover after power-off", 12.94)
    saved = json.loads(run.report_path().read_text())
    assert saved["figures"] == {"takeover after power-off": 12.9}
    assert {"commit", "machine", "started"} <= set(saved["run"]) and "cores" in saved["run"]["machine"]
    markdown = run.format_report(markdown=True).splitlines()
    assert markdown[0].startswith("Measured by `lvsha lab run` (commit ") and saved["run"]["commit"] in markdown[0]
    assert markdown[2:] == ["| figure | seconds |", "| --- | ---: |", "| takeover after power-off | 12.9 |"]


def test_a_report_of_an_older_lvsha_still_reads():
    run.report_path().parent.mkdir(parents=True)
    run.report_path().write_text(json.dumps({"no-op deploy": 8.4}))
    assert "no-op deploy" in run.format_report()
    run.record("dry run", 7.1)
    assert json.loads(run.report_path().read_text())["figures"] == {"no-op deploy": 8.4, "dry run": 7.1}


def test_the_table_goes_between_the_markers_of_a_page(tmp_path):
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n\nintro\n\n{run.REPORT_BEGIN}\nold table\n{run.REPORT_END}\n\n## After\n")
    run.start_report()
    run.record("no-op deploy", 6.6)
    result = CliRunner().invoke(main, ["lab", "report", "--into", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "old table" not in text and "| no-op deploy | 6.6 |" in text
    assert text.startswith("# Performance\n\nintro\n\n") and text.endswith(f"{run.REPORT_END}\n\n## After\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "performance.md"]  # nothing staged left


def test_a_page_without_markers_is_refused_naming_it(tmp_path):
    page = tmp_path / "notes.md"
    page.write_text("# Notes\n")
    run.start_report()
    run.record("no-op deploy", 6.6)
    result = CliRunner().invoke(main, ["lab", "report", "--into", str(page)])
    assert result.exit_code != 0 and f"{page}: no place for the report" in result.output
    assert page.read_text() == "# Notes\n"


def test_the_performance_page_has_the_markers():
    page = Path(__file__).resolve().parents[2] / "docs" / "performance.md"
    text = page.read_text()
    assert text.index(run.REPORT_BEGIN) < text.index(run.REPORT_END)


# ---- a long deploy reports its progress ---------------------------------------

def test_the_deploy_reports_each_operation_as_it_starts(monkeypatch):
    import subprocess

    real = subprocess.Popen
    script = ('echo "--> Starting operation: Packages | Install heartbeat"; '
              'echo "--> Starting operation: Firewall | Load rules.v4"; '
              'echo "    Grand total     10     4      -      6"')
    monkeypatch.setattr(run.subprocess, "Popen", lambda argv, **kwargs: real(["sh", "-c", script], **kwargs))
    said = []
    result = run.deploy(progress=said.append)
    assert result.ok and result.changed == 4
    assert [line.split("s ", 1)[1] for line in said] == ["Packages | Install heartbeat", "Firewall | Load rules.v4"]
