"""Bad input through the whole walk job (what tests/pipeline/test_ingest.py does not already
cover file by file): timestamps in milliseconds, duplicate events, one-event users, side-info
values with quotes, separators, unicode and very long strings. Every case ends in a counted,
reported drop or is kept on purpose, never a crash and never a silent loss."""

from pathlib import Path

import pytest

from eges import schema
from eges.config import load_config
from eges.pipeline.job import run_walk_job

LONG = "x" * 5000


@pytest.fixture
def corpus(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "ratings.csv").write_text(
        "\n".join(
            [
                "userId,movieId,rating,timestamp",
                "1,10,4,1000",
                "1,20,4,1010",
                "1,30,4,1020",
                "1,20,4,1010",  # duplicate event: kept, collapses in the graph
                "2,10,4,1000",
                "2,30,4,1005",
                "3,10,4,1000",  # a user with one event: no transition, kept
                "4,10,4,1600000000000",  # milliseconds read as seconds: counted drop
                "4,20,4,1600000000500",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (d / "movies.csv").write_text(
        "\n".join(
            [
                "movieId,title,genres",
                '10,"Quoted ""Title"", With Comma (1999)",Comedy|Sci-Fi',
                f"20,Long (2000),{LONG}|Drama",
                "30,Ünïcödé 映画 (2001),Drama|Ωmega",
                "40,No Side Info,(no genres listed)",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (d / "tags.csv").write_text(
        'userId,movieId,tag,timestamp\n1,10,"a|b, ""c""",1\n', encoding="utf-8"
    )
    return d


def test_bad_input_is_counted_or_kept_on_purpose(spark, corpus, tmp_path):
    cfg = load_config(
        None,
        [
            f"data.path={corpus}",
            f"output.path={tmp_path / 'out'}",
            "walks.walks_per_node=2",
            "output.num_shards=1",
        ],
    )
    manifest = run_walk_job(spark, cfg)
    c = manifest["counts"]
    assert manifest["dropped"] == {
        "ratings.csv: timestamp after 2100 (milliseconds read as seconds? see time_format)": 2
    }
    assert c["rows_read"]["ratings.csv"] == 9 and c["events"] == 7  # 9 read - 2 counted drops
    assert c["users"] == 3 and c["items_without_side_info"] == 1
    out = tmp_path / "out"
    edges = schema.read_table(out / "edges", schema.EDGE_SCHEMA).to_pylist()
    items = {r["item_id"]: r["item_idx"] for r in schema.read_table(out / "items").to_pylist()}
    got = {(e["src"], e["dst"]): e["weight"] for e in edges}
    i10, i20, i30 = items["10"], items["20"], items["30"]
    # user 1: 10 20 20 30 (the duplicate collapses), user 2: 10 30; user 3 adds nothing
    assert got == {(i10, i20): 1, (i20, i30): 1, (i10, i30): 1}
    vocab = {
        f: {r["value"] for r in schema.read_table(out / "vocab" / f).to_pylist()}
        for f in ("genres", "tags")
    }
    assert {LONG, "Ωmega", "Sci-Fi"} <= vocab["genres"]
    assert vocab["tags"] == {'a|b, "c"'}  # a tag is one value, quotes and separators kept


def test_column_and_field_names_with_dots_spaces_and_unicode(spark, tmp_path):
    """Names reach Spark expressions quoted and become vocab directories as they are."""
    d = tmp_path / "data"
    d.mkdir()
    lines = ["用户 id,item.id,time `t`"]
    for u in range(4):
        lines += [f"用户{u},x.{(u + k) % 5},{100 * u + 10 * k}" for k in range(4)]
    (d / "ev.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (d / "it.csv").write_text(
        "item.id,品牌.名,tag s\n" + "".join(f"x.{i},b{i % 2},t{i}|t{i + 1}\n" for i in range(5)),
        encoding="utf-8",
    )
    cfg = load_config(
        None,
        [
            "data.format=generic",
            f"data.path={d}",
            "data.generic.events=ev.csv",
            "data.generic.items=it.csv",
            "data.generic.user_col='用户 id'",
            "data.generic.item_col=item.id",
            "data.generic.time_col='time `t`'",
            "data.generic.side_info=[{name: 品牌 名, column: 品牌.名}, "
            "{name: tag.s, column: tag s, sep: '|'}]",
            f"output.path={tmp_path / 'out'}",
            "walks.walks_per_node=2",
            "output.num_shards=1",
        ],
    )
    manifest = run_walk_job(spark, cfg)
    assert [f["name"] for f in manifest["side_info_fields"]] == ["品牌 名", "tag.s"]
    assert manifest["dropped"] == {} and manifest["counts"]["events"] == 16
    out = tmp_path / "out"
    assert {r["value"] for r in schema.read_table(out / "vocab" / "品牌 名").to_pylist()} == {
        "b0",
        "b1",
    }
    assert len(schema.read_table(out / "vocab" / "tag.s").to_pylist()) == 6
    items = schema.read_table(out / "items").to_pylist()
    assert all(len(r["tag.s"]) == 2 and len(r["品牌 名"]) == 1 for r in items)
