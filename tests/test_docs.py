"""The README and docs/ match the code: links resolve (files and section anchors), every
``--set KEY=`` names a configuration key, every ``eges COMMAND`` is a command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eges.cli import COMMANDS
from eges.config_reference import entries

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings (lower case, punctuation dropped, spaces to -)."""
    out = set()
    for line in page.read_text().splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m[1].strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def test_there_are_pages():
    names = {p.name for p in PAGES}
    assert {"README.md", "configuration.md", "index.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    broken = []
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_set_keys_and_commands_exist(page):
    text = page.read_text()
    keys = {e.key for e in entries()}
    prefixes = {k.split("[")[0].rsplit(".<name>", 1)[0] for k in keys}
    unknown = [
        k
        for k in re.findall(r"--set '?([a-z_]+(?:\.[a-z_]+)+)=", text)
        if k not in keys and k not in prefixes
    ]
    assert not unknown, f"{page.name}: unknown config keys {unknown}"
    # in code: `eges train …`, or a command line of a code block
    commands = set(re.findall(r"`eges ([a-z]+)\b", text))
    commands |= set(re.findall(r"^\s*(?:\$ )?eges ([a-z]+)\b", text, flags=re.M))
    assert commands <= set(COMMANDS), f"{page.name}: unknown commands {commands - set(COMMANDS)}"
