"""How fast a walk step's table is written and read back, in each of Spark's own file formats.

    .venv/bin/python bench/bench_step_format.py --run out/bench/walks-1m --rounds 5

The walk job writes every odd step's rows (``walk_id``, ``prev``, ``node``) as a table that the
next step and the assembly read back (:func:`eges.pipeline.walks.walk_steps`). This takes the
real rows of a step: the walks of a walk job's training edges (``RUN/edges``) run three
steps (``walk_steps`` with walk length 5 writes steps 1 and 3), and step 3's rows, in the order
its join left them (the first step's are in walk order, which compresses better than any
later step's), are cached in memory.
Then, in interleaved rounds (the formats' order rotating every round), they are written in
each format, one file per task as the job writes them, and read back whole (Spark's ``noop``
sink); the median, fastest and slowest times are reported with the size on disk. ``noop`` (no
file at all) is the floor of the write.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import REPO, bench_spark

from eges import schema
from eges.pipeline.graph import build_adjacency
from eges.pipeline.walks import STEP_SCHEMA, prepare_adjacency, walk_steps

FORMATS = {  # name: (format, writer options)
    "parquet (snappy, Spark's default)": ("parquet", {}),
    "parquet, no dictionary": ("parquet", {"parquet.enable.dictionary": "false"}),
    "parquet, LZ4": ("parquet", {"compression": "lz4_raw"}),
    "ORC (Spark's default codec, zstd)": ("orc", {}),
    "ORC, LZ4 (the walk job's)": ("orc", {"compression": "lz4"}),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a walk job's output directory")
    p.add_argument("--walks-per-node", type=int, default=5)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--hot-node-share", type=float, default=0.25, help="the job's default")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="8g")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "step-format")
    args = p.parse_args()

    # a file a partition when the step is read back, so each format writes as many files as the
    # job's steps do (Spark would otherwise pack small files into a few splits)
    spark = bench_spark("bench-step-format", args, **{"spark.sql.files.openCostInBytes": "1g"})
    shutil.rmtree(args.out, ignore_errors=True)
    spark.sparkContext.setCheckpointDir(str(args.out / "_adjacency"))
    edges = spark.read.parquet(str(args.run / schema.EDGES_DIR))
    adjacency = prepare_adjacency(
        build_adjacency(edges, args.partitions), args.partitions, args.hot_node_share
    )
    walk_steps(
        adjacency,
        walks_per_node=args.walks_per_node,
        walk_length=5,
        seed=42,
        num_items=schema.read_manifest(args.run)["counts"]["items"],
        steps_dir=str(args.out / "_steps"),
    )
    rows = spark.read.schema(STEP_SCHEMA).orc(str(args.out / "_steps" / "step=3")).cache()
    n = rows.count()
    table = args.out / "table"

    def timed(action) -> float:
        t = time.perf_counter()
        action()
        return time.perf_counter() - t

    names = list(FORMATS)
    times: dict[str, list[float]] = {"noop": []}
    reads: dict[str, list[float]] = {name: [] for name in names}
    writes: dict[str, list[float]] = {name: [] for name in names}
    size: dict[str, int] = {}
    for r in range(args.rounds):
        times["noop"].append(timed(lambda: rows.write.format("noop").mode("overwrite").save()))
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fmt, options = FORMATS[name]
            shutil.rmtree(table, ignore_errors=True)
            writes[name].append(
                timed(lambda: rows.write.options(**options).format(fmt).save(str(table)))
            )
            back = spark.read.schema(STEP_SCHEMA).format(fmt).load(str(table))
            reads[name].append(timed(lambda: back.write.format("noop").mode("overwrite").save()))
            size[name] = sum(f.stat().st_size for f in table.iterdir() if f.name[0] not in "._")

    def spread(ts: list[float]) -> str:
        return f"{statistics.median(ts):.2f} ({min(ts):.2f}–{max(ts):.2f})"

    print(
        f"\n{n:,} rows of step 3 ({args.walks_per_node} walks per node) in "
        f"{rows.rdd.getNumPartitions()} partitions, {args.master}, {args.rounds} interleaved "
        "rounds: median (fastest–slowest)\n"
    )
    print("| format | write (s) | read back (s) | size (MB) |")
    print("| --- | --- | --- | --- |")
    print(f"| noop (no file) | {spread(times['noop'])} | | |")
    for name in names:
        print(
            f"| {name} | {spread(writes[name])} | {spread(reads[name])} | {size[name] / 1e6:.1f} |"
        )
    shutil.rmtree(args.out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
