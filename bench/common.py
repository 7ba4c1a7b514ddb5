"""Shared by the benchmarks: run the real entry points and measure wall time and peak memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from eges import schema  # noqa: E402
from eges.synth import SynthSpec, generate  # noqa: E402

# a fresh interpreter per measured command, so RUSAGE_CHILDREN is that command's alone: the
# largest resident set of any one of its processes (for torchrun: of any rank)
_PROBE = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(rc)"
)


def measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; returns wall seconds and peak RSS (MB) of its largest process.

    Exits with the command's stderr tail if it fails.
    """
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *cmd],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_rss_mb": peak_kb / 1024}


def trained(run: Path) -> dict:
    """The training statistics a run's export manifest records (``eges/train.py``)."""
    return schema.read_manifest(run / "export", kind=None)["training"]


def bench_spark(app_name: str, args, **extra: str):
    """The benchmark's SparkSession from its ``--master``, ``--partitions`` (shuffle partitions)
    and ``--driver-memory``; errors only in the log, no progress bars; ``extra`` Spark settings
    on top (e.g. ``spark.ui.enabled``)."""
    from eges.config import SparkConfig
    from eges.pipeline.spark import build_spark

    return build_spark(
        SparkConfig(
            master=args.master,
            app_name=app_name,
            shuffle_partitions=args.partitions,
            log_level="ERROR",
            conf={"spark.driver.memory": args.driver_memory},
        ),
        extra={"spark.ui.showConsoleProgress": "false", **extra},
    )


def synth_data(items: int, events: int, users: int | None = None) -> Path:
    """A generated MovieLens-layout data set under out/bench (reused when it exists)."""
    data = REPO / "out" / "bench" / f"synth-{items}-{events}"
    if not (data / "ratings.csv").exists():
        t = time.perf_counter()
        c = generate(
            data,
            SynthSpec(
                items=items,
                users=users or items // 2,
                events=events,
                communities=max(10, items // 200),
            ),
        )
        print(
            f"generated {c['events']:,} events on {c['items']:,} items in "
            f"{time.perf_counter() - t:.0f} s",
            file=sys.stderr,
        )
    return data


def walk_job(
    out: Path,
    sets: list[str],
    driver_memory: str = "8g",
    config: Path = REPO / "conf" / "ml-latest-small.yaml",
) -> dict:
    """``spark-submit jobs/walks.py`` into ``out``; the manifest plus wall time and JVM peak RSS."""
    cmd = [
        str(Path(sys.executable).parent / "spark-submit"),
        "--driver-memory",
        driver_memory,
        str(REPO / "jobs" / "walks.py"),
        "--config",
        str(config),
        "--set",
        f"output.path={out}",
        "--set",
        "output.overwrite=true",
    ]
    for s in sets:
        cmd += ["--set", s]
    out.parent.mkdir(parents=True, exist_ok=True)
    rss_file = out.parent / f"{out.name}.peak-rss-kb"
    # spark-submit execs the driver JVM: GNU time's %M is that JVM's peak RSS (local mode: the
    # executors are threads of it); Python workers are not included
    timed = (
        ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] if Path("/usr/bin/time").exists() else []
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [*timed, *cmd],
        capture_output=True,
        text=True,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    peak_mb = int(rss_file.read_text().split()[-1]) / 1024 if timed else float("nan")
    manifest = schema.read_manifest(out)
    return {"wall_s": wall, "peak_rss_mb": peak_mb, "manifest": manifest}


def train_cmd(
    walks: Path,
    run: Path,
    sets: list[str],
    procs: int = 1,
    config: Path = REPO / "conf" / "ml-latest-small.yaml",
) -> list[str]:
    """The trainer's real entry point (plain python for one process, torchrun otherwise)."""
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
        if procs > 1
        else [sys.executable]
    )
    cmd = [
        *launcher,
        str(REPO / "eges" / "train.py"),
        "--config",
        str(config),
        "--data",
        str(walks),
        "--output",
        str(run),
    ]
    for s in sets:
        cmd += ["--set", s]
    return cmd
