"""Walk-job benchmark on generated data (eges.synth): steps/s and time per stage.

    .venv/bin/python bench/bench_walks.py --items 100000 --events 2000000 \
        --masters "local[1]" "local[2]" --walks-per-node 10 20

Generates (or reuses) a MovieLens-layout data set under out/bench/synth-<items>, then runs the
real entry point (`spark-submit jobs/walks.py`) once per master × walks_per_node and prints a
Markdown table: the manifest's per-stage timings, walk steps, steps/s of the walk stage, wall
time with JVM start-up, and the peak RSS of the driver JVM (GNU time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from eges.synth import SynthSpec, generate  # noqa: E402


def run(data: Path, out: Path, master: str, walks_per_node: int, driver_memory: str) -> dict:
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "--driver-memory", driver_memory,
           str(REPO / "jobs" / "walks.py"), "--config", str(REPO / "conf" / "ml-latest-small.yaml"),
           "--set", f"data.path={data}", "--set", f"output.path={out}",
           "--set", "output.overwrite=true", "--set", f"spark.master={master}",
           "--set", f"walks.walks_per_node={walks_per_node}"]
    rss_file = out.parent / "peak-rss-kb"
    # spark-submit execs the driver JVM: GNU time's %M is that JVM's peak RSS (local mode: the
    # executors are threads of it); Python workers are not included
    timed = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] if Path("/usr/bin/time").exists() \
        else []
    start = time.perf_counter()
    proc = subprocess.run([*timed, *cmd], capture_output=True, text=True,
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    peak_mb = int(rss_file.read_text().split()[-1]) / 1024 if timed else float("nan")
    m = json.loads((out / "manifest.json").read_text())
    return {"master": m["spark_master"], "walks_per_node": walks_per_node, "wall": wall,
            "peak_mb": peak_mb, "timings": m["timings_s"], "counts": m["counts"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--users", type=int, default=None, help="default: items / 2")
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--masters", nargs="+", default=["local[1]", "local[2]"])
    p.add_argument("--walks-per-node", nargs="+", type=int, default=[10, 20])
    p.add_argument("--driver-memory", default="8g")
    args = p.parse_args()
    data = REPO / "out" / "bench" / f"synth-{args.items}-{args.events}"
    if not (data / "ratings.csv").exists():
        t = time.perf_counter()
        c = generate(data, SynthSpec(items=args.items, users=args.users or args.items // 2,
                                     events=args.events, communities=max(10, args.items // 200)))
        print(f"generated {c['events']:,} events on {c['items']:,} items in "
              f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
    rows = []
    for master in args.masters:
        for wpn in args.walks_per_node:
            r = run(data, REPO / "out" / "bench" / "walks", master, wpn, args.driver_memory)
            rows.append(r)
            print(json.dumps(r), file=sys.stderr)
    print("| master | walks/node | items | edges | walk steps | ingest | sessions | graph | "
          "walks | write | total (s) | steps/s (walk stage) | wall incl. JVM (s) | peak RSS (MB) |")
    print("|" + "---|" * 14)
    for r in rows:
        t, c = r["timings"], r["counts"]
        print(f"| {r['master']} | {r['walks_per_node']} | {c['items']:,} | {c['edges']:,} | "
              f"{c['walk_steps']:,} | {t['ingest']:.1f} | {t['sessions']:.1f} | {t['graph']:.1f} | "
              f"{t['walks']:.1f} | {t['write']:.1f} | {t['total']:.1f} | "
              f"{c['walk_steps'] / t['walks']:,.0f} | {r['wall']:.1f} | {r['peak_mb']:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
