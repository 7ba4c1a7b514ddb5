"""How fast a walk step's table is written and read back, in each of Spark's own file formats.

    .venv/bin/python bench/bench_step_format.py --run out/bench/walks-1m --rounds 5

The walk job writes every odd step's rows (``walk_id``, ``prev``, ``node``) as a table that the
next step and the assembly read back (:func:`eges.pipeline.walks.walk_steps`). This takes the
real rows of a step: the walks of a walk job's training edges (``RUN/edges``) run three
steps (``walk_steps`` with walk length 5 writes steps 1 and 3), and step 3's rows, in the order
its join left them (the first step's are in walk order, which compresses better than any
later step's), are cached in memory.
Then, in interleaved rounds, they are written in each format and read back whole (Spark's
``noop`` sink), and the medians are reported with the size on disk. ``noop`` (no file at all)
is the floor of the write.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import REPO

from eges import schema
from eges.config import SparkConfig
from eges.pipeline.graph import build_adjacency
from eges.pipeline.spark import build_spark
from eges.pipeline.walks import STEP_SCHEMA, prepare_adjacency, walk_steps

FORMATS = {  # name: (format, writer options)
    "parquet (snappy, Spark's default)": ("parquet", {}),
    "parquet, no dictionary": ("parquet", {"parquet.enable.dictionary": "false"}),
    "parquet, LZ4": ("parquet", {"compression": "lz4_raw"}),
    "ORC (Spark's default codec)": ("orc", {}),
    "ORC, LZ4 (the walk job's)": ("orc", {"compression": "lz4"}),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a walk job's output directory")
    p.add_argument("--walks-per-node", type=int, default=5)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="8g")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "step-format")
    args = p.parse_args()

    spark = build_spark(
        SparkConfig(
            master=args.master,
            app_name="bench-step-format",
            shuffle_partitions=args.partitions,
            log_level="ERROR",
            conf={"spark.driver.memory": args.driver_memory},
        ),
        extra={"spark.ui.showConsoleProgress": "false"},
    )
    shutil.rmtree(args.out, ignore_errors=True)
    spark.sparkContext.setCheckpointDir(str(args.out / "_adjacency"))
    edges = spark.read.parquet(str(args.run / schema.EDGES_DIR))
    adjacency = prepare_adjacency(build_adjacency(edges, args.partitions), args.partitions)
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

    times: dict[str, list[tuple[float, float]]] = {"noop": []} | {k: [] for k in FORMATS}
    size: dict[str, int] = {}
    for _ in range(args.rounds):
        times["noop"].append((timed(lambda: rows.write.format("noop").mode("overwrite").save()), 0))
        for name, (fmt, options) in FORMATS.items():
            shutil.rmtree(table, ignore_errors=True)
            write = timed(lambda: rows.write.options(**options).format(fmt).save(str(table)))
            back = spark.read.schema(STEP_SCHEMA).format(fmt).load(str(table))
            read = timed(lambda: back.write.format("noop").mode("overwrite").save())
            times[name].append((write, read))
            size[name] = sum(f.stat().st_size for f in table.iterdir() if f.name[0] not in "._")
    print(
        f"\n{n:,} rows of step 3 ({args.walks_per_node} walks per node), {args.master}, "
        f"{args.partitions} partitions, {args.rounds} interleaved rounds (medians)\n"
    )
    print("| format | write (s) | read back (s) | size (MB) |")
    print("| --- | --- | --- | --- |")
    for name, ts in times.items():
        write = statistics.median(t[0] for t in ts)
        read = statistics.median(t[1] for t in ts) if name in size else float("nan")
        mb = size[name] / 1e6 if name in size else float("nan")
        print(f"| {name} | {write:.2f} | {read:.2f} | {mb:.1f} |")
    shutil.rmtree(args.out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
