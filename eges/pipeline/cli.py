"""The walk job's command line: behaviour logs -> item graph -> weighted random walks -> shards.

    eges walks --config conf/ml-latest-small.yaml [--output DIR] [--set k=v ...]
    spark-submit jobs/walks.py --config conf/ml-latest-small.yaml      # the same, via Spark
    # with the config's spark.driver.memory as --driver-memory (what `make walks` runs):
    spark-submit $(eges walks --print-submit-args --config X) jobs/walks.py --config X

All logic lives in :func:`eges.pipeline.job.run_walk_job`; this module only wires it up.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from eges.config import ConfigError, SparkConfig, add_config_arguments, config_from_args
from eges.quiet import setup_logging

DRIVER_MEMORY = "spark.driver.memory"


def memory_bytes(text: str) -> int:
    """A JVM memory string as Spark reads ``spark.driver.memory`` ("512m", "3g", "8gb"; no
    unit: MiB) in bytes.

    Raises:
        ConfigError: for a string that is not one.
    """
    m = re.fullmatch(r"\s*(\d+)\s*([kmgtp]?)b?\s*", str(text), re.IGNORECASE)
    if m is None:
        raise ConfigError(
            f"spark.conf.{DRIVER_MEMORY}={text!r} is not a JVM memory size such as 512m or 3g"
        )
    unit = m.group(2).lower() or "m"
    return int(m.group(1)) * 1024 ** ("kmgtp".index(unit) + 1)


def spark_submit_args(cfg: SparkConfig) -> list[str]:
    """The spark-submit options the config needs before the driver starts: ``--driver-memory``
    for its ``spark.driver.memory`` (set in code it comes too late, see
    :mod:`eges.pipeline.spark`).

    Returns:
        e.g. ``["--driver-memory", "8g"]``; empty when the config sets no driver memory.

    Raises:
        ConfigError: when that setting is not a memory size.
    """
    memory = cfg.conf.get(DRIVER_MEMORY)
    if memory is None:
        return []
    memory_bytes(memory)  # a bad value fails here, not as a JVM that does not start
    return ["--driver-memory", str(memory)]


def to_stderr(text: str) -> None:
    """Write a line to the stderr of the command the user ran.

    spark-submit merges the stderr of the Python driver it starts into its own stdout, so under
    spark-submit the line goes through the JVM's ``System.err`` (spark-submit's real stderr);
    started as ``python jobs/walks.py``, to this process's stderr.
    """
    from eges.pipeline.spark import under_spark_submit

    if under_spark_submit():
        try:
            from pyspark.context import SparkContext

            SparkContext._ensure_initialized()  # connects to spark-submit's JVM
            err = SparkContext._jvm.System.err
            err.println(text)
            err.flush()
            return
        except Exception:  # no usable gateway: the merged stream is still better than nothing
            pass
    print(text, file=sys.stderr, flush=True)


def error(message: str) -> int:
    """Report a user error (``error: …`` on stderr) and return the exit status 2."""
    to_stderr(f"error: {message}")
    return 2


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors go to the user's stderr under spark-submit too."""

    def error(self, message: str):  # type: ignore[override]
        to_stderr(self.format_usage().rstrip())
        sys.exit(error(message))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from eges.pipeline.spark import under_spark_submit

    prog = "spark-submit jobs/walks.py" if under_spark_submit() else "eges walks"
    p = _Parser(prog=prog, description=__doc__.split("\n\n")[0])
    add_config_arguments(p)
    p.add_argument("--output", help="output directory (overrides output.path)")
    p.add_argument(
        "--log-file",
        help="also write every Python library's log lines to this file "
        "(appended to; Spark's own log4j lines stay on stderr); the screen shows the job's "
        "stages, warnings and summary",
    )
    p.add_argument(
        "--print-submit-args",
        action="store_true",
        help="print the spark-submit options the config needs before the driver starts "
        "(--driver-memory for spark.conf's spark.driver.memory) and exit",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_file)  # py4j's INFO line per gateway call stays off
    try:
        cfg = config_from_args(args, {"output.path": args.output})
    except ConfigError as exc:
        return error(str(exc))

    if args.print_submit_args:  # before anything starts a JVM
        try:
            print(shlex.join(spark_submit_args(cfg.spark)))
        except ConfigError as exc:
            return error(str(exc))
        return 0

    from eges.pipeline.ingest import InputError
    from eges.pipeline.job import run_walk_job, summary
    from eges.pipeline.spark import build_spark

    spark = build_spark(cfg.spark)
    try:
        manifest = run_walk_job(spark, cfg)
    except (InputError, FileExistsError, ValueError) as exc:  # OutputExistsError included
        return error(str(exc))
    except OSError as exc:  # unwritable output, disk full: nothing was published
        return error(f"cannot write the output {cfg.output.path}: {exc}")
    finally:
        spark.stop()
    print(summary(manifest, cfg.output.path))
    return 0
