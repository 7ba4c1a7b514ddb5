"""Walk shards: which walk goes to which file depends on the seed and the walk ids only."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from eges import schema
from eges.pipeline.shards import write_walk_shards


@pytest.fixture
def walks(spark):
    """3,000 walks with ids in the walk job's layout (round * items + start) and short paths."""
    return spark.range(3000).select(
        ((F.col("id") % 3) * 1000 + F.col("id") / 3).cast("long").alias("walk_id"),
        F.array((F.col("id") % 97 + 1).cast("int"), (F.col("id") % 13 + 1).cast("int")).alias(
            "items"
        ),
    )


def write(
    spark,
    walks,
    out: Path,
    *,
    input_partitions: int,
    shuffle_partitions: int,
    seed: int = 7,
    num_shards: int = 4,
) -> dict:
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
    try:
        shuffled = walks.repartition(input_partitions, F.rand(input_partitions))
        out.mkdir()
        return write_walk_shards(shuffled, out, num_shards, seed)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)


def test_shard_files_do_not_depend_on_the_partitioning(spark, walks, tmp_path):
    a = write(spark, walks, tmp_path / "a", input_partitions=1, shuffle_partitions=1)
    b = write(spark, walks, tmp_path / "b", input_partitions=7, shuffle_partitions=5)
    names = [f["path"] for f in a["files"]]
    assert names == [f"walks/shard-{i:05d}.parquet" for i in range(4)]
    assert a == b  # same files, same row counts
    assert a["rows"] == 3000
    for name in names:
        rows_a = pq.read_table(tmp_path / "a" / name).to_pylist()
        rows_b = pq.read_table(tmp_path / "b" / name).to_pylist()
        assert rows_a == rows_b, name  # the same walks in the same order
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["walks"]  # no Spark leftovers
    assert sorted(p.name for p in (tmp_path / "a" / "walks").iterdir()) == [
        Path(n).name for n in names
    ]


def test_shards_are_a_seeded_shuffle_of_similar_size(spark, walks, tmp_path):
    a = write(spark, walks, tmp_path / "a", input_partitions=3, shuffle_partitions=2)
    c = write(spark, walks, tmp_path / "c", input_partitions=3, shuffle_partitions=2, seed=8)
    table = schema.read_table(tmp_path / "a" / "walks", schema.WALK_SCHEMA)
    ids = table["walk_id"].to_pylist()
    assert sorted(ids) == sorted(r["walk_id"] for r in walks.collect())  # every walk once
    assert ids != sorted(ids)  # not in walk id order
    assert all(600 <= f["rows"] <= 900 for f in a["files"])  # 750 expected per shard
    first = pq.read_table(tmp_path / "a" / a["files"][0]["path"])["walk_id"].to_pylist()
    other = pq.read_table(tmp_path / "c" / c["files"][0]["path"])["walk_id"].to_pylist()
    assert set(first) != set(other)  # another seed deals the walks out differently


def step_rows(walks, walk_length):
    """The rows walk_steps returns for these walks: at each kept step s, every walk of s
    nodes or more, with its nodes at s - 1 (``prev``) and at s (``node``, null past its end)."""
    from eges.pipeline.walks import kept_step

    steps = [s for s in range(1, walk_length) if kept_step(s, walk_length)]
    every = F.explode(F.array(*map(F.lit, steps))).alias("step")
    return (
        walks.select("walk_id", "items", every)
        .filter(F.size("items") >= F.col("step"))
        .select(
            "walk_id",
            F.col("step").cast("int"),
            F.element_at("items", F.col("step")).cast("long").alias("prev"),
            F.when(F.size("items") > F.col("step"), F.element_at("items", F.col("step") + 1))
            .cast("long")
            .alias("node"),
        )
    )


@pytest.mark.parametrize("walk_length", [4, 5])
def test_step_rows_are_put_together_in_the_shards_shuffle(spark, tmp_path, walk_length):
    # the job's path: (walk_id, step, prev, node) rows, assembled after the one shuffle to the
    # shards, give the same files as the assembled walks
    walks = spark.range(2000).select(
        F.col("id").alias("walk_id"),
        F.array(
            *[((F.col("id") * (t + 3)) % 101 + 1).cast("long") for t in range(walk_length)]
        ).alias("items"),
    )
    walks = walks.withColumn(  # walks of 2 to walk_length nodes
        "items", F.slice("items", 1, (F.col("walk_id") % (walk_length - 1) + 2).cast("int"))
    )
    (tmp_path / "walks").mkdir()
    (tmp_path / "rows").mkdir()
    a = write_walk_shards(walks, tmp_path / "walks", 3, seed=5)
    rows = step_rows(walks, walk_length).repartition(5)
    b = write_walk_shards(rows, tmp_path / "rows", 3, seed=5, walk_length=walk_length)
    assert a == b and a["rows"] == 2000
    for f in a["files"]:
        assert (
            pq.read_table(tmp_path / "walks" / f["path"]).to_pylist()
            == pq.read_table(tmp_path / "rows" / f["path"]).to_pylist()
        )


@pytest.mark.parametrize("n", [3, 8, 64])
def test_partition_keys_send_shard_i_to_partition_i(spark, n):
    from eges.pipeline.shards import partition_keys

    keys = partition_keys(spark, n)
    assert len(set(keys)) == n
    placed = (
        spark.createDataFrame([(i, k) for i, k in enumerate(keys)], "shard int, key long")
        .repartition(n, "key")
        .select("shard", F.spark_partition_id().alias("p"))
        .collect()
    )
    assert sorted((r["shard"], r["p"]) for r in placed) == [(i, i) for i in range(n)]
    # the check can fail: the shard numbers as their own keys crowd some partitions
    crowded = (
        spark.range(n)
        .select(F.col("id").cast("int").alias("shard"))
        .repartition(n, "shard")
        .groupBy(F.spark_partition_id())
        .count()
    )
    assert crowded.count() < n


@pytest.mark.parametrize("aqe", ["true", "false"])
def test_shards_are_even_and_their_key_gives_each_its_own_task(spark, tmp_path, aqe):
    walks = spark.range(4000).select(
        F.col("id").alias("walk_id"), F.array(F.lit(1), F.lit(2)).alias("items")
    )
    rows = step_rows(walks, 2)
    before = spark.conf.get("spark.sql.adaptive.enabled")
    spark.conf.set("spark.sql.adaptive.enabled", aqe)
    try:
        (tmp_path / "out").mkdir()
        table = write_walk_shards(rows, tmp_path / "out", 8, seed=3, walk_length=2)
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", before)
    assert len(table["files"]) == 8 and table["rows"] == 4000
    # every shard gets about its share (the tasks are checked through the partition ids
    # below)
    sizes = sorted(f["rows"] for f in table["files"])
    assert sizes[0] > 0.7 * 500 and sizes[-1] < 1.3 * 500
    from eges.pipeline.shards import sharded_walks

    spark.conf.set("spark.sql.adaptive.enabled", aqe)
    try:
        sharded = sharded_walks(rows, 8, seed=3, walk_length=2)
        plan = sharded._jdf.queryExecution().executedPlan().toString()
        tasks = (
            sharded.groupBy(F.spark_partition_id().alias("p"))
            .agg(F.collect_set("shard").alias("shards"))
            .collect()
        )
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", before)
    assert plan.count("Exchange") == 1, plan  # the assembly and the sharding: one shuffle
    assert sorted((r["p"], r["shards"]) for r in tasks) == [(i, [i]) for i in range(8)]


def test_shards_without_walks_leave_no_gap_in_the_names(spark, tmp_path):
    # 6 walks over 8 shards: some shards (and partition 0, perhaps) get none
    walks = spark.range(6).select(
        F.col("id").alias("walk_id"), F.array(F.col("id") + 1, F.lit(7)).alias("items")
    )
    table = write_walk_shards(walks, tmp_path, 8, seed=3)
    shard_of = {
        r["walk_id"]: r["s"]
        for r in walks.select(
            "walk_id", F.pmod(F.xxhash64(F.lit(3).cast("long"), "walk_id"), F.lit(8)).alias("s")
        ).collect()
    }
    used = sorted(set(shard_of.values()))
    assert len(used) < 8 and table["rows"] == 6
    assert [f["path"] for f in table["files"]] == [
        f"walks/shard-{i:05d}.parquet" for i in range(len(used))
    ]
    for f, shard in zip(table["files"], used):  # in shard order, one shard each
        ids = pq.read_table(tmp_path / f["path"])["walk_id"].to_pylist()
        assert {shard_of[i] for i in ids} == {shard}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walks"]


def test_a_walk_outside_its_shards_partition_stops_the_write(spark, tmp_path, monkeypatch):
    from eges.pipeline import shards

    # a partition key that sends every shard to one partition: the files would mix shards
    monkeypatch.setattr(shards, "shard_partition", lambda spark, n, shard: F.lit(0).cast("long"))
    walks = spark.range(100).select(F.col("id").alias("walk_id"), F.array(F.lit(1)).alias("items"))
    with pytest.raises(Exception, match="not in its shard's partition"):
        write_walk_shards(walks, tmp_path, 4, seed=3)
