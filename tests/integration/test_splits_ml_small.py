"""The hold-out splits on ml-latest-small never leak held-out data into training: checked on the
actual training graph and walks against an independent pandas reference."""

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eges import schema
from eges.config import load_config
from eges.pipeline.job import run_walk_job
from tests.integration.test_ml_latest_small import reference_edges

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ratings(ml_small):
    return pd.read_csv(ml_small / "ratings.csv", dtype={"movieId": str, "userId": str})


@pytest.fixture(scope="module")
def split_run(spark, ml_small, tmp_path_factory):
    @functools.cache  # one walk job per kind for the module
    def run(kind: str, holdout: str = "test"):
        out = tmp_path_factory.mktemp(f"split-{kind}-{holdout}") / "walks"
        cfg = load_config(
            REPO / "conf" / "ml-latest-small.yaml",
            [
                f"data.path={ml_small}",
                f"output.path={out}",
                "output.num_shards=2",
                "walks.walks_per_node=2",
                f"split.kind={kind}",
                f"split.holdout={holdout}",
            ],
        )
        manifest = run_walk_job(spark, cfg)
        fields = [f["name"] for f in manifest["side_info_fields"]]
        t = {
            "items": schema.read_table(
                out / "items", schema.item_schema(fields, names=True)
            ).to_pandas(),
            "edges": schema.read_table(out / "edges", schema.EDGE_SCHEMA).to_pandas(),
            "walks": schema.read_table(out / "walks", schema.WALK_SCHEMA).to_pandas(),
        }
        vocab = schema.read_table(out / "vocab" / "tags", schema.VOCAB_SCHEMA).to_pandas()
        tag_of = dict(zip(vocab["index"], vocab["value"]))
        t["tags"] = {
            i: {tag_of[v] for v in vs} for i, vs in zip(t["items"].item_id, t["items"].tags)
        }
        for name in schema.EVAL_TABLES[kind]:
            t[name] = schema.read_table(out / "eval" / name, schema.EDGE_SCHEMA).to_pandas()
        return manifest, t, cfg

    return run


@pytest.fixture(scope="module")
def tags(ml_small):
    """tags.csv as the walk job reads it: lower-cased, stripped, empty tags dropped."""
    df = pd.read_csv(ml_small / "tags.csv", dtype={"movieId": str, "tag": str})
    df["tag"] = df["tag"].str.strip().str.lower()
    return df[df["tag"].fillna("") != ""]


def tag_sets(tags: pd.DataFrame) -> dict[str, set[str]]:
    return {m: set(g) for m, g in tags.groupby("movieId")["tag"]}


def pairs(df: pd.DataFrame) -> set:
    return {(min(s, d), max(s, d)) for s, d in zip(df["src"], df["dst"])}


def same_edges(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    got = got[["src", "dst", "weight"]].astype("int64").sort_values(["src", "dst"])
    ref = ref[["src", "dst", "weight"]].astype("int64").sort_values(["src", "dst"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), ref.reset_index(drop=True))


def walked(t) -> set:
    return set(np.concatenate(t["walks"]["items"].to_numpy()).tolist())


def test_edge_split_hides_a_third_of_the_pairs_from_training(split_run, ratings):
    manifest, t, cfg = split_run("edges")
    full = reference_edges(ratings, t["items"], cfg.sessions.session_gap)
    hidden = pairs(t["hidden_edges"])
    assert len(hidden) == len(t["hidden_edges"]) == round(len(pairs(full)) / 3)
    assert not hidden & pairs(t["edges"])  # no direction of a hidden pair is trained on
    assert hidden | pairs(t["edges"]) == pairs(full)
    kept = full[[(min(s, d), max(s, d)) not in hidden for s, d in zip(full.src, full.dst)]]
    same_edges(t["edges"], kept)
    non = pairs(t["non_edges"])
    assert len(non) == len(hidden) and not non & pairs(full)
    for walk in t["walks"]["items"]:  # walks only step along training edges
        assert not {(min(a, b), max(a, b)) for a, b in zip(walk[:-1], walk[1:])} & hidden
    matched = pairs(t["non_edges_matched"])
    assert len(matched) == len(hidden) and not matched & pairs(full)
    tables = {"hidden_edges": len(hidden), "non_edges": len(non), "non_edges_matched": len(hidden)}
    assert manifest["split"]["tables"] == tables
    # the matched negatives' ends are as connected as the hidden pairs' ends; uniform ones not
    degree = pd.Series([n for p in pairs(full) for n in p]).value_counts()

    def mean_degree(ps):
        return np.mean([degree.get(n, 0) for p in ps for n in p])

    assert mean_degree(matched) == pytest.approx(mean_degree(hidden), rel=0.1)
    assert mean_degree(non) < mean_degree(hidden) / 2


def test_item_split_removes_every_event_of_the_heldout_items(split_run, ratings):
    manifest, t, cfg = split_run("items")
    items = t["items"]
    rated = set(ratings["movieId"])
    heldout = items[(items["count"] == 0) & items["item_id"].isin(rated)]
    assert len(heldout) == manifest["split"]["heldout_items"] == round(0.1 * (len(rated) - 1))
    held_idx = set(heldout["item_idx"])
    assert not held_idx & (set(t["edges"]["src"]) | set(t["edges"]["dst"]))
    assert not held_idx & walked(t)
    train_ratings = ratings[~ratings["movieId"].isin(set(heldout["item_id"]))]
    same_edges(t["edges"], reference_edges(train_ratings, items, cfg.sessions.session_gap))
    # ground truth: neighbours in the full graph, both directions, never another held-out item
    full = reference_edges(ratings, items, cfg.sessions.session_gap)
    both = pd.concat([full, full.rename(columns={"src": "dst", "dst": "src"})])
    ref = both[both["src"].isin(held_idx) & ~both["dst"].isin(held_idx)]
    ref = ref.groupby(["src", "dst"], as_index=False)["weight"].sum()
    same_edges(t["heldout_neighbours"], ref)


def test_time_split_trains_on_the_past_only(split_run, ratings):
    manifest, t, cfg = split_run("time")
    cutoff = manifest["split"]["cutoff_ts"]
    assert (ratings["timestamp"] < cutoff).mean() == pytest.approx(0.8, abs=0.01)
    past, later = ratings[ratings["timestamp"] < cutoff], ratings[ratings["timestamp"] >= cutoff]
    gap = cfg.sessions.session_gap
    same_edges(t["edges"], reference_edges(past, t["items"], gap))
    nodes = set(t["edges"]["src"]) | set(t["edges"]["dst"])
    ref = reference_edges(later, t["items"], gap)
    same_edges(t["test_transitions"], ref[ref["src"].isin(nodes) & ref["dst"].isin(nodes)])


def test_item_split_leaves_heldout_items_their_editorial_fields_only(split_run, ratings, tags):
    # a brand-new item has genres and a year, but no tags yet: users write those after watching
    manifest, t, _ = split_run("items")
    assert manifest["split"]["cold_fields"] == "editorial"
    assert manifest["split"]["removed_fields"] == ["tags"]
    items = t["items"]
    heldout = items[(items["count"] == 0) & items["item_id"].isin(set(ratings["movieId"]))]
    written = tag_sets(tags)
    assert sum(bool(written.get(m)) for m in heldout["item_id"]) > 50  # they had tags to lose
    for item_id in items["item_id"]:
        expected = set() if item_id in set(heldout["item_id"]) else written.get(item_id, set())
        assert t["tags"][item_id] == expected, item_id
    # every held-out item keeps an editorial value to be embedded from
    assert all(len(g) + len(y) > 0 for g, y in zip(heldout["genres"], heldout["year"]))


def test_time_split_keeps_only_the_tags_written_before_the_cutoff(split_run, tags):
    manifest, t, _ = split_run("time")
    cutoff = manifest["split"]["cutoff_ts"]
    before, after = tags[tags["timestamp"] < cutoff], tags[tags["timestamp"] >= cutoff]
    assert len(after) > 1000  # ml-latest-small: a third of the tags come after the cutoff
    known = tag_sets(before)
    assert {i: s for i, s in t["tags"].items() if s} == known
    only_later = set(after["tag"]) - set(before["tag"])
    assert only_later and not only_later & set().union(*t["tags"].values())


def test_validation_never_sees_the_test_pairs(split_run, ratings):
    test_manifest, test, _ = split_run("edges")
    manifest, valid, cfg = split_run("edges", "validation")
    full = pairs(reference_edges(ratings, valid["items"], cfg.sessions.session_gap))
    # same items, same index: the pairs of both runs are comparable
    assert valid["items"]["item_id"].tolist() == test["items"]["item_id"].tolist()
    test_pairs, valid_pairs = pairs(test["hidden_edges"]), pairs(valid["hidden_edges"])
    assert manifest["split"]["test_pairs"] == len(test_pairs)
    assert not valid_pairs & test_pairs  # disjoint hold-outs
    assert len(valid_pairs) == round((len(full) - len(test_pairs)) / 3)
    assert not test_pairs & pairs(valid["edges"])  # the test pairs are gone from training
    assert valid_pairs | test_pairs | pairs(valid["edges"]) == full
    assert not pairs(valid["non_edges"]) & full


def test_validation_never_sees_the_test_items(split_run, ratings, tags):
    _, test, _ = split_run("items")
    manifest, valid, cfg = split_run("items", "validation")
    items = test["items"]
    test_items = set(
        items[(items["count"] == 0) & items["item_id"].isin(set(ratings["movieId"]))].item_id
    )
    assert manifest["split"]["test_items"] == len(test_items)
    assert not test_items & set(valid["items"]["item_id"])  # not even in the catalogue
    v = valid["items"]
    valid_items = set(v[(v["count"] == 0) & v["item_id"].isin(set(ratings["movieId"]))].item_id)
    assert len(valid_items) == manifest["split"]["heldout_items"] > 0
    assert not valid_items & test_items
    rest = ratings[~ratings["movieId"].isin(test_items | valid_items)]
    same_edges(valid["edges"], reference_edges(rest, v, cfg.sessions.session_gap))
    assert all(not valid["tags"][i] for i in valid_items)  # editorial fields only


def test_validation_period_comes_before_the_test_period(split_run, ratings, tags):
    test_manifest, _, _ = split_run("time")
    manifest, valid, cfg = split_run("time", "validation")
    test_cutoff, cutoff = manifest["split"]["test_cutoff_ts"], manifest["split"]["cutoff_ts"]
    assert test_cutoff == test_manifest["split"]["cutoff_ts"]
    assert (ratings["timestamp"] < cutoff).mean() == pytest.approx(0.6, abs=0.01)
    gap = cfg.sessions.session_gap
    past = ratings[ratings["timestamp"] < cutoff]
    same_edges(valid["edges"], reference_edges(past, valid["items"], gap))
    period = ratings[(ratings["timestamp"] >= cutoff) & (ratings["timestamp"] < test_cutoff)]
    nodes = set(valid["edges"]["src"]) | set(valid["edges"]["dst"])
    ref = reference_edges(period, valid["items"], gap)
    same_edges(valid["test_transitions"], ref[ref["src"].isin(nodes) & ref["dst"].isin(nodes)])
    assert {i: s for i, s in valid["tags"].items() if s} == tag_sets(
        tags[tags["timestamp"] < cutoff]
    )
