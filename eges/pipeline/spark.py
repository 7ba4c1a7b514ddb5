"""Building the SparkSession from :class:`eges.config.SparkConfig`."""

from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from eges.config import SparkConfig

log = logging.getLogger(__name__)


def build_spark(cfg: SparkConfig, extra: dict[str, str] | None = None) -> SparkSession:
    """Get or create the SparkSession for a walk job.

    ``cfg.master`` is applied only when set: under ``spark-submit --master …`` leave it null so
    the command line decides (a master set in code would override it). Python workers default to
    this interpreter so pandas/pyarrow UDFs find the same packages; set ``PYSPARK_PYTHON`` to
    point executors elsewhere.

    Args:
        cfg: the ``spark`` config section.
        extra: further ``spark.*`` settings (tests use it to turn the UI off).

    Returns:
        The active SparkSession.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(cfg.app_name)
    if cfg.master:
        builder = builder.master(cfg.master)
    settings = {
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        # ingest counts malformed CSV rows, which needs whole-row parsing (see ingest.read_csv)
        "spark.sql.csv.parser.columnPruning.enabled": "false",
        **cfg.conf,
        **(extra or {}),
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    for key, value in settings.items():  # an existing session keeps its static conf; set runtime ones
        try:
            spark.conf.set(key, value)
        except Exception:  # static settings (e.g. spark.ui.enabled) cannot change at runtime
            log.debug("cannot set %s on a running session", key)
    log.info("Spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark
