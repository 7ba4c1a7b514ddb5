"""The directed weighted item graph and its per-node sampling tables.

Paper §2: an edge i→j for every time j immediately follows i inside a session (i ≠ j, so
consecutive repeats of one item collapse); its weight is the number of such transitions over all
users. The edge table uses GraphFrames' column names (``src``, ``dst``, ``weight``) so a user with
the GraphFrames jar can wrap it: ``GraphFrame(items.withColumnRenamed("item_idx", "id"), edges)``.

For the walks, each node's out-edges are gathered into one adjacency row with an alias table
(Walker/Vose): sampling a neighbour then costs O(1) whatever the degree, so hubs are cheap.
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from eges.alias import alias_table

ADJACENCY_SCHEMA = (
    "src bigint, dst array<bigint>, weight array<bigint>, prob array<double>, alias array<int>"
)


def build_edges(sessions: DataFrame) -> DataFrame:
    """Count consecutive transitions inside sessions.

    Args:
        sessions: output of :func:`eges.pipeline.sessions.sessionize`.

    Returns:
        ``src`` bigint, ``dst`` bigint (item indices), ``weight`` bigint; one row per distinct
        directed pair.
    """
    pairs = sessions.filter(
        F.col("prev_item").isNotNull() & (F.col("prev_item") != F.col("item_idx"))
    ).select(
        F.col("prev_item").cast("long").alias("src"), F.col("item_idx").cast("long").alias("dst")
    )
    return pairs.groupBy("src", "dst").agg(F.count(F.lit(1)).alias("weight"))


def _alias_partition(batches):
    for pdf in batches:
        probs, aliases = [], []
        for w in pdf["weight"]:
            p, a = alias_table(w)
            probs.append(p)
            aliases.append(a)
        pdf = pdf.assign(
            prob=pd.Series(probs, index=pdf.index, dtype=object),
            alias=pd.Series(aliases, index=pdf.index, dtype=object),
        )
        yield pdf[["src", "dst", "weight", "prob", "alias"]]


def build_adjacency(edges: DataFrame, partitions: int) -> DataFrame:
    """Adjacency rows with alias tables, hash-partitioned by ``src``.

    Neighbours are sorted by ``dst`` so the tables, and hence the walks, do not depend on the
    order in which Spark collected them.

    Args:
        edges: ``src``, ``dst``, ``weight``.
        partitions: number of hash partitions.

    Returns:
        ``src`` bigint, ``dst`` array<bigint>, ``weight`` array<bigint>, ``prob`` array<double>,
        ``alias`` array<int> (0-based positions in ``dst``).
    """
    rows = edges.groupBy("src").agg(
        F.array_sort(F.collect_list(F.struct("dst", "weight"))).alias("nb")
    )
    rows = rows.select(
        "src",
        F.transform("nb", lambda x: x["dst"]).alias("dst"),
        F.transform("nb", lambda x: x["weight"]).alias("weight"),
    )
    return rows.mapInPandas(_alias_partition, ADJACENCY_SCHEMA).repartition(partitions, "src")
