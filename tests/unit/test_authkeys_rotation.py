"""files/heartbeat/lvsha-authkeys, run for real on two nodes' files (systemctl and
lvsha-applied faked): through every phase, whichever node goes first, each node
can check every packet the other signs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lvsha import render

SCRIPT = str(render.FILES / "heartbeat" / Path(render.AUTHKEYS_SCRIPT).name)
OLD, NEW = "sha1 old-secret-0123456789abcdef", "sha1 new-secret-fedcba9876543210"
RENDERED = "# Managed by lvsha\n# Must be mode 0600.\nauth 1\n1 {}\n"


class Node:
    def __init__(self, root: Path):
        self.ha_d, self.bin = root / "ha.d", root / "bin"
        self.ha_d.mkdir(parents=True)
        self.bin.mkdir()
        self.calls = root / "calls"
        for fake in ("systemctl", "lvsha-applied"):
            (self.bin / fake).write_text(f'#!/bin/sh\necho "{fake} $*" >> {self.calls}\n')
            (self.bin / fake).chmod(0o755)
        (self.ha_d / "authkeys").write_text(RENDERED.format(OLD))
        (self.ha_d / "authkeys.lvsha-new").write_text(RENDERED.format(NEW))

    def run(self, phase: str) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "LVSHA_HA_D": str(self.ha_d)}
        return subprocess.run([SCRIPT, phase], capture_output=True, text=True, env=env, timeout=30)

    def keys(self) -> tuple[str, dict[str, str]]:
        """(signing index, {index: "method secret"}) as heartbeat reads authkeys."""
        signing, keys = None, {}
        for line in (self.ha_d / "authkeys").read_text().splitlines():
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if fields[0] == "auth":
                signing = fields[1]
            else:
                keys[fields[0]] = " ".join(fields[1:])
        return signing, keys


def _can_check(sender: Node, receiver: Node) -> bool:
    index, keys = sender.keys()
    return receiver.keys()[1].get(index) == keys[index]


@pytest.mark.parametrize("first", [0, 1])
def test_the_pair_authenticates_at_every_step(tmp_path, first):
    nodes = [Node(tmp_path / "a"), Node(tmp_path / "b")]
    order = [nodes[first], nodes[1 - first]]
    for phase in ("accept", "sign", "bridge", "resign", "final"):
        for node in order:
            result = node.run(phase)
            assert result.returncode == 0, (phase, result.stderr)
            assert _can_check(nodes[0], nodes[1]) and _can_check(nodes[1], nodes[0]), (phase, nodes[0].keys(),
                                                                                          nodes[1].keys())
            assert (node.ha_d / "authkeys").stat().st_mode & 0o777 == 0o600
    for node in nodes:
        assert (node.ha_d / "authkeys").read_text() == RENDERED.format(NEW)  # what the deploy renders
        assert not (node.ha_d / "authkeys.lvsha-new").exists()
        calls = node.calls.read_text().splitlines()
        assert calls.count("systemctl kill --kill-whom=main -s HUP heartbeat.service") == 5
        assert calls[-1] == "lvsha-applied record authkeys"


def test_a_rerun_of_accept_after_the_rotation_changes_nothing(tmp_path):
    node = Node(tmp_path)
    (node.ha_d / "authkeys").write_text(RENDERED.format(NEW))
    assert node.run("accept").returncode == 0
    assert (node.ha_d / "authkeys").read_text() == RENDERED.format(NEW)
    assert not node.calls.exists()


def test_sign_before_accept_is_refused(tmp_path):
    result = Node(tmp_path).run("sign")
    assert result.returncode == 1 and "run the accept phase first" in result.stderr
