"""One lab, two models (tests/lab/conftest.py, lvsha/lab/lab.py), without a lab: the
default run's lab params and their order, which model takes over which lab (and only
one laid out the same), when a lab being torn down is left up for its taker, and that
pytest tears a parametrized session fixture's param down where the hand-over needs it:
while it sets up the first test of the next param."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lvsha.lab import LabError
from lvsha.lab import lab as lab_api
from lvsha.lab.model import LAB_INVENTORY_ENV, REFERENCE_INVENTORY, ROOT, topology_cluster
from tests.lab import conftest

EDGE = str(conftest.EXAMPLE_INVENTORY)
EDGE_KEEPALIVED = str(conftest.EDGE_KEEPALIVED_INVENTORY)
REFERENCE = str(REFERENCE_INVENTORY)


@pytest.fixture
def default_run(monkeypatch):
    monkeypatch.delenv(LAB_INVENTORY_ENV, raising=False)


def test_the_default_run_has_three_models_edge_on_keepalived_last(default_run):
    assert conftest.lab_models(None) == [("reference", REFERENCE), ("edge", EDGE), ("edge-keepalived", EDGE_KEEPALIVED)]
    assert [conftest.second_model(inventory) for _, inventory in conftest.lab_models(None)] == [False, True, True]


def test_a_chosen_inventory_is_the_only_model_and_boots_its_own_lab(monkeypatch):
    assert conftest.lab_models(EDGE_KEEPALIVED) == [("chosen", EDGE_KEEPALIVED)]
    monkeypatch.setenv(LAB_INVENTORY_ENV, EDGE_KEEPALIVED)
    assert conftest.gives_over(EDGE_KEEPALIVED) is None and not conftest.second_model(EDGE_KEEPALIVED)
    assert not conftest.hands_over(EDGE, EDGE_KEEPALIVED)


def test_each_taker_follows_the_model_it_takes_over_and_migrates_it(default_run):
    """The lab is handed over by the param just before (pytest runs params in order) and
    the taker's deploy changes the engine from heartbeat: the live migration."""
    inventories = [inventory for _, inventory in conftest.lab_models(None)]
    assert conftest.TAKES_OVER
    for taker, giver in conftest.TAKES_OVER.items():
        assert inventories.index(giver) == inventories.index(taker) - 1
        engines = topology_cluster(Path(giver)).engine, topology_cluster(Path(taker)).engine
        assert engines == ("heartbeat", "keepalived")


def test_only_the_taker_of_a_lab_has_it_handed_over(default_run):
    assert conftest.gives_over(EDGE_KEEPALIVED) == EDGE
    assert conftest.gives_over(EDGE) is None and conftest.gives_over(REFERENCE) is None
    assert conftest.hands_over(EDGE, EDGE_KEEPALIVED)  # torn down while the taker's test is set up
    assert not conftest.hands_over(EDGE, None)  # the session's end (last test, -x, Ctrl-C)
    assert not conftest.hands_over(EDGE, EDGE)
    assert not conftest.hands_over(REFERENCE, EDGE) and not conftest.hands_over(REFERENCE, EDGE_KEEPALIVED)
    assert not conftest.hands_over(EDGE_KEEPALIVED, None)


def test_edge_on_keepalived_runs_the_every_model_tests_but_heartbeats_internals(monkeypatch):
    from tests.unit.test_lab_engines import FakeItem, collect

    items = [FakeItem("generic", EDGE_KEEPALIVED), FakeItem("every", EDGE_KEEPALIVED, ["every_model"]),
             FakeItem("every_guard", EDGE_KEEPALIVED, ["every_model", "heartbeat_internals"]),
             FakeItem("every_vrrp", EDGE_KEEPALIVED, ["every_model", "keepalived_internals"])]
    kept, dropped = collect(items, monkeypatch)
    assert kept == ["every", "every_vrrp"] and dropped == ["generic", "every_guard"]


# ---- the labs' layouts -----------------------------------------------------------------

def test_edge_on_keepalived_is_laid_out_as_the_edge_lab():
    edge, keepalived = topology_cluster(Path(EDGE)), topology_cluster(Path(EDGE_KEEPALIVED))
    assert lab_api.layout(edge) == lab_api.layout(keepalived)
    assert lab_api.layout_differences(edge, keepalived) == []


def test_a_layout_difference_is_named_with_both_values():
    from dataclasses import replace

    edge = topology_cluster(Path(EDGE))
    moved = replace(edge, web_hosts=(replace(edge.web_hosts[0], internal_ips=("10.20.1.21", "10.20.2.21")),
                                     *edge.web_hosts[1:]))
    (difference,) = [d for d in lab_api.layout_differences(edge, moved) if d.startswith("own addresses")]
    assert "10.20.1.11/16" in difference and "10.20.1.21/16" in difference
    renamed = replace(edge, balancers=(replace(edge.balancers[0], name="lb-z"), edge.balancers[1]))
    assert any(d.startswith("VMs (name, role, NICs)") and "lb-z" in d
               for d in lab_api.layout_differences(edge, renamed))
    assert len(lab_api.layout_differences(edge, topology_cluster(Path(REFERENCE)))) >= 5


@pytest.fixture
def lab_state(tmp_path, monkeypatch):
    """A state dir whose state.json says a lab of the edge model is up."""
    monkeypatch.setenv("LVSHA_LAB_DIR", str(tmp_path / "lab"))
    (tmp_path / "lab").mkdir()
    lab_api.state_file().write_text(json.dumps({"status": "up", "inventory": EDGE, "cluster": "edge"}))
    return lambda: json.loads(lab_api.state_file().read_text())


def test_the_lab_switches_to_a_model_laid_out_as_its_own(lab_state):
    state = lab_api.switch_model(Path(EDGE_KEEPALIVED), topology_cluster(Path(EDGE_KEEPALIVED)))
    assert state["inventory"] == EDGE_KEEPALIVED == lab_state()["inventory"]
    assert lab_state()["cluster"] == "edge"


def test_the_lab_refuses_a_model_laid_out_otherwise_and_keeps_its_own(lab_state):
    with pytest.raises(LabError, match=r"cannot take over the lab of .*edge/inventory.py: its lab would differ "
                                       r"\(networks: .*own addresses"):
        lab_api.switch_model(Path(REFERENCE), topology_cluster(Path(REFERENCE)))
    assert lab_state()["inventory"] == EDGE


def test_the_lab_refuses_to_switch_when_it_is_not_up(lab_state):
    lab_api.state_file().write_text(json.dumps({**lab_state(), "status": "starting"}))
    with pytest.raises(LabError, match="the lab is not up"):
        lab_api.switch_model(Path(EDGE_KEEPALIVED), topology_cluster(Path(EDGE_KEEPALIVED)))
    assert lab_state()["inventory"] == EDGE


# ---- the lab fixture itself, on a fake lab: pytest's order of setups and teardowns --------
#
# The real fixture and hooks (tests/lab/conftest.py) in a pytest run of their own, with
# the lab's boot, teardown and deploys faked (and its state and cache directories in
# tmp_path): which labs come up and down, and which model each deploy deploys.

FAKE_CONFTEST = textwrap.dedent("""
    import json
    import os
    from pathlib import Path

    import lvsha.lab.lab as lab_api
    import tests.lab.conftest as real
    from lvsha.lab.model import lab_cluster
    from lvsha.lab.run import DeployResult
    from tests.lab.conftest import *  # noqa: F403 - the lab fixture and hooks under test

    ROOT = str(real.ROOT) + "/"


    def log(line):
        with open(os.environ["FAKE_LAB_LOG"], "a") as f:
            f.write(line.replace(ROOT, "") + "\\n")


    def up(model, progress=None, inventory=None, provisioned=False, release="12"):
        secret = Path(os.environ["LVSHA_LAB_DIR"]) / "secret"
        secret.write_text("a-lab-secret-of-the-fake-lab\\n")
        secret.chmod(0o600)
        hosts = {b.name: {"management_interface": "eth2"} for b in model.balancers}
        lab_api.state_file().write_text(json.dumps({
            "status": "up", "inventory": str(inventory), "release": release, "heartbeat_secret_file": str(secret),
            "hosts": hosts, "client": {"address": "192.0.2.1/24"}, "timings": {"boot_s": 1.0}}))
        log(f"up {inventory} Debian {release}{' provisioned' if provisioned else ''}")
        return lab_api.load_state()


    def down(quiet=False):
        if lab_api.state_file().exists():
            lab_api.state_file().unlink()
            log("down")
        return []


    def deploy(*extra, progress=None, timeout=1800):
        state = lab_api.load_state()
        log(f"deploy {state['inventory']} on {lab_cluster(state).engine}")
        failing = os.environ.get("FAKE_FAILING_DEPLOY") == state["inventory"].replace(ROOT, "")
        return DeployResult(1 if failing else 0, "fake deploy\\n", 1.0, 50, 0)


    if os.environ.get("FAKE_RUNNING"):  # a lab up before the run
        up(real.topology_cluster(Path(os.environ["FAKE_RUNNING"])), inventory=os.environ["FAKE_RUNNING"], release="13")
    real._missing_prerequisites = lambda: []
    real.deploy = deploy
    real.Lab.wait_settled = lambda self, owner, timeout=0: 0.0
    real.Watch.exactly_one_carrier = lambda self: self.lab.cluster.master.name
    lab_api.up, lab_api.down = up, down
    lab_api.status = lambda: {"status": "up" if lab_api.state_file().exists() else "down"}
""")

FAKE_TESTS = textwrap.dedent("""
    import os

    import pytest

    from tests.lab.conftest import LAB_INVENTORY_ENV


    def _log(line):
        with open(os.environ["FAKE_LAB_LOG"], "a") as f:
            f.write(line + "\\n")


    def test_one(lab):
        _log(f"test {lab.cluster.name} on {lab.engine}" + (f" migrated from {lab.migrated_from}" if lab.migrated_from
                                                           else ""))
        assert os.environ.get("FAKE_FAILING_TEST") != lab.cluster.name


    @pytest.fixture(scope="module")
    def per_module(lab):
        yield lab


    def test_two(per_module):
        pass
""")


def _run_fake_tier(tmp_path, *args, running: str | None = None, **env) -> tuple[list[str], str]:
    """(the fake lab's log, pytest's output) of the lab tier's fixture run on a fake lab;
    `running`: the inventory of a fake lab up before the run."""
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "conftest.py").write_text(FAKE_CONFTEST)
    (tmp_path / "project" / "test_fake.py").write_text(FAKE_TESTS)
    (tmp_path / "project" / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "lab").mkdir()
    if running:
        env["FAKE_RUNNING"] = running
    log = tmp_path / "log"
    log.touch()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LVSHA_", "PYTEST_")) and k != "CI"}
    environ.update(FAKE_LAB_LOG=str(log), PYTHONPATH=str(ROOT), LVSHA_LAB_DIR=str(tmp_path / "lab"),
                   LVSHA_LAB_CACHE=str(tmp_path / "cache"), LVSHA_CACHE_DIR=str(tmp_path / "lvsha-cache"), **env)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
                            cwd=tmp_path / "project", env=environ, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    return log.read_text().splitlines(), result.stdout


def test_the_edge_lab_is_handed_over_migrated_and_taken_down_once(tmp_path):
    lines, out = _run_fake_tier(tmp_path)
    assert lines == [
        "up inventory.py Debian 12", "deploy inventory.py on heartbeat", "test reference on heartbeat", "down",
        "up examples/edge/inventory.py Debian 13 provisioned", "deploy examples/edge/inventory.py on heartbeat",
        "test edge on heartbeat",
        "deploy examples/edge-keepalived/inventory.py on keepalived", "test edge on keepalived migrated from heartbeat",
        "down",
    ], out
    assert "6 passed" in out
    # the report: each model's lab a column (its engine and release), the migration's figures under keepalived's
    report = out[out.index("lab report"):].splitlines()
    header = report[1]
    assert header.split()[0] == "figure", report
    columns = ["reference (heartbeat, Debian 12)", "edge (heartbeat, Debian 13)", "edge (keepalived, Debian 13)"]
    assert all(c in header for c in columns), header
    assert [header.index(c) for c in columns] == sorted(header.index(c) for c in columns), header
    for figure in ("first deploy (migration from heartbeat)", "cluster settled after the migration"):
        (row,) = [line for line in report if line.strip().startswith(figure)]
        assert row[len(header) - len(columns[-1]):].strip() != "-" and row.split()[-2:-1] == ["-"], (row, header)


def test_a_failed_migration_takes_the_lab_down(tmp_path):
    lines, out = _run_fake_tier(tmp_path, FAKE_FAILING_DEPLOY="examples/edge-keepalived/inventory.py")
    assert lines[-2:] == ["deploy examples/edge-keepalived/inventory.py on keepalived", "down"], out
    assert lines.count("down") == 2 and "first deploy (migration from heartbeat) failed" in out


def test_a_failed_edge_test_still_hands_the_lab_over(tmp_path):
    lines, out = _run_fake_tier(tmp_path, FAKE_FAILING_TEST="edge")
    assert "test edge on keepalived migrated from heartbeat" in lines and lines.count("down") == 2, out


def test_stopped_after_the_edge_tests_the_edge_lab_comes_down(tmp_path):
    lines, out = _run_fake_tier(tmp_path, "-x", FAKE_FAILING_TEST="edge")
    assert lines[-2:] == ["test edge on heartbeat", "down"] and lines.count("down") == 2, out


def test_without_its_taker_the_edge_lab_comes_down(tmp_path):
    lines, out = _run_fake_tier(tmp_path, "-k", "edge and not keepalived")
    assert lines == ["up examples/edge/inventory.py Debian 13 provisioned",
                     "deploy examples/edge/inventory.py on heartbeat", "test edge on heartbeat", "down"], out


def test_the_taker_alone_fails_saying_so_and_boots_nothing(tmp_path):
    lines, out = _run_fake_tier(tmp_path, "-k", "edge-keepalived")
    assert lines == [], out
    assert "none was handed over" in out and "2 errors" in out


def test_reusing_labs_the_taker_alone_skips_saying_why_and_boots_nothing(tmp_path):
    """LVSHA_LAB_REUSE=1 and no lab up: the keepalived model, handed no lab, skips (docs/lab.md)
    naming why, rather than failing as it does when not reusing."""
    lines, out = _run_fake_tier(tmp_path, "-k", "edge-keepalived", LVSHA_LAB_REUSE="1")
    assert lines == [], out
    assert "2 skipped" in out and "error" not in out.lower() and "none was handed over" in out
    assert "LVSHA_LAB_REUSE=1 and no lab is up" in out


def test_a_reused_edge_lab_is_never_migrated(tmp_path):
    """LVSHA_LAB_REUSE=1 on a running edge lab: the edge tests run on it, the keepalived
    model skips (it was handed no lab), and the lab stays up (not this run's)."""
    lines, out = _run_fake_tier(tmp_path, running=EDGE, LVSHA_LAB_REUSE="1")
    assert lines == ["up examples/edge/inventory.py Debian 13", "test edge on heartbeat"], out
    assert f"the running lab has the model of {EDGE}, not {EDGE_KEEPALIVED}" in out and "2 passed, 4 skipped" in out
