"""Ingest: raw behaviour logs and item catalogues -> typed events and item side information.

Three layouts are read (see ``eges.config.DataConfig``): MovieLens CSVs, RecBole atomic files
and a generic events + items layout. Whatever the layout, ingest returns

* ``events``: ``user_id`` string, ``item_id`` string, ``ts`` double (seconds);
* ``side_info``: ``item_id`` string plus one ``array<string>`` column per side-info field
  (single-valued fields are arrays of at most one value; no value is an empty array);
* ``names``: ``item_id``, ``name`` (display name: MovieLens title, RecBole ``movie_title``, the
  generic ``name_column``), one row per named item; None when the layout has no names;
* ``dropped``: rows dropped, counted by reason (``"ratings.csv: non-integer movieId"``).

Rows are never lost silently: every parsing function tags a bad row with a reason in a
``_drop`` column, and :func:`split_drops` counts the reasons before filtering them out. A missing
file or column is an :class:`InputError` that names it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from eges import movielens as ml_rules
from eges.config import Bucket, DataConfig, GenericConfig, MovieLensConfig, RecBoleConfig
from eges.schema import NAME_COLUMN

log = logging.getLogger(__name__)

DROP = "_drop"
CORRUPT = "_corrupt"
COUNTED = "_counted"  # true: the row's drop was already counted (one file read in two roles)
MOVIELENS_NO_GENRE = ml_rules.NO_GENRE
CSV_PRUNING = "spark.sql.csv.parser.columnPruning.enabled"


def quote(name: str) -> str:
    """A column name as a Spark SQL identifier: in backticks, embedded backticks doubled.

    Column names come from input headers and the config and may hold dots, spaces, backticks
    or any other character; unquoted, ``item.id`` would be read as field ``id`` of a struct.
    """
    return "`" + name.replace("`", "``") + "`"


def col(name: str) -> Column:
    """The column called ``name``, whatever characters it holds (see :func:`quote`)."""
    return F.col(quote(name))


class InputError(ValueError):
    """Input that cannot be read at all: a missing file, an empty file, a missing column."""


@dataclass
class Ingested:
    """What ingest hands to the graph stage."""

    fields: list[str]
    lowercase: list[str] = field(default_factory=list)  # fields whose values were lower-cased
    events: DataFrame | None = None
    side_info: DataFrame | None = None
    names: DataFrame | None = None  # item_id, name; None: the layout has no display names
    buckets: dict[str, Bucket] = field(default_factory=dict)  # numeric fields (eges.buckets)
    dropped: Counter = field(default_factory=Counter)
    rows_read: Counter = field(default_factory=Counter)
    # fields written by users after the item exists (MovieLens tags), unknown for a new item
    user_fields: list[str] = field(default_factory=list)
    # side information written at a time: item_id, one array column per timed field, ts
    # (seconds; null when the file has no time); side_info holds every row of it
    timed: DataFrame | None = None
    untimed_side_info: DataFrame | None = None  # side_info without the timed fields' values

    def side_info_before(self, cutoff: float | None) -> DataFrame:
        """The side information as known before ``cutoff`` (seconds; None: all of it).

        Values of timed fields (MovieLens tags) written at or after the cutoff are left out, so
        a split in time does not let the held-out period's tags into training. Without any
        time (a file with no timestamp column) every row is kept; rows whose time could not be
        read, in a file that has times, are left out. A warning says which.
        """
        if cutoff is None or self.timed is None:
            return self.side_info
        timed_fields = [c for c in self.timed.columns if c not in ("item_id", "ts")]
        row = self.timed.agg(
            F.count("ts").alias("timed"), F.sum(F.col("ts").isNull().cast("long")).alias("untimed")
        ).first()
        keep_untimed = row["timed"] == 0
        if row["untimed"]:
            log.warning(
                "side information %s: %s of its rows have no time: %s",
                timed_fields,
                f"{row['untimed']:,}",
                "all of them are used, including what may have been written in the held-out period"
                if keep_untimed
                else "left out of training, as they may have been written in the held-out period",
            )
        known = F.col("ts").isNull() if keep_untimed else F.lit(False)
        before = self.timed.filter(known | (F.col("ts") < cutoff))
        side = self.untimed_side_info.join(
            merge_side_info(before, timed_fields), "item_id", "full_outer"
        )
        return fill_empty(side, self.fields)

    def keep(self, tagged: DataFrame, file: str) -> DataFrame:
        """Count ``file``'s rows and drop reasons (see :func:`split_drops`); return kept rows."""
        kept, dropped, total = split_drops(tagged)
        self.dropped.update(dropped)
        self.rows_read[file] = total
        return kept


# --------------------------------------------------------------------------- reading


def _exists(path: str) -> bool:
    if "://" in path and not path.startswith("file://"):
        return True  # remote filesystems: let Spark report it
    return Path(path.removeprefix("file://")).exists()


def read_csv(
    spark: SparkSession, path: str, required: list[str], *, sep: str = ",", quote: str | None = '"'
) -> DataFrame:
    """Read a delimited text file with a header, every column as a string.

    Rows whose number of fields differs from the header get a non-null ``_corrupt`` column
    (Spark's PERMISSIVE mode) so they can be counted instead of half-parsed.

    Args:
        spark: the session.
        path: the file (or directory of files).
        required: column names that must be in the header.
        sep: field separator.
        quote: quote character; None turns quoting off (RecBole files are not quoted).

    Raises:
        InputError: the file is missing, empty, or lacks a required column.
    """
    if not _exists(path):
        raise InputError(f"input file not found: {path}")
    # With CSV column pruning Spark parses only the selected columns and cannot see that a row
    # has too many fields; malformed rows must be detected, so parse whole rows.
    spark.conf.set(CSV_PRUNING, "false")
    quote_opt = quote if quote is not None else "\u0000"
    try:
        header = (
            spark.read.option("header", True)
            .option("sep", sep)
            .option("quote", quote_opt)
            .option("escape", quote_opt)
            .csv(path)
            .columns
        )
    except AnalysisException as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not header:
        raise InputError(f"{path} is empty: expected a header line with {required}")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; the header has {header}")
    schema = StructType(
        [StructField(c, StringType()) for c in header] + [StructField(CORRUPT, StringType())]
    )
    return (
        spark.read.option("header", True)
        .option("sep", sep)
        .option("quote", quote_opt)
        .option("escape", quote_opt)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
        .schema(schema)
        .csv(path)
    )


def read_parquet(spark: SparkSession, path: str, required: list[str]) -> tuple[DataFrame, set[str]]:
    """Read parquet, check required columns, turn every column into a string for uniform parsing.

    Timestamp columns become epoch seconds (to be parsed as ``unix``); integral floating-point
    values lose their ".0" so ids stored as 7.0 match ids stored as 7.

    Returns:
        (the string columns plus an empty ``_corrupt``, the names of timestamp columns).
    """
    if not _exists(path):
        raise InputError(f"input file not found: {path}")
    try:
        df = spark.read.parquet(path)
    except AnalysisException as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; it has {df.columns}")
    cols, timestamps = [], set()
    for c in dict.fromkeys(required):
        kind = df.schema[c].dataType.typeName()
        value = col(c)
        if kind.startswith("timestamp"):
            timestamps.add(c)
            value = F.unix_micros(value.cast("timestamp")) / 1e6
        elif kind in ("float", "double"):
            # both branches as strings: a CASE of long and double would be double again
            value = F.when(value == F.floor(value), value.cast("long").cast("string")).otherwise(
                value.cast("string")
            )
        cols.append(value.cast("string").alias(c))
    return df.select(*cols, F.lit(None).cast("string").alias(CORRUPT)), timestamps


# --------------------------------------------------------------------------- tagging


def reason(rules: list[tuple[Column, str]]) -> Column:
    """The reason of the first rule whose condition holds; null when none does."""
    out: Column = F.lit(None).cast("string")
    for cond, why in reversed(rules):
        out = F.when(F.coalesce(cond, F.lit(False)), F.lit(why)).otherwise(out)
    return out


def tag(df: DataFrame, rules: list[tuple[Column, str]]) -> DataFrame:
    """Add ``_drop``: the reason of the first rule whose condition holds (null keeps the row).

    A row already tagged keeps its reason.
    """
    if DROP in df.columns:
        return df.withColumn(DROP, F.coalesce(F.col(DROP), reason(rules)))
    return df.withColumn(DROP, reason(rules))


def split_drops(df: DataFrame) -> tuple[DataFrame, Counter, int]:
    """Count ``_drop`` reasons (one Spark action) and return the kept rows.

    The input is persisted so the count and the later use read the files once. Rows whose
    optional ``_counted`` column is true are dropped but not counted again (see
    :func:`load_generic`: one file read as events and as items).

    Returns:
        (kept rows without the ``_drop`` column, reason -> count, rows read).
    """
    df = df.persist()
    counts = Counter()
    total = 0
    keys = [DROP, COUNTED] if COUNTED in df.columns else [DROP]
    for row in df.groupBy(*keys).count().collect():
        total += row["count"]
        if row[DROP] is not None and not (COUNTED in keys and row[COUNTED]):
            counts[row[DROP]] += row["count"]
    return df.filter(F.col(DROP).isNull()).drop(DROP, COUNTED), counts, total


def blank(c: Column) -> Column:
    """True where a string column is null or only white space."""
    return c.isNull() | (F.trim(c) == "")


def row_rules(file: str, *ids: str, integer: bool = False) -> list[tuple[Column, str]]:
    """The drop rules every input row gets: well-formed, ids present (and integers if asked)."""
    rules = [(F.col(CORRUPT).isNotNull(), f"{file}: malformed row (wrong number of fields)")]
    rules += [(blank(col(c)), f"{file}: missing {c}") for c in ids]
    if integer:
        rules += [(_int_id(c).isNull(), f"{file}: non-integer {c}") for c in ids]
    return rules


def _int_id(name: str) -> Column:
    """Canonical string of an integer id column (" 007" -> "7"); null when not an integer."""
    return F.expr(f"try_cast(trim({quote(name)}) as bigint)").cast("string")


MAX_TS = 4102444800.0  # 2100-01-01 UTC: later "seconds" are almost surely milliseconds


def parse_time(name: str, time_format: str) -> Column:
    """Parse a string column to seconds since the epoch (double); null when unparsable.

    ``time_format``: ``unix`` (seconds, may be fractional), ``unix_ms``, ``iso``, or a Spark
    datetime pattern such as ``yyyy-MM-dd HH:mm:ss`` (interpreted in UTC).
    """
    raw = F.trim(col(name))
    if time_format in ("unix", "unix_ms"):
        secs = F.expr(f"try_cast(trim({quote(name)}) as double)")
        if time_format == "unix_ms":
            secs = secs / 1000.0
    elif time_format == "iso":
        secs = F.try_to_timestamp(raw).cast("double")
    else:
        secs = F.try_to_timestamp(raw, F.lit(time_format)).cast("double")
    bad = secs.isNull() | F.isnan(secs) | (F.abs(secs) == float("inf"))
    return F.when(bad, F.lit(None).cast("double")).otherwise(secs)


# The events' time range is reported, and a range outside these bounds warned about: a wrong
# time_format parses without an error (unix_ms on a column of seconds puts every event in
# January 1970, and each user's events into one session). Behaviour logs of recommender systems
# are from the web era; a log may run slightly ahead of this machine's clock, by a day at most.
PLAUSIBLE_FROM = 631152000.0  # 1990-01-01 UTC
PLAUSIBLE_AHEAD_S = 86400.0  # after now + 1 day: not yet happened


def iso_time(ts: float) -> str:
    """Seconds since the epoch as an ISO 8601 UTC time (``2023-11-14T22:13:20+00:00``)."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def implausible_times(first: float, last: float, now: float | None = None) -> str | None:
    """Why the events' time range ``first``..``last`` (seconds) is not a plausible one.

    Args:
        first: the earliest event time.
        last: the latest event time.
        now: the current time (default: this machine's clock).

    Returns:
        A message naming the bound crossed and the likely cause; None when the range lies
        within :data:`PLAUSIBLE_FROM` .. now + :data:`PLAUSIBLE_AHEAD_S`.
    """
    now = datetime.now(timezone.utc).timestamp() if now is None else now
    problems = []
    if first < PLAUSIBLE_FROM:
        problems.append(f"before {iso_time(PLAUSIBLE_FROM)[:10]}")
    if last > now + PLAUSIBLE_AHEAD_S:
        problems.append(f"after {iso_time(now + PLAUSIBLE_AHEAD_S)[:10]} (in the future)")
    if not problems:
        return None
    return (
        f"event times run from {iso_time(first)} to {iso_time(last)}, "
        f"{' and '.join(problems)}: check the data's time_format (unix_ms on a column of "
        "seconds puts every event in January 1970 and each user's events in one session; "
        "unix is seconds, unix_ms milliseconds)"
    )


def event_time_range(first: float | None, last: float | None) -> dict[str, Any] | None:
    """The manifest's ``event_time`` entry for events from ``first`` to ``last`` (seconds);
    logs a warning when the range is implausible (:func:`implausible_times`).

    Returns:
        ``first``/``last`` (ISO 8601, UTC), ``first_ts``/``last_ts`` (seconds) and, when the
        range is implausible, ``warning``; None without events.
    """
    if first is None or last is None:
        return None
    entry: dict[str, Any] = {
        "first": iso_time(first),
        "last": iso_time(last),
        "first_ts": first,
        "last_ts": last,
    }
    warning = implausible_times(first, last)
    if warning:
        log.warning("%s", warning)
        entry["warning"] = warning
    return entry


def event_rules(
    file: str,
    user: str,
    item: str,
    time: str,
    time_format: str,
    integer_ids: bool = False,
    filters: list[tuple[Column, str]] | None = None,
) -> list[tuple[Column, str]]:
    """The drop rules of an events row (see :func:`events_from` for the arguments)."""
    rules = row_rules(file, user, item, integer=integer_ids)
    ts = parse_time(time, time_format)
    rules.append((ts.isNull(), f"{file}: unparsable {time}"))
    # before 1970 is kept (a valid time); after 2100 is almost surely milliseconds read as
    # seconds, which would silently split every session
    rules.append(
        (ts >= MAX_TS, f"{file}: {time} after 2100 (milliseconds read as seconds? see time_format)")
    )
    return rules + (filters or [])


def events_from(
    raw: DataFrame,
    file: str,
    user: str,
    item: str,
    time: str,
    time_format: str,
    integer_ids: bool = False,
    filters: list[tuple[Column, str]] | None = None,
) -> DataFrame:
    """Typed events (user_id, item_id, ts, _drop) from a raw string table.

    Args:
        raw: rows read by :func:`read_csv` / :func:`read_parquet`.
        file: file name used in drop reasons.
        user, item, time: column names.
        time_format: see :func:`parse_time`.
        integer_ids: ids must be integers (MovieLens); they are canonicalised ("007" -> "7").
        filters: further (condition, reason) rules, checked after the row is well-formed.
    """
    user_id = _int_id(user) if integer_ids else F.trim(col(user))
    item_id = _int_id(item) if integer_ids else F.trim(col(item))
    rules = event_rules(file, user, item, time, time_format, integer_ids, filters)
    return tag(raw, rules).select(
        user_id.alias("user_id"),
        item_id.alias("item_id"),
        parse_time(time, time_format).alias("ts"),
        DROP,
    )


def clean_values(values: Column) -> Column:
    """Trim, drop empty, de-duplicate and sort an array<string> of side-info values."""
    trimmed = F.transform(values, lambda v: F.trim(v))
    kept = F.filter(trimmed, lambda v: v.isNotNull() & (v != ""))
    return F.array_sort(F.array_distinct(kept))


def single_value(c: Column) -> Column:
    """A single-valued field as an array of at most one trimmed value."""
    return clean_values(F.array(c))


def multi_value(c: Column, sep: str) -> Column:
    """A multi-valued field split on a literal separator."""
    return clean_values(F.split(F.coalesce(c, F.lit("")), re.escape(sep)))


def merge_side_info(df: DataFrame, fields: list[str]) -> DataFrame:
    """One row per item_id: the union of the field values of duplicate rows."""
    aggs = [clean_values(F.flatten(F.collect_list(col(f)))).alias(f) for f in fields]
    return df.groupBy("item_id").agg(*aggs)


def display_name(c: Column) -> Column:
    """A display-name cell: trimmed; null when blank."""
    return F.when(blank(c), F.lit(None).cast("string")).otherwise(F.trim(c))


def merge_names(df: DataFrame) -> DataFrame:
    """(item_id, name) of the kept catalogue rows -> one row per named item.

    Duplicate rows of an item with different names keep the smallest (deterministic)."""
    return (
        df.filter(F.col(NAME_COLUMN).isNotNull())
        .groupBy("item_id")
        .agg(F.min(NAME_COLUMN).alias(NAME_COLUMN))
    )


# --------------------------------------------------------------------------- MovieLens


# The rules below are those of eges.movielens (the plain-Python twin eges.serving.embed applies to
# new items); its constants are the one definition of the separator, "no genre" and year.


def movielens_genres(genres: Column) -> Column:
    """MovieLens genres: split on '|', with "(no genres listed)" meaning none."""
    return F.filter(multi_value(genres, ml_rules.GENRE_SEP), lambda g: g != MOVIELENS_NO_GENRE)


def movielens_year(title: Column) -> Column:
    """The year of a MovieLens title's trailing "(YYYY)", as an array of at most one value."""
    return single_value(F.regexp_extract(title, ml_rules.YEAR_PATTERN, 1))


def movies_side_info(movies: DataFrame, file: str = "movies.csv") -> DataFrame:
    """movies.csv rows -> (item_id, genres, year, name, _drop); name is the title."""
    item_id = _int_id("movieId")
    return tag(movies, row_rules(file, "movieId", integer=True)).select(
        item_id.alias("item_id"),
        movielens_genres(F.col("genres")).alias("genres"),
        movielens_year(F.col("title")).alias("year"),
        display_name(F.col("title")).alias(NAME_COLUMN),
        DROP,
    )


def tags_side_info(tags: DataFrame, file: str = "tags.csv") -> DataFrame:
    """tags.csv rows -> (item_id, tags, ts, _drop): lower-cased, stripped; one row per tag event.

    ``ts`` is when the tag was written (seconds), from the ``timestamp`` column; null when the
    file has none or the cell cannot be read (the tag is kept: only a split in time needs it,
    see :meth:`Ingested.side_info_before`).
    """
    item_id = _int_id("movieId")
    rules = row_rules(file, "movieId", integer=True) + [(blank(F.col("tag")), f"{file}: empty tag")]
    if "timestamp" in tags.columns:
        ts = parse_time("timestamp", "unix")
    else:
        ts = F.lit(None).cast("double")
    return tag(tags, rules).select(
        item_id.alias("item_id"),
        F.array(F.lower(F.trim(F.col("tag")))).alias("tags"),
        ts.alias("ts"),
        DROP,
    )


def load_movielens(spark: SparkSession, root: str, cfg: MovieLensConfig) -> Ingested:
    """Read a MovieLens directory (ratings.csv, movies.csv, optional tags.csv)."""
    out = Ingested(
        fields=["genres", "year"],
        lowercase=["tags"],
        buckets={"year": cfg.year_bucket} if cfg.year_bucket else {},
    )
    ratings_path = f"{root}/{cfg.ratings}"
    raw = read_csv(spark, ratings_path, ["userId", "movieId", "timestamp"], sep=cfg.sep)
    events = events_from(
        raw, cfg.ratings, "userId", "movieId", "timestamp", "unix", integer_ids=True
    )
    out.events = out.keep(events, cfg.ratings)

    movies_raw = read_csv(
        spark, f"{root}/{cfg.movies}", ["movieId", "title", "genres"], sep=cfg.sep
    )
    movies = out.keep(movies_side_info(movies_raw, cfg.movies), cfg.movies)
    side = merge_side_info(movies, ["genres", "year"])
    out.names = merge_names(movies)

    if cfg.tags:
        out.fields.append("tags")
        out.user_fields.append("tags")  # written by users who watched the movie
        tags_raw = read_csv(spark, f"{root}/{cfg.tags}", ["movieId", "tag"], sep=cfg.sep)
        out.timed = out.keep(tags_side_info(tags_raw, cfg.tags), cfg.tags)
        out.untimed_side_info = fill_empty(side, ["genres", "year"])
        side = side.join(merge_side_info(out.timed, ["tags"]), "item_id", "full_outer")
    out.side_info = fill_empty(side, out.fields)
    return out


def fill_empty(side: DataFrame, fields: list[str]) -> DataFrame:
    """Replace null field arrays (items missing from one source) with empty arrays."""
    return side.select(
        "item_id",
        *[F.coalesce(col(f), F.array().cast("array<string>")).alias(f) for f in fields],
    )


# --------------------------------------------------------------------------- RecBole


def _recbole_columns(df: DataFrame) -> dict[str, str]:
    """RecBole header names look like ``item_id:token``: map the bare name to the full one."""
    return {c.split(":", 1)[0]: c for c in df.columns if c != CORRUPT}


def _recbole_read(spark: SparkSession, path: str, required: list[str]) -> tuple[DataFrame, dict]:
    if not _exists(path):
        raise InputError(f"input file not found: {path}")
    header = read_csv(spark, path, [], sep="\t", quote=None)
    names = _recbole_columns(header)
    missing = [c for c in required if c not in names]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; the header has {header.columns}")
    # rename to bare names so downstream code and drop reasons read naturally
    renamed = header.select(*[col(full).alias(bare) for bare, full in names.items()], CORRUPT)
    return renamed, names


RECBOLE_NAME_COLUMNS = ("movie_title", "title")  # display names of a .item file, first found


def load_recbole(spark: SparkSession, root: str, cfg: RecBoleConfig) -> Ingested:
    """Read RecBole atomic files: ``.inter`` events, ``.item`` fields, ``.link``/``.kg`` if any."""
    base = f"{root}/{cfg.dataset}"
    inter_file = f"{cfg.dataset}.inter"
    raw, _ = _recbole_read(spark, f"{base}.inter", ["user_id", "item_id", "timestamp"])
    events = events_from(raw, inter_file, "user_id", "item_id", "timestamp", "unix")
    fields = list(cfg.item_fields)
    kg_fields = {rel: rel.rsplit(".", 1)[-1] for rel in cfg.kg_relations}
    clash = set(fields) & set(kg_fields.values())
    if clash or len(set(kg_fields.values())) != len(kg_fields):
        raise InputError(f"recbole: side-info field names collide: {fields} + {kg_fields}")
    out = Ingested(
        fields=fields + list(kg_fields.values()),
        buckets={f: b for f, b in cfg.buckets.items() if f in cfg.item_fields},
    )
    for f in set(cfg.buckets) - set(cfg.item_fields):
        log.warning("data.recbole.buckets names %r, which is not in item_fields: ignored", f)
    out.events = out.keep(events, inter_file)

    item_file = f"{cfg.dataset}.item"
    items_raw, names = _recbole_read(spark, f"{base}.item", ["item_id", *cfg.item_fields.values()])
    cols = []
    for name, column in cfg.item_fields.items():
        multi = names[column].endswith(":token_seq")
        value = multi_value(col(column), " ") if multi else single_value(col(column))
        cols.append(value.alias(name))
    # display names: the .item file's title column, when it has one (ml-100k: movie_title)
    title = next((c for c in RECBOLE_NAME_COLUMNS if c in names), None)
    if title is not None:
        cols.append(display_name(col(title)).alias(NAME_COLUMN))
    items = tag(items_raw, row_rules(item_file, "item_id")).select(
        F.trim(F.col("item_id")).alias("item_id"), *cols, DROP
    )
    items = out.keep(items, item_file)
    side = merge_side_info(items, fields)
    if title is not None:
        out.names = merge_names(items)

    if kg_fields:
        side = side.join(
            _recbole_kg(spark, base, cfg.dataset, kg_fields, out), "item_id", "full_outer"
        )
    out.side_info = fill_empty(side, out.fields)
    return out


def _recbole_kg(
    spark: SparkSession, base: str, dataset: str, kg_fields: dict[str, str], out: Ingested
) -> DataFrame:
    """Knowledge-graph relations of linked items as multi-valued fields."""
    link_raw, _ = _recbole_read(spark, f"{base}.link", ["item_id", "entity_id"])
    kg_raw, _ = _recbole_read(spark, f"{base}.kg", ["head_id", "relation_id", "tail_id"])
    link_file, kg_file = f"{dataset}.link", f"{dataset}.kg"
    link = tag(link_raw, row_rules(link_file, "item_id", "entity_id")).select(
        F.trim("item_id").alias("item_id"), F.trim("entity_id").alias("entity_id"), DROP
    )
    link = out.keep(link, link_file)
    kg = tag(kg_raw, row_rules(kg_file, "head_id", "tail_id")).select(
        F.trim("head_id").alias("head_id"),
        F.trim("relation_id").alias("relation_id"),
        F.trim("tail_id").alias("tail_id"),
        DROP,
    )
    kg = out.keep(kg, kg_file)
    rel_map = F.create_map(*[x for kv in kg_fields.items() for x in (F.lit(kv[0]), F.lit(kv[1]))])
    triples = (
        kg.filter(F.col("relation_id").isin(list(kg_fields)))
        .join(link, kg.head_id == link.entity_id)
        .select("item_id", rel_map[F.col("relation_id")].alias("field"), "tail_id")
    )
    pivoted = (
        triples.groupBy("item_id")
        .pivot("field", list(kg_fields.values()))
        .agg(F.array_sort(F.collect_set("tail_id")))
    )
    return pivoted


# --------------------------------------------------------------------------- generic


def _under(root: str, path: str) -> str:
    """``path`` relative to ``root`` unless it is absolute or a URL."""
    if not root or "://" in path or Path(path).is_absolute():
        return path
    return f"{root}/{path}"


def _same_file(a: str, b: str) -> bool:
    """Whether two input paths name the same file (local paths compared resolved)."""
    if "://" in a or "://" in b:
        return a == b
    return Path(a.removeprefix("file://")).resolve() == Path(b.removeprefix("file://")).resolve()


def load_generic(spark: SparkSession, root: str, cfg: GenericConfig) -> Ingested:
    """Read a generic events file and optional items file, as named in config.

    The two may be one file (a log whose rows carry the item's side information): it is then
    read once, and a row dropped from both the events and the catalogue is counted once, under
    the events' reason.
    """
    ev_path = _under(root, cfg.events)
    required = [cfg.user_col, cfg.item_col, cfg.time_col]
    if cfg.behavior_col:
        required.append(cfg.behavior_col)
    fields = [f.name for f in cfg.side_info]
    if cfg.items is None and fields:
        raise InputError("data.generic.side_info is set but data.generic.items is null")
    if cfg.items is None and cfg.name_column:
        raise InputError("data.generic.name_column is set but data.generic.items is null")
    it_path = _under(root, cfg.items) if cfg.items is not None else None
    id_col = cfg.items_item_col or cfg.item_col
    columns = {f.name: f.column or f.name for f in cfg.side_info}
    it_required = list(
        dict.fromkeys([id_col, *columns.values(), *([cfg.name_column] if cfg.name_column else [])])
    )
    shared = it_path is not None and _same_file(ev_path, it_path)
    ev_required = list(dict.fromkeys(required + it_required)) if shared else required

    time_format = cfg.time_format
    if cfg.file_format == "csv":
        raw = read_csv(spark, ev_path, ev_required, sep=cfg.delimiter)
    else:
        raw, timestamps = read_parquet(spark, ev_path, ev_required)
        if cfg.time_col in timestamps and time_format != "unix":
            log.info(
                "%s: %s is a timestamp column: time_format %r not needed",
                cfg.events,
                cfg.time_col,
                time_format,
            )
            time_format = "unix"
    ev_file = Path(cfg.events).name
    filters = []
    if cfg.behavior_col and cfg.behaviors:
        filters += [
            (blank(col(cfg.behavior_col)), f"{ev_file}: missing {cfg.behavior_col}"),
            (
                ~F.trim(col(cfg.behavior_col)).isin(cfg.behaviors),
                f"{ev_file}: {cfg.behavior_col} not in {cfg.behaviors}",
            ),
        ]
    events = events_from(
        raw, ev_file, cfg.user_col, cfg.item_col, cfg.time_col, time_format, filters=filters
    )
    out = Ingested(fields=fields, buckets={f.name: f.bucket for f in cfg.side_info if f.bucket})
    out.events = out.keep(events, ev_file)

    if it_path is None:
        out.side_info = spark.createDataFrame([], "item_id string")
        return out
    if shared:
        items_raw = raw
    elif cfg.file_format == "csv":
        items_raw = read_csv(spark, it_path, it_required, sep=cfg.delimiter)
    else:
        items_raw, _ = read_parquet(spark, it_path, it_required)
    it_file = Path(cfg.items).name
    cols = [
        (
            multi_value(col(columns[f.name]), f.sep)
            if f.sep
            else single_value(col(columns[f.name]))
        ).alias(f.name)
        for f in cfg.side_info
    ]
    extra = []
    if shared:  # rows the events pass dropped are already in the report
        ev_rules = event_rules(
            ev_file, cfg.user_col, cfg.item_col, cfg.time_col, time_format, filters=filters
        )
        extra = [reason(ev_rules).isNotNull().alias(COUNTED)]
    if cfg.name_column:
        cols.append(display_name(col(cfg.name_column)).alias(NAME_COLUMN))
    items = tag(items_raw, row_rules(it_file, id_col)).select(
        F.trim(col(id_col)).alias("item_id"), *cols, DROP, *extra
    )
    items = out.keep(items, it_file)
    out.side_info = fill_empty(merge_side_info(items, fields), fields)
    if cfg.name_column:
        out.names = merge_names(items)
    return out


def ingest(spark: SparkSession, cfg: DataConfig) -> Ingested:
    """Read the configured layout.

    Returns:
        :class:`Ingested` with typed events, side info, field names and drop counts.
    """
    loader = {
        "movielens": (load_movielens, cfg.movielens),
        "recbole": (load_recbole, cfg.recbole),
        "generic": (load_generic, cfg.generic),
    }[cfg.format]
    result = loader[0](spark, cfg.path, loader[1])
    log.info(
        "ingest (%s): read %s, dropped %s",
        cfg.format,
        dict(result.rows_read),
        dict(result.dropped) or "nothing",
    )
    return result
