"""``eges embed`` and the neighbour table on a real tiny run (the trainer on a synthetic walk
output, no Spark): values read as the walk job reads them, the input file's encoding,
duplicate and catalogue ids, the output file, and items without usable side information."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eges import schema
from eges.config import Config, TrainConfig
from eges.serving.embed import main as embed_main
from tests.train.walkdir import GENRES, make_complete_walk_dir

WALKS, COLD = 40, 3
# the last cold item's only values are a genre no walked item carries and no year: no side
# value of it was ever trained
UNUSABLE = f"m{WALKS + COLD}"


def make_walk_dir(root: Path) -> Path:
    """make_complete_walk_dir's output, with ``year`` a numeric field (width 1) and item
    :data:`UNUSABLE` carrying only the genre ``Western``, which no walked item has."""
    walk_dir = make_complete_walk_dir(root, WALKS, COLD)
    part = walk_dir / schema.ITEMS_DIR / "part-00000.parquet"
    items = pq.read_table(part).to_pylist()
    items[-1]["genre"], items[-1]["year"] = [len(GENRES) + 1], []
    pq.write_table(pa.Table.from_pylist(items, pq.read_schema(part)), part)
    vocab = walk_dir / schema.VOCAB_DIR / "genre" / "part-00000.parquet"
    values = GENRES + ["Western"]
    pq.write_table(
        pa.table(
            {
                "value": pa.array(values),
                "index": pa.array(range(1, len(values) + 1), pa.int32()),
                "count": pa.array([1] * len(values), pa.int64()),
            }
        ),
        vocab,
    )
    manifest = schema.read_manifest(walk_dir, kind=None)
    manifest["side_info_fields"] = [
        {"name": "genre", "vocab_size": len(values)},
        {"name": "year", "vocab_size": 4, "numeric": {"width": 1.0}},
    ]
    schema.write_manifest(walk_dir, manifest)
    return walk_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One real training (one epoch, a few seconds)."""
    from eges.train import train

    root = tmp_path_factory.mktemp("embed")
    walk_dir = make_walk_dir(root / "walks")
    train(
        Config(
            train=TrainConfig(
                data=str(walk_dir),
                output=str(root / "run"),
                embedding_dim=8,
                batch_size=8,
                epochs=1,
                window=2,
                num_negatives=2,
                checkpoint_every_n_steps=1000,
            )
        ),
        progress_bar=False,
    )
    return root / "run"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def test_values_are_trimmed_as_the_walk_job_trims_them(run, tmp_path, capsys):
    """A side-info value keeps a tab (the walk job trims spaces only, so "\\tDrama" is not
    "Drama"); a number ignores white space around it, no-break space included, but U+001C,
    which Python's str.strip would remove, is not white space on the Spark side."""
    items = write(
        tmp_path / "new.csv",
        "item_id,genre,year\n"
        "n1,\tDrama,\x1c1991\n"  # neither value is known to the walk job: no vector
        "n2, Drama ,\u00a01991\u2003\n",
    )
    assert embed_main(["--run", str(run), "--items", str(items), "--top-k", "3"]) == 0
    out, err = capsys.readouterr()
    assert "n1: no known side-info value" in out
    assert "n2 (genre=Drama; year=\u00a01991\u2003)" in out
    assert "'genre': 1" in err and "'year (not a number)': 1" in err


def embed(run: Path, items: Path, *args: str) -> int:
    return embed_main(["--run", str(run), "--items", str(items), *args])


def test_a_byte_order_mark_is_read_not_refused(run, tmp_path, capsys):
    """Excel's "CSV UTF-8" starts with a byte-order mark: the header is still item_id."""
    items = write(tmp_path / "bom.csv", "item_id,genre,year\nn1,Drama,1991\n", "utf-8-sig")
    assert embed(run, items, "--top-k", "2") == 0
    out = capsys.readouterr().out
    assert "n1 (genre=Drama; year=1991)" in out and "  1. m" in out


def test_duplicate_new_ids_are_refused_naming_them(run, tmp_path, capsys):
    items = write(
        tmp_path / "dup.csv",
        "item_id,genre\nn1,Drama\nn2,Comedy\nn1,Action\n n2 ,Drama\nn3,Drama\n",
    )
    assert embed(run, items, "--output", str(tmp_path / "out.parquet")) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "2 item_id(s) occur more than once: 'n1', 'n2'" in err
    assert out == "" and not (tmp_path / "out.parquet").exists()


def test_a_catalogue_id_is_warned_about_and_never_its_own_neighbour(run, tmp_path, capsys):
    """m2 is a trained item of the run: embedded again from its side information, with a
    warning, and never listed among its own neighbours, with either metric."""
    items = write(tmp_path / "again.csv", "item_id,genre,year\nm2,Comedy|Action,1991\n")
    for metric in ("cosine", "context"):
        out = tmp_path / f"{metric}.parquet"
        assert embed(run, items, "--top-k", "100", "--metric", metric, "--output", str(out)) == 0
        err = capsys.readouterr().err
        assert "1 new id(s) are already items of the run's export" in err and "'m2'" in err
        table = pq.read_table(out).to_pylist()
        assert table and all(r["item_id"] == "m2" for r in table)
        assert "m2" not in {r["neighbor_id"] for r in table}
        assert [r["rank"] for r in table] == list(range(1, len(table) + 1))


def test_output_is_never_an_export_file_nor_replaced_without_overwrite(run, tmp_path, capsys):
    items = write(tmp_path / "new.csv", "item_id,genre\nn1,Drama\n")
    export = run / "export"
    before = (export / "embeddings.parquet").read_bytes()
    for bad in (export / "embeddings.parquet", export / "mine.parquet", export / "vocab" / "x"):
        assert embed(run, items, "--output", str(bad), "--overwrite") == 2
        assert "in the run's export directory" in capsys.readouterr().err
    assert (export / "embeddings.parquet").read_bytes() == before
    assert not (export / "mine.parquet").exists()

    out = tmp_path / "out.parquet"
    assert embed(run, items, "--top-k", "3", "--output", str(out)) == 0
    assert pq.read_table(out).num_rows == 3
    assert embed(run, items, "--top-k", "2", "--output", str(out)) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert pq.read_table(out).num_rows == 3
    assert embed(run, items, "--top-k", "2", "--output", str(out), "--overwrite") == 0
    assert pq.read_table(out).num_rows == 2
    notes = write(tmp_path / "notes.txt", "mine")
    assert embed(run, items, "--output", str(notes), "--overwrite") == 2
    assert "is not a neighbour table" in capsys.readouterr().err
    assert notes.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv", "notes.txt", "out.parquet"]


@pytest.mark.parametrize(
    "header,delimiter,shown",
    [
        ("item_id;genre;year\nn1;Drama;1991\n", ";", "';'"),
        ("movieId\ttitle\tgenres\n7\tNew (1991)\tDrama\n", "\t", "'\\t'"),
    ],
)
def test_a_header_split_on_another_delimiter_names_the_option(
    run, tmp_path, capsys, header, delimiter, shown
):
    items = write(tmp_path / "new.csv", header)
    assert embed(run, items) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pass --delimiter {shown}" in err
    assert embed(run, items, "--delimiter", delimiter) == 0


def test_embed_refuses_a_prior_with_the_cosine_metric_or_a_negative_one(run, tmp_path, capsys):
    items = write(tmp_path / "new.csv", "item_id,genre\nn1,Drama\n")
    for args in (
        ["--metric", "cosine", "--popularity-prior", "0.4"],
        ["--metric", "cosine", "--popularity-prior", "-3"],
    ):
        assert embed(run, items, *args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--popularity-prior is added to the context metric" in err
    assert embed(run, items, "--popularity-prior", "-3") == 2
    assert "popularity-prior must be a finite number >= 0" in capsys.readouterr().err
    assert embed(run, items, "--metric", "cosine") == 0


def test_an_item_without_usable_side_info_has_no_vector_anywhere(run, tmp_path, capsys):
    """UNUSABLE was never walked and its only value (genre Western) no walked item carries: its
    cold-start vector would be zero, whose context score is the prior alone. It has no vector:
    not exported, no row of the neighbour table and never a neighbour, "no vector" from
    ``eges embed`` for the same side information, and not covered by any scorer of the
    evaluation."""
    import numpy as np
    from gensim.models import KeyedVectors

    from eges.evaluation.evaluate import run_scorers
    from eges.serving.neighbors import build_table
    from eges.training.export import read_embeddings, read_export_manifest
    from eges.training.items import load_items

    manifest = read_export_manifest(run)
    assert manifest["format_version"] == 4
    counts = manifest["counts"]
    assert counts["items_without_vector"] == 1 and counts["without_usable_side_info"] == 1
    assert counts["cold"] == COLD - 1 and counts["vectors"] == WALKS + COLD - 1
    emb, vectors = read_embeddings(run)
    assert UNUSABLE not in emb["item_id"].to_pylist() and vectors.any(1).all()
    assert UNUSABLE not in KeyedVectors.load(str(run / "export" / "embeddings.kv")).key_to_index

    for metric in ("context", "cosine"):
        out = tmp_path / metric
        build_table(run, 5, metric=metric, output=out)
        table = pq.read_table(out / "neighbors.parquet")
        listed = set(table["item_id"].to_pylist()) | set(table["neighbor_id"].to_pylist())
        assert UNUSABLE not in listed and f"m{WALKS + 1}" in listed

    items = write(tmp_path / "new.csv", "item_id,genre\nn1,Western\n")
    assert embed(run, items) == 0
    assert "n1: no known side-info value (genre=Western): no vector" in capsys.readouterr().out

    catalogue = load_items(manifest["walks"])
    unusable, cold = catalogue.item_ids.index(UNUSABLE), catalogue.item_ids.index(f"m{WALKS + 1}")
    scorers = run_scorers("eges", run, catalogue, popularity_prior=0.4, top_k=5)
    assert [s.name for s in scorers] == ["eges", "eges·ctx", "eges·table", "eges·ctx·table"]
    for scorer in scorers:
        assert not scorer.covered(np.array([unusable]))[0], scorer.name
        assert scorer.covered(np.array([cold]))[0], scorer.name


def test_an_older_export_with_a_zero_vector_reads_as_no_vector(run, tmp_path):
    """Exports of format version 2 gave such an item a zero vector: it is left out when read."""
    import shutil

    from eges.serving.neighbors import build_table
    from eges.training.export import read_embeddings

    old = tmp_path / "old"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("neighbors*"))
    path = old / "export" / "embeddings.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    dim = len(rows[0]["vector"])
    zero = {"item_idx": WALKS + COLD, "item_id": UNUSABLE, "vector": [0.0] * dim}
    pq.write_table(
        pa.Table.from_pylist(rows + [{**zero, "cold": True, "walk_count": 0}], table.schema), path
    )
    manifest = schema.read_manifest(old / "export", kind=None)
    schema.write_manifest(old / "export", {**manifest, "format_version": 2})
    emb, vectors = read_embeddings(old)
    assert emb.num_rows == len(rows) == len(vectors) and UNUSABLE not in emb["item_id"].to_pylist()
    build_table(old, 5, metric="context", output=tmp_path / "nb")
    listed = pq.read_table(tmp_path / "nb" / "neighbors.parquet")
    assert UNUSABLE not in set(listed["item_id"].to_pylist()) | set(
        listed["neighbor_id"].to_pylist()
    )


def test_embed_serves_the_runs_choice(run, tmp_path, capsys):
    import json

    from eges.serving.neighbors import SERVING_FILE, export_digest

    items = write(tmp_path / "new.csv", "item_id,genre\nn1,Drama\n")
    out = tmp_path / "out.parquet"
    assert embed(run, items, "--top-k", "3", "--metric", "cosine", "--output", str(out)) == 0
    cosine = pq.read_table(out)["score"].to_pylist()
    assert embed(run, items, "--top-k", "3", "--output", str(out), "--overwrite") == 0
    assert pq.read_table(out)["score"].to_pylist() != cosine  # the default: context
    choice = {"metric": "cosine", "popularity_prior": 0.0, "export_digest": export_digest(run)}
    (run / SERVING_FILE).write_text(json.dumps(choice))
    try:
        capsys.readouterr()
        assert embed(run, items, "--top-k", "3", "--output", str(out), "--overwrite") == 0
        assert pq.read_table(out)["score"].to_pylist() == cosine
        assert "serving cosine: the run's choice" in capsys.readouterr().err
        # new items' own choice (cold start) wins over the neighbour table's
        table = {"metric": "context", "popularity_prior": 0.4, "export_digest": export_digest(run)}
        (run / SERVING_FILE).write_text(json.dumps({**table, "new_items": choice}))
        assert embed(run, items, "--top-k", "3", "--output", str(out), "--overwrite") == 0
        assert pq.read_table(out)["score"].to_pylist() == cosine
        (run / SERVING_FILE).write_text(json.dumps(table))
        assert embed(run, items, "--top-k", "3", "--output", str(out), "--overwrite") == 0
        assert pq.read_table(out)["score"].to_pylist() != cosine
    finally:
        (run / SERVING_FILE).unlink()  # the run is the module's


def test_embed_serves_new_items_field_weights_with_their_choice(run, tmp_path, capsys):
    """New items' choice may carry side-info field weights: eges embed serves them, with any
    --metric and --popularity-prior (the neighbour table's choice has none), and refuses weights
    that are not numbers > 0 or name a field the run lacks."""
    import json

    from eges.serving.neighbors import SERVING_FILE, export_digest

    items = write(tmp_path / "new.csv", "item_id,genre,year\nn1,Drama|Comedy,1991\n")
    out = tmp_path / "out.parquet"
    digest = export_digest(run)
    choice = {"metric": "cosine", "popularity_prior": 0.0}

    def scores(entry, *flags) -> list[float]:
        (run / SERVING_FILE).write_text(json.dumps({**entry, "export_digest": digest}))
        assert embed(run, items, "--top-k", "5", "--output", str(out), "--overwrite", *flags) == 0
        return pq.read_table(out)["score"].to_pylist()

    try:
        plain = scores({"new_items": choice})
        capsys.readouterr()
        weighted = {"new_items": {**choice, "field_weights": {"genre": 1.0, "year": 8.0}}}
        heavy = scores(weighted)
        assert "side-info field weights: genre 1, year 8" in capsys.readouterr().err
        assert heavy != plain
        # given flags choose the score, not how a new item is embedded
        assert scores(weighted, "--metric", "cosine") == heavy
        context = scores({"new_items": choice}, "--metric", "context", "--popularity-prior", "0.2")
        assert scores(weighted, "--metric", "context", "--popularity-prior", "0.2") != context
        # the same weights on the neighbour table's choice (no new_items part) are not served
        assert scores({**choice, "field_weights": {"genre": 1.0, "year": 8.0}}) == plain
        (run / SERVING_FILE).write_text(
            json.dumps(
                {"new_items": {**choice, "field_weights": {"genre": 0}}, "export_digest": digest}
            )
        )
        assert embed(run, items, "--top-k", "5") == 2
        assert "field weights" in capsys.readouterr().err
        (run / SERVING_FILE).write_text(
            json.dumps(
                {"new_items": {**choice, "field_weights": {"tags": 2}}, "export_digest": digest}
            )
        )
        assert embed(run, items, "--top-k", "5") == 2
        err = capsys.readouterr().err
        assert "new items' field_weights names tags, not side-info field" in err
    finally:
        (run / SERVING_FILE).unlink()
