"""A generated walk output of any size, written straight to the walk contract (no Spark).

    python bench/gen_walks.py --items 10000000 --out out/bench/walks-10m

For trainer benchmarks at catalogue sizes the walk job does not reach on this machine: the
point is the tables, not the walks. Items ``i1`` … ``iN``; side information in three fields
(``category``: one of 1,000 values, ``brand``: one of 100,000, ``tags``: 0–3 of 10,000, values
drawn Zipf-like so some are common); ``--walks-per-item`` walks start at every item and step to
items nearby in index (a catalogue of many small neighbourhoods), so every item is walked. The
output is the walk job's (items/, vocab/, walks/ shards, manifest last), so ``eges/train.py``
reads it as it reads the walk job's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eges import schema  # noqa: E402

FIELDS = {"category": (1_000, 1, 1), "brand": (100_000, 1, 1), "tags": (10_000, 0, 3)}
BLOCK = 1 << 20  # items generated at a time


def zipf_values(rng: np.random.Generator, vocab: int, size: int) -> np.ndarray:
    """``size`` values in 1..vocab, value k drawn with weight ∝ 1 / k^0.8 (inverse CDF)."""
    a = 0.2  # 1 - 0.8: the CDF of k^-0.8 grows as k^0.2
    u = rng.random(size)
    return np.minimum((u * (vocab**a - 1) + 1) ** (1 / a), vocab).astype(np.int32)


def write_items(out: Path, n: int, rng: np.random.Generator) -> None:
    (out / schema.ITEMS_DIR).mkdir(parents=True)
    writer = None
    for lo in range(0, n, BLOCK):
        size = min(BLOCK, n - lo)
        cols = {
            "item_idx": pa.array(np.arange(lo + 1, lo + size + 1, dtype=np.int32)),
            "item_id": pa.array([f"i{i}" for i in range(lo + 1, lo + size + 1)]),
            "count": pa.array(rng.integers(1, 50, size), pa.int64()),
        }
        for name, (vocab, least, most) in FIELDS.items():
            lengths = rng.integers(least, most + 1, size)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            cols[name] = pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(zipf_values(rng, vocab, int(lengths.sum())))
            )
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(out / schema.ITEMS_DIR / "part-00000.parquet", table.schema)
        writer.write_table(table)
    writer.close()
    for name, (vocab, _, _) in FIELDS.items():
        (out / schema.VOCAB_DIR / name).mkdir(parents=True)
        pq.write_table(
            pa.table(
                {
                    "value": pa.array([f"{name}{k}" for k in range(1, vocab + 1)]),
                    "index": pa.array(np.arange(1, vocab + 1, dtype=np.int32)),
                    "count": pa.array(np.ones(vocab, dtype=np.int64)),
                }
            ),
            out / schema.VOCAB_DIR / name / "part-00000.parquet",
        )


def write_walks(
    out: Path, n: int, per_item: int, length: int, shards: int, rng: np.random.Generator
) -> tuple[list[dict], int]:
    """Walks starting at every item ``per_item`` times (in a random order), each step to an
    item within ±64 of the previous one; ``shards`` files of about equal size."""
    (out / "walks").mkdir()
    total = n * per_item
    starts = rng.permutation(np.tile(np.arange(1, n + 1, dtype=np.int64), per_item))
    files, walk_id = [], 0
    for s, chunk in enumerate(np.array_split(starts, shards)):
        path = out / "walks" / f"shard-{s:05d}.parquet"
        writer = None
        for lo in range(0, len(chunk), BLOCK):
            first = chunk[lo : lo + BLOCK]
            steps = rng.integers(-64, 65, (len(first), length - 1))
            walks = (first[:, None] - 1 + np.cumsum(steps, 1)) % n + 1  # (W, L - 1)
            flat = np.concatenate([first[:, None], walks], 1).astype(np.int32).reshape(-1)
            table = pa.table(
                {
                    "walk_id": pa.array(np.arange(walk_id, walk_id + len(first), dtype=np.int64)),
                    "items": pa.ListArray.from_arrays(
                        pa.array(np.arange(0, len(flat) + 1, length, dtype=np.int32)),
                        pa.array(flat),
                    ),
                }
            )
            walk_id += len(first)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=65536)
        writer.close()
        files.append({"path": f"walks/shard-{s:05d}.parquet", "rows": len(chunk)})
    return files, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--walks-per-item", type=int, default=1)
    p.add_argument("--walk-length", type=int, default=5)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.out.exists():
        sys.exit(f"{args.out} exists: choose another --out")
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    write_items(args.out, args.items, rng)
    files, walks = write_walks(
        args.out, args.items, args.walks_per_item, args.walk_length, args.shards, rng
    )
    schema.write_manifest(
        args.out,
        {
            "seed": args.seed,
            "generated_by": "bench/gen_walks.py",
            "side_info_fields": [
                {"name": name, "vocab_size": vocab, "lowercase": False}
                for name, (vocab, _, _) in FIELDS.items()
            ],
            "counts": {
                "items": args.items,
                "items_with_events": args.items,
                "items_without_events": 0,
                "walks": walks,
                "walk_steps": walks * (args.walk_length - 1),
            },
            "split": {"kind": "none"},
            "walks": {"path": "walks", "rows": walks, "files": files},
            "config": {"walks": {"walk_length": args.walk_length}},
        },
    )
    print(
        f"{args.items:,} items, {walks:,} walks in {time.perf_counter() - start:.0f} s: {args.out}"
    )


if __name__ == "__main__":
    main()
