"""Weighted random walks: validity, transition frequencies, determinism (paper §2; walks
identical for any partitioning)."""

import pytest

from eges.pipeline.graph import build_adjacency
from eges.pipeline.walks import random_walks

EDGE_SCHEMA = "src int, dst int, weight long"


def walks_of(
    spark,
    edges,
    *,
    walks_per_node=5,
    walk_length=6,
    seed=7,
    partitions=2,
    checkpoint_every=2,
    num_items=None,
):
    df = spark.createDataFrame(edges, EDGE_SCHEMA)
    n = num_items or max(max(e[0], e[1]) for e in edges)
    adjacency = build_adjacency(df, partitions).localCheckpoint()
    walks = random_walks(
        adjacency,
        walks_per_node=walks_per_node,
        walk_length=walk_length,
        seed=seed,
        num_items=n,
        checkpoint_every=checkpoint_every,
        checkpoint=lambda d, _s: d.localCheckpoint(),
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
    one = walks_of(spark, GRAPH, partitions=1, checkpoint_every=1)
    eight = walks_of(spark, GRAPH, partitions=8, checkpoint_every=4)
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        seven = walks_of(spark, GRAPH, partitions=3)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "4")
    assert one == eight == seven


def test_other_seed_other_walks(spark):
    assert walks_of(spark, GRAPH, seed=1) != walks_of(spark, GRAPH, seed=2)
