"""Dense, ordered indices without a single-task window (eges.pipeline.items.dense_index)."""

import random

import pytest
from pyspark.sql import functions as F

from eges.pipeline.items import build_vocab, dense_index, index_items


def rows_of(spark, n, parts, seed=0):
    rng = random.Random(seed)
    rows = [(f"item{i:05d}", rng.randint(0, 20)) for i in range(n)]
    rng.shuffle(rows)
    return rows, spark.createDataFrame(rows, "item_id string, count long").repartition(parts)


@pytest.mark.parametrize("parts", [1, 3, 7])
@pytest.mark.parametrize("start", [0, 1])
@pytest.mark.parametrize("adaptive", ["false", "true"])  # the job runs with it on
def test_positions_follow_the_order_whatever_the_partitioning(spark, parts, start, adaptive):
    rows, df = rows_of(spark, 2_000, parts)
    spark.conf.set("spark.sql.adaptive.enabled", adaptive)
    try:
        out = dense_index(df, [F.col("count").desc(), F.col("item_id")], "idx", start=start)
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", "false")
    try:
        assert out.columns == ["idx", "item_id", "count"]
        got = [(r.item_id, r["count"]) for r in out.orderBy("idx").collect()]
        assert [r.idx for r in out.orderBy("idx").collect()] == list(range(start, start + 2_000))
        assert got == sorted(rows, key=lambda r: (-r[1], r[0]))
        # no window without partitioning, which would move every row into one task
        assert "Window" not in out._jdf.queryExecution().executedPlan().toString()
    finally:
        out.unpersist()


def test_empty_input_gives_an_empty_table(spark):
    df = spark.createDataFrame([], "item_id string, count long")
    out = dense_index(df, [F.col("item_id")], "idx", columns=["item_id", "idx"])
    assert out.columns == ["item_id", "idx"] and out.count() == 0
    out.unpersist()


def test_items_and_vocabularies_get_their_indices(spark):
    events = spark.createDataFrame([("b",), ("b",), ("a",), ("c",), ("c",)], "item_id string")
    side = spark.createDataFrame(
        [("a", ["x", "y"]), ("b", ["y"]), ("d", ["y", "z"])], "item_id string, tags array<string>"
    )
    items = index_items(side, events)
    vocab = build_vocab(items, "tags")
    try:
        got = [(r.item_idx, r.item_id, r["count"]) for r in items.orderBy("item_idx").collect()]
        # most events first, ties by id; the catalogue-only item d last
        assert got == [(1, "b", 2), (2, "c", 2), (3, "a", 1), (4, "d", 0)]
        # item indices are 64-bit (walk format 2), vocabulary indices 32-bit
        assert items.schema["item_idx"].dataType.simpleString() == "bigint"
        assert vocab.schema["index"].dataType.simpleString() == "int"
        assert [tuple(r) for r in vocab.orderBy("index").collect()] == [
            ("y", 1, 3),
            ("x", 2, 1),
            ("z", 3, 1),
        ]
    finally:
        items.unpersist()
        vocab.unpersist()
