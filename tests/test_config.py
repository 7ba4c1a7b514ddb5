import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import eges.config
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
        ("walks.hot_node_share=0", "walks.hot_node_share must be a number > 0 or null"),
        ("walks.hot_node_share=.inf", "walks.hot_node_share must be a number > 0 or null"),
        ("walks.hot_node_share=true", "walks.hot_node_share"),
        ("data.format=xml", "data.format"),
        ("train.negatives_per=row", "train.negatives_per is 'row'; expected one of position, walk"),
        ("output.num_shards=0", "output.num_shards"),
        ("evaluate.popularity_prior=-0.1", "evaluate.popularity_prior must be a finite number"),
        ("evaluate.popularity_prior=.inf", "evaluate.popularity_prior must be a finite number"),
        ("train.lr=fast", "train.lr"),
        ("train.lr=1e-7x", "train.lr"),
        ("evaluate.deepwalk_cooccurrence_weight=-1", "evaluate.deepwalk_cooccurrence_weight"),
        ("evaluate.model_settings={deepwalk: {lr: 1}}", "model_settings.deepwalk: only ges"),
        ("evaluate.model_settings={eges: {lr: 1}}", "EGES's settings are train's"),
        ("evaluate.model_settings={ges: {window: 3}}", "model_settings.ges: unknown ['window']"),
        ("evaluate.model_settings={ges: {lr: 0}}", "model_settings.ges.lr must be a finite"),
        ("evaluate.model_settings={bge: {epochs: 1.5}}", "bge.epochs must be a finite number: "),
        ("evaluate.model_settings={bge: {ns_exponent: .nan}}", "bge.ns_exponent must be a"),
        ("evaluate.model_settings={bge: {popularity_prior: -1}}", "popularity_prior must be a"),
        ("evaluate.model_settings={bge: {lr: fast}}", "evaluate.model_settings"),
    ],
)
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


@pytest.mark.parametrize(
    "text, value", [("1e-7", 1e-7), ("2E3", 2000.0), ("+1.5e-2", 0.015), ("3", 3.0)]
)
def test_a_float_written_without_a_dot_is_a_float(text, value):
    # YAML 1.1 reads 1e-7 as the string "1e-7"
    lr = load_config(None, [f"train.lr={text}"]).train.lr
    assert isinstance(lr, float) and lr == value


def test_a_key_that_no_longer_has_an_effect_loads_with_a_warning(caplog):
    cfg = load_config(None, ["walks.checkpoint_every=3"])
    assert "walks.checkpoint_every has no effect" in caplog.text
    assert cfg.walks.walk_length == 10
    # not written back into resolved configs when unset
    assert "checkpoint_every" not in load_config(None).to_dict()["walks"]


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


@pytest.mark.parametrize(
    "name, problem",
    [
        ("a/b", "contains '/'"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("_drop", "starts with '.' or '_'"),
        ("a\x00b", "control character"),
        ("a\\b", "contains"),
        ("", "is empty"),
        (" brand", "white space"),
        ("item_idx", "reserved"),
    ],
)
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


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.movielens.year_bucket={width: 1, bins: 4}", "year_bucket: set exactly one"),
        ("data.movielens.year_bucket={}", "year_bucket: set exactly one"),
        ("data.movielens.year_bucket.width=0", r"year_bucket.width must be in \[0.001, 2\^53\)"),
        ("data.recbole.buckets={year: {bins: 1}}", r"buckets.year.bins must be >= 2"),
        (
            "data.recbole.buckets={year: {bin: 4}}",
            r"unknown config key 'data.recbole.buckets.year.bin'",
        ),
        (
            "data.generic.side_info=[{name: price, sep: '|', bucket: {bins: 4}}]",
            r"side_info\[0\]: a numeric field",
        ),
        (
            "data.generic.side_info=[{name: price, bucket: {widht: 4}}]",
            r"unknown config key 'data.generic.side_info\[0\].bucket.widht'",
        ),
    ],
)
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


def _reachable(cls: type, steps: tuple = ()):
    """Every dataclass reachable from ``cls`` through its type hints (``X``, ``X | None``,
    ``list[X]``, ``dict[str, X]``), with the steps (keys and list indices) that lead to it."""
    yield cls, steps
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, types.UnionType):  # X | None: X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            yield from _reachable(hint, (*steps, f.name))
        elif origin is list and dataclasses.is_dataclass(args[0]):
            yield from _reachable(args[0], (*steps, f.name, 0))
        elif origin is dict and dataclasses.is_dataclass(args[1]):
            yield from _reachable(args[1], (*steps, f.name, "k"))


def test_every_config_dataclass_is_checked_for_unknown_keys():
    """No registry: every dataclass of eges.config is found from ``Config``'s type hints, and a
    stray key at its place in the config is named with its full dotted path."""
    found: dict[type, set[str]] = {}
    for cls, steps in _reachable(Config):
        data: typing.Any = {"bogus": 1}
        for step in reversed(steps):
            data = [data] if isinstance(step, int) else {step: data}
        path = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)
        found.setdefault(cls, set()).add(path)
        path = f"{path}.bogus".lstrip(".")
        known = ", ".join(f.name for f in dataclasses.fields(cls))
        with pytest.raises(ConfigError) as err:
            from_dict(data)
        assert str(err.value) == f"unknown config key {path!r} (known: {known})"
    defined = {
        c
        for _, c in inspect.getmembers(eges.config, dataclasses.is_dataclass)
        if c.__module__ == "eges.config"
    }
    assert set(found) == defined
    assert found[eges.config.Bucket] == {
        ".data.movielens.year_bucket",
        ".data.recbole.buckets.k",
        ".data.generic.side_info[0].bucket",
    }


@dataclass(frozen=True)
class _Leaf:
    x: int = 0


@dataclass(frozen=True)
class _Tree:
    one: _Leaf = field(default_factory=_Leaf)
    maybe: _Leaf | None = None
    many: list[_Leaf] = field(default_factory=list)
    named: dict[str, _Leaf] = field(default_factory=dict)
    plain: dict[str, int] = field(default_factory=dict)


@pytest.mark.parametrize(
    "data, path",
    [
        ({"one": {"y": 1}}, "one.y"),
        ({"maybe": {"y": 1}}, "maybe.y"),
        ({"many": [{"x": 1}, {"y": 1}]}, "many[1].y"),
        ({"named": {"a": {"x": 1}, "b": {"y": 1}}}, "named.b.y"),
    ],
)
def test_a_new_nested_dataclass_needs_no_registry(data, path):
    """A dataclass eges.config has never seen is recursed into from its type hints alone."""
    with pytest.raises(ConfigError) as err:
        eges.config._check_keys(_Tree, data, "")
    assert str(err.value) == f"unknown config key {path!r} (known: x)"
    eges.config._check_keys(_Tree, {"plain": {"a": 1}, "maybe": None, "many": [{"x": 2}]}, "")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": {"lr": 0}}, "train.lr must be > 0"),
        # was a ZeroDivisionError in the first training step
        ({"train": {"log_every_n_steps": 0}}, "train.log_every_n_steps must be >= 1"),
        (
            {"train": {"batch_size": 512, "shuffle_buffer": 256}},
            "train.shuffle_buffer must be >= train.batch_size",
        ),
        (
            {"sessions": {"max_events_per_user": 0}},
            "sessions.max_events_per_user must be >= 1 or null",
        ),
        ({"split": {"item_fraction": 1}}, "split.item_fraction must be in (0, 1)"),
        (
            {"split": {"holdout": "validation", "time_fraction": 0.5}},
            "split.time_fraction must be below 0.5 with split.holdout=validation (the "
            "validation period before the test period is as long)",
        ),
        (
            {"data": {"user_fields": ["a/b"]}},
            "data.user_fields 'a/b': side-info field name 'a/b' contains '/', '\\' or a control "
            "character; it names a column and the directory vocab/<name> of the output",
        ),
        ({"spark": {"graph_partitions": 0}}, "spark.graph_partitions must be >= 1 or null"),
        ({"evaluate": {"ks": [10, 0]}}, "evaluate.ks must be positive integers"),
        (
            {"evaluate": {"split_seeds": [0, 0]}},
            "evaluate.split_seeds must list distinct integers >= 0",
        ),
        (
            {"evaluate": {"split_seeds": [-1]}},
            "evaluate.split_seeds must list distinct integers >= 0",
        ),
        (
            {"evaluate": {"split_seeds": [True]}},
            "evaluate.split_seeds must list distinct integers >= 0",
        ),
        ({"data": {"movielens": {"sep": ""}}}, "data.movielens.sep must not be empty"),
        (
            {"data": {"recbole": {"buckets": {"year": {"bins": 1}}}}},
            "data.recbole.buckets.year.bins must be >= 2, got 1",
        ),
        (
            {"data": {"generic": {"side_info": [{"name": "a"}, {"name": "a"}]}}},
            "data.generic.side_info: duplicate field names ['a', 'a']",
        ),
    ],
)
def test_post_init_errors_come_through_dacite_unchanged(data, message):
    """Each section checks itself in ``__post_init__``; dacite builds nested sections bottom-up
    and the ConfigError reaches the caller with its message intact."""
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert str(err.value) == message
    assert err.value.__cause__ is None and err.value.__context__ is None


def test_post_init_checks_direct_construction_and_replace():
    cfg = Config()  # the defaults are valid
    with pytest.raises(ConfigError, match=r"^train\.lr must be > 0$"):
        dataclasses.replace(cfg.train, lr=0)
    with pytest.raises(ConfigError, match=r"^walks\.walk_length must be >= 2"):
        dataclasses.replace(cfg.walks, walk_length=1)
    assert dataclasses.replace(cfg.train, seed=7, data="elsewhere").seed == 7
