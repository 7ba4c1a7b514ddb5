"""Shared fixtures: one local Spark session for the whole run, the shared data location, and a
private build cache for the C training step."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("EGES_SHARED_DATA", REPO.parent / "shared" / "data"))
ML_SMALL = SHARED_DATA / "ml-latest-small"

# The C training step is compiled into a private directory of this test run (mode 0700, as
# mkdtemp makes it), never into the user's ~/.cache; subprocesses (torchrun) inherit it.
KERNEL_CACHE = tempfile.mkdtemp(prefix="eges-kernel-")
os.environ["EGES_KERNEL_CACHE"] = KERNEL_CACHE
atexit.register(shutil.rmtree, KERNEL_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def spark():
    """local[2], few shuffle partitions, UI off: the one SparkSession of the test run."""
    from eges.config import SparkConfig
    from eges.pipeline.spark import build_spark

    session = build_spark(
        SparkConfig(
            master="local[2]", app_name="eges-tests", shuffle_partitions=4, log_level="ERROR"
        ),
        extra={
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.adaptive.enabled": "false",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ml_small() -> Path:
    if not (ML_SMALL / "ratings.csv").is_file():
        pytest.skip(f"MovieLens latest-small not found at {ML_SMALL} (set EGES_SHARED_DATA)")
    return ML_SMALL
