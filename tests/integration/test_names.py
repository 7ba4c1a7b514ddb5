"""Display names end to end on the smallest real run: a local Spark walk job over a tiny
inline MovieLens log keeps the titles in its item table, a few training steps export a model,
and the serving CLIs show them: ``eges.serving.embed`` lines ``id  name  score`` (new items handed
over as ``movieId,title,genres`` + tags) and ``eges.serving.neighbors --names``."""

import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from eges import schema
from eges.config import load_config
from eges.pipeline.job import run_walk_job

REPO = Path(__file__).resolve().parents[2]

# two communities: family animation and action films; each user watches one of them
MOVIES = {
    "1": ("Toy Story (1995)", "Adventure|Animation|Children|Comedy"),
    "2": ("Jumanji (1995)", "Adventure|Children|Fantasy"),
    "3": ("Aladdin (1992)", "Animation|Children|Comedy|Musical"),
    "4": ("Lion King, The (1994)", "Animation|Children|Drama|Musical"),
    "5": ("Shrek (2001)", "Adventure|Animation|Children|Comedy"),
    "6": ("Heat (1995)", "Action|Crime|Thriller"),
    "7": ("GoldenEye (1995)", "Action|Adventure|Thriller"),
    "8": ("Matrix, The (1999)", "Action|Sci-Fi|Thriller"),
    "9": ("Die Hard (1988)", "Action|Crime|Thriller"),
    "10": ("Speed (1994)", "Action|Romance|Thriller"),
    "11": ("Unwatched Cartoon (2003)", "Animation|Children"),  # no events: a cold item
}


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("names")
    data = root / "data"
    data.mkdir()
    ratings = ["userId,movieId,rating,timestamp"]
    for user in range(1, 41):
        group = ["1", "2", "3", "4", "5"] if user % 2 else ["6", "7", "8", "9", "10"]
        for step in range(8):
            ratings.append(
                f"{user},{group[(user + step * (1 + user % 3)) % 5]},4,"
                f"{1_000_000 + user * 100_000 + step * 60}"
            )
    (data / "ratings.csv").write_text("\n".join(ratings) + "\n")
    (data / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f'{i},"{t}",{g}\n' for i, (t, g) in MOVIES.items())
    )
    (data / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,1,Pixar,1\n2,5,pixar,2\n3,8,cyberpunk,3\n"
    )
    walks = root / "walks"
    run_walk_job(
        spark,
        load_config(
            None,
            [
                f"data.path={data}",
                f"output.path={walks}",
                "walks.walks_per_node=5",
                "walks.walk_length=5",
                "spark.graph_partitions=1",
                "output.num_shards=1",
            ],
        ),
    )
    from eges.train import train

    run_dir = root / "run"
    train(
        load_config(
            None,
            [
                f"train.data={walks}",
                f"train.output={run_dir}",
                "train.embedding_dim=16",
                "train.batch_size=16",
                "train.shuffle_buffer=64",
                "train.max_steps=6",
                "train.accelerator=cpu",
                "train.log_every_n_steps=1",
            ],
        )
    )
    return walks, run_dir


def cli(command: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "eges", command, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_walk_job_keeps_titles_in_the_item_table(run):
    walks, _ = run
    manifest = schema.read_manifest(walks)
    fields = [f["name"] for f in manifest["side_info_fields"]]
    items = schema.read_table(walks / "items", schema.item_schema(fields, names=True))
    assert dict(zip(items["item_id"].to_pylist(), items["name"].to_pylist())) == {
        i: t for i, (t, _) in MOVIES.items()
    }
    assert manifest["counts"]["items_with_name"] == len(MOVIES)


NEIGHBOUR_LINE = re.compile(r"^\s+(\d+)\. (\S+)\s+(\S.*?)\s{2,}(-?\d+\.\d{3})$")


def test_embed_cli_shows_titles_for_a_movielens_layout_file(run, tmp_path):
    _, run_dir = run
    new = tmp_path / "movies.csv"
    new.write_text(
        'movieId,title,genres\n900,"Toy Story 5, The (2030)",Animation|Children\n'
        "901,Nothing Known,(no genres listed)\n"
        "x1,Bad Id (2000),Action\n"
    )
    tags = tmp_path / "tags.csv"
    tags.write_text("userId,movieId,tag,timestamp\n1,900, PIXAR ,1\n")
    out = tmp_path / "nbrs.parquet"
    proc = cli(
        "embed",
        "--run",
        str(run_dir),
        "--items",
        str(new),
        "--tags",
        str(tags),
        "--top-k",
        "4",
        "--output",
        str(out),
        "--names",
    )
    lines = proc.stdout.splitlines()
    # the query line: id, title, and the values the walk job's rules give
    query = "900  Toy Story 5, The (2030) (genres=Animation|Children; year=2030; tags=pixar)"
    assert query in lines
    assert "901  Nothing Known: no known side-info value (none given): no vector" in lines
    assert "non-integer movieId 'x1'" in proc.stderr
    # 2030 is after every trained year: the nearest trained one (2001; 2003 is only on an
    # item without events) stands in for it
    assert (
        "year value '2030' is outside the trained buckets: mapped to the nearest, '2001'"
        in proc.stderr
    )
    rows = [NEIGHBOUR_LINE.match(line) for line in lines[lines.index(query) + 1 :]]
    rows = [m.groups() for m in rows if m]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    titles = {i: t for i, (t, _) in MOVIES.items()}
    assert all(name == titles[item] for _, item, name, _ in rows), rows
    table = pq.read_table(out).to_pandas()
    assert list(table["neighbor_id"]) == [r[1] for r in rows]
    assert list(table["neighbor_name"]) == [titles[i] for i in table["neighbor_id"]]


def test_movielens_layout_gives_the_vector_of_the_equivalent_simple_row(run, tmp_path):
    from eges.serving.embed import Embedder, load_new_items

    _, run_dir = run
    emb = Embedder(run_dir)
    assert emb.fields == ["genres", "year", "tags"]
    ml = tmp_path / "ml.csv"
    ml.write_text(
        "movieId,title,genres,tags\n"
        '0900,"Heat, Again (1995) ",Thriller| Action|(no genres listed),Pixar| PIXAR\n'
        "0900,Heat Again (1995),Crime,\n"
    )  # rows of one movie are merged
    simple = tmp_path / "simple.csv"
    simple.write_text("item_id,genres,year,tags\n900,Action|Crime|Thriller,1995,pixar\n")
    a = load_new_items(ml, emb.fields)  # layout told by the header
    b = load_new_items(simple, emb.fields)
    assert a.ids == b.ids == ["900"] and a.names == ["Heat Again (1995)"]
    assert (
        a.items
        == b.items
        == [{"genres": ["Action", "Crime", "Thriller"], "year": ["1995"], "tags": ["pixar"]}]
    )
    va, known_a = emb.embed(a.items)
    vb, known_b = emb.embed(b.items)
    assert known_a == known_b == [True] and torch.equal(va, vb)
    assert not emb.unknown
    # the other values give another vector: the comparison can fail
    other = emb.embed([{"genres": ["Animation"], "year": ["1995"], "tags": ["pixar"]}])[0]
    assert not torch.allclose(va, other)
    # forcing the simple layout on the MovieLens file is refused: it has no item_id
    with pytest.raises(ValueError, match="needs an item_id column"):
        load_new_items(ml, emb.fields, layout="simple")


def test_unseen_year_maps_to_the_nearest_trained_year(run):
    from eges.serving.embed import Embedder

    _, run_dir = run
    emb = Embedder(run_dir)
    manifest = schema.read_manifest(run[0])
    year = next(f for f in manifest["side_info_fields"] if f["name"] == "year")
    assert year["numeric"] == {"width": 1.0, "invalid_values": 0}
    base = {"genres": ["Animation"], "tags": []}
    vectors, known = emb.embed(
        [
            {**base, "year": ["2030"]},
            {**base, "year": ["2001"]},
            {**base, "year": ["1990"]},
            {**base, "year": ["1988"]},
            {**base, "year": []},
            {**base, "year": ["MMXX"]},
        ]
    )
    assert known == [True] * 6
    assert torch.equal(vectors[0], vectors[1]) and torch.equal(vectors[2], vectors[3])
    assert not torch.allclose(vectors[0], vectors[4])  # the year counts: this can fail
    assert torch.equal(vectors[4], vectors[5])  # not a number: ignored
    assert emb.nearest == {"year": 2} and emb.unknown == {"year (not a number)": 1}


def test_neighbors_cli_names_column(run, tmp_path):
    from eges.serving.neighbors import NEIGHBORS_NAMES_SCHEMA, NEIGHBORS_SCHEMA

    _, run_dir = run
    cli(
        "neighbors",
        "--run",
        str(run_dir),
        "--top-k",
        "3",
        "--names",
        "--output",
        str(tmp_path / "named"),
    )
    table = pq.read_table(tmp_path / "named" / "neighbors.parquet")
    assert table.schema.equals(NEIGHBORS_NAMES_SCHEMA, check_metadata=False)
    df = table.to_pandas()
    titles = {i: t for i, (t, _) in MOVIES.items()}
    assert len(df) == 3 * len(MOVIES)
    assert list(df["neighbor_name"]) == [titles[i] for i in df["neighbor_id"]]
    cli("neighbors", "--run", str(run_dir), "--top-k", "3", "--output", str(tmp_path / "plain"))
    plain = pq.read_table(tmp_path / "plain" / "neighbors.parquet")
    assert plain.schema.equals(NEIGHBORS_SCHEMA, check_metadata=False)
    assert plain.to_pandas().equals(df.drop(columns="neighbor_name"))
