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
import sys

from common import REPO, synth_data, walk_job


def run(data, out, master: str, walks_per_node: int, driver_memory: str) -> dict:
    r = walk_job(
        out,
        [f"data.path={data}", f"spark.master={master}", f"walks.walks_per_node={walks_per_node}"],
        driver_memory,
    )
    m = r["manifest"]
    return {
        "master": m["spark_master"],
        "walks_per_node": walks_per_node,
        "wall": r["wall_s"],
        "peak_mb": r["peak_rss_mb"],
        "timings": m["timings_s"],
        "counts": m["counts"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--users", type=int, default=None, help="default: items / 2")
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--masters", nargs="+", default=["local[1]", "local[2]"])
    p.add_argument("--walks-per-node", nargs="+", type=int, default=[10, 20])
    p.add_argument("--driver-memory", default="8g")
    args = p.parse_args()
    data = synth_data(args.items, args.events, args.users)
    rows = []
    for master in args.masters:
        for wpn in args.walks_per_node:
            r = run(data, REPO / "out" / "bench" / "walks", master, wpn, args.driver_memory)
            rows.append(r)
            print(json.dumps(r), file=sys.stderr)
    print(
        "| master | walks/node | items | edges | walk steps | ingest | sessions | graph | "
        "walks | write | total (s) | steps/s (walk stage) | wall incl. JVM (s) | peak RSS (MB) |"
    )
    print("|" + "---|" * 14)
    for r in rows:
        t, c = r["timings"], r["counts"]
        print(
            f"| {r['master']} | {r['walks_per_node']} | {c['items']:,} | {c['edges']:,} | "
            f"{c['walk_steps']:,} | {t['ingest']:.1f} | {t['sessions']:.1f} | {t['graph']:.1f} | "
            f"{t['walks']:.1f} | {t['write']:.1f} | {t['total']:.1f} | "
            f"{c['walk_steps'] / t['walks']:,.0f} | {r['wall']:.1f} | {r['peak_mb']:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
