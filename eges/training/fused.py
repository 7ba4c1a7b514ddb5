"""The training step's loss and gradients in one C function on CPU (``train.kernel``).

:func:`eges.training.loss.walk_loss` with negatives per position, computed as word2vec does:
per walk position, H from the item's and its side information's rows, the scores against
its contexts and negatives, their sigmoid coefficients, and the gradients added straight into
the gradient rows — no (positions, K, D) tensors, no autograd graph, no per-operator dispatch.
The same loss and gradients as the PyTorch form up to rounding (tested against the per-pair
reference, dense and sparse), so the optimisers, DDP's all-reduce and RowAdam's exchange are
unchanged.

The C source (``kernel.c``) ships with the package and is compiled on first use with the
system's C compiler (``$CC``, else ``cc``/``gcc``/``clang``) into a private cache directory,
``$EGES_KERNEL_CACHE`` (default ``~/.cache/eges``), which must belong to the user and be
writable by nobody else (created with mode 0700; any other directory is refused, never loaded
from), with no directory above it that another user can change. A build is keyed by the
source, the compiler and its version, its flags and the CPU, and written under a unique
temporary name before an atomic rename, so processes building side by side — on one node or
on nodes sharing the cache — never see each other's half-written file. The flavour built is
logged: OpenMP threads for this CPU (``-march=native``) where the compiler has them; else
OpenMP for any CPU of the architecture; else one thread. Without a usable build
``train.kernel: auto`` falls back to the PyTorch form with a warning (also where the build has
no threads and torch has several); ``train.kernel: c`` is then an error.

``torch.utils.cpp_extension`` was considered: its ATen headers made a minimal operator take
10 s to compile here against under 1 s for this file, it needs ninja, and its default cache
(``~/.cache/torch_extensions``) is not checked for its owner or mode either.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
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
# the C step's calls in this process (the trainer reports it; tests check the C step ran)
steps_run = 0


class UnsafeCacheError(OSError):
    """The kernel cache directory could be written by another user: nothing is loaded from it."""


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


@dataclass(frozen=True)
class Flavour:
    """One way to build kernel.c: its name (logged), its flags, whether it runs threads."""

    name: str
    flags: tuple[str, ...]
    threaded: bool


def _cpu_key() -> str | None:
    """What a ``-march=native`` build depends on: the CPU's model and flags; None where
    unknown (then no build for this CPU only is made)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    wanted = ("model name", "flags", "Features", "CPU part")
    found = sorted({ln for ln in lines if ln.split(":")[0].strip() in wanted})
    return "|".join(found) if found else None


def flavours(cpu_key: str | None, openmp: bool = True) -> list[Flavour]:
    """The builds to try, best first: for this CPU only where its key is known, OpenMP
    threads unless ``openmp`` is False."""
    native = ("-march=native",) if platform.machine() in ("x86_64", "AMD64") else ("-mcpu=native",)
    tries = []
    if openmp:
        if cpu_key is not None:
            tries.append(
                Flavour("OpenMP threads, this CPU (-march=native)", native + ("-fopenmp",), True)
            )
        tries.append(Flavour("OpenMP threads, any CPU of the architecture", ("-fopenmp",), True))
    if cpu_key is not None:
        tries.append(
            Flavour("one thread, this CPU (-march=native)", native + ("-fopenmp-simd",), False)
        )
    tries.append(Flavour("one thread, any CPU of the architecture", ("-fopenmp-simd",), False))
    return tries


def cache_key(source: bytes, cc: str, version: str, flavour: Flavour, cpu_key: str | None) -> str:
    """The name of a build: the source, the compiler and its version, the flags, and the CPU
    where the flags tie the build to it."""
    cpu = cpu_key if any(f.endswith("=native") for f in flavour.flags) else platform.machine()
    text = " ".join([cc, version, *CFLAGS, *flavour.flags, cpu or ""])
    return hashlib.sha256(source + b"\0" + text.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """``$EGES_KERNEL_CACHE``, else ``~/.cache/eges``."""
    env = os.environ.get("EGES_KERNEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "eges"


def private_dir(path: Path) -> Path:
    """``path`` created (mode 0700, and so any missing directory above it) if missing, checked
    to be writable by this user alone.

    Returns:
        The directory's resolved path.

    Raises:
        UnsafeCacheError: the directory is not a directory owned by this user, is writable by
            group or others, or a directory above it can be changed by another user: owned by
            another user than root, writable by others without the sticky bit, or writable by
            a group other than this user's own (the private group of a umask-002 system).
    """
    old = os.umask(0o077)  # missing parents too (mkdir's mode applies to the leaf only)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    finally:
        os.umask(old)
    real = Path(os.path.realpath(path))
    uid = os.geteuid()
    st = os.stat(real)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeCacheError(f"kernel cache {path} is not a directory")
    if st.st_uid != uid:
        raise UnsafeCacheError(
            f"kernel cache {path} belongs to uid {st.st_uid}, not to this user ({uid})"
        )
    if st.st_mode & 0o022:
        raise UnsafeCacheError(
            f"kernel cache {path} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):o}); `chmod 700` it or point EGES_KERNEL_CACHE at a "
            "private directory"
        )
    for parent in real.parents:
        pst = os.stat(parent)
        sticky = pst.st_mode & stat.S_ISVTX
        own_group = pst.st_uid == uid and pst.st_gid == os.getegid()
        if (
            pst.st_uid not in (0, uid)
            or (pst.st_mode & 0o002 and not sticky)
            or (pst.st_mode & 0o020 and not sticky and not own_group)
        ):
            raise UnsafeCacheError(
                f"{parent}, above the kernel cache {path}, can be changed by another user; "
                "point EGES_KERNEL_CACHE at a private directory"
            )
    return real


def _own_file(lib: Path) -> bool:
    """Whether ``lib`` is a regular file of this user's that only they can write."""
    st = os.lstat(lib)
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build(cc: str, out: Path, flavour: Flavour) -> ctypes.CDLL | None:
    """Compile kernel.c as ``flavour`` into ``out``, through a temporary file of a unique name
    in the same directory (no two builders share one) renamed into place only once the
    compiler has succeeded.

    Returns:
        The new build, opened under its temporary name before the rename (a library this
        process already loaded under ``out``'s name would otherwise be handed back by the
        loader), or None if it is not a build of this kernel.
    """
    fd, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        done = subprocess.run(
            [cc, *CFLAGS, *flavour.flags, str(SOURCE), "-o", str(tmp), "-lm"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or ["(no message)"]
            raise OSError(f"{cc} could not compile {SOURCE.name} ({flavour.name}): {last[0]}")
        tmp.chmod(0o700)
        dll = _open(tmp, flavour)
        os.replace(tmp, out)  # atomic: a reader sees no file or a whole one
        return dll
    finally:
        tmp.unlink(missing_ok=True)


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return ""


@cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel (built on first use), or None where it cannot be built or loaded
    (the reason logged as a warning). Its flavour is ``load().flavour``."""
    cc = _compiler()
    if cc is None:
        log.warning("no C compiler found: training with the PyTorch form of the step")
        return None
    try:
        where = private_dir(cache_dir())
        source, version, cpu = SOURCE.read_bytes(), _compiler_version(cc), _cpu_key()
        if cpu is None:
            log.warning("the CPU is unknown (no /proc/cpuinfo): building the C step for any CPU")
        errors = []
        for flavour in flavours(cpu):
            lib = where / f"eges_kernel_{cache_key(source, cc, version, flavour, cpu)}.so"
            if lib.exists():
                if not _own_file(lib):
                    raise UnsafeCacheError(f"{lib} is not this user's own file: not loaded")
                dll = _open(lib, flavour)
                if dll is not None:
                    return dll
            try:
                dll = _build(cc, lib, flavour)
            except OSError as e:
                errors.append(str(e))
                continue
            log.info("built the C training step: %s (%s)", flavour.name, lib)
            if dll is not None:
                return dll
        log.warning("training with the PyTorch form of the step: %s", errors[0] if errors else "")
        return None
    except (OSError, RuntimeError) as e:  # RuntimeError: Path.home() without a home
        log.warning("training with the PyTorch form of the step: %s", e)
        return None


def _open(lib: Path, flavour: Flavour) -> ctypes.CDLL | None:
    """A built kernel, its functions typed; None if it is not a build of this module's kernel
    (a damaged file, another layout or missing functions: the caller builds it again)."""
    try:
        dll = ctypes.CDLL(str(lib))
        dll.eges_step.restype = ctypes.c_double
        dll.eges_step.argtypes = [ctypes.POINTER(_Step), ctypes.c_int, _I64]
        dll.eges_step_size.restype = ctypes.c_int64
        dll.eges_threaded.restype = ctypes.c_int
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
    except (OSError, AttributeError) as e:  # not a library, or one without our functions
        log.warning("ignoring %s: %s", lib.name, e)
        return None
    if (
        dll.eges_step_size() != ctypes.sizeof(_Step)
        or bool(dll.eges_threaded()) != flavour.threaded
    ):
        log.warning("ignoring %s: not a build of this kernel", lib.name)
        return None
    dll.flavour = flavour
    return dll


def unusable_reason(kernel: str) -> str | None:
    """Why the C step cannot train in this process (None: it can). ``auto`` also passes over
    a build without threads when torch runs several."""
    dll = load()
    if dll is None:
        return "it could not be built or loaded here (see the warning above)"
    threads = torch.get_num_threads()
    if kernel == "auto" and not dll.flavour.threaded and threads > 1:
        return f"its build runs one thread (no OpenMP) and torch runs {threads}"
    return None


def usable(model: EGES, walks: torch.Tensor, kernel: str = "auto") -> bool:
    """Whether the C step can train ``model`` on ``walks`` (CPU, float32, no autocast, a build
    that ``kernel`` accepts: see :func:`unusable_reason`)."""
    return (
        walks.device.type == "cpu"
        and all(p.dtype == torch.float32 for p in model.parameters())
        and not torch.is_autocast_enabled("cpu")
        and unusable_reason(kernel) is None
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
    global steps_run
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
        if pairs.value < 0:
            raise MemoryError("the C training step ran out of memory")
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
    steps_run += 1
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
