"""Where a training step's time goes: data, forward, backward, optimiser (one process, no Lightning).

    .venv/bin/python bench/profile_step.py --walks out/ml-latest-small/walks --optimizer adam \
        [--negatives-per walk] [--ops 15]

``--ops N`` also prints the N operators with the most self CPU time (torch.profiler) over the
timed steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eges.data.dataset import WalkDataset  # noqa: E402
from eges.data.items import load_items  # noqa: E402
from eges.data.sampling import AliasSampler, walk_frequencies  # noqa: E402
from eges.model import EGES  # noqa: E402
from eges.module import make_optimizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--walks", required=True)
    p.add_argument("--optimizer", choices=["adam", "sparse_adam"], default="adam")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--mode", choices=["eges", "ges", "bge"], default="eges")
    p.add_argument("--negatives-per", choices=["position", "walk"], default="position")
    p.add_argument("--ops", type=int, default=0, help="print the top operators (torch.profiler)")
    args = p.parse_args()
    torch.manual_seed(0)
    items = load_items(args.walks)
    ds = WalkDataset(args.walks, args.batch_size)
    sampler = AliasSampler(walk_frequencies([s.path for s in ds.shards], items.num_items))
    sparse = args.optimizer == "sparse_adam"
    model = EGES(items.num_items, items.vocab_sizes, items.offsets, items.values, args.dim,
                 args.mode, sparse=sparse)
    opt = make_optimizer(model.parameters(), args.optimizer, 0.01)
    batches = iter(ds)
    times = dict.fromkeys(["data", "forward", "backward", "optimizer"], 0.0)
    pairs = 0
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    for step in range(args.steps):
        if step == 10 and args.ops:  # after the warm-up
            profiler.start()
        t0 = time.perf_counter()
        walks = next(batches)
        t1 = time.perf_counter()
        loss, n = model.walk_loss(walks, 5, sampler, 5, args.negatives_per)
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if step >= 10:  # warm-up
            for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[k] += dt
            pairs += n
    total = sum(times.values())
    print(f"{args.mode}, {args.optimizer}, batch {args.batch_size}, negatives per "
          f"{args.negatives_per}: {pairs / total:,.0f} pairs/s, {torch.get_num_threads()} "
          "threads; " + ", ".join(f"{k} {v / total:.0%}" for k, v in times.items()))
    if args.ops:
        profiler.stop()
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))


if __name__ == "__main__":
    main()
