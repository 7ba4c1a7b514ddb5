"""The item table and side-info vocabularies of a walk output, loaded once as tensors.

Side information is stored per field in CSR form: the values of item ``i`` are
``values[offsets[i]:offsets[i + 1]]`` (vocabulary indices from 1). Multi-valued fields (tags,
actors) therefore cost memory in proportion to the values that exist, not items × longest list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from eges import schema


@dataclass
class ItemTable:
    """Items indexed by ``item_idx`` (row 0 is the padding item)."""

    item_ids: list[str]  # item_ids[item_idx]; item_ids[0] == ""
    counts: np.ndarray  # (V + 1,) events per item
    fields: list[str]
    vocab_sizes: list[int]  # values per field (indices 1..size)
    offsets: list[torch.Tensor]  # per field (V + 2,) int64
    values: list[torch.Tensor]  # per field (nnz,) int64
    lowercase: list[str]  # fields whose raw values were lower-cased at ingest (MovieLens tags)
    # numeric fields -> their bucket scheme as in the manifest (eges.buckets.NumericSpec)
    numeric: dict[str, dict] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1


def load_items(walk_dir: str | Path, manifest: dict | None = None) -> ItemTable:
    """Read ``items/`` and the vocabulary sizes of a (complete) walk output."""
    walk_dir = Path(walk_dir)
    manifest = manifest or schema.read_manifest(walk_dir)
    fields = [f["name"] for f in manifest["side_info_fields"]]
    table = schema.read_items(walk_dir / schema.ITEMS_DIR, fields)
    table = table.sort_by("item_idx")
    idx = table["item_idx"].to_numpy()
    n = len(idx)
    if not np.array_equal(idx, np.arange(1, n + 1)):
        raise schema.IncompleteOutputError(f"{walk_dir}: item_idx is not dense 1..{n}")
    offsets, values = [], []
    for f in fields:
        col = table[f].combine_chunks()
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
        off = np.zeros(n + 2, dtype=np.int64)  # row 0 (padding) has no values
        off[2:] = np.cumsum(lengths)
        offsets.append(torch.from_numpy(off))
        values.append(torch.from_numpy(col.flatten().to_numpy().astype(np.int64)))
    return ItemTable(
        item_ids=[""] + table["item_id"].to_pylist(),
        counts=np.concatenate([[0], table["count"].to_numpy()]),
        fields=fields,
        vocab_sizes=[int(f["vocab_size"]) for f in manifest["side_info_fields"]],
        offsets=offsets,
        values=values,
        lowercase=[f["name"] for f in manifest["side_info_fields"] if f.get("lowercase")],
        numeric={f["name"]: f["numeric"] for f in manifest["side_info_fields"] if f.get("numeric")},
    )


def load_vocab(walk_dir: str | Path, field: str) -> dict[str, int]:
    """value -> index of one side-info field."""
    t = schema.read_table(Path(walk_dir) / schema.VOCAB_DIR / field, schema.VOCAB_SCHEMA)
    return dict(zip(t["value"].to_pylist(), t["index"].to_pylist()))
