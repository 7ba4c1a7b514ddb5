"""Per-stage summary of a Spark event log: tasks, wall time, median and slowest task, shuffle
written, and the first frame of this project in the stage's call site.

    spark-submit --conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file:///tmp/events …
    .venv/bin/python bench/spark_eventlog.py /tmp/events/eventlog_v2_local-…

Takes an event log file or Spark 4's rolling log directory (``events_N_….zstd`` files, read with
the ``zstd`` command).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def lines(path: Path) -> Iterator[str]:
    files = (
        sorted(path.glob("events_*"), key=lambda p: int(p.name.split("_")[1]))
        if path.is_dir()
        else [path]
    )
    for f in files:
        if f.suffix == ".zstd":
            yield from subprocess.run(
                ["zstd", "-dcq", str(f)], capture_output=True, text=True, check=True
            ).stdout.splitlines()
        else:
            yield from f.read_text().splitlines()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", type=Path, help="event log file or rolling log directory")
    args = p.parse_args()
    stages, tasks = {}, {}
    for line in lines(args.log):
        e = json.loads(line)
        if e["Event"] == "SparkListenerStageCompleted":
            si = e["Stage Info"]
            stages[(si["Stage ID"], si["Stage Attempt ID"])] = si
        elif e["Event"] == "SparkListenerTaskEnd":
            m = e.get("Task Metrics") or {}
            sw = m.get("Shuffle Write Metrics", {})
            tasks.setdefault((e["Stage ID"], e["Stage Attempt ID"]), []).append(
                (
                    m.get("Executor Run Time", 0),
                    sw.get("Shuffle Bytes Written", 0),
                    sw.get("Shuffle Records Written", 0),
                )
            )
    print(
        "| stage | tasks | wall (s) | task median / slowest (s) | shuffle written | B/record "
        "| call site |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key in sorted(stages, key=lambda k: stages[k].get("Submission Time", 0)):
        si = stages[key]
        frames = [x.strip() for x in si.get("Details", "").splitlines() if "/eges/" in x]
        site = frames[0].split("/eges/")[-1] if frames else si["Stage Name"]
        ts = tasks.get(key, [])
        run = [t[0] / 1000 for t in ts] or [0.0]
        wall = (si.get("Completion Time", 0) - si.get("Submission Time", 0)) / 1000
        written, records = sum(t[1] for t in ts), sum(t[2] for t in ts)
        print(
            f"| {key[0]} | {si['Number of Tasks']} | {wall:.1f} | "
            f"{statistics.median(run):.1f} / {max(run):.1f} | {written / 1e6:,.1f} MB, "
            f"{records:,} records | {written / max(records, 1):.1f} | {site} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
