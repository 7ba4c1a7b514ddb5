"""The configuration reference is generated from the typed config and kept current."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from eges import config as C
from eges.config_reference import DOC_PATH, entries, main, markdown

REPO = Path(__file__).resolve().parents[1]


def test_docs_page_is_current():
    page = (REPO / DOC_PATH).read_text()
    assert page == markdown(), f"{DOC_PATH} is stale: run `make docs` and commit it"


def _leaf_keys(cls: type, prefix: str) -> set[str]:
    """Every key a YAML file can set, walked independently of the reference's own code."""
    out = set()
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        sub = C._nested_dataclasses(cls).get(f.name)
        if sub and sub[1] == "one" and f.default is dataclasses.MISSING:
            out |= _leaf_keys(sub[0], key)
        else:
            out.add(key)
    return out


def test_every_key_is_listed_once_with_help():
    es = entries()
    keys = [e.key for e in es]
    assert len(keys) == len(set(keys))
    assert _leaf_keys(C.Config, "") <= set(keys)
    missing = [e.key for e in es if not e.help.strip()]
    assert not missing, f"config keys without a help comment in eges/config.py: {missing}"


def test_defaults_choices_and_checks_come_from_the_code():
    by_key = {e.key: e for e in entries()}
    assert by_key["walks.walk_length"].default == str(C.WalksConfig().walk_length)
    assert by_key["walks.walk_length"].type == "integer"
    assert "must be >= 2" in by_key["walks.walk_length"].allowed
    assert by_key["train.sharding"].type == "choice"
    assert "one of auto · replicated · sharded" in by_key["train.sharding"].allowed
    assert by_key["evaluate.tasks"].default == "[link, cold, next]"
    assert by_key["data.generic.side_info[].name"].default == "required"
    assert by_key["spark.master"].type == "text or null"
    assert "nodes per walk" in by_key["walks.walk_length"].help


def test_config_command_prints_a_prefix_and_rejects_an_unknown_one(capsys):
    assert main(["walks.seed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("walks.seed  (integer, default 42)")
    assert "walks.walks_per_node" not in out
    assert main(["nosuch"]) == 2
    assert "no configuration key starts with 'nosuch'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["walks", "train", "evaluate"])
def test_help_points_to_the_reference(command):
    out = subprocess.run(
        [sys.executable, "-m", "eges", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert "eges config" in out and DOC_PATH in " ".join(out.split())
