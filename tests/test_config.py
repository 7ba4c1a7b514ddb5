from pathlib import Path

import pytest

from eges.config import Config, ConfigError, from_dict, load_config, parse_override

REPO = Path(__file__).resolve().parent.parent


def test_defaults_follow_the_paper():
    cfg = load_config()
    assert cfg.walks.walk_length == 10
    assert cfg.walks.walks_per_node == 20
    assert cfg.sessions.session_gap == 3600


def test_layering_and_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("walks: {walk_length: 5, seed: 1}\nspark: {conf: {spark.x: '1'}}\n")
    b = tmp_path / "b.yaml"
    b.write_text("walks: {seed: 2}\n")
    cfg = load_config([a, b], ["walks.walks_per_node=3", "spark.master=local[1]"])
    assert (cfg.walks.walk_length, cfg.walks.seed, cfg.walks.walks_per_node) == (5, 2, 3)
    assert cfg.spark.master == "local[1]"
    assert cfg.spark.conf == {"spark.x": "1"}


def test_roundtrip_through_yaml(tmp_path):
    cfg = load_config(None, ["data.generic.side_info=[{name: brand}, {name: tags, sep: '|'}]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("walks.walkz=3", "unknown config key 'walks.walkz'"),
        ("nope.x=1", "unknown config key 'nope'"),
        ("data.generic.side_info=[{name: a, sepp: x}]", "data.generic.side_info[0].sepp"),
        ("walks.walk_length=ten", "walks.walk_length"),
        ("walks.walk_length=1", "walks.walk_length must be >= 2"),
        ("data.format=xml", "data.format"),
        ("train.negatives_per=row", "train.negatives_per is 'row'; expected one of position, walk"),
        ("output.num_shards=0", "output.num_shards"),
    ],
)
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("walks: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("walks.seed")


@pytest.mark.parametrize("path", sorted((REPO / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), Config)


@pytest.mark.parametrize("path", ["on", "off", "yes", "null", "1.5", "~", "[a, b]", "a: b"])
def test_dedicated_options_are_literal_strings(path):
    """``--output on`` is the directory "on": option values do not go through YAML parsing."""
    import argparse

    from eges.config import config_from_args

    args = argparse.Namespace(config=[str(REPO / "conf" / "ml-latest-small.yaml")], set=[])
    cfg = config_from_args(args, {"output.path": path, "train.data": None})
    assert cfg.output.path == path
    assert cfg.train.data == "out/ml-latest-small/walks"  # None: the option was not given
    # --set still parses YAML, and a dedicated option wins over it
    args.set = ["output.path=x", "output.num_shards=3"]
    cfg = config_from_args(args, {"output.path": path})
    assert (cfg.output.path, cfg.output.num_shards) == (path, 3)


@pytest.mark.parametrize("name, problem", [
    ("a/b", "contains '/'"), ("..", "starts with '.'"), (".hidden", "starts with '.'"),
    ("_drop", "starts with '.' or '_'"), ("a\x00b", "control character"), ("a\\b", "contains"),
    ("", "is empty"), (" brand", "white space"), ("item_idx", "reserved"),
])
def test_unsafe_side_info_field_names_are_refused(name, problem):
    side_info = [{"name": "brand"}, {"name": name, "column": "c"}]
    with pytest.raises(ConfigError, match=r"data\.generic\.side_info\[1\]\.name.*" + problem):
        from_dict_generic(side_info)
    with pytest.raises(ConfigError, match=r"data\.recbole\.item_fields.*" + problem):
        from_dict({"data": {"recbole": {"item_fields": {name: "class"}}}})


def test_unsafe_knowledge_graph_field_names_are_refused():
    """A KG relation's field name is the part after its last dot."""
    with pytest.raises(ConfigError, match="kg_relations 'film.film.a/b'.*contains '/'"):
        from_dict({"data": {"recbole": {"kg_relations": ["film.film.a/b"]}}})
    with pytest.raises(ConfigError, match="kg_relations 'film.film.'.*is empty"):
        from_dict({"data": {"recbole": {"kg_relations": ["film.film."]}}})
    assert from_dict({"data": {"recbole": {"kg_relations": ["film.film.actor"]}}})


@pytest.mark.parametrize("name", ["品牌", "brand name", "item.category", "a`b", "genres"])
def test_plain_field_names_are_accepted(name):
    assert from_dict_generic([{"name": name}]).data.generic.side_info[0].name == name


def from_dict_generic(side_info: list) -> Config:
    return from_dict({"data": {"format": "generic", "generic": {"side_info": side_info}}})


@pytest.mark.parametrize("override,message", [
    ("data.movielens.year_bucket={width: 1, bins: 4}", "year_bucket: set exactly one"),
    ("data.movielens.year_bucket={}", "year_bucket: set exactly one"),
    ("data.movielens.year_bucket.width=0", "year_bucket.width must be a positive"),
    ("data.recbole.buckets={year: {bins: 1}}", r"buckets.year.bins must be >= 2"),
    ("data.recbole.buckets={year: {bin: 4}}", r"unknown config key 'data.recbole.buckets.year.bin'"),
    ("data.generic.side_info=[{name: price, sep: '|', bucket: {bins: 4}}]",
     r"side_info\[0\]: a numeric field"),
    ("data.generic.side_info=[{name: price, bucket: {widht: 4}}]",
     r"unknown config key 'data.generic.side_info\[0\].bucket.widht'"),
])
def test_bad_buckets_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_buckets_default_and_roundtrip(tmp_path):
    cfg = load_config(None, ["data.generic.side_info=[{name: price, bucket: {bins: 10}}]"])
    assert cfg.data.movielens.year_bucket.width == 1
    assert cfg.data.recbole.buckets["year"].width == 1
    assert cfg.data.generic.side_info[0].bucket.bins == 10
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    assert load_config(None, ["data.movielens.year_bucket=null"]).data.movielens.year_bucket is None
