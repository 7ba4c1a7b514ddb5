"""Weighted random walks on Spark, deterministic for a seed.

Paper §2: first-order walks, P(next = j | i) = w_ij / Σ_k w_ik; ``walks_per_node`` walks start at
every node with out-edges and run to ``walk_length`` nodes, or stop early at a node without
out-edges.

The walk advances one step per Spark join of the walkers that are still going with the adjacency
rows (hash-partitioned by ``src``; see :mod:`eges.pipeline.graph`). A walker is only
``(walk_id, node)``: each step shuffles 12 bytes per walker whatever the step, and writes its
result as that step's parquet table, which the next step reads. The walks are put together once,
at the end, from the step tables (:func:`assemble`). A walker at a node without out-edges finds
no adjacency row and drops out of the later steps: its walk ends there.

The randomness of step ``t`` of walk ``w`` is ``xxhash64(seed, w, t, stream)``, a counter-based
hash: it depends on nothing but those values, so the walks are identical for any number of
partitions or executors and after any task retry. The neighbour is drawn from the node's alias
table in O(1): column ``k = hash₀ mod degree``, then ``dst[k]`` if ``u < prob[k]`` else
``dst[alias[k]]`` with ``u = hash₁ / 2⁶⁴`` (53 bits).
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

_U53 = 2.0**-53
# what a step reads of an adjacency row; the weights were only needed to build the alias table
WALK_ADJACENCY_COLUMNS = ("src", "dst", "prob", "alias")
STEP_SCHEMA = "walk_id bigint, node bigint"  # a step's table


def _hash(seed: int, step: int, stream: int) -> Column:
    return F.xxhash64(
        F.lit(seed).cast("long"),
        F.col("walk_id"),
        F.lit(step).cast("long"),
        F.lit(stream).cast("long"),
    )


def prepare_adjacency(adjacency: DataFrame) -> DataFrame:
    """The adjacency as the steps read it: a reliable checkpoint, cached (memory, then disk).

    Only :data:`WALK_ADJACENCY_COLUMNS`, sorted by ``src`` within the hash partitions of
    :func:`eges.pipeline.graph.build_adjacency`. The checkpoint is taken with adaptive query
    execution off: an adaptive plan does not know its partitioning before it runs, and the
    checkpoint would then lose it. With it known, a step shuffles and sorts only the walkers,
    and reads the adjacency where it lies (no exchange, no sort of the adjacency per step). The
    caller unpersists the result when the walks are written.

    Args:
        adjacency: output of :func:`eges.pipeline.graph.build_adjacency` (a checkpoint
            directory must be set).
    """
    spark = adjacency.sparkSession
    key = "spark.sql.adaptive.enabled"
    before = spark.conf.get(key)
    spark.conf.set(key, "false")
    try:
        saved = (
            adjacency.select(*WALK_ADJACENCY_COLUMNS)
            .sortWithinPartitions("src")
            .checkpoint(eager=True)
        )
        cached = saved.persist(StorageLevel.MEMORY_AND_DISK)
        cached.count()
        return cached
    finally:
        spark.conf.set(key, before)


def start_walkers(adjacency: DataFrame, walks_per_node: int, num_items: int) -> DataFrame:
    """``walks_per_node`` walkers on every node with out-edges.

    ``walk_id = round * num_items + (src - 1)``: unique, independent of partitioning, and walks of
    one round (one pass over all start nodes) are contiguous.

    Returns:
        ``walk_id`` bigint, ``node`` bigint (the start node).
    """
    rounds = adjacency.sparkSession.range(walks_per_node).withColumnRenamed("id", "round")
    return (
        adjacency.select("src")
        .crossJoin(rounds)
        .select(
            (F.col("round") * F.lit(num_items) + (F.col("src") - 1)).cast("long").alias("walk_id"),
            F.col("src").alias("node"),
        )
    )


def walk_step(walkers: DataFrame, adjacency: DataFrame, seed: int, step: int) -> DataFrame:
    """Move every walker one node on.

    Args:
        walkers: ``walk_id``, ``node`` (where each walker is).
        adjacency: ``src``, ``dst``, ``prob``, ``alias`` (see
            :func:`eges.pipeline.graph.build_adjacency`; other columns are not read).
        seed: walk seed.
        step: step number (1 for the first move), part of the hash counter.

    Returns:
        ``walk_id``, ``node`` (the next node) for the walkers whose node has out-edges; the others
        are not in it (their walks end at their node).
    """
    adj = adjacency.select(*WALK_ADJACENCY_COLUMNS)
    joined = walkers.join(adj, walkers["node"] == adj["src"])
    k = (F.pmod(_hash(seed, step, 0), F.size("dst")) + 1).cast("int")  # 1-based column
    u = F.shiftrightunsigned(_hash(seed, step, 1), 11).cast("double") * F.lit(_U53)
    pick = F.when(u < F.element_at("prob", k), F.element_at("dst", k)).otherwise(
        F.element_at("dst", F.element_at("alias", k) + 1)
    )
    return joined.select("walk_id", pick.alias("node"))


def walk_steps(
    adjacency: DataFrame,
    *,
    walks_per_node: int,
    walk_length: int,
    seed: int,
    num_items: int,
    steps_dir: str,
) -> DataFrame:
    """Run every step of the walks, writing each step's walkers to ``steps_dir/step=T``.

    Each step is computed when it is reached and written as parquet (``walk_id``, ``node``: 12
    bytes a walker before compression); the next step reads it back. A written step is a
    reliable checkpoint: the lineage never spans more than one step, and a lost executor costs
    at most the step under way.

    Args:
        adjacency: ``src``, ``dst``, ``prob``, ``alias`` rows (see
            :func:`eges.pipeline.graph.build_adjacency`), best materialised (checkpointed).
        walks_per_node: walks started at every node with out-edges.
        walk_length: nodes per walk, the start included.
        seed: walk seed.
        num_items: the number of items (for walk ids).
        steps_dir: a directory that does not exist yet, on storage every executor can write
            and read (the output's file system).

    Returns:
        ``walk_id`` bigint, ``step`` int (0: the start node), ``node`` int: one row per node of
        every walk, read lazily from the written steps.
    """
    spark = adjacency.sparkSession
    start = start_walkers(adjacency, walks_per_node, num_items)
    walkers = start
    for step in range(1, walk_length):
        path = f"{steps_dir}/step={step}"
        walk_step(walkers, adjacency, seed, step).write.parquet(path)
        walkers = spark.read.schema(STEP_SCHEMA).parquet(path)  # no schema inference job
        going = walkers.count()  # from the parquet footers
        log.info("walks: step %d/%d done, %d walkers still going", step, walk_length - 1, going)
        if going == 0:
            break
    rows = start.select("walk_id", F.lit(0).alias("step"), "node")
    if walk_length > 1:
        written = spark.read.schema(f"{STEP_SCHEMA}, step int").parquet(steps_dir)
        rows = rows.unionByName(written)
    return rows


def assemble(rows: DataFrame, walk_length: int, keys: tuple[str, ...] = ()) -> DataFrame:
    """The walks from their ``(walk_id, step, node)`` rows.

    One aggregation by walk: the node of step ``t`` is the ``t``-th of ``walk_length`` fixed-width
    aggregates (no per-walk object lists to sort), and a walk that stopped early has nulls after
    its last node, which are left out.

    Args:
        rows: output of :func:`walk_steps` (more columns allowed).
        walk_length: nodes per walk, the start included.
        keys: further grouping columns, functions of ``walk_id`` (e.g. its shard), kept in the
            result; an input already partitioned by them is not shuffled again.

    Returns:
        ``keys``, ``walk_id`` bigint, ``items`` array<bigint>.
    """
    nodes = [
        F.max(F.when(F.col("step") == t, F.col("node"))).alias(f"_n{t}") for t in range(walk_length)
    ]
    grouped = rows.groupBy(*keys, "walk_id").agg(F.count(F.lit(1)).alias("_len"), *nodes)
    # a walk's steps are 0 … len-1, so its nulls are all at the end: a slice drops them (a
    # filter with a lambda would be evaluated row by row, outside the generated code)
    items = F.slice(F.array(*[F.col(f"_n{t}") for t in range(walk_length)]), 1, F.col("_len"))
    return grouped.select(*keys, "walk_id", items.alias("items"))


def random_walks(adjacency: DataFrame, *, walk_length: int, **steps: Any) -> DataFrame:
    """All walks of the graph (:func:`walk_steps`, then :func:`assemble`).

    The result is read from the step tables in ``steps_dir``: keep the directory until the walks
    are written, then delete it.

    Args:
        adjacency: as for :func:`walk_steps`.
        walk_length: nodes per walk, the start included.
        steps: the other keyword arguments of :func:`walk_steps` (``walks_per_node``, ``seed``,
            ``num_items``, ``steps_dir``).

    Returns:
        ``walk_id`` bigint, ``items`` array<bigint>.
    """
    return assemble(walk_steps(adjacency, walk_length=walk_length, **steps), walk_length)
