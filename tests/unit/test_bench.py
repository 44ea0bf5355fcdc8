"""The benchmark's arithmetic (its runs are the lab's: tests/lab/test_1_deploy.py), and
the scale benchmark's wiring (`lvsha lab bench --sites`), with a fake lab run."""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvsha.cli import main
from lvsha.lab import bench as bench_module
from lvsha.lab import run
from lvsha.lab.bench import DRY, FLOOR, NO_OP, Figures, format_figures, ratios
from lvsha.lab.model import LAB_INVENTORY_ENV
from lvsha.lab.scale import SITES_ENV


def test_ratios_are_medians_over_the_floor_median():
    figures = [Figures(FLOOR, (4.0, 5.0, 40.0)), Figures(NO_OP, (9.0, 10.0, 11.0)), Figures(DRY, (20.0, 15.0, 10.0))]
    assert ratios(figures) == {NO_OP: 2.0, DRY: 3.0}
    assert figures[0].spread == 36.0
    text = format_figures(figures)
    assert "no-op deploy / floor" in text and "2.00x" in text and "3.00x" in text


# ---- the scale benchmark (`lvsha lab bench --sites`) ----

LAB_TESTS = Path(__file__).resolve().parents[1] / "lab"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LVSHA_LAB_CACHE", str(tmp_path / "cache"))
    run.set_report_label("")
    return tmp_path / "cache"


def test_sites_are_a_comma_separated_list_of_counts():
    assert bench_module.parse_sites("3,50, 250") == [3, 50, 250]
    for bad in ("", "3,,50", "0", "many", "3;50"):
        with pytest.raises(ValueError, match="--sites"):
            bench_module.parse_sites(bad)


def test_every_test_the_scale_benchmark_selects_exists_in_the_lab_tier():
    defined = {name for path in LAB_TESTS.glob("*.py")
               for name in re.findall(r"^def (test_\w+)\(", path.read_text(), re.M)}
    for selected in bench_module.SCALE_TESTS:
        assert [name for name in defined if selected in name], f"{selected}: no lab test by that name"
    argv = bench_module.scale_argv(["-x"])
    assert argv[argv.index("-k") + 1] == " or ".join(bench_module.SCALE_TESTS) and argv[-1] == "-x"
    assert argv.index(str(bench_module.SCALE_FIGURES)) < argv.index(str(LAB_TESTS / "test_1_deploy.py"))


def _collected(argv, env) -> list[str]:
    """The lab tests a scale run's pytest would run (its own argv, collection only): node ids
    (-qq: its own -v and these leave pytest's shortest listing)."""
    import subprocess

    result = subprocess.run([*argv, "--collect-only", "-qq"], cwd=bench_module.ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_scale_run_collects_each_selected_test_once_scale_figures_first():
    """What pytest collects of the scale run's argv, on the scale model of 3 sites (the lab's
    conftest deselects by the model's engine): every test SCALE_TESTS names, once."""
    import os

    collected = _collected(bench_module.scale_argv(), bench_module.scale_environment(3, dict(os.environ)))
    assert collected[0].startswith("tests/lab/scale_figures.py::test_scale_figures_of_the_deployed_pair")
    for selected in bench_module.SCALE_TESTS:
        assert len([node for node in collected if f"::{selected}" in node]) == 1, (selected, collected)
    assert len(collected) == len(bench_module.SCALE_TESTS)


def test_each_run_deploys_the_scale_model_of_its_number_of_sites():
    env = bench_module.scale_environment(250, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", LAB_INVENTORY_ENV: str(bench_module.SCALE_INVENTORY), SITES_ENV: "250"}
    assert bench_module.SCALE_INVENTORY.is_file()


def _fake_lab(figures_by_sites, exits=None):
    """A stand-in for the pytest run of the lab: records what it was given, writes a report."""
    calls = []

    def call(argv, cwd, env):
        sites = int(env[SITES_ENV])
        calls.append((argv, sites))
        run.start_report()
        for name, value in figures_by_sites[sites].items():
            run.record(name, value)
        return (exits or {}).get(sites, 0)

    return call, calls


def test_the_scale_benchmark_runs_the_lab_once_per_count_and_tables_every_figure(cache, tmp_path):
    call, calls = _fake_lab({3: {"first deploy": 400.0, "takeover after power-off": 14.6},
                             250: {"first deploy": 900.0, "ldirectord processes (count)": 251}}, exits={250: 1})
    results = bench_module.scale_bench([3, 250], {"PATH": "/bin"}, call=call)
    assert [sites for _, sites in calls] == [3, 250]
    assert json.loads((cache / bench_module.SCALE_REPORT).read_text()) == results
    table = bench_module.format_scale(results)
    assert "| figure | 3 sites | 250 sites |" in table
    assert "| first deploy | 400.0 | 900.0 |" in table
    assert "| takeover after power-off | 14.6 | - |" in table and "| ldirectord processes (count) | - | 251 |" in table
    assert "250 sites: " in table and "pytest exit 1 (a test failed)" in table
    doc = tmp_path / "scale.md"
    doc.write_text(f"before\n{bench_module.SCALE_BEGIN}\nold table\n{bench_module.SCALE_END}\nafter\n")
    bench_module.write_scale_into(doc, results)
    text = doc.read_text()
    assert "old table" not in text and table in text and text.startswith("before\n") and text.endswith("after\n")


def test_the_scale_benchmark_refuses_while_a_lab_is_up(cache, monkeypatch):
    from lvsha.lab import lab as lab_api

    monkeypatch.setattr(lab_api, "status", lambda: {"status": "up"})
    monkeypatch.setattr(bench_module, "scale_bench", lambda *a, **k: pytest.fail("ran with a lab up"))
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "3"])
    assert result.exit_code != 0 and "lvsha lab down first" in result.output
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "3,x"])
    assert result.exit_code == 2 and "not a number of sites" in result.output