"""What EGES' per-item attention learned: the weight of each source (the item's own vector and
each side-info field) over the warm items of a run, and how it varies with item frequency.

    .venv/bin/python bench/attention.py out/ml-latest-small/eval/next/runs/eges-seed1 [...]

The paper's argument for EGES over GES is that these weights differ between items (rare items
leaning on side information). Printed per run: mean and standard deviation of each source's
weight, the mean |logit| of A, the weights of the rarest and most frequent quarter of items,
and the correlation of each weight with log(walk count).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eges import schema  # noqa: E402
from eges.training.export import load_model  # noqa: E402
from eges.training.items import load_items  # noqa: E402
from eges.training.sampling import walk_frequencies  # noqa: E402


def describe(run: Path) -> None:
    model, meta = load_model(run)
    if meta.get("side_only"):  # sharded tables export the softmax weights, not A
        print(f"{run}: a partitioned export has no attention table (see its weights/ parts)")
        return
    if model.attention is None:
        print(f"{run}: mode {model.mode}, no attention")
        return
    walk_dir = Path(schema.read_manifest(run / "export", kind=None)["walks"])
    items = load_items(walk_dir)
    for i in range(model.num_fields):  # the exported model has no side-info tables attached
        setattr(model, f"side_offsets_{i}", items.offsets[i].long())
        setattr(model, f"side_values_{i}", items.values[i].long())
    counts = walk_frequencies(schema.parquet_files(walk_dir / schema.WALKS_DIR), model.num_items)
    warm = torch.from_numpy(np.nonzero(counts[1:] > 0)[0] + 1)
    with torch.no_grad():
        w = model.source_weights(warm).numpy()  # (W, n + 1)
        logits = model.attention.weight[warm].numpy()
    names = ["item"] + list(meta["fields"][: model.num_fields])
    log_count = np.log(counts[warm.numpy()])
    rare, frequent = (
        log_count <= np.quantile(log_count, 0.25),
        log_count >= np.quantile(log_count, 0.75),
    )
    print(f"{run}  ({len(warm):,} warm items)")
    print(
        "| source | mean weight | sd | mean abs logit | rarest 25% | most frequent 25% "
        "| corr with log count |"
    )
    print("|---|---|---|---|---|---|---|")
    for j, name in enumerate(names):
        corr = np.corrcoef(w[:, j], log_count)[0, 1] if w[:, j].std() > 0 else float("nan")
        print(
            f"| {name} | {w[:, j].mean():.3f} | {w[:, j].std():.3f} | "
            f"{np.abs(logits[:, j]).mean():.3f} | {w[rare, j].mean():.3f} | "
            f"{w[frequent, j].mean():.3f} | {corr:.3f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        describe(Path(arg))
