"""`lvsha lab demo` (lvsha/lab/demo.py) with the lab layer faked: it tears down the lab
it brought up whatever happens (Ctrl-C included), never one it did not bring up, keeps
it with --keep, and judges the held connection from the client's lines. The demo
itself runs on real VMs (README's first command); these check its decisions."""

from __future__ import annotations

import pytest

from lvsha.lab import LabError, demo
from lvsha.lab import lab as lab_api


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, reference):
    monkeypatch.setenv("LVSHA_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "topology_cluster", lambda: reference)
    monkeypatch.setattr(demo, "lab_cluster", lambda state: reference)
    downs = []
    monkeypatch.setattr(lab_api, "down", lambda quiet=False: downs.append(quiet) or [])
    return downs


def _up_ok(monkeypatch):
    state = {"state_dir": "/tmp/x", "ssh_config": "/tmp/x/ssh_config", "timings": {"up_s": 60.0, "image_cached": True},
             "client": {"address": "192.0.2.254/24"}}
    monkeypatch.setattr(lab_api, "up", lambda cluster, **kwargs: state)


def test_a_lab_that_did_not_come_up_is_not_torn_down_by_the_demo(monkeypatch, isolated):
    """up() refuses when a lab is already up (and tears down only what it made itself)."""
    def refuse(cluster, **kwargs):
        raise LabError("a lab is already up (state in /tmp/lvsha-lab); run `lab down` first")

    monkeypatch.setattr(lab_api, "up", refuse)
    said = []
    assert demo.run_demo(said.append) == 1
    assert isolated == []
    assert any("a lab is already up" in line for line in said)


def test_ctrl_c_during_the_deploy_tears_the_lab_down(monkeypatch, isolated):
    _up_ok(monkeypatch)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "deploy", interrupted)
    said = []
    assert demo.run_demo(said.append) == 130
    assert isolated == [True]
    assert any("Tearing the lab down" in line for line in said)


def test_a_failed_step_with_keep_leaves_the_lab_up_and_says_what_to_try(monkeypatch, isolated, reference):
    _up_ok(monkeypatch)

    def failed(*args, **kwargs):
        raise LabError("the first deploy failed")

    monkeypatch.setattr(demo, "deploy", failed)
    said = []
    assert demo.run_demo(said.append, keep=True) == 1
    assert isolated == []
    text = "\n".join(said)
    assert "the lab being up" in text and f"lab vm-stop {reference.master.name}" in text


def _demo(cluster):
    d = demo.Demo([].append, keep=False, release="12")
    d.cluster = cluster
    return d


def test_a_held_connection_answered_throughout_carried_on(reference):
    d = _demo(reference)
    said = []
    d.say = said.append
    d._held("HOLD web2", "OK web2 0.01\nOK web2 11.52\nOK web2 0.01\n", 0)
    assert said == ["the held connection carried on: 3 answers on the same connection, from web2; "
                    "its longest answer took 11.5 s"]


def test_a_broken_held_connection_fails_the_demo_when_the_model_syncs_state(reference):
    assert reference.state_sync.enabled
    d = _demo(reference)
    d.say = lambda line: None
    with pytest.raises(LabError, match="did not survive the takeover"):
        d._held("HOLD web2", "OK web2 0.01\nFAIL ConnectionResetError: reset\n", 1)


def test_without_state_sync_a_broken_held_connection_is_expected(edge):
    assert not edge.state_sync.enabled
    d = _demo(edge)
    said = []
    d.say = said.append
    d._held("HOLD web2", "FAIL ConnectionResetError: reset\n", 1)
    assert said[0].startswith("the held connection broke, as it must without state sync")


def test_a_refused_demo_leaves_the_running_labs_report_alone(monkeypatch, isolated):
    from lvsha.lab import run

    run.start_report()
    run.record("first deploy", 300.0)

    def refuse(cluster, **kwargs):
        raise LabError("a lab is already up (state in /tmp/lvsha-lab); run `lab down` first")

    monkeypatch.setattr(lab_api, "up", refuse)
    assert demo.run_demo(lambda line: None) == 1
    assert "first deploy" in run.format_report()


def test_an_unexpected_error_in_a_step_is_said_and_the_lab_torn_down(monkeypatch, isolated):
    _up_ok(monkeypatch)

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(demo, "deploy", broken)
    said = []
    assert demo.run_demo(said.append) == 1
    assert isolated == [True]
    text = "\n".join(said)
    assert "demo: IndexError: list index out of range" in text and "demo FAILED" in text
