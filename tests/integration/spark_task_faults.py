"""Run by test_walk_faults.py in its own process (a Spark session with task retries:
``local[2,4]`` gives every task 4 attempts): the same walks with and without failures injected
into the first attempt of some tasks of every walk step. Prints JSON."""

import json
import sys
from pathlib import Path

import numpy as np
from pyspark import TaskContext
from pyspark.sql import SparkSession

from eges.pipeline.graph import ADJACENCY_SCHEMA, build_adjacency
from eges.pipeline.walks import random_walks

NODES = 300


def flaky(markers: Path):
    def fail_first_attempt(batches):
        ctx = TaskContext.get()
        if ctx.attemptNumber() == 0 and ctx.partitionId() in (1, 2):
            (markers / f"stage{ctx.stageId()}-part{ctx.partitionId()}").touch()
            raise RuntimeError("injected failure of a walk-step task (first attempt)")
        yield from batches

    return fail_first_attempt


def main(workdir: Path) -> None:
    spark = (
        SparkSession.builder.master("local[2,4]")
        .appName("eges-task-faults")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.adaptive.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.sparkContext.setCheckpointDir(str(workdir / "checkpoints"))
    rng = np.random.default_rng(0)
    rows = [
        (int(s), int(d), int(rng.integers(1, 9)))
        for s in range(1, NODES + 1)
        for d in set(rng.integers(1, NODES + 1, size=rng.integers(1, 6)).tolist())
        if d != s
    ]
    edges = spark.createDataFrame(rows, "src int, dst int, weight bigint")
    adjacency = build_adjacency(edges, 4).checkpoint(eager=True)
    markers = workdir / "injected"
    markers.mkdir()
    out = {}
    for name, adj in [
        ("clean", adjacency),
        ("faulty", adjacency.mapInPandas(flaky(markers), ADJACENCY_SCHEMA)),
    ]:
        walks = random_walks(
            adj,
            walks_per_node=3,
            walk_length=8,
            seed=5,
            num_items=NODES,
            steps_dir=str(workdir / f"steps-{name}"),
        )
        out[name] = sorted([r.walk_id, list(r.items)] for r in walks.collect())
    out["injected_failures"] = len(list(markers.iterdir()))
    spark.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
