"""Export a trained model to its run directory (rank 0 only).

    RUN/export/
      embeddings.parquet   item_idx, item_id, vector list<float32>, cold (vector from side info)
      embeddings.kv        gensim KeyedVectors (keys = raw item ids): kv.most_similar("1")
      weights.parquet      per-item source weights (item, then each field) — which side
                           information matters for which item (EGES, GES)
      model.pt             what embedding new items needs: state dict + shapes + field names
      vocab/<field>.parquet  side-info vocabularies (value -> index), copied from the walk output
      config.yaml
      manifest.json        written last

Warm items (they occur in the walks) get the aggregated H_v; items with side information but no
walks get the cold-start vector (mean of their side-info embeddings, paper §3.3.2); items with
neither get no vector and are counted in the manifest.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from eges import __version__, schema
from eges.config import Config
from eges.data.items import ItemTable
from eges.model import EGES

log = logging.getLogger(__name__)

RUN_FORMAT = "eges-run"
EXPORT_DIR = "export"
CHUNK = 65536


@torch.no_grad()
def item_vectors(model: EGES, items: ItemTable, walk_counts: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors of every item that can have one.

    Returns:
        (item_idx (M,), vectors (M, D) float32, cold (M,) bool).
    """
    model.eval()
    ids = torch.arange(1, items.num_items + 1)
    warm = torch.from_numpy(walk_counts[1:] > 0)
    has_side = torch.zeros(items.num_items, dtype=torch.bool)
    if model.num_fields:
        for off in items.offsets[: model.num_fields]:
            has_side |= off[2:] > off[1:-1]
    cold = ~warm & has_side
    keep = warm | cold
    out = torch.zeros(items.num_items, model.item.embedding_dim)
    for lo in range(0, items.num_items, CHUNK):
        chunk = ids[lo: lo + CHUNK]
        out[lo: lo + CHUNK] = model(chunk)
        c = cold[lo: lo + CHUNK]
        if c.any():
            out[lo: lo + CHUNK][c] = model.cold_start_items(chunk[c])
    return ids[keep].numpy(), out[keep].numpy().astype(np.float32), cold[keep].numpy()


COLLAPSED = 0.8  # mean pairwise cosine above which neighbour scores say little


def mean_pairwise_cosine(vectors: np.ndarray) -> float | None:
    """Mean cosine over all pairs of distinct rows, exactly, in O(N·D): with unit rows u_i,
    Σ_{i≠j} u_i·u_j = |Σ u_i|² − N. Zero rows are left out; None for fewer than two rows.

    Near 1 the vectors have collapsed onto one direction and every neighbour scores alike."""
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    x = x[norms > 0] / norms[norms > 0, None]
    n = len(x)
    if n < 2:
        return None
    total = x.sum(0)
    return float((total @ total - n) / (n * (n - 1)))


@torch.no_grad()
def vector_health(model: EGES, idx: np.ndarray, vectors: np.ndarray, cold: np.ndarray
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
            [model.cold_start_items(warm_ids[lo: lo + CHUNK])
             for lo in range(0, len(warm_ids), CHUNK)] or [torch.zeros(0, vectors.shape[1])]
        ).numpy()
    out: dict[str, Any] = {
        name: {"vectors": len(v), "mean_pairwise_cosine": mean_pairwise_cosine(v)}
        for name, v in groups.items()}
    out["collapsed"] = [name for name, g in out.items()
                        if (g["mean_pairwise_cosine"] or 0.0) > COLLAPSED]
    for name in out["collapsed"]:
        log.warning("the %s vectors have collapsed: mean pairwise cosine %.3f over %d vectors "
                    "(above %.1f), so their neighbour scores barely differ. Seen without "
                    "train.prior_offset (the default) when few Adam steps are taken (a small "
                    "catalogue trained one epoch): the first steps then move every vector the "
                    "same way; keep the offset on, or train more epochs", name,
                    out[name]["mean_pairwise_cosine"], out[name]["vectors"], COLLAPSED)
    return out


@torch.no_grad()
def source_weights(model: EGES, items: ItemTable) -> pa.Table:
    ids = torch.arange(1, items.num_items + 1)
    weights = torch.cat([model.source_weights(ids[lo: lo + CHUNK])
                         for lo in range(0, len(ids), CHUNK)])  # (V, n+1)
    cols = {"item_idx": pa.array(ids.numpy().astype(np.int32)),
            "item_id": pa.array(items.item_ids[1:])}
    for j, name in enumerate(["item"] + items.fields[: model.num_fields]):
        cols[f"weight_{name}"] = pa.array(weights[:, j].numpy().astype(np.float32))
    return pa.table(cols)


def model_metadata(model: EGES, items: ItemTable) -> dict[str, Any]:
    return {"num_items": items.num_items, "vocab_sizes": items.vocab_sizes,
            "fields": items.fields, "lowercase_fields": items.lowercase,
            "embedding_dim": model.item.embedding_dim, "mode": model.mode}


def export_run(model: EGES, items: ItemTable, walk_counts: np.ndarray, cfg: Config,
               run_dir: Path, extra: dict[str, Any] | None = None,
               walks_digest: str | None = None) -> dict[str, Any]:
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
        pq.write_table(pa.table({
            "item_idx": pa.array(idx.astype(np.int32)),
            "item_id": pa.array(item_ids),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)),
                                                        vectors.shape[1]).cast(
                pa.list_(pa.float32())),
            "cold": pa.array(cold),
        }), tmp / "embeddings.parquet")
        kv = KeyedVectors(vector_size=vectors.shape[1])
        kv.add_vectors(item_ids, vectors)
        kv.save(str(tmp / "embeddings.kv"))
        if model.num_fields:
            pq.write_table(source_weights(model, items), tmp / "weights.parquet")
        torch.save({"state_dict": model.state_dict(), **model_metadata(model, items)},
                   tmp / "model.pt")
        walk_dir = Path(cfg.train.data)
        (tmp / "vocab").mkdir()
        for f in items.fields:
            table = schema.read_table(walk_dir / schema.VOCAB_DIR / f, schema.VOCAB_SCHEMA)
            pq.write_table(table, tmp / "vocab" / f"{f}.parquet")
        (tmp / schema.CONFIG_FILE).write_text(cfg.to_yaml())
        manifest = {
            "format": RUN_FORMAT,
            "format_version": 1,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "mode": model.mode,
            "fields": items.fields[: model.num_fields],
            "counts": {
                "items": items.num_items,
                "vectors": len(idx),
                "warm": int((~cold).sum()),
                "cold": int(cold.sum()),
                "items_without_vector": items.num_items - len(idx),
            },
            "walks": str(walk_dir),
            "walks_manifest_sha256": walks_digest or schema.manifest_digest(walk_dir),
            "health": vector_health(model, idx, vectors, cold),
            "versions": {"eges": __version__, "torch": torch.__version__},
            **(extra or {}),
            "config": cfg.to_dict(),
        }
        schema.write_manifest(tmp, manifest)
    log.info("exported %d vectors (%d cold) to %s", len(idx), int(cold.sum()), final)
    return manifest


def read_embeddings(run_dir: str | Path) -> tuple[pa.Table, np.ndarray]:
    """The exported ``embeddings.parquet`` and its vectors as one (M, D) float32 array."""
    read_export_manifest(run_dir)
    table = pq.read_table(Path(run_dir) / EXPORT_DIR / "embeddings.parquet")
    column = table["vector"].combine_chunks()
    vectors = column.flatten().to_numpy().astype(np.float32).reshape(len(column), -1)
    return table, vectors


def read_export_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The export manifest of a run; refuses an export that did not finish."""
    path = Path(run_dir) / EXPORT_DIR / schema.MANIFEST
    if not path.is_file():
        raise schema.IncompleteOutputError(f"{path.parent} has no manifest: no finished export")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != RUN_FORMAT:
        raise schema.IncompleteOutputError(f"{path}: not an EGES run export")
    return manifest


def load_model(run_dir: str | Path, map_location: str = "cpu") -> tuple[EGES, dict[str, Any]]:
    """The exported model, ready for :meth:`EGES.cold_start` (no side-info tables attached)."""
    read_export_manifest(run_dir)
    blob = torch.load(Path(run_dir) / EXPORT_DIR / "model.pt", map_location=map_location,
                      weights_only=True)
    n = len(blob["vocab_sizes"])
    model = EGES(blob["num_items"], blob["vocab_sizes"],
                 [torch.zeros(blob["num_items"] + 2, dtype=torch.long)] * n,
                 [torch.zeros(0, dtype=torch.long)] * n, blob["embedding_dim"], blob["mode"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob

