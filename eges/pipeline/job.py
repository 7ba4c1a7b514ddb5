"""The walk job as one library function: ingest → sessions → graph → walks → shards.

``jobs/walks.py`` parses arguments, builds the SparkSession and calls :func:`run_walk_job`.
"""

from __future__ import annotations

import logging
import math
import platform
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from eges import __version__, schema
from eges.config import Config
from eges.pipeline.buckets import bucket_fields
from eges.pipeline.graph import build_adjacency, build_edges
from eges.pipeline.ingest import Ingested, col, event_time_range, ingest, split_drops
from eges.pipeline.items import attach_names, build_vocab, encode_side_info, index_items
from eges.pipeline.sessions import filter_events, heavy_users, sessionize
from eges.pipeline.shards import (
    check_output,
    local_path,
    write_table,
    write_walk_shards,
)
from eges.pipeline.splits import (
    choose_heldout_items,
    heldout_transitions,
    hide_pairs,
    neighbour_truth,
    remove_pairs,
    sample_non_edges,
    time_cutoff,
    without_fields,
)
from eges.pipeline.walks import count_nodes, prepare_adjacency, walk_steps

log = logging.getLogger(__name__)

ITEMS_PER_FILE = 1_000_000


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.times[stage] = round(now - self._t, 3)
        self._t = now
        log.info("stage %-8s %.1f s", stage, self.times[stage])


@dataclass
class HeldOut:
    """What the hold-out split keeps aside for :func:`_split_tables`, and its manifest entry.

    Fields a ``split.kind`` does not use stay ``None``.

    Attributes:
        info: the manifest's ``split`` entry (``kind``, the kind's parameters and counts).
        all_events: the filtered events before the split.
        heldout_items: ``item_id`` of the held-out items (kind ``items``).
        heldout_events: the events at or after the cutoff (kind ``time``).
        hidden_edges: the hidden pairs (kind ``edges``).
        non_edges: as many sampled pairs without an edge (kind ``edges``).
        non_edges_matched: as many, drawn with the hidden pairs' degrees (kind ``edges``).
        train_edges: the training graph's edges (every kind, set by :func:`_graph`).
    """

    info: dict[str, Any]
    all_events: DataFrame
    heldout_items: DataFrame | None = None
    heldout_events: DataFrame | None = None
    hidden_edges: DataFrame | None = None
    non_edges: DataFrame | None = None
    non_edges_matched: DataFrame | None = None
    train_edges: DataFrame | None = None


def _field_summary(field: dict[str, Any]) -> str:
    """``year (106 values, buckets of width 1)``: one side-info field in the job's summary."""
    numeric = field.get("numeric")
    parts = [f"{field['vocab_size']:,} values"]
    if numeric and numeric.get("width") is not None:
        parts.append(f"buckets of width {numeric['width']:g}")
    elif numeric:
        parts.append(f"{len(numeric['edges']) + 1} quantile bins")
    if numeric and numeric.get("invalid_values"):
        parts.append(f"{numeric['invalid_values']:,} values not numbers, ignored")
    return f"{field['name']} ({', '.join(parts)})"


def _check(root: Path, table: dict[str, Any], expected: pa.Schema) -> None:
    for f in table["files"]:
        schema.check_schema(pq.read_schema(root / f["path"]), expected, f["path"])


def run_walk_job(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Run the whole walk job and publish its output directory.

    Args:
        spark: an active session.
        cfg: the resolved configuration.

    Returns:
        The manifest written to ``cfg.output.path``.

    Raises:
        OutputExistsError: the output exists and ``output.overwrite`` is false (checked first).
        InputError: a missing input file or column.
    """
    start = time.perf_counter()
    final = local_path(cfg.output.path)
    check_output(final, cfg.output.overwrite)
    persisted = []
    try:
        with schema.staged_dir(final, cfg.output.overwrite) as tmp:
            manifest = _write_outputs(spark, cfg, tmp, persisted, start)
    finally:
        for df in persisted:
            df.unpersist()
    log.info("wrote %s", final)
    return manifest


def _write_outputs(
    spark: SparkSession, cfg: Config, tmp: Path, persisted: list, start: float
) -> dict[str, Any]:
    """Every stage of the job, writing into the temporary output ``tmp``; returns the manifest.

    DataFrames it persists are appended to ``persisted`` for the caller to release.
    """
    spark.sparkContext.setCheckpointDir(str(tmp / "_checkpoints"))
    timer = _Timer()
    data, numeric, events, dropped, held = _ingest_and_split(spark, cfg, persisted)
    # the kept events, before any split; said now, not after hours of walks, when implausible
    span = held.all_events.agg(F.min("ts").alias("first"), F.max("ts").alias("last")).first()
    event_time = event_time_range(span["first"], span["last"])
    timer.lap("ingest")
    items, num_items, sessions, stats = _items_and_sessions(cfg, data, events, dropped, persisted)
    timer.lap("sessions")
    edges, adjacency, start_nodes = _graph(
        spark, cfg, sessions, held, stats["events"], dropped, persisted
    )
    timer.lap("graph")
    walk_table, walk_stats = _walks(spark, cfg, adjacency, num_items, tmp)
    timer.lap("walks")
    tables = _write_tables(cfg, tmp, data, items, num_items, edges, held, persisted)
    item_stats = _item_stats(items, data)
    timer.lap("write")

    shutil.rmtree(tmp / "_checkpoints", ignore_errors=True)
    (tmp / schema.CONFIG_FILE).write_text(cfg.to_yaml())
    manifest = _manifest(
        spark,
        cfg,
        data,
        numeric,
        stats=stats,
        num_items=num_items,
        item_stats=item_stats,
        start_nodes=start_nodes,
        walk_table=walk_table,
        walk_stats=walk_stats,
        tables=tables,
        dropped=dropped,
        split_info=held.info,
        event_time=event_time,
        timings={**timer.times, "total": round(time.perf_counter() - start, 3)},
    )
    schema.write_manifest(tmp, manifest)
    return manifest


def _ingest_and_split(
    spark: SparkSession, cfg: Config, persisted: list
) -> tuple[Ingested, dict[str, dict], DataFrame, Counter, HeldOut]:
    """Read the input, bucket numeric fields, filter the events and split them per ``cfg.split``.

    Returns:
        (the ingested data, its side info bucketed; the numeric fields' manifest entries; the
        training events; the dropped rows by reason; what the split holds out).
    """
    data = ingest(spark, cfg.data)
    persisted.append(data.events)
    user_fields = _user_fields(cfg, data)
    split = cfg.split
    info: dict[str, Any] = {"kind": split.kind, "holdout": split.holdout}
    removed = user_fields if split.kind == "items" and split.cold_fields == "editorial" else []
    if data.fields and removed and set(data.fields) <= set(removed):
        raise ValueError(
            f"split.cold_fields=editorial leaves a held-out item no side information: "
            f"every field {data.fields} is in data.user_fields; set split.cold_fields=all "
            "to hold out items with user-written fields"
        )
    fraction = split.time_fraction
    if split.kind == "time" and split.holdout == "validation":
        # the test period does not exist here; the validation period before it is as long
        test_cutoff = time_cutoff(data.events, fraction)
        info["test_cutoff_ts"] = test_cutoff
        data.events = data.events.filter(F.col("ts") < test_cutoff)
        fraction = fraction / (1 - fraction)
    cutoff = None
    if split.kind == "time":  # of the parsed events: the filters below see training events only
        cutoff = time_cutoff(data.events, fraction)
        info.update(time_fraction=split.time_fraction, cutoff_ts=cutoff)
    data.side_info, numeric = bucket_fields(data.side_info_before(cutoff), data.buckets)
    all_events, dropped = _filtered(data.events, cfg, persisted)
    if split.kind == "items" and split.holdout == "validation":
        # the test items do not exist here; the validation items are the next in the same order
        test_items = choose_heldout_items(
            all_events, data.side_info.drop(*removed), split.item_fraction, split.seed
        )
        info["test_items"] = test_items.count()
        data.events = data.events.join(F.broadcast(test_items), "item_id", "left_anti")
        data.side_info = data.side_info.join(F.broadcast(test_items), "item_id", "left_anti")
        all_events, dropped = _filtered(data.events, cfg, persisted)
    held = HeldOut(info=info, all_events=all_events)
    events = all_events
    if split.kind == "items":
        heldout = choose_heldout_items(
            all_events, data.side_info.drop(*removed), split.item_fraction, split.seed
        ).persist()
        persisted.append(heldout)
        held.heldout_items = heldout
        info.update(
            item_fraction=split.item_fraction,
            seed=split.seed,
            heldout_items=heldout.count(),
            cold_fields=split.cold_fields,
            removed_fields=removed,
        )
        data.side_info = without_fields(data.side_info, heldout, removed)
        training = data.events.join(F.broadcast(heldout), "item_id", "left_anti")
        events, dropped = _filtered(training, cfg, persisted)
    elif split.kind == "time":
        training = data.events.filter(F.col("ts") < cutoff)
        events, dropped = _filtered(training, cfg, persisted)
        later = data.events.filter(F.col("ts") >= cutoff)
        spam = heavy_users(training, cfg.sessions)  # the training filter's verdict, not a new one
        held.heldout_events = later if spam is None else later.join(spam, "user_id", "left_anti")
    dropped_all = Counter(data.dropped) + dropped
    return data, numeric, events, dropped_all, held


def _filtered(events: DataFrame, cfg: Config, persisted: list) -> tuple[DataFrame, Counter]:
    """The events the noise filters keep (counted over ``events`` alone), and the drops."""
    tagged = filter_events(events, cfg.sessions)
    kept, dropped, _ = split_drops(tagged)  # persists tagged (persisting it here too: Spark warns)
    persisted.append(tagged)  # released with the job's other cached tables
    return kept, dropped


def _user_fields(cfg: Config, data: Ingested) -> list[str]:
    """The side-info fields written by users (``data.user_fields``, or the layout's own).

    Raises:
        ValueError: ``data.user_fields`` names a field the data does not have.
    """
    named = cfg.data.user_fields
    if named is None:
        return list(data.user_fields)
    unknown = [f for f in named if f not in data.fields]
    if unknown:
        raise ValueError(
            f"data.user_fields names {unknown}, which the data does not have "
            f"(its fields: {data.fields})"
        )
    return list(named)


def _items_and_sessions(
    cfg: Config, data: Ingested, events: DataFrame, dropped: Counter, persisted: list
) -> tuple[DataFrame, int, DataFrame, Row]:
    """Index the items and cut the training events into sessions.

    Returns:
        (the item table, its number of rows, the sessions, their ``events``, ``sessions`` and
        ``users`` counts).

    Raises:
        ValueError: no item is left.
    """
    ranked = index_items(data.side_info, events)  # cached
    items = attach_names(ranked, data.names)
    named = items is not ranked
    if named:  # cache the copy with the names instead
        items = items.persist()
    persisted.append(items)
    num_items = items.count()
    if named:
        ranked.unpersist()
    if num_items == 0:
        raise ValueError(
            f"no items: every event and catalogue row was dropped (dropped: {dict(dropped)})"
        )
    indexed = events.join(
        F.broadcast(items.select("item_id", "item_idx"))
        if num_items <= 2_000_000
        else items.select("item_id", "item_idx"),
        "item_id",
    )
    sessions = sessionize(indexed, cfg.sessions.session_gap).persist()
    persisted.append(sessions)
    stats = sessions.agg(
        F.count(F.lit(1)).alias("events"),
        F.sum(F.col("new_session").cast("long")).alias("sessions"),
        F.countDistinct("user_id").alias("users"),
    ).first()
    return items, num_items, sessions, stats


def _graph(
    spark: SparkSession,
    cfg: Config,
    sessions: DataFrame,
    held: HeldOut,
    events_kept: int,
    dropped: Counter,
    persisted: list,
) -> tuple[DataFrame, DataFrame, int]:
    """Build the edges, hide a part of them for split kind ``edges``, and the adjacency lists.

    Sets ``held.train_edges`` (and, for kind ``edges``, the hidden pairs and the non-edges).

    Returns:
        (the training edges, the adjacency lists (checkpointed), the number of nodes with
        out-edges).

    Raises:
        ValueError: the training graph has no edges.
    """
    split = cfg.split
    edges = build_edges(sessions).persist()
    persisted.append(edges)
    if split.kind == "edges":
        full_edges = edges
        if split.holdout == "validation":
            # the test pairs do not exist here; the validation pairs are the next in the same
            # order; non-edges are never test pairs (they are drawn against the full graph)
            test_pairs = hide_pairs(full_edges, split.edge_fraction, split.seed)
            edges = remove_pairs(full_edges, test_pairs).persist()
            persisted.append(edges)
            held.info["test_pairs"] = test_pairs.count()
        hidden = hide_pairs(edges, split.edge_fraction, split.seed).persist()
        n = hidden.count()
        non_edges = sample_non_edges(full_edges, n, split.seed)
        matched = sample_non_edges(full_edges, n, split.seed, matched=True)
        persisted += [hidden, non_edges, matched]
        held.info.update(
            edge_fraction=split.edge_fraction, seed=split.seed, edges_before=edges.count()
        )
        edges = remove_pairs(edges, hidden).persist()
        persisted.append(edges)
        held.hidden_edges, held.non_edges, held.non_edges_matched = hidden, non_edges, matched
    held.train_edges = edges
    # spark-submit's --conf spark.sql.shuffle.partitions wins over the config's (see spark.py)
    partitions = cfg.spark.graph_partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    adjacency = prepare_adjacency(
        build_adjacency(edges, partitions), partitions, cfg.walks.hot_node_share
    )
    persisted.append(adjacency)
    start_nodes = count_nodes(adjacency)
    if start_nodes == 0:
        raise ValueError(
            f"no edges: no session has two different consecutive items ({events_kept} "
            f"events kept, dropped: {dict(dropped) or 'nothing'}); check the input "
            "columns, time_format and session_gap"
        )
    return edges, adjacency, start_nodes


def _walks(
    spark: SparkSession, cfg: Config, adjacency: DataFrame, num_items: int, tmp: Path
) -> tuple[dict[str, Any], Row]:
    """Walk the graph and write the walk shards into ``tmp``.

    Returns:
        (the walk table's manifest entry, the written walks' ``steps`` and ``short`` (stopped
        before ``walk_length``) counts).
    """
    # no leading "_" or ".": Spark would warn that it ignores the path when reading it back
    steps_dir = tmp / "walk_steps.tmp"
    try:
        rows = walk_steps(
            adjacency,
            walks_per_node=cfg.walks.walks_per_node,
            walk_length=cfg.walks.walk_length,
            seed=cfg.walks.seed,
            num_items=num_items,
            steps_dir=str(steps_dir),
        )
        walk_table = write_walk_shards(
            rows,
            tmp,
            cfg.output.num_shards,
            cfg.walks.seed,
            walk_length=cfg.walks.walk_length,
        )
    finally:
        adjacency.unpersist()
        shutil.rmtree(steps_dir, ignore_errors=True)
        if steps_dir.exists():  # it would be published with the output
            log.warning("could not remove the walk steps' tables %s; delete them", steps_dir)
    _check(tmp, walk_table, schema.WALK_SCHEMA)
    walk_stats = (
        spark.read.parquet(str(tmp / schema.WALKS_DIR))
        .agg(
            F.sum(F.size("items") - 1).alias("steps"),
            F.sum((F.size("items") < cfg.walks.walk_length).cast("long")).alias("short"),
        )
        .first()
    )
    return walk_table, walk_stats


def _write_tables(
    cfg: Config,
    tmp: Path,
    data: Ingested,
    items: DataFrame,
    num_items: int,
    edges: DataFrame,
    held: HeldOut,
    persisted: list,
) -> dict[str, Any]:
    """Write the vocabularies, the item table, the training edges and the held-out tables.

    Sets ``held.info["tables"]`` (rows per held-out table) when the job splits.

    Returns:
        Table name (``vocab/<field>``, ``items``, ``edges``, ``eval/<name>``) -> manifest entry.
    """
    tables: dict[str, Any] = {}
    vocabs = {f: build_vocab(items, f) for f in data.fields}  # cached
    persisted.extend(vocabs.values())
    for field, vocab in vocabs.items():
        tables[f"vocab/{field}"] = write_table(
            vocab, tmp, f"{schema.VOCAB_DIR}/{field}", sort_by=["index"]
        )
        _check(tmp, tables[f"vocab/{field}"], schema.VOCAB_SCHEMA)
    item_files = max(1, math.ceil(num_items / ITEMS_PER_FILE))
    tables["items"] = write_table(
        encode_side_info(items, vocabs),
        tmp,
        schema.ITEMS_DIR,
        files=item_files,
        sort_by=["item_idx"],
    )
    _check(tmp, tables["items"], schema.item_schema(data.fields, names=data.names is not None))
    tables["edges"] = write_table(
        edges, tmp, schema.EDGES_DIR, files=max(1, cfg.output.num_shards), sort_by=["src", "dst"]
    )
    _check(tmp, tables["edges"], schema.EDGE_SCHEMA)
    if cfg.split.kind != "none":
        eval_tables = _split_tables(cfg, items, held)
        for name, df in eval_tables.items():
            tables[f"eval/{name}"] = write_table(
                df, tmp, f"{schema.EVAL_DIR}/{name}", sort_by=["src", "dst"]
            )
            _check(tmp, tables[f"eval/{name}"], schema.EDGE_SCHEMA)
        held.info["tables"] = {n: tables[f"eval/{n}"]["rows"] for n in eval_tables}
    return tables


def _item_stats(items: DataFrame, data: Ingested) -> Row:
    """The items' ``cold`` (no events), ``no_side_info`` and ``named`` counts."""
    no_side_info = (
        F.size(F.flatten(F.array(*[col(f) for f in data.fields]))) == 0
        if data.fields
        else F.lit(True)
    )
    named = F.col(schema.NAME_COLUMN).isNotNull() if data.names is not None else F.lit(False)
    return items.agg(
        F.sum((F.col("count") == 0).cast("long")).alias("cold"),
        F.sum(no_side_info.cast("long")).alias("no_side_info"),
        F.sum(named.cast("long")).alias("named"),
    ).first()


def _manifest(
    spark: SparkSession,
    cfg: Config,
    data: Ingested,
    numeric: dict[str, dict],
    *,
    stats: Row,
    num_items: int,
    item_stats: Row,
    start_nodes: int,
    walk_table: dict[str, Any],
    walk_stats: Row,
    tables: dict[str, Any],
    dropped: Counter,
    split_info: dict[str, Any],
    event_time: dict[str, Any] | None,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The job's manifest, from what the stages counted and wrote (see :mod:`eges.schema`).

    ``event_time`` (:func:`eges.pipeline.ingest.event_time_range`): the kept events' first and
    last time, before any split; outputs of earlier versions have no such entry.
    """
    return {
        "format": schema.FORMAT_NAME,
        "format_version": schema.FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": cfg.walks.seed,
        "side_info_fields": [
            {
                "name": f,
                "vocab_size": tables[f"vocab/{f}"]["rows"],
                "lowercase": f in data.lowercase,
                **({"numeric": numeric[f]} if f in numeric else {}),
            }
            for f in data.fields
        ],
        "counts": {
            "rows_read": dict(data.rows_read),
            "events": stats["events"],
            "users": stats["users"],
            "sessions": stats["sessions"],
            "items": num_items,
            "items_with_events": num_items - item_stats["cold"],
            "items_without_events": item_stats["cold"],
            "items_without_side_info": item_stats["no_side_info"],
            "items_with_name": item_stats["named"],
            "edges": tables["edges"]["rows"],
            "nodes_with_out_edges": start_nodes,
            "walks": walk_table["rows"],
            "walk_steps": walk_stats["steps"] or 0,
            "walks_stopped_early": walk_stats["short"] or 0,
        },
        "event_time": event_time,
        "dropped": dict(sorted(dropped.items())),
        "split": split_info,
        "walks": walk_table,
        "tables": tables,
        "timings_s": timings,
        "versions": {
            "eges": __version__,
            "spark": spark.version,
            "pyspark": pyspark.__version__,
            "pyarrow": pa.__version__,
            "python": platform.python_version(),
        },
        "spark_master": spark.sparkContext.master,
        "spark_shuffle_partitions": int(spark.conf.get("spark.sql.shuffle.partitions")),
        "config": cfg.to_dict(),
    }


def _split_tables(cfg: Config, items: DataFrame, held: HeldOut) -> dict[str, DataFrame]:
    """The held-out tables of ``cfg.split.kind`` (names in ``schema.EVAL_TABLES``).

    Args:
        cfg: the job's config.
        items: the item table (``item_id`` -> ``item_idx``).
        held: what the split held out, with the training edges.
    """
    kind, gap = cfg.split.kind, cfg.sessions.session_gap
    index = items.select("item_id", "item_idx")
    if kind == "edges":
        return {
            "hidden_edges": held.hidden_edges,
            "non_edges": held.non_edges,
            "non_edges_matched": held.non_edges_matched,
        }
    if kind == "items":
        full = sessionize(held.all_events.join(index, "item_id"), gap)
        heldout_idx = held.heldout_items.join(index, "item_id").select("item_idx")
        return {"heldout_neighbours": neighbour_truth(build_edges(full), heldout_idx)}
    later = sessionize(held.heldout_events.join(index, "item_id"), gap)
    return {"test_transitions": heldout_transitions(later, held.train_edges)}


def summary(manifest: dict[str, Any], output: str | Path) -> str:
    """A one-screen summary of a finished walk job."""
    c = manifest["counts"]
    t = manifest["timings_s"]
    walk_time = t.get("walks", 0.0)
    rate = c["walk_steps"] / walk_time if walk_time else float("nan")
    lines = [
        f"walk job finished in {t['total']:.1f} s -> {output}",
        f"  spark     master {manifest.get('spark_master', '?')}, shuffle partitions "
        f"{manifest.get('spark_shuffle_partitions', '?')}",
        f"  events    {c['events']:>12,}  users {c['users']:,}  sessions {c['sessions']:,}",
        f"  items     {c['items']:>12,}  with events {c['items_with_events']:,}  "
        f"without events (cold) {c['items_without_events']:,}  "
        f"without side info {c['items_without_side_info']:,}",
        f"  edges     {c['edges']:>12,}  nodes with out-edges {c['nodes_with_out_edges']:,}",
        f"  walks     {c['walks']:>12,}  steps {c['walk_steps']:,}  "
        f"stopped early {c['walks_stopped_early']:,}  ({rate:,.0f} steps/s in the walk stage)",
        "  side info " + ", ".join(_field_summary(f) for f in manifest["side_info_fields"]),
        "  stages    " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if k != "total"),
    ]
    span = manifest.get("event_time")  # absent in outputs of earlier versions
    if span:
        lines.insert(3, f"  times     {span['first']} .. {span['last']} (kept events, UTC)")
        if span.get("warning"):
            lines.insert(4, f"  WARNING   {span['warning']}")
    if manifest["dropped"]:
        lines.append("  dropped rows:")
        lines += [f"    {n:>10,}  {why}" for why, n in manifest["dropped"].items()]
    else:
        lines.append("  dropped rows: none")
    return "\n".join(lines)
