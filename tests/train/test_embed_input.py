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
