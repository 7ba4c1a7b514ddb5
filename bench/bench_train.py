"""Trainer throughput on a walk output: pairs/s and peak RSS, each against gensim in the same run.

    python bench/bench_train.py --walks out/ml-latest-small/walks --steps 150 --repeat 3 \
        --modes eges ges bge --procs 1 2 --batch-sizes 256 64 1024 4096 \
        --negatives-per position walk --kernels auto torch --gensim

Configurations are one factor at a time around a base (the first value of each list: 1
process, adam, eges, batch 256, negatives per position, kernel auto): every other value of one
list is the base with that one setting changed. Each configuration runs the real entry point
(``torchrun eges/train.py``, or plain python for one process) into a fresh run directory.
Throughput is the rate logged by rank 0 at its last logged step (``pairs_per_s``, pairs since
the epoch started over the time since then) times the number of processes (every rank trains on
the same number of walks); peak RSS is the largest resident set of any one process of the
configuration (``RUSAGE_CHILDREN`` of a fresh wrapper). With ``--repeat R`` the configurations
and gensim run R rounds, interleaved, and the table shows medians (and gensim's ratio per
round, as min–max) -- the machines are noisy.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from common import REPO, measured, train_cmd, trained


def run_one(walks: str, cfg: dict, steps: int, extra: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="eges-bench-")) / "run"
    procs = cfg["procs"]
    # "sharded": the tables split by row over the processes (row-wise Adagrad, TorchRec)
    sharded = cfg["optimizer"] == "sharded"
    sets = [
        "train.optimizer=auto" if sharded else f"train.optimizer={cfg['optimizer']}",
        f"train.sharding={'sharded' if sharded else 'replicated'}",
        f"train.mode={cfg['mode']}",
        f"train.batch_size={cfg['batch']}",
        f"train.negatives_per={cfg['negatives']}",
        f"train.shuffle_buffer={max(8192, cfg['batch'])}",
        f"train.embedding_dim={cfg['dim']}",
        f"train.num_negatives={cfg['negatives_k']}",
        f"train.kernel={cfg['kernel']}",
        f"train.max_steps={steps}",
        f"train.log_every_n_steps={max(1, steps // 10)}",
        f"train.checkpoint_every_n_steps={10 * steps}",
        *extra,
    ]
    r = measured(
        train_cmd(Path(walks), out, sets, procs),
        {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // procs))},
    )
    with (out / "logs" / "metrics.csv").open() as fh:
        rates = [float(r["pairs_per_s"]) for r in csv.DictReader(fh) if r.get("pairs_per_s")]
    training = trained(out)
    shutil.rmtree(out.parent, ignore_errors=True)
    return {
        "pairs_per_s": rates[-1] * procs,
        "peak_rss_mb": r["peak_rss_mb"],
        "gpu_peak_mb": training.get("gpu_peak_mb"),
        "wall_s": r["wall_s"],
    }


def configurations(args: argparse.Namespace) -> list[dict]:
    """The base configuration, then one factor changed at a time."""
    axes = {
        "procs": args.procs,
        "optimizer": args.optimizers,
        "mode": args.modes,
        "batch": args.batch_sizes,
        "negatives": args.negatives_per,
        "dim": args.dims,
        "negatives_k": args.num_negatives,
        "kernel": args.kernels,
    }
    base = {k: v[0] for k, v in axes.items()}
    out = [base]
    for key, values in axes.items():
        out += [{**base, key: v} for v in values[1:]]
    return out


def window_pair_count(length: int, window: int) -> int:
    """(centre, context) pairs of one walk, both directions, as loss.pair_mask selects."""
    return 2 * sum(max(0, length - d) for d in range(1, window + 1))


def run_gensim(walks: str, dim: int, window: int, negatives: int, workers: int) -> dict:
    """gensim skip-gram on the same walks, set up to form the same pairs (``sample=0``,
    ``shrink_windows=False``); only ``train()`` is timed."""
    from gensim.models import Word2Vec

    from eges.schema import WALK_SCHEMA, read_table

    corpus = [
        [str(i) for i in w]
        for w in read_table(Path(walks) / "walks", WALK_SCHEMA)["items"].to_pylist()
    ]
    pairs = sum(window_pair_count(len(w), window) for w in corpus)
    model = Word2Vec(
        vector_size=dim,
        window=window,
        negative=negatives,
        sg=1,
        sample=0,
        shrink_windows=False,
        min_count=1,
        workers=workers,
        seed=1,
    )
    model.build_vocab(corpus)
    start = time.perf_counter()  # training only: no file reading, no vocabulary building
    model.train(corpus, total_examples=len(corpus), epochs=1)
    seconds = time.perf_counter() - start
    return {"pairs_per_s": pairs / seconds, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--walks", required=True)
    p.add_argument(
        "--steps",
        type=int,
        default=150,
        help="steps at batch 256; other batch sizes run as many walks (>= 20 steps)",
    )
    p.add_argument("--procs", type=int, nargs="+", default=[1])
    p.add_argument("--optimizers", nargs="+", default=["adam"])
    p.add_argument("--modes", nargs="+", default=["eges"], choices=["eges", "ges", "bge"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256])
    p.add_argument("--dims", type=int, nargs="+", default=[128], help="train.embedding_dim")
    p.add_argument("--num-negatives", type=int, nargs="+", default=[5], help="train.num_negatives")
    p.add_argument("--negatives-per", nargs="+", default=["position"], choices=["position", "walk"])
    p.add_argument(
        "--kernels",
        nargs="+",
        default=["auto"],
        choices=["auto", "c", "torch"],
        help="train.kernel",
    )
    p.add_argument("--repeat", type=int, default=1, help="interleaved rounds; medians reported")
    p.add_argument("--set", action="append", default=[])
    p.add_argument(
        "--gensim",
        action="store_true",
        help="also time gensim Word2Vec skip-gram on the same walks (one epoch), once per round",
    )
    args = p.parse_args()
    configs = configurations(args)
    window = None
    if args.gensim:
        from eges.config import load_config

        window = load_config(REPO / "conf" / "ml-latest-small.yaml", args.set).train.window
    workers = os.cpu_count() or 1
    results: list[list[dict]] = [[] for _ in configs]
    # gensim once per round for each (dimension, negatives) the configurations use
    gensim: dict[tuple[int, int], list[float]] = (
        {(c["dim"], c["negatives_k"]): [] for c in configs} if args.gensim else {}
    )
    for _ in range(args.repeat):
        for cfg, res in zip(configs, results):
            steps = max(20, args.steps * 256 // cfg["batch"])
            res.append(run_one(args.walks, cfg, steps, args.set))
        for (dim, k), rates in gensim.items():
            rates.append(run_gensim(args.walks, dim, window, k, workers)["pairs_per_s"])
    print(
        f"{date.today()} · {platform.node()} · {os.cpu_count()} cores · {platform.processor()} · "
        f"walks {args.walks} · {args.steps} steps at batch 256 · {args.repeat} round(s) · "
        f"{' '.join(args.set) or 'defaults'}\n"
    )
    gpu = any(r["gpu_peak_mb"] is not None for res in results for r in res)
    print(
        "| model | kernel | processes | optimizer | batch (walks) | negatives per | d | K "
        "| pairs/s (all ranks, median) | ÷ gensim (median; min–max over rounds) "
        "| peak RSS per process (MB) |"
        + (" GPU peak allocated (MB) |" if gpu else "")
        + " wall (s) |"
    )
    print("|" + " --- |" * (13 if gpu else 12))
    for cfg, res in zip(configs, results):
        rate = statistics.median(r["pairs_per_s"] for r in res)
        ratio = ""
        g = gensim.get((cfg["dim"], cfg["negatives_k"]))
        if g:
            per_round = [r["pairs_per_s"] / x for r, x in zip(res, g)]
            ratio = f"{rate / statistics.median(g):.2f} ({min(per_round):.2f}–{max(per_round):.2f})"
        gpu_cell = f" {max(r['gpu_peak_mb'] or 0 for r in res):,.0f} |" if gpu else ""
        print(
            f"| {cfg['mode'].upper()} | {cfg['kernel']} | {cfg['procs']} | {cfg['optimizer']} | "
            f"{cfg['batch']} | "
            f"{cfg['negatives']} | {cfg['dim']} | {cfg['negatives_k']} | {rate:,.0f} | {ratio} | "
            f"{max(r['peak_rss_mb'] for r in res):,.0f} |{gpu_cell} "
            f"{statistics.median(r['wall_s'] for r in res):.1f} |"
        )
    for (dim, k), g in gensim.items():
        print(
            f"| gensim Word2Vec sg, {workers} workers (no side info) | | | | | | {dim} | {k} | "
            f"{statistics.median(g):,.0f} | 1 ({min(g):,.0f}–{max(g):,.0f}) | |"
            + (" |" if gpu else "")
            + " train only |"
        )


if __name__ == "__main__":
    main()
