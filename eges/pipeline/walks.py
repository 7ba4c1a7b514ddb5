"""Weighted random walks on Spark, deterministic for a seed.

Paper §2: first-order walks, P(next = j | i) = w_ij / Σ_k w_ik; ``walks_per_node`` walks start at
every node with out-edges and run to ``walk_length`` nodes, or stop early at a node without
out-edges.

The walk advances one step per Spark join of the active walkers with the adjacency rows
(hash-partitioned by ``src``; see :mod:`eges.pipeline.graph`). The randomness of step ``t`` of
walk ``w`` is ``xxhash64(seed, w, t, stream)``, a counter-based hash: it depends on nothing but
those values, so the walks are identical for any number of partitions or executors and after any
task retry. The neighbour is drawn from the node's alias table in O(1): column
``k = hash₀ mod degree``, then ``dst[k]`` if ``u < prob[k]`` else ``dst[alias[k]]`` with
``u = hash₁ / 2⁶⁴`` (53 bits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

_U53 = 2.0**-53


def _hash(seed: int, step: int, stream: int) -> Column:
    return F.xxhash64(
        F.lit(seed).cast("long"),
        F.col("walk_id"),
        F.lit(step).cast("long"),
        F.lit(stream).cast("long"),
    )


def start_walkers(adjacency: DataFrame, walks_per_node: int, num_items: int) -> DataFrame:
    """``walks_per_node`` walkers on every node with out-edges.

    ``walk_id = round * num_items + (src - 1)``: unique, independent of partitioning, and walks of
    one round (one pass over all start nodes) are contiguous.

    Returns:
        ``walk_id`` bigint, ``path`` array<int> (the start node), ``done`` bool.
    """
    rounds = adjacency.sparkSession.range(walks_per_node).withColumnRenamed("id", "round")
    return (
        adjacency.select("src")
        .crossJoin(rounds)
        .select(
            (F.col("round") * F.lit(num_items) + (F.col("src") - 1)).cast("long").alias("walk_id"),
            F.array(F.col("src")).alias("path"),
            F.lit(False).alias("done"),
        )
    )


def walk_step(walkers: DataFrame, adjacency: DataFrame, seed: int, step: int) -> DataFrame:
    """Advance every unfinished walker by one node.

    A walker at a node without out-edges is marked ``done`` and keeps its path.

    Args:
        walkers: ``walk_id``, ``path``, ``done``.
        adjacency: output of :func:`eges.pipeline.graph.build_adjacency`.
        seed: walk seed.
        step: step number (1 for the first move), part of the hash counter.

    Returns:
        Walkers with the same columns.
    """
    # Finished walkers get a null key, which never matches: one join, no union, so the number of
    # partitions stays at spark.sql.shuffle.partitions instead of growing every step.
    cur = F.when(F.col("done"), F.lit(None)).otherwise(F.element_at("path", -1))
    active = walkers.withColumn("_cur", cur)
    adj = adjacency.select("src", "dst", "prob", "alias")
    joined = active.join(adj, active["_cur"] == adj["src"], "left")
    k = (F.pmod(_hash(seed, step, 0), F.size("dst")) + 1).cast("int")  # 1-based column
    u = F.shiftrightunsigned(_hash(seed, step, 1), 11).cast("double") * F.lit(_U53)
    pick = F.when(u < F.element_at("prob", k), F.element_at("dst", k)).otherwise(
        F.element_at("dst", F.element_at("alias", k) + 1)
    )
    stuck = F.col("src").isNull()
    return joined.select(
        "walk_id",
        F.when(stuck, F.col("path")).otherwise(F.concat("path", F.array(pick))).alias("path"),
        stuck.alias("done"),
    )


def random_walks(
    adjacency: DataFrame,
    *,
    walks_per_node: int,
    walk_length: int,
    seed: int,
    num_items: int,
    checkpoint_every: int,
    checkpoint: Callable[[DataFrame, int], DataFrame] | None = None,
) -> DataFrame:
    """All walks of the graph.

    Args:
        adjacency: output of :func:`eges.pipeline.graph.build_adjacency`.
        walks_per_node: walks started at every node with out-edges.
        walk_length: nodes per walk, the start included.
        seed: walk seed.
        num_items: the number of items (for walk ids).
        checkpoint_every: truncate the lineage every this many steps.
        checkpoint: ``(df, step) -> df`` that materialises ``df`` (default: Spark's reliable
            ``DataFrame.checkpoint``; a checkpoint directory must be set).

    Returns:
        ``walk_id`` bigint, ``items`` array<int>.
    """
    if checkpoint is None:

        def checkpoint(df: DataFrame, _step: int) -> DataFrame:
            return df.checkpoint(eager=True)

    walkers = start_walkers(adjacency, walks_per_node, num_items)
    for step in range(1, walk_length):
        walkers = walk_step(walkers, adjacency, seed, step)
        if step % checkpoint_every == 0 and step < walk_length - 1:
            walkers = checkpoint(walkers, step)
            log.info("walks: step %d/%d done", step, walk_length - 1)
    return walkers.select("walk_id", F.col("path").alias("items"))
