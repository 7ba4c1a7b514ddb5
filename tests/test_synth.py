"""The synthetic data generator: deterministic, the requested size, planted structure; and the
walk job on its output finds the communities."""

import dataclasses
import filecmp

import pandas as pd
import pytest

from eges.synth import SynthSpec, generate, main

SPEC = SynthSpec(items=1500, users=200, events=20_000, communities=30, seed=3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    counts = generate(out, SPEC, chunk_users=64)  # several chunks
    return out, counts


def test_deterministic_and_sized(synth, tmp_path):
    out, counts = synth
    generate(tmp_path, SPEC, chunk_users=64)
    for name in ("ratings.csv", "movies.csv", "tags.csv", "communities.csv"):
        assert filecmp.cmp(out / name, tmp_path / name, shallow=False), name
    ratings = pd.read_csv(out / "ratings.csv")
    assert len(ratings) == counts["events"]
    assert abs(len(ratings) - SPEC.events) <= 2 * SPEC.users  # floor per user, at least 2 each
    assert ratings["userId"].nunique() == SPEC.users
    assert ratings.groupby("userId").size().min() >= 2
    assert ratings["timestamp"].max() < 4102444800  # before 2100: nothing the ingest drops
    movies = pd.read_csv(out / "movies.csv")
    assert len(movies) == SPEC.items and movies["title"].str.match(r".* \(\d{4}\)$").all()


def test_sessions_stay_in_their_community(synth):
    out, _ = synth
    r = pd.read_csv(out / "ratings.csv")
    genres = pd.read_csv(out / "movies.csv").set_index("movieId")["genres"]
    same_user = r["userId"].eq(r["userId"].shift())
    in_session = same_user & (r["timestamp"] - r["timestamp"].shift() == 1)
    g = r["movieId"].map(genres)
    share = (g[in_session] == g.shift()[in_session]).mean()
    assert share > 0.8  # stay=0.9, plus communities that happen to share genres
    counts = r["movieId"].value_counts()
    assert counts.iloc[0] > 10 * counts.median()  # power-law popularity


def test_cli_rejects_bad_sizes(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--items", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--tag-noise", "1.5"]) == 2
    assert "--tag-noise must be between 0 and 1" in capsys.readouterr().err


def test_noise_loosens_the_side_information_and_keeps_the_communities(synth, tmp_path):
    """Noise of 0.5 redraws about half of the tags, genres and years at random; the planted
    communities (communities.csv) and everything else of the item table stay those of the same
    seed without noise."""
    out, _ = synth
    noisy = dataclasses.replace(SPEC, tag_noise=0.5, genre_noise=0.5, year_noise=0.5)
    generate(tmp_path, noisy, chunk_users=64)
    assert filecmp.cmp(out / "communities.csv", tmp_path / "communities.csv", shallow=False)
    communities = pd.read_csv(out / "communities.csv")["community"]
    movies = {d: pd.read_csv(d / "movies.csv") for d in (out, tmp_path)}
    tags = {d: pd.read_csv(d / "tags.csv")["tag"] for d in (out, tmp_path)}
    # without noise a community's items share their genres and their decade
    clean = movies[out].assign(community=communities, decade=movies[out]["title"].str[-5:-2])
    assert clean.groupby("community")["genres"].nunique().max() == 1
    assert clean.groupby("community")["decade"].nunique().max() == 1
    changed = {
        "genres": (movies[out]["genres"] != movies[tmp_path]["genres"]).mean(),
        "year": (movies[out]["title"] != movies[tmp_path]["title"]).mean(),
        "tags": (tags[out] != tags[tmp_path]).mean(),
    }
    # half redrawn, less the draws that hit the old value (1/171 genre pairs, 1/110 years,
    # about 1/30 of the tag pools' entries); 1,500 items: 3 sd is about 0.04
    for what, share in changed.items():
        assert 0.42 < share < 0.53, (what, share)


def test_walk_job_on_synthetic_data_finds_the_communities(spark, synth, tmp_path):
    from eges import schema
    from eges.config import load_config
    from eges.pipeline.job import run_walk_job

    out, _ = synth
    manifest = run_walk_job(
        spark,
        load_config(
            None,
            [
                f"data.path={out}",
                f"output.path={tmp_path / 'walks'}",
                "walks.walks_per_node=2",
                "output.num_shards=2",
            ],
        ),
    )
    assert manifest["dropped"] == {} and manifest["counts"]["events"] == len(
        pd.read_csv(out / "ratings.csv")
    )
    items = schema.read_table(tmp_path / "walks" / "items").to_pandas()
    genres = pd.read_csv(out / "movies.csv", dtype={"movieId": str}).set_index("movieId")["genres"]
    by_idx = dict(zip(items["item_idx"], items["item_id"].map(genres)))
    edges = schema.read_table(tmp_path / "walks" / "edges").to_pandas()
    same = edges["src"].map(by_idx) == edges["dst"].map(by_idx)
    assert (edges["weight"][same].sum() / edges["weight"].sum()) > 0.8
