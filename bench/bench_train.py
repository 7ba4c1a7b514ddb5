"""Trainer throughput on a walk output: pairs/s and peak RSS for 1..N processes and optimisers.

    python bench/bench_train.py --walks out/ml-latest-small/walks --steps 150 \
        --procs 1 2 --optimizers adam sparse_adam [--set train.embedding_dim=128 ...]

Each configuration runs the real entry point (``torchrun eges/train.py``, or plain python for one
process) into a fresh run directory. Throughput is the steady-state rate logged by rank 0
(``pairs_per_s`` of the last logged step, i.e. since the epoch started, after start-up) times the
number of processes (every rank trains on the same number of walks); peak RSS is the largest
resident set of any one process of the configuration (``RUSAGE_CHILDREN`` of a fresh wrapper). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_one(walks: str, procs: int, optimizer: str, steps: int, extra: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="eges-bench-")) / "run"
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc-per-node={procs}"] if procs > 1 else [sys.executable])
    sets = [f"train.optimizer={optimizer}", f"train.max_steps={steps}", "train.log_every_n_steps=10",
            f"train.checkpoint_every_n_steps={10 * steps}", *extra]
    cmd = [*launcher, str(REPO / "eges" / "train.py"), "--config",
           str(REPO / "conf" / "ml-latest-small.yaml"), "--data", walks, "--output", str(out)]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // procs))}
    # a fresh interpreter per configuration, so RUSAGE_CHILDREN is this configuration's alone
    probe = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
             "sys.exit(rc)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    with (out / "logs" / "metrics.csv").open() as fh:
        rates = [float(r["pairs_per_s"]) for r in csv.DictReader(fh) if r.get("pairs_per_s")]
    return {"procs": procs, "optimizer": optimizer, "pairs_per_s": rates[-1] * procs,
            "peak_rss_mb": peak_kb / 1024, "wall_s": wall}


def window_pair_count(length: int, window: int) -> int:
    """(centre, context) pairs of one walk, both directions, as eges.model.window_pairs forms."""
    return 2 * sum(max(0, length - d) for d in range(1, window + 1))


def run_gensim(walks: str, dim: int, window: int, negatives: int, workers: int) -> dict:
    """gensim skip-gram on the same walks, set up to form the same pairs (DESIGN §4)."""
    from gensim.models import Word2Vec

    from eges.schema import WALK_SCHEMA, read_table

    corpus = [[str(i) for i in w] for w in read_table(Path(walks) / "walks", WALK_SCHEMA)
              ["items"].to_pylist()]
    pairs = sum(window_pair_count(len(w), window) for w in corpus)
    model = Word2Vec(vector_size=dim, window=window, negative=negatives, sg=1, sample=0,
                     shrink_windows=False, min_count=1, workers=workers, seed=1)
    model.build_vocab(corpus)
    start = time.perf_counter()  # training only: no file reading, no vocabulary building
    model.train(corpus, total_examples=len(corpus), epochs=1)
    seconds = time.perf_counter() - start
    return {"pairs_per_s": pairs / seconds, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--walks", required=True)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--optimizers", nargs="+", default=["adam", "sparse_adam"])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--gensim", action="store_true",
                   help="also time gensim Word2Vec skip-gram on the same walks (one epoch)")
    args = p.parse_args()
    print(f"{date.today()} · {platform.node()} · {os.cpu_count()} cores · {platform.processor()} · "
          f"walks {args.walks} · {args.steps} steps · {' '.join(args.set) or 'defaults'}\n")
    print("| processes | optimizer | pairs/s (all ranks) | peak RSS per process (MB) | wall (s) |")
    print("| --- | --- | --- | --- | --- |")
    for procs in args.procs:
        for opt in args.optimizers:
            r = run_one(args.walks, procs, opt, args.steps, args.set)
            print(f"| {r['procs']} | {r['optimizer']} | {r['pairs_per_s']:,.0f} | "
                  f"{r['peak_rss_mb']:,.0f} | {r['wall_s']:.1f} |", flush=True)
    if args.gensim:
        from eges.config import load_config

        t = load_config(REPO / "conf" / "ml-latest-small.yaml", args.set).train
        workers = os.cpu_count() or 1
        g = run_gensim(args.walks, t.embedding_dim, t.window, t.num_negatives, workers)
        print(f"| gensim Word2Vec sg, {workers} workers | (no side info) | "
              f"{g['pairs_per_s']:,.0f} | | {g['seconds']:.1f} (train only) |")


if __name__ == "__main__":
    main()
