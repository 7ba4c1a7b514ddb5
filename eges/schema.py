"""On-disk contract between the Spark walk job and the torch trainer.

Every artefact the walk job writes is described here, and both sides check against it. A walk
output directory looks like::

    OUT/
      manifest.json          written last: the directory is complete only when it exists
      config.yaml            the resolved config of the run
      items/*.parquet        item_idx int64 (dense from 1; 0 = padding), item_id string,
                             count int64 (events that entered sessions), optionally
                             name string (display name, null where unknown; see NAME_COLUMN),
                             one list<int32> column per side-info field (vocabulary indices)
      vocab/<field>/*.parquet  value string, index int32 (dense from 1; 0 = padding), count int64
      edges/*.parquet        src int64, dst int64, weight int64 (GraphFrames' column names)
      walks/shard-NNNNN.parquet  walk_id int64, items list<int64> (item_idx values)
      eval/<table>/*.parquet only with split.kind set (eges evaluate): src, dst, weight as
                             edges; see EVAL_TABLES

Item indices are int64 since format version 2 (catalogues past 2³¹ items); version 1 had int32
item indices, which readers still accept (:data:`READABLE_VERSIONS`, :func:`read_table`).

Readers must call :func:`read_manifest` first; it refuses a directory without a manifest.
This module imports neither pyspark nor torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

FORMAT_NAME = "eges-walks"
# 2: item indices int64 (item_idx, edges' src and dst, the walks' items); 1: int32
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # walk outputs the trainer and the evaluation read

MANIFEST = "manifest.json"
CONFIG_FILE = "config.yaml"
ITEMS_DIR = "items"
VOCAB_DIR = "vocab"
EDGES_DIR = "edges"
WALKS_DIR = "walks"
EVAL_DIR = "eval"
# held-out tables per split kind (all in EDGE_SCHEMA; src < dst for the undirected pairs)
EVAL_TABLES = {
    # hidden connected pairs; sampled unconnected pairs, uniform and with matched degrees
    "edges": ["hidden_edges", "non_edges", "non_edges_matched"],
    "items": ["heldout_neighbours"],  # src held-out item, dst its warm neighbour in the full graph
    "time": ["test_transitions"],  # a -> b of the later period, both in the training graph
}

PADDING_IDX = 0

ITEM_BASE_SCHEMA = pa.schema(
    [
        pa.field("item_idx", pa.int64(), nullable=False),
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
        pa.field("src", pa.int64(), nullable=False),
        pa.field("dst", pa.int64(), nullable=False),
        pa.field("weight", pa.int64(), nullable=False),
    ]
)
WALK_SCHEMA = pa.schema(
    [
        pa.field("walk_id", pa.int64(), nullable=False),
        pa.field("items", pa.list_(pa.int64()), nullable=False),
    ]
)


class IncompleteOutputError(RuntimeError):
    """A directory that is not a complete, readable walk output."""


# The item table's optional display-name column (MovieLens title, RecBole movie_title, the
# generic layout's data.generic.name_column), right after ``count``. Outputs of walk jobs
# before it, and layouts without names, have no such column; readers accept both.
NAME_COLUMN = "name"


def item_schema(side_info_fields: list[str], names: bool = False) -> pa.Schema:
    """Schema of the item table for the given side-info field names (in order), with the
    ``name`` column when ``names``."""
    extra = [pa.field(name, pa.list_(pa.int32()), nullable=False) for name in side_info_fields]
    name = [pa.field(NAME_COLUMN, pa.string())] if names else []
    return pa.schema(list(ITEM_BASE_SCHEMA) + name + extra)


def read_items(directory: str | Path, side_info_fields: list[str]) -> pa.Table:
    """Read an item table, checked against :func:`item_schema` with or without ``name``."""
    files = parquet_files(directory)
    names = (
        bool(files)
        and NAME_COLUMN in pq.read_schema(files[0]).names
        and NAME_COLUMN not in side_info_fields
    )  # a field "name" of an older output
    return read_table(directory, item_schema(side_info_fields, names=names))


def item_names(directory: str | Path) -> dict[str, str]:
    """item_id -> display name from an item table; empty when it has no ``name`` column."""
    files = parquet_files(directory)
    found = pq.read_schema(files[0]) if files else None
    if (
        found is None
        or NAME_COLUMN not in found.names
        or not pa.types.is_string(found.field(NAME_COLUMN).type)
    ):  # not a string: a side-info field of that name
        return {}
    table = pa.concat_tables([pq.read_table(f, columns=["item_id", NAME_COLUMN]) for f in files])
    return {
        i: n
        for i, n in zip(table["item_id"].to_pylist(), table[NAME_COLUMN].to_pylist())
        if n is not None
    }


def _normalise(t: pa.DataType) -> pa.DataType:
    # Spark names the list element "element", pyarrow "item": the contract is the element type.
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_normalise(t.value_type))
    return t


def _widen(t: pa.DataType) -> pa.DataType:
    # format version 1 wrote item indices as int32 where version 2 writes int64
    if pa.types.is_list(t):
        return pa.list_(_widen(t.value_type))
    return pa.int64() if t == pa.int32() else t


def check_schema(actual: pa.Schema, expected: pa.Schema, what: str, older: bool = False) -> None:
    """Raise ``ValueError`` unless ``actual`` has exactly ``expected``'s columns and types.

    Nullability and list element names are not compared (Spark marks everything nullable).
    ``older``: an int32 column where an int64 is expected passes too (the item indices of
    format version 1), as does an int64 one where an int32 is (readers widen every integer).
    """
    norm = (lambda t: _widen(_normalise(t))) if older else _normalise
    got = [(f.name, norm(f.type)) for f in actual]
    want = [(f.name, norm(f.type)) for f in expected]
    if got != want:
        raise ValueError(f"{what}: schema mismatch\n  expected {want}\n  found    {got}")


def parquet_files(directory: str | Path) -> list[Path]:
    """The parquet files of a table directory, sorted by name (deterministic order)."""
    return sorted(p for p in Path(directory).glob("*.parquet") if p.is_file())


def read_table(directory: str | Path, expected: pa.Schema | None = None) -> pa.Table:
    """Read a whole (small) table directory with pyarrow, optionally checking its schema
    (int32 item indices of format version 1 accepted: :func:`check_schema`'s ``older``)."""
    files = parquet_files(directory)
    if not files:
        raise IncompleteOutputError(f"{directory}: no parquet files")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    if expected is not None:
        check_schema(table.schema, expected, str(directory), older=True)
    return table


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (temp file + rename); call it last."""
    directory = Path(directory)
    body = dict(manifest)
    body.setdefault("format", FORMAT_NAME)
    body.setdefault("format_version", FORMAT_VERSION)
    return write_text_atomic(
        directory / MANIFEST, json.dumps(body, indent=2, sort_keys=False, default=str) + "\n"
    )


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A hidden temporary sibling of ``path``, unique to this writer, to write in; renamed onto
    ``path`` when the block ends without an error, removed otherwise. A reader sees the old file
    or the new one, never a part; concurrent writers each rename a complete file (the last
    rename wins)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``path`` (UTF-8, whatever the locale) through :func:`replaced_atomically`."""
    with replaced_atomically(path) as tmp, open(tmp, "x", encoding="utf-8") as f:
        f.write(text)  # "x": never someone else's file
    return Path(path)


# Owner of a temporary (``.tmp-``) or set-aside (``.old-``) sibling, encoded in its name when the
# directory is created, so that it is known from the first instant:
#     .<name>.tmp-<random>-<pid>-<host>     .<name>.old-<random>-<pid>-<host>
# <host> is a digest of the host name, the kernel's boot id and the pid namespace: a pid is only
# meaningful there. The host name alone does not tell two hosts apart (cloned machines, default
# container names), nor does the namespace (the initial one has the same inode on every kernel);
# the boot id is random per boot of each kernel.
_OWNED = re.compile(r"(?P<rand>[0-9a-f]{8})-(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{8})")
OwnerState = Literal["alive", "dead", "unknown"]
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MACHINE_ID = Path("/etc/machine-id")


def _boot_id() -> str:
    """This boot of this host's kernel: the boot id (Linux), else the machine id, else ""."""
    for source in (BOOT_ID, MACHINE_ID):
        try:
            value = source.read_text(encoding="ascii").strip()
        except (OSError, ValueError):
            continue
        if value:
            return value
    return ""


def _host_key(boot_id: str | None = None) -> str:
    """This host, boot and pid namespace, as 8 hex digits.

    Args:
        boot_id: the boot to name; None: this one (:func:`_boot_id`).
    """
    if boot_id is None:
        boot_id = _boot_id()
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.blake2s(
        f"{socket.gethostname()}|{boot_id}|{namespace}".encode(), digest_size=4
    ).hexdigest()


def _sibling(final: Path, kind: str) -> Path:
    """A new hidden sibling ``.<name>.<kind>-...`` of ``final`` owned by this process."""
    return final.with_name(
        f".{final.name}.{kind}-{uuid.uuid4().hex[:8]}-{os.getpid()}-{_host_key()}"
    )


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists and is not a zombie (it can still write)."""
    if pid <= 0:
        return True  # not a process id: do not claim it is dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :][:1] != "Z"


def owner_state(path: Path, prefix: str) -> OwnerState:
    """Whether the process that created the sibling ``path`` (name ``prefix`` + owner) lives.

    ``dead`` only when it is provable: the owner ran on this host (same host name, boot and pid
    namespace) and its pid no longer exists. A directory of another host, or named by an
    earlier version without an owner, is ``unknown``.
    """
    match = _OWNED.fullmatch(path.name[len(prefix) :])
    if match is None or match["host"] != _host_key():
        return "unknown"
    return "alive" if _pid_alive(int(match["pid"])) else "dead"


def _siblings(final: Path, kind: str) -> tuple[str, list[Path]]:
    prefix = f".{final.name}.{kind}-"
    try:
        found = sorted(p for p in final.parent.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        found = []
    return prefix, found


def recover_dir(final: str | Path) -> None:
    """Clean up what writers of ``final`` that died left beside it; touch nothing of a live one.

    * ``.old-*`` (the previous output, set aside by :func:`publish_dir`) of a dead owner: when
      ``final`` is missing — the writer died between its two renames — the newest complete one
      (it has its manifest) is renamed back to ``final``. Once ``final`` exists, the others
      are removed; while it is still missing (nothing restorable), none is.
    * ``.tmp-*`` (an unfinished output, :func:`staged_dir`) of a dead owner: removed.

    Siblings whose owner is alive (another run writing the same output) are left alone, and so
    are those of unknown owner (another host on a shared filesystem, or an earlier version of
    this code), with a warning naming them: remove them by hand once no run writes them.
    Safe to call from several processes at once.
    """
    final = Path(final)
    prefix, olds = _siblings(final, "old")
    states = {p: owner_state(p, prefix) for p in olds}
    if not final.exists():
        complete = [p for p in olds if states[p] == "dead" and (p / MANIFEST).is_file()]
        if complete:
            newest = max(complete, key=lambda p: (p / MANIFEST).stat().st_mtime)
            try:
                newest.rename(final)
                log.warning(
                    "restored %s from %s: the run replacing it died mid-publish", final, newest.name
                )
            except OSError as exc:  # another process restored it first, or final appeared
                log.info("did not restore %s from %s: %s", final, newest.name, exc)
    tmp_prefix, tmps = _siblings(final, "tmp")
    for path, state in [(p, states[p]) for p in olds] + [
        (p, owner_state(p, tmp_prefix)) for p in tmps
    ]:
        if not path.exists():
            continue
        if state == "dead" and path in states and not final.exists():
            # not restorable (no manifest: its deletion had begun) or the rename failed: the
            # only copy of the output there is, keep it for whoever looks
            log.warning("leaving %s: %s is missing and this copy is not complete", path, final)
        elif state == "dead":
            log.warning("removing %s, left by an interrupted run (its process is gone)", path)
            shutil.rmtree(path, ignore_errors=True)
        elif state == "unknown":
            log.warning(
                "leaving %s: it was not written by a process of this host that can be "
                "checked; remove it by hand if no run is writing it",
                path,
            )
        else:
            log.info("leaving %s: the process writing it is alive", path)


@contextmanager
def staged_dir(final: str | Path, replace: bool) -> Iterator[Path]:
    """Build an output directory in a hidden temporary sibling and publish it on success.

    The body writes everything, manifest last, into the yielded directory; on normal exit it is
    moved into place with :func:`publish_dir`, on an exception it is removed. The directory is
    named ``.<name>.tmp-<random>-<pid>-<host>``: first, :func:`recover_dir` removes those of
    earlier runs whose process is provably gone (killed, lost node of this host) and restores
    an output that such a run had set aside; those of a live process are left alone.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    tmp = _sibling(final, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        publish_dir(tmp, final, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(tmp: str | Path, final: str | Path, replace: bool) -> None:
    """Move a finished temporary directory (manifest included) to its final name.

    With ``replace``, an existing ``final`` is renamed aside first (``.<name>.old-...``, named
    after this process) and deleted only after the new directory is in place; if the move
    fails, the old one is put back. Readers therefore see the old complete directory, the new
    complete one, or (for an instant) none — never a mix. If the process dies between the two
    renames, the next :func:`recover_dir` of ``final`` puts the old one back; the set-aside
    copy loses its manifest before it is deleted, so a deletion cut short is never restored.

    Raises:
        FileExistsError: ``final`` exists and ``replace`` is false.
    """
    tmp, final = Path(tmp), Path(final)
    if not (tmp / MANIFEST).is_file():
        raise RuntimeError(f"refusing to publish {tmp}: it has no {MANIFEST}")
    old = None
    if final.exists():
        if not replace:
            raise FileExistsError(
                f"{final} appeared while this run was writing it; nothing was replaced"
            )
        old = _sibling(final, "old")
        final.rename(old)
    try:
        tmp.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        (old / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(
    directory: str | Path,
    kind: str | None = FORMAT_NAME,
    version: int | None = FORMAT_VERSION,
    missing: str | None = None,
) -> dict[str, Any]:
    """The ``manifest.json`` of an output directory, checked: the one reader of every output's
    manifest (walk output, run export, neighbour table, evaluation).

    Args:
        directory: the output directory.
        kind: the ``format`` it must have (a walk output's by default); None: any.
        version: the ``format_version`` it must have; None: any.
        missing: what a missing manifest means, for the error message (default: for a walk
            output, that the walk job did not finish; else that its writer did not).

    Raises:
        IncompleteOutputError: no manifest (the writer did not finish), not JSON, another format
            or version, or (walk outputs) a listed walk shard that is missing.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.exists():
        what = "walk output" if kind == FORMAT_NAME else "directory"
        raise IncompleteOutputError(
            f"{what} {directory} does not exist" + (f": {missing}" if missing else "")
        )
    if not directory.is_dir():
        raise IncompleteOutputError(f"{directory} is a file, not an output directory")
    if not path.is_file():
        if missing is None:
            missing = (
                "the walk job did not finish writing it (re-run jobs/walks.py)"
                if kind == FORMAT_NAME
                else "the run writing it did not finish"
            )
        raise IncompleteOutputError(f"{directory} has no {MANIFEST}: {missing}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IncompleteOutputError(f"{path}: not valid JSON ({exc})") from None
    found = manifest.get("format_version")
    readable = (
        version is None
        or found == version
        or (kind == FORMAT_NAME and version == FORMAT_VERSION and found in READABLE_VERSIONS)
    )
    if kind is not None and (manifest.get("format") != kind or not readable):
        expected = f"{kind!r}" + (f" v{version}" if version is not None else "")
        raise IncompleteOutputError(
            f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')!r}, "
            f"expected {expected}"
        )
    if kind == FORMAT_NAME:
        for shard in manifest.get("walks", {}).get("files", []):
            if not (directory / shard["path"]).is_file():
                raise IncompleteOutputError(f"{directory}: walk shard {shard['path']} is missing")
    return manifest


def manifest_digest(directory: str | Path) -> str:
    """SHA-256 of an output's ``manifest.json``: its identity. Every run of a job writes a new
    manifest (timings, row counts, config), so a regenerated output at the same path gets a new
    digest; consumers record it to know which output they were made from."""
    return hashlib.sha256((Path(directory) / MANIFEST).read_bytes()).hexdigest()
