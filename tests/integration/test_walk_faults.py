"""The walk job through failures: Spark task retries, a job killed mid-write, an unwritable
output path."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eges import schema
from eges.config import load_config
from eges.pipeline.job import run_walk_job

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_task_failures_are_retried_into_identical_walks(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("spark_task_faults.py")), str(tmp_path)],
        env={**ENV, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["injected_failures"] >= 7  # at least one per walk step
    assert len(out["clean"]) > 500
    assert out["faulty"] == out["clean"]  # nothing lost, nothing duplicated, same walks


def walk_cli(ml_small: Path, out: Path) -> list[str]:
    sets = [
        f"data.path={ml_small}",
        f"output.path={out}",
        "walks.walks_per_node=2",
        "output.num_shards=4",
        "spark.master=local[2]",
    ]
    return [
        sys.executable,
        str(REPO / "jobs" / "walks.py"),
        "--config",
        str(REPO / "conf" / "ml-latest-small.yaml"),
        *[a for s in sets for a in ("--set", s)],
    ]


def test_killed_walk_job_leaves_nothing_a_reader_accepts(spark, ml_small, tmp_path):
    out = tmp_path / "walks"
    proc = subprocess.Popen(
        walk_cli(ml_small, out),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    try:
        # kill once the walk shards are being written into the hidden temporary directory
        while not list(tmp_path.glob(".walks.tmp-*/walks")):
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    staged = list(tmp_path.glob(".walks.tmp-*"))
    assert staged and not out.exists()
    for d in [out, *staged]:  # the trainer's reader refuses both
        with pytest.raises(schema.IncompleteOutputError):
            schema.read_manifest(d)
    train = subprocess.run(
        [
            sys.executable,
            str(REPO / "eges" / "train.py"),
            "--config",
            str(REPO / "conf" / "ml-latest-small.yaml"),
            "--data",
            str(staged[0]),
            "--output",
            str(tmp_path / "run"),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 2 and "manifest" in train.stderr
    # a re-run completes, removes the dead run's leftovers and equals an uninterrupted run
    rerun = subprocess.run(
        walk_cli(ml_small, out), env=ENV, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not list(tmp_path.glob(".walks.tmp-*"))
    ref = tmp_path / "ref"
    cfg = load_config(
        REPO / "conf" / "ml-latest-small.yaml",
        [
            f"data.path={ml_small}",
            f"output.path={ref}",
            "walks.walks_per_node=2",
            "output.num_shards=4",
        ],
    )
    run_walk_job(spark, cfg)
    got = schema.read_table(out / "walks", schema.WALK_SCHEMA).sort_by("walk_id")
    want = schema.read_table(ref / "walks", schema.WALK_SCHEMA).sort_by("walk_id")
    assert got.equals(want)


def test_unwritable_output_is_a_clear_error(ml_small, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = subprocess.run(
        walk_cli(ml_small, blocker / "walks"), env=ENV, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "error:" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
