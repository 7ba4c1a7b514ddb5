"""Walk job entry point: behaviour logs -> item graph -> weighted random walks -> parquet shards.

    spark-submit jobs/walks.py --config conf/ml-latest-small.yaml [--output DIR] [--set k=v ...]
    python jobs/walks.py --config conf/ml-latest-small.yaml      # local mode, same thing

The command is :mod:`eges.pipeline.cli` (also ``eges walks``); this file only makes it
runnable by spark-submit.
"""

import sys
from pathlib import Path

# spark-submit runs this file directly: make the repository's package importable when the project
# is not pip-installed (on a cluster, ship it with --py-files instead).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eges.pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
