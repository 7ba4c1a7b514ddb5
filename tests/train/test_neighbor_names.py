"""The item table's optional ``name`` column: readers accept tables with and without it, and
``eges.serving.neighbors --names`` adds ``neighbor_name`` from it (no Spark, no training)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eges import schema
from eges.serving.neighbors import NEIGHBORS_NAMES_SCHEMA, build_table, main
from eges.training.items import load_items
from tests.train.test_neighbors import make_run


def name_of(i: int) -> str | None:
    return None if i % 4 == 0 else f"Title {i}, the"


def add_names(run) -> None:
    """Rewrite the run's item table with a name column after count (as the walk job does)."""
    path = run / "walks" / "items" / "part-0.parquet"
    t = pq.read_table(path)
    names = pa.array([name_of(int(i[1:])) for i in t["item_id"].to_pylist()], pa.string())
    pq.write_table(t.add_column(3, "name", names), path)


@pytest.fixture
def vectors() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(40, 8)).astype(np.float32)


def test_names_column_with_filters(vectors, tmp_path):
    run = make_run(tmp_path / "run", vectors)
    add_names(run)
    assert schema.item_names(run / "walks" / "items") == {
        f"i{i}": name_of(i) for i in range(40) if name_of(i)
    }
    m = build_table(run, 4, names=True, same_field="g")  # the field is read past the name
    table = pq.read_table(run / "neighbors" / "neighbors.parquet")
    assert table.schema.equals(NEIGHBORS_NAMES_SCHEMA, check_metadata=False)
    df = table.to_pandas()
    want = [name_of(int(i[1:])) for i in df["neighbor_id"]]
    assert [None if x is None else x for x in df["neighbor_name"]] == want
    assert None in want  # unnamed neighbours are null, not dropped
    assert m["settings"]["names"] is True and m["counts"]["items_with_name"] == 30
    # the same table without --names: same rows, no name column
    build_table(run, 4, same_field="g", output=tmp_path / "plain")
    plain = pq.read_table(tmp_path / "plain" / "neighbors.parquet").to_pandas()
    assert plain.equals(df.drop(columns="neighbor_name"))


def test_trainer_reads_item_tables_with_and_without_names(vectors, tmp_path):
    run = make_run(tmp_path / "run", vectors)
    before = load_items(run / "walks")
    add_names(run)
    after = load_items(run / "walks")
    assert after.item_ids == before.item_ids and after.fields == ["g"]
    assert all((a == b).all() for a, b in zip(after.values, before.values))


def test_names_without_names_is_a_clear_error(vectors, tmp_path, capsys):
    run = make_run(tmp_path / "run", vectors)
    with pytest.raises(ValueError, match="--names: the walk output .* has no item names"):
        build_table(run, 4, names=True)
    assert main(["--run", str(run), "--top-k", "4", "--names"]) == 2
    assert "has no item names" in capsys.readouterr().err


def test_printed_columns_line_up_for_wide_characters():
    from eges.serving.embed import NAME_WIDTH, Neighbour, display_width, format_neighbours

    names = ["华为 Mate 60 Pro 手机", "Nike Air Max", "Café ́au lait", "枕" * 80, None]
    lines = format_neighbours(
        [Neighbour(f"id{i}", 0.5 - i / 10, name) for i, name in enumerate(names)]
    )
    # the score starts in the same terminal column on every line
    starts = {display_width(line[: line.rindex(" ") + 1]) for line in lines}
    assert len(starts) == 1
    assert display_width("华为") == 4 and display_width("é́") == 1
    long = next(line for line in lines if "枕" in line)
    assert "…" in long and display_width(long) < 10 + 8 + NAME_WIDTH + 10
