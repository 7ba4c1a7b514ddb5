"""Ingest of every supported layout, including malformed rows: a clear error or a counted drop."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eges.config import GenericConfig, MovieLensConfig, RecBoleConfig, SideInfoField
from eges.pipeline.ingest import (
    InputError,
    event_time_range,
    implausible_times,
    load_generic,
    load_movielens,
    load_recbole,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def side(ingested) -> dict:
    rows = ingested.side_info.collect()
    return {r.item_id: {f: list(r[f]) for f in ingested.fields} for r in rows}


def events(ingested) -> list:
    return sorted((r.user_id, r.item_id, r.ts) for r in ingested.events.collect())


@pytest.fixture
def movielens(tmp_path):
    write(
        tmp_path / "ratings.csv",
        "\n".join(
            [
                "userId,movieId,rating,timestamp",
                "1,10,4.0,100",
                "1,20,4.0,200",
                "x,10,3.0,300",  # non-integer user
                "2,abc,3.0,300",  # non-integer movie
                "2,10,3.0,notatime",  # bad timestamp
                "3,10",  # too few fields
                "3,10,4.0,400,extra",  # too many fields
                ",10,4.0,500",  # missing user
                "2,030,5,1.5e3",  # float timestamp, zero-padded id
                "4,20,1,-5",  # negative timestamp: valid (before 1970)
            ]
        )
        + "\n",
    )
    write(
        tmp_path / "movies.csv",
        "\n".join(
            [
                "movieId,title,genres",
                '10,"American President, The (1995)",Comedy|Drama|Romance',
                "20,Amélie (Fabuleux destin d'Amélie Poulain) (2001),Comedy|Romance",
                "30,Babylon 5,(no genres listed)",
                "40,Only In Catalogue (1999),Drama",
                "4x,Broken (2000),Drama",  # non-integer id
                "40,Only In Catalogue (1999),Thriller",  # duplicate id: merged
            ]
        )
        + "\n",
    )
    write(
        tmp_path / "tags.csv",
        "\n".join(
            [
                "userId,movieId,tag,timestamp",
                "1,10,Funny,1",
                "2,10, funny ,2",
                '3,10,"politics, US",3',
                "1,20,   ,4",  # empty tag
                "1,20,日本語,5",
                "1,99,orphan,6",  # tag of a movie missing from movies.csv
            ]
        )
        + "\n",
    )
    return tmp_path


def test_movielens_events_and_counted_drops(spark, movielens):
    got = load_movielens(spark, str(movielens), MovieLensConfig())
    assert events(got) == [
        ("1", "10", 100.0),
        ("1", "20", 200.0),
        ("2", "30", 1500.0),
        ("4", "20", -5.0),
    ]
    assert got.rows_read == {"ratings.csv": 10, "movies.csv": 6, "tags.csv": 6}
    assert got.dropped == {
        "ratings.csv: non-integer userId": 1,
        "ratings.csv: non-integer movieId": 1,
        "ratings.csv: unparsable timestamp": 1,
        "ratings.csv: malformed row (wrong number of fields)": 2,
        "ratings.csv: missing userId": 1,
        "movies.csv: non-integer movieId": 1,
        "tags.csv: empty tag": 1,
    }


def test_movielens_side_info(spark, movielens):
    got = load_movielens(spark, str(movielens), MovieLensConfig())
    assert got.fields == ["genres", "year", "tags"]
    info = side(got)
    assert info["10"] == {
        "genres": ["Comedy", "Drama", "Romance"],
        "year": ["1995"],
        "tags": ["funny", "politics, us"],
    }
    assert info["20"] == {"genres": ["Comedy", "Romance"], "year": ["2001"], "tags": ["日本語"]}
    assert info["30"] == {"genres": [], "year": [], "tags": []}
    assert info["40"]["genres"] == ["Drama", "Thriller"]
    assert info["99"] == {"genres": [], "year": [], "tags": ["orphan"]}
    assert "4x" not in info


def test_tags_written_at_or_after_a_cutoff_are_left_out(spark, movielens):
    got = load_movielens(spark, str(movielens), MovieLensConfig())
    assert got.user_fields == ["tags"]
    assert got.side_info_before(None) is got.side_info  # no cutoff: every tag
    got.side_info = got.side_info_before(5)  # tags at seconds 1, 2, 3 (item 10), 5, 6
    info = side(got)
    assert info["10"]["tags"] == ["funny", "politics, us"]
    assert info["20"] == {"genres": ["Comedy", "Romance"], "year": ["2001"], "tags": []}
    assert "99" not in info  # its only row, a tag, was written later
    got.side_info = got.side_info_before(2)
    assert side(got)["10"]["tags"] == ["funny"]


def test_tags_without_a_time_are_kept_and_left_out_of_a_time_split_only_where_times_exist(
    spark, movielens, caplog
):
    write(movielens / "tags.csv", "userId,movieId,tag,timestamp\n1,10,old,1\n1,10,bad,soon\n")
    got = load_movielens(spark, str(movielens), MovieLensConfig())
    assert side(got)["10"]["tags"] == ["bad", "old"]  # without a split every tag counts
    got.side_info = got.side_info_before(5)
    assert side(got)["10"]["tags"] == ["old"]
    assert "1 of its rows have no time: left out of training" in caplog.text
    write(movielens / "tags.csv", "userId,movieId,tag\n1,10,timeless\n")
    got = load_movielens(spark, str(movielens), MovieLensConfig())
    got.side_info = got.side_info_before(5)
    assert side(got)["10"]["tags"] == ["timeless"]
    assert "1 of its rows have no time: all of them are used" in caplog.text


def test_movielens_without_tags(spark, movielens):
    got = load_movielens(spark, str(movielens), MovieLensConfig(tags=None))
    assert got.fields == ["genres", "year"] and "tags.csv" not in got.rows_read


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("ratings.csv", None, "input file not found: .*ratings.csv"),
        ("ratings.csv", "", "ratings.csv is empty"),
        (
            "ratings.csv",
            "userId,itemId,rating,timestamp\n1,2,3,4\n",
            r"missing column\(s\) \['movieId'\]",
        ),
        (
            "movies.csv",
            "movieId,name\n1,x\n",
            r"movies.csv: missing column\(s\) \['title', 'genres'\]",
        ),
    ],
)
def test_movielens_unreadable_inputs_are_named(spark, movielens, name, text, message):
    target = movielens / name
    if text is None:
        target.unlink()
    else:
        target.write_text(text)
    with pytest.raises(InputError, match=message):
        load_movielens(spark, str(movielens), MovieLensConfig())


def test_header_only_and_extra_header_columns(spark, movielens):
    write(movielens / "ratings.csv", "userId,movieId,rating,timestamp,,,,\n1,10,4.0,100,,,,\n")
    got = load_movielens(spark, str(movielens), MovieLensConfig())
    assert events(got) == [("1", "10", 100.0)] and not any("ratings" in k for k in got.dropped)
    write(movielens / "ratings.csv", "userId,movieId,rating,timestamp\n")
    got = load_movielens(spark, str(movielens), MovieLensConfig())
    assert events(got) == [] and got.rows_read["ratings.csv"] == 0


def test_recbole_atomic_files_with_kg(spark, tmp_path):
    write(
        tmp_path / "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t7\t3\t881250949\n2\t8\t4\t881250950.5\n3\t7\t1\n",
    )
    write(
        tmp_path / "toy.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
        "class:token_seq\n7\tToy Story\t1995\tAnimation Children's Comedy\n"
        '8\tGoldenEye\t\tAction\n9\t"Quoted"\t1990\t\n',
    )
    write(tmp_path / "toy.link", "item_id:token\tentity_id:token\n7\tm.a\n8\tm.b\n")
    write(
        tmp_path / "toy.kg",
        "head_id:token\trelation_id:token\ttail_id:token\n"
        "m.a\tfilm.film.actor\tm.x\nm.a\tfilm.film.actor\tm.y\nm.b\tfilm.film.actor\tm.x\n"
        "m.a\tfilm.film.directed_by\tm.d\nm.a\tfilm.film.language\tm.en\n",
    )
    cfg = RecBoleConfig(dataset="toy", kg_relations=["film.film.actor", "film.film.directed_by"])
    got = load_recbole(spark, str(tmp_path), cfg)
    assert got.fields == ["year", "genres", "actor", "directed_by"]
    assert events(got) == [("1", "7", 881250949.0), ("2", "8", 881250950.5)]
    assert got.dropped == {"toy.inter: malformed row (wrong number of fields)": 1}
    info = side(got)
    assert info["7"] == {
        "year": ["1995"],
        "genres": ["Animation", "Children's", "Comedy"],
        "actor": ["m.x", "m.y"],
        "directed_by": ["m.d"],
    }
    assert info["8"] == {"year": [], "genres": ["Action"], "actor": ["m.x"], "directed_by": []}
    assert info["9"] == {"year": ["1990"], "genres": [], "actor": [], "directed_by": []}


def test_recbole_missing_kg_file(spark, tmp_path):
    write(tmp_path / "toy.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t7\t1\n")
    write(tmp_path / "toy.item", "item_id:token\trelease_year:token\tclass:token_seq\n7\t1\tA\n")
    with pytest.raises(InputError, match="toy.link"):
        load_recbole(
            spark, str(tmp_path), RecBoleConfig(dataset="toy", kg_relations=["film.film.actor"])
        )


GENERIC = GenericConfig(
    events="events.csv",
    items="items.csv",
    user_col="uid",
    item_col="sku",
    time_col="time",
    time_format="yyyy-MM-dd HH:mm:ss",
    behavior_col="type",
    behaviors=["click", "buy"],
    side_info=[
        SideInfoField(name="brand"),
        SideInfoField(name="cats", column="categories", sep=";"),
    ],
)


def test_generic_csv_with_behaviour_filter(spark, tmp_path):
    write(
        tmp_path / "events.csv",
        "uid,sku,time,type\n"
        "a,s1,2024-01-01 10:00:00,click\n"
        "a,s2,2024-01-01 10:05:00,cart\n"
        "a,s3,2024-01-01 10:06:30,buy\n"
        "b,s1,yesterday,click\n"
        "b,,2024-01-01 10:00:00,click\n"
        "c,s1,2024-01-01 10:00:00,\n",
    )
    write(
        tmp_path / "items.csv",
        'sku,brand,categories\ns1,Acme,shoes;sport; shoes\ns2,,\ns4,Zeta,"a;b"\n',
    )
    got = load_generic(spark, str(tmp_path), GENERIC)
    assert events(got) == [("a", "s1", 1704103200.0), ("a", "s3", 1704103590.0)]
    assert got.dropped == {
        "events.csv: type not in ['click', 'buy']": 1,
        "events.csv: unparsable time": 1,
        "events.csv: missing sku": 1,
        "events.csv: missing type": 1,
    }
    assert side(got) == {
        "s1": {"brand": ["Acme"], "cats": ["shoes", "sport"]},
        "s2": {"brand": [], "cats": []},
        "s4": {"brand": ["Zeta"], "cats": ["a", "b"]},
    }


def test_generic_parquet_with_typed_columns(spark, tmp_path):
    pq.write_table(
        pa.table(
            {
                "uid": [1, 1, 2],
                "sku": ["x", "y", "x"],
                "time": [10.5, 20.0, None],
                "type": ["click"] * 3,
            }
        ),
        tmp_path / "events.parquet",
    )
    pq.write_table(
        pa.table({"sku": ["x"], "brand": ["B"], "categories": ["c1;c2"]}),
        tmp_path / "items.parquet",
    )
    cfg = GenericConfig(
        **{
            **GENERIC.__dict__,
            "events": "events.parquet",
            "items": "items.parquet",
            "file_format": "parquet",
            "time_format": "unix",
        }
    )
    got = load_generic(spark, str(tmp_path), cfg)
    assert events(got) == [("1", "x", 10.5), ("1", "y", 20.0)]
    assert got.dropped == {"events.parquet: unparsable time": 1}
    assert side(got)["x"] == {"brand": ["B"], "cats": ["c1", "c2"]}


def test_generic_parquet_timestamps_and_float_ids(spark, tmp_path):
    import datetime as dt

    t0 = dt.datetime(2024, 1, 1, 10, 0, 0)
    pq.write_table(
        pa.table(
            {
                "uid": pa.array([1.0, 1.0, 2.5]),
                "sku": pa.array([7, 8, 7], pa.int64()),
                "time": pa.array([t0, t0 + dt.timedelta(seconds=90), None], pa.timestamp("us")),
                "type": ["click"] * 3,
            }
        ),
        tmp_path / "events.parquet",
    )
    pq.write_table(
        pa.table({"sku": pa.array([7.0, 9.0]), "brand": ["B", "C"], "categories": ["c1", None]}),
        tmp_path / "items.parquet",
    )
    cfg = GenericConfig(
        **{
            **GENERIC.__dict__,
            "events": "events.parquet",
            "items": "items.parquet",
            "file_format": "parquet",
        }
    )
    got = load_generic(spark, str(tmp_path), cfg)  # the pattern time_format is not needed
    assert events(got) == [("1", "7", 1704103200.0), ("1", "8", 1704103290.0)]
    assert got.dropped == {"events.parquet: unparsable time": 1}
    assert side(got) == {"7": {"brand": ["B"], "cats": ["c1"]}, "9": {"brand": ["C"], "cats": []}}


def test_generic_missing_column_is_named(spark, tmp_path):
    write(tmp_path / "events.csv", "uid,sku,when,type\na,s1,1,click\n")
    write(tmp_path / "items.csv", "sku,brand,categories\n")
    with pytest.raises(InputError, match=r"events.csv: missing column\(s\) \['time'\]"):
        load_generic(spark, str(tmp_path), GENERIC)


SHARED_LOG = (
    "\n".join(
        [
            "user,item,ts,brand,sku",
            "u1,i1,100,A,s1",
            "u1,i2,200,B,s2",
            "u2,i1,300,A,s1",
            "u2,i3,400",  # malformed: dropped from events and catalogue, counted once
            "u3,,500,C,s9",  # no item: dropped from both, counted once
            "u3,i4,notatime,D,s4",  # events only: i4 stays in the catalogue
            ",i5,600,E,s5",  # events only (no user): i5 stays in the catalogue
            "u4,i6,700,F,",  # catalogue only when its id column is sku: the event is kept
        ]
    )
    + "\n"
)
SHARED = GenericConfig(
    events="log.csv",
    items="./log.csv",
    user_col="user",
    item_col="item",
    time_col="ts",
    side_info=[SideInfoField(name="brand")],
)


def test_one_file_as_events_and_items_counts_each_bad_row_once(spark, tmp_path):
    write(tmp_path / "log.csv", SHARED_LOG)
    got = load_generic(spark, str(tmp_path), SHARED)
    assert got.dropped == {
        "log.csv: malformed row (wrong number of fields)": 1,
        "log.csv: missing item": 1,
        "log.csv: unparsable ts": 1,
        "log.csv: missing user": 1,
    }
    assert got.rows_read == {"log.csv": 8}
    assert [e[:2] for e in events(got)] == [("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u4", "i6")]
    assert side(got) == {
        "i1": {"brand": ["A"]},
        "i2": {"brand": ["B"]},
        "i4": {"brand": ["D"]},
        "i5": {"brand": ["E"]},
        "i6": {"brand": ["F"]},
    }


def test_one_file_with_another_item_column_counts_catalogue_only_drops(spark, tmp_path):
    """With items_item_col a second column, a row can be a good event and a bad catalogue row:
    that drop is counted, once."""
    write(tmp_path / "log.csv", SHARED_LOG)
    cfg = GenericConfig(**{**SHARED.__dict__, "items_item_col": "sku"})
    got = load_generic(spark, str(tmp_path), cfg)
    assert got.dropped == {
        "log.csv: malformed row (wrong number of fields)": 1,
        "log.csv: missing item": 1,
        "log.csv: unparsable ts": 1,
        "log.csv: missing user": 1,
        "log.csv: missing sku": 1,  # u4's row: an event, but no catalogue id
    }
    assert set(side(got)) == {"s1", "s2", "s9", "s4", "s5"}


def test_column_names_with_dots_spaces_backticks_and_unicode(spark, tmp_path):
    write(
        tmp_path / "ev.csv",
        "用户 id,item.id,time `t`,act.ion\n甲,x.1,10,看\n甲,x.2,20,看\n乙,x.1,30,买\n乙,,40,看\n",
    )
    write(tmp_path / "it.csv", "item.id,品牌.名,tag s\nx.1,Ä,a|b\nx.2,B,\n")
    cfg = GenericConfig(
        events="ev.csv",
        items="it.csv",
        user_col="用户 id",
        item_col="item.id",
        time_col="time `t`",
        behavior_col="act.ion",
        behaviors=["看"],
        side_info=[
            SideInfoField(name="品牌 名", column="品牌.名"),
            SideInfoField(name="tag.s", column="tag s", sep="|"),
        ],
    )
    got = load_generic(spark, str(tmp_path), cfg)
    assert events(got) == [("甲", "x.1", 10.0), ("甲", "x.2", 20.0)]
    assert got.dropped == {"ev.csv: act.ion not in ['看']": 1, "ev.csv: missing item.id": 1}
    assert side(got) == {
        "x.1": {"品牌 名": ["Ä"], "tag.s": ["a", "b"]},
        "x.2": {"品牌 名": ["B"], "tag.s": []},
    }


def test_implausible_event_times_are_named():
    """Before 1990 or after now + 1 day: a wrong time_format, most likely."""
    now = 1_765_000_000.0  # 2025-12-06
    assert implausible_times(631152000.0, now + 86_000, now) is None  # 1990-01-01 .. tomorrow
    early = implausible_times(1_700_000.0, 1_710_000.0, now)  # seconds read as milliseconds
    assert early.startswith("event times run from 1970-01-20T16:13:20+00:00 to 1970-01-20")
    assert "before 1990-01-01" in early and "time_format" in early
    late = implausible_times(1_700_000_000.0, now + 2 * 86_400, now)
    assert "after 2025-12-07 (in the future)" in late and "before" not in late
    assert event_time_range(None, None) is None
