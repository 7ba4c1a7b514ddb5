"""End to end on ../shared/data/ml-latest-small, checked against an independent pandas reference."""

from pathlib import Path

import pandas as pd
import pytest

from eges import schema
from eges.config import load_config
from eges.pipeline.job import run_walk_job

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(spark, ml_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml-latest-small") / "walks"
    cfg = load_config(
        REPO / "conf" / "ml-latest-small.yaml",
        [f"data.path={ml_small}", f"output.path={out}", "output.num_shards=4"],
    )
    manifest = run_walk_job(spark, cfg)
    return out, manifest, cfg


@pytest.fixture(scope="module")
def tables(run):
    out, manifest, _ = run
    fields = [f["name"] for f in manifest["side_info_fields"]]
    return {
        "items": schema.read_table(
            out / "items", schema.item_schema(fields, names=True)
        ).to_pandas(),
        "edges": schema.read_table(out / "edges", schema.EDGE_SCHEMA).to_pandas(),
        "walks": schema.read_table(out / "walks", schema.WALK_SCHEMA).to_pandas(),
        **{
            f"vocab/{f}": schema.read_table(out / "vocab" / f, schema.VOCAB_SCHEMA).to_pandas()
            for f in fields
        },
    }


def reference_edges(ratings: pd.DataFrame, items: pd.DataFrame, gap: int) -> pd.DataFrame:
    """The session graph (edge i→j when j follows i in a session, weight = count), computed
    with pandas independently of the Spark code."""
    ev = ratings.merge(items[["item_id", "item_idx"]], left_on="movieId", right_on="item_id")
    ev = ev.sort_values(["userId", "timestamp", "item_idx"], kind="stable")
    same_user = ev["userId"].eq(ev["userId"].shift())
    same_session = same_user & (ev["timestamp"] - ev["timestamp"].shift() <= gap)
    pairs = pd.DataFrame(
        {
            "src": ev["item_idx"].shift()[same_session].astype(int),
            "dst": ev["item_idx"][same_session],
        }
    )
    pairs = pairs[pairs["src"] != pairs["dst"]]
    return pairs.groupby(["src", "dst"]).size().rename("weight").reset_index()


def test_manifest_is_complete_and_consistent(run, tables):
    out, manifest, cfg = run
    assert schema.read_manifest(out) == manifest
    c = manifest["counts"]
    assert c["items"] == len(tables["items"])
    assert c["edges"] == len(tables["edges"])
    assert (
        c["walks"] == len(tables["walks"]) == c["nodes_with_out_edges"] * cfg.walks.walks_per_node
    )
    assert c["walk_steps"] == int((tables["walks"]["items"].map(len) - 1).sum())
    assert c["items_with_events"] + c["items_without_events"] == c["items"]
    assert c["rows_read"]["ratings.csv"] == c["events"] + sum(
        n for why, n in manifest["dropped"].items() if why.startswith("ratings.csv")
    )
    assert [f["name"] for f in manifest["side_info_fields"]] == ["genres", "year", "tags"]
    for f in manifest["side_info_fields"]:
        assert f["vocab_size"] == len(tables[f"vocab/{f['name']}"])
    assert load_config(out / schema.CONFIG_FILE).to_dict() == manifest["config"]
    # shards: as configured, similar sizes, in walk-id order
    shards = manifest["walks"]["files"]
    assert [s["path"] for s in shards] == [f"walks/shard-{i:05d}.parquet" for i in range(4)]
    rows = [s["rows"] for s in shards]
    assert max(rows) <= 1.2 * min(rows)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", "config.yaml", "items", "vocab", "edges", "walks"]
    )


def test_item_and_vocab_indices_are_dense(tables):
    items = tables["items"]
    assert sorted(items["item_idx"]) == list(range(1, len(items) + 1))
    assert items["item_id"].is_unique
    assert items["count"].is_monotonic_decreasing  # sorted by count desc
    for name in ("genres", "year", "tags"):
        vocab = tables[f"vocab/{name}"]
        assert sorted(vocab["index"]) == list(range(1, len(vocab) + 1))
        used = {i for arr in items[name] for i in arr}
        assert used == set(vocab["index"])  # every value used, 0 (padding) never


def test_graph_equals_independent_reference(ml_small, run, tables):
    _, _, cfg = run
    ratings = pd.read_csv(ml_small / "ratings.csv", dtype={"movieId": str, "userId": str})
    ref = reference_edges(ratings, tables["items"], cfg.sessions.session_gap)
    got = tables["edges"].astype("int64").sort_values(["src", "dst"]).reset_index(drop=True)
    ref = ref.astype("int64").sort_values(["src", "dst"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, ref)
    # every rated movie with a successor in some session is a node with out-edges
    assert set(got["src"]) == set(ref["src"])


def test_unrated_movies_are_items_with_side_info(ml_small, tables):
    movies = pd.read_csv(ml_small / "movies.csv", dtype={"movieId": str})
    ratings = pd.read_csv(ml_small / "ratings.csv", dtype={"movieId": str})
    unrated = set(movies["movieId"]) - set(ratings["movieId"])
    assert unrated
    items = tables["items"].set_index("item_id")
    genre_of = dict(zip(tables["vocab/genres"]["index"], tables["vocab/genres"]["value"]))
    for _, m in movies[movies["movieId"].isin(unrated)].iterrows():
        row = items.loc[m["movieId"]]
        assert row["count"] == 0
        expected = sorted(set(m["genres"].split("|")) - {"(no genres listed)"})
        assert sorted(genre_of[i] for i in row["genres"]) == expected


def test_every_walk_step_is_an_edge(run, tables):
    _, _, cfg = run
    edges = set(zip(tables["edges"]["src"], tables["edges"]["dst"]))
    sinks = set(tables["items"]["item_idx"]) - set(tables["edges"]["src"])
    lengths = tables["walks"]["items"].map(len)
    assert lengths.between(2, cfg.walks.walk_length).all()
    for path in tables["walks"]["items"]:
        assert all((a, b) in edges for a, b in zip(path[:-1], path[1:]))
        if len(path) < cfg.walks.walk_length:
            assert path[-1] in sinks
    assert set(tables["walks"]["items"].map(lambda p: p[0])) == {s for s, _ in edges}


def test_reader_refuses_a_directory_without_manifest(run, tmp_path):
    out, _, _ = run
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "walks").mkdir()
    with pytest.raises(schema.IncompleteOutputError, match="no manifest.json"):
        schema.read_manifest(copy)
