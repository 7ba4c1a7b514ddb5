"""The item table: dense item indices, side-info vocabularies and encoded side information.

Item indices are dense int32 from 1 (0 is padding), as are the values of each side-info field's
vocabulary; both are assigned by (count descending, raw value ascending) so they are
deterministic and frequent entries get small indices.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from eges.pipeline.ingest import col
from eges.schema import NAME_COLUMN


def index_items(side_info: DataFrame, events: DataFrame) -> DataFrame:
    """Assign dense ``item_idx`` (int32, from 1; 0 is padding) to every known item.

    Items are the union of the catalogue (``side_info``) and the items with events. Order: most
    events first, then ``item_id``, so the index is deterministic and frequent items are small.

    Args:
        side_info: ``item_id`` + one array<string> column per field.
        events: filtered events (``item_id``).

    Returns:
        ``item_idx``, ``item_id``, ``count`` (events) and the side-info columns (empty arrays for
        items that have none).
    """
    counts = events.groupBy("item_id").agg(F.count(F.lit(1)).alias("count"))
    fields = [c for c in side_info.columns if c != "item_id"]
    items = counts.join(side_info, "item_id", "full_outer").select(
        "item_id",
        F.coalesce("count", F.lit(0).cast("long")).alias("count"),
        *[F.coalesce(col(f), F.array().cast("array<string>")).alias(f) for f in fields],
    )
    # A global order needs one partition; the item table is small next to the events.
    order = Window.orderBy(F.col("count").desc(), F.col("item_id"))
    return items.withColumn("item_idx", F.row_number().over(order).cast("int")).select(
        "item_idx", "item_id", "count", *[col(f) for f in fields]
    )


def attach_names(items: DataFrame, names: DataFrame | None) -> DataFrame:
    """Add the display-name column (``schema.NAME_COLUMN``, null for unnamed items) after
    ``count``; ``names`` None (a layout without names) leaves the table as it is.

    Args:
        items: output of :func:`index_items`.
        names: ``item_id``, ``name``, one row per item.
    """
    if names is None:
        return items
    rest = [c for c in items.columns if c not in ("item_idx", "item_id", "count")]
    return items.join(names, "item_id", "left").select(
        "item_idx", "item_id", "count", NAME_COLUMN, *[col(c) for c in rest]
    )


def build_vocab(items: DataFrame, field: str) -> DataFrame:
    """The vocabulary of one side-info field.

    Args:
        items: the item table with ``field`` as array<string>.
        field: field name.

    Returns:
        ``value`` string, ``index`` int (from 1), ``count`` bigint (items having the value).
    """
    values = (
        items.select(F.explode(col(field)).alias("value"))
        .groupBy("value")
        .agg(F.count(F.lit(1)).alias("count"))
    )
    order = Window.orderBy(F.col("count").desc(), F.col("value"))
    return values.select("value", F.row_number().over(order).cast("int").alias("index"), "count")


def encode_side_info(items: DataFrame, vocabs: dict[str, DataFrame]) -> DataFrame:
    """Replace each field's values by their vocabulary indices (sorted array<int>).

    Args:
        items: ``item_idx``, ``item_id``, ``count`` and array<string> fields.
        vocabs: field name -> output of :func:`build_vocab`.

    Returns:
        The same columns with every field as array<int>.
    """
    out = items
    for field, vocab in vocabs.items():
        encoded = (
            items.select("item_idx", F.explode(col(field)).alias("value"))
            .join(F.broadcast(vocab.select("value", "index")), "value")
            .groupBy("item_idx")
            .agg(F.array_sort(F.collect_list("index")).alias("_encoded"))
        )
        out = (
            out.join(encoded, "item_idx", "left")
            .withColumn(field, F.coalesce(F.col("_encoded"), F.array().cast("array<int>")))
            .drop("_encoded")
        )
    return out.select(*[col(c) for c in items.columns])
