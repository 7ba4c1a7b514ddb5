"""Where a training step's time goes: data, forward, backward, optimiser (one process).

    .venv/bin/python bench/profile_step.py --walks out/ml-latest-small/walks --optimizer adam \
        [--negatives-per walk] [--ops 15] [--device cuda]

``--ops N`` also prints the N operators with the most self time (torch.profiler; on CUDA the
kernels' device time) over the timed steps. On CUDA every phase ends with a synchronisation, so
the phase times are the device's, not the launch queue's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eges.training.dataset import WalkDataset  # noqa: E402
from eges.training.items import load_items  # noqa: E402
from eges.training.loss import walk_loss  # noqa: E402
from eges.training.memory import retain_freed_memory  # noqa: E402
from eges.training.model import EGES  # noqa: E402
from eges.training.module import make_optimizer  # noqa: E402
from eges.training.sampling import AliasSampler, walk_frequencies  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--walks", required=True)
    p.add_argument(
        "--optimizer",
        choices=["adam", "sparse_adam", "torch_sparse_adam"],
        default="adam",
        help="sparse_adam is the trainer's RowAdam; torch_sparse_adam torch.optim.SparseAdam",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--mode", choices=["eges", "ges", "bge"], default="eges")
    p.add_argument("--negatives-per", choices=["position", "walk"], default="position")
    p.add_argument("--ops", type=int, default=0, help="print the top operators (torch.profiler)")
    p.add_argument("--num-negatives", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--kernel", choices=["auto", "c", "torch"], default="auto")
    p.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="leave glibc's malloc thresholds as they are (the trainer raises them)",
    )
    args = p.parse_args()
    if not args.malloc_defaults:
        retain_freed_memory()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    items = load_items(args.walks)
    ds = WalkDataset(args.walks, args.batch_size)
    sampler = AliasSampler(walk_frequencies([s.path for s in ds.shards], items.num_items))
    sparse = args.optimizer != "adam"
    model = EGES(
        items.num_items,
        items.vocab_sizes,
        items.offsets,
        items.values,
        args.dim,
        args.mode,
        sparse=sparse,
    ).to(device)
    sampler = sampler.to(device)
    opt = (
        torch.optim.SparseAdam(list(model.parameters()), lr=0.01)
        if args.optimizer == "torch_sparse_adam"
        else make_optimizer(model.parameters(), args.optimizer, 0.01, args.kernel != "torch")
    )
    batches = iter(ds)
    times = dict.fromkeys(["data", "forward", "backward", "optimizer"], 0.0)
    pairs = 0
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities)
    for step in range(args.steps):
        if step == 10 and args.ops:  # after the warm-up
            profiler.start()
        t0 = time.perf_counter()
        walks = next(batches, None)
        if walks is None:  # another epoch: large batches outrun a small corpus
            batches = iter(ds)
            walks = next(batches)
        walks = walks.to(device, non_blocking=True)
        sync()
        t1 = time.perf_counter()
        loss, n = walk_loss(
            model, walks, 5, sampler, args.num_negatives, args.negatives_per, kernel=args.kernel
        )
        sync()
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        sync()
        t3 = time.perf_counter()
        opt.step()
        sync()
        t4 = time.perf_counter()
        if step >= 10:  # warm-up
            for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[k] += dt
            pairs += int(n)
    total = sum(times.values())
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} threads"
    print(
        f"{args.mode}, {args.optimizer}, batch {args.batch_size}, d {args.dim}, K "
        f"{args.num_negatives}, negatives per {args.negatives_per}, kernel {args.kernel}: "
        f"{pairs / total:,.0f} "
        f"pairs/s, {where}; " + ", ".join(f"{k} {v / total:.0%}" for k, v in times.items())
    )
    if args.ops:
        profiler.stop()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(profiler.key_averages().table(sort_by=key, row_limit=args.ops))


if __name__ == "__main__":
    main()
