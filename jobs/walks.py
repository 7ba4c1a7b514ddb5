"""Walk job entry point: behaviour logs -> item graph -> weighted random walks -> parquet shards.

    spark-submit jobs/walks.py --config conf/ml-latest-small.yaml [--output DIR] [--set k=v ...]
    python jobs/walks.py --config conf/ml-latest-small.yaml      # local mode, same thing

All logic lives in :func:`eges.pipeline.job.run_walk_job`; this file only wires it up.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# spark-submit runs this file directly: make the repository's package importable when the project
# is not pip-installed (on a cluster, ship it with --py-files instead).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eges.config import ConfigError, add_config_arguments, config_from_args  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(p)
    p.add_argument("--output", help="output directory (overrides output.path)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args, {"output.path": args.output})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from eges.pipeline.ingest import InputError
    from eges.pipeline.job import run_walk_job, summary
    from eges.pipeline.spark import build_spark

    spark = build_spark(cfg.spark)
    try:
        manifest = run_walk_job(spark, cfg)
    except (InputError, FileExistsError, ValueError) as exc:  # OutputExistsError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable output, disk full: nothing was published
        print(f"error: cannot write the output {cfg.output.path}: {exc}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(summary(manifest, cfg.output.path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
