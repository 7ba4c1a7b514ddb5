"""Display names carried by ingest (MovieLens titles, RecBole movie_title, the generic
name_column), the MovieLens delimiter option, and the pure-Python MovieLens rules agreeing
with the Spark ones."""

from pathlib import Path

import pytest

from eges import movielens as ml_rules
from eges.config import GenericConfig, MovieLensConfig, RecBoleConfig, SideInfoField
from eges.pipeline.ingest import InputError, load_generic, load_movielens, load_recbole


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def side(ingested) -> dict:
    return {
        r.item_id: {f: list(r[f]) for f in ingested.fields} for r in ingested.side_info.collect()
    }


def names(ingested) -> dict:
    return {r.item_id: r.name for r in ingested.names.collect()}


def events(ingested) -> list:
    return sorted((r.user_id, r.item_id, r.ts) for r in ingested.events.collect())


# a semicolon export: titles hold commas, unquoted, as such exports write them
SEMICOLON = {
    "ratings.csv": "userId;movieId;rating;timestamp\n1;10;4.0;100\n1;20;3,5;200\n2;x;1;300\n",
    "movies.csv": "movieId;title;genres\n"
    "10;American President, The (1995);Comedy|Drama\n"
    "20;Heat (1995) ;Action|Crime\n"
    "30;Untitled, Part 2;(no genres listed)\n",
    "tags.csv": "userId;movieId;tag;timestamp\n1;10;Politics, US;1\n2;10; politics, us ;2\n",
}


def test_movielens_semicolon_delimiter(spark, tmp_path):
    for name, text in SEMICOLON.items():
        write(tmp_path / name, text)
    got = load_movielens(spark, str(tmp_path), MovieLensConfig(sep=";"))
    assert events(got) == [("1", "10", 100.0), ("1", "20", 200.0)]
    assert got.dropped == {"ratings.csv: non-integer movieId": 1}
    assert side(got) == {
        "10": {"genres": ["Comedy", "Drama"], "year": ["1995"], "tags": ["politics, us"]},
        "20": {"genres": ["Action", "Crime"], "year": ["1995"], "tags": []},
        "30": {"genres": [], "year": [], "tags": []},
    }
    assert names(got) == {
        "10": "American President, The (1995)",
        "20": "Heat (1995)",
        "30": "Untitled, Part 2",
    }
    # the default "," reads the same files as one column each: refused, naming the columns
    with pytest.raises(InputError, match=r"ratings.csv: missing column\(s\)"):
        load_movielens(spark, str(tmp_path), MovieLensConfig())


def test_movielens_names_come_from_kept_rows_only(spark, tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4,100\n1,20,4,200\n")
    write(
        tmp_path / "movies.csv",
        "\n".join(
            [
                "movieId,title,genres",
                '10,"Quoted, Title (1999)",Drama',
                "20,   ,Drama",  # blank title: no name
                "4x,Broken (2000),Drama",  # dropped row: its title is nowhere
                "40,B Title,Comedy",
                "40,A Title,Drama",  # duplicate id: the smallest name, values merged
            ]
        )
        + "\n",
    )
    got = load_movielens(spark, str(tmp_path), MovieLensConfig(tags=None))
    assert names(got) == {"10": "Quoted, Title (1999)", "40": "A Title"}
    assert side(got)["40"]["genres"] == ["Comedy", "Drama"]


def test_recbole_movie_title_is_the_name(spark, tmp_path):
    write(tmp_path / "toy.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t7\t1\n")
    write(
        tmp_path / "toy.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
        "class:token_seq\n7\tToy Story\t1995\tAnimation\n8\t\t1990\tAction\n",
    )
    got = load_recbole(spark, str(tmp_path), RecBoleConfig(dataset="toy"))
    assert names(got) == {"7": "Toy Story"}
    # a .item file without a title column: no names, not an error
    write(tmp_path / "toy.item", "item_id:token\trelease_year:token\tclass:token_seq\n7\t1\tA\n")
    assert load_recbole(spark, str(tmp_path), RecBoleConfig(dataset="toy")).names is None


def test_generic_name_column(spark, tmp_path):
    write(tmp_path / "events.csv", "uid,sku,time\na,s1,1\na,s2,2\n")
    write(tmp_path / "items.csv", "sku,brand,product name\ns1,A,Red Shoe\ns2,B,\ns3,C,Hat\n")
    cfg = GenericConfig(
        user_col="uid",
        item_col="sku",
        time_col="time",
        side_info=[SideInfoField(name="brand")],
        name_column="product name",
    )
    got = load_generic(spark, str(tmp_path), cfg)
    assert names(got) == {"s1": "Red Shoe", "s3": "Hat"}
    assert side(got)["s2"] == {"brand": ["B"]}
    # without name_column: no names
    plain = GenericConfig(
        user_col="uid", item_col="sku", time_col="time", side_info=[SideInfoField(name="brand")]
    )
    assert load_generic(spark, str(tmp_path), plain).names is None
    # a configured name column must exist
    with pytest.raises(InputError, match=r"items.csv: missing column\(s\) \['title'\]"):
        load_generic(
            spark,
            str(tmp_path),
            GenericConfig(user_col="uid", item_col="sku", time_col="time", name_column="title"),
        )
    with pytest.raises(InputError, match="name_column is set but data.generic.items is null"):
        load_generic(
            spark,
            str(tmp_path),
            GenericConfig(
                user_col="uid", item_col="sku", time_col="time", items=None, name_column="x"
            ),
        )


def test_generic_one_file_as_events_items_and_names(spark, tmp_path):
    write(
        tmp_path / "log.csv",
        "user,item,ts,brand,title\nu1,i1,1,A,One\nu1,i2,2,B,Two\nu2,i1,3,A,One\n",
    )
    cfg = GenericConfig(
        events="log.csv",
        items="log.csv",
        user_col="user",
        item_col="item",
        time_col="ts",
        side_info=[SideInfoField(name="brand")],
        name_column="title",
    )
    got = load_generic(spark, str(tmp_path), cfg)
    assert names(got) == {"i1": "One", "i2": "Two"}
    assert got.rows_read == {"log.csv": 3} and len(events(got)) == 3


def test_python_rules_agree_with_spark_ingest(spark, tmp_path):
    """eges embed's plain-Python MovieLens rules give the walk job's values on tricky cells."""
    titles = [
        "Heat (1995)",
        "Heat (1995)  ",
        "Heat (1995)\t",
        "(1995) Heat",
        "Heat (95)",
        "Heat (١٩٩٥)",
        "Two (1990) (2001)",
        "",
    ]
    genre_cells = [
        "Comedy|Drama",
        " Drama | Comedy |",
        "(no genres listed)",
        "||",
        "A|A|b",
        "Sci-Fi",
        "x|(no genres listed)",
        "",
    ]
    rows = [f'{i + 1},"{t}","{g}"' for i, (t, g) in enumerate(zip(titles, genre_cells))]
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,100\n")
    write(tmp_path / "movies.csv", "movieId,title,genres\n" + "\n".join(rows) + "\n")
    tag_cells = ["Funny", " funny ", "FUNNY", "Dark Comedy", "\tTab", "日本語"]
    write(
        tmp_path / "tags.csv",
        "userId,movieId,tag,timestamp\n" + "\n".join(f'1,1,"{t}",1' for t in tag_cells) + "\n",
    )
    got = side(load_movielens(spark, str(tmp_path), MovieLensConfig()))
    for i, (t, g) in enumerate(zip(titles, genre_cells)):
        assert got[str(i + 1)]["year"] == ml_rules.year(t), t
        assert got[str(i + 1)]["genres"] == ml_rules.genres(g), g
    assert got["1"]["tags"] == ml_rules.tags(tag_cells)
    assert [ml_rules.movie_id(x) for x in [" 007", "7", "+7", "7.5", "1_0", "", "x"]] == [
        "7",
        "7",
        "7",
        None,
        None,
        None,
        None,
    ]


def test_config_keys():
    from eges.config import ConfigError, load_config

    assert load_config(None, ["data.movielens.sep=;"]).data.movielens.sep == ";"
    assert load_config(None, []).data.movielens.sep == ","
    assert load_config(None, ["data.generic.name_column=title"]).data.generic.name_column == "title"
    with pytest.raises(ConfigError, match="data.movielens.sep must not be empty"):
        load_config(None, ["data.movielens.sep=''"])
    with pytest.raises(ConfigError, match="'name' is reserved"):
        load_config(None, ["data.generic.side_info=[{name: name}]"])
