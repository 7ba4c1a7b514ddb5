"""Configuration: one frozen dataclass per stage, loaded from YAML with ``--set`` overrides.

The dataclasses own every default; a YAML file in ``conf/`` only states what differs. Several
files may be layered (later wins), then ``--set a.b=c`` overrides are applied; values are parsed
as YAML scalars (``--set walks.walk_length=5``, ``--set spark.master=local[1]``). Unknown keys
and wrong types are errors that name the offending key. Each dataclass checks its own values in
``__post_init__`` (so ``Config()`` and ``dataclasses.replace`` are checked too), and the unknown
key check finds nested sections from the type hints: a new section needs no registry entry. The
resolved config is written next to every output so a run can be reproduced from its directory
alone.

This module is shared by the Spark side and the torch side, so it imports neither.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import logging
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import dacite
import yaml

from eges.buckets import MAX_ABS, MIN_WIDTH


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message names it."""


def _require(checks: list[tuple[bool, str]]) -> None:
    """Check a section's values in order.

    Args:
        checks: (condition, message) pairs; the message names the full dotted key.

    Raises:
        ConfigError: with the message of the first condition that does not hold.
    """
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _check_bucket(b: Bucket, where: str) -> None:
    """Check one :class:`Bucket`; its parent section calls this, as only it knows the key.

    Args:
        b: the buckets of one numeric field.
        where: the bucket's dotted key (``data.movielens.year_bucket``).

    Raises:
        ConfigError: naming ``where`` and the reason.
    """
    if (b.width is None) == (b.bins is None):
        raise ConfigError(f"{where}: set exactly one of width and bins")
    if b.width is not None and not (MIN_WIDTH <= b.width < MAX_ABS):
        raise ConfigError(f"{where}.width must be in [{MIN_WIDTH:g}, 2^53), got {b.width!r}")
    if b.bins is not None and b.bins < 2:
        raise ConfigError(f"{where}.bins must be >= 2, got {b.bins!r}")


# the item table's own columns: a side-info field may not take their name
RESERVED_FIELD_NAMES = {"item_id", "item_idx", "count", "name"}


def _check_field_name(name: str, where: str) -> None:
    """A side-info field name becomes a column and a directory (``vocab/<name>``) of the output:
    refuse names that are not one plain path part or that clash with the item table's columns.

    Raises:
        ConfigError: naming ``where`` and the reason.
    """
    problem = None
    if not name or not name.strip():
        problem = "is empty"
    elif name != name.strip():
        problem = "has leading or trailing white space"
    elif any(c in name for c in "/\\") or any(ord(c) < 32 for c in name):
        problem = "contains '/', '\\' or a control character"
    elif name.startswith((".", "_")):
        problem = "starts with '.' or '_' (Spark and Hadoop skip such paths as hidden)"
    elif name in RESERVED_FIELD_NAMES:
        problem = f"is reserved (a column of the item table: {sorted(RESERVED_FIELD_NAMES)})"
    if problem:
        raise ConfigError(
            f"{where}: side-info field name {name!r} {problem}; it names a column "
            "and the directory vocab/<name> of the output"
        )


@dataclass(frozen=True)
class Bucket:
    """A numeric side-information field (year, price, duration) mapped to buckets, so that a
    new item's value never seen in training still maps (see ``eges/buckets.py``). Set exactly one:

    Attributes:
        width: fixed-width buckets labelled by their lower bound (10: decades; 1: each whole
            number).
        bins: that many quantile bins; the walk job learns their edges from the catalogue and
            stores them with its output.
    """

    width: float | None = None
    bins: int | None = None


@dataclass(frozen=True)
class SideInfoField:
    """One item side-information field of a generic items file.

    Attributes:
        name: field name used in the outputs (``genres``, ``brand``, ...).
        column: column of the items file holding it (defaults to ``name``).
        sep: separator of a multi-valued field (``"|"``); ``None`` means single-valued.
        bucket: a numeric field's buckets (``{bins: 10}`` for price levels, ``{width: 10}``);
            ``None``: every distinct value is its own category.
    """

    name: str
    column: str | None = None
    sep: str | None = None
    bucket: Bucket | None = None


@dataclass(frozen=True)
class MovieLensConfig:
    """MovieLens CSV layout (ml-latest-small, ml-25m, ml-20m)."""

    ratings: str = "ratings.csv"  # userId, movieId, rating, timestamp (every rating is an event)
    movies: str = "movies.csv"  # movieId, title "Name (YYYY)", genres "A|B"
    tags: str | None = "tags.csv"  # None: no tag field
    sep: str = ","  # field delimiter of the three files (";" for a semicolon export)
    # the year of a title's "(YYYY)" as a numeric field: width 1 keeps each year, 10 makes
    # decades; a new movie's year outside the trained ones maps to the nearest. null: a plain
    # category (an unseen year is then ignored)
    year_bucket: Bucket | None = field(default_factory=lambda: Bucket(width=1))

    def __post_init__(self) -> None:
        """Check this section's values (on every construction).

        Raises:
            ConfigError: naming the first bad ``data.movielens`` key.
        """
        if not self.sep:
            raise ConfigError("data.movielens.sep must not be empty")
        if self.year_bucket is not None:
            _check_bucket(self.year_bucket, "data.movielens.year_bucket")


@dataclass(frozen=True)
class RecBoleConfig:
    """RecBole atomic files ``<dataset>.inter``, ``.item`` and optionally ``.link`` + ``.kg``."""

    dataset: str = "ml-100k"  # file name stem: <path>/<dataset>.inter, .item, .link, .kg
    # output field name -> column of the .item file (token_seq columns are multi-valued)
    item_fields: dict[str, str] = field(
        default_factory=lambda: {"year": "release_year", "genres": "class"}
    )
    # knowledge-graph relations used as multi-valued fields; the field name is the part after
    # the last dot (film.film.actor -> actor). Empty: .link/.kg are not read.
    kg_relations: list[str] = field(default_factory=list)
    # item_fields that are numeric, with their buckets (see MovieLensConfig.year_bucket);
    # a name that is not in item_fields is ignored with a warning
    buckets: dict[str, Bucket] = field(default_factory=lambda: {"year": Bucket(width=1)})

    def __post_init__(self) -> None:
        """Check this section's values (on every construction).

        Raises:
            ConfigError: naming the first bad ``data.recbole`` key.
        """
        for name, b in self.buckets.items():
            if b is not None:
                _check_bucket(b, f"data.recbole.buckets.{name}")
        for name in self.item_fields:
            _check_field_name(name, f"data.recbole.item_fields key {name!r}")
        for relation in self.kg_relations:
            _check_field_name(
                relation.rsplit(".", 1)[-1], f"data.recbole.kg_relations {relation!r}"
            )


@dataclass(frozen=True)
class GenericConfig:
    """A generic e-commerce layout: an events file and an items file, columns named here."""

    events: str = "events.csv"  # the behaviour log, one row per event (under data.path)
    items: str | None = "items.csv"  # item side information, one row per item; None: none
    file_format: Literal["csv", "parquet"] = "csv"  # of both files
    delimiter: str = ","  # CSV field delimiter
    user_col: str = "user_id"  # events: who (sessions are per user)
    item_col: str = "item_id"  # events: which item (any string or number)
    time_col: str = "timestamp"  # events: when (see time_format)
    # unix (seconds, may be fractional), unix_ms, or a Spark datetime pattern such as
    # "yyyy-MM-dd HH:mm:ss"
    time_format: str = "unix"
    behavior_col: str | None = None  # events: the behaviour type (click, buy...); None: none
    behaviors: list[str] = field(default_factory=list)  # keep only these; empty keeps all
    items_item_col: str | None = None  # item id column of the items file (default item_col)
    side_info: list[SideInfoField] = field(default_factory=list)  # the items file's fields
    # column of the items file holding a display name (title); written to the item table's
    # ``name`` column for eges.serving.embed / eges.serving.neighbors --names. None: no names
    name_column: str | None = None

    def __post_init__(self) -> None:
        """Check ``side_info``: its field names and buckets (a :class:`SideInfoField` does not
        know its index in the list, which the messages name).

        Raises:
            ConfigError: naming the first bad ``data.generic`` key.
        """
        names = [f.name for f in self.side_info]
        if len(set(names)) != len(names):
            raise ConfigError(f"data.generic.side_info: duplicate field names {names}")
        for i, name in enumerate(names):
            _check_field_name(name, f"data.generic.side_info[{i}].name")
        for i, f in enumerate(self.side_info):
            if f.bucket is not None:
                _check_bucket(f.bucket, f"data.generic.side_info[{i}].bucket")
        for i, f in enumerate(self.side_info):
            if f.bucket is not None and f.sep:
                raise ConfigError(
                    f"data.generic.side_info[{i}]: a numeric field (bucket) is "
                    "single-valued: drop sep or bucket"
                )


@dataclass(frozen=True)
class DataConfig:
    """Where the behaviour logs and item side information come from."""

    # the input layout: MovieLens CSVs, RecBole atomic files, or a generic events + items file
    format: Literal["movielens", "recbole", "generic"] = "movielens"
    path: str = "../shared/data/ml-latest-small"  # directory of the input files
    movielens: MovieLensConfig = field(default_factory=MovieLensConfig)
    recbole: RecBoleConfig = field(default_factory=RecBoleConfig)
    generic: GenericConfig = field(default_factory=GenericConfig)
    # side-info fields written by users after an item exists (reviews, tags), unknown for a new
    # item; the others are editorial (known when the item is created). None: the layout's own
    # (movielens: tags; recbole and generic: none). Used by split.cold_fields
    user_fields: list[str] | None = None

    def __post_init__(self) -> None:
        """Check this section's values (on every construction).

        Raises:
            ConfigError: naming the first bad ``data`` key.
        """
        for name in self.user_fields or []:
            _check_field_name(name, f"data.user_fields {name!r}")


@dataclass(frozen=True)
class SessionsConfig:
    """Sessions and the item graph (paper §2: sessions split at one-hour gaps)."""

    session_gap: int = 3600  # seconds; a gap strictly larger starts a new session
    max_events_per_user: int | None = None  # drop users above this (spam); None: off
    min_item_count: int = 1  # drop events of items with fewer events; 1: off

    def __post_init__(self) -> None:
        """Check this section's values (on every construction).

        Raises:
            ConfigError: naming the first bad ``sessions`` key.
        """
        _require(
            [
                (self.session_gap >= 0, "sessions.session_gap must be >= 0"),
                (self.min_item_count >= 1, "sessions.min_item_count must be >= 1"),
                (
                    self.max_events_per_user is None or self.max_events_per_user >= 1,
                    "sessions.max_events_per_user must be >= 1 or null",
                ),
            ]
        )


@dataclass(frozen=True)
class WalksConfig:
    """Weighted random walks (paper: length 10, 20 walks per node)."""

    walks_per_node: int = 20  # walks started at every item with out-edges
    walk_length: int = 10  # nodes per walk, start node included
    seed: int = 42  # the walks are a function of the graph and this seed alone
    # a node expected to draw more than this share of an average partition's walkers (a hub)
    # has its adjacency row copied to other partitions, so that one task does not hold up
    # every step; the walks are the same either way. null: never split
    hot_node_share: float | None = 0.25
    # no longer used (every other step is now written as a reliable table); accepted so that
    # configs that set it still load, with a warning
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        """Check this section's values (on every construction).

        Raises:
            ConfigError: naming the first bad ``walks`` key.
        """
        _require(
            [
                (self.walks_per_node >= 1, "walks.walks_per_node must be >= 1"),
                (self.walk_length >= 2, "walks.walk_length must be >= 2 (start node + one step)"),
                (
                    self.hot_node_share is None
                    or (
                        isinstance(self.hot_node_share, int | float)
                        and not isinstance(self.hot_node_share, bool)
                        and 0 < self.hot_node_share < float("inf")
                    ),
                    "walks.hot_node_share must be a number > 0 or null",
                ),
            ]
        )
        if self.checkpoint_every is not None:
            logging.getLogger(__name__).warning(
                "walks.checkpoint_every has no effect any more: every other walk step is written "
                "as a reliable table; remove it from the config"
            )


@dataclass(frozen=True)
class SplitConfig:
    """A hold-out split for the evaluation (see ``eges/pipeline/splits.py``); ``none`` for a
    production run. ``eges.evaluation.evaluate`` sets ``kind`` itself, one walk output per task."""

    # none: train on everything (production); edges: hide item pairs (link prediction);
    # items: hold out items (cold start); time: hold out the latest events (next item)
    kind: Literal["none", "edges", "items", "time"] = "none"
    edge_fraction: float = 1 / 3  # edges: share of connected item pairs hidden (paper: 1/3)
    item_fraction: float = 0.1  # items: share of items (with events and side info) held out
    time_fraction: float = 0.2  # time: share of events, the latest, held out
    seed: int = 0  # which edges or items are held out
    # items: the side information a held-out item keeps. editorial: data.user_fields are
    # removed, as a brand-new item has none; all: every field (optimistic for cold start)
    cold_fields: Literal["editorial", "all"] = "editorial"
    # test: hold out the test part; validation: remove the test part from the data altogether
    # and hold out the next part in the same order (the items or pairs after the test ones in
    # the seeded order; the period before the test period, as long), for choosing settings
    # without looking at the test
    holdout: Literal["test", "validation"] = "test"

    def __post_init__(self) -> None:
        """Check this section's values (on every construction).

        Raises:
            ConfigError: naming the first bad ``split`` key.
        """
        _require(
            [
                (0 < self.edge_fraction < 1, "split.edge_fraction must be in (0, 1)"),
                (0 < self.item_fraction < 1, "split.item_fraction must be in (0, 1)"),
                (0 < self.time_fraction < 1, "split.time_fraction must be in (0, 1)"),
                (
                    self.holdout == "test" or self.time_fraction < 0.5,
                    "split.time_fraction must be below 0.5 with split.holdout=validation (the "
                    "validation period before the test period is as long)",
                ),
            ]
        )


MODELS = ["eges", "ges", "bge", "deepwalk", "content", "cooccurrence", "popularity", "random"]


# the served neighbour score's popularity prior: H·Z + β·ln(walk count) (eges.serving.neighbors)
POPULARITY_PRIOR = 0.4


@dataclass(frozen=True)
class EvaluateConfig:
    """The evaluation (``eges evaluate``): tasks, seeds and where the report goes.

    Training settings come from the ``train`` section; the walk settings from ``walks``.
    """

    output: str = "out/eval"  # the report's directory
    # link: held-out item pairs; cold: held-out items from their editorial side information;
    # cold_all: the same with user-written fields too (optimistic: a new item has none); next:
    # next item
    tasks: list[Literal["link", "cold", "cold_all", "next"]] = field(
        default_factory=lambda: ["link", "cold", "next"]
    )
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])  # training seeds, learned models
    # the item and pair hold-outs (cold, cold_all, link) are drawn once per seed here and the
    # results pooled over them (split.seed's in the evaluation directory, the others in
    # split-<seed>/); empty: split.seed only. The time split (next) has no seed.
    split_seeds: list[int] = field(default_factory=list)
    # which of eges, ges, bge, deepwalk, content, cooccurrence, popularity, random to compare
    models: list[str] = field(default_factory=lambda: list(MODELS))
    ks: list[int] = field(default_factory=lambda: [10, 50])  # the K of HR@K and recall@K
    run: str | None = None  # a full-data run for the plots (loss, weights); None: train.output
    examples: int = 5  # cold-start example queries in the report
    # β of the served score H·Z + β·ln(walk count) (eges neighbors --popularity-prior), given
    # to every learned model's H·Z rows; DeepWalk is scored with and without it
    popularity_prior: float = POPULARITY_PRIOR
    # γ of the served score's co-occurrence term + γ·ln(1 + co-occurrences) (eges neighbors
    # --cooccurrence-weight), in the same rows as popularity_prior (DeepWalk's prior rows too)
    cooccurrence_weight: float = 0.0
    # β of the served rows of the cold-start tasks (new items' neighbours, eges embed), when
    # validation chose it apart from the neighbour table's; null: popularity_prior
    new_items_prior: float | None = None
    # DeepWalk (gensim skip-gram), to be tuned on a validation hold-out as the trainer is:
    deepwalk_lr: float = 0.025  # gensim's starting learning rate (alpha; its default)
    deepwalk_epochs: int | None = None  # passes over the walks; null: train.epochs
    deepwalk_ns_exponent: float = 0.75  # negatives from unigram^this (gensim's default)
    deepwalk_prior: float | None = None  # β of DeepWalk's H·Z + prior rows; null: popularity_prior
    # γ of DeepWalk's H·Z + prior rows; null: cooccurrence_weight
    deepwalk_cooccurrence_weight: float | None = None
    # GES's or BGE's own settings in the evaluation, where they differ from train's and from
    # the served terms above (as eges tune chooses them): e.g. {ges: {lr: 0.02, epochs: 2,
    # popularity_prior: 0.2}}; keys lr, epochs, ns_exponent (train.*), popularity_prior,
    # cooccurrence_weight (evaluate.*). EGES's are train's and the keys above.
    model_settings: dict[str, dict[str, float]] = field(default_factory=dict)
    overwrite: bool = False  # replace an existing evaluation directory

    def __post_init__(self) -> None:
        """Check this section's values (on every construction).

        Raises:
            ConfigError: naming the first bad ``evaluate`` key.
        """
        unknown = sorted(set(self.models) - set(MODELS))
        _require(
            [
                (len(self.seeds) >= 1, "evaluate.seeds must list at least one seed"),
                (
                    len(set(self.split_seeds)) == len(self.split_seeds)
                    and all(
                        isinstance(s, int) and not isinstance(s, bool) and s >= 0
                        for s in self.split_seeds
                    ),
                    "evaluate.split_seeds must list distinct integers >= 0",
                ),
                (len(self.tasks) >= 1, "evaluate.tasks must list at least one task"),
                (
                    bool(self.ks) and all(k >= 1 for k in self.ks),
                    "evaluate.ks must be positive integers",
                ),
                (not unknown, f"evaluate.models: unknown {unknown} (known: {MODELS})"),
                (
                    math.isfinite(self.popularity_prior) and self.popularity_prior >= 0,
                    "evaluate.popularity_prior must be a finite number >= 0",
                ),
                (
                    math.isfinite(self.cooccurrence_weight) and self.cooccurrence_weight >= 0,
                    "evaluate.cooccurrence_weight must be a finite number >= 0",
                ),
                (
                    self.new_items_prior is None
                    or (math.isfinite(self.new_items_prior) and self.new_items_prior >= 0),
                    "evaluate.new_items_prior must be a finite number >= 0 or null",
                ),
                (
                    math.isfinite(self.deepwalk_lr) and self.deepwalk_lr > 0,
                    "evaluate.deepwalk_lr must be a finite number > 0",
                ),
                (
                    self.deepwalk_epochs is None or self.deepwalk_epochs >= 1,
                    "evaluate.deepwalk_epochs must be >= 1 or null",
                ),
                (
                    math.isfinite(self.deepwalk_ns_exponent),
                    "evaluate.deepwalk_ns_exponent must be a finite number",
                ),
                (
                    self.deepwalk_prior is None
                    or (math.isfinite(self.deepwalk_prior) and self.deepwalk_prior >= 0),
                    "evaluate.deepwalk_prior must be a finite number >= 0 or null",
                ),
                (
                    self.deepwalk_cooccurrence_weight is None
                    or (
                        math.isfinite(self.deepwalk_cooccurrence_weight)
                        and self.deepwalk_cooccurrence_weight >= 0
                    ),
                    "evaluate.deepwalk_cooccurrence_weight must be a finite number >= 0 or null",
                ),
                *_model_settings_checks(self.model_settings),
            ]
        )

    @property
    def new_items_beta(self) -> float:
        """β of the cold-start tasks' served rows: ``new_items_prior``, else
        ``popularity_prior``."""
        return self.popularity_prior if self.new_items_prior is None else self.new_items_prior

    @property
    def deepwalk_beta(self) -> float:
        """β of DeepWalk's "H·Z + prior" rows: ``deepwalk_prior``, else ``popularity_prior``."""
        return self.popularity_prior if self.deepwalk_prior is None else self.deepwalk_prior

    @property
    def deepwalk_gamma(self) -> float:
        """γ of DeepWalk's "H·Z + prior" rows: ``deepwalk_cooccurrence_weight``, else
        ``cooccurrence_weight``."""
        w = self.deepwalk_cooccurrence_weight
        return self.cooccurrence_weight if w is None else w


# what evaluate.model_settings may set for GES or BGE: train.* keys, then evaluate.* keys
MODEL_TRAIN_KEYS = ("lr", "epochs", "ns_exponent")
MODEL_SCORE_KEYS = ("popularity_prior", "cooccurrence_weight")
MODEL_SETTINGS_KEYS = (*MODEL_TRAIN_KEYS, *MODEL_SCORE_KEYS)


def _model_settings_checks(
    model_settings: dict[str, dict[str, float]],
) -> list[tuple[bool, str]]:
    checks = []
    for model, settings in model_settings.items():
        where = f"evaluate.model_settings.{model}"
        checks.append(
            (model in ("ges", "bge"), f"{where}: only ges and bge (EGES's settings are train's)")
        )
        unknown = sorted(set(settings) - set(MODEL_SETTINGS_KEYS))
        checks.append(
            (not unknown, f"{where}: unknown {unknown} (known: {list(MODEL_SETTINGS_KEYS)})")
        )
        for key, value in settings.items():
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
            need = {"lr": " > 0", "epochs": ": an integer >= 1", "ns_exponent": ""}
            need = need.get(key, " >= 0")
            if key == "lr":
                ok = ok and value > 0
            elif key == "epochs":
                ok = ok and value >= 1 and float(value).is_integer()
            elif key != "ns_exponent":
                ok = ok and value >= 0
            checks.append((ok, f"{where}.{key} must be a finite number{need}"))
    return checks


@dataclass(frozen=True)
class OutputConfig:
    """The walk job's output directory."""

    path: str = "out/walks"  # the output directory (published atomically when complete)
    num_shards: int = 8  # walk parquet files of similar size
    overwrite: bool = False  # replace an existing output atomically instead of refusing

    def __post_init__(self) -> None:
        """Check this section's values (on every construction).

        Raises:
            ConfigError: naming the first bad ``output`` key.
        """
        _require([(self.num_shards >= 1, "output.num_shards must be >= 1")])


@dataclass(frozen=True)
class SparkConfig:
    """Spark session settings. ``master`` None keeps what spark-submit (or local[*]) gives."""

    # local[2], spark://host:7077...; under spark-submit its --master wins; None: local[*]
    master: str | None = None
    app_name: str = "eges-walks"  # the application's name in Spark's UI
    shuffle_partitions: int = 8  # spark.sql.shuffle.partitions: tasks per shuffle stage
    graph_partitions: int | None = None  # adjacency hash partitions; None: shuffle_partitions
    # Spark's own (log4j) lines on stderr at this level and above, from the SparkContext's start
    log_level: Literal["OFF", "FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE", "ALL"] = "WARN"
    conf: dict[str, str] = field(default_factory=dict)  # any other spark.* setting

    def __post_init__(self) -> None:
        """Check this section's values (on every construction).

        Raises:
            ConfigError: naming the first bad ``spark`` key.
        """
        _require(
            [
                (self.shuffle_partitions >= 1, "spark.shuffle_partitions must be >= 1"),
                (
                    self.graph_partitions is None or self.graph_partitions >= 1,
                    "spark.graph_partitions must be >= 1 or null",
                ),
            ]
        )


# train.optimizer=auto: dense Adam up to this many items, sparse_adam (RowAdam) above. The
# crossing measured with bench/profile_step.py (d 128, 2 CPU threads) lies between 9.7k items
# (dense Adam 1.3x RowAdam) and 100k (0.6x); at 1M dense Adam is 0.13x (bench/results.md)
AUTO_SPARSE_ITEMS = 50_000


@dataclass(frozen=True)
class TrainConfig:
    """The EGES trainer (``eges/train.py``)."""

    data: str = "out/walks"  # a walk job output directory
    output: str = "out/run"  # run directory: checkpoints, logs, exports
    mode: Literal["eges", "ges", "bge"] = "eges"  # EGES; GES = equal weights; BGE = item only
    embedding_dim: int = 128  # paper: 160
    window: int = 5  # skip-gram window: contexts up to this many positions either side
    num_negatives: int = 5  # K: negative samples per (item, context) pair
    # position: K draws per walk position, shared by its pairs; walk: K draws per walk, shared
    # by all its positions: faster, measurably worse embeddings (training/loss.py, bench/results.md)
    negatives_per: Literal["position", "walk"] = "position"
    # negatives from unigram^ns_exponent of the walk frequencies (word2vec's 0.75); what this
    # trains out of H·Z the served score's popularity prior gives back (bench/results.md)
    ns_exponent: float = 0.75
    batch_size: int = 256  # walks per batch; every window pair of those walks is used
    epochs: int = 1  # passes over the walk shards
    max_steps: int = -1  # -1: run all epochs
    # adam: dense gradients, every row updated each step (all-reduced whole under DDP);
    # sparse_adam: the rows a batch touched only (RowAdam; its own all_gather exchange under
    # DDP); auto: adam up to 50,000 items, sparse_adam above (eges/training/optim.py)
    # rowwise_adagrad: the sharded tables' optimiser (train.sharding: sharded; auto picks it there)
    optimizer: Literal["auto", "adam", "sparse_adam", "adagrad", "sgd", "rowwise_adagrad"] = "auto"
    lr: float = 0.01  # learning rate (the start of the linear schedule)
    # linear: decays to lr * 1e-4 over the run's steps, as word2vec does; or constant
    lr_schedule: Literal["constant", "linear"] = "linear"
    # mean: the loss is the mean over a batch's pairs; sum: their sum (word2vec's per-pair step:
    # with sgd, lr is the step of one pair)
    loss_reduction: Literal["mean", "sum"] = "mean"
    # share of walk positions trained from side information alone (without the item's own
    # vector), as a new item is embedded; 0 = the paper's training
    item_dropout: float = 0.0
    # each side-info field's weight (> 0) in a new item's vector (cold start), e.g. {genres: 1,
    # year: 2}; a field left out weighs 1; null: all alike, the paper's mean. The evaluation's
    # cold-start validation chooses them (docs/evaluation.md); replicated tables only
    cold_weights: dict[str, float] | None = None
    # score + log(1/K) inside the loss's sigmoid: the prior odds of a context against K
    # negatives, so that no shared direction is spent on them (eges/training/loss.py)
    prior_offset: bool = True
    attention_lr: float | None = None  # learning rate of EGES' attention rows A (None: lr)
    shuffle_buffer: int = 8192  # walks shuffled together in memory
    num_workers: int = 0  # DataLoader workers per process
    seed: int = 42  # initial vectors, negatives, shuffling
    checkpoint_every_n_steps: int = 500  # also at the end of every epoch
    log_every_n_steps: int = 20  # loss and throughput to metrics.csv / TensorBoard
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"  # auto: a GPU when one is visible
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # DDP backend; auto: nccl on GPU
    precision: str = "32-true"  # Lightning's precision ("bf16-mixed" on a GPU that has it)
    # the step's loss and gradients: c — one C function compiled on first use (CPU, float32,
    # negatives per position; eges/training/fused.py); torch — PyTorch operators (any device);
    # auto — c where it applies and a C compiler is found, else torch
    kernel: Literal["auto", "c", "torch"] = "auto"
    # replicated: every process holds every table (DDP; the C step on CPU); sharded: the tables
    # are split by row over the processes (TorchRec; row-wise Adagrad fused into the backward;
    # eges/training/sharded.py), for catalogues one process cannot hold; auto: sharded when
    # the replicated tables would take more than half of a process's memory (and the settings
    # and installed packages allow it), else replicated; a resume follows its checkpoint
    sharding: Literal["auto", "replicated", "sharded"] = "auto"
    overwrite: bool = False  # replace an existing run directory instead of refusing

    def __post_init__(self) -> None:
        """Check this section's values (on every construction).

        Raises:
            ConfigError: naming the first bad ``train`` key.
        """
        _require(
            [
                (self.embedding_dim >= 1, "train.embedding_dim must be >= 1"),
                (self.window >= 1, "train.window must be >= 1"),
                (self.num_negatives >= 1, "train.num_negatives must be >= 1"),
                (self.batch_size >= 1, "train.batch_size must be >= 1"),
                (self.epochs >= 1, "train.epochs must be >= 1"),
                (self.max_steps == -1 or self.max_steps >= 1, "train.max_steps must be -1 or >= 1"),
                (self.lr > 0, "train.lr must be > 0"),
                (0 <= self.item_dropout < 1, "train.item_dropout must be in [0, 1)"),
                (
                    self.cold_weights is None
                    or all(
                        isinstance(w, (int, float))
                        and not isinstance(w, bool)
                        and math.isfinite(w)
                        and w > 0
                        for w in self.cold_weights.values()
                    ),
                    "train.cold_weights must map field names to finite numbers > 0",
                ),
                (
                    self.attention_lr is None or self.attention_lr > 0,
                    "train.attention_lr must be > 0",
                ),
                (
                    self.shuffle_buffer >= self.batch_size,
                    "train.shuffle_buffer must be >= train.batch_size",
                ),
                (self.num_workers >= 0, "train.num_workers must be >= 0"),
                (self.checkpoint_every_n_steps >= 1, "train.checkpoint_every_n_steps must be >= 1"),
                (self.log_every_n_steps >= 1, "train.log_every_n_steps must be >= 1"),
                (
                    self.optimizer in ("auto", "rowwise_adagrad")
                    if self.sharding == "sharded"
                    else self.optimizer != "rowwise_adagrad",
                    "train.optimizer=rowwise_adagrad goes with train.sharding=sharded, which "
                    "trains with it alone (auto picks each path's optimiser)",
                ),
                (
                    self.sharding != "sharded" or not self.cold_weights,
                    "train.cold_weights applies to replicated tables only (train.sharding=sharded "
                    "keeps the plain mean for new items): leave it out, or set "
                    "train.sharding=replicated",
                ),
                (
                    self.sharding != "sharded" or self.negatives_per == "position",
                    "train.sharding=sharded draws negatives per position: "
                    "leave train.negatives_per at position",
                ),
                (
                    self.sharding != "sharded" or str(self.precision) in ("32-true", "32"),
                    "train.sharding=sharded trains in 32-bit precision: "
                    "leave train.precision at 32-true",
                ),
                (
                    self.sharding != "sharded" or self.kernel != "c",
                    "train.sharding=sharded computes the loss with PyTorch operators: "
                    "train.kernel=c cannot be used",
                ),
                (
                    self.sharding != "sharded" or self.attention_lr is None,
                    "train.sharding=sharded has one learning rate: unset train.attention_lr",
                ),
                (
                    self.sharding != "sharded" or self.loss_reduction == "mean",
                    "train.sharding=sharded trains on the mean loss: "
                    "leave train.loss_reduction at mean",
                ),
            ]
        )


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    walks: WalksConfig = field(default_factory=WalksConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable) of every value, defaults included (less
        keys that no longer have an effect and are not set)."""
        out = dataclasses.asdict(self)
        if out["walks"]["checkpoint_every"] is None:
            del out["walks"]["checkpoint_every"]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"a.b=c"`` into ``{"a": {"b": <c parsed as a YAML scalar>}}``."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
    return _nested(key, value)


def _nested(key: str, value: Any) -> dict[str, Any]:
    """``("a.b", v)`` -> ``{"a": {"b": v}}``."""
    node: dict[str, Any] = {}
    cur = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value
    return node


def _check_keys(cls: type, data: Any, where: str) -> None:
    """Reject unknown keys at every level, naming the full dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key {path!r} (known: {', '.join(fields)})")
        sub, kind = _nested_dataclasses(cls).get(key, (None, ""))
        if sub is not None and value is not None:
            if kind == "list" and isinstance(value, list):
                for i, item in enumerate(value):
                    _check_keys(sub, item, f"{path}[{i}]")
            elif kind == "dict" and isinstance(value, dict):
                for name, item in value.items():
                    if item is not None:
                        _check_keys(sub, item, f"{path}.{name}")
            else:
                _check_keys(sub, value, path)


@functools.cache
def _nested_dataclasses(cls: type) -> dict[str, tuple[type, str]]:
    """The fields of dataclass ``cls`` that hold dataclasses, read from its type hints (which
    resolves the string annotations of ``from __future__ import annotations``).

    Args:
        cls: a dataclass.

    Returns:
        Field name -> (its dataclass, how the field holds it): ``one`` (``X`` or ``X | None``),
        ``list`` (``list[X]``) or ``dict`` (``dict[str, X]``). Other fields are left out.
    """
    hints = typing.get_type_hints(cls)
    nested = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if get_origin(hint) in (Union, types.UnionType):  # X | None: X
            options = [a for a in get_args(hint) if a is not type(None)]
            if len(options) != 1:
                continue
            hint = options[0]
        origin, args = get_origin(hint), get_args(hint)
        for kind, sub in [
            ("one", hint),
            ("list", args[0] if origin is list and args else None),
            ("dict", args[1] if origin is dict and len(args) == 2 else None),
        ]:
            if isinstance(sub, type) and dataclasses.is_dataclass(sub):
                nested[f.name] = (sub, kind)
                break
    return nested


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _as_float(v: Any) -> Any:
    """A float field's value: ints and numbers written as text (``1e-7``) become floats;
    anything else is left for the type check to reject."""
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str) and _FLOAT.fullmatch(v.strip()):
        return float(v)
    return v


def from_dict(data: dict[str, Any]) -> Config:
    """Build a validated :class:`Config` from a nested dict (unknown keys are errors).

    The values are checked by each dataclass's ``__post_init__`` as dacite builds it, bottom-up;
    dacite calls the constructors directly, so their :class:`ConfigError` (not a ``DaciteError``)
    comes through unchanged. (Only a union of several non-None types would swallow it, trying
    each: no field has one.)
    """
    _check_keys(Config, data, "")
    try:
        # YAML writes 1 for 1.0: accept ints where floats are expected; and YAML 1.1 reads
        # 1e-7 (no dot) as a string: accept that too where a float is expected
        cfg = dacite.from_dict(
            Config,
            data,
            config=dacite.Config(strict=True, type_hooks={float: _as_float}),
        )
    except dacite.WrongTypeError as exc:
        if get_origin(exc.field_type) is Literal:  # a choice: name the allowed values
            choices = ", ".join(map(str, get_args(exc.field_type)))
            raise ConfigError(
                f"invalid config: {exc.field_path} is {exc.value!r}; expected one of {choices}"
            ) from None
        raise ConfigError(f"invalid config: {exc}") from None
    except dacite.DaciteError as exc:
        raise ConfigError(f"invalid config: {exc}") from None
    return cfg


def load_config(
    paths: list[str | Path] | str | Path | None = None,
    overrides: list[str] | None = None,
    literals: dict[str, Any] | None = None,
) -> Config:
    """Load YAML files (later ones win), apply ``key=value`` overrides, then ``literals``, validate.

    Args:
        paths: one or more YAML files; none gives the defaults.
        overrides: ``--set`` strings such as ``"walks.seed=7"``; values are parsed as YAML.
        literals: dotted key -> value, set as is (not parsed: a path ``on`` stays the string
            ``"on"``); ``None`` values are skipped.

    Returns:
        The frozen, validated configuration.

    Raises:
        ConfigError: a missing/unparsable file, an unknown key or a wrong type.
    """
    if paths is None:
        paths = []
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        merged = _deep_merge(merged, loaded)
    for text in overrides or []:
        merged = _deep_merge(merged, parse_override(text))
    for key, value in (literals or {}).items():
        if value is not None:
            merged = _deep_merge(merged, _nested(key, value))
    return from_dict(merged)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--config`` and ``--set`` options every entry point shares."""
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        help="YAML config; repeat to layer several (later wins)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set walks.walk_length=5 (every key, its default "
        "and checks: eges config [PREFIX], or docs/configuration.md)",
    )


def config_from_args(
    args: argparse.Namespace, options: dict[str, str | None] | None = None
) -> Config:
    """Load an entry point's config: ``--config`` files, then ``--set``, then ``options``
    (dotted key -> value of a dedicated option such as ``--output``; ``None`` is skipped).

    Option values are taken literally, not parsed as YAML: ``--output on`` is the directory
    ``on``, ``--output 1e3`` the directory ``1e3``.
    """
    return load_config(args.config, list(args.set), options)
