"""Sessions and the weighted item graph on hand-made events (paper §2)."""

import numpy as np
import pytest
from pyspark.testing import assertDataFrameEqual

from eges.alias import alias_table
from eges.config import SessionsConfig
from eges.pipeline.graph import build_adjacency, build_edges
from eges.pipeline.ingest import split_drops
from eges.pipeline.sessions import filter_events, sessionize

EVENT_SCHEMA = "user_id string, item_idx int, ts double"


def edges_of(spark, rows, gap=3600):
    events = spark.createDataFrame(rows, EVENT_SCHEMA)
    return build_edges(sessionize(events, gap))


def test_consecutive_pairs_counted_over_users(spark):
    rows = [
        ("u1", 1, 0.0),
        ("u1", 2, 10.0),
        ("u1", 3, 20.0),
        ("u2", 1, 5.0),
        ("u2", 2, 6.0),
        ("u3", 3, 0.0),
        ("u3", 2, 1.0),
    ]
    expected = [(1, 2, 2), (2, 3, 1), (3, 2, 1)]
    assertDataFrameEqual(
        edges_of(spark, rows), spark.createDataFrame(expected, "src long, dst long, weight long")
    )


def test_edges_are_directed_not_first_to_all(spark):
    # one user, a->b->c: only a->b and b->c, never a->c (the "first item -> all others" bug)
    got = {
        tuple(r) for r in edges_of(spark, [("u", 1, 0.0), ("u", 2, 1.0), ("u", 3, 2.0)]).collect()
    }
    assert got == {(1, 2, 1), (2, 3, 1)}


def test_session_split_strictly_above_the_gap(spark):
    rows = [
        ("u", 1, 0.0),
        ("u", 2, 3600.0),  # gap == 3600: same session
        ("u", 3, 7201.0),  # gap 3601 > 3600: new session, no 2->3
        ("u", 4, 7202.0),
    ]
    got = {(r.src, r.dst) for r in edges_of(spark, rows).collect()}
    assert got == {(1, 2), (3, 4)}
    sessions = sessionize(spark.createDataFrame(rows, EVENT_SCHEMA), 3600)
    assert sessions.filter("new_session").count() == 2


def test_configurable_gap(spark):
    rows = [("u", 1, 0.0), ("u", 2, 100.0), ("u", 3, 150.0)]
    assert {(r.src, r.dst) for r in edges_of(spark, rows, gap=60).collect()} == {(2, 3)}


def test_ties_ordered_by_item_index_and_input_order_irrelevant(spark):
    rows = [("u", 3, 5.0), ("u", 1, 5.0), ("u", 2, 5.0), ("u", 4, 6.0)]
    got = {(r.src, r.dst) for r in edges_of(spark, rows).collect()}
    assert got == {(1, 2), (2, 3), (3, 4)}
    shuffled = {(r.src, r.dst) for r in edges_of(spark, list(reversed(rows))).collect()}
    assert shuffled == got


def test_consecutive_repeats_collapse_but_returns_count(spark):
    rows = [
        ("u", 1, 0.0),
        ("u", 1, 1.0),
        ("u", 1, 2.0),
        ("u", 2, 3.0),
        ("u", 2, 4.0),
        ("u", 1, 5.0),
    ]
    got = sorted(tuple(r) for r in edges_of(spark, rows).collect())
    assert got == [(1, 2, 1), (2, 1, 1)]


def test_filters_tag_spam_users_and_rare_items(spark):
    events = spark.createDataFrame(
        [("spam", "a", float(t)) for t in range(5)]
        + [
            ("u1", "a", 0.0),
            ("u1", "b", 1.0),
            ("u2", "a", 0.0),
            ("u2", "c", 1.0),
            ("u3", "b", 0.0),
        ],
        "user_id string, item_id string, ts double",
    )
    cfg = SessionsConfig(max_events_per_user=4, min_item_count=2)
    kept, dropped, total = split_drops(filter_events(events, cfg))
    assert total == 10
    assert dropped == {
        "user with more than 4 events (sessions.max_events_per_user)": 5,
        "item with fewer than 2 events (sessions.min_item_count)": 1,  # c, after spam removal
    }
    assert sorted((r.user_id, r.item_id) for r in kept.collect()) == [
        ("u1", "a"),
        ("u1", "b"),
        ("u2", "a"),
        ("u3", "b"),
    ]


def test_filters_off_by_default(spark):
    events = spark.createDataFrame([("u", "a", 0.0)], "user_id string, item_id string, ts double")
    kept, dropped, _ = split_drops(filter_events(events, SessionsConfig()))
    assert kept.count() == 1 and not dropped


def implied_distribution(prob, alias):
    n = len(prob)
    p = np.zeros(n)
    for k in range(n):
        p[k] += prob[k] / n
        p[alias[k]] += (1 - prob[k]) / n
    return p


@pytest.mark.parametrize("weights", [[1], [1, 3], [5, 5, 5], [1, 2, 3, 4, 100], list(range(1, 50))])
def test_alias_table_reproduces_the_weights_exactly(weights):
    prob, alias = alias_table(np.array(weights))
    w = np.array(weights, dtype=float)
    np.testing.assert_allclose(implied_distribution(prob, alias), w / w.sum(), atol=1e-12)
    assert alias.dtype == np.int32 and ((0 <= alias) & (alias < len(w))).all()


def test_adjacency_rows_sorted_with_valid_alias_tables(spark):
    edges = spark.createDataFrame(
        [(1, 9, 1), (1, 3, 3), (1, 5, 6), (2, 1, 7)], "src int, dst int, weight long"
    )
    rows = {r.src: r for r in build_adjacency(edges, 3).collect()}
    assert rows[1].dst == [3, 5, 9] and rows[1].weight == [3, 6, 1]
    np.testing.assert_allclose(
        implied_distribution(rows[1].prob, rows[1].alias), np.array([3, 6, 1]) / 10, atol=1e-12
    )
    assert rows[2].dst == [1] and rows[2].prob == [1.0]
