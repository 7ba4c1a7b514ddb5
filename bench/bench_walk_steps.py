"""The walk stage alone, step by step, against a baseline implementation in the same Spark session.

    .venv/bin/python bench/bench_walk_steps.py --run out/bench/walks-1m \
        --baseline /tmp/old --walks-per-node 5 --rounds 2

With ``--hubs K`` the graph gets K planted hot nodes (:func:`plant_hubs`), to measure the tail
of a step's tasks with this tree's ``walks.hot_node_share`` (``--hot-node-share``) against a
baseline that does not split them.

Reads the training edges of a walk job's output (``RUN/edges``, ``RUN/manifest.json`` for the
number of items), builds the adjacency once per implementation, as its job does (the baseline:
whole rows, weights included, checkpointed under adaptive execution; ours:
``prepare_adjacency``), and runs, in interleaved rounds, the walks of this tree and of
``--baseline`` (a checkout of an earlier version, e.g. ``git worktree add /tmp/old <commit>``),
each written to shards as its job does (each version's own ``write_walk_shards``: the baseline's
takes walks, this tree's the step rows). Reports per implementation:

- the walk stage's steps/s (walk steps written ÷ seconds of walking and writing the shards);
- the time in ``random_walks`` (this tree: ``walk_steps``) and in ``write_walk_shards``;
- Spark's metrics for each step, from the driver's REST API: the walkers' exchange (records,
  bytes, bytes per record) and the join that reads it (median and slowest task, in time and
  in walkers read);
- whether both wrote the same walks (their shards' bytes);
- the driver JVM's peak resident memory over the whole run (``VmHWM``; local mode: the
  executors are its threads).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path

from common import REPO, bench_spark
from pyspark.sql import functions as F

from eges import schema
from eges.pipeline.graph import build_adjacency


def load_module(root: Path, name: str, file: str = "walks.py"):
    """``eges/pipeline/<file>`` of the checkout at ``root``, as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, root / "eges" / "pipeline" / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rest(spark, path: str):
    sc = spark.sparkContext
    url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/{path}"
    with urllib.request.urlopen(url) as r:
        return json.load(r)


def stages_since(spark, first_id: int) -> list[dict]:
    stages = [
        s for s in rest(spark, "stages") if s["stageId"] >= first_id and s["status"] == "COMPLETE"
    ]
    return sorted(stages, key=lambda s: s["stageId"])


def step_metrics(spark, stages: list[dict], exchanged: list[tuple[int, int]]) -> list[dict]:
    """For each (step, walker rows shuffled) of ``exchanged``: the exchange that sends them to
    the join (the next stage writing that many records) and the stage that reads it (the next
    one reading at least as many)."""
    out, i = [], 0
    for t, n in exchanged:
        while i < len(stages) and stages[i]["shuffleWriteRecords"] != n:
            i += 1
        if i == len(stages):
            break
        ex = stages[i]
        j = i + 1
        while j < len(stages) and stages[j]["shuffleReadRecords"] < n:
            j += 1
        row = {
            "step": t,
            "records": n,
            "bytes": ex["shuffleWriteBytes"],
            "bytes_per_record": ex["shuffleWriteBytes"] / n,
        }
        if j < len(stages):
            q = rest(
                spark,
                f"stages/{stages[j]['stageId']}/{stages[j]['attemptId']}/taskSummary"
                "?quantiles=0.5,1.0",
            )
            records = q["shuffleReadMetrics"]["readRecords"]
            row.update(
                join_tasks=stages[j]["numTasks"],
                task_median_ms=q["executorRunTime"][0],
                task_max_ms=q["executorRunTime"][1],
                task_median_records=records[0],
                task_max_records=records[1],
            )
        out.append(row)
        i += 1
    return out


def shard_digest(out: Path) -> str:
    h = hashlib.sha256()
    for f in sorted((out / schema.WALKS_DIR).glob("*.parquet")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_once(spark, module, adjacency, args, num_items: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spark.sparkContext.setCheckpointDir(str(out / "_checkpoints"))
    first = max((s["stageId"] for s in rest(spark, "stages")), default=-1) + 1
    # this tree writes its steps' tables and assembles the walks in the shards' shuffle; the
    # baseline returns the walks, which write_walk_shards shuffles to their shards
    layered = hasattr(module, "walk_steps")
    common = dict(
        walks_per_node=args.walks_per_node,
        walk_length=args.walk_length,
        seed=args.seed,
        num_items=num_items,
    )
    t0 = time.perf_counter()
    if layered:
        walks = module.walk_steps(adjacency, steps_dir=str(out / "_steps"), **common)
    else:
        walks = module.random_walks(adjacency, checkpoint_every=args.checkpoint_every, **common)
    t1 = time.perf_counter()
    shards = load_module(
        args.baseline if module.__name__ == "baseline_walks" else REPO,
        f"{module.__name__}_shards",
        "shards.py",
    )
    if hasattr(shards, "assemble"):  # its import is this tree's: use the version's own
        shards.assemble = module.assemble
    if layered:
        table = shards.write_walk_shards(
            walks, out, args.shards, args.seed, walk_length=args.walk_length
        )
    else:
        table = shards.write_walk_shards(walks, out, args.shards, args.seed)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out / "_steps", ignore_errors=True)
    lengths = (
        spark.read.parquet(str(out / schema.WALKS_DIR))
        .selectExpr("size(items) AS n")
        .groupBy("n")
        .count()
        .collect()
    )
    by_len = {r["n"]: r["count"] for r in lengths}
    steps = sum((n - 1) * c for n, c in by_len.items())
    # this tree: step t moves the walkers of walks of t nodes or more; step 1's start walkers
    # are made where their adjacency rows lie (no exchange). The baseline shuffles every walker
    # at every step, finished ones included.
    steps_range = range(1, args.walk_length)
    if layered:
        exchanged = [(t, sum(c for n, c in by_len.items() if n >= t)) for t in steps_range[1:]]
    else:
        exchanged = [(t, table["rows"]) for t in steps_range]
    stages = stages_since(spark, first)
    metrics = step_metrics(spark, stages, exchanged)
    shutil.rmtree(out / "_checkpoints", ignore_errors=True)
    return {
        "seconds": seconds,
        "walk_call_s": t1 - t0,
        "write_call_s": seconds - (t1 - t0),
        "walks": table["rows"],
        "steps": steps,
        "steps_per_s": steps / seconds,
        "digest": shard_digest(out),
        "per_step": metrics,
        "stages": [
            {
                k: st.get(k)
                for k in (
                    "stageId",
                    "name",
                    "numTasks",
                    "executorRunTime",
                    "submissionTime",
                    "completionTime",
                    "shuffleReadBytes",
                    "shuffleWriteBytes",
                    "inputBytes",
                    "outputBytes",
                )
            }
            for st in stages
        ],
    }


def plant_hubs(edges, hubs: int, load: float, partitions: int):
    """The edges with ``hubs`` planted hot nodes (the nodes with out-edges of smallest index):
    each draws about ``load`` times an average partition's walkers. A hub gets an edge from a
    share ``2 · load / partitions`` of the nodes, chosen by hash, each weighing what that node's
    other edges weigh together, so that about half of its walkers go to the hub (a third each
    for a node picked by two hubs)."""
    totals = edges.groupBy("src").agg(F.sum("weight").alias("weight"))
    share = min(1.0, 2 * load / partitions)
    added = None
    for row in totals.select("src").orderBy("src").limit(hubs).collect():
        hub = row["src"]
        pick = F.pmod(F.xxhash64(F.lit(hub).cast("long"), "src"), F.lit(1_000_000))
        rows = totals.filter((pick < share * 1_000_000) & (F.col("src") != hub)).select(
            "src", F.lit(hub).cast("long").alias("dst"), "weight"
        )
        added = rows if added is None else added.unionByName(rows)
    return (
        edges.select("src", "dst", "weight")
        .unionByName(added)
        .groupBy("src", "dst")
        .agg(F.sum("weight").alias("weight"))
    )


def jvm_peak_mb(spark) -> float:
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a walk job's output directory")
    p.add_argument("--baseline", type=Path, required=True, help="checkout of the earlier code")
    p.add_argument("--walks-per-node", type=int, default=5)
    p.add_argument("--walk-length", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=3, help="the baseline's")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--partitions", type=int, default=8, help="shuffle and adjacency partitions")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--hubs", type=int, default=0, help="hot nodes to plant (see plant_hubs)")
    p.add_argument(
        "--hub-load", type=float, default=4.0, help="a planted hub's walkers, in average partitions"
    )
    p.add_argument(
        "--hot-node-share",
        type=float,
        default=0.25,
        help="this tree's walks.hot_node_share (0 or less: null, no node split)",
    )
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="12g")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "walk-steps")
    args = p.parse_args()
    if args.hot_node_share <= 0:
        args.hot_node_share = None

    spark = bench_spark("bench-walk-steps", args, **{"spark.ui.enabled": "true"})
    manifest = schema.read_manifest(args.run)
    num_items = manifest["counts"]["items"]
    spark.sparkContext.setCheckpointDir(str(args.out / "_adjacency"))
    edges = spark.read.parquet(str(args.run / schema.EDGES_DIR))
    if args.hubs:  # computed once, for both
        edges = plant_hubs(edges, args.hubs, args.hub_load, args.partitions).checkpoint(eager=True)
    # each adjacency as its job made it: an earlier baseline's whole rows, checkpointed under
    # adaptive query execution (on by default); a later one's and ours by prepare_adjacency
    current = load_module(REPO, "current_walks")
    baseline = load_module(args.baseline, "baseline_walks")
    # the baseline's own graph module and item-index type: a walk format 1 baseline (int32
    # indices) reads the edges as int, as its job wrote them
    base_graph = load_module(args.baseline, "baseline_graph", "graph.py")
    base_edges = edges
    if base_graph.ADJACENCY_SCHEMA.startswith("src int,"):
        base_edges = edges.select(F.col("src").cast("int"), F.col("dst").cast("int"), "weight")
    t0 = time.perf_counter()
    base_built = base_graph.build_adjacency(base_edges, args.partitions)
    if hasattr(baseline, "prepare_adjacency"):  # a baseline with the constant-size steps
        base_adjacency = baseline.prepare_adjacency(base_built)
    else:
        base_adjacency = base_built.checkpoint(eager=True)
    print(f"the baseline's adjacency: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    t0 = time.perf_counter()
    ours = current.prepare_adjacency(
        build_adjacency(edges, args.partitions), args.partitions, args.hot_node_share
    )
    print(
        f"this tree's adjacency (hot_node_share {args.hot_node_share}): "
        f"{time.perf_counter() - t0:.1f} s, {ours.count():,} rows",
        file=sys.stderr,
    )
    impls = {"baseline": (baseline, base_adjacency), "this tree": (current, ours)}
    results: dict[str, list[dict]] = {name: [] for name in impls}
    for r in range(args.rounds):
        for name, (module, adjacency) in impls.items():
            res = run_once(
                spark, module, adjacency, args, num_items, args.out / name.replace(" ", "-")
            )
            results[name].append(res)
            print(
                f"round {r + 1} {name}: {res['steps']:,} steps in {res['seconds']:.1f} s "
                f"({res['steps_per_s']:,.0f}/s; random_walks {res['walk_call_s']:.1f} s, "
                f"write_walk_shards {res['write_call_s']:.1f} s), shards {res['digest']}",
                file=sys.stderr,
            )
    peak = jvm_peak_mb(spark)
    print(
        f"\n{num_items:,} items, {manifest['counts']['edges']:,} edges, "
        f"{args.walks_per_node} walks per node of {args.walk_length}, {args.master}, "
        f"{args.partitions} partitions, {args.rounds} interleaved rounds; driver JVM peak RSS "
        f"{peak:,.0f} MB over the whole run\n"
    )
    print("| implementation | steps/s (median) | rounds | same shards as baseline |")
    print("| --- | --- | --- | --- |")
    base_digest = results["baseline"][0]["digest"]
    for name, rs in results.items():
        rates = [x["steps_per_s"] for x in rs]
        print(
            f"| {name} | {statistics.median(rates):,.0f} | "
            f"{', '.join(f'{x:,.0f}' for x in rates)} | "
            f"{all(x['digest'] == base_digest for x in rs)} |"
        )
    print(
        "\n| step | walkers | baseline bytes/walker | this tree bytes/walker | "
        "baseline join task median / max (ms) | this tree join task median / max (ms) | "
        "baseline walkers per join task, median / max | this tree's |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    last = {name: {r["step"]: r for r in rs[-1]["per_step"]} for name, rs in results.items()}
    empty = {"records": 0, "bytes_per_record": float("nan")}
    for t in range(1, args.walk_length):
        b, c = last["baseline"].get(t, empty), last["this tree"].get(t, empty)
        print(
            f"| {t} | {c['records']:,} / {b['records']:,} | "
            f"{b['bytes_per_record']:.1f} | {c['bytes_per_record']:.1f} | "
            f"{b.get('task_median_ms', '-')} / {b.get('task_max_ms', '-')} | "
            f"{c.get('task_median_ms', '-')} / {c.get('task_max_ms', '-')} | "
            f"{b.get('task_median_records', '-')} / {b.get('task_max_records', '-')} | "
            f"{c.get('task_median_records', '-')} / {c.get('task_max_records', '-')} |"
        )
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    shutil.rmtree(args.out / "_adjacency", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
