"""Export a trained model to its run directory (rank 0 only; sharded tables are exported by
every rank, each its own rows, in parts: :mod:`eges.training.parts`, whose layout the readers
here accept too).

    RUN/export/
      embeddings.parquet   item_idx, item_id, vector list<float32>, cold (vector from side info)
      embeddings.kv        gensim KeyedVectors (keys = raw item ids): kv.most_similar("1")
      weights.parquet      per-item source weights (item, then each field) — which side
                           information matters for which item (EGES, GES)
      model.pt             what embedding new items needs: state dict + shapes + field names
      vocab/<field>.parquet  side-info vocabularies (value -> index), copied from the walk output
      projector/           TensorBoard embedding projector (--logdir RUN/export/projector):
                           vectors.tsv, metadata.tsv (item_id, name, cold, side-info values by field
                           joined by "|"), projector_config.pbtxt; at most PROJECTOR_MAX_ROWS rows
      config.yaml
      manifest.json        written last

Warm items (they occur in the walks) get the aggregated H_v; items without walks get the
cold-start vector (mean of their side-info embeddings, paper §3.3.2) when they have a usable
side-info value, one that a walked item carries too (the others were never trained, and
``eges embed`` ignores them as well). Items with neither get no vector: they are not in the
export (no row, no neighbour, not covered by the evaluation) and are counted in the manifest
(``items_without_vector``; ``without_usable_side_info`` of them have side-info values, none
usable). Exports before format version 3 gave the latter a zero vector; :func:`read_embeddings`
leaves such rows out.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from eges import __version__, schema
from eges.config import Config
from eges.training.items import ItemTable
from eges.training.model import EGES

log = logging.getLogger(__name__)

RUN_FORMAT = "eges-run"
# 2: embeddings.parquet has walk_count; 3: no row for an item without walks and without a
# usable side-info value (version 2 gave it a zero vector, left out when read); 4: item_idx
# int64, as the walk output's (readers take the int32 of earlier versions too)
EXPORT_VERSION = 4
EXPORT_DIR = "export"
CHUNK = 65536
PROJECTOR_DIR = "projector"
EMBEDDINGS = "embeddings"  # embeddings.parquet, or embeddings/part-*.parquet when partitioned
WEIGHTS = "weights"  # likewise
CONTEXT_COLUMN = "context"  # Z rows, in a partitioned export's embeddings (no model.pt tables)
# rows written for the projector: its t-SNE and UMAP run on at most 10k and PCA on 50k points
# in the browser, and 50k rows of 128 floats are ~60 MB of TSV; above, a seeded uniform sample
PROJECTOR_MAX_ROWS = 50_000


@torch.no_grad()
def item_vectors(
    model: EGES, items: ItemTable, walk_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors of every item that can have one: walked items, and items with a usable
    side-info value (:func:`usable_side_info`).

    Returns:
        (item_idx (M,), vectors (M, D) float32, cold (M,) bool).
    """
    model.eval()
    ids = torch.arange(1, items.num_items + 1)
    warm = torch.from_numpy(walk_counts[1:] > 0)
    cold = ~warm & usable_side_info(model, items)
    keep = warm | cold
    out = torch.zeros(items.num_items, model.item.embedding_dim, dtype=torch.float32)
    for lo in range(0, items.num_items, CHUNK):
        chunk = ids[lo : lo + CHUNK]
        out[lo : lo + CHUNK] = model(chunk)
        c = cold[lo : lo + CHUNK]
        if c.any():
            out[lo : lo + CHUNK][c] = model.cold_start_items(chunk[c])
    return ids[keep].numpy(), out[keep].numpy(), cold[keep].numpy()


def side_info_counts(model: EGES, items: ItemTable, trained_only: bool) -> torch.Tensor:
    """(V,) side-info values of each item over the model's fields; with ``trained_only``, only
    the values a walked item carries too (the trained ones, :meth:`EGES.mark_trained_values`)."""
    total = torch.zeros(items.num_items, dtype=torch.long)
    for i, (off, values) in enumerate(
        zip(items.offsets[: model.num_fields], items.values[: model.num_fields])
    ):
        if trained_only:
            kept = getattr(model, f"side_trained_{i}").cpu()[values].long()
            cum = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(kept, 0)])
            total += cum[off[2:]] - cum[off[1:-1]]
        else:
            total += off[2:] - off[1:-1]
    return total


def usable_side_info(model: EGES, items: ItemTable) -> torch.Tensor:
    """(V,) bool: whether each item has a side-info value that was trained, so that its
    cold-start vector is not the zero vector (the others are ignored by cold start)."""
    return side_info_counts(model, items, trained_only=True) > 0


COLLAPSED = 0.8  # mean pairwise cosine above which neighbour scores say little


def unit_sum(vectors: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(Σ of the rows scaled to unit length (D,) float64, how many of them, all rows): the
    parts of :func:`mean_pairwise_cosine`, which add up over pieces of a table. Zero rows are
    left out of the first two."""
    vectors = np.asarray(vectors)
    total = np.zeros(vectors.shape[1] if vectors.ndim == 2 else 0, dtype=np.float64)
    n = 0
    for lo in range(0, len(vectors), CHUNK):  # in float64 a chunk at a time, not a copy of all
        x = vectors[lo : lo + CHUNK].astype(np.float64)
        norms = np.linalg.norm(x, axis=1)
        x = x[norms > 0] / norms[norms > 0, None]
        total += x.sum(0)
        n += len(x)
    return total, n, len(vectors)


def cosine_from_sum(total: np.ndarray, n: int) -> float | None:
    """Mean pairwise cosine of n unit rows summing to ``total``: with unit rows u_i,
    Σ_{i≠j} u_i·u_j = |Σ u_i|² − n. None for fewer than two rows."""
    if n < 2:
        return None
    return float((total @ total - n) / (n * (n - 1)))


def mean_pairwise_cosine(vectors: np.ndarray) -> float | None:
    """Mean cosine over all pairs of distinct rows, exactly, in O(N·D). Zero rows are left
    out; None for fewer than two rows.

    Near 1 the vectors have collapsed onto one direction and every neighbour scores alike."""
    return cosine_from_sum(*unit_sum(vectors)[:2])


@torch.no_grad()
def vector_health(
    model: EGES, idx: np.ndarray, vectors: np.ndarray, cold: np.ndarray
) -> dict[str, Any]:
    """Mean pairwise cosine of the exported warm and cold vectors, and of the side-info-only
    vectors of the warm items (what a new item with the same metadata would get).

    Returns:
        ``{group: {"vectors": N, "mean_pairwise_cosine": c}}`` for ``warm``, ``cold`` and (with
        side information) ``side_info_only``; ``collapsed`` lists the groups above
        :data:`COLLAPSED`.
    """
    groups = {"warm": vectors[~cold], "cold": vectors[cold]}
    if model.num_fields:
        warm_ids = torch.from_numpy(idx[~cold].astype(np.int64))
        groups["side_info_only"] = torch.cat(
            [
                model.cold_start_items(warm_ids[lo : lo + CHUNK])
                for lo in range(0, len(warm_ids), CHUNK)
            ]
            or [torch.zeros(0, vectors.shape[1])]
        ).numpy()
    return health_from_sums({name: unit_sum(v) for name, v in groups.items()})


def health_from_sums(sums: dict[str, tuple[np.ndarray, int, int]]) -> dict[str, Any]:
    """:func:`vector_health`'s report from each group's :func:`unit_sum` (summed over the
    parts of a partitioned export); logs a warning for each collapsed group."""
    out: dict[str, Any] = {
        name: {"vectors": rows, "mean_pairwise_cosine": cosine_from_sum(total, n)}
        for name, (total, n, rows) in sums.items()
    }
    out["collapsed"] = [
        name for name, g in out.items() if (g["mean_pairwise_cosine"] or 0.0) > COLLAPSED
    ]
    for name in out["collapsed"]:
        log.warning(
            "the %s vectors have collapsed: mean pairwise cosine %.3f over %d vectors "
            "(above %.1f), so their neighbour scores barely differ. Seen without "
            "train.prior_offset (the default) when few Adam steps are taken (a small "
            "catalogue trained one epoch): the first steps then move every vector the "
            "same way; keep the offset on, or train more epochs",
            name,
            out[name]["mean_pairwise_cosine"],
            out[name]["vectors"],
            COLLAPSED,
        )
    return out


@torch.no_grad()
def source_weights(model: EGES, items: ItemTable) -> pa.Table:
    ids = torch.arange(1, items.num_items + 1)
    weights = torch.cat(
        [model.source_weights(ids[lo : lo + CHUNK]) for lo in range(0, len(ids), CHUNK)]
    )  # (V, n+1)
    cols = {
        "item_idx": pa.array(ids.numpy().astype(np.int64)),
        "item_id": pa.array(items.item_ids[1:]),
    }
    for j, name in enumerate(["item"] + items.fields[: model.num_fields]):
        cols[f"weight_{name}"] = pa.array(weights[:, j].numpy().astype(np.float32))
    return pa.table(cols)


def _tsv_cell(text: str) -> str:
    """A metadata cell: the projector splits rows on newlines and columns on tabs, no quoting."""
    return re.sub(r"[\t\r\n]+", " ", text)


def side_info_strings(
    items: ItemTable, field_index: int, vocab: pa.Table, idx: np.ndarray, sep: str = "|"
) -> list[str]:
    """Each item's raw values of one side-info field, joined by ``sep`` ("" without a value)."""
    import pyarrow.compute as pc

    names = np.full(items.vocab_sizes[field_index] + 1, "", dtype=object)
    names[vocab["index"].to_numpy()] = vocab["value"].to_numpy(zero_copy_only=False)
    off = items.offsets[field_index].numpy()
    values = pa.array(names[items.values[field_index].numpy()], pa.string())
    lists = pa.ListArray.from_arrays(pa.array(off[1:], pa.int64()), values)  # row j: item j + 1
    joined = pc.binary_join(lists.take(pa.array(idx.astype(np.int64) - 1)), sep)
    return joined.to_pylist()


def projector_rows(total: int, max_rows: int = PROJECTOR_MAX_ROWS, seed: int = 0) -> np.ndarray:
    """Which of ``total`` exported rows (in item order) the projector shows: all, or above
    ``max_rows`` a uniform sample drawn with ``seed``, sorted."""
    if total <= max_rows:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=max_rows, replace=False))


def write_projector(
    out: Path,
    idx: np.ndarray,
    item_ids: list[str],
    vectors: np.ndarray,
    cold: np.ndarray,
    items: ItemTable,
    vocabs: dict[str, pa.Table],
    seed: int = 0,
    max_rows: int = PROJECTOR_MAX_ROWS,
    names: dict[str, str] | None = None,
    total: int | None = None,
) -> dict[str, Any]:
    """TensorBoard embedding-projector files of the exported vectors in ``out``.

    ``vectors.tsv`` (one vector per row, tab-separated), ``metadata.tsv`` (a header row, then
    ``item_id``, ``name`` when the walk output has display names, ``cold`` and one column per
    side-info field, values joined by "|"), and
    ``projector_config.pbtxt`` pointing at both (paths relative to it, as the projector wants).
    Above ``max_rows`` vectors a uniform sample (seeded, in item order) is written
    (:func:`projector_rows`); with ``total``, the rows given are already that sample of
    ``total`` exported vectors (a partitioned export reads only those from its parts).

    Returns:
        The manifest entry: rows written, of how many, and whether they are a sample.
    """
    import pyarrow.csv as pacsv

    if total is None:
        total = len(idx)
        rows = projector_rows(total, max_rows, seed)
    else:
        rows = np.arange(len(idx))
    out.mkdir()
    # full float32 precision, written by Arrow (far faster than formatting in Python)
    pacsv.write_csv(
        pa.table({f"d{j}": vectors[rows, j] for j in range(vectors.shape[1])}),
        out / "vectors.tsv",
        pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"),
    )
    columns = {"item_id": [item_ids[r] for r in rows]}
    if names:
        columns["name"] = [names.get(item_ids[r], "") for r in rows]
    columns["cold"] = np.where(cold[rows], "true", "false").tolist()
    for j, f in enumerate(items.fields):
        if f in columns:  # a field called item_id or cold: keep both columns apart
            continue
        columns[f] = side_info_strings(items, j, vocabs[f], idx[rows])
    lines = ["\t".join(columns)]
    lines += ["\t".join(_tsv_cell(c) for c in row) for row in zip(*columns.values())]
    (out / "metadata.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "projector_config.pbtxt").write_text(
        "embeddings {\n"
        '  tensor_name: "eges"\n'
        '  tensor_path: "vectors.tsv"\n'
        '  metadata_path: "metadata.tsv"\n'
        "}\n"
    )
    entry: dict[str, Any] = {
        "path": PROJECTOR_DIR,
        "rows": len(rows),
        "vectors": total,
        "sampled": total > max_rows,
        "metadata_columns": list(columns),
    }
    if total > max_rows:
        entry["note"] = (
            f"a uniform sample (seed {seed}) of {len(rows):,} of the {total:,} "
            f"exported vectors; the embeddings have them all"
        )
        log.info("projector: %s", entry["note"])
    return entry


def model_metadata(model: EGES, items: ItemTable) -> dict[str, Any]:
    return {
        "num_items": items.num_items,
        "vocab_sizes": items.vocab_sizes,
        "fields": items.fields,
        "lowercase_fields": items.lowercase,
        "numeric_fields": items.numeric,
        "embedding_dim": model.item.embedding_dim,
        "mode": model.mode,
        # each field's weight in a new item's vector (EGES.cold_weights)
        "cold_weights": model.cold_weights.tolist(),
    }


def vector_column(vectors: np.ndarray) -> pa.Array:
    """(M, D) float32 rows as a parquet list<float32> column."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]).cast(
        pa.list_(pa.float32())
    )


def embeddings_table(
    idx: np.ndarray,
    item_ids: list[str],
    vectors: np.ndarray,
    cold: np.ndarray,
    walk_counts: np.ndarray,
    context: np.ndarray | None = None,
) -> pa.Table:
    """The rows of ``embeddings``: item_idx, item_id, vector, cold, walk_count, and in a
    partitioned export each item's context row Z (zero for an untrained item)."""
    cols = {
        "item_idx": pa.array(idx.astype(np.int64)),
        "item_id": pa.array(item_ids, pa.string()),
        "vector": vector_column(vectors),
        "cold": pa.array(cold, pa.bool_()),
        # occurrences in the training walks: the popularity prior of served H·Z
        "walk_count": pa.array(walk_counts[idx].astype(np.int64)),
    }
    if context is not None:
        cols[CONTEXT_COLUMN] = vector_column(context)
    return pa.table(cols)


def write_vocabs(out: Path, walk_dir: Path, fields: list[str]) -> dict[str, pa.Table]:
    """Copy the side-info vocabularies of the walk output to ``out/vocab/<field>.parquet``.

    Returns:
        field -> its vocabulary (value, index)."""
    (out / "vocab").mkdir()
    vocabs = {}
    for f in fields:
        table = schema.read_table(walk_dir / schema.VOCAB_DIR / f, schema.VOCAB_SCHEMA)
        pq.write_table(table, out / "vocab" / f"{f}.parquet")
        vocabs[f] = table
    return vocabs


def write_vocabs_and_projector(
    out: Path,
    cfg: Config,
    items: ItemTable,
    idx: np.ndarray,
    item_ids: list[str],
    vectors: np.ndarray,
    cold: np.ndarray,
    total: int | None = None,
) -> dict[str, Any]:
    """``out/vocab`` (:func:`write_vocabs`) and ``out/projector`` (:func:`write_projector`,
    whose ``total`` says the rows given are already its sample); returns the projector's
    manifest entry."""
    walk_dir = Path(cfg.train.data)
    vocabs = write_vocabs(out, walk_dir, items.fields)
    return write_projector(
        out / PROJECTOR_DIR,
        idx,
        item_ids,
        vectors,
        cold,
        items,
        vocabs,
        seed=cfg.train.seed,
        names=schema.item_names(walk_dir / schema.ITEMS_DIR),
        total=total,
    )


def export_manifest(
    model: EGES,
    items: ItemTable,
    walk_counts: np.ndarray,
    cfg: Config,
    out: Path,
    counts: dict[str, int],
    health: dict[str, Any],
    projector: dict[str, Any],
    extra: dict[str, Any] | None,
    walks_digest: str | None,
    layout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``config.yaml`` and, last, the manifest of an export in ``out``.

    Args:
        model: holds at least the side-info tables and which values were trained.
        counts: ``vectors`` exported and how many of them are ``cold``.
        layout: how the vectors are stored, for a partitioned export (its parts).

    Returns:
        The manifest.
    """
    walk_dir = Path(cfg.train.data)
    (out / schema.CONFIG_FILE).write_text(cfg.to_yaml())
    manifest = {
        "format": RUN_FORMAT,
        "format_version": EXPORT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": model.mode,
        "fields": items.fields[: model.num_fields],
        # each field's weight in a new item's vector (train.cold_weights)
        "cold_weights": dict(zip(items.fields, model.cold_weights.tolist())),
        **(layout or {}),
        "counts": {
            "items": items.num_items,
            "vectors": counts["vectors"],
            "warm": counts["vectors"] - counts["cold"],
            "cold": counts["cold"],
            "items_without_vector": items.num_items - counts["vectors"],
            # of those: items with side-info values, none of them trained
            "without_usable_side_info": int(
                (
                    (torch.from_numpy(walk_counts[1:]) == 0)
                    & (side_info_counts(model, items, trained_only=False) > 0)
                    & ~usable_side_info(model, items)
                ).sum()
            ),
        },
        "walks": str(walk_dir),
        "walks_manifest_sha256": walks_digest or schema.manifest_digest(walk_dir),
        "health": health,
        "projector": projector,
        "versions": {"eges": __version__, "torch": torch.__version__},
        **(extra or {}),
        "config": cfg.to_dict(),
    }
    schema.write_manifest(out, manifest)
    return manifest


def export_run(
    model: EGES,
    items: ItemTable,
    walk_counts: np.ndarray,
    cfg: Config,
    run_dir: Path,
    extra: dict[str, Any] | None = None,
    walks_digest: str | None = None,
) -> dict[str, Any]:
    """Write ``RUN/export`` atomically (temporary directory, manifest last, rename).

    Args:
        model: the trained model (any device; exported from CPU).
        items: the item table of the walk output.
        walk_counts: (V + 1,) occurrences in the walks (0 = never walked: cold).
        cfg: the resolved config (written beside the export).
        run_dir: the run directory.
        extra: more manifest entries (training statistics).
        walks_digest: digest of the walk manifest as training read it
            (:func:`eges.schema.manifest_digest`; default: as it is now).

    Returns:
        The export manifest.
    """
    from gensim.models import KeyedVectors

    model = model.to("cpu")
    final = run_dir / EXPORT_DIR
    with schema.staged_dir(final, replace=True) as tmp:
        idx, vectors, cold = item_vectors(model, items, walk_counts)
        item_ids = [items.item_ids[i] for i in idx]
        pq.write_table(
            embeddings_table(idx, item_ids, vectors, cold, walk_counts),
            tmp / (EMBEDDINGS + ".parquet"),
        )
        kv = KeyedVectors(vector_size=vectors.shape[1])
        kv.add_vectors(item_ids, vectors)
        kv.save(str(tmp / "embeddings.kv"))
        if model.num_fields:
            pq.write_table(source_weights(model, items), tmp / (WEIGHTS + ".parquet"))
        torch.save(
            {"state_dict": model.state_dict(), **model_metadata(model, items)}, tmp / "model.pt"
        )
        projector = write_vocabs_and_projector(tmp, cfg, items, idx, item_ids, vectors, cold)
        manifest = export_manifest(
            model,
            items,
            walk_counts,
            cfg,
            tmp,
            counts={"vectors": len(idx), "cold": int(cold.sum())},
            health=vector_health(model, idx, vectors, cold),
            projector=projector,
            extra=extra,
            walks_digest=walks_digest,
        )
    log.info("exported %d vectors (%d cold) to %s", len(idx), int(cold.sum()), final)
    return manifest


def export_path(run_dir: str | Path, name: str) -> Path:
    """Where an export keeps ``embeddings`` or ``weights``: ``name.parquet``, or the folder
    ``name/`` of a partitioned export's parts (one or more ``part-*.parquet``)."""
    folder = Path(run_dir) / EXPORT_DIR / name
    return folder if folder.is_dir() else folder.with_name(name + ".parquet")


def export_parts(run_dir: str | Path, name: str) -> list[Path]:
    """The parquet files of ``embeddings`` or ``weights``, in item order: the single file, or a
    partitioned export's parts ([] when the export has no such table)."""
    path = export_path(run_dir, name)
    if not path.is_dir():
        return [path] if path.exists() else []
    parts = sorted(path.glob("part-*.parquet"))
    if not parts:
        raise schema.IncompleteOutputError(f"{path} has no part-*.parquet: an incomplete export")
    return parts


def read_export_table(
    run_dir: str | Path, name: str, columns: list[str] | None = None
) -> pa.Table | None:
    """``embeddings`` or ``weights`` of an export, its parts in order (item order), or None
    when the export has no such table (``weights`` of a model without side information)."""
    parts = export_parts(run_dir, name)
    if not parts:
        return None
    return pa.concat_tables(pq.read_table(part, columns=columns) for part in parts)


def read_embeddings(run_dir: str | Path) -> tuple[pa.Table, np.ndarray]:
    """The exported embeddings (``embeddings.parquet`` or a partitioned export's parts, less
    their context rows: :func:`read_context`) and their vectors as one (M, D) float32 array.

    A cold row with a zero vector (an item without a usable side-info value, which exports
    before format version 3 wrote) is left out: such an item has no vector."""
    read_export_manifest(run_dir)
    parts = export_parts(run_dir, EMBEDDINGS)
    if not parts:
        raise schema.IncompleteOutputError(f"{run_dir}: the export has no embeddings")
    names = [n for n in pq.read_schema(parts[0]).names if n != CONTEXT_COLUMN]
    table = read_export_table(run_dir, EMBEDDINGS, columns=names)
    vectors = vector_array(table["vector"])
    if "cold" in table.column_names:
        empty = table["cold"].to_numpy(zero_copy_only=False) & ~vectors.any(1)
        if empty.any():
            log.info(
                "%s: %d cold items without a usable side-info value have a zero vector (an "
                "export before format version 3): left out",
                run_dir,
                int(empty.sum()),
            )
            keep = np.flatnonzero(~empty)
            table, vectors = table.take(pa.array(keep)), vectors[keep]
    return table, vectors


def vector_array(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float32> column of equal-length rows as an (M, D) float32 array (a chunk at a
    time: one list array holds at most 2³¹ floats, 16.7M rows of 128)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    arrays = [
        c.flatten().to_numpy().astype(np.float32).reshape(len(c), -1) for c in chunks if len(c)
    ]
    if not arrays:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]


def read_context(run_dir: str | Path, item_idx: np.ndarray) -> np.ndarray:
    """The trained context rows Z of ``item_idx`` (M,), (M, D) float32: from the partitioned
    export's parts, or from ``model.pt``. An item without a row (untrained) gets zeros."""
    item_idx = np.asarray(item_idx, dtype=np.int64)
    if not export_path(run_dir, EMBEDDINGS).is_dir():
        model, _ = load_model(run_dir)
        return model.context.weight.detach().float().numpy()[item_idx]
    table = read_export_table(run_dir, EMBEDDINGS, columns=["item_idx", CONTEXT_COLUMN])
    have = table["item_idx"].to_numpy().astype(np.int64)  # ascending: parts in item order
    z = vector_array(table[CONTEXT_COLUMN])
    pos = np.minimum(np.searchsorted(have, item_idx), max(len(have) - 1, 0))
    found = (have[pos] == item_idx) if len(have) else np.zeros(len(item_idx), dtype=bool)
    out = np.zeros((len(item_idx), z.shape[1] if z.ndim == 2 else 0), dtype=np.float32)
    out[found] = z[pos[found]]
    return out


def read_export_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The export manifest of a run; refuses an export that did not finish."""
    return schema.read_manifest(
        Path(run_dir) / EXPORT_DIR, kind=RUN_FORMAT, version=None, missing="no finished export"
    )


def load_model(run_dir: str | Path, map_location: str = "cpu") -> tuple[EGES, dict[str, Any]]:
    """The exported model, ready for :meth:`EGES.cold_start` (no side-info lists attached).

    A partitioned export's ``model.pt`` has the side-info tables only (``side_only``): its
    item, attention and context tables have the padding row alone (the vectors and context rows
    are in the parts: :func:`read_embeddings`, :func:`read_context`)."""
    read_export_manifest(run_dir)
    blob = torch.load(
        Path(run_dir) / EXPORT_DIR / "model.pt", map_location=map_location, weights_only=True
    )
    n = len(blob["vocab_sizes"])
    rows = 0 if blob.get("side_only") else blob["num_items"]
    model = EGES(
        rows,
        blob["vocab_sizes"],
        [torch.zeros(rows + 2, dtype=torch.long)] * n,
        [torch.zeros(0, dtype=torch.long)] * n,
        blob["embedding_dim"],
        blob["mode"],
    )
    model.load_state_dict(blob["state_dict"])
    if "cold_weights" in blob:  # exports before learned field weights: equal
        model.cold_weights.copy_(torch.tensor(blob["cold_weights"], dtype=torch.float32))
    model.eval()
    return model, blob
