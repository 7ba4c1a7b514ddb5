"""Hold-out splits for the evaluation (``eges.evaluation.evaluate``), applied inside the walk job.

With ``split.kind`` set, the walk job trains on part of the data and writes what was held out to
``OUT/eval/`` (see :mod:`eges.schema`); the torch side never sees the held-out part:

* ``edges`` — link prediction as in the paper: a seeded ``edge_fraction`` of the item pairs
  connected in the graph is hidden (both directions of a pair together, so the training graph
  keeps no direct trace of a hidden pair), and as many sampled pairs with no edge in either
  direction are written as negatives: drawn uniformly (the paper's), and drawn with the same
  degrees as the hidden pairs' ends (``non_edges_matched``).
* ``items`` — cold start: a seeded ``item_fraction`` of the items that have events and side
  information lose all their events before sessions are built; their neighbours in the graph of
  the full data are written as ground truth. With ``split.cold_fields: editorial`` (the
  default) they also lose the values of user-written fields (``data.user_fields``, MovieLens
  tags), which a brand-new item would not have, and only items with an editorial value are
  held out.
* ``time`` — next item: events at or after the ``1 - time_fraction`` quantile of time are held
  out; their consecutive in-session transitions between items of the training graph are the
  test set. Side information written at or after the cutoff (MovieLens tags) is left out.

The noise filters (``sessions.max_events_per_user``, ``min_item_count``) count the training
events alone: held-out events never decide what training keeps.

Everything is chosen by ``xxhash64`` of the seed and the ids, so a split does not depend on
partitioning. All functions are ``DataFrame -> DataFrame`` without I/O.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from eges.pipeline.graph import build_edges
from eges.pipeline.ingest import col
from eges.pipeline.items import dense_index

BROADCAST_ROWS = 2_000_000  # node tables up to this size are sent to every task whole


def _key(seed: int, *cols: str):
    return F.xxhash64(F.lit(seed).cast("long"), *[F.col(c) for c in cols])


def undirected_pairs(edges: DataFrame) -> DataFrame:
    """Item pairs connected in either direction: ``src`` < ``dst``, ``weight`` summed."""
    return (
        edges.select(
            F.least("src", "dst").alias("src"), F.greatest("src", "dst").alias("dst"), "weight"
        )
        .groupBy("src", "dst")
        .agg(F.sum("weight").alias("weight"))
    )


def hide_pairs(edges: DataFrame, fraction: float, seed: int) -> DataFrame:
    """A seeded ``fraction`` of the undirected pairs of ``edges`` (exactly ``round(f * pairs)``).

    Returns:
        ``src`` < ``dst``, ``weight`` (both directions summed).
    """
    pairs = undirected_pairs(edges)
    n = round(fraction * pairs.count())
    # orderBy + limit runs as a distributed top-n, not a single-partition window
    return pairs.orderBy(_key(seed, "src", "dst"), "src", "dst").limit(n)


def remove_pairs(edges: DataFrame, pairs: DataFrame) -> DataFrame:
    """``edges`` without either direction of any pair in ``pairs`` (``src`` < ``dst``)."""
    undirected = edges.withColumn("_lo", F.least("src", "dst")).withColumn(
        "_hi", F.greatest("src", "dst")
    )
    hidden = pairs.select(F.col("src").alias("_lo"), F.col("dst").alias("_hi"))
    return undirected.join(hidden, ["_lo", "_hi"], "left_anti").select("src", "dst", "weight")


def sample_non_edges(
    edges: DataFrame, n: int, seed: int, oversample: int = 3, matched: bool = False
) -> DataFrame:
    """``n`` distinct node pairs (``src`` < ``dst``) with no edge in either direction.

    Nodes are drawn uniformly from the nodes of ``edges`` (as the paper's "random non-edges"),
    or, ``matched``, each as an end of a uniformly drawn connected pair: in proportion to its
    number of neighbours, as the ends of the hidden pairs are. Uniform negatives are mostly
    rare items, which popularity alone tells from the positives; matched ones are not. (A pair
    drawn twice counts once, which slightly thins the pairs of two well-connected items.)

    Returns:
        ``src``, ``dst``, ``weight`` (0).

    Raises:
        ValueError: the graph is too dense to find ``n`` non-edges.
    """
    spark = edges.sparkSession
    if matched:  # every end of every connected pair: a node as often as it has neighbours
        ends = undirected_pairs(edges)
        nodes = ends.select(F.col("src").alias("node")).union(ends.select("dst"))
    else:
        nodes = edges.select(F.col("src").alias("node")).union(edges.select("dst")).distinct()
    nodes = dense_index(nodes, [F.col("node")], "_rank", start=0, dtype="long")
    num_nodes = nodes.count()
    existing = undirected_pairs(edges).select("src", "dst")
    for attempt in range(4):
        draws = max(64, oversample * n) * 4**attempt

        def draw(stream: int):
            return F.pmod(
                F.xxhash64(
                    F.lit(seed + attempt).cast("long"), F.col("id"), F.lit(stream).cast("long")
                ),
                F.lit(num_nodes),
            )

        cand = spark.range(draws).select(draw(0).alias("a"), draw(1).alias("b"))
        a = nodes.select(F.col("_rank").alias("a"), F.col("node").alias("na"))
        b = nodes.select(F.col("_rank").alias("b"), F.col("node").alias("nb"))
        if num_nodes <= BROADCAST_ROWS:  # else a shuffle join: the matched table has 2 rows a pair
            a, b = F.broadcast(a), F.broadcast(b)
        pairs = (
            cand.join(a, "a")
            .join(b, "b")
            .filter(F.col("na") != F.col("nb"))
            .select(F.least("na", "nb").alias("src"), F.greatest("na", "nb").alias("dst"))
            .distinct()
            .join(existing, ["src", "dst"], "left_anti")
        )
        found = pairs.orderBy(_key(seed, "src", "dst"), "src", "dst").limit(n).persist()
        if found.count() == n:
            nodes.unpersist()
            return found.withColumn("weight", F.lit(0).cast("long"))
        found.unpersist()
    nodes.unpersist()
    raise ValueError(
        f"could not sample {n} {'degree-matched ' if matched else ''}non-edges among the "
        f"graph's nodes: the graph is too dense for split.edge_fraction"
    )


def choose_heldout_items(
    events: DataFrame, side_info: DataFrame, fraction: float, seed: int
) -> DataFrame:
    """A seeded ``fraction`` of the items that have events and at least one side-info value.

    Items without side information are never held out: nothing could embed them cold.

    Returns:
        ``item_id`` (exactly ``round(fraction * eligible)`` rows).
    """
    fields = [c for c in side_info.columns if c != "item_id"]
    if not fields:
        raise ValueError("split.kind=items needs side information: the data has no fields")
    with_side = side_info.filter(F.size(F.flatten(F.array(*[col(f) for f in fields]))) > 0).select(
        "item_id"
    )
    eligible = events.select("item_id").distinct().join(with_side, "item_id")
    n = round(fraction * eligible.count())
    return eligible.orderBy(_key(seed, "item_id"), "item_id").limit(n).select("item_id")


def without_fields(side_info: DataFrame, items: DataFrame, fields: list[str]) -> DataFrame:
    """``side_info`` with ``fields`` emptied for the items of ``items`` (``item_id``): what a
    held-out item keeps when it is treated as brand new (no user-written values yet)."""
    if not fields:
        return side_info
    held = items.select("item_id", F.lit(True).alias("_held"))
    empty = F.array().cast("array<string>")
    return side_info.join(F.broadcast(held), "item_id", "left").select(
        "item_id",
        *[
            (F.when(F.col("_held"), empty).otherwise(col(c)) if c in fields else col(c)).alias(c)
            for c in side_info.columns
            if c not in ("item_id", "_held")
        ],
    )


def neighbour_truth(full_edges: DataFrame, heldout_idx: DataFrame) -> DataFrame:
    """Graph neighbours (in- or out-edges, weights summed) of held-out items in the full graph.

    Neighbours that are themselves held out are left out: they cannot be retrieved.

    Args:
        full_edges: edges built from all events.
        heldout_idx: ``item_idx`` of the held-out items.

    Returns:
        ``src`` (held-out item), ``dst`` (warm neighbour), ``weight``.
    """
    both = full_edges.select("src", "dst", "weight").union(
        full_edges.select(F.col("dst").alias("src"), F.col("src").alias("dst"), "weight")
    )
    held = heldout_idx.select(F.col("item_idx").alias("src"))
    others = heldout_idx.select(F.col("item_idx").alias("dst"))
    return (
        both.join(F.broadcast(held), "src")
        .join(F.broadcast(others), "dst", "left_anti")
        .groupBy("src", "dst")
        .agg(F.sum("weight").alias("weight"))
    )


def time_cutoff(events: DataFrame, fraction: float) -> float:
    """The timestamp at the ``1 - fraction`` quantile of ``ts`` (exact quantile)."""
    (cutoff,) = events.approxQuantile("ts", [1.0 - fraction], 0.0)
    return float(cutoff)


def heldout_transitions(test_sessions: DataFrame, train_edges: DataFrame) -> DataFrame:
    """Consecutive in-session transitions a→b (a ≠ b) of the held-out period, both items in the
    training graph, counted.

    Args:
        test_sessions: :func:`eges.pipeline.sessions.sessionize` of the held-out events.
        train_edges: the training graph's edges.

    Returns:
        ``src``, ``dst``, ``weight`` (occurrences).
    """
    nodes = (
        train_edges.select(F.col("src").alias("node")).union(train_edges.select("dst")).distinct()
    )
    edges = build_edges(test_sessions)
    return (
        edges.join(nodes.withColumnRenamed("node", "src"), "src")
        .join(nodes.withColumnRenamed("node", "dst"), "dst")
        .select("src", "dst", "weight")
    )
