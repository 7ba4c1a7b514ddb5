"""Weighted random walks on Spark, deterministic for a seed.

Paper §2: first-order walks, P(next = j | i) = w_ij / Σ_k w_ik; ``walks_per_node`` walks start at
every node with out-edges and run to ``walk_length`` nodes, or stop early at a node without
out-edges.

The walk advances one step per Spark join of the walkers that are still going with the adjacency
rows (hash-partitioned by ``src``; see :mod:`eges.pipeline.graph`). A walker is only
``(walk_id, node)``: each step shuffles 12 bytes per walker whatever the step. A step's result
is ``(walk_id, prev, node)``, the walker's node before and after the step (``prev`` comes from
the join's walker side, so it is never shuffled). Every other step's result is written as an
ORC table (:func:`write_step`), which the next step reads; the step between goes on to the next
exchange in the same Spark job, and the last step's goes straight into the assembly
(:func:`walk_steps`). A row thus holds two nodes of its walk, and the walks are put together
once, at the end, from half as many rows as they have nodes (:func:`assemble`). A walker at a
node without out-edges finds no adjacency row and drops out of the later steps: its walk ends
there.

**Hot nodes.** A walk visits a node about in proportion to the transition probability flowing
into it, so a hub's walkers all meet in the one task that holds its adjacency row, and that task
runs longer than the others at every step. Adaptive query execution's skew join cannot split it
(the adjacency side is not shuffled). :func:`hot_nodes` estimates every node's walkers and splits
each node that would carry more than ``hot_node_share`` of a partition's average load: its
adjacency row is copied s times, each copy under its own join ``key`` (the first: the node
itself; the others: negative numbers chosen to hash to the partitions with the fewest walkers),
the adjacency is partitioned by ``key``, and a walker at that node picks one copy by a hash of
its walk and step.
The copy only decides which task draws the step, not the draw, so the walks are the same with or
without it. Once a node is split, every walker carries its key too (8 more bytes before
compression).

The randomness of step ``t`` of walk ``w`` is ``xxhash64(seed, w, t, stream)``, a counter-based
hash: it depends on nothing but those values, so the walks are identical for any number of
partitions or executors and after any task retry. The neighbour is drawn from the node's alias
table in O(1): column ``k = hash₀ mod degree``, then ``dst[k]`` if ``u < prob[k]`` else
``dst[alias[k]]`` with ``u = hash₁ / 2⁶⁴`` (53 bits).
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from eges.pipeline.spark import hash_partition_keys

log = logging.getLogger(__name__)

_U53 = 2.0**-53
# what a step reads of an adjacency row; the weights were only needed to build the alias table
WALK_ADJACENCY_COLUMNS = ("src", "dst", "prob", "alias")
STEP_SCHEMA = "walk_id bigint, prev bigint, node bigint"  # a written step's table


def _hash(seed: int, step: int, stream: int) -> Column:
    return F.xxhash64(
        F.lit(seed).cast("long"),
        F.col("walk_id"),
        F.lit(step).cast("long"),
        F.lit(stream).cast("long"),
    )


def hot_nodes(
    adjacency: DataFrame, partitions: int, share: float, steps: int = 3
) -> list[tuple[int, float, int]]:
    """The nodes that would hold up a step, and into how many copies to split each.

    A node's walkers one step from an even start are ``r(v) = Σ_u P(u → v)`` per walker started
    at each node; an average partition has ``N / partitions`` (``N`` nodes with out-edges). A
    node is hot when ``r(v) > share · N / partitions``. The walkers of the hot nodes are then
    followed ``steps - 1`` steps further (``Σ_u r(u) P(u → v)`` over the hot ``u`` only), which
    finds the nodes that hubs send most of their walkers on to; a node's load is the largest of
    these. A hot node gets ``s = ceil(load / (share · N / partitions))`` copies, at most
    ``partitions``; a node without out-edges is left out (its walkers stop there). Each step has
    fewer than ``partitions / share`` hot nodes.

    Args:
        adjacency: ``src``, ``dst``, ``weight`` rows (:func:`eges.pipeline.graph.build_adjacency`).
        partitions: the adjacency's hash partitions.
        share: the share of an average partition's walkers that one copy may carry (> 0).
        steps: the steps followed (≥ 1).

    Raises:
        ValueError: ``share`` is not > 0 or ``steps`` < 1.

    Returns:
        ``(node, load / (N / partitions), s)`` for each node with ``s ≥ 2``, by node.
    """
    if not share > 0 or steps < 1:
        raise ValueError(f"hot_nodes: share must be > 0 and steps >= 1, not {share}, {steps}")
    spark = adjacency.sparkSession
    average = adjacency.count() / partitions
    bar = F.lit(share * average)

    def flow(rows: DataFrame) -> DataFrame:  # src, node, p = P(src → node)
        total = F.aggregate("weight", F.lit(0).cast("long"), lambda acc, w: acc + w)
        return rows.select(
            "src", F.explode(F.arrays_zip("dst", "weight")).alias("e"), total.alias("t")
        ).select("src", F.col("e.dst").alias("node"), (F.col("e.weight") / F.col("t")).alias("p"))

    hot = flow(adjacency).groupBy("node").agg(F.sum("p").alias("r")).filter(F.col("r") > bar)
    load = {r["node"]: r["r"] for r in hot.collect()}
    frontier = dict(load)
    for _ in range(steps - 1):
        if not frontier:
            break
        walkers = spark.createDataFrame(list(frontier.items()), "src bigint, r double")
        rows = adjacency.join(F.broadcast(walkers), "src", "left_semi")
        onward = flow(rows).join(F.broadcast(walkers), "src")
        hot = onward.groupBy("node").agg(F.sum(F.col("p") * F.col("r")).alias("r"))
        frontier = {r["node"]: r["r"] for r in hot.filter(F.col("r") > bar).collect()}
        for node, r in frontier.items():
            load[node] = max(load.get(node, 0.0), r)
    copies = {v: min(math.ceil(r / average / share), partitions) for v, r in load.items()}
    copies = {v: s for v, s in copies.items() if s >= 2}
    # a node without out-edges has no row to copy: its walkers end there, in one task
    nodes = spark.createDataFrame([(v,) for v in copies], "src bigint")
    rows = adjacency.join(F.broadcast(nodes), "src", "left_semi").select("src").collect()
    return [(v, load[v] / average, copies[v]) for v in sorted(r["src"] for r in rows)]


def place_copies(
    spark: SparkSession, hot: list[tuple[int, float, int]], partitions: int
) -> dict[int, list[int]]:
    """The join keys of each hot node's copies, placed where the walkers are fewest.

    Copy 0 keeps the node's own key (its partition under plain hashing). Every further copy
    goes to the partition with the least estimated load that holds no copy of that node yet
    (each partition starts at 1, an average one; a copy adds ``load / s``), heaviest nodes
    first, and gets a negative key that Spark's hash partitioning sends there (item indices are
    ≥ 1, so no key is a node's).

    Args:
        hot: output of :func:`hot_nodes`.
        partitions: the adjacency's hash partitions.

    Returns:
        ``{node: [node, key_1, …, key_{s-1}]}``.
    """
    home = dict(
        spark.createDataFrame([(h[0],) for h in hot], "node bigint")
        .select("node", F.pmod(F.hash("node"), F.lit(partitions)).alias("p"))
        .collect()
    )
    load = [1.0] * partitions
    for node, r, s in hot:
        load[home[node]] += r / s
    # a node's further copies go to the s - 1 least-loaded partitions other than its home
    # (ties to the lower index), taken from a heap of (load, partition)
    heap = [(x, p) for p, x in enumerate(load)]
    heapq.heapify(heap)
    targets: dict[int, list[int]] = {}
    for node, r, s in sorted(hot, key=lambda h: (-h[1], h[0])):
        taken = [heapq.heappop(heap) for _ in range(s)]  # s ≤ partitions
        picks = [e for e in taken if e[1] != home[node]][: s - 1]
        for e in taken:
            heapq.heappush(heap, (e[0] + r / s, e[1]) if e in picks else e)
        targets[node] = [p for _, p in picks]
    counts = [0] * partitions
    for ps in targets.values():
        for p in ps:
            counts[p] += 1
    pools = hash_partition_keys(spark, partitions, counts, negative=True)
    return {node: [node] + [pools[p].pop(0) for p in ps] for node, ps in sorted(targets.items())}


def prepare_adjacency(
    adjacency: DataFrame, partitions: int | None = None, hot_node_share: float | None = None
) -> DataFrame:
    """The adjacency as the steps read it: a reliable checkpoint, cached (memory, then disk).

    Only :data:`WALK_ADJACENCY_COLUMNS`, sorted by ``src`` within the hash partitions of
    :func:`eges.pipeline.graph.build_adjacency`. The checkpoint is taken with adaptive query
    execution off: an adaptive plan does not know its partitioning before it runs, and the
    checkpoint would then lose it. With it known, a step shuffles and sorts only the walkers,
    and reads the adjacency where it lies (no exchange, no sort of the adjacency per step). The
    caller unpersists the result when the walks are written.

    With ``hot_node_share`` and nodes that :func:`hot_nodes` finds hot, the result has a
    ``key`` column, is hash-partitioned by it into ``partitions`` and sorted by it: ``key =
    src`` for every row, and a hot node's row is there once more for each further copy, under
    that copy's key (:func:`place_copies`). Without hot nodes it is as above, with no ``key``.

    Args:
        adjacency: output of :func:`eges.pipeline.graph.build_adjacency` (a checkpoint
            directory must be set).
        partitions: its hash partitions (needed with ``hot_node_share``).
        hot_node_share: see :func:`hot_nodes`; None: no node is split.
    """
    spark = adjacency.sparkSession
    if hot_node_share is not None and partitions is None:
        raise ValueError("prepare_adjacency: hot_node_share needs partitions")
    columns = list(WALK_ADJACENCY_COLUMNS)
    key = "spark.sql.adaptive.enabled"
    before = spark.conf.get(key)
    spark.conf.set(key, "false")
    try:
        # the hot nodes are found from this checkpoint (weights kept for it), so that the
        # adjacency (alias tables built in Python) is computed once
        weights = ["weight"] if hot_node_share is not None else []
        saved = (
            adjacency.select(*columns, *weights).sortWithinPartitions("src").checkpoint(eager=True)
        )
        hot = hot_nodes(saved, partitions, hot_node_share) if weights else []
        if weights and not hot:
            log.info("walks: no hot node at walks.hot_node_share %s", hot_node_share)
        if hot:
            keys = place_copies(spark, hot, partitions)
            log.info(
                "walks: %d hot nodes split, %d adjacency rows added (at most %d copies of one "
                "node), so that a copy carries about %s of an average partition's walkers",
                len(keys),
                sum(len(k) - 1 for k in keys.values()),
                max(h[2] for h in hot),
                hot_node_share,
            )
            split = spark.createDataFrame(list(keys.items()), "node bigint, keys array<bigint>")
            copies = F.coalesce(F.col("keys"), F.array(F.col("src")))
            saved = (
                saved.join(F.broadcast(split), saved["src"] == split["node"], "left")
                .select(*columns, F.explode(copies).alias("key"))
                .repartition(partitions, "key")
                .sortWithinPartitions("key")
                .checkpoint(eager=True)
            )
            columns.append("key")
        cached = saved.select(*columns).persist(StorageLevel.MEMORY_AND_DISK)
        cached.count()
        return cached
    finally:
        spark.conf.set(key, before)


def start_walkers(adjacency: DataFrame, walks_per_node: int, num_items: int) -> DataFrame:
    """``walks_per_node`` walkers on every node with out-edges.

    ``walk_id = round * num_items + (src - 1)``: unique, independent of partitioning, and walks of
    one round (one pass over all start nodes) are contiguous. On an adjacency with hot nodes
    split (see :func:`prepare_adjacency`) they start at each node's first copy, where they are
    (no exchange before the first step), and keep its ``key``.

    Returns:
        ``walk_id`` bigint, ``node`` bigint (the start node)[, ``key`` bigint].
    """
    rounds = adjacency.sparkSession.range(walks_per_node).withColumnRenamed("id", "round")
    split = ["key"] if "key" in adjacency.columns else []
    rows = adjacency.filter(F.col("key") == F.col("src")) if split else adjacency
    return (
        rows.select("src", *split)
        .crossJoin(rounds)
        .select(
            (F.col("round") * F.lit(num_items) + (F.col("src") - 1)).cast("long").alias("walk_id"),
            F.col("src").alias("node"),
            *split,
        )
    )


def key_walkers(walkers: DataFrame, split: DataFrame, seed: int, step: int) -> DataFrame:
    """The key of the copy of its node's adjacency row that each walker meets at ``step``: the
    node, unless the node is split, then its copy ``xxhash64(seed, walk_id, step, 2) mod s``.

    Args:
        walkers: ``walk_id``, ``node``.
        split: ``node``, ``keys`` (from :func:`split_nodes`).

    Returns:
        ``walk_id``, ``node``, ``key`` bigint.
    """
    copy = (F.pmod(_hash(seed, step, 2), F.size("keys")) + 1).cast("int")
    key = F.when(F.col("keys").isNull(), F.col("node")).otherwise(F.element_at("keys", copy))
    return walkers.join(F.broadcast(split), "node", "left").select(
        "walk_id", "node", key.cast("long").alias("key")
    )


def split_nodes(adjacency: DataFrame) -> DataFrame | None:
    """``node``, ``keys`` (the node's own key first, then its other copies') of the nodes that
    :func:`prepare_adjacency` split, made again on the driver (a small table, joined by
    broadcast); None when the adjacency has no ``key`` column."""
    if "key" not in adjacency.columns:
        return None
    rows = (
        adjacency.filter(F.col("key") != F.col("src"))  # copies 1 … s-1 (negative keys)
        .groupBy("src")
        .agg(F.sort_array(F.collect_list("key"), asc=False).alias("keys"))
        .select("src", F.concat(F.array("src"), "keys").alias("keys"))
        .collect()
    )
    return adjacency.sparkSession.createDataFrame(
        [(r["src"], r["keys"]) for r in rows], "node bigint, keys array<bigint>"
    )


def count_nodes(adjacency: DataFrame) -> int:
    """The nodes with out-edges of an adjacency from :func:`prepare_adjacency` (a split node's
    copies counted once)."""
    if "key" in adjacency.columns:
        return adjacency.filter(F.col("key") == F.col("src")).count()
    return adjacency.count()


def walk_step(
    walkers: DataFrame, adjacency: DataFrame, seed: int, step: int, keep_ended: bool = False
) -> DataFrame:
    """Move every walker one node on.

    Args:
        walkers: ``walk_id``, ``node`` (where each walker is), and ``key`` (the copy it
            meets, :func:`key_walkers`) when the adjacency has one; other columns (the
            walker's ``prev``) are not kept.
        adjacency: ``src``, ``dst``, ``prob``, ``alias`` (see
            :func:`eges.pipeline.graph.build_adjacency`; other columns are not read)[,
            ``key``: see :func:`prepare_adjacency`].
        seed: walk seed.
        step: step number (1 for the first move), part of the hash counter.
        keep_ended: keep the walkers whose node has no out-edges, with a null ``node``
            (a left join), instead of leaving them out.

    Returns:
        ``walk_id``, ``prev`` (the walker's node), ``node`` (the next node). Without
        ``keep_ended``, only the walkers whose node has out-edges are in it; the others' walks
        end at their node.
    """
    how = "left" if keep_ended else "inner"
    if "key" in adjacency.columns:  # hot nodes split: one key per copy
        adj = adjacency.select(*WALK_ADJACENCY_COLUMNS, "key")
        joined = walkers.join(adj, walkers["key"] == adj["key"], how)
    else:
        adj = adjacency.select(*WALK_ADJACENCY_COLUMNS)
        joined = walkers.join(adj, walkers["node"] == adj["src"], how)
    k = (F.pmod(_hash(seed, step, 0), F.size("dst")) + 1).cast("int")  # 1-based column
    u = F.shiftrightunsigned(_hash(seed, step, 1), 11).cast("double") * F.lit(_U53)
    pick = F.when(u < F.element_at("prob", k), F.element_at("dst", k)).otherwise(
        F.element_at("dst", F.element_at("alias", k) + 1)
    )
    if keep_ended:  # no adjacency row: no next node
        pick = F.when(F.col("src").isNotNull(), pick)
    return joined.select("walk_id", walkers["node"].alias("prev"), pick.alias("node"))


def kept_step(step: int, walk_length: int) -> bool:
    """Whether :func:`walk_steps` returns rows of ``step``: every odd step (written as a table),
    and the last (computed with the assembly)."""
    return step % 2 == 1 or step == walk_length - 1


def write_step(moved: DataFrame, path: str) -> int:
    """Write a step's ``walk_id``, ``prev``, ``node`` rows to ``path`` as an ORC table; return
    the walkers still going (rows with a ``node``), counted while writing (no second pass).

    ORC with LZ4 rather than parquet: these tables are the walk job's own (read back once or
    twice, then deleted), and ORC's run-length encoding of longs is faster and smaller than
    parquet's encodings, with or without its dictionary. On a step's 4.2M rows
    (``bench/bench_step_format.py``, 8 files), ORC wrote them in 0.45 s against 0.79 s for
    snappy parquet, read them back in 0.19 s against 0.26 s, and took 28 MB against 44 MB."""
    # counted by the tasks that write the files (the write's result stage, where Spark applies a
    # partition's metrics once, dropping failed attempts): keep the observe right under the
    # write, as a shuffle in between would put it in a stage whose reruns could count twice
    going = Observation(f"walkers going, {path}")
    counted = moved.observe(going, F.count("node").alias("going"))
    counted.write.option("compression", "lz4").orc(path)
    return int(going.get["going"])


def walk_steps(
    adjacency: DataFrame,
    *,
    walks_per_node: int,
    walk_length: int,
    seed: int,
    num_items: int,
    steps_dir: str,
) -> DataFrame:
    """Run the steps of the walks, writing every other step's walkers to ``steps_dir/step=T``.

    A step's result is ``(walk_id, prev, node)``: where each walker was before the step and
    where it is after it (24 bytes before compression whatever the step; the exchange before
    the next step carries ``(walk_id, node)`` only). Two steps run in one Spark job: the even
    step's result goes on to the next exchange as it is, and the odd step's is written as an
    ORC table (:func:`write_step`), which the next job reads back. A written table holds two
    nodes of every walk, so the walks are put together from half as many rows as they have
    nodes. It is a reliable checkpoint: the lineage never spans more than two steps, and a lost
    executor costs at most the two steps under way. The last step is not written: its rows are
    computed when the result is read (by the assembly), from the last written table. A kept
    step (:func:`kept_step`: the odd ones and the last) keeps the walkers that found no adjacency
    row, with a null ``node`` (their ``prev`` is their walk's last node), and leaves them out of
    the next step; a walker that finds none at an even step drops out there, its last node
    kept as ``node`` the step before.

    Args:
        adjacency: ``src``, ``dst``, ``prob``, ``alias`` rows (see
            :func:`eges.pipeline.graph.build_adjacency`), best materialised (checkpointed);
            with a ``key`` column (:func:`prepare_adjacency`), each walker is sent to the
            copy of its node's row that :func:`key_walkers` picks.
        walks_per_node: walks started at every node with out-edges.
        walk_length: nodes per walk, the start included.
        seed: walk seed.
        num_items: the number of items (for walk ids).
        steps_dir: a directory that does not exist yet, on storage every executor can write
            and read (the output's file system).

    Returns:
        ``walk_id`` bigint, ``step`` int, ``prev`` bigint (the walk's node at ``step - 1``),
        ``node`` bigint (at ``step``; null when the walk ended at ``prev``): one row per walk
        and kept step, read lazily from the written tables and the last step (the adjacency
        must stay cached and ``steps_dir`` in place until it is read). With ``walk_length`` 1,
        one row of step 0 per walk (``prev`` null).
    """
    spark = adjacency.sparkSession
    start = start_walkers(adjacency, walks_per_node, num_items)
    split = split_nodes(adjacency)
    walkers = start
    last = None  # the last step's rows, computed when the result is read
    for step in range(1, walk_length):
        kept = kept_step(step, walk_length)
        moved = walk_step(walkers, adjacency, seed, step, keep_ended=kept)
        if step == walk_length - 1:
            last = moved.select("walk_id", "prev", "node", F.lit(step).alias("step"))
            log.info("walks: step %d/%d runs with the assembly", step, walk_length - 1)
            break  # no walker to key for a next step
        if kept:
            path = f"{steps_dir}/step={step}"
            going = write_step(moved, path)
            table = spark.read.schema(STEP_SCHEMA).orc(path)  # no schema inference job
            walkers = table.filter(F.col("node").isNotNull())
            log.info("walks: step %d/%d done, %d walkers still going", step, walk_length - 1, going)
            if going == 0:
                break
        else:  # on to the next step in the same job
            walkers = moved
        if split is not None:
            walkers = key_walkers(walkers, split, seed, step + 1)
    if walk_length == 1:
        return start.select(
            "walk_id", F.lit(0).alias("step"), F.lit(None).cast("long").alias("prev"), "node"
        )
    if walk_length == 2:  # no step written
        return last
    written = spark.read.schema(f"{STEP_SCHEMA}, step int").orc(steps_dir)
    return written if last is None else written.unionByName(last)


def position_source(position: int, walk_length: int) -> tuple[int, str]:
    """Where :func:`assemble` finds a walk's node at ``position``: ``(step, column)`` of the
    :func:`walk_steps` rows. The row's own ``node`` when that step is kept, else the ``prev``
    of the next step's row (kept when this one is not)."""
    if walk_length == 1:
        return 0, "node"
    if position > 0 and kept_step(position, walk_length):
        return position, "node"
    return position + 1, "prev"


def assemble(rows: DataFrame, walk_length: int, keys: tuple[str, ...] = ()) -> DataFrame:
    """The walks from their :func:`walk_steps` rows.

    One aggregation by walk: the node at position ``t`` is the ``t``-th of ``walk_length``
    fixed-width aggregates, each reading one column of one step's rows
    (:func:`position_source`; no per-walk object lists to sort). A walk that stopped early has
    nulls after its last node, which are left out: its nodes are 0 … n-1 with no gap (a walker
    that drops out never comes back).

    Args:
        rows: output of :func:`walk_steps` (more columns allowed).
        walk_length: nodes per walk, the start included.
        keys: further grouping columns, functions of ``walk_id`` (e.g. its shard), kept in the
            result; an input already partitioned by them is not shuffled again.

    Returns:
        ``keys``, ``walk_id`` bigint, ``items`` array<bigint>.
    """
    nodes = []
    for t in range(walk_length):
        step, column = position_source(t, walk_length)
        nodes.append(F.max(F.when(F.col("step") == step, F.col(column))).alias(f"_n{t}"))
    grouped = rows.groupBy(*keys, "walk_id").agg(*nodes)
    positions = [F.col(f"_n{t}") for t in range(walk_length)]
    length = sum(
        (c.isNotNull().cast("int") for c in positions[1:]), positions[0].isNotNull().cast("int")
    )
    # a walk's nulls are all at the end: a slice drops them (a filter with a lambda would be
    # evaluated row by row, outside the generated code)
    items = F.slice(F.array(*positions), 1, length)
    return grouped.select(*keys, "walk_id", items.alias("items"))


def random_walks(adjacency: DataFrame, *, walk_length: int, **steps: Any) -> DataFrame:
    """All walks of the graph (:func:`walk_steps`, then :func:`assemble`).

    The result is read from the step tables in ``steps_dir`` and the last step from the
    adjacency: keep both until the walks are written, then delete the directory.

    Args:
        adjacency: as for :func:`walk_steps`.
        walk_length: nodes per walk, the start included.
        steps: the other keyword arguments of :func:`walk_steps` (``walks_per_node``, ``seed``,
            ``num_items``, ``steps_dir``).

    Returns:
        ``walk_id`` bigint, ``items`` array<bigint>.
    """
    return assemble(walk_steps(adjacency, walk_length=walk_length, **steps), walk_length)
