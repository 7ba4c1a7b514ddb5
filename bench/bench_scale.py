"""Scale benchmarks: trainer memory as the walk corpus grows, and the whole pipeline at ml-25m size.

    python bench/bench_scale.py memory --factors 1 4 16
    python bench/bench_scale.py pipeline --items 62423 --users 162541 --events 25000095

``memory``: walks of one data set (default ml-latest-small) with walks_per_node × 1, 4, 16, then
one full training epoch on each (``python eges/train.py``, export included); prints the
trainer's peak RSS and its growth against the first corpus. The trainer streams the shards, so
memory should not follow the corpus.

``pipeline``: a generated data set the size of MovieLens 25M (``eges.synth``), then
``spark-submit jobs/walks.py`` and one epoch of ``eges/train.py`` with ``conf/ml-25m.yaml``
(d = 160, batch 1024); prints the time of every stage and each process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import date

from common import REPO, measured, synth_data, train_cmd, trained, walk_job

OUT = REPO / "out" / "bench"


def memory(args: argparse.Namespace) -> None:
    rows = []
    for f in args.factors:
        walks = OUT / "memory" / f"walks-{f}x"
        w = walk_job(
            walks, [f"data.path={args.data}", f"walks.walks_per_node={args.walks_per_node * f}"]
        )
        run = OUT / "memory" / f"run-{f}x"
        t = measured(
            train_cmd(
                walks,
                run,
                [
                    "train.epochs=1",
                    "train.overwrite=true",
                    "train.checkpoint_every_n_steps=1000000",
                    *args.set,
                ],
            )
        )
        s = trained(run)
        rows.append(
            {
                "factor": f,
                "walks": w["manifest"]["counts"]["walks"],
                "steps": w["manifest"]["counts"]["walk_steps"],
                "bytes": sum(p.stat().st_size for p in (walks / "walks").rglob("*.parquet")),
                "pairs": s["pairs_per_rank"],
                "fit_s": s["train_seconds"],
                **t,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    base = rows[0]["peak_rss_mb"]
    print(
        f"{date.today()} · {platform.node()} · {os.cpu_count()} cores · data {args.data} · "
        f"walks_per_node {args.walks_per_node} × factor · {' '.join(args.set) or 'defaults'}\n"
    )
    print(
        "| corpus | walks | walk steps | parquet (MB) | pairs trained | fit (s) | pairs/s "
        "| trainer wall (s) | trainer peak RSS (MB) | RSS vs 1× |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['factor']}× | {r['walks']:,} | {r['steps']:,} | {r['bytes'] / 2**20:,.1f} | "
            f"{r['pairs']:,} | {r['fit_s']:.1f} | {r['pairs'] / r['fit_s']:,.0f} | "
            f"{r['wall_s']:.1f} | {r['peak_rss_mb']:,.0f} | "
            f"{(r['peak_rss_mb'] / base - 1) * 100:+.1f}% |"
        )


def pipeline(args: argparse.Namespace) -> None:
    config = REPO / "conf" / "ml-25m.yaml"
    data = synth_data(args.items, args.events, args.users)
    walks, run = OUT / "ml25m-size" / "walks", OUT / "ml25m-size" / "run"
    w = walk_job(walks, [f"data.path={data}", *args.set], args.driver_memory, config)
    t = measured(
        train_cmd(walks, run, ["train.epochs=1", "train.overwrite=true", *args.set], config=config)
    )
    s, m = trained(run), w["manifest"]
    c, ts = m["counts"], m["timings_s"]
    rest = t["wall_s"] - s["train_seconds"]
    print(
        f"{date.today()} · {platform.node()} · {os.cpu_count()} cores · conf/ml-25m.yaml on "
        f"{data.name} ({c['events']:,} events, {c['items']:,} items, {c['edges']:,} edges, "
        f"{c['walks']:,} walks, {c['walk_steps']:,} steps) · {' '.join(args.set) or 'defaults'}"
        "\n"
    )
    print("| stage | seconds | notes |")
    print("|---|---|---|")
    for stage in ("ingest", "sessions", "graph", "walks", "write"):
        note = f"{c['walk_steps'] / ts['walks']:,.0f} steps/s" if stage == "walks" else ""
        print(f"| walk job: {stage} | {ts[stage]:.1f} | {note} |")
    print(
        f"| walk job: wall incl. JVM start | {w['wall_s']:.1f} | driver JVM peak RSS "
        f"{w['peak_rss_mb']:,.0f} MB |"
    )
    print(
        f"| train: 1 epoch (fit) | {s['train_seconds']:.1f} | {s['pairs_per_rank']:,} pairs, "
        f"{s['pairs_per_rank'] / s['train_seconds']:,.0f} pairs/s |"
    )
    print(f"| train: start-up + export | {rest:.1f} | item tables, walk frequencies, export |")
    print(f"| train: wall | {t['wall_s']:.1f} | peak RSS {t['peak_rss_mb']:,.0f} MB |")
    print(f"| **total (walks + train + export)** | **{w['wall_s'] + t['wall_s']:.1f}** | |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("memory", help="trainer peak RSS for a growing walk corpus")
    m.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ml-latest-small"))
    m.add_argument("--walks-per-node", type=int, default=20)
    m.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    m.add_argument("--set", action="append", default=[], help="config override (train.*)")
    q = sub.add_parser("pipeline", help="walks + 1 epoch + export on ml-25m-size generated data")
    q.add_argument("--items", type=int, default=62_423)
    q.add_argument("--users", type=int, default=162_541)
    q.add_argument("--events", type=int, default=25_000_095)
    q.add_argument("--driver-memory", default="12g")
    q.add_argument("--set", action="append", default=[], help="config override")
    args = p.parse_args()
    memory(args) if args.command == "memory" else pipeline(args)


if __name__ == "__main__":
    main()
