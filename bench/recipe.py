"""Training-recipe comparison: one factor at a time, scored by the evaluation on fixed walks.

    .venv/bin/python bench/recipe.py --config conf/ml-latest-small.yaml \\
        --walks-from out/ml-latest-small/eval --out out/recipe \\
        --variant base= --variant sgd="train.optimizer=sgd train.loss_reduction=sum train.lr=0.025"

Each variant is ``name=<space-separated --set overrides>``. Every variant runs
``eges evaluate`` (models ``--models``, seeds ``--seeds``) in ``OUT/<name>``, whose task
walk outputs are links to those of an earlier evaluation (``--walks-from``), so every variant
trains on the very same walks and is scored on the same hold-outs. Prints one markdown table of
the served rows (cosine, H·Z and their neighbour tables) and the vector health, mean ± sd over
seeds; the per-variant ``results.json`` stays in ``OUT/<name>``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from eges import schema

COLUMNS = [  # (task, metric)
    ("cold", "hr@50"),
    ("cold", "recall@50"),
    ("next", "hr@50"),
    ("link", "auc"),
]


def run_variant(args: argparse.Namespace, name: str, sets: list[str]) -> dict:
    out = Path(args.out) / name
    for task in args.tasks:
        link = out / task / "walks"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((Path(args.walks_from) / task / "walks").resolve())
    cmd = [
        sys.executable,
        "-m",
        "eges",
        "evaluate",
        "--config",
        args.config,
        "--output",
        str(out),
        "--set",
        "evaluate.overwrite=true",
        "--set",
        "evaluate.examples=0",
        "--set",
        f"evaluate.tasks=[{','.join(args.tasks)}]",
        "--set",
        f"evaluate.models=[{','.join(args.models)}]",
        "--set",
        f"evaluate.seeds=[{','.join(map(str, args.seeds))}]",
    ]
    for s in sets:
        cmd += ["--set", s]
    print("$", " ".join(cmd), flush=True)
    log = out / "screen.log"  # what the evaluation prints; its details are in evaluate.log
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"variant {name} failed: see {log}")
    return json.loads((out / "results.json").read_text())


def health(out: Path, task: str, model: str) -> tuple[float, float]:
    """Mean over seeds of the warm and cold vectors' mean pairwise cosine."""
    warm, cold = [], []
    for run in sorted((out / task / "runs").glob(f"{model}-seed*")):
        h = schema.read_manifest(run / "export", kind=None).get("health", {})
        warm.append(h.get("warm", {}).get("mean_pairwise_cosine") or np.nan)
        cold.append(h.get("cold", {}).get("mean_pairwise_cosine") or np.nan)
    return float(np.nanmean(warm)) if warm else np.nan, float(np.nanmean(cold)) if cold else np.nan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--walks-from", required=True, help="an evaluation directory with task walks")
    p.add_argument("--out", default="out/recipe")
    p.add_argument("--variant", action="append", required=True, help="name=overrides")
    p.add_argument("--models", nargs="+", default=["eges"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--tasks", nargs="+", default=["link", "cold", "next"])
    args = p.parse_args()
    rows = []
    for spec in args.variant:
        name, _, sets = spec.partition("=")
        res = run_variant(args, name, sets.split())
        for model in args.models:
            for suffix in ("", "·ctx", "·table", "·ctx·table"):
                row = [name, model + suffix]
                for task, metric in COLUMNS:
                    s = res["tasks"].get(task, {}).get("summary", {}).get(model + suffix, {})
                    row.append(
                        f"{s[metric]['mean']:.3f}±{s[metric]['std']:.3f}" if metric in s else ""
                    )
                if suffix == "":
                    w, c = health(Path(args.out) / name, "cold", model)
                    row.append(f"{w:.2f} / {c:.2f}")
                else:
                    row.append("")
                secs = res["tasks"].get("next", {}).get("info", {}).get("train_seconds", {})
                row.append(
                    f"{np.mean(secs[model]):.0f}" if secs.get(model) and suffix == "" else ""
                )
                rows.append(row)
        print(f"done: {name}", flush=True)
    head = ["variant", "row"] + [f"{t} {m}" for t, m in COLUMNS] + ["cos warm/cold", "train s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
