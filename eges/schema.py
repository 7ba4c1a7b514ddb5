"""On-disk contract between the Spark walk job and the torch trainer.

Every artefact the walk job writes is described here, and both sides check against it. A walk
output directory looks like::

    OUT/
      manifest.json          written last: the directory is complete only when it exists
      config.yaml            the resolved config of the run
      items/*.parquet        item_idx int32 (dense from 1; 0 = padding), item_id string,
                             count int64 (events that entered sessions), one
                             list<int32> column per side-info field (vocabulary indices)
      vocab/<field>/*.parquet  value string, index int32 (dense from 1; 0 = padding), count int64
      edges/*.parquet        src int32, dst int32, weight int64 (GraphFrames' column names)
      walks/shard-NNNNN.parquet  walk_id int64, items list<int32> (item_idx values)
      eval/<table>/*.parquet only with split.kind set (eges.evaluate): src, dst, weight as
                             edges; see EVAL_TABLES

Readers must call :func:`read_manifest` first; it refuses a directory without a manifest.
This module imports neither pyspark nor torch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

FORMAT_NAME = "eges-walks"
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
CONFIG_FILE = "config.yaml"
ITEMS_DIR = "items"
VOCAB_DIR = "vocab"
EDGES_DIR = "edges"
WALKS_DIR = "walks"
EVAL_DIR = "eval"
# held-out tables per split kind (all in EDGE_SCHEMA; src < dst for the undirected pairs)
EVAL_TABLES = {
    "edges": ["hidden_edges", "non_edges"],  # hidden connected pairs; sampled unconnected pairs
    "items": ["heldout_neighbours"],  # src held-out item, dst its warm neighbour in the full graph
    "time": ["test_transitions"],  # a -> b of the later period, both in the training graph
}

PADDING_IDX = 0

ITEM_BASE_SCHEMA = pa.schema(
    [
        pa.field("item_idx", pa.int32(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
    ]
)
VOCAB_SCHEMA = pa.schema(
    [
        pa.field("value", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
    ]
)
EDGE_SCHEMA = pa.schema(
    [
        pa.field("src", pa.int32(), nullable=False),
        pa.field("dst", pa.int32(), nullable=False),
        pa.field("weight", pa.int64(), nullable=False),
    ]
)
WALK_SCHEMA = pa.schema(
    [
        pa.field("walk_id", pa.int64(), nullable=False),
        pa.field("items", pa.list_(pa.int32()), nullable=False),
    ]
)


class IncompleteOutputError(RuntimeError):
    """A directory that is not a complete, readable walk output."""


def item_schema(side_info_fields: list[str]) -> pa.Schema:
    """Schema of the item table for the given side-info field names (in order)."""
    extra = [pa.field(name, pa.list_(pa.int32()), nullable=False) for name in side_info_fields]
    return pa.schema(list(ITEM_BASE_SCHEMA) + extra)


def _normalise(t: pa.DataType) -> pa.DataType:
    # Spark names the list element "element", pyarrow "item": the contract is the element type.
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_normalise(t.value_type))
    return t


def check_schema(actual: pa.Schema, expected: pa.Schema, what: str) -> None:
    """Raise ``ValueError`` unless ``actual`` has exactly ``expected``'s columns and types.

    Nullability and list element names are not compared (Spark marks everything nullable).
    """
    got = [(f.name, _normalise(f.type)) for f in actual]
    want = [(f.name, _normalise(f.type)) for f in expected]
    if got != want:
        raise ValueError(f"{what}: schema mismatch\n  expected {want}\n  found    {got}")


def parquet_files(directory: str | Path) -> list[Path]:
    """The parquet files of a table directory, sorted by name (deterministic order)."""
    return sorted(p for p in Path(directory).glob("*.parquet") if p.is_file())


def read_table(directory: str | Path, expected: pa.Schema | None = None) -> pa.Table:
    """Read a whole (small) table directory with pyarrow, optionally checking its schema."""
    files = parquet_files(directory)
    if not files:
        raise IncompleteOutputError(f"{directory}: no parquet files")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    if expected is not None:
        check_schema(table.schema, expected, str(directory))
    return table


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (temp file + rename); call it last."""
    directory = Path(directory)
    body = dict(manifest)
    body.setdefault("format", FORMAT_NAME)
    body.setdefault("format_version", FORMAT_VERSION)
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(body, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, directory / MANIFEST)
    return directory / MANIFEST


@contextmanager
def staged_dir(final: str | Path, replace: bool) -> Iterator[Path]:
    """Build an output directory in a hidden temporary sibling and publish it on success.

    The body writes everything, manifest last, into the yielded directory; on normal exit it is
    moved into place with :func:`publish_dir`, on an exception it is removed. Temporary
    directories of earlier runs that were killed are removed first (one writer per output).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # a run killed before publishing (SIGKILL, lost node) leaves its temporary directory: it
    # never holds a published output, so the next run for the same output removes it
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        log.warning("removing %s, left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        publish_dir(tmp, final, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(tmp: str | Path, final: str | Path, replace: bool) -> None:
    """Move a finished temporary directory (manifest included) to its final name.

    With ``replace``, an existing ``final`` is renamed aside first and deleted only after the new
    directory is in place; if the move fails, the old one is put back. Readers therefore see the
    old complete directory, the new complete one, or (for an instant) none — never a mix.

    Raises:
        FileExistsError: ``final`` exists and ``replace`` is false.
    """
    tmp, final = Path(tmp), Path(final)
    if not (tmp / MANIFEST).is_file():
        raise RuntimeError(f"refusing to publish {tmp}: it has no {MANIFEST}")
    old = None
    if final.exists():
        if not replace:
            raise FileExistsError(f"{final} appeared while this run was writing it; "
                                  "nothing was replaced")
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    try:
        tmp.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest_json(directory: str | Path) -> dict[str, Any]:
    """The raw ``manifest.json`` of any output directory (no format check)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise IncompleteOutputError(f"{directory} has no {MANIFEST}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise IncompleteOutputError(f"{path}: not valid JSON ({exc})") from None


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and check a walk output's manifest.

    Raises:
        IncompleteOutputError: no manifest (the job did not finish), another format or version,
            or a listed file that is missing.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise IncompleteOutputError(
            f"{directory} has no {MANIFEST}: the walk job did not finish writing it "
            "(re-run jobs/walks.py)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise IncompleteOutputError(
            f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')!r}, "
            f"expected {FORMAT_NAME!r} v{FORMAT_VERSION}"
        )
    for shard in manifest.get("walks", {}).get("files", []):
        if not (directory / shard["path"]).is_file():
            raise IncompleteOutputError(f"{directory}: walk shard {shard['path']} is missing")
    return manifest
