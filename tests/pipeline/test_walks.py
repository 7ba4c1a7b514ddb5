"""Weighted random walks: validity, transition frequencies, determinism (paper §2; walks
identical for any partitioning)."""

import random
import tempfile

import pytest

from eges.alias import alias_table
from eges.pipeline.graph import build_adjacency
from eges.pipeline.walks import prepare_adjacency, random_walks, start_walkers, walk_step

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


def test_walks_follow_the_documented_rule_exactly(spark):
    # a sink (5), short walks, hubs: every walk equals the plain Python walker's, node for node
    rng = random.Random(4)
    edges = {(rng.randint(1, 40), rng.randint(1, 40)) for _ in range(300)}
    edges = [(s, d, rng.randint(1, 9)) for s, d in sorted(edges) if s != d and s % 5]
    kw = dict(walks_per_node=3, walk_length=7, seed=13, num_items=40)
    got = walks_of(spark, edges, **kw)
    expected = reference_walks(edges, **kw)
    assert any(len(p) < 7 for p in expected.values())
    assert got == expected


def test_a_step_shuffles_and_sorts_the_walkers_only(spark, tmp_path):
    # the adjacency keeps its hash partitioning and order through the checkpoint, also under
    # adaptive query execution (on by default outside the tests)
    spark.sparkContext.setCheckpointDir(str(tmp_path / "checkpoints"))
    settings = {"spark.sql.adaptive.enabled": "true", "spark.sql.autoBroadcastJoinThreshold": "-1"}
    before = {k: spark.conf.get(k) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)
    try:
        adjacency = prepare_adjacency(build_adjacency(spark.createDataFrame(GRAPH, EDGE_SCHEMA), 3))
        step = walk_step(start_walkers(adjacency, 2, 5), adjacency, seed=1, step=1)
        plan = step._jdf.queryExecution().executedPlan().toString()
        assert "SortMergeJoin" in plan
        assert plan.count("Exchange hashpartitioning") == 1, plan  # the walkers'
        assert "Exchange hashpartitioning(node" in plan and "Sort [src" not in plan, plan
        assert sorted(step.columns) == ["node", "walk_id"] and step.count() == 8
    finally:
        adjacency.unpersist()
        for k, v in before.items():
            spark.conf.set(k, v)


def test_walks_stop_when_no_walker_is_left(spark, tmp_path):
    # a chain 1 -> 2 -> 3: every walker is stuck after two steps; later steps are not run
    walks = walks_of(spark, [(1, 2, 1), (2, 3, 1)], walks_per_node=2, walk_length=6, num_items=3)
    assert walks == {0: [1, 2, 3], 3: [1, 2, 3], 1: [2, 3], 4: [2, 3]}
