"""Weighted random walks on Spark, deterministic for a seed.

Paper §2: first-order walks, P(next = j | i) = w_ij / Σ_k w_ik; ``walks_per_node`` walks start at
every node with out-edges and run to ``walk_length`` nodes, or stop early at a node without
out-edges.

The walk advances one step per Spark join of the walkers that are still going with the adjacency
rows (hash-partitioned by ``src``; see :mod:`eges.pipeline.graph`). A walker is only
``(walk_id, node)``: each step shuffles 12 bytes per walker whatever the step, and its result is
kept as that step's table (cached, or written as a reliable checkpoint every
``checkpoint_every`` steps). The walks are put together once, at the end, from the step tables
(:func:`assemble`). A walker at a node without out-edges finds no adjacency row and drops out of
the later steps: its walk ends there.

The randomness of step ``t`` of walk ``w`` is ``xxhash64(seed, w, t, stream)``, a counter-based
hash: it depends on nothing but those values, so the walks are identical for any number of
partitions or executors and after any task retry. The neighbour is drawn from the node's alias
table in O(1): column ``k = hash₀ mod degree``, then ``dst[k]`` if ``u < prob[k]`` else
``dst[alias[k]]`` with ``u = hash₁ / 2⁶⁴`` (53 bits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

_U53 = 2.0**-53
# what a step reads of an adjacency row; the weights were only needed to build the alias table
WALK_ADJACENCY_COLUMNS = ("src", "dst", "prob", "alias")


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
        ``walk_id`` bigint, ``node`` int (the start node).
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


def assemble(steps: list[DataFrame]) -> DataFrame:
    """The walks from the step tables: ``steps[t]`` holds ``walk_id``, ``node`` after step ``t``
    (``steps[0]``: the start nodes).

    One shuffle of ``(walk_id, step, node)`` rows, grouped by walk and ordered by step.

    Returns:
        ``walk_id`` bigint, ``items`` array<int>.
    """
    rows = None
    for t, df in enumerate(steps):
        part = df.select("walk_id", F.lit(t).cast("int").alias("step"), "node")
        rows = part if rows is None else rows.unionByName(part)
    grouped = rows.groupBy("walk_id").agg(
        F.array_sort(F.collect_list(F.struct("step", "node"))).alias("_path")
    )
    return grouped.select("walk_id", F.transform("_path", lambda x: x["node"]).alias("items"))


def random_walks(
    adjacency: DataFrame,
    *,
    walks_per_node: int,
    walk_length: int,
    seed: int,
    num_items: int,
    checkpoint_every: int,
    checkpoint: Callable[[DataFrame, int], DataFrame] | None = None,
    persisted: list[DataFrame] | None = None,
) -> DataFrame:
    """All walks of the graph.

    Every step is computed when it is reached: its walkers are cached (memory, then disk), or
    written as a reliable checkpoint every ``checkpoint_every`` steps, so that a lost cache block
    is recomputed from the last checkpoint at most. The result is lazy: it reads the step tables,
    which stay cached until the caller unpersists them (``persisted``).

    Args:
        adjacency: ``src``, ``dst``, ``prob``, ``alias`` rows (see
            :func:`eges.pipeline.graph.build_adjacency`), best materialised (checkpointed).
        walks_per_node: walks started at every node with out-edges.
        walk_length: nodes per walk, the start included.
        seed: walk seed.
        num_items: the number of items (for walk ids).
        checkpoint_every: write a reliable checkpoint of the walkers every this many steps.
        checkpoint: ``(df, step) -> df`` that materialises ``df`` reliably (default: Spark's
            ``DataFrame.checkpoint``; a checkpoint directory must be set).
        persisted: the cached step tables are appended to it, for the caller to unpersist once
            the walks are written.

    Returns:
        ``walk_id`` bigint, ``items`` array<int>.
    """
    if checkpoint is None:

        def checkpoint(df: DataFrame, _step: int) -> DataFrame:
            return df.checkpoint(eager=True)

    steps = [start_walkers(adjacency, walks_per_node, num_items)]
    for step in range(1, walk_length):
        walkers = walk_step(steps[-1], adjacency, seed, step)
        if step % checkpoint_every == 0:
            walkers = checkpoint(walkers, step)
        else:
            walkers = walkers.persist(StorageLevel.MEMORY_AND_DISK)
            if persisted is not None:
                persisted.append(walkers)
        going = walkers.count()
        steps.append(walkers)
        log.info("walks: step %d/%d done, %d walkers still going", step, walk_length - 1, going)
        if going == 0:
            break
    return assemble(steps)
