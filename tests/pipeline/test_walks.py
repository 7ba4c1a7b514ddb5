"""Weighted random walks: validity, transition frequencies, determinism (paper §2; walks
identical for any partitioning)."""

import contextlib
import random
import tempfile

import pytest
from pyspark.sql import functions as F

from eges.alias import alias_table
from eges.pipeline.graph import build_adjacency
from eges.pipeline.walks import (
    assemble,
    prepare_adjacency,
    random_walks,
    start_walkers,
    walk_step,
)

EDGE_SCHEMA = "src int, dst int, weight long"


def walks_of(
    spark,
    edges,
    *,
    walks_per_node=5,
    walk_length=6,
    seed=7,
    partitions=2,
    num_items=None,
):
    df = spark.createDataFrame(edges, EDGE_SCHEMA)
    n = num_items or max(max(e[0], e[1]) for e in edges)
    adjacency = build_adjacency(df, partitions).localCheckpoint()
    with tempfile.TemporaryDirectory() as tmp:
        walks = random_walks(
            adjacency,
            walks_per_node=walks_per_node,
            walk_length=walk_length,
            seed=seed,
            num_items=n,
            steps_dir=f"{tmp}/steps",
        )
        return {r.walk_id: list(r["items"]) for r in walks.collect()}


# A small graph with a sink (5 has no out-edge), a cycle and a hub.
GRAPH = [
    (1, 2, 1),
    (1, 3, 3),
    (2, 1, 2),
    (2, 4, 1),
    (3, 1, 1),
    (3, 4, 1),
    (3, 5, 1),
    (4, 1, 5),
    (4, 2, 1),
    (4, 3, 1),
]


def test_every_step_follows_an_edge_and_lengths_are_right(spark):
    edges = {(s, d) for s, d, _ in GRAPH}
    walks = walks_of(spark, GRAPH, walks_per_node=10, walk_length=8)
    starts = {s for s, _, _ in GRAPH}
    assert len(walks) == 10 * len(starts)
    for path in walks.values():
        assert path[0] in starts
        assert 2 <= len(path) <= 8
        assert all((a, b) in edges for a, b in zip(path, path[1:]))
        if len(path) < 8:
            assert path[-1] == 5  # stopped early only at the sink
    assert any(len(p) < 8 for p in walks.values()) and any(len(p) == 8 for p in walks.values())


def test_walk_ids_are_unique_per_start_and_round(spark):
    walks = walks_of(spark, GRAPH, walks_per_node=3, num_items=5)
    # walk_id = round * num_items + (start - 1)
    for walk_id, path in walks.items():
        assert walk_id % 5 == path[0] - 1 and 0 <= walk_id // 5 < 3


def test_transition_frequencies_match_weights(spark):
    # from node 1: to 2 with weight 1, to 3 with weight 3 -> P(3 | 1) = 0.75
    n = 20_000
    walks = walks_of(spark, [(1, 2, 1), (1, 3, 3)], walks_per_node=n, walk_length=2)
    share = sum(p[1] == 3 for p in walks.values()) / n
    # binomial sd = sqrt(.75 * .25 / 20000) = 0.0031; tolerance 0.015 is ~5 sd
    assert share == pytest.approx(0.75, abs=0.015)


def test_hub_with_many_neighbours_is_sampled_by_weight(spark):
    # a hub with 2,000 out-edges, weight k for neighbour k: E[next] = sum k^2 / sum k
    deg = 2000
    edges = [(1, k, k - 1) for k in range(2, deg + 2)]
    walks = walks_of(spark, edges, walks_per_node=4000, walk_length=2)
    nxt = [p[1] for p in walks.values()]
    ws = range(1, deg + 1)
    expected = sum((w + 1) * w for w in ws) / sum(ws)
    mean = sum(nxt) / len(nxt)
    # sd of one draw ~ 470; of the mean of 4000 ~ 7.5: tolerance 40 is > 5 sd
    assert mean == pytest.approx(expected, abs=40)


def test_same_seed_same_walks_whatever_the_partitioning(spark):
    one = walks_of(spark, GRAPH, partitions=1)
    eight = walks_of(spark, GRAPH, partitions=8)
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        seven = walks_of(spark, GRAPH, partitions=3)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "4")
    assert one == eight == seven


def test_other_seed_other_walks(spark):
    assert walks_of(spark, GRAPH, seed=1) != walks_of(spark, GRAPH, seed=2)


# Spark's xxhash64 (XXH64 of each 8-byte long, chained through the seed, first seed 42), written
# out so that the walks can be checked against the documented rule by a plain Python walker.
_M = (1 << 64) - 1
_P1, _P2, _P3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_P4, _P5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M


def _hash_long(value, seed):
    h = (seed + _P5 + 8) & _M
    k = _rotl((value & _M) * _P2 & _M, 31) * _P1 & _M
    h = (_rotl(h ^ k, 27) * _P1 + _P4) & _M
    h = (h ^ (h >> 33)) * _P2 & _M
    h = (h ^ (h >> 29)) * _P3 & _M
    return h ^ (h >> 32)  # unsigned


def _xxhash64(*values):
    h = 42
    for v in values:
        h = _hash_long(v, h)
    return h


def reference_walks(edges, *, walks_per_node, walk_length, seed, num_items):
    """The walks by the module's rule, one walker at a time in Python."""
    out = {}
    nbrs = {}
    for s, d, w in sorted(edges):
        nbrs.setdefault(s, []).append((d, w))
    tables = {}
    for s, row in nbrs.items():
        prob, alias = alias_table([w for _, w in row])
        tables[s] = ([d for d, _ in row], prob, alias)
    for r in range(walks_per_node):
        for start in nbrs:
            walk_id = r * num_items + start - 1
            path = [start]
            for step in range(1, walk_length):
                if path[-1] not in tables:
                    break
                dst, prob, alias = tables[path[-1]]
                h0 = _xxhash64(seed, walk_id, step, 0)
                k = (h0 - (h0 >> 63 << 64)) % len(dst)  # pmod of the signed long
                u = (_xxhash64(seed, walk_id, step, 1) >> 11) * 2.0**-53
                path.append(dst[k] if u < prob[k] else dst[alias[k]])
            out[walk_id] = path
    return out


# walk lengths with an odd and an even last step (the last step is always written, the others
# every other one), and walks without a step
@pytest.mark.parametrize("walk_length", [7, 8, 2, 1])
def test_walks_follow_the_documented_rule_exactly(spark, walk_length):
    # sinks (every fifth node), short walks, hubs: every walk equals the plain Python walker's,
    # node for node, whichever step it stopped at
    rng = random.Random(4)
    edges = {(rng.randint(1, 40), rng.randint(1, 40)) for _ in range(300)}
    edges = [(s, d, rng.randint(1, 9)) for s, d in sorted(edges) if s != d and s % 5]
    kw = dict(walks_per_node=3, walk_length=walk_length, seed=13, num_items=40)
    got = walks_of(spark, edges, **kw)
    expected = reference_walks(edges, **kw)
    if walk_length > 2:  # walks that end at a written step and at one that is not
        ended = {len(p) - 1 for p in expected.values() if len(p) < walk_length}
        assert {s % 2 for s in ended} == {0, 1}, ended
    assert got == expected


@contextlib.contextmanager
def planned_as_outside_the_tests(spark, tmp_path):
    """Adaptive query execution on (the default outside the tests), no broadcast joins (the
    walkers are large in a real run), a checkpoint directory."""
    spark.sparkContext.setCheckpointDir(str(tmp_path / "checkpoints"))
    settings = {"spark.sql.adaptive.enabled": "true", "spark.sql.autoBroadcastJoinThreshold": "-1"}
    before = {k: spark.conf.get(k) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            spark.conf.set(k, v)


@pytest.mark.parametrize("share", [None, 100.0])
def test_a_step_shuffles_and_sorts_the_walkers_only(spark, tmp_path, share):
    # the adjacency keeps its hash partitioning and order through the checkpoint, also under
    # adaptive query execution; also when hot nodes were looked for and none was found
    with planned_as_outside_the_tests(spark, tmp_path):
        built = build_adjacency(spark.createDataFrame(GRAPH, EDGE_SCHEMA), 3)
        adjacency = prepare_adjacency(built, 3, hot_node_share=share)
        assert "key" not in adjacency.columns
        step = walk_step(start_walkers(adjacency, 2, 5), adjacency, seed=1, step=1)
        plan = step._jdf.queryExecution().executedPlan().toString()
        assert "SortMergeJoin" in plan
        assert plan.count("Exchange hashpartitioning") == 1, plan  # the walkers'
        assert "Exchange hashpartitioning(node" in plan and "Sort [src" not in plan, plan
        assert sorted(step.columns) == ["node", "prev", "walk_id"] and step.count() == 8
        # the next step: the walkers exchanged are (walk_id, node), without the prev they
        # carry out of the join
        two = walk_step(step, adjacency, seed=1, step=2)
        plan = two._jdf.queryExecution().executedPlan().toString().splitlines()
        exchanged = [plan[i + 1] for i, line in enumerate(plan) if "Exchange hash" in line]
        assert len(exchanged) == 2 and all("prev" not in line for line in exchanged), plan
        going = step.filter("node != 5").count()  # 5 has no out-edge
        assert two.count() == going and two.filter("node IS NULL").count() == 0
        kept = walk_step(step, adjacency, seed=1, step=2, keep_ended=True)
        plan = kept._jdf.queryExecution().executedPlan().toString()
        assert "SortMergeJoin" in plan and "LeftOuter" in plan, plan
        assert plan.count("Exchange hashpartitioning") == 2 and "Sort [src" not in plan, plan
        assert kept.count() == 8 and kept.filter("node IS NULL").count() == 8 - going
        adjacency.unpersist()


def test_walks_stop_when_no_walker_is_left(spark, tmp_path):
    # a chain 1 -> 2 -> 3: every walker is stuck after two steps; later steps are not run
    walks = walks_of(spark, [(1, 2, 1), (2, 3, 1)], walks_per_node=2, walk_length=6, num_items=3)
    assert walks == {0: [1, 2, 3], 3: [1, 2, 3], 1: [2, 3], 4: [2, 3]}


# A hub: every other node sends most of its weight to node 1.
HUB_GRAPH = (
    [(i, 1, 8) for i in range(2, 41)]
    + [(i, i + 1, 1) for i in range(2, 40)]
    + [(1, j, 1) for j in range(2, 41, 3)]
)


def walks_with_split(spark, tmp_path, edges, *, share, partitions=4, walks_per_node=6):
    from eges.pipeline.walks import walk_steps

    spark.sparkContext.setCheckpointDir(str(tmp_path / "checkpoints"))
    built = build_adjacency(spark.createDataFrame(edges, EDGE_SCHEMA), partitions)
    adjacency = prepare_adjacency(built, partitions, hot_node_share=share)
    try:
        rows = walk_steps(
            adjacency,
            walks_per_node=walks_per_node,
            walk_length=7,
            seed=5,
            num_items=max(max(e[0], e[1]) for e in edges),
            steps_dir=tempfile.mkdtemp(dir=tmp_path) + "/steps",
        )
        walks = {r.walk_id: list(r["items"]) for r in assemble(rows, 7).collect()}
        return walks, adjacency.columns
    finally:
        adjacency.unpersist()


def test_hot_nodes_are_the_ones_most_walkers_reach(spark):
    from eges.pipeline.walks import hot_nodes

    built = build_adjacency(spark.createDataFrame(HUB_GRAPH, EDGE_SCHEMA), 4)
    # 40 nodes with out-edges, 4 partitions: 10 walkers per partition and walker started per
    # node. Node 1 gets 8/9 of the flow of 38 nodes and 8/8 of node 40's: r ≈ 34.8
    [(node, load, copies)] = hot_nodes(built, 4, 0.5)
    assert (node, copies) == (1, 4) and load == pytest.approx((38 * 8 / 9 + 1) / 10)
    assert [(h[0], h[2]) for h in hot_nodes(built, 4, 1.5)] == [(1, 3)]  # ceil(3.48 / 1.5)
    assert hot_nodes(built, 4, 4.0) == []
    # a hub without out-edges has nothing to copy (its walkers stop there)
    sink = [(i, 99, 8) for i in range(2, 41)] + [(i, i + 1, 1) for i in range(2, 40)]
    assert hot_nodes(build_adjacency(spark.createDataFrame(sink, EDGE_SCHEMA), 4), 4, 0.5) == []
    # a hub that sends all its walkers on to node 2, which sends them to node 3: followed
    # for two steps, node 2 is hot; for three, node 3 too
    funnel = [(i, 1, 8) for i in range(3, 41)] + [(i, i + 1, 1) for i in range(2, 40)]
    built = build_adjacency(spark.createDataFrame([*funnel, (1, 2, 1)], EDGE_SCHEMA), 4)
    assert [(h[0], h[2]) for h in hot_nodes(built, 4, 0.5, steps=1)] == [(1, 4)]
    assert [(h[0], h[2]) for h in hot_nodes(built, 4, 0.5, steps=2)] == [(1, 4), (2, 4)]
    assert [(h[0], h[2]) for h in hot_nodes(built, 4, 0.5)] == [(1, 4), (2, 4), (3, 4)]


def test_copies_go_to_the_least_loaded_partitions(spark):
    from eges.pipeline.walks import place_copies

    hot = [(10, 3.0, 3), (11, 1.0, 2), (12, 0.6, 2)]
    keys = place_copies(spark, hot, 4)
    assert sorted(keys) == [10, 11, 12] and [len(keys[n]) for n in (10, 11, 12)] == [3, 2, 2]
    assert all(keys[n][0] == n and min(keys[n][1:]) < 0 for n in keys)
    flat = [k for ks in keys.values() for k in ks]
    assert len(set(flat)) == len(flat)
    part = dict(
        spark.createDataFrame([(k,) for k in flat], "k bigint")
        .select("k", F.pmod(F.hash("k"), F.lit(4)))
        .collect()
    )
    # a node's copies are in different partitions; with 4 partitions and these loads, every
    # partition ends with at most three of the seven keys
    assert all(len({part[k] for k in keys[n]}) == len(keys[n]) for n in keys)
    per_partition = [sum(part[k] == p for k in flat) for p in range(4)]
    assert max(per_partition) <= 3, per_partition


@pytest.mark.parametrize("partitions", [3, 4])
def test_splitting_hot_nodes_leaves_the_walks_unchanged(spark, tmp_path, partitions):
    plain, columns = walks_with_split(spark, tmp_path, HUB_GRAPH, share=None, partitions=partitions)
    assert "key" not in columns
    split, columns = walks_with_split(spark, tmp_path, HUB_GRAPH, share=0.3, partitions=partitions)
    assert "key" in columns
    assert split == plain and len(plain) == 40 * 6
    # with sinks that the hub sends walkers to: the walks stop there as the rule says
    sinks = [*HUB_GRAPH, (1, 41, 2), (5, 41, 3), (40, 42, 1)]
    split, _ = walks_with_split(spark, tmp_path, sinks, share=0.3, partitions=partitions)
    expected = reference_walks(sinks, walks_per_node=6, walk_length=7, seed=5, num_items=42)
    assert split == expected and any(p[-1] in (41, 42) and len(p) < 7 for p in split.values())
    # the small graph too, with every node with any flow split
    assert (
        walks_with_split(spark, tmp_path, GRAPH, share=0.01)[0]
        == walks_with_split(spark, tmp_path, GRAPH, share=None)[0]
    )


def test_a_hot_nodes_walkers_are_spread_over_tasks(spark, tmp_path):
    from eges.pipeline.walks import count_nodes, key_walkers, split_nodes

    with planned_as_outside_the_tests(spark, tmp_path):
        built = build_adjacency(spark.createDataFrame(HUB_GRAPH, EDGE_SCHEMA), 4)
        adjacency = prepare_adjacency(built, 4, hot_node_share=0.5)
        split = split_nodes(adjacency)
        [(node, keys)] = [(r.node, r["keys"]) for r in split.collect()]
        assert node == 1 and keys[0] == 1 and len(keys) == 4 and min(keys[1:]) < 0
        # 360 walkers at the hub, 40 at node 2 (a node not known to the plan)
        walkers = spark.range(400).select(
            F.col("id").alias("walk_id"),
            F.when(F.col("id") % 10 == 0, 2).otherwise(1).cast("long").alias("node"),
        )
        step = walk_step(key_walkers(walkers, split, seed=1, step=2), adjacency, seed=1, step=2)
        plan = step._jdf.queryExecution().executedPlan().toString()
        # only the walkers are exchanged, by their copy's key; the adjacency is neither shuffled
        # nor sorted
        assert plan.count("Exchange hashpartitioning") == 1, plan
        assert "Exchange hashpartitioning(key#" in plan and plan.count("Sort [") == 1, plan

        def tasks(df):  # of the hub's walkers, how many each task moved
            hub = df.withColumn("p", F.spark_partition_id()).filter(F.col("walk_id") % 10 != 0)
            return sorted(r["count"] for r in hub.groupBy("p").count().collect())

        spread = tasks(step)
        # one copy per partition: each task draws about a quarter of the hub's walkers
        assert len(spread) == 4 and sum(spread) == 360 and spread[0] > 360 / 4 / 2, spread
        # not split, the hub's walkers all meet in one task
        plain = prepare_adjacency(built)
        assert tasks(walk_step(walkers, plain, seed=1, step=2)) == [360]
        plain.unpersist()
        # the first step: the walkers start where their node's first copy lies; only they are
        # exchanged (here because broadcasts are off for the rounds' cross join), the adjacency
        # is not; a split node is counted once
        first = walk_step(start_walkers(adjacency, 2, 40), adjacency, seed=1, step=1)
        plan = first._jdf.queryExecution().executedPlan().toString()
        assert plan.count("Exchange hashpartitioning") <= 1 and plan.count("Sort [") <= 1, plan
        assert first.count() == 80 and count_nodes(adjacency) == 40 and adjacency.count() == 43
        adjacency.unpersist()


@pytest.mark.parametrize("adaptive", [False, True])
def test_a_step_table_is_written_with_its_walkers_still_going(spark, tmp_path, adaptive):
    from eges.pipeline.walks import STEP_SCHEMA, write_step

    spark.conf.set("spark.sql.adaptive.enabled", str(adaptive).lower())  # the job's: on
    try:
        path = str(tmp_path / "step=1")
        rows = spark.range(100).select(
            F.col("id").alias("walk_id"),
            F.col("id").alias("prev"),
            F.when(F.col("id") % 7 != 0, F.col("id")).alias("node"),  # 15 walks ended
        )
        assert write_step(rows.repartition(3), path) == 85
        back = spark.read.schema(STEP_SCHEMA).orc(path)
        assert sorted(back.collect()) == sorted(rows.collect())
        # a second table counts its own walkers, not the first one's too
        assert write_step(rows.filter("walk_id < 50"), str(tmp_path / "step=3")) == 42
        # no walker left: 0, and an empty table that reads back
        assert write_step(rows.filter("walk_id < 0"), str(tmp_path / "step=5")) == 0
        assert spark.read.schema(STEP_SCHEMA).orc(str(tmp_path / "step=5")).count() == 0
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", "false")
