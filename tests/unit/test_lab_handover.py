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


# ---- pytest's order of setups and teardowns, which the hand-over relies on ----------------

FAKE_CONFTEST = textwrap.dedent("""
    import os

    import pytest

    from tests.lab import conftest as lab_conftest
    from tests.lab.conftest import pytest_runtest_setup  # noqa: F401 - the hook under test


    def log(line):
        with open(os.environ["FAKE_LAB_LOG"], "a") as f:
            f.write(line + "\\n")


    @pytest.fixture(scope="session", params=[pytest.param(inventory, id=id)
                                            for id, inventory in lab_conftest.lab_models(None)])
    def lab(request):
        log(f"up {request.param}")
        yield request.param
        log(f"down {request.param} hands over: {lab_conftest.hands_over(request.param, lab_conftest._setting_up)}")
""")

FAKE_TESTS = textwrap.dedent("""
    import os

    import pytest


    def test_one(lab):
        assert not os.environ.get("FAKE_FAIL") or "edge" not in lab or "keepalived" in lab


    def test_two(lab):
        pass


    @pytest.fixture(scope="module")
    def per_module(lab):
        yield lab


    def test_three(per_module):
        pass
""")


def _run_fake_tier(tmp_path, *args, fail=False) -> list[str]:
    (tmp_path / "conftest.py").write_text(FAKE_CONFTEST)
    (tmp_path / "test_fake.py").write_text(FAKE_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    log = tmp_path / "log"
    env = {k: v for k, v in os.environ.items() if k not in (LAB_INVENTORY_ENV, "PYTEST_ADDOPTS")}
    env.update(FAKE_LAB_LOG=str(log), PYTHONPATH=str(ROOT), **({"FAKE_FAIL": "1"} if fail else {}))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return [line.replace(str(ROOT) + "/", "") for line in log.read_text().splitlines()]


def test_pytest_tears_the_edge_lab_down_while_setting_up_edge_on_keepalived(tmp_path):
    """Each param's tests together, in lab_models' order; the edge param torn down while the
    first test of its taker is set up (so it is handed over), every other at the end or
    while the next boots (so it is not)."""
    assert _run_fake_tier(tmp_path) == [
        "up inventory.py",
        "down inventory.py hands over: False",
        "up examples/edge/inventory.py",
        "down examples/edge/inventory.py hands over: True",
        "up examples/edge-keepalived/inventory.py",
        "down examples/edge-keepalived/inventory.py hands over: False",
    ]


def test_without_its_taker_the_edge_lab_is_not_handed_over(tmp_path):
    lines = _run_fake_tier(tmp_path, "-k", "not keepalived")
    assert lines[-1] == "down examples/edge/inventory.py hands over: False" and len(lines) == 4


def test_stopped_at_a_failure_the_edge_lab_is_not_handed_over(tmp_path):
    lines = _run_fake_tier(tmp_path, "-x", fail=True)
    assert lines[-1] == "down examples/edge/inventory.py hands over: False"
    assert not any("edge-keepalived" in line for line in lines)
