"""The item table: dense item indices, side-info vocabularies and encoded side information.

Item indices are dense int64 from 1 (0 is padding), the values of each side-info field's
vocabulary dense int32 from 1; both are assigned by (count descending, raw value ascending) so
they are deterministic and frequent entries get small indices.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from eges.pipeline.ingest import col
from eges.schema import NAME_COLUMN


def dense_index(
    df: DataFrame,
    order: list[Column],
    name: str,
    *,
    start: int = 1,
    columns: list[str] | None = None,
    dtype: str = "int",
) -> DataFrame:
    """``df`` with column ``name`` (``dtype``: int, or long for the item indices): each row's
    position in ``order``, from ``start``.

    ``order`` must be a total order (ties broken by a unique column), so the positions do not
    depend on partitioning. No task sees more than one partition of the rows, unlike
    ``row_number()`` over a window without partitioning: a distributed sort (range-partitioned),
    then the rows of each partition are counted and each partition's offset is added to the
    position inside it, as ``RDD.zipWithIndex`` does. The sorted rows are cached between the two
    passes: sorting again could draw other range bounds.

    Args:
        df: the rows.
        order: sort columns (``F.col("count").desc()``, ``F.col("item_id")``).
        name: the new column.
        start: position of the first row.
        columns: the result's columns in order (default: ``name``, then ``df``'s).

    Returns:
        The rows with their positions, cached (the caller unpersists it when done).
    """
    # monotonically_increasing_id() is the partition index << 33 + the row's place in it
    ordered = (
        df.orderBy(*order)
        .withColumn("_pid", F.spark_partition_id())
        .withColumn("_pos", F.monotonically_increasing_id())
        .persist()
    )
    offsets, total = [], start
    for row in sorted(ordered.groupBy("_pid").count().collect()):
        offsets.append((row["_pid"], total))
        total += row["count"]
    offsets_df = df.sparkSession.createDataFrame(offsets, "_pid int, _offset long")
    position = F.col("_offset") + F.col("_pos") - F.shiftleft(F.col("_pid").cast("long"), 33)
    result = (
        ordered.join(F.broadcast(offsets_df), "_pid")
        .withColumn(name, position.cast(dtype))
        .select(*[col(c) for c in (columns or [name, *df.columns])])
        .persist()
    )
    result.count()
    ordered.unpersist()
    return result


def index_items(side_info: DataFrame, events: DataFrame) -> DataFrame:
    """Assign dense ``item_idx`` (int64, from 1; 0 is padding) to every known item.

    Items are the union of the catalogue (``side_info``) and the items with events. Order: most
    events first, then ``item_id``, so the index is deterministic and frequent items are small.

    Args:
        side_info: ``item_id`` + one array<string> column per field.
        events: filtered events (``item_id``).

    Returns:
        ``item_idx``, ``item_id``, ``count`` (events) and the side-info columns (empty arrays for
        items that have none), cached.
    """
    counts = events.groupBy("item_id").agg(F.count(F.lit(1)).alias("count"))
    fields = [c for c in side_info.columns if c != "item_id"]
    items = counts.join(side_info, "item_id", "full_outer").select(
        "item_id",
        F.coalesce("count", F.lit(0).cast("long")).alias("count"),
        *[F.coalesce(col(f), F.array().cast("array<string>")).alias(f) for f in fields],
    )
    return dense_index(items, [F.col("count").desc(), F.col("item_id")], "item_idx", dtype="long")


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
        ``value`` string, ``index`` int (from 1), ``count`` bigint (items having the value),
        cached.
    """
    values = (
        items.select(F.explode(col(field)).alias("value"))
        .groupBy("value")
        .agg(F.count(F.lit(1)).alias("count"))
    )
    return dense_index(
        values,
        [F.col("count").desc(), F.col("value")],
        "index",
        columns=["value", "index", "count"],
    )


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
