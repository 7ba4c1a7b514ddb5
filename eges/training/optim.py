"""Adam over the rows a batch touched, with the gradient exchange of several processes built in.

``train.optimizer: sparse_adam``. Every table of the model gives sparse gradients (the rows a
batch gathered); :class:`RowAdam` updates those rows only, as word2vec updates the rows of the
pairs it trains, so a step costs the same for a catalogue of ten thousand items as for one of
millions (dense Adam reads and writes every row of every table each step).

The update is "lazy" Adam, the same as :class:`torch.optim.SparseAdam` (tested against it): a
row's moments decay only on the steps that touch it. Under several processes the optimiser
exchanges the gradients itself instead of DDP: each process gathers every other process's
touched rows (three ``all_gather`` calls per step of dense tensors, which gloo and NCCL both
provide; tested on gloo; no sparse all-reduce), sums them in the same order and divides by the
number of processes — the mean gradient DDP would give — so every process applies the same
update and the models stay identical. The trainer then runs DDP processes without wrapping the model
(:class:`eges.training.module.RowSyncStrategy`).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from eges.config import AUTO_SPARSE_ITEMS
from eges.training import fused

OPTIMIZER_KEY = "eges_optimizer"  # a checkpoint's entry: the optimiser it was trained with


def resolve_optimizer(name: str, num_items: int) -> str:
    """The optimiser ``train.optimizer`` names, ``auto`` decided by the catalogue's size."""
    if name != "auto":
        return name
    return "sparse_adam" if num_items > AUTO_SPARSE_ITEMS else "adam"


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _local_rows(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``p``'s sparse gradient, summed per row: (indices (U,), values (U, D))."""
    grad = p.grad
    if grad is None:  # an untouched table still takes part in the exchange
        return (
            torch.zeros(0, dtype=torch.long, device=p.device),
            p.new_zeros(0, *p.shape[1:]),
        )
    if not grad.is_sparse:
        raise TypeError("RowAdam needs sparse gradients (embedding tables built with sparse=True)")
    if grad.is_coalesced():
        return grad.indices()[0], grad.values()
    idx = grad._indices()[0]
    if len(idx) < 2 or bool((idx[1:] > idx[:-1]).all()):  # distinct rows in order already
        return idx, grad._values()  # (the C step's gradients; autograd drops the flag)
    # unique + index_add_ sums the rows about 1.3x faster than coalesce() on CPU; rounding
    # may differ between runs on CUDA, but each process's rows reach all processes as they are
    idx, inverse = torch.unique(idx, return_inverse=True)
    values = grad._values()
    return idx, values.new_zeros(len(idx), *values.shape[1:]).index_add_(0, inverse, values)


def _exchange(
    rows: list[tuple[torch.Tensor, torch.Tensor]], world: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every process's touched rows of every table, in rank order (identical on all ranks).

    Three collectives for all tables together: the row counts, then the indices and the
    values, each padded to the largest process's size.
    """
    device = rows[0][0].device
    counts = torch.tensor([len(i) for i, _ in rows], dtype=torch.long, device=device)  # (P,)
    all_counts = [torch.empty_like(counts) for _ in range(world)]
    dist.all_gather(all_counts, counts)
    widths = [math.prod(v.shape[1:]) for _, v in rows]  # values per row of each table
    n_idx = [int(c.sum()) for c in all_counts]
    n_val = [sum(int(n) * w for n, w in zip(c.tolist(), widths)) for c in all_counts]

    def gather(local: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
        if max(sizes) == 0:  # no process touched a row: nothing to send
            return [local] * world
        padded = local.new_zeros(max(sizes))
        padded[: local.numel()] = local
        out = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(out, padded)
        return [o[:s] for o, s in zip(out, sizes)]

    idx = gather(torch.cat([i for i, _ in rows]), n_idx)
    val = gather(torch.cat([v.reshape(-1) for _, v in rows]), n_val)
    per_table: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = [([], []) for _ in rows]
    for rank in range(world):
        sizes = all_counts[rank].tolist()
        for t, (i, v) in enumerate(
            zip(idx[rank].split(sizes), val[rank].split([n * w for n, w in zip(sizes, widths)]))
        ):
            per_table[t][0].append(i)
            per_table[t][1].append(v.view(-1, *rows[t][1].shape[1:]))
    return [(torch.cat(i), torch.cat(v)) for i, v in per_table]


class RowAdam(torch.optim.Optimizer):
    """Lazy Adam on the rows of sparse gradients; gradients of several processes averaged.

    Args:
        params: embedding tables with sparse gradients (or parameter groups).
        lr, betas, eps: as :class:`torch.optim.Adam`.
        native: update the rows of float32 CPU tables in one C pass
            (:func:`eges.training.fused.row_adam`) where the C kernel is available; else, and
            for any other table, with PyTorch operators. The same update either way, up to
            rounding.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        native: bool = True,
    ) -> None:
        if lr < 0 or eps < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid RowAdam settings: lr {lr}, betas {betas}, eps {eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.native = native
        # the moments are allocated now, not in the first step (a catalogue of millions of
        # rows takes seconds to allocate: not a pause in training); a checkpoint's state
        # replaces them on resume
        for group in self.param_groups:
            for p in group["params"]:
                _init_state(self.state[p], p)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [(g, p) for g in self.param_groups for p in g["params"]]
        rows = [_local_rows(p) for _, p in params]
        world = _world()
        if world > 1:
            rows = [
                _summed(i, v, p.shape[0], 1.0 / world)
                for (i, v), (_, p) in zip(_exchange(rows, world), params)
            ]
        for (group, p), (idx, grad) in zip(params, rows):
            if len(idx):
                self._update(p, idx, grad, group)
        return loss

    def _update(self, p: torch.Tensor, idx: torch.Tensor, grad: torch.Tensor, group: dict) -> None:
        """Adam on rows ``idx`` (unique) of ``p`` with their gradient ``grad``."""
        state = self.state[p]
        if "step" not in state:  # a loaded state without this table's moments
            _init_state(state, p)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        step = state["step"]
        step_size = group["lr"] * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if self.native and fused.row_adam(
            p, m, v, idx, grad, (beta1, beta2), step_size, group["eps"]
        ):
            return
        # gathered rows updated in place and written back with index_copy_ (unique rows):
        # about 2x faster than index_add_ into a table of a million rows
        m = state["exp_avg"].index_select(0, idx).mul_(beta1).add_(grad, alpha=1 - beta1)
        v = (
            state["exp_avg_sq"]
            .index_select(0, idx)
            .mul_(beta2)
            .addcmul_(grad, grad, value=1 - beta2)
        )
        state["exp_avg"].index_copy_(0, idx, m)
        state["exp_avg_sq"].index_copy_(0, idx, v)
        rows = p.index_select(0, idx).addcdiv_(m, v.sqrt_().add_(group["eps"]), value=-step_size)
        p.index_copy_(0, idx, rows)


def _init_state(state: dict, p: torch.Tensor) -> None:
    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))


def _summed(
    idx: torch.Tensor, val: torch.Tensor, rows: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows gathered from all processes, summed per row (in a fixed order) and scaled."""
    if not len(idx):
        return idx, val
    # coalesce sums in index order, deterministically on CPU and CUDA (index_add_ on CUDA
    # does not), so every rank computes the same sum; the indices are in range by construction
    s = torch.sparse_coo_tensor(
        idx.unsqueeze(0), val, (rows, *val.shape[1:]), check_invariants=False
    ).coalesce()
    return s.indices()[0], s.values() * scale
