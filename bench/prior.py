"""The served score's popularity prior: H·Z + β·ln(walk count), rescored for several β on the
runs of a finished evaluation (no training).

    .venv/bin/python bench/prior.py --config conf/ml-latest-small.yaml \\
        --eval out/ml-latest-small/eval --betas 0 0.1 0.2 0.3 0.4 0.5 [--models eges deepwalk]

For every task of the evaluation and every model (``eges``/``ges``/``bge``: the evaluation's
runs, read back; ``deepwalk``: gensim trained again per seed on the same walks), the H·Z scorer
of the evaluation (:class:`~eges.evaluation.baselines.ContextScorer`) with bias β·ln(walk count)
is scored exactly as ``eges evaluate`` scores it. Prints one markdown table, mean ± sd over the
seeds: link AUC, cold HR@50 / recall@50, next HR@50 per β.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eges.config import load_config  # noqa: E402
from eges.evaluation import evaluate as ev  # noqa: E402
from eges.evaluation.baselines import ContextScorer, deepwalk  # noqa: E402
from eges.serving.neighbors import log_count_prior  # noqa: E402
from eges.training.export import read_context, read_embeddings  # noqa: E402

METRICS = {"link": ["auc"], "cold": ["hr@50", "recall@50"], "next": ["hr@50"]}


def h_and_z(models: ev.Models, task: str, name: str, seed: int):
    """(item_idx, H, Z with V + 1 rows) of one model and seed."""
    if name == "deepwalk":
        t = models.cfg.train
        idx, vectors, context, _ = deepwalk(
            models.walks,
            models.items.num_items,
            embedding_dim=t.embedding_dim,
            window=t.window,
            num_negatives=t.num_negatives,
            epochs=t.epochs,
            seed=seed,
        )
        full = np.zeros((models.items.num_items + 1, context.shape[1]), dtype=np.float32)
        full[idx] = context
        return idx, vectors, full
    run = models.root / task / "runs" / f"{name}-seed{seed}"
    emb, vectors = read_embeddings(run)
    idx = emb["item_idx"].to_numpy()
    full = np.zeros((models.items.num_items + 1, vectors.shape[1]), dtype=np.float32)
    full[idx] = read_context(run, idx)  # Z rows (an item without a vector has none trained)
    return idx, vectors, full


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--eval", required=True, help="a finished evaluation's output directory")
    p.add_argument("--betas", nargs="+", type=float, default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    p.add_argument("--models", nargs="+", default=["eges"])
    args = p.parse_args()
    root = Path(args.eval)
    cfg = load_config(args.config)
    cfg = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, output=str(root)))
    seeds = cfg.evaluate.seeds
    scores: dict[tuple[str, float], dict[str, list[float]]] = {}
    for task in cfg.evaluate.tasks:
        walk_dir = root / task / "walks"
        models = ev.Models(cfg, task, walk_dir, root)
        if task == "cold":
            queries, relevant, candidates = ev.cold_queries(models, cfg.split.seed)
        elif task == "next":
            queries, relevant, candidates = ev.next_queries(models, cfg.split.seed)
        for name in args.models:
            if task == "cold" and name in ("bge", "deepwalk"):
                continue  # no vector for a held-out item
            for seed in seeds:
                idx, vectors, context = h_and_z(models, task, name, seed)
                for beta in args.betas:
                    bias = log_count_prior(models.counts, beta)
                    s = ContextScorer(name, idx, vectors, context, bias)
                    if task == "link":
                        res = ev.score_link(s, walk_dir)
                    else:
                        res = ev.rank_queries(
                            s, queries, relevant, candidates, [50], exclude_self=task == "next"
                        )
                    cell = scores.setdefault((name, beta), {})
                    for m in METRICS[task]:
                        cell.setdefault(f"{task} {m}", []).append(res[m])
                print(f"{task} {name} seed {seed} done", file=sys.stderr, flush=True)
    columns = [f"{t} {m}" for t in cfg.evaluate.tasks for m in METRICS[t]]
    print("| model | β | " + " | ".join(columns) + " |")
    print("|" + "---|" * (len(columns) + 2))
    for (name, beta), cell in scores.items():
        row = [
            f"{np.mean(cell[c]):.4f} ± {np.std(cell[c], ddof=1) if len(cell[c]) > 1 else 0:.4f}"
            if c in cell
            else "—"
            for c in columns
        ]
        print(f"| {name} | {beta:g} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
