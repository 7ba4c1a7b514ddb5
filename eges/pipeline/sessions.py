"""Sessions: noise filters and per-user sessions split at time gaps.

Paper §2: a user's history is cut into sessions wherever two consecutive events are more than
``session_gap`` seconds apart. Events of one user are ordered by ``(ts, item_idx)``: the item
index is the deterministic tie-break for events with the same timestamp (MovieLens has many).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from eges.config import SessionsConfig
from eges.pipeline.ingest import DROP, tag


def heavy_users(events: DataFrame, cfg: SessionsConfig) -> DataFrame | None:
    """``user_id`` of the users :func:`filter_events` drops as spam (more than
    ``max_events_per_user`` events in ``events``); None when that filter is off."""
    if cfg.max_events_per_user is None:
        return None
    return (
        events.groupBy("user_id")
        .count()
        .filter(F.col("count") > cfg.max_events_per_user)
        .select("user_id")
    )


def filter_events(events: DataFrame, cfg: SessionsConfig) -> DataFrame:
    """Tag events removed by the noise filters (``_drop``), paper §2's spam/rare-item filters.

    Users with more than ``max_events_per_user`` events are dropped first; then events of items
    with fewer than ``min_item_count`` remaining events.

    Args:
        events: ``user_id``, ``item_id``, ``ts``.
        cfg: the ``sessions`` config section.

    Returns:
        ``events`` with a ``_drop`` column (null = kept).
    """
    out = events
    if cfg.max_events_per_user is not None:
        per_user = F.count(F.lit(1)).over(Window.partitionBy("user_id"))
        out = tag(
            out.withColumn("_n_user", per_user),
            [
                (
                    F.col("_n_user") > cfg.max_events_per_user,
                    f"user with more than {cfg.max_events_per_user} events "
                    "(sessions.max_events_per_user)",
                )
            ],
        ).drop("_n_user")
    if cfg.min_item_count > 1:
        kept = F.col(DROP).isNull() if DROP in out.columns else F.lit(True)
        per_item = F.sum(kept.cast("long")).over(Window.partitionBy("item_id"))
        out = tag(
            out.withColumn("_n_item", per_item),
            [
                (
                    F.col("_n_item") < cfg.min_item_count,
                    f"item with fewer than {cfg.min_item_count} events (sessions.min_item_count)",
                )
            ],
        ).drop("_n_item")
    if DROP not in out.columns:
        out = out.withColumn(DROP, F.lit(None).cast("string"))
    return out


def sessionize(events: DataFrame, session_gap: int) -> DataFrame:
    """Split each user's time-ordered events into sessions.

    Args:
        events: ``user_id``, ``item_idx``, ``ts``.
        session_gap: seconds; a gap strictly larger starts a new session.

    Returns:
        ``user_id``, ``ts``, ``item_idx``, ``prev_item`` (the previous item of the same session,
        null at a session start) and ``new_session`` (bool).
    """
    w = Window.partitionBy("user_id").orderBy("ts", "item_idx")
    prev_ts = F.lag("ts").over(w)
    new_session = prev_ts.isNull() | ((F.col("ts") - prev_ts) > F.lit(float(session_gap)))
    return events.select(
        "user_id",
        "ts",
        "item_idx",
        F.lag("item_idx").over(w).alias("_prev"),
        new_session.alias("new_session"),
    ).select(
        "user_id",
        "ts",
        "item_idx",
        "new_session",
        F.when(F.col("new_session"), F.lit(None))
        .otherwise(F.col("_prev"))
        .cast("long")
        .alias("prev_item"),
    )
