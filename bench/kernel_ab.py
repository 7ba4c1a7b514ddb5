"""The C training step alone, two builds or two malloc settings side by side (one process).

    # kernel.c against an earlier version of it, on 1 and 2 threads
    git show HEAD~1:eges/training/kernel.c > /tmp/kernel_old.c
    .venv/bin/python bench/kernel_ab.py sources eges/training/kernel.c /tmp/kernel_old.c \
        --items 10000 200000 --threads 1 2 --rounds 5

    # glibc malloc's trim threshold (eges/training/memory.py): page faults and time per step
    .venv/bin/python bench/kernel_ab.py trim --thresholds default 128 256 1024 --items 9742 100000

A generated catalogue (3 side-information fields of 20, 1,000 and 30 values, 0–4 values per item
and field, d 128) and batches of 256 random walks of length 10, window 5, 5 negatives per
position; dense Adam after each step as the trainer's default. ``sources`` times each build's
step (C loss and gradients plus Adam) in interleaved rounds and prints medians; ``trim`` runs
one fresh process per threshold and prints minor page faults and milliseconds per step and the
resident set at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eges.training import fused  # noqa: E402
from eges.training.loss import walk_loss  # noqa: E402
from eges.training.memory import retain_freed_memory  # noqa: E402
from eges.training.model import EGES  # noqa: E402
from eges.training.sampling import AliasSampler  # noqa: E402

FIELDS = (20, 1000, 30)


def catalogue(items: int, dim: int = 128, seed: int = 0) -> EGES:
    gen = torch.Generator().manual_seed(seed)
    offsets, values = [], []
    for size in FIELDS:
        lengths = torch.randint(0, 5, (items + 1,), generator=gen)
        lengths[0] = 0
        offsets.append(torch.cat([torch.zeros(2, dtype=torch.long), lengths.cumsum(0)])[:-1])
        values.append(torch.randint(1, size + 1, (int(lengths.sum()),), generator=gen))
    torch.manual_seed(seed)
    return EGES(items, list(FIELDS), offsets, values, dim, "eges")


def batches(items: int, count: int = 10) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(1, items + 1, (256, 10), generator=gen) for _ in range(count)]


def stepper(items: int):
    """A function running one training step on the next batch."""
    model = catalogue(items)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
    sampler = AliasSampler(np.r_[0, np.ones(items)])
    walks = batches(items)
    at = [0]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = walk_loss(model, walks[at[0] % len(walks)], 5, sampler, 5, kernel="c")
        loss.backward()
        opt.step()
        at[0] += 1

    return step


def build(source: Path, out: Path) -> ctypes.CDLL:
    flavour = fused.flavours(fused._cpu_key())[0]
    subprocess.run(
        [fused._compiler(), *fused.CFLAGS, *flavour.flags, str(source), "-o", str(out), "-lm"],
        check=True,
    )
    dll = ctypes.CDLL(str(out))  # an earlier source may lack eges_threaded: typed by hand
    dll.eges_step.restype = ctypes.c_double
    dll.eges_step.argtypes = [ctypes.POINTER(fused._Step), ctypes.c_int, fused._I64]
    dll.flavour = flavour
    return dll


def sources(args: argparse.Namespace) -> None:
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    dlls = {str(s): build(Path(s), tmp / f"k{i}.so") for i, s in enumerate(args.paths)}
    for items in args.items:
        step = stepper(items)
        for threads in args.threads:
            torch.set_num_threads(threads)
            times: dict[str, list[float]] = {name: [] for name in dlls}
            for _ in range(args.rounds):
                for name, dll in dlls.items():
                    fused.load = lambda dll=dll: dll
                    step()  # warm
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        step()
                    times[name].append((time.perf_counter() - start) / args.steps * 1e3)
            for name, t in times.items():
                print(
                    f"items {items:>9,} threads {threads}  {name:<40} "
                    f"{statistics.median(t):7.2f} ms/step (median of {args.rounds})"
                )


def trim(args: argparse.Namespace) -> None:
    for items in args.items:
        for threshold in args.thresholds:
            out = subprocess.run(
                [sys.executable, __file__, "_trim_one", threshold, str(items), str(args.steps)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "THP_MEM_ALLOC_ENABLE": "1", "OMP_NUM_THREADS": "1"},
            )
            print(out.stdout.strip())


def _trim_one(threshold: str, items: int, steps: int) -> None:
    if threshold != "default":
        assert retain_freed_memory(int(threshold) << 20)
    torch.set_num_threads(1)
    step = stepper(items)
    for _ in range(3):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(steps):
        step()
    ms = (time.perf_counter() - start) / steps * 1e3
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * 4096 >> 20
    print(
        f"items {items:>9,} trim threshold {threshold:>7} MB: {faults:6.0f} page faults/step "
        f"{ms:7.2f} ms/step  RSS {rss} MB"
    )


def main() -> None:
    if sys.argv[1:2] == ["_trim_one"]:
        _trim_one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sources", help="two or more kernel.c sources")
    s.add_argument("paths", nargs="+")
    s.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    s.add_argument("--rounds", type=int, default=5)
    t = sub.add_parser("trim", help="glibc malloc trim thresholds (MB, or 'default')")
    t.add_argument("--thresholds", nargs="+", default=["default", "128", "256", "1024"])
    for q in (s, t):
        q.add_argument("--items", type=int, nargs="+", default=[10_000])
        q.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    if args.what == "sources":
        sources(args)
    else:
        trim(args)


if __name__ == "__main__":
    main()
