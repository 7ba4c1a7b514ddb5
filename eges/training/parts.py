"""The export of sharded tables: every rank writes its own rows, nothing is gathered whole.

    RUN/export/
      embeddings/part-RRRRR.parquet   rank R's items: item_idx, item_id, vector, cold,
                                      walk_count, context (the item's Z row: zero if untrained)
      weights/part-RRRRR.parquet      rank R's items' source weights (models with side info)
      model.pt                        the side-info tables only (``side_only``): cold start
      vocab/, projector/, config.yaml
      manifest.json                   written last: the parts, their rows, each rank's bytes

Rank R's items are the rows of W⁰ it holds (:meth:`ShardedEGES.item_range`), so the parts are
in item order. The vectors are computed as on the replicated path (:mod:`eges.training.export`):
H of a walked item from its looked-up rows (the lookups go to the rows' owners, in steps that
every rank takes together), the cold-start vector of an item without walks from the side-info
tables, which every rank has whole (:meth:`ShardedEGES.side_model`; the vocabularies, not the
catalogue). Readers (:func:`eges.training.export.read_embeddings`, ``eges embed``,
``eges neighbors``, the evaluation) read the parts; there is no ``embeddings.kv``.

Rank 0 stages the export in a temporary sibling of ``RUN/export``, the ranks write their parts
into it (the run directory must be on a file system every rank sees, as for checkpoints), rank 0
adds the rest and the manifest, and publishes it with one rename. A rank that cannot write its
part makes every rank fail, and nothing is published.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist

from eges import schema
from eges.config import Config
from eges.training.export import (
    CHUNK,
    EMBEDDINGS,
    EXPORT_DIR,
    PROJECTOR_DIR,
    PROJECTOR_MAX_ROWS,
    WEIGHTS,
    embeddings_table,
    export_manifest,
    health_from_sums,
    model_metadata,
    projector_rows,
    unit_sum,
    usable_side_info,
    vector_array,
    write_projector,
    write_vocabs,
)
from eges.training.items import ItemTable
from eges.training.model import EGES, source_weights
from eges.training.sharded import ShardedEGES

log = logging.getLogger(__name__)

LAYOUT = "parts"  # the manifest's "layout" of a partitioned export


def part_name(rank: int) -> str:
    return f"part-{rank:05d}.parquet"


def _weights_table(ids: np.ndarray, items: ItemTable, weights: np.ndarray, fields: list[str]):
    cols = {
        "item_idx": pa.array(ids.astype(np.int32)),
        "item_id": pa.array([items.item_ids[i] for i in ids], pa.string()),
    }
    for j, name in enumerate(["item"] + fields):
        cols[f"weight_{name}"] = pa.array(weights[:, j].astype(np.float32))
    return pa.table(cols)


class _Writer:
    """One parquet part written a chunk at a time; the first error is kept, not raised (the
    rank goes on with the lookups the other ranks wait for), and reported by :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: pq.ParquetWriter | None = None
        self.error: str | None = None

    def write(self, table: pa.Table) -> None:
        if self.error is not None or table.num_rows == 0:
            return
        try:
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.path, table.schema)
            self.writer.write_table(table, row_group_size=CHUNK)
        except OSError as exc:
            self.error = f"{self.path}: {exc}"

    def close(self) -> str | None:
        try:
            if self.writer is not None:
                self.writer.close()
        except OSError as exc:
            self.error = self.error or f"{self.path}: {exc}"
        return self.error


@torch.no_grad()
def write_part(
    sharded: ShardedEGES,
    side: EGES,
    items: ItemTable,
    walk_counts: np.ndarray,
    out: Path,
) -> dict[str, Any]:
    """Write this rank's rows of ``embeddings`` (and ``weights``) into ``out``; a collective
    (the lookups of every chunk are taken by all ranks together).

    Returns:
        This rank's summary: ``rows`` written, ``cold`` among them, the health sums
        (:func:`eges.training.export.unit_sum` per group) and ``error`` (None, or why the part
        could not be written).
    """
    rank = dist.get_rank(sharded.group)
    lo, hi = sharded.item_range()
    hi = min(hi, items.num_items + 1)
    steps = torch.tensor([math.ceil(max(hi - lo, 0) / CHUNK)])
    dist.all_reduce(steps, op=dist.ReduceOp.MAX, group=sharded.group)
    usable = usable_side_info(side, items).numpy() if side.num_fields else None  # (V,)
    fields = items.fields[: side.num_fields]
    emb = _Writer(out / EMBEDDINGS / part_name(rank))
    wts = _Writer(out / WEIGHTS / part_name(rank)) if side.num_fields else None
    dim = sharded.layout.embedding_dim
    sums = {name: (np.zeros(dim), 0, 0) for name in ("warm", "cold", "side_info_only")}
    rows = cold_rows = 0
    for step in range(int(steps)):
        a, b = lo + step * CHUNK, min(hi, lo + (step + 1) * CHUNK)
        # a rank past its rows still takes part in the lookups, with the padding row
        ids = torch.arange(a, b) if a < b else torch.zeros(1, dtype=torch.long)
        ids = ids.to(sharded.device)
        own, z, _, logits, means, present = sharded.lookup(ids, ids.new_zeros(len(ids), 0))
        if a >= b:
            continue
        h = sharded.embed(own, logits, means, present).float().cpu().numpy()  # (N, D)
        idx = ids.cpu().numpy()
        warm = walk_counts[idx] > 0
        cold = ~warm & (usable[idx - 1] if usable is not None else False)
        if cold.any():
            h[cold] = side.cold_start_items(torch.from_numpy(idx[cold])).numpy()
        keep = warm | cold
        emb.write(
            embeddings_table(
                idx[keep],
                [items.item_ids[i] for i in idx[keep]],
                h[keep],
                cold[keep],
                walk_counts,
                context=z.float().cpu().numpy()[keep],
            )
        )
        if wts is not None:
            weights = source_weights(logits, present).float().cpu().numpy()  # (N, n + 1)
            wts.write(_weights_table(idx, items, weights, fields))
        groups = {"warm": h[warm], "cold": h[cold]}
        if side.num_fields and warm.any():
            groups["side_info_only"] = side.cold_start_items(torch.from_numpy(idx[warm])).numpy()
        for name, vectors in groups.items():
            sums[name] = tuple(a + b for a, b in zip(sums[name], unit_sum(vectors)))
        rows += int(keep.sum())
        cold_rows += int(cold.sum())
    errors = [e for e in (emb.close(), wts.close() if wts else None) if e]
    if not side.num_fields:
        del sums["side_info_only"]
    return {
        "rank": rank,
        "rows": rows,
        "cold": cold_rows,
        "items": [lo, hi],
        "sums": sums,
        "error": "; ".join(errors) or None,
    }


def read_projector_sample(
    parts: list[Path], total: int, dim: int, max_rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The projector's rows (:func:`projector_rows` of ``total``) read from the parts in
    order, a row group at a time: (item_idx, vectors, cold) of the sample only."""
    wanted = projector_rows(total, max_rows, seed)
    idx, vectors, cold = [], [], []
    offset = 0
    for part in parts:
        for batch in pq.ParquetFile(part).iter_batches(
            batch_size=CHUNK, columns=["item_idx", "vector", "cold"]
        ):
            take = wanted[(wanted >= offset) & (wanted < offset + batch.num_rows)] - offset
            offset += batch.num_rows
            if len(take):
                batch = batch.take(pa.array(take))
                idx.append(batch.column("item_idx").to_numpy())
                vectors.append(vector_array(batch.column("vector")))
                cold.append(batch.column("cold").to_numpy(zero_copy_only=False))
    if not idx:
        return np.zeros(0, dtype=np.int32), np.zeros((0, dim), dtype=np.float32), np.zeros(0, bool)
    return np.concatenate(idx), np.concatenate(vectors), np.concatenate(cold)


def _finish(
    tmp: Path,
    summaries: list[dict[str, Any]],
    side: EGES,
    items: ItemTable,
    walk_counts: np.ndarray,
    cfg: Config,
    extra: dict[str, Any] | None,
    walks_digest: str | None,
    bytes_per_rank: list[dict[str, int]] | None,
) -> dict[str, Any]:
    """Rank 0: model.pt (side-info tables), vocabularies, projector sample, manifest."""
    torch.save(
        {"state_dict": side.state_dict(), **model_metadata(side, items), "side_only": True},
        tmp / "model.pt",
    )
    walk_dir = Path(cfg.train.data)
    vocabs = write_vocabs(tmp, walk_dir, items.fields)
    total = sum(s["rows"] for s in summaries)
    parts = [tmp / EMBEDDINGS / part_name(s["rank"]) for s in summaries if s["rows"]]
    idx, vectors, cold = read_projector_sample(
        parts, total, cfg.train.embedding_dim, PROJECTOR_MAX_ROWS, cfg.train.seed
    )
    projector = write_projector(
        tmp / PROJECTOR_DIR,
        idx,
        [items.item_ids[i] for i in idx],
        vectors,
        cold,
        items,
        vocabs,
        seed=cfg.train.seed,
        names=schema.item_names(walk_dir / schema.ITEMS_DIR),
        total=total,
    )
    sums: dict[str, tuple] = {}
    for s in summaries:
        for name, part in s["sums"].items():
            sums[name] = tuple(a + b for a, b in zip(sums.get(name, (0.0, 0, 0)), part))
    layout = {
        "layout": LAYOUT,
        "parts": [
            {
                "rank": s["rank"],
                "path": f"{EMBEDDINGS}/{part_name(s['rank'])}",
                "rows": s["rows"],
                "cold": s["cold"],
                # the item indices [lo, hi) this rank held
                "items": s["items"],
                **({"bytes": bytes_per_rank[s["rank"]]} if bytes_per_rank else {}),
            }
            for s in summaries
            if s["rows"]
        ],
    }
    return export_manifest(
        side,
        items,
        walk_counts,
        cfg,
        tmp,
        counts={"vectors": total, "cold": sum(s["cold"] for s in summaries)},
        health=health_from_sums(sums),
        projector=projector,
        extra=extra,
        walks_digest=walks_digest,
        layout=layout,
    )


def export_partitioned(
    sharded: ShardedEGES,
    items: ItemTable,
    walk_counts: np.ndarray,
    cfg: Config,
    run_dir: Path,
    extra: dict[str, Any] | None = None,
    walks_digest: str | None = None,
    bytes_per_rank: list[dict[str, int]] | None = None,
) -> dict[str, Any] | None:
    """Write ``RUN/export`` from sharded tables, each rank its own rows; a collective.

    Args:
        sharded: the trained tables.
        items, walk_counts, cfg, run_dir, extra, walks_digest: as
            :func:`eges.training.export.export_run`.
        bytes_per_rank: each rank's bytes of tables and optimiser state, for the manifest.

    Returns:
        The export manifest on rank 0, None on the others.

    Raises:
        OSError: a rank could not write its part, or rank 0 the rest (on every rank).
    """
    group = sharded.group
    rank = dist.get_rank(group)
    src = dist.get_global_rank(group, 0)
    side = sharded.side_model(walk_counts)
    final = run_dir / EXPORT_DIR
    manifest = None
    with schema.staged_dir(final, replace=True) if rank == 0 else nullcontext(None) as staged:
        box = [str(staged) if rank == 0 else None]
        dist.broadcast_object_list(box, src=src, group=group)
        tmp = Path(box[0])
        if rank == 0:
            (tmp / EMBEDDINGS).mkdir()
            if side.num_fields:
                (tmp / WEIGHTS).mkdir()
        dist.barrier(group=group)
        summary = write_part(sharded, side, items, walk_counts, tmp)
        summaries: list = [None] * dist.get_world_size(group)
        dist.all_gather_object(summaries, summary, group=group)
        failed = [f"rank {s['rank']}: {s['error']}" for s in summaries if s["error"]]
        if failed:
            raise OSError("the export's parts could not be written: " + "; ".join(failed))
        error = None
        if rank == 0:
            try:
                manifest = _finish(
                    tmp, summaries, side, items, walk_counts, cfg, extra, walks_digest,
                    bytes_per_rank,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - told to the other ranks, then raised
                error = exc
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=src, group=group)
        if error is not None:
            raise error
        if box[0] is not None:
            raise OSError(f"rank 0 could not finish the export: {box[0]}")
    if rank == 0:
        c = manifest["counts"]
        log.info(
            "exported %d vectors (%d cold) to %s in %d parts",
            c["vectors"],
            c["cold"],
            final,
            len(manifest["parts"]),
        )
    return manifest
