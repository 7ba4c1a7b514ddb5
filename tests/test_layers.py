"""Data flows one way: the Spark side never imports torch, the torch side never
imports pyspark, and the shared modules import neither."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "eges"
SPARK = {"pyspark"}
TORCH = {"torch", "lightning", "pytorch_lightning", "gensim"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


MODULES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_sides_do_not_mix(path):
    roots = imported_roots(path)
    rel = path.relative_to(PKG)
    if rel.parts[0] == "pipeline":
        assert not roots & TORCH, f"{rel} (Spark side) imports {roots & TORCH}"
    else:
        assert not roots & SPARK, f"{rel} (torch/shared side) imports {roots & SPARK}"


def test_the_project_never_cites_documents_its_users_do_not_have():
    """README, docs, reports and comments stand on their own: no reference to the team's
    internal design notes (which ship with no release)."""
    repo = PKG.parent
    internal = "DESIGN" + ".md", "DESIGN" + " §"  # split so this file does not match itself
    files = [repo / "README.md", repo / "Makefile", *repo.glob("*.toml")]
    for folder in (
        "eges",
        "jobs",
        "bench",
        "conf",
        "docker",
        "docs",
        "tests",
        "examples",
        "scripts",
    ):
        files += [
            p
            for p in (repo / folder).rglob("*")
            if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".yml", ".sh", ".txt", ""}
        ]
    cited = [
        str(p.relative_to(repo))
        for p in files
        if any(s in p.read_text(errors="ignore") for s in internal)
    ]
    assert not cited, f"cite internal design notes: {cited}"
