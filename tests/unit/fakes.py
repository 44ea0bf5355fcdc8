"""Fake programs for the tests that run lvsha's shell programs."""

import shlex
from pathlib import Path


def fake_programs(directory: Path, bodies: dict[str, str]) -> None:
    """An executable /bin/sh script in `directory` per name, running its body."""
    for name, body in bodies.items():
        fake = directory / name
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)


def batch_items(command: str) -> tuple[str, list[str]] | None:
    """(token, [command...]) of a command lvsha.day2.batch_script wrote (files/lvsha/
    lvsha-batch sent inline, running several), None for a single command: how a fake
    balancer answers both."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if words[:2] != ["sh", "-c"] or words[3:4] != ["lvsha-batch"] or len(words) < 5:
        return None
    return words[4], words[5:]


def answer(command: str, one) -> tuple[int, str]:
    """A fake balancer's (exit status, stdout) for `command`, a single command or a batch:
    one(command) -> (exit status, stdout) answers each single command; a batch is answered
    as batch_script's sh does (a `TOKEN INDEX STATUS` line, the output without its trailing
    newlines, `TOKEN end`). Checked against the real script run by sh in tests/unit/test_live.py."""
    batch = batch_items(command)
    if batch is None:
        return one(command)
    token, commands = batch
    lines = []
    for index, single in enumerate(commands):
        rc, out = one(single)
        lines.append(f"{token} {index} {rc}")
        if out.rstrip("\n"):
            lines.append(out.rstrip("\n"))
    lines.append(f"{token} end")
    return 0, "\n".join(lines)
