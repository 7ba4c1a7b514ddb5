"""The training step's loss and gradients in one C function on CPU (``train.kernel``).

:func:`eges.training.loss.walk_loss` with negatives per position, computed as word2vec does:
per walk position, H from the item's and its side information's rows, the scores against
its contexts and negatives, their sigmoid coefficients, and the gradients added straight into
the gradient rows — no (positions, K, D) tensors, no autograd graph, no per-operator dispatch.
The same loss and gradients as the PyTorch form up to rounding (tested against the per-pair
reference, dense and sparse), so the optimisers, DDP's all-reduce and RowAdam's exchange are
unchanged.

The C source (``kernel.c``) ships with the package and is compiled on first use with the
system's C compiler (``$CC``, else ``cc``/``gcc``/``clang``; OpenMP when the compiler has it)
into ``$EGES_KERNEL_CACHE`` (default ``~/.cache/eges``), keyed by the source, the compiler and
its version, the flags and the CPU. Without a compiler, ``train.kernel: auto`` falls back to
the PyTorch form with a warning; ``train.kernel: c`` is then an error.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from eges.training.model import EGES, gather_bags

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernel.c")
# strict ISO C: no contraction into fused multiply-adds (measured: no faster with them)
CFLAGS = ["-O3", "-fPIC", "-shared", "-std=c11"]
_I64 = ctypes.POINTER(ctypes.c_int64)
_F32 = ctypes.POINTER(ctypes.c_float)
_PTRS = ctypes.POINTER(ctypes.c_void_p)


class _Step(ctypes.Structure):
    """``eges_step_t`` of kernel.c, field for field."""

    _fields_ = [
        *((name, ctypes.c_int64) for name in ("n_walks", "length", "dim", "window")),
        *((name, ctypes.c_int64) for name in ("negatives", "fields", "threads")),
        ("items", _I64),
        ("neg", _I64),
        ("drop", ctypes.POINTER(ctypes.c_uint8)),
        ("offset", ctypes.c_float),
        ("w0", _F32),
        ("z", _F32),
        ("att", _F32),
        ("side_off", _PTRS),
        ("side_val", _PTRS),
        ("side_w", _PTRS),
        ("g_w0", _F32),
        ("g_z", _F32),
        ("g_att", _F32),
        ("g_side", _PTRS),
        ("item_row", _I64),
        ("ctx_row", _I64),
        ("neg_row", _I64),
        ("bag_start", _PTRS),
        ("side_row", _PTRS),
        ("h", _F32),
        ("g_h", _F32),
        ("weights", _F32),
        ("g_logit", _F32),
        ("g_ctx", _F32),
        ("g_neg", _F32),
        ("pp", _I64),
        ("loss_at", ctypes.POINTER(ctypes.c_double)),
    ]


def _cpu_key() -> str:
    """What a ``-march=native`` build depends on: the CPU's model and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "|".join(sorted({ln for ln in lines if ln.split(":")[0].strip() in wanted}))


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build(cc: str, out: Path, openmp: bool = True) -> None:
    """Compile kernel.c into ``out``: for this CPU and with OpenMP threads where the compiler
    can, else with fewer flags (one thread without OpenMP)."""
    native = ["-march=native"] if platform.machine() in ("x86_64", "AMD64") else ["-mcpu=native"]
    tries = [native + ["-fopenmp-simd"], ["-fopenmp-simd"], []]
    if openmp:
        tries.insert(0, native + ["-fopenmp"])
    errors = []
    for flags in tries:
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        done = subprocess.run(
            [cc, *CFLAGS, *flags, str(SOURCE), "-o", str(tmp), "-lm"],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0:
            os.replace(tmp, out)  # atomic: processes compiling side by side do not collide
            return
        errors.append(done.stderr.strip().splitlines()[-1:] or ["(no message)"])
    raise OSError(f"{cc} could not compile {SOURCE.name}: {errors[0][0]}")


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return ""


@cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel (built on first use), or None where it cannot be built."""
    cc = _compiler()
    if cc is None:
        log.warning("no C compiler found: training with the PyTorch form of the step")
        return None
    try:
        key = hashlib.sha256(
            SOURCE.read_bytes()
            + " ".join([cc, _compiler_version(cc), *CFLAGS, _cpu_key()]).encode()
        ).hexdigest()[:16]
        cache_dir = (
            Path(os.environ["EGES_KERNEL_CACHE"])
            if os.environ.get("EGES_KERNEL_CACHE")
            else Path.home() / ".cache" / "eges"
        )
        lib = cache_dir / f"eges_kernel_{key}.so"
        if lib.exists():
            try:
                return _open(lib)
            except OSError:  # a damaged or foreign file under this name: build it again
                pass
        cache_dir.mkdir(parents=True, exist_ok=True)
        _build(cc, lib)
        return _open(lib)
    except (OSError, RuntimeError) as e:  # RuntimeError: Path.home() without a home
        log.warning("training with the PyTorch form of the step: %s", e)
        return None


def _open(lib: Path) -> ctypes.CDLL | None:
    """A built kernel, its functions typed; None if its layout is not this module's."""
    dll = ctypes.CDLL(str(lib))
    dll.eges_step.restype = ctypes.c_double
    dll.eges_step.argtypes = [ctypes.POINTER(_Step), ctypes.c_int, _I64]
    dll.eges_step_size.restype = ctypes.c_int64
    dll.eges_row_adam.restype = None
    dll.eges_row_adam.argtypes = [
        ctypes.c_int64,
        ctypes.c_int64,
        _I64,
        _F32,
        _F32,
        _F32,
        _F32,
        ctypes.c_double,
        ctypes.c_double,
        ctypes.c_float,
        ctypes.c_float,
        ctypes.c_int64,
    ]
    if dll.eges_step_size() != ctypes.sizeof(_Step):
        log.warning("kernel layout mismatch: training with the PyTorch form of the step")
        return None
    return dll


def usable(model: EGES, walks: torch.Tensor) -> bool:
    """Whether the C step can train ``model`` on ``walks`` (CPU, float32, no autocast)."""
    return (
        walks.device.type == "cpu"
        and all(p.dtype == torch.float32 for p in model.parameters())
        and not torch.is_autocast_enabled("cpu")
        and load() is not None
    )


def _ptr(t: torch.Tensor | None, kind=_F32):
    return ctypes.cast(t.data_ptr(), kind) if t is not None else kind()


def _ptrs(ts: list[torch.Tensor]) -> ctypes.Array:
    return (ctypes.c_void_p * max(len(ts), 1))(*[t.data_ptr() for t in ts])


class _Loss(torch.autograd.Function):
    """The C step as an autograd node: forward computes the loss and every gradient (they
    are needed by the backward pass that always follows in training); backward hands them
    out, scaled by the incoming gradient."""

    @staticmethod
    def forward(ctx, run: Callable[[bool], tuple[torch.Tensor, list]], grad: bool, *params):
        loss, grads = run(grad and any(ctx.needs_input_grad[2:]))
        ctx.grads = grads
        return loss

    @staticmethod
    @once_differentiable  # the gradients are numbers, not a graph: no second derivative
    def backward(ctx, grad):
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise RuntimeError("the C step's gradients were already used (backward twice)")
        g = float(grad)
        if g != 1.0:
            grads = [x * g if x is not None else None for x in grads]
        return (None, None, *grads)


def walk_loss(
    model: EGES,
    walks: torch.Tensor,
    window: int,
    negatives: Callable[[tuple[int, int]], torch.Tensor],
    num_negatives: int,
    item_dropout: float = 0.0,
    offset: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """:func:`eges.training.loss.walk_loss` with negatives per position, on the C step.

    The random draws are those of the PyTorch form, in its order (item dropout, then the
    negatives), so a seed gives the same batch either way. Gradients are dense for dense
    tables and sparse (one row per distinct row of the batch) for ``sparse=True`` tables.

    Returns:
        (mean loss over the pairs, number of pairs P).
    """
    dll = load()
    if dll is None:
        raise RuntimeError("the C training step is not available (no C compiler)")
    b, length = walks.shape
    flat = walks.reshape(-1).to(torch.int64).contiguous()  # (N,)
    n = flat.numel()
    drop = (
        (torch.rand(flat.shape) < item_dropout).to(torch.uint8)
        if item_dropout > 0 and model.num_fields
        else None
    )  # (N,)
    neg = negatives((n, num_negatives)).to(torch.int64).contiguous()  # (N, K)
    _check_rows(model, flat, neg)
    nf, d = model.num_fields, model.item.embedding_dim
    offsets = [getattr(model, f"side_offsets_{i}").contiguous() for i in range(nf)]
    values = [getattr(model, f"side_values_{i}").contiguous() for i in range(nf)]
    side = [bag.weight for bag in model.side]
    att = model.attention.weight if model.attention is not None else None
    params = [model.item.weight, model.context.weight, *side] + ([att] if att is not None else [])
    sparse = model.item.sparse

    def run(grad: bool) -> tuple[torch.Tensor, list]:
        ns = nf + 1
        f32 = {"dtype": torch.float32}
        work = {
            "h": torch.empty(n, d, **f32),
            "g_h": torch.empty(n, d, **f32),
            "weights": torch.empty(n, ns, **f32),
            "g_logit": torch.empty(n, ns, **f32),
            "g_ctx": torch.empty(n, d, **f32),
            "g_neg": torch.empty(n, num_negatives, **f32),
        }
        pp = torch.empty(n, dtype=torch.int64)
        loss_at = torch.empty(n, dtype=torch.float64)
        rows: dict[str, torch.Tensor | None] = dict.fromkeys(["item", "ctx", "neg"])
        bag_start, side_row, side_ids = [], [], []
        if grad and sparse:  # compact rows: one gradient row per distinct row
            item_ids, rows["item"] = torch.unique(flat, return_inverse=True)
            z_ids, z_inv = torch.unique(torch.cat([flat, neg.reshape(-1)]), return_inverse=True)
            rows["ctx"], rows["neg"] = z_inv[:n], z_inv[n:].view(n, num_negatives)
            for off, val in zip(offsets, values):
                vals, starts = gather_bags(flat, off, val)
                ids, inv = torch.unique(vals, return_inverse=True)
                side_ids.append(ids)
                side_row.append(inv)
                bag_start.append(starts.contiguous())
            shapes = [len(item_ids), len(z_ids), *(len(i) for i in side_ids)]
        else:
            shapes = [p.shape[0] for p in (model.item.weight, model.context.weight, *side)]
        gw0, gz, *gside = (torch.zeros(r, d, **f32) if grad else None for r in shapes)
        gatt = torch.zeros(shapes[0], ns, **f32) if grad and att is not None else None
        step = _Step(
            n_walks=b,
            length=length,
            dim=d,
            window=window,
            negatives=num_negatives,
            fields=nf,
            threads=torch.get_num_threads(),
            items=_ptr(flat, _I64),
            neg=_ptr(neg, _I64),
            drop=_ptr(drop, ctypes.POINTER(ctypes.c_uint8)),
            offset=offset,
            w0=_ptr(model.item.weight.detach()),
            z=_ptr(model.context.weight.detach()),
            att=_ptr(att.detach() if att is not None else None),
            side_off=ctypes.cast(_ptrs(offsets), _PTRS),
            side_val=ctypes.cast(_ptrs(values), _PTRS),
            side_w=ctypes.cast(_ptrs([w.detach() for w in side]), _PTRS),
            g_w0=_ptr(gw0),
            g_z=_ptr(gz),
            g_att=_ptr(gatt),
            g_side=ctypes.cast(_ptrs(gside) if grad else None, _PTRS),
            item_row=_ptr(rows["item"], _I64),
            ctx_row=_ptr(rows["ctx"], _I64),
            neg_row=_ptr(rows["neg"], _I64),
            bag_start=ctypes.cast(_ptrs(bag_start) if side_row else None, _PTRS),
            side_row=ctypes.cast(_ptrs(side_row) if side_row else None, _PTRS),
            pp=_ptr(pp, _I64),
            loss_at=_ptr(loss_at, ctypes.POINTER(ctypes.c_double)),
            **{k: _ptr(v) for k, v in work.items()},
        )
        # every tensor the struct points to is referenced by a local of this call (or is a
        # parameter), so it outlives the call
        pairs = ctypes.c_int64()
        total = dll.eges_step(ctypes.byref(step), int(grad), ctypes.byref(pairs))
        if grad and not sparse:  # padding rows get no gradient, as nn.Embedding's padding_idx
            for g in (gz, *gside):
                g[0] = 0
        nonlocal pair_count
        pair_count = pairs.value
        loss = torch.tensor(total / max(pair_count, 1), dtype=torch.float32)
        if not grad:
            return loss, [None] * len(params)
        grads = [gw0, gz, *gside] + ([gatt] if gatt is not None else [])
        if sparse:
            ids = [item_ids, z_ids, *side_ids] + ([item_ids] if gatt is not None else [])
            grads = [_sparse(i, g, p.shape) for i, g, p in zip(ids, grads, params)]
        return loss, grads

    pair_count = 0
    # grad mode as the caller has it (inside the Function's forward it is always off)
    loss = _Loss.apply(run, torch.is_grad_enabled(), *params)
    return loss, pair_count


def _check_rows(model: EGES, flat: torch.Tensor, neg: torch.Tensor) -> None:
    """Refuse item indices outside the tables (the C step does not check its reads and
    writes); the side-information values are checked once per model."""
    top = model.num_items
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) > top):
        raise IndexError(f"walk item index outside 0..{top}")
    if neg.numel() and (int(neg.min()) < 1 or int(neg.max()) > top):
        raise IndexError(f"negative item index outside 1..{top}")
    if not getattr(model, "_side_rows_checked", False):
        for i, bag in enumerate(model.side):
            values = getattr(model, f"side_values_{i}")
            offsets = getattr(model, f"side_offsets_{i}")
            if values.numel() and (int(values.min()) < 0 or int(values.max()) >= len(bag.weight)):
                raise IndexError(f"side-information value outside field {i}'s table")
            if len(offsets) < top + 2 or int(offsets[-1]) > values.numel():
                raise IndexError(f"side-information offsets of field {i} do not fit its values")
        model._side_rows_checked = True


def _sparse(ids: torch.Tensor, grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Gradient rows ``grad`` of the (sorted, distinct) rows ``ids`` as a sparse gradient of a
    table of ``shape``; row 0 (padding) left out."""
    if len(ids) and int(ids[0]) == 0:
        ids, grad = ids[1:], grad[1:]
    return torch.sparse_coo_tensor(
        ids.unsqueeze(0), grad, shape, is_coalesced=True, check_invariants=False
    )


def row_adam(
    p: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    idx: torch.Tensor,
    grad: torch.Tensor,
    betas: tuple[float, float],
    step_size: float,
    eps: float,
) -> bool:
    """Lazy Adam on rows ``idx`` (distinct) of ``p`` in one C pass (RowAdam's update).

    Returns:
        False (nothing done) where the C kernel cannot take these tensors: then the caller
        updates with PyTorch operators.
    """
    tensors = (p, m, v, grad)
    if not (
        all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and all(t.is_contiguous() for t in tensors)
        and p.dim() == 2
        and m.shape == v.shape == p.shape
        and idx.dtype == torch.int64
        and idx.dim() == 1
        and grad.shape == (len(idx), p.shape[1])
    ):
        return False
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= p.shape[0]):
        raise IndexError(f"RowAdam: row index outside 0..{p.shape[0] - 1}")
    dll = load()
    if dll is None:
        return False
    idx = idx.contiguous()
    grad = grad.contiguous()
    dll.eges_row_adam(
        len(idx),
        p.shape[1],
        _ptr(idx, _I64),
        _ptr(grad),
        _ptr(p.detach()),
        _ptr(m),
        _ptr(v),
        betas[0],
        betas[1],
        step_size,
        eps,
        torch.get_num_threads(),
    )
    return True
