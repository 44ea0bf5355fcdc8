"""The documentation keeps up with the code: every field of the model is described
in docs/model.md, the README stays short and opens with its two commands, no
relative link in README.md or docs/ points to a file (or heading) that does not exist,
and a value the docs take from a constant names it and is its value."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from lvsha import model, render

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MODEL_DOC = REPO / "docs" / "model.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]

LAB_COMMAND = "bin/setup && .venv/bin/lvsha lab demo"
TEST_COMMAND = "bin/setup && .venv/bin/python -m pytest"
README_MAX_LINES = 160

MODEL_CLASSES = sorted(
    (cls for _, cls in inspect.getmembers(model, inspect.isclass)
     if dataclasses.is_dataclass(cls) and cls.__module__ == model.__name__),
    key=lambda cls: cls.__name__,
)


def test_model_classes_found():
    names = {cls.__name__ for cls in MODEL_CLASSES}
    assert {"Cluster", "Balancer", "Site", "HealthCheck", "WebHost", "Heartbeat", "HeartbeatAuth",
            "Firewall", "Service", "Ldirectord", "StateSync"} <= names


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_model_field_is_documented(cls):
    text = MODEL_DOC.read_text()
    assert f"`{cls.__name__}`" in text, f"docs/model.md does not describe {cls.__name__}"
    missing = [f.name for f in dataclasses.fields(cls) if f"`{f.name}`" not in text]
    assert not missing, f"docs/model.md lacks {cls.__name__}'s field(s) {missing} (as `name`)"


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_readme_opens_with_the_two_commands():
    first = README.read_text().splitlines()[:10]
    for command in (LAB_COMMAND, TEST_COMMAND):
        assert any(line.startswith(command) for line in first), f"README.md's first lines lack `{command}`"


FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans (whose brackets are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).replace("`", "").strip().lower())
            found.add(slug.replace(" ", "-"))
    return found


def _relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(_prose(path.read_text()))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)]  # http:, https:, mailto:...


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    broken = []
    for target in _relative_links(doc):
        file_part, _, anchor = target.partition("#")
        if file_part.endswith(".svg"):
            continue  # a picture produced by another test or command; not required here
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{doc.relative_to(REPO)}: broken links: {broken}"


def test_readme_links_every_docs_page():
    linked = {Path(t.partition("#")[0]).name for t in _relative_links(README)}
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    assert pages <= linked, f"README.md does not link {sorted(pages - linked)}"


# A number of seconds the docs take from a constant of lvsha.render names it beside its value,
# "`render.NAME` (N s)", "`render.NAME`, N s" or "`render.NAME`: N s": the reader sees where
# it comes from, and a changed constant fails test_values_cited_from_render_are_its_own.
CITED = re.compile(r"`render\.([A-Z][A-Z0-9_]*)`(?: \(|, |: )(\d+) s\b")


def _joined(doc: Path) -> str:
    """The text on one line (a citation may be wrapped)."""
    return " ".join(doc.read_text().split())


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_values_cited_from_render_are_its_own(doc):
    wrong = [f"render.{name}: the docs say {n} s, it is {getattr(render, name, 'not a constant of render')}"
             for name, n in CITED.findall(_joined(doc)) if getattr(render, name, None) != int(n)]
    assert not wrong, f"{doc.relative_to(REPO)}: {wrong}"


def test_the_deploys_ipvs_wait_is_given_with_its_constant():
    """The deploy's wait for a node's IPVS (lvsha-ipvs-ready --strict: after ldirectord's
    reload, before the peer's heartbeat restart) is render.IPVS_TAKEOVER_TIMEOUT, a fixed
    bound: each time the docs give it in seconds, they name the constant."""
    value, cited = render.IPVS_TAKEOVER_TIMEOUT, 0
    for doc in DOCS:
        text = _joined(doc)
        named = [n for name, n in CITED.findall(text) if name == "IPVS_TAKEOVER_TIMEOUT" and int(n) == value]
        bare = len(re.findall(rf"(?<![\d.]){value} s\b", text)) - len(named)
        assert bare == 0, (f"{doc.relative_to(REPO)}: {value} s given {bare} time(s) without naming "
                           "`render.IPVS_TAKEOVER_TIMEOUT` beside it")
        cited += len(named)
        typed = re.findall(r"lvsha-ipvs-ready --strict (?:--reloaded )?(\d+)", text)  # a command to run by hand
        assert all(int(n) == value for n in typed), f"{doc.relative_to(REPO)}: lvsha-ipvs-ready --strict {typed}"
    assert cited >= 4  # design.md, failures.md, limitations.md, operating.md
