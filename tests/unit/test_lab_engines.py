"""The lab tier's engine selection (tests/lab/conftest.py), without a lab: which
tests a model's engine deselects, decided from the model each lab param loads;
and the Lab helpers' engine-dependent names, from the model and the deploy's
own constants."""

from types import SimpleNamespace

import pytest

from lvsha.lab.model import REFERENCE_INVENTORY, ROOT, topology_cluster
from lvsha.model import ENGINES
from tasks.preflight import ENGINE_SERVICES
from tests.lab import conftest

KEEPALIVED_INVENTORY = str(ROOT / "examples" / "keepalived" / "inventory.py")
REFERENCE = str(REFERENCE_INVENTORY)


class FakeItem:
    """What the collection hook reads of a pytest item."""

    def __init__(self, name: str, inventory: str | None, markers=(), path: str = "/repo/tests/lab/test_x.py"):
        self.name, self.fspath = name, path
        self.markers = set(markers)
        if inventory is not None:
            self.callspec = SimpleNamespace(params={"lab": inventory})

    def add_marker(self, marker):
        self.markers.add(marker.name)

    def get_closest_marker(self, name):
        return name if name in self.markers else None


def collect(items, monkeypatch, chosen: str | None = None):
    if chosen:
        monkeypatch.setenv("LVSHA_LAB_INVENTORY", chosen)
    else:
        monkeypatch.delenv("LVSHA_LAB_INVENTORY", raising=False)
    deselected = []
    config = SimpleNamespace(hook=SimpleNamespace(pytest_deselected=lambda items: deselected.extend(items)))
    items = list(items)
    conftest.pytest_collection_modifyitems(config, items)
    return [i.name for i in items], [i.name for i in deselected]


def test_the_models_engines_are_read_from_the_models():
    assert conftest.model_engine(KEEPALIVED_INVENTORY) == "keepalived"
    assert conftest.model_engine(REFERENCE) == conftest.DEFAULT_ENGINE == "heartbeat"
    assert conftest.model_engine(str(ROOT / "no-such-inventory.py")) is None  # the fixture reports it


def test_a_keepalived_model_deselects_heartbeats_internals_and_keeps_the_rest(monkeypatch):
    items = [FakeItem("generic", KEEPALIVED_INVENTORY),
             FakeItem("guard", KEEPALIVED_INVENTORY, [conftest.internals_marker("heartbeat")]),
             FakeItem("vrrp", KEEPALIVED_INVENTORY, [conftest.internals_marker("keepalived")]),
             FakeItem("generic_every_model", KEEPALIVED_INVENTORY, ["every_model"])]
    kept, dropped = collect(items, monkeypatch, chosen=KEEPALIVED_INVENTORY)
    assert kept == ["generic", "vrrp", "generic_every_model"]
    assert dropped == ["guard"]
    assert all("lab" in i.markers for i in items)


def test_a_heartbeat_model_keeps_heartbeats_internals_and_deselects_keepalived_tests(monkeypatch):
    items = [FakeItem("generic", REFERENCE),
             FakeItem("guard", REFERENCE, [conftest.internals_marker("heartbeat")]),
             FakeItem("vrrp", REFERENCE, [conftest.internals_marker("keepalived")])]
    kept, dropped = collect(items, monkeypatch, chosen=REFERENCE)
    assert kept == ["generic", "guard"] and dropped == ["vrrp"]


def test_by_default_the_second_model_keeps_only_every_model_and_neither_keeps_keepalived_tests(monkeypatch):
    edge = str(conftest.EXAMPLE_INVENTORY)
    items = [FakeItem("ref_generic", REFERENCE), FakeItem("ref_guard", REFERENCE, ["heartbeat_internals"]),
             FakeItem("ref_vrrp", REFERENCE, ["keepalived_internals"]),
             FakeItem("edge_generic", edge), FakeItem("edge_every", edge, ["every_model"]),
             FakeItem("edge_every_guard", edge, ["every_model", "heartbeat_internals"]),
             FakeItem("edge_every_vrrp", edge, ["every_model", "keepalived_internals"])]
    kept, dropped = collect(items, monkeypatch)
    assert kept == ["ref_generic", "ref_guard", "edge_every", "edge_every_guard"]
    assert dropped == ["ref_vrrp", "edge_generic", "edge_every_vrrp"]


def test_items_outside_the_lab_tier_or_without_a_model_are_kept(monkeypatch):
    items = [FakeItem("unit", KEEPALIVED_INVENTORY, ["heartbeat_internals"], path="/repo/tests/unit/test_x.py"),
             FakeItem("no_model", None, ["heartbeat_internals"])]
    kept, dropped = collect(items, monkeypatch, chosen=KEEPALIVED_INVENTORY)
    assert kept == ["unit", "no_model"] and dropped == []


def test_every_engine_has_its_marker_registered():
    lines = []
    conftest.pytest_configure(SimpleNamespace(addinivalue_line=lambda _, line: lines.append(line)))
    assert {line.split(":")[0] for line in lines} >= {conftest.internals_marker(e) for e in ENGINES}


@pytest.mark.parametrize("inventory", [REFERENCE, KEEPALIVED_INVENTORY])
def test_lab_helpers_take_the_engines_units_from_the_deploy(inventory):
    cluster = topology_cluster(conftest.Path(inventory))
    lab = conftest.Lab(state={}, cluster=cluster)
    assert lab.engine == cluster.engine
    assert lab.engine_services == ENGINE_SERVICES[cluster.engine]
    assert lab.engine_service == ENGINE_SERVICES[cluster.engine][0]
    shown = lab._diagnosis_command(cluster.master.name, "-10min")
    if cluster.engine == "keepalived":
        # keepalived's unit, or its scripts by name (their lines are logger's alone under systemd)
        assert "cl_status" not in shown and "_SYSTEMD_UNIT=keepalived.service + SYSLOG_IDENTIFIER=lvsha-keepalived" in shown
    else:
        assert f"cl_status nodestatus {cluster.peer(cluster.master).name}" in shown and "-t heartbeat" in shown


def test_day2_tests_run_on_both_engines_and_skip_on_another_naming_it(monkeypatch):
    for inventory in (REFERENCE, KEEPALIVED_INVENTORY):  # no skip: built for both (lvsha/day2.py)
        conftest.Lab(state={}, cluster=topology_cluster(conftest.Path(inventory))).require_day2()
    monkeypatch.setattr(conftest, "DAY2_ENGINES", ("heartbeat",))
    lab = conftest.Lab(state={}, cluster=topology_cluster(conftest.Path(KEEPALIVED_INVENTORY)))
    with pytest.raises(pytest.skip.Exception, match="not implemented for engine 'keepalived'"):
        lab.require_day2()


@pytest.mark.parametrize("inventory", [REFERENCE, KEEPALIVED_INVENTORY])
def test_home_after_return_follows_the_models_failback(inventory):
    from dataclasses import replace

    cluster = topology_cluster(conftest.Path(inventory))
    peer = cluster.peer(cluster.master).name
    for failback, home in ((True, cluster.master.name), (False, peer)):
        changed = replace(cluster, heartbeat=replace(cluster.heartbeat, auto_failback=failback))
        assert conftest.Lab(state={}, cluster=changed).home_after_return(peer) == home


# ---- test_8_config_reload's changed models (what its deploys are pointed at) ---------

def _changed(tmp_path, added):
    from lvsha.loader import load_cluster
    from lvsha.validate import validate
    from tests.lab import changes as keepalived_tests

    path = tmp_path / "changed.py"
    path.write_text(keepalived_tests.changed_inventory(KEEPALIVED_INVENTORY, added))
    return validate(load_cluster(path))


def test_the_health_check_change_touches_the_last_sites_check_only(tmp_path):
    from lvsha import render

    full = topology_cluster(conftest.Path(KEEPALIVED_INVENTORY))
    changed = _changed(tmp_path, None)
    assert changed.sites[:-1] == full.sites[:-1] and changed.web_hosts == full.web_hosts
    assert changed.sites[-1].health.negotiatetimeout == full.sites[-1].health.negotiatetimeout + 1
    before, after = (render.keepalived_conf(c, c.master).content for c in (full, changed))
    assert before != after and f"connect_timeout {full.sites[-1].health.negotiatetimeout + 1}" in after
    assert before.split("virtual_server")[:-1] == after.split("virtual_server")[:-1]  # the other sites' as they were


def test_on_heartbeat_the_health_check_change_touches_the_last_sites_block_of_ldirectord_cf_only(tmp_path):
    from lvsha import render
    from tests.conftest import load_with_test_secret
    from tests.lab import changes

    full = load_with_test_secret(conftest.Path(REFERENCE))
    path = tmp_path / "changed.py"
    path.write_text(changes.changed_inventory(REFERENCE, None))
    changed = load_with_test_secret(path)
    before, after = (render.ldirectord_file(c).content for c in (full, changed))
    assert before != after and f"negotiatetimeout={full.sites[-1].health.negotiatetimeout + 1}" in after
    assert before.split("\nvirtual=")[:-1] == after.split("\nvirtual=")[:-1]  # the other sites' as they were


def test_the_config_reload_test_is_generic_and_runs_once_per_engine():
    """tests/lab/test_8_config_reload.py: on both engines (no internals marker), and on the
    second model whose engine the first's run does not cover (every_engine: CI's budget)."""
    tests = [marks for name, node, _, marks, _ in _lab_tests() if name == "test_8_config_reload.py"]
    assert tests and all("every_engine" in marks and not any(m.endswith("_internals") for m in marks) for marks in tests)


def test_the_added_site_takes_free_addresses_and_validates(tmp_path):
    from lvsha.lab.model import topology_cluster as load
    from tests.lab import changes as keepalived_tests

    full = load(conftest.Path(KEEPALIVED_INVENTORY))
    free = keepalived_tests.free_internal_addresses(full, len(full.web_hosts))
    assert len(free) == len(full.web_hosts) and not set(free) & {str(a) for a in full.used_addresses()}
    vip = "10.0.0.7"  # the lab takes it with fresh_client_address
    changed = _changed(tmp_path, (keepalived_tests.ADDED_SITE, vip, tuple(free)))
    assert [s.name for s in changed.sites] == [s.name for s in full.sites] + [keepalived_tests.ADDED_SITE]
    assert [h.internal_ips[-1] for h in changed.web_hosts] == free
    assert vip in {str(ip.address) for ip in changed.floating_ips()}


# ---- every lab test that names heartbeat's own tools is kept off keepalived -----------

HEARTBEAT_ONLY = ("cl_status", "systemctl stop heartbeat", "systemctl start heartbeat", "systemctl restart heartbeat",
                  "KILL_HEARTBEAT", "KILL_LDIRECTORD", "hb_takeover")


def _lab_tests():
    """(module path, test function node, marker names, module skips off day-2 engines) of every lab test."""
    import ast

    for path in sorted((ROOT / "tests" / "lab").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        source = path.read_text()
        module_marks = {n.attr for node in tree.body if isinstance(node, ast.Assign)
                        and any(getattr(t, "id", "") == "pytestmark" for t in node.targets)
                        for n in ast.walk(node.value) if isinstance(n, ast.Attribute)}
        day2_only = any(isinstance(node, ast.FunctionDef) and "require_day2" in ast.get_source_segment(source, node)
                        and any("autouse=True" in ast.get_source_segment(source, d) for d in node.decorator_list)
                        for node in tree.body)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                marks = {n.attr for d in node.decorator_list for n in ast.walk(d) if isinstance(n, ast.Attribute)}
                yield path.name, node, ast.get_source_segment(source, node), marks | module_marks, day2_only


def test_a_lab_test_using_heartbeats_own_tools_never_runs_on_keepalived():
    """Named in a test's own body, heartbeat's tools need the test marked
    heartbeat_internals, or in a module every test of which needs day-2 commands
    (skipped where they are not built); engine-generic tests take the service
    from lab.engine_service."""
    offenders = [f"{name}::{node.name}: {word}" for name, node, body, marks, day2_only in _lab_tests()
                 for word in HEARTBEAT_ONLY if word in body
                 and conftest.internals_marker("heartbeat") not in marks and not day2_only]
    assert offenders == []
    guarded = [node.name for _, node, body, marks, _ in _lab_tests() if any(w in body for w in HEARTBEAT_ONLY)
               and conftest.internals_marker("heartbeat") in marks]
    assert len(guarded) >= 3  # the check sees the marked ones: it would see an unmarked one


def test_the_keepalived_tests_are_marked_as_keepalived_internals():
    tests = [(node.name, marks) for name, node, _, marks, _ in _lab_tests() if name == "test_8_keepalived.py"]
    assert tests and all(conftest.internals_marker("keepalived") in marks for _, marks in tests)


def test_every_engine_runs_on_a_second_model_only_where_its_engine_is_not_the_first_models(monkeypatch):
    edge, edge_keepalived = str(conftest.EXAMPLE_INVENTORY), str(conftest.EDGE_KEEPALIVED_INVENTORY)
    items = [FakeItem("ref_reload", REFERENCE, ["every_engine"]),
             FakeItem("edge_reload", edge, ["every_engine"]),
             FakeItem("edge_keepalived_reload", edge_keepalived, ["every_engine"]),
             FakeItem("edge_keepalived_plain", edge_keepalived)]
    kept, dropped = collect(items, monkeypatch)
    assert kept == ["ref_reload", "edge_keepalived_reload"]
    assert dropped == ["edge_reload", "edge_keepalived_plain"]
    # a model chosen by LVSHA_LAB_INVENTORY runs its whole tier, every_engine or not
    kept, _ = collect([FakeItem("reload", edge, ["every_engine"])], monkeypatch, chosen=edge)
    assert kept == ["reload"]
