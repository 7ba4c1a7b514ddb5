"""Building the SparkSession from :class:`eges.config.SparkConfig`.

The command line wins. Under ``spark-submit`` every setting it passed (``--master``, ``--conf``,
``--driver-memory``, ``spark-defaults.conf``) reaches the driver as a ``spark.*`` Java system
property of the JVM that started this Python process, and :class:`pyspark.SparkConf` loads those;
the config's ``spark`` section only fills in the settings spark-submit did not set. spark-submit
always sets a master (``local[*]`` when ``--master`` is not given), so under spark-submit the
master is spark-submit's and ``spark.master`` of the config is ignored (with a warning when they
differ). Run as ``python jobs/walks.py`` (no spark-submit), the config's master applies, and a
null master gives pyspark's default, ``local[*]``.

``spark.driver.memory`` is the driver JVM's heap, fixed when that JVM starts. Run as ``python
jobs/walks.py``, the JVM starts with the session, so the config's value applies. Under
spark-submit the JVM is already running: the config's value cannot take effect, so it is not
applied (``spark.conf`` would report a heap the driver does not have), and when the real heap
differs from it a warning names the option that works, ``spark-submit --driver-memory``;
:func:`eges.pipeline.cli.spark_submit_args` gives that option to this project's launchers
(``make walks``, ``make demo``, the evaluation's walk jobs).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pyspark import SparkConf
from pyspark.context import SparkContext
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from eges.config import SparkConfig
from eges.pipeline.cli import DRIVER_MEMORY, memory_bytes

log = logging.getLogger(__name__)

MASTER = "spark.master"
APP_NAME = "spark.app.name"
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
# how far the real heap may be from spark.driver.memory without a warning: the JVM reports a
# little less than -Xmx with some collectors (a survivor space is left out)
HEAP_TOLERANCE = 0.15
# settings the results depend on: applied whatever spark-submit or spark-defaults.conf say
REQUIRED = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.csv.parser.columnPruning.enabled": "false",
}
REQUIRED_WHY = {
    "spark.sql.session.timeZone": "timestamps and time patterns are read in UTC, so session "
    "gaps and time splits do not depend on the cluster's zone",
    "spark.sql.csv.parser.columnPruning.enabled": "malformed CSV rows are counted by parsing "
    "whole rows",
}


# settings of ours that the config (spark.conf) or spark-submit may change
DEFAULTS = {
    # Spark writes every query's plan as a string (for its UI and event log); this cuts it. A
    # deep plan (a validation hold-out of items over ml-100k's five side-info fields) built one
    # that filled a 1 GiB driver heap, and the job died with OutOfMemoryError
    "spark.sql.maxPlanStringLength": "1m",
}


def under_spark_submit() -> bool:
    """True when spark-submit started this Python process (it hands over its JVM's gateway)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def submitted_settings() -> dict[str, str] | None:
    """The ``spark.*`` settings spark-submit passed to this driver; None when not under it."""
    if not under_spark_submit():
        return None
    SparkContext._ensure_initialized()  # connects to spark-submit's JVM, starts nothing
    return dict(SparkConf().getAll())


def quiet_spark_start(level: str) -> None:
    """Apply Spark's screen log level before the SparkContext starts, under spark-submit.

    spark-submit re-initialises Spark's logging when the application's SparkContext starts, with
    Spark's default profile (INFO): some 40 lines of start-up details before
    ``setLogLevel`` can apply. Initialising it here first (silently) and setting the level
    leaves the start-up to say only its warnings. A user's own log4j2 configuration is kept, as
    by ``setLogLevel``, apart from the root level. Does nothing when not under spark-submit or
    when a SparkContext runs already; a Spark without these internals keeps its lines (a debug
    line says why).
    """
    if not under_spark_submit() or SparkContext._active_spark_context is not None:
        return
    try:
        SparkContext._ensure_initialized()  # spark-submit's JVM
        jvm = SparkContext._jvm
        utils = jvm.java.lang.Class.forName("org.apache.spark.util.Utils$").getField("MODULE$")
        utils.get(None).initializeLogIfNecessary(False, True)  # (not a shell, silent)
        levels = jvm.org.apache.logging.log4j.Level
        jvm.org.apache.spark.util.Utils.setLogLevel(levels.toLevel(level))
        if level == "WARN":  # Hadoop's native library is optional: Java's classes do its work
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
                "org.apache.hadoop.util.NativeCodeLoader", levels.ERROR
            )
    except Exception as exc:  # py4j errors: another Spark's internals
        log.debug("Spark's start-up log level not set early: %s", exc)


def configured_driver_memory(cfg: SparkConfig, extra: dict[str, str] | None = None) -> str | None:
    """``spark.driver.memory`` of the config (or ``extra``); None when neither sets it."""
    value = (extra or {}).get(DRIVER_MEMORY, cfg.conf.get(DRIVER_MEMORY))
    return None if value is None else str(value)


def check_driver_memory(heap_bytes: int, wanted: str | None, submitted: bool) -> bool:
    """Warn when the driver's real heap is not the configured ``spark.driver.memory``.

    Args:
        heap_bytes: the driver JVM's maximum heap (``Runtime.getRuntime().maxMemory()``).
        wanted: the config's ``spark.driver.memory``; None: nothing to check.
        submitted: whether spark-submit started the driver (the warning names its option).

    Returns:
        True when the heap matches (or nothing was asked for), False after a warning.
    """
    if wanted is None:
        return True
    try:
        want = memory_bytes(wanted)
    except ValueError as exc:  # ConfigError
        log.warning("%s", exc)
        return False
    if abs(heap_bytes - want) <= HEAP_TOLERANCE * want:
        return True
    how = (
        f"under spark-submit the driver JVM starts before the config is read: pass "
        f"spark-submit --driver-memory {wanted}"
        if submitted
        else "the driver JVM of this process was already running: set it before the first "
        f"SparkSession, or run the job with spark-submit --driver-memory {wanted}"
    )
    log.warning(
        "%s=%s of the config does not take effect: the driver's heap is %.1f GiB (%s)",
        DRIVER_MEMORY,
        wanted,
        heap_bytes / 2**30,
        how,
    )
    return False


def resolve_settings(
    cfg: SparkConfig, submitted: dict[str, str] | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The settings to apply in code: :data:`DEFAULTS` and the config's, less those
    spark-submit already set, plus :data:`REQUIRED` always (a different value from anywhere is
    overridden with a warning).

    Args:
        cfg: the ``spark`` config section.
        submitted: spark-submit's settings (:func:`submitted_settings`); None when the job was
            not started by spark-submit, in which case every config setting applies.
        extra: further ``spark.*`` settings, treated like the config's.

    Returns:
        ``spark.*`` key -> value, ``spark.master`` included when the config's master applies;
        under spark-submit never ``spark.driver.memory`` (the driver JVM already runs).
    """
    wanted = {
        **DEFAULTS,
        APP_NAME: cfg.app_name,
        SHUFFLE_PARTITIONS: str(cfg.shuffle_partitions),
        # YAML booleans as Spark writes them ("true", not Python's "True")
        **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in cfg.conf.items()},
        **(extra or {}),
    }
    for key, value in REQUIRED.items():
        given = (submitted or {}).get(key, wanted.get(key, value))
        if given != value:
            log.warning(
                "%s=%s is ignored: the walk job needs %s (%s)", key, given, value, REQUIRED_WHY[key]
            )
    if submitted is None:
        if cfg.master:
            wanted[MASTER] = cfg.master
        return {**wanted, **REQUIRED}
    if cfg.master and cfg.master != submitted.get(MASTER):
        log.warning(
            "spark.master %s of the config is ignored: under spark-submit the master is "
            "spark-submit's (%s); choose it with --master",
            cfg.master,
            submitted.get(MASTER),
        )
    settings = {}
    for key, value in wanted.items():
        # spark-submit names the app after the script unless --name is given: keep the config's
        default_name = key == APP_NAME and submitted.get(key) == Path(sys.argv[0]).name
        if key in submitted and not default_name:
            if submitted[key] != value:
                log.info(
                    "%s=%s from spark-submit wins over the config's %s", key, submitted[key], value
                )
            continue
        if key == DRIVER_MEMORY:  # too late for this JVM: build_spark checks the real heap
            continue
        settings[key] = value
    return {**settings, **REQUIRED}


def build_spark(cfg: SparkConfig, extra: dict[str, str] | None = None) -> SparkSession:
    """Get or create the SparkSession for a walk job.

    Settings given to spark-submit win over the config's (see the module docstring). Python
    workers default to this interpreter so pandas/pyarrow UDFs find the same packages; set
    ``PYSPARK_PYTHON`` to point executors elsewhere.

    Args:
        cfg: the ``spark`` config section.
        extra: further ``spark.*`` settings (tests use it to turn the UI off).

    Returns:
        The active SparkSession.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    submitted = submitted_settings()
    quiet_spark_start(cfg.log_level)
    settings = resolve_settings(cfg, submitted, extra)
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    heap = driver_heap_bytes(spark)
    if DRIVER_MEMORY not in (submitted or {}):  # spark-submit's own setting did apply
        check_driver_memory(heap, configured_driver_memory(cfg, extra), submitted is not None)
    # an existing session keeps its static conf: set the runtime settings on it
    for key, value in settings.items():
        if key in (MASTER, APP_NAME):
            continue
        try:
            spark.conf.set(key, value)
        except Exception:  # static settings (e.g. spark.ui.enabled) cannot change at runtime
            log.debug("cannot set %s on a running session", key)
    log.info(
        "Spark %s, master %s, %s=%s, driver heap %.1f GiB",
        spark.version,
        spark.sparkContext.master,
        SHUFFLE_PARTITIONS,
        spark.conf.get(SHUFFLE_PARTITIONS),
        heap / 2**30,
    )
    return spark


def driver_heap_bytes(spark: SparkSession) -> int:
    """The driver JVM's maximum heap in bytes (what ``spark.driver.memory`` really gave)."""
    return int(spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory())


def hash_partition_keys(
    spark: SparkSession, n: int, counts: Sequence[int], *, negative: bool = False
) -> list[list[int]]:
    """For each partition ``i`` of ``n``, ``counts[i]`` distinct longs that
    ``repartition(n, key)`` sends to partition ``i``.

    Spark hash-partitions by ``pmod(murmur3(key), n)``; the keys are found with Spark's own hash
    over a range of candidates (0, 1, 2, …, or -1, -2, … with ``negative``), so they hold for
    the Spark version that runs. Each list is in the candidates' order (the smallest in
    magnitude first).
    """
    need = max(counts, default=0)
    if need == 0:
        return [[] for _ in range(n)]
    key = -F.col("id") - 1 if negative else F.col("id")
    candidates = 64 * n * need
    while True:
        rows = (
            spark.range(candidates)
            .select(key.alias("k"))
            .select(F.pmod(F.hash("k"), F.lit(n)).alias("p"), "k")
            .groupBy("p")
            .agg(F.slice(F.sort_array(F.collect_list("k"), asc=not negative), 1, need).alias("k"))
            .collect()
        )
        found = {r["p"]: r["k"] for r in rows}
        if all(len(found.get(i, [])) >= counts[i] for i in range(n)):
            return [found.get(i, [])[: counts[i]] for i in range(n)]
        candidates *= 4
