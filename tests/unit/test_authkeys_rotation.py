"""files/heartbeat/lvsha-authkeys, run for real on two nodes' files (systemctl and
lvsha-applied faked, every other program it starts wrapped to log its arguments):
through every phase, whichever node goes first, each node can check every packet
the other signs; a phase already done is a no-op; no secret is in any argv."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lvsha import render

SCRIPT = str(render.FILES / "heartbeat" / Path(render.AUTHKEYS_SCRIPT).name)
OLD, NEW = "sha1 old-secret-0123456789abcdef", "sha1 new-secret-fedcba9876543210"
# What awk -v would have turned into escapes, sed or a shell would have split or replaced.
AWKWARD = r"sha1 a\b\n&c/d e  f\\g \&x"
RENDERED = "# Managed by lvsha\n# Must be mode 0600.\nauth 1\n1 {}\n"
PHASES = ("accept", "sign", "bridge", "resign", "final")
HUP = "systemctl kill --kill-whom=main -s HUP heartbeat.service"
# The programs the script starts besides the faked ones: each logs its arguments, then runs
# the real one (sleep returns at once: the tests need no new mtime).
WRAPPED = ("awk", "grep", "cmp", "mv", "install", "rm", "sleep")


class Node:
    def __init__(self, root: Path, old: str = OLD, new: str = NEW):
        self.ha_d, self.bin = root / "ha.d", root / "bin"
        self.ha_d.mkdir(parents=True)
        self.bin.mkdir()
        self.calls, self.argv = root / "calls", root / "argv"
        self.new = new
        for fake in ("systemctl", "lvsha-applied"):
            self._tool(fake, f'echo "{fake} $*" >> {self.calls}\n')
        for name in WRAPPED:
            real = shutil.which(name, path="/usr/bin:/bin")
            self._tool(name, "exit 0\n" if name == "sleep" else f'exec {real} "$@"\n')
        (self.ha_d / "authkeys").write_text(RENDERED.format(old))
        self.stage()

    def _tool(self, name: str, body: str) -> None:
        path = self.bin / name
        # every argument on a line of its own, to look for a secret in
        path.write_text(f'#!/bin/sh\nfor a in {name} "$@"; do printf "%s\\n" "$a"; done >> {self.argv}\n{body}')
        path.chmod(0o755)

    def stage(self) -> None:
        """What the deploy's "Stage the new authkeys" writes."""
        (self.ha_d / "authkeys.lvsha-new").write_text(RENDERED.format(self.new))

    def run(self, phase: str) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "LVSHA_HA_D": str(self.ha_d)}
        return subprocess.run([SCRIPT, phase], capture_output=True, text=True, env=env, timeout=30)

    def hups(self) -> int:
        return self.calls.read_text().splitlines().count(HUP) if self.calls.exists() else 0

    def keys(self) -> tuple[str, dict[str, str]]:
        """(signing index, {index: "method secret"}) as heartbeat reads authkeys:
        the key is the rest of the line after the method's blanks."""
        signing, keys = None, {}
        for line in (self.ha_d / "authkeys").read_text().splitlines():
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if fields[0] == "auth":
                signing = fields[1]
            else:
                index, method, secret = line.split(None, 2)
                keys[index] = f"{method} {secret}"
        return signing, keys


def _can_check(sender: Node, receiver: Node) -> bool:
    index, keys = sender.keys()
    return receiver.keys()[1].get(index) == keys[index]


def _assert_pair_authenticates(nodes: list[Node], when) -> None:
    assert _can_check(nodes[0], nodes[1]) and _can_check(nodes[1], nodes[0]), (when, nodes[0].keys(), nodes[1].keys())


def _rotate(nodes: list[Node], order: list[Node]) -> None:
    """Every phase on both nodes, in `order`, as the deploy runs them."""
    for phase in PHASES:
        for node in order:
            result = node.run(phase)
            assert result.returncode == 0, (phase, result.stderr)
            _assert_pair_authenticates(nodes, phase)
            assert (node.ha_d / "authkeys").stat().st_mode & 0o777 == 0o600


def _assert_rotated(node: Node) -> None:
    assert (node.ha_d / "authkeys").read_text() == RENDERED.format(node.new)  # what the deploy renders
    assert not (node.ha_d / "authkeys.lvsha-new").exists()


@pytest.mark.parametrize("first", [0, 1])
def test_the_pair_authenticates_at_every_step(tmp_path, first):
    nodes = [Node(tmp_path / "a"), Node(tmp_path / "b")]
    _rotate(nodes, [nodes[first], nodes[1 - first]])
    for node in nodes:
        _assert_rotated(node)
        calls = node.calls.read_text().splitlines()
        assert calls.count(HUP) == 5
        assert calls[-1] == "lvsha-applied record authkeys"


@pytest.mark.parametrize("old, new", [(OLD, AWKWARD), (AWKWARD, NEW)], ids=["to", "from"])
def test_a_secret_with_backslashes_ampersands_slashes_and_spaces_is_rotated_as_it_is(tmp_path, old, new):
    nodes = [Node(tmp_path / "a", old, new), Node(tmp_path / "b", old, new)]
    _rotate(nodes, nodes)
    for node in nodes:
        _assert_rotated(node)


def test_no_secret_is_in_any_programs_arguments(tmp_path):
    """A program's arguments are in ps for every user; awk -v also processes escapes."""
    nodes = [Node(tmp_path / "a", OLD, AWKWARD), Node(tmp_path / "b", OLD, AWKWARD)]
    _rotate(nodes, nodes)
    for node in nodes:
        arguments = node.argv.read_text().splitlines()
        assert {"awk", "systemctl", "install", "mv"} <= set(arguments)  # the wrappers did log
        for key in (OLD, AWKWARD):
            pieces = [p for p in key.split()[1:] if len(p) > 3]  # a piece of it is a leak too
            assert not [a for a in arguments if any(p in a for p in pieces)], key


def test_every_phase_run_again_changes_nothing(tmp_path):
    """A rerun, or the pair's run reaching a node that has done the phase: no write, no signal."""
    nodes = [Node(tmp_path / "a"), Node(tmp_path / "b")]
    for phase in PHASES:
        for node in nodes:
            assert node.run(phase).returncode == 0
        for node in nodes:
            before, hups = (node.ha_d / "authkeys").read_text(), node.hups()
            if phase == "final":
                node.stage()  # the next deploy stages it again
            result = node.run(phase)
            assert result.returncode == 0, (phase, result.stderr)
            assert ((node.ha_d / "authkeys").read_text(), node.hups()) == (before, hups), phase
    for node in nodes:
        _assert_rotated(node)
        assert node.calls.read_text().splitlines().count("lvsha-applied record authkeys") == 1


@pytest.mark.parametrize("ahead", PHASES)
def test_a_node_a_failed_run_left_a_phase_ahead_catches_up_with_its_peer(tmp_path, ahead):
    """The run stopped when the phase failed on one node after it had been done on the
    other: the next run runs every phase on both (the deploy decides for the pair),
    the node ahead does nothing until its peer has caught up."""
    nodes = [Node(tmp_path / "a"), Node(tmp_path / "b")]
    done = PHASES[:PHASES.index(ahead)]
    for phase in done:
        for node in nodes:
            assert node.run(phase).returncode == 0
    assert nodes[0].run(ahead).returncode == 0
    _assert_pair_authenticates(nodes, f"after {ahead} on one node")
    hups = nodes[0].hups()
    for node in nodes:
        node.stage()
    _rotate(nodes, nodes)
    assert nodes[0].hups() == hups + len(PHASES) - len(done) - 1  # only the phases it had not done
    for node in nodes:
        _assert_rotated(node)


def test_a_rerun_of_accept_after_the_rotation_changes_nothing(tmp_path):
    node = Node(tmp_path)
    (node.ha_d / "authkeys").write_text(RENDERED.format(NEW))
    assert node.run("accept").returncode == 0
    assert (node.ha_d / "authkeys").read_text() == RENDERED.format(NEW)
    assert not node.calls.exists()


@pytest.mark.parametrize("phase", PHASES[1:])
def test_a_phase_before_the_one_it_follows_is_refused(tmp_path, phase):
    node = Node(tmp_path)
    before = PHASES[PHASES.index(phase) - 1]
    result = node.run(phase)
    assert result.returncode == 1 and f"run the {before} phase first" in result.stderr
    assert (node.ha_d / "authkeys").read_text() == RENDERED.format(OLD) and not node.calls.exists()



def test_the_wrappers_log_each_argument_on_a_line(tmp_path):
    node = Node(tmp_path)
    subprocess.run([str(node.bin / "awk"), "-v", "x=a b", "BEGIN {}"], check=True)
    assert node.argv.read_text().splitlines() == ["awk", "-v", "x=a b", "BEGIN {}"]
