"""The benchmark's arithmetic (its runs are the lab's: tests/lab/test_1_deploy.py), and
the scale benchmark's wiring (`lvsha lab bench --sites ... --engine ...`), with a fake lab run."""

import functools
import itertools
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvsha.cli import main
from lvsha.lab import bench as bench_module
from lvsha.lab import run
from lvsha.lab.bench import DRY, FLOOR, NO_OP, Figures, format_figures, ratios
from lvsha.lab import LabError
from lvsha.lab.model import LAB_ENGINE_ENV, LAB_INVENTORY_ENV
from lvsha.lab.scale import ENGINE_ENV, SITES_ENV
from lvsha.model import ENGINES


def test_ratios_are_medians_over_the_floor_median():
    figures = [Figures(FLOOR, (4.0, 5.0, 40.0)), Figures(NO_OP, (9.0, 10.0, 11.0)), Figures(DRY, (20.0, 15.0, 10.0))]
    assert ratios(figures) == {NO_OP: 2.0, DRY: 3.0}
    assert figures[0].spread == 36.0
    text = format_figures(figures)
    assert "no-op deploy / floor" in text and "2.00x" in text and "3.00x" in text


# ---- the scale benchmark (`lvsha lab bench --sites`) ----

LAB_TESTS = Path(__file__).resolve().parents[1] / "lab"


# The engines' records committed beside docs/scale.md's tables.
REPO = Path(__file__).resolve().parents[2]
COMMITTED_RECORDS = REPO / "docs" / "scale"
SCALE_DOC = REPO / "docs" / "scale.md"
# Where the records are, as the module says it (taken at import, before any fixture patches it).
IMPORTED_RECORDS = bench_module.SCALE_RECORDS


@pytest.fixture(autouse=True)
def records(tmp_path, monkeypatch):
    """Every test's scale records in a folder of its own, empty (a test that runs the benchmark
    never writes the committed ones); a test of the committed ones points back at them."""
    (tmp_path / "records").mkdir()
    monkeypatch.setattr(bench_module, "SCALE_RECORDS", tmp_path / "records")
    return tmp_path / "records"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty lab cache: a fresh machine's."""
    monkeypatch.setenv("LVSHA_LAB_CACHE", str(tmp_path / "cache"))
    run.set_report_label("")
    return tmp_path / "cache"


def test_sites_are_a_comma_separated_list_of_counts():
    assert bench_module.parse_sites("3,50, 250") == [3, 50, 250]
    for bad in ("", "3,,50", "0", "many", "3;50"):
        with pytest.raises(ValueError, match="--sites"):
            bench_module.parse_sites(bad)
    with pytest.raises(ValueError, match="'50' is named twice"):
        bench_module.parse_sites("50,250,50")


def test_engines_are_a_comma_separated_list_of_failover_engines():
    assert bench_module.parse_engines("heartbeat") == ["heartbeat"]
    assert bench_module.parse_engines("keepalived, heartbeat") == ["keepalived", "heartbeat"]
    for bad, why in (("", "not a failover engine"), ("vrrp", "'vrrp' is not a failover engine"),
                     ("heartbeat;keepalived", "not a failover engine"), ("keepalived,keepalived", "named twice")):
        with pytest.raises(ValueError, match=f"--engine {bad!r}: .*{why}"):
            bench_module.parse_engines(bad)


def test_every_test_the_scale_benchmark_selects_exists_in_the_lab_tier():
    assert set(bench_module.SCALE_TESTS) == set(ENGINES)
    defined = {name for path in LAB_TESTS.glob("*.py")
               for name in re.findall(r"^def (test_\w+)\(", path.read_text(), re.M)}
    for engine, selected in bench_module.SCALE_TESTS.items():
        for name in selected:
            assert [d for d in defined if name in d], f"{engine}: {name}: no lab test by that name"
        argv = bench_module.scale_argv(engine, ["-x"])
        assert argv[argv.index("-k") + 1] == " or ".join(selected) and argv[-1] == "-x"
        assert argv.index(str(bench_module.SCALE_FIGURES)) < argv.index(str(LAB_TESTS / "test_1_deploy.py"))


def _collected(argv, env) -> list[str]:
    """The lab tests a scale run's pytest would run (its own argv, collection only): node ids
    (-qq: its own -v and these leave pytest's shortest listing)."""
    import subprocess

    result = subprocess.run([*argv, "--collect-only", "-qq"], cwd=bench_module.ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engines_run_collects_each_selected_test_once_scale_figures_first(engine):
    """What pytest collects of the run's argv, on the engine's scale model of 3 sites (the
    lab's conftest deselects a test of the other engine's own machinery): every test
    SCALE_TESTS names for the engine, once; none of the other engine's own."""
    import os

    collected = _collected(bench_module.scale_argv(engine),
                           bench_module.scale_environment(3, engine, {**os.environ, LAB_ENGINE_ENV: "x"}))
    assert collected[0].startswith("tests/lab/scale_figures.py::test_scale_figures_of_the_deployed_pair")
    for selected in bench_module.SCALE_TESTS[engine]:
        assert len([node for node in collected if f"::{selected}" in node]) == 1, (selected, collected)
    assert len(collected) == len(bench_module.SCALE_TESTS[engine])
    others = {name for e, names in bench_module.SCALE_TESTS.items() if e != engine for name in names}
    assert others - set(bench_module.SCALE_TESTS[engine])  # each engine has tests of its own, left out here
    assert not [node for node in collected for name in others - set(bench_module.SCALE_TESTS[engine])
                if f"::{name}" in node]


def test_each_run_deploys_the_scale_model_of_its_number_of_sites_and_engine():
    env = bench_module.scale_environment(250, "keepalived", {"PATH": "/bin", LAB_ENGINE_ENV: "heartbeat"})
    assert env == {"PATH": "/bin", LAB_INVENTORY_ENV: str(bench_module.SCALE_INVENTORY), SITES_ENV: "250",
                   ENGINE_ENV: "keepalived"}
    assert bench_module.SCALE_INVENTORY.is_file()


def _fake_lab(figures, exits=None):
    """A stand-in for the pytest run of the lab: records what it was given, writes a report
    as the lab's does (figures taken on keepalived prefixed with its name: conftest's label).
    An engine and N that `figures` lacks records that engine's figures of 3 sites: any N runs."""
    calls = []

    def call(argv, cwd, env):
        engine, sites = env[ENGINE_ENV], int(env[SITES_ENV])
        calls.append((engine, sites, argv[argv.index("-k") + 1]))
        run.start_report()
        run.set_report_label("" if engine == "heartbeat" else engine)
        try:
            for name, value in figures[(engine, sites) if (engine, sites) in figures else (engine, 3)].items():
                run.record(name, value)
        finally:
            run.set_report_label("")
        return (exits or {}).get((engine, sites), 0)

    return call, calls


FIGURES = {("heartbeat", 3): {"first deploy": 400.0, "takeover after power-off": 14.6},
           ("heartbeat", 250): {"first deploy": 900.0, "ldirectord processes (count)": 251},
           ("keepalived", 3): {"first deploy": 300.0, "takeover after power-off": 12.1},
           ("keepalived", 250): {"first deploy": 700.0, "keepalived processes (count)": 3}}


def _doc(path, *engines, text="old table"):
    path.write_text("before\n" + "middle\n".join(
        f"{begin}\n{text} {engine}\n{end}\n" for engine in engines for begin, end in [bench_module.scale_markers(engine)])
        + "after\n")
    return path


def test_the_scale_benchmark_runs_the_lab_per_engine_and_count_and_tables_each_engine(cache, tmp_path):
    call, calls = _fake_lab(FIGURES, exits={("heartbeat", 250): 1})
    results = bench_module.scale_bench([3, 250], ["heartbeat", "keepalived"], {"PATH": "/bin"}, call=call)
    assert [(engine, sites) for engine, sites, _ in calls] == [("heartbeat", 3), ("heartbeat", 250),
                                                              ("keepalived", 3), ("keepalived", 250)]
    assert all(k == " or ".join(bench_module.SCALE_TESTS[engine]) for engine, _, k in calls)
    for engine in ENGINES:
        assert json.loads(bench_module.scale_record_path(engine).read_text()) == results[engine]
    assert results["keepalived"]["3"]["figures"] == {"keepalived: first deploy": 300.0,
                                                     "keepalived: takeover after power-off": 12.1}
    heartbeat, keepalived = (bench_module.format_scale(e, results[e]) for e in ENGINES)
    assert heartbeat.startswith("Engine heartbeat, measured by `lvsha lab bench --sites N --engine heartbeat`, a run per N")
    assert "| figure | 3 sites | 250 sites |" in heartbeat and "| first deploy | 400.0 | 900.0 |" in heartbeat
    assert "| takeover after power-off | 14.6 | - |" in heartbeat and "| ldirectord processes (count) | - | 251 |" in heartbeat
    assert "250 sites: " in heartbeat and "pytest exit 1 (a test failed)" in heartbeat
    # keepalived's table: its figures without the report's engine prefix (the table says the engine)
    assert keepalived.startswith("Engine keepalived, measured by `lvsha lab bench --sites N --engine keepalived`, a run per N")
    assert "| first deploy | 300.0 | 700.0 |" in keepalived and "| keepalived processes (count) | - | 3 |" in keepalived
    assert "keepalived:" not in keepalived.split("\n", 1)[1] and "a test failed" not in keepalived
    doc = _doc(tmp_path / "scale.md", *ENGINES)
    bench_module.write_scale_into(doc, results)
    text = doc.read_text()
    assert "old table" not in text and heartbeat in text and keepalived in text
    assert text.startswith("before\n") and text.endswith("after\n") and "\nmiddle\n" in text


def test_a_run_of_one_engine_rewrites_its_table_only(cache, tmp_path):
    call, _ = _fake_lab(FIGURES)
    results = bench_module.scale_bench([250], ["keepalived"], {}, call=call)
    assert list(results) == ["keepalived"] and not bench_module.scale_record_path("heartbeat").exists()
    doc = _doc(tmp_path / "scale.md", *ENGINES)
    bench_module.write_scale_into(doc, results)
    text = doc.read_text()
    assert "old table heartbeat" in text and "old table keepalived" not in text
    assert bench_module.format_scale("keepalived", results["keepalived"]) in text
    begin, end = bench_module.scale_markers("heartbeat")
    assert text.index(begin) < text.index("old table heartbeat") < text.index(end)


def test_a_run_of_some_counts_keeps_the_engines_other_counts_from_its_record(cache, tmp_path):
    call, _ = _fake_lab(FIGURES, exits={("heartbeat", 250): 1})
    bench_module.scale_bench([250], ["heartbeat"], {}, call=call)
    first = json.loads(bench_module.scale_record_path("heartbeat").read_text())
    assert first["250"]["exit"] == 1
    # 3 measured later: 250 kept as it was; a failed 250 measured again replaces the failed one
    call, calls = _fake_lab(FIGURES)
    results = bench_module.scale_bench([3], ["heartbeat"], {}, call=call)
    assert [(engine, sites) for engine, sites, _ in calls] == [("heartbeat", 3)]
    assert list(results["heartbeat"]) == ["3", "250"] and results["heartbeat"]["250"] == first["250"]
    assert json.loads(bench_module.scale_record_path("heartbeat").read_text()) == results["heartbeat"]
    assert "| first deploy | 400.0 | 900.0 |" in bench_module.format_scale("heartbeat", results["heartbeat"])
    assert bench_module.scale_runs_passed(results, ["heartbeat"], [3])  # the failed 250 kept is not this run's
    assert not bench_module.scale_runs_passed(results, ["heartbeat"], [3, 250])
    results = bench_module.scale_bench([250], ["heartbeat"], {}, call=call)
    assert list(results["heartbeat"]) == ["3", "250"] and results["heartbeat"]["250"]["exit"] == 0
    assert "a test failed" not in bench_module.format_scale("heartbeat", results["heartbeat"])


def test_each_engines_record_is_committed_beside_the_tables(cache, monkeypatch):
    """The record a run reads and writes is the repository's (docs/scale/<engine>.json),
    never the lab's cache: a machine's cache starts empty and is lost with the machine."""
    assert IMPORTED_RECORDS == REPO / "docs" / "scale"  # the module's own value, not this file's fixture's
    call, _ = _fake_lab(FIGURES)
    results = bench_module.scale_bench([3], ["keepalived"], {}, call=call)
    assert bench_module.scale_record_path("keepalived") == bench_module.SCALE_RECORDS / "keepalived.json"
    assert json.loads(bench_module.scale_record_path("keepalived").read_text()) == results["keepalived"]
    assert not [path for path in cache.rglob("*") if "scale" in path.name]
    monkeypatch.setattr(bench_module, "SCALE_RECORDS", IMPORTED_RECORDS)
    for engine in ENGINES:
        assert bench_module.saved_scale(engine), f"docs/scale/{engine}.json: no committed record"


def test_a_run_of_one_count_on_a_fresh_machine_keeps_the_committed_counts(cache, records, tmp_path):
    """The regression: a run of one N on a machine whose cache is empty replaces that N
    in the committed record and keeps the others, and so do the tables it writes."""
    for engine in ENGINES:
        (records / f"{engine}.json").write_text((COMMITTED_RECORDS / f"{engine}.json").read_text())
    committed = json.loads((COMMITTED_RECORDS / "heartbeat.json").read_text())
    assert len(committed) >= 1
    new = next(n for n in itertools.count(2) if str(n) not in committed)  # a column the record lacks
    call, calls = _fake_lab(FIGURES)
    results = bench_module.scale_bench([new], ["heartbeat"], {}, call=call)
    assert [(engine, sites) for engine, sites, _ in calls] == [("heartbeat", new)]
    ours = results["heartbeat"]
    assert sorted(ours, key=int) == list(ours) == sorted([*committed, str(new)], key=int)
    assert {n: r for n, r in ours.items() if n != str(new)} == committed
    assert ours[str(new)]["figures"] == FIGURES["heartbeat", 3] and ours[str(new)]["exit"] == 0
    assert json.loads((records / "heartbeat.json").read_text()) == ours
    assert (records / "keepalived.json").read_text() == (COMMITTED_RECORDS / "keepalived.json").read_text()
    doc = tmp_path / "scale.md"
    doc.write_text(SCALE_DOC.read_text())
    bench_module.write_scale_into(doc, results)
    table = bench_module.format_scale("heartbeat", ours)
    assert table in doc.read_text()
    assert "| figure | " + " | ".join(f"{n} sites" for n in ours) + " |" in table
    first = "| first deploy | " + " | ".join(str(ours[n]["figures"].get("first deploy", "-")) for n in ours) + " |"
    assert first in table and str(committed[next(iter(committed))]["figures"]["first deploy"]) in first
    begin, end = bench_module.scale_markers("keepalived")
    keepalived = SCALE_DOC.read_text().split(begin, 1)[1].split(end, 1)[0]
    assert keepalived in doc.read_text()


def test_the_committed_records_make_exactly_the_tables_in_docs_scale(cache, monkeypatch, tmp_path):
    """docs/scale.md's tables are the committed records' (`lvsha lab report --scale --into`
    leaves it byte for byte as it is): a table or a record edited alone fails here."""
    monkeypatch.setattr(bench_module, "SCALE_RECORDS", COMMITTED_RECORDS)
    doc = tmp_path / "scale.md"
    doc.write_text(SCALE_DOC.read_text())
    result = CliRunner().invoke(main, ["lab", "report", "--scale", "--into", str(doc)])
    assert result.exit_code == 0, result.output
    assert f"scale tables ({', '.join(ENGINES)}) written into" in result.output
    assert doc.read_text() == SCALE_DOC.read_text()
    for engine in ENGINES:
        begin, end = bench_module.scale_markers(engine)
        table = SCALE_DOC.read_text().split(begin, 1)[1].split(end, 1)[0]
        assert table == f"\n{bench_module.format_scale(engine, bench_module.saved_scale(engine))}\n"


UNREADABLE = {
    "{not json": "not a scale record",
    # a merge of two runs' records, each of its own N, left with git's conflict markers
    '{\n<<<<<<< HEAD\n "3": {"exit": 0, "run": {}, "figures": {}}\n=======\n "50": {}\n>>>>>>> other\n}\n':
        "not a scale record",
    "[1, 2]": "not a list",
    '{"many": {"exit": 0, "run": {}, "figures": {}}}': "'many': not one N's measurement",
    '{"3": "x"}': "'3': not one N's measurement",
    '{"50": {"exit": 0, "run": {}, "figures": [1]}}': "'50': not one N's measurement",
    '{"50": {"run": {}, "figures": {}}}': "'50': not one N's measurement",
}


@pytest.mark.parametrize("text", UNREADABLE)
def test_an_unreadable_record_is_refused_naming_it_before_any_run(text, cache, records, lab_down, tmp_path):
    """A record that cannot be read (a merge's conflict markers, say) is an error naming the
    file and what is wrong, before any run: never taken for no record, which a run of one N
    would replace with that N alone."""
    path = records / "keepalived.json"
    path.write_text(text)
    why = re.escape(f"{path}: ") + ".*" + re.escape(UNREADABLE[text])
    with pytest.raises(LabError, match=why):
        bench_module.saved_scale("keepalived")
    def call(*args, **kwargs):
        pytest.fail("ran with an unreadable record")
    with pytest.raises(LabError, match=why):
        bench_module.scale_bench([3], ["heartbeat", "keepalived"], {}, call=call)
    assert path.read_text() == text and not (records / "heartbeat.json").exists()
    for argv in (["lab", "bench", "--sites", "3", "--engine", "keepalived"], ["lab", "report", "--scale"]):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 1 and str(path) in result.output and UNREADABLE[text] in result.output, result.output
    assert path.read_text() == text


def test_no_record_is_no_earlier_measurement(cache, records):
    assert bench_module.saved_scale("keepalived") == {} and records.is_dir() and not list(records.iterdir())
    call, _ = _fake_lab(FIGURES)
    assert list(bench_module.scale_bench([3], ["keepalived"], {}, call=call)["keepalived"]) == ["3"]


def test_no_records_folder_is_an_error_naming_it_before_any_run(cache, records, lab_down):
    """Only a missing file in the records' folder is no earlier measurement: without the folder
    (lvsha run from elsewhere than the repository's checkout, say) the committed records are
    not "none". An error naming the folder, before any run; the folder is not made."""
    records.rmdir()
    why = re.escape(f"{records}: no such folder")
    with pytest.raises(LabError, match=why):
        bench_module.saved_scale("keepalived")

    def call(*args, **kwargs):
        pytest.fail("ran without the records' folder")
    with pytest.raises(LabError, match=why):
        bench_module.scale_bench([3], ["keepalived"], {}, call=call)
    for argv in (["lab", "bench", "--sites", "3", "--engine", "keepalived"], ["lab", "report", "--scale"]):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 1 and f"{records}: no such folder" in result.output, result.output
    assert not records.exists()


def _meanwhile(call, change):
    """`call` (a fake lab run) with `change(N)` made to the records while it runs: a git pull
    or a merge during a run of hours."""
    def during(argv, cwd, env):
        change(int(env[SITES_ENV]))
        return call(argv, cwd, env)

    return during


def test_a_change_to_the_record_during_a_run_is_kept(cache, records):
    """Each write reads the record again: a column of another machine's, brought by a git pull
    while a run took its hours, is kept beside the N the run measures, and so is a column it
    changed (a copy read before the runs and written back would lose both)."""
    call, _ = _fake_lab(FIGURES)
    bench_module.scale_bench([250], ["keepalived"], {}, call=call)
    path = records / "keepalived.json"
    pulled = {"exit": 0, "run": {"machine": "another"}, "figures": {"first deploy": 555.0}}

    def pull(sites):
        if sites == 3:  # during the first run: 50 measured elsewhere arrives, 250 measured again there
            path.write_text(json.dumps({**json.loads(path.read_text()), "50": pulled, "250": pulled}))
    results = bench_module.scale_bench([3, 1000], ["keepalived"], {}, call=_meanwhile(call, pull))
    record = json.loads(path.read_text())
    assert record == results["keepalived"] and list(record) == ["3", "50", "250", "1000"]
    assert record["50"] == record["250"] == pulled
    assert record["3"]["figures"] == record["1000"]["figures"] == {"keepalived: first deploy": 300.0,
                                                                   "keepalived: takeover after power-off": 12.1}
    assert sorted(p.name for p in records.iterdir()) == ["keepalived.json"]


CONFLICTED = next(text for text in UNREADABLE if "<<<<<<<" in text)


def test_a_record_unreadable_when_a_run_ends_keeps_its_measurement_beside_it(cache, records):
    """A record that cannot be read when a run ends (a merge left conflict markers in it
    meanwhile) is left as it is, the run's measurement saved in a file of its own beside it
    (a record's form, {N: measurement}), and the benchmark stops with an error saying where
    the measurement went and why."""
    path = records / "keepalived.json"
    path.write_text('{"250": {"exit": 0, "run": {}, "figures": {}}}')

    def merge(sites):
        path.write_text(CONFLICTED)
    call, calls = _fake_lab(FIGURES)
    with pytest.raises(LabError) as raised:
        bench_module.scale_bench([3, 50], ["keepalived"], {}, call=_meanwhile(call, merge))
    assert [sites for _, sites, _ in calls] == [3]  # no more hours spent on a record that cannot be written
    assert path.read_text() == CONFLICTED
    [side] = [p for p in records.iterdir() if p != path]
    assert re.fullmatch(r"keepalived\.3\.\d{8}T\d{6}Z\.json", side.name), side.name
    measured = json.loads(side.read_text())
    assert list(measured) == ["3"] and measured["3"]["exit"] == 0 and measured["3"]["run"]["kind"] == "run"
    assert measured["3"]["figures"] == {"keepalived: first deploy": 300.0, "keepalived: takeover after power-off": 12.1}
    message = str(raised.value)
    assert message.startswith(f"keepalived, 3 sites: this measurement is saved in {side}, not in {path}, "
                              f"which could not be read again before writing it ({path}: not a scale record")
    assert f"put {side.name}'s '3' into it" in message
    path.write_text(json.dumps(measured))
    assert bench_module.saved_scale("keepalived") == measured  # a side file is a record once put in place


def test_a_measurement_that_cannot_be_saved_at_all_is_said_to_be_in_the_runs_report(cache, records):
    """Neither the record nor a file beside it can be written (the records' folder gone during
    the run): the error names the run's report, which holds the run's figures."""
    call, _ = _fake_lab(FIGURES)
    with pytest.raises(LabError) as raised:
        bench_module.scale_bench([3], ["keepalived"], {}, call=_meanwhile(call, lambda sites: records.rmdir()))
    message = str(raised.value)
    assert message.startswith(f"keepalived, 3 sites: this measurement is in no record: "
                              f"{records / 'keepalived.json'} could not be read again before writing it "
                              f"({records}: no such folder")
    assert f"in the run's report, {run.report_path()} (pytest exit 0)" in message
    assert json.loads(run.report_path().read_text())["figures"] == {"keepalived: first deploy": 300.0,
                                                                    "keepalived: takeover after power-off": 12.1}


def test_a_measurement_beside_its_record_never_replaces_another(cache, records):
    (records / "keepalived.json").write_text(CONFLICTED)
    earlier = records / "keepalived.3.20250101T000000Z.json"
    earlier.write_text("an earlier run's measurement")
    measurement = {"exit": 0, "run": {}, "figures": {"first deploy": 1.0}}
    with pytest.raises(LabError, match=re.escape(f"keepalived, 3 sites: this measurement is in no record: ")
                       + ".*" + re.escape(f"nor could {earlier} be written")):
        bench_module.save_scale("keepalived", 3, measurement, "20250101T000000Z")
    assert earlier.read_text() == "an earlier run's measurement"
    with pytest.raises(LabError, match="this measurement is saved in "):
        bench_module.save_scale("keepalived", 3, measurement, "20250101T000001Z")
    assert json.loads((records / "keepalived.3.20250101T000001Z.json").read_text()) == {"3": measurement}
    assert earlier.read_text() == "an earlier run's measurement"


def test_a_write_of_the_record_that_fails_leaves_it_as_it_was_and_no_temporary_file(cache, records, monkeypatch):
    path = records / "keepalived.json"
    before = '{"250": {"exit": 0, "run": {}, "figures": {}}}'
    path.write_text(before)
    rename = Path.replace

    def replace(self, target):  # the record's rename fails (a crash between the write and it); others are done
        if Path(target) == path:
            raise OSError("the rename failed (a test's)")
        return rename(self, target)
    monkeypatch.setattr(Path, "replace", replace)
    call, _ = _fake_lab(FIGURES)
    with pytest.raises(OSError, match=re.escape("the rename failed (a test's)")):
        bench_module.scale_bench([3], ["keepalived"], {}, call=call)
    assert list(records.iterdir()) == [path] and path.read_text() == before


def test_a_temporary_record_left_by_a_crash_is_ignored_by_git():
    """`.<engine>.json.new` is the name save_scale writes under before its rename."""
    import subprocess

    for engine in ENGINES:
        staged = (IMPORTED_RECORDS / f".{engine}.json.new").relative_to(REPO)
        result = subprocess.run(["git", "check-ignore", "-q", str(staged)], cwd=REPO)
        assert result.returncode == 0, f"{staged}: not in .gitignore"
    for kept in ("heartbeat.json", "keepalived.3.20250101T000000Z.json"):  # a record, a measurement beside it
        assert subprocess.run(["git", "check-ignore", "-q", f"docs/scale/{kept}"], cwd=REPO).returncode == 1


def test_the_bench_command_says_where_a_measurement_went_when_its_record_became_unreadable(
        cache, records, lab_down, monkeypatch):
    call, _ = _fake_lab(FIGURES)
    path = records / "heartbeat.json"
    monkeypatch.setattr(bench_module, "scale_bench", functools.partial(
        bench_module.scale_bench, call=_meanwhile(call, lambda sites: path.write_text(CONFLICTED))))
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "250"])
    [side] = [p for p in records.iterdir() if p != path]
    assert result.exit_code == 1, result.output
    assert f"Error: heartbeat, 250 sites: this measurement is saved in {side}, not in {path}" in result.output
    assert "Traceback" not in result.output and path.read_text() == CONFLICTED


def test_a_file_without_an_engines_markers_is_refused_naming_the_engine(tmp_path):
    doc = _doc(tmp_path / "scale.md", "heartbeat")
    bench_module.check_scale_place(doc, ["heartbeat"])
    with pytest.raises(LabError, match="no place for keepalived's table"):
        bench_module.check_scale_place(doc, ["heartbeat", "keepalived"])
    begin, end = bench_module.scale_markers("keepalived")
    (tmp_path / "reversed.md").write_text(f"{end}\n{begin}\n")
    with pytest.raises(LabError, match="no place for keepalived's table"):
        bench_module.check_scale_place(tmp_path / "reversed.md", ["keepalived"])


@pytest.fixture
def lab_down(monkeypatch):
    from lvsha.lab import lab as lab_api

    monkeypatch.setattr(lab_api, "status", lambda: {"status": "down"})


def _fake_bench(monkeypatch, exits=0):
    """bench_module.scale_bench replaced: records its engines and counts, every run exits `exits`."""
    runs = []

    def scale_bench(sites, engines, environ, pytest_args=(), progress=None):
        runs.append((sites, engines, list(pytest_args)))
        return {e: {str(n): {"exit": exits, "run": {}, "figures": {"first deploy": 1.0}} for n in sites} for e in engines}

    monkeypatch.setattr(bench_module, "scale_bench", scale_bench)
    return runs


def test_the_engine_option_chooses_the_runs_heartbeat_by_default(cache, lab_down, monkeypatch, tmp_path):
    runs = _fake_bench(monkeypatch)
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "3,50"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "250", "--engine", "heartbeat,keepalived", "-x"])
    assert result.exit_code == 0, result.output
    assert runs == [([3, 50], ["heartbeat"], []), ([250], ["heartbeat", "keepalived"], ["-x"])]
    assert "Engine heartbeat, measured by" in result.output and "Engine keepalived, measured by" in result.output
    doc = _doc(tmp_path / "scale.md", *ENGINES)
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "3", "--engine", "keepalived", "--into", str(doc)])
    assert result.exit_code == 0, result.output
    assert "old table heartbeat" in doc.read_text() and "old table keepalived" not in doc.read_text()


def test_a_failed_run_of_either_engine_fails_the_command(cache, lab_down, monkeypatch):
    _fake_bench(monkeypatch, exits=1)
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "3", "--engine", "keepalived"])
    assert result.exit_code == 1 and "pytest exit 1 (a test failed)" in result.output


def test_bad_engines_and_a_file_without_their_markers_are_refused_before_any_run(cache, lab_down, monkeypatch, tmp_path):
    runs = _fake_bench(monkeypatch)
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "3", "--engine", "vrrp"])
    assert result.exit_code == 2 and "'vrrp' is not a failover engine" in result.output
    doc = _doc(tmp_path / "scale.md", "heartbeat")
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "3", "--engine", "heartbeat,keepalived",
                                       "--into", str(doc)])
    assert result.exit_code == 1 and "no place for keepalived's table" in result.output
    assert runs == []


def test_the_engine_goes_with_sites_only(cache, monkeypatch):
    """The --rounds benchmark (the running lab, whatever its engine) takes no --engine."""
    monkeypatch.setattr(bench_module, "bench", lambda *a, **k: pytest.fail("benchmarked"))
    result = CliRunner().invoke(main, ["lab", "bench", "--engine", "keepalived"])
    assert result.exit_code == 2 and "--engine, --into and pytest arguments go with --sites" in result.output


def test_the_scale_benchmark_refuses_while_a_lab_is_up(cache, monkeypatch):
    from lvsha.lab import lab as lab_api

    monkeypatch.setattr(lab_api, "status", lambda: {"status": "up"})
    monkeypatch.setattr(bench_module, "scale_bench", lambda *a, **k: pytest.fail("ran with a lab up"))
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "3"])
    assert result.exit_code != 0 and "lvsha lab down first" in result.output
    result = CliRunner().invoke(main, ["lab", "bench", "--sites", "3,x"])
    assert result.exit_code == 2 and "not a number of sites" in result.output


def test_lab_report_scale_writes_each_recorded_engines_table(cache, tmp_path):
    """`lvsha lab report --scale [--into FILE]`: the tables from the engines' records, without
    a run; an engine without a record keeps its table; no record at all is an error."""
    doc = _doc(tmp_path / "scale.md", *ENGINES)
    result = CliRunner().invoke(main, ["lab", "report", "--scale", "--into", str(doc)])
    assert result.exit_code != 0 and "no scale benchmark on record" in result.output
    call, _ = _fake_lab(FIGURES)
    bench_module.scale_bench([3, 250], ["keepalived"], {}, call=call)
    result = CliRunner().invoke(main, ["lab", "report", "--scale", "--into", str(doc)])
    assert result.exit_code == 0, result.output
    table = bench_module.format_scale("keepalived", bench_module.saved_scale("keepalived"))
    assert table in result.output and "| first deploy | 300.0 | 700.0 |" in table
    text = doc.read_text()
    assert table in text and "old table heartbeat" in text and "old table keepalived" not in text
    result = CliRunner().invoke(main, ["lab", "report", "--scale", "--into", str(_doc(tmp_path / "one.md", "heartbeat"))])
    assert result.exit_code != 0 and "no place for keepalived's table" in result.output
