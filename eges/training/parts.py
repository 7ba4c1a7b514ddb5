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
from contextlib import ExitStack
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
    write_vocabs_and_projector,
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
        "item_idx": pa.array(ids.astype(np.int64)),
        "item_id": pa.array([items.item_ids[i] for i in ids], pa.string()),
    }
    for j, name in enumerate(["item"] + fields):
        cols[f"weight_{name}"] = pa.array(weights[:, j].astype(np.float32))
    return pa.table(cols)


class _Writer:
    """One parquet part written a chunk at a time; the first error is kept, not raised (the
    rank goes on with the lookups the other ranks wait for), and reported by :meth:`close`."""

    error: str | None

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
        except Exception as exc:  # noqa: BLE001 - reported to every rank by write_part
            self.error = f"{self.path}: {type(exc).__name__}: {exc}"

    def close(self) -> str | None:
        try:
            if self.writer is not None:
                self.writer.close()
        except Exception as exc:  # noqa: BLE001 - as write
            self.error = self.error or f"{self.path}: {type(exc).__name__}: {exc}"
        return self.error


class _Part:
    """This rank's part of the export, written a chunk of items at a time."""

    def __init__(
        self,
        sharded: ShardedEGES,
        side: EGES,
        items: ItemTable,
        walk_counts: np.ndarray,
        out: Path,
        rank: int,
    ) -> None:
        self.sharded, self.side, self.items, self.walk_counts = sharded, side, items, walk_counts
        self.usable = usable_side_info(side, items).numpy() if side.num_fields else None  # (V,)
        self.fields = items.fields[: side.num_fields]
        self.emb = _Writer(out / EMBEDDINGS / part_name(rank))
        self.wts = _Writer(out / WEIGHTS / part_name(rank)) if side.num_fields else None
        groups = ("warm", "cold", "side_info_only") if side.num_fields else ("warm", "cold")
        dim = sharded.layout.embedding_dim
        self.sums = {name: (np.zeros(dim), 0, 0) for name in groups}  # unit_sum per group
        self.rows = self.cold = 0

    def add(self, ids: torch.Tensor, looked_up: tuple) -> None:
        """Write the items ``ids`` from their rows (:meth:`ShardedEGES.lookup`)."""
        own, z, _, logits, means, present = looked_up
        h = self.sharded.embed(own, logits, means, present).float().cpu().numpy()  # (N, D)
        idx = ids.cpu().numpy()
        warm = self.walk_counts[idx] > 0
        cold = ~warm & (self.usable[idx - 1] if self.usable is not None else False)
        if cold.any():
            h[cold] = self.side.cold_start_items(torch.from_numpy(idx[cold])).numpy()
        keep = warm | cold
        self.emb.write(
            embeddings_table(
                idx[keep],
                [self.items.item_ids[i] for i in idx[keep]],
                h[keep],
                cold[keep],
                self.walk_counts,
                context=z.float().cpu().numpy()[keep],
            )
        )
        if self.wts is not None:
            weights = source_weights(logits, present).float().cpu().numpy()  # (N, n + 1)
            self.wts.write(_weights_table(idx, self.items, weights, self.fields))
        groups = {"warm": h[warm], "cold": h[cold]}
        if self.side.num_fields and warm.any():
            warm_ids = torch.from_numpy(idx[warm])
            groups["side_info_only"] = self.side.cold_start_items(warm_ids).numpy()
        for name, vectors in groups.items():
            self.sums[name] = tuple(a + b for a, b in zip(self.sums[name], unit_sum(vectors)))
        self.rows += int(keep.sum())
        self.cold += int(cold.sum())

    def close(self) -> list[str]:
        """The errors of writing the files, if any."""
        return [e for e in (self.emb.close(), self.wts.close() if self.wts else None) if e]


@torch.no_grad()
def write_part(
    sharded: ShardedEGES,
    side: EGES,
    items: ItemTable,
    walk_counts: np.ndarray,
    out: Path,
) -> dict[str, Any]:
    """Write this rank's rows of ``embeddings`` (and ``weights``) into ``out``; a collective
    (the lookups of every chunk are taken by all ranks together, also by a rank past its rows
    or whose part failed).

    Returns:
        This rank's summary: ``rows`` written, ``cold`` among them, the health sums
        (:func:`eges.training.export.unit_sum` per group) and ``error`` (None, or why the part
        could not be written).
    """
    rank = dist.get_rank(sharded.group)
    lo, hi = sharded.item_range()
    hi = min(hi, items.num_items + 1)
    # on the tables' device: NCCL reduces GPU tensors only
    steps = torch.tensor([math.ceil(max(hi - lo, 0) / CHUNK)], device=sharded.device)
    dist.all_reduce(steps, op=dist.ReduceOp.MAX, group=sharded.group)
    part = _Part(sharded, side, items, walk_counts, out, rank)
    failed: str | None = None
    for step in range(int(steps)):
        a, b = lo + step * CHUNK, min(hi, lo + (step + 1) * CHUNK)
        ids = torch.arange(a, b) if a < b else torch.zeros(1, dtype=torch.long)  # padding row
        ids = ids.to(sharded.device)
        looked_up = sharded.lookup(ids, ids.new_zeros(len(ids), 0))
        if a >= b or failed:
            continue
        try:
            part.add(ids, looked_up)
        except Exception as exc:  # noqa: BLE001 - reported to every rank, not raised here
            failed = f"items {a}..{b - 1}: {type(exc).__name__}: {exc}"
    errors = [e for e in (failed, *part.close()) if e]
    return {
        "rank": rank,
        "rows": part.rows,
        "cold": part.cold,
        "items": [lo, hi],
        "sums": part.sums,
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
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32), np.zeros(0, bool)
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
    total = sum(s["rows"] for s in summaries)
    parts = [tmp / EMBEDDINGS / part_name(s["rank"]) for s in summaries if s["rows"]]
    idx, vectors, cold = read_projector_sample(
        parts, total, cfg.train.embedding_dim, PROJECTOR_MAX_ROWS, cfg.train.seed
    )
    projector = write_vocabs_and_projector(
        tmp, cfg, items, idx, [items.item_ids[i] for i in idx], vectors, cold, total=total
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

    def told(error: Exception | None) -> None:
        """Rank 0's error (or None) told to every rank; raised on all of them."""
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=src, group=group)
        if error is not None:
            raise error
        if box[0] is not None:
            raise OSError(f"rank 0 could not write the export: {box[0]}")

    with ExitStack() as stack:
        tmp, error = None, None
        if rank == 0:  # stages the directory, which is published when the block ends well
            try:
                tmp = stack.enter_context(schema.staged_dir(final, replace=True))
                (tmp / EMBEDDINGS).mkdir()
                if side.num_fields:
                    (tmp / WEIGHTS).mkdir()
            except Exception as exc:  # noqa: BLE001 - told to the other ranks, then raised
                error = exc
        told(error)
        box = [str(tmp) if rank == 0 else None]
        dist.broadcast_object_list(box, src=src, group=group)
        tmp = Path(box[0])
        summary = write_part(sharded, side, items, walk_counts, tmp)
        summaries: list = [None] * dist.get_world_size(group)
        dist.all_gather_object(summaries, summary, group=group)
        failed = [f"rank {s['rank']}: {s['error']}" for s in summaries if s["error"]]
        if failed:
            raise OSError("the export's parts could not be written: " + "; ".join(failed))
        if rank == 0:
            try:
                manifest = _finish(
                    tmp, summaries, side, items, walk_counts, cfg, extra, walks_digest,
                    bytes_per_rank,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - told to the other ranks, then raised
                error = exc
        told(error)
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
