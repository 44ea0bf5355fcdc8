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


# ---- a long deploy is never silent, and never endless --------------------------
# The writers are real processes (sh), not threads: this tier runs under pyinfra's
# gevent once the deploy tests have imported it.

def _writer(script: str):
    import subprocess

    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    return proc


def test_a_quiet_stretch_is_reported_while_the_lines_come_through():
    import time

    seen, quiet = [], []
    proc = _writer('echo "--> Starting operation: Packages | Install"; sleep 1; echo "--> Starting operation: Firewall"')
    run.follow(proc.stdout.fileno(), time.monotonic() + 30, seen.append, quiet.append, quiet=0.2)
    proc.wait()
    assert seen == ["--> Starting operation: Packages | Install\n", "--> Starting operation: Firewall\n"]
    assert len(quiet) >= 2 and all(q >= 0.2 for q in quiet)  # reported while the install ran


def test_a_last_line_without_newline_is_not_lost():
    import time

    seen = []
    proc = _writer('printf "one\\ntwo"')
    run.follow(proc.stdout.fileno(), time.monotonic() + 30, seen.append, lambda s: None, quiet=5)
    proc.wait()
    assert seen == ["one\n", "two"]


def test_output_that_never_ends_stops_at_the_deadline():
    import time

    from lvsha.lab import LabError

    proc = _writer('echo "a line"; exec sleep 60')
    try:
        with pytest.raises(LabError, match="no end of output by the deadline"):
            run.follow(proc.stdout.fileno(), time.monotonic() + 0.5, lambda line: None, lambda s: None, quiet=0.2)
    finally:
        proc.kill()
        proc.wait()


def _fake_pyinfra(monkeypatch, script: str):
    import subprocess

    real = subprocess.Popen
    monkeypatch.setattr(run.subprocess, "Popen", lambda argv, **kwargs: real(["sh", "-c", script], **kwargs))
    monkeypatch.setattr(run, "QUIET", 0.3)
    monkeypatch.setattr(run.follow, "__defaults__", (0.3,))  # "quiet" after 0.3 s here, 30 s for real


def test_the_deploy_reports_each_operation_and_a_long_one_while_it_runs(monkeypatch):
    _fake_pyinfra(monkeypatch, 'echo "--> Starting operation: Packages | Install heartbeat"; sleep 1; '
                               'echo "--> Starting operation: Firewall | Load rules.v4"; '
                               'echo "    Grand total     10     4      -      6"')
    said = []
    result = run.deploy(progress=said.append)
    assert result.ok and result.changed == 4
    assert said[0].endswith("s Packages | Install heartbeat") and said[-1].endswith("s Firewall | Load rules.v4")
    assert any("still running: Packages | Install heartbeat" in line for line in said[1:-1]), said


def test_a_deploy_that_hangs_is_ended_at_its_timeout_saying_where(monkeypatch):
    _fake_pyinfra(monkeypatch, 'echo "--> Starting operation: Packages | Install heartbeat"; exec sleep 60')
    from lvsha.lab import LabError

    with pytest.raises(LabError, match=r"did not finish within 1 s \(at: Packages \| Install heartbeat\)"):
        run.deploy(timeout=1, progress=lambda line: None)


def test_a_demos_report_goes_to_its_own_place_never_over_the_runs(tmp_path):
    run_begin, run_end = run.report_markers("run")
    demo_begin, demo_end = run.report_markers("demo")
    page = tmp_path / "performance.md"
    page.write_text(f"{run_begin}\nthe run's table\n{run_end}\n\n{demo_begin}\nold\n{demo_end}\n")
    run.start_report("demo")
    run.record("demo: the whole demo", 612.0)
    run.write_report_into(page)
    text = page.read_text()
    assert "the run's table" in text and "old" not in text
    assert "Measured by `lvsha lab demo`" in text and "| demo: the whole demo | 612.0 |" in text


def test_the_performance_page_has_a_place_for_the_demos_report():
    page = Path(__file__).resolve().parents[2] / "docs" / "performance.md"
    begin, end = run.report_markers("demo")
    text = page.read_text()
    assert text.index(begin) < text.index(end)


def test_a_run_of_several_models_reads_across_one_column_per_model():
    """Issue 21: the figures of both engines side by side (CI's run measures the reference
    on heartbeat, edge on heartbeat, then edge on keepalived after the migration)."""
    run.start_report()
    run.set_report_label("", column="reference (heartbeat, Debian 12)")
    run.record("takeover after power-off", 13.04)
    run.record("failover command: to the peer", 21.0)
    run.set_report_label("edge (Debian 13)", column="edge (heartbeat, Debian 13)")
    run.record("takeover after power-off", 12.0)
    run.set_report_label("edge (Debian 13) keepalived", column="edge (keepalived, Debian 13)")
    run.record("takeover after power-off", 3.8)
    run.record("first deploy (migration from heartbeat)", 237.0)
    markdown = run.format_report(markdown=True).splitlines()
    assert markdown[2:] == [
        "| figure | reference (heartbeat, Debian 12) | edge (heartbeat, Debian 13) | edge (keepalived, Debian 13) |",
        "| --- | ---: | ---: | ---: |",
        "| takeover after power-off | 13.0 | 12.0 | 3.8 |",
        "| failover command: to the peer | 21.0 | - | - |",
        "| first deploy (migration from heartbeat) | - | - | 237.0 |",
    ]
    text = run.format_report().splitlines()
    assert text[1].split()[0] == "figure" and "edge (keepalived, Debian 13)" in text[1]
    assert text[2].split() == ["takeover", "after", "power-off", "13.0", "12.0", "3.8"]
    # the figures keep their prefixed names (the bench and older readers)
    assert "edge (Debian 13) keepalived: takeover after power-off" in json.loads(run.report_path().read_text())["figures"]


def test_a_run_of_one_model_stays_one_column():
    run.start_report()
    run.set_report_label("", column="reference (heartbeat, Debian 12)")
    run.record("takeover after power-off", 13.0)
    assert run.format_report(markdown=True).splitlines()[2] == "| figure | seconds |"


def test_a_report_of_several_models_from_an_older_lvsha_still_reads_across():
    run.report_path().parent.mkdir(parents=True)
    run.report_path().write_text(json.dumps({"run": {}, "figures": {
        "takeover after power-off": 13.0, "edge (Debian 13): takeover after power-off": 12.0,
        "edge (Debian 13) keepalived: takeover after power-off": 3.8, "failover command: back": 20.0}}))
    markdown = run.format_report(markdown=True).splitlines()
    assert markdown[2:] == ["| figure | reference model | edge (Debian 13) | edge (Debian 13) keepalived |",
                            "| --- | ---: | ---: | ---: |",
                            "| takeover after power-off | 13.0 | 12.0 | 3.8 |",
                            "| failover command: back | 20.0 | - | - |"]
