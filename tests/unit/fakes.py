"""Fake programs for the tests that run lvsha's shell programs."""

from pathlib import Path


def fake_programs(directory: Path, bodies: dict[str, str]) -> None:
    """An executable /bin/sh script in `directory` per name, running its body."""
    for name, body in bodies.items():
        fake = directory / name
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)
