"""Hold-out splits on tiny inline data."""

import pytest

from eges import schema
from eges.config import load_config
from eges.pipeline.job import run_walk_job
from eges.pipeline.splits import (
    choose_heldout_items,
    heldout_transitions,
    hide_pairs,
    neighbour_truth,
    remove_pairs,
    sample_non_edges,
    time_cutoff,
    undirected_pairs,
)

EDGE = "src int, dst int, weight bigint"


def pairs_of(df):
    return {(r.src, r.dst) for r in df.collect()}


@pytest.fixture
def edges(spark):
    # a ring of 30 nodes both ways plus chords: 60 + 10 directed edges, 40 undirected pairs
    rows = [(i, i % 30 + 1, 1) for i in range(1, 31)] + [(i % 30 + 1, i, 2) for i in range(1, 31)]
    rows += [(i, i + 15, 1) for i in range(1, 11)]
    return spark.createDataFrame(rows, EDGE)


def test_hide_pairs_hides_whole_pairs_exactly(edges):
    hidden = hide_pairs(edges, 0.25, seed=3)
    assert hidden.count() == 10  # round(0.25 * 40)
    assert all(s < d for s, d in pairs_of(hidden))
    kept = remove_pairs(edges, hidden)
    kept_pairs = pairs_of(undirected_pairs(kept))
    assert not kept_pairs & pairs_of(hidden)  # neither direction of a hidden pair survives
    assert kept_pairs | pairs_of(hidden) == pairs_of(undirected_pairs(edges))
    assert (
        kept.count()
        + sum(1 for s, d in pairs_of(edges) if (min(s, d), max(s, d)) in pairs_of(hidden))
        == edges.count()
    )
    # weights of a hidden pair are summed over both directions
    w = {(r.src, r.dst): r.weight for r in hidden.collect()}
    assert all(v in (1, 3) for v in w.values())
    # seeded: same seed same pairs, another seed other pairs
    assert pairs_of(hide_pairs(edges, 0.25, seed=3)) == pairs_of(hidden)
    assert pairs_of(hide_pairs(edges, 0.25, seed=4)) != pairs_of(hidden)


def test_non_edges_are_distinct_unconnected_pairs(edges):
    non = sample_non_edges(edges, 50, seed=1)
    pairs = pairs_of(non)
    assert len(pairs) == non.count() == 50
    assert all(s < d for s, d in pairs)
    assert not pairs & pairs_of(undirected_pairs(edges))
    assert {r.weight for r in non.collect()} == {0}


def test_non_edges_fail_clearly_on_a_complete_graph(spark):
    full = spark.createDataFrame(
        [(i, j, 1) for i in range(1, 5) for j in range(1, 5) if i != j], EDGE
    )
    with pytest.raises(ValueError, match="too dense"):
        sample_non_edges(full, 3, seed=0)


@pytest.mark.parametrize("field", ["genres", "品牌.名 s"])  # any name: quoted in expressions
def test_heldout_items_have_events_and_side_info(spark, field):
    events = spark.createDataFrame(
        [("u", str(i), float(i)) for i in range(1, 41)] + [("u", "nosi", 99.0)],
        "user_id string, item_id string, ts double",
    )
    side = spark.createDataFrame(
        [(str(i), ["g"]) for i in range(1, 46)] + [("nosi", [])],
        f"item_id string, `{field}` array<string>",
    )
    held = {r.item_id for r in choose_heldout_items(events, side, 0.1, seed=0).collect()}
    assert len(held) == 4  # round(0.1 * 40 eligible): "nosi" (no side info) and 41..45 (no events)
    assert held <= {str(i) for i in range(1, 41)}


def test_neighbour_truth_uses_both_directions_and_skips_heldout(spark):
    full = spark.createDataFrame([(1, 2, 1), (3, 1, 2), (1, 4, 1), (4, 1, 5), (2, 3, 1)], EDGE)
    heldout = spark.createDataFrame([(1,), (4,)], "item_idx int")
    truth = {(r.src, r.dst): r.weight for r in neighbour_truth(full, heldout).collect()}
    assert truth == {(1, 2): 1, (1, 3): 2}  # 4 is held out itself; item 4 has no warm neighbour


def test_time_cutoff_and_transitions(spark):
    events = spark.createDataFrame(
        [("u", str(i), float(i)) for i in range(1, 11)], "user_id string, item_id string, ts double"
    )
    assert time_cutoff(events, 0.2) == 8.0  # the 80% quantile: 8 events before, 3 at or after
    later = spark.createDataFrame(
        [
            ("u", 1.0, 1, None, True),
            ("u", 2.0, 2, 1, False),
            ("u", 3.0, 9, 2, False),
            ("v", 1.0, 2, None, True),
            ("v", 5.0, 1, 2, False),
        ],
        "user_id string, ts double, item_idx int, prev_item int, new_session boolean",
    )
    train = spark.createDataFrame([(1, 2, 1), (2, 3, 1)], EDGE)
    got = {(r.src, r.dst): r.weight for r in heldout_transitions(later, train).collect()}
    assert got == {(1, 2): 1, (2, 1): 1}  # 2 -> 9 dropped: 9 is not in the training graph


def split_job(spark, root, events: list[tuple[str, str, int]], *settings: str) -> dict:
    """The walk job on a tiny generic log (items a, b, c, r with a brand each)."""
    (root / "events.csv").write_text(
        "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in events)
    )
    (root / "items.csv").write_text("item_id,brand\na,x\nb,x\nc,y\nr,y\n")
    out = root / "walks"
    cfg = load_config(
        None,
        [
            "data.format=generic",
            f"data.path={root}",
            "data.generic.side_info=[{name: brand}]",
            f"output.path={out}",
            "output.num_shards=1",
            "walks.walks_per_node=1",
            *settings,
        ],
    )
    manifest = run_walk_job(spark, cfg)
    items = schema.read_table(out / "items", schema.item_schema(["brand"])).to_pandas()
    manifest["item_counts"] = dict(zip(items["item_id"], items["count"]))
    manifest["item_ids"] = dict(zip(items["item_idx"], items["item_id"]))
    return manifest


def test_the_noise_filters_count_training_events_only(spark, tmp_path):
    before = [("u1", i, 100 + 10 * k) for k, i in enumerate("abcab")]
    before += [("spam", i, 200 + 10 * k) for k, i in enumerate("abcabcab")]  # 8 > 5: spam
    before += [("late", "b", 300), ("late", "c", 310)]  # 2 before, 14 after: not spam
    before += [("u2", "b", 400), ("u2", "r", 410)]  # r: 1 training event < 2
    after = [("u1", "a", 10_000), ("u1", "b", 10_010), ("spam", "c", 10_100)]
    after += [("spam", "a", 10_110)]
    after += [("late", "abc"[k % 3], 10_200 + 10 * k) for k in range(14)]
    after += [("u3", "ra"[k % 2], 10_400 + 10 * k) for k in range(5)]
    fraction = (len(after) - 0.5) / (len(before) + len(after))  # the quantile is 10_000
    m = split_job(
        spark,
        tmp_path,
        before + after,
        "split.kind=time",
        f"split.time_fraction={fraction}",
        "sessions.max_events_per_user=5",
        "sessions.min_item_count=2",
    )
    assert m["split"]["cutoff_ts"] == 10_000
    # counted over all events, "late" (16 events) would be dropped as spam and r (6) kept
    assert m["dropped"] == {
        "user with more than 5 events (sessions.max_events_per_user)": 8,
        "item with fewer than 2 events (sessions.min_item_count)": 1,
    }
    assert m["counts"]["events"] == 2 + 5 + 1  # late, u1, u2's b
    assert m["item_counts"]["r"] == 0
    # the held-out period keeps "late", and drops the user training found to be spam
    path = tmp_path / "walks" / "eval" / "test_transitions"
    rows = schema.read_table(path, schema.EDGE_SCHEMA).to_pylist()
    ids = m["item_ids"]
    got = {(ids[r["src"]], ids[r["dst"]]): r["weight"] for r in rows}
    assert got == {("a", "b"): 1 + 5, ("b", "c"): 4, ("c", "a"): 4}


@pytest.mark.parametrize(
    "settings, message",
    [
        (["data.user_fields=[nope]"], r"data.user_fields names \['nope'\], which the data"),
        (
            ["data.user_fields=[brand]", "split.kind=items"],
            "leaves a held-out item no side information",
        ),
    ],
)
def test_user_fields_that_cannot_work_are_refused(spark, tmp_path, settings, message):
    events = [("u1", i, 100 + 10 * k) for k, i in enumerate("abcabc")]
    with pytest.raises(ValueError, match=message):
        split_job(spark, tmp_path, events, *settings)


def test_cold_fields_all_keeps_a_heldout_items_user_fields(spark, tmp_path):
    events = [(f"u{u}", i, 100 + 10 * k) for u in range(3) for k, i in enumerate("abcr")]
    settings = ["data.user_fields=[brand]", "split.kind=items", "split.item_fraction=0.5"]
    m = split_job(spark, tmp_path, events, *settings, "split.cold_fields=all")
    assert m["split"]["removed_fields"] == [] and m["split"]["heldout_items"] == 2
    items = schema.read_table(tmp_path / "walks" / "items", schema.item_schema(["brand"]))
    assert all(items["brand"].to_pylist())  # every item, held out or not, has its brand
