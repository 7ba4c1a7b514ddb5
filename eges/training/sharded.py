"""EGES with its embedding tables sharded by row over the ranks (TorchRec with FBGEMM).

Replicated training (:class:`eges.training.model.EGES` under DDP) keeps every table in every
process, so one process's memory bounds the catalogue. Here each rank holds a slice of the rows
and the rows a batch needs travel to and from their owner (TorchRec's all-to-all):

* W⁰ (``item``) and Z (``context``): an ``EmbeddingCollection`` each, sharded row-wise;
* A (``attention``, EGES only): a collection of its own (a collection's tables share one width),
  its n + 1 columns padded to a multiple of 4, sharded row-wise;
* the side-information fields (``side_<i>``): an ``EmbeddingBagCollection`` with mean pooling,
  sharded table-wise (FBGEMM shards bag tables by row on CUDA only); their vocabularies are
  small next to the catalogue;
* the optimiser runs inside the backward pass (FBGEMM's fused optimisers): row-wise Adagrad
  (one state number per row instead of Adam's 2·d; on CPU FBGEMM has SGD, Adagrad and row-wise
  Adagrad only) — its update, for each row r the batch touched with summed gradient g_r:
  s_r += mean(g_r²) over the row's width; w_r −= lr · g_r / (√s_r + eps).

The loss is the replicated path's (:class:`eges.training.loss._PositionLoss`, K negatives per
position) on the rows looked up here, H from the same source weights
(:func:`eges.training.model.source_weights`). TorchRec divides the embedding gradients by the
number of ranks: a step over R ranks is one step on the mean of their losses, as DDP's.

Initial weights are generated per block of rows from (seed, table, block), so every number of
ranks starts from the same tables and no rank ever holds a whole table. Checkpoints go through
``torch.distributed.checkpoint`` (each rank writes its own shards and optimiser state; a
checkpoint resumes on another number of ranks).

torchrec and fbgemm-gpu(-cpu) are imported only when a sharded model is built: the replicated
path needs neither.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from eges.training.loss import _PositionLoss, pair_mask
from eges.training.model import EGES, Mode, gather_bags, source_weights

log = logging.getLogger(__name__)

ITEM, CONTEXT, ATTENTION = "item", "context", "attention"
SHARDED_OPTIMIZER = "rowwise_adagrad"  # the optimiser's name in checkpoints and the export
INIT_BLOCK = 1 << 16  # rows generated together from one seed


@contextmanager
def _torchrec_quiet() -> Iterator[None]:
    """Without two warnings TorchRec 1.8 gives on every use, nothing for its users to change:
    its state dicts are ShardedTensors, which torch deprecates, and its planner would rather
    have its topology from a factory."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Please use DTensor instead", category=FutureWarning
        )
        warnings.filterwarnings("ignore", message="Topology constructed directly")
        yield


class _Drop(logging.Filter):
    """Drops the records whose message starts with one of ``starts``."""

    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def quiet_torchrec() -> None:
    """TorchRec's known-harmless notices off the screen, for the rest of the process: its
    ShardedTensor state dicts (deprecated by torch in favour of DTensor; Lightning touches them
    when it moves the fused optimiser's state), the planner's wish for a topology factory, and
    torch.fx's note on is_fx_tracing. Nothing in them is for TorchRec's users to change."""
    warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)
    for name, start in (
        ("torchrec.distributed.planner.types", "The topology was constructed directly"),
        ("torch.fx._symbolic_trace", "is_fx_tracing will return true"),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(start))


# sharding=auto shards the tables when the replicated ones would take more than this share of
# a process's memory (the rest: item ids, side-info lists, batches, the export's chunks)
AUTO_SHARD_SHARE = 0.5
# bytes per table number on the replicated path: the number and Adam's two moments
REPLICATED_COPIES = 3


def replicated_bytes(num_items: int, embedding_dim: int, num_fields: int, mode: Mode) -> int:
    """What one process of the replicated path holds for the item tables: W⁰, Z and A
    (EGES), each number with Adam's two moments (float32)."""
    width = 2 * embedding_dim + (num_fields + 1 if mode == "eges" and num_fields else 0)
    return (num_items + 1) * width * 4 * REPLICATED_COPIES


def host_memory(local_world: int) -> int:
    """Bytes of this machine's memory per process started on it."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // max(local_world, 1)


def process_memory(gpu: bool, local_world: int) -> int:
    """Bytes of memory one process may use: its GPU's, or :func:`host_memory`."""
    if gpu:
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return host_memory(local_world)


def torchrec_available() -> str | None:
    """None when torchrec and FBGEMM import, else why not."""
    try:
        import fbgemm_gpu  # noqa: F401
        import torchrec  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure to load means: not available
        return f"{type(exc).__name__}: {exc}"
    return None


def choose_sharding(
    num_items: int,
    embedding_dim: int,
    num_fields: int,
    mode: Mode,
    memory: int,
    blocked: str | None = None,
) -> tuple[str, str]:
    """``train.sharding: auto``: ``sharded`` when the replicated tables
    (:func:`replicated_bytes`) would take more than :data:`AUTO_SHARD_SHARE` of a process's
    ``memory``, unless ``blocked`` says why the sharded path cannot run (then ``replicated``,
    which may not fit).

    Returns:
        (``replicated`` or ``sharded``, why, in words).
    """
    need = replicated_bytes(num_items, embedding_dim, num_fields, mode)
    what = (
        f"replicated tables of {num_items:,} items at d {embedding_dim}: {need / 2**30:.1f} GiB "
        f"per process, of {memory / 2**30:.1f} GiB"
    )
    if need <= AUTO_SHARD_SHARE * memory:
        return "replicated", what
    if blocked:
        return "replicated", f"{what}, but the sharded path cannot run here ({blocked})"
    return "sharded", what


def side_table(field: int) -> str:
    return f"side_{field}"


def attention_width(num_fields: int) -> int:
    """A's stored width: n + 1 sources padded to a multiple of 4 (FBGEMM's row alignment)."""
    return -(-(num_fields + 1) // 4) * 4


@dataclass(frozen=True)
class Layout:
    """What the tables are: sizes, width, mode (the model's shape, independent of the ranks)."""

    num_items: int
    vocab_sizes: tuple[int, ...]
    embedding_dim: int
    mode: Mode

    @property
    def num_fields(self) -> int:
        return len(self.vocab_sizes) if self.mode != "bge" else 0

    def tables(self) -> dict[str, tuple[int, int]]:
        """Table name -> (rows, width)."""
        v, d = self.num_items + 1, self.embedding_dim
        out = {ITEM: (v, d), CONTEXT: (v, d)}
        if self.mode == "eges" and self.num_fields:
            out[ATTENTION] = (v, attention_width(self.num_fields))
        for i, size in enumerate(self.vocab_sizes[: self.num_fields]):
            out[side_table(i)] = (size + 1, d)
        return out


def initial_rows(layout: Layout, table: str, start: int, count: int, seed: int) -> torch.Tensor:
    """Rows ``start .. start + count`` of ``table``'s initial weights, as
    :meth:`eges.training.model.EGES.reset_parameters` draws them (uniform ±0.5/d for W⁰ and the
    side tables, zeros for Z and A, row 0 zero), from one generator per block of
    :data:`INIT_BLOCK` rows: the same values however the table is cut into shards.

    Returns:
        (count, width) float32.
    """
    rows, width = layout.tables()[table]
    if start < 0 or start + count > rows:
        raise IndexError(f"rows {start}..{start + count} outside {table}'s {rows}")
    out = torch.zeros(count, width)
    if table in (CONTEXT, ATTENTION) or count == 0:
        return out
    bound = 0.5 / layout.embedding_dim
    for block in range(start // INIT_BLOCK, (start + count - 1) // INIT_BLOCK + 1):
        key = hashlib.sha256(f"{seed}/{table}/{block}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)
        lo = block * INIT_BLOCK
        values = torch.empty(min(INIT_BLOCK, rows - lo), width).uniform_(
            -bound, bound, generator=gen
        )
        a, b = max(start, lo), min(start + count, lo + len(values))
        out[a - start : b - start] = values[a - lo : b - lo]
    if start == 0:
        out[0] = 0  # padding
    return out


class Tables(nn.Module):
    """The TorchRec collections of one :class:`Layout`, built on the meta device (their rows
    are allocated by the sharding, on each rank for its own shards only)."""

    def __init__(self, layout: Layout) -> None:
        from torchrec import (
            EmbeddingBagCollection,
            EmbeddingBagConfig,
            EmbeddingCollection,
            EmbeddingConfig,
        )
        from torchrec.modules.embedding_configs import PoolingType

        super().__init__()
        meta = torch.device("meta")
        tables = layout.tables()

        def config(name: str) -> EmbeddingConfig:
            rows, width = tables[name]
            return EmbeddingConfig(
                name=name, num_embeddings=rows, embedding_dim=width, feature_names=[name]
            )

        # W⁰ and Z in collections of their own: FBGEMM keeps a collection's tables in one
        # buffer, and torch.distributed.checkpoint copies a table that is a view of a larger
        # buffer before writing it (peak memory + that table); alone, a shard is its buffer
        self.ec = EmbeddingCollection(tables=[config(ITEM)], device=meta)
        self.ctx = EmbeddingCollection(tables=[config(CONTEXT)], device=meta)
        self.att = (
            EmbeddingCollection(tables=[config(ATTENTION)], device=meta)
            if ATTENTION in tables
            else None
        )
        self.ebc = (
            EmbeddingBagCollection(
                tables=[
                    EmbeddingBagConfig(
                        name=side_table(i),
                        num_embeddings=tables[side_table(i)][0],
                        embedding_dim=layout.embedding_dim,
                        feature_names=[side_table(i)],
                        pooling=PoolingType.MEAN,
                    )
                    for i in range(layout.num_fields)
                ],
                device=meta,
            )
            if layout.num_fields
            else None
        )


class ShardedEGES:
    """EGES on sharded tables: lookups, H, the loss, checkpoints and the tables' bytes.

    Args:
        num_items, vocab_sizes, side_offsets, side_values, embedding_dim, mode: as
            :class:`eges.training.model.EGES` (the side information's CSR lists are kept whole
            on every rank, as in the replicated model).
        lr: the fused optimiser's learning rate (change it with :meth:`set_lr`).
        eps: row-wise Adagrad's epsilon.
        seed: of the initial weights (:func:`initial_rows`).
        group: the process group the tables are sharded over (default: the default group,
            which must be initialised; one process is a group of one).
        device: where this rank's shards live (``cpu``, or its GPU).
    """

    @_torchrec_quiet()
    def __init__(
        self,
        num_items: int,
        vocab_sizes: list[int],
        side_offsets: list[torch.Tensor],
        side_values: list[torch.Tensor],
        embedding_dim: int = 128,
        mode: Mode = "eges",
        lr: float = 0.05,
        eps: float = 1e-8,
        seed: int = 42,
        group: dist.ProcessGroup | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from torchrec.distributed import DistributedModelParallel
        from torchrec.distributed.embedding import EmbeddingCollectionSharder
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.planner import (
            EmbeddingShardingPlanner,
            ParameterConstraints,
            Topology,
        )
        from torchrec.distributed.planner.storage_reservations import (
            FixedPercentageStorageReservation,
        )
        from torchrec.distributed.types import ShardingEnv

        if not dist.is_initialized():
            raise RuntimeError("sharded tables need an initialised process group (one or more)")
        self.group = group or dist.group.WORLD
        self.device = torch.device(device)
        self.layout = Layout(num_items, tuple(vocab_sizes), embedding_dim, mode)
        self._csr = (list(side_offsets), list(side_values))  # every field, as given
        self.side_offsets = [o.long().to(self.device) for o in side_offsets[: self.num_fields]]
        self.side_values = [v.long().to(self.device) for v in side_values[: self.num_fields]]
        fused = {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": lr, "eps": eps}
        sharders = [
            EmbeddingCollectionSharder(fused_params=fused),
            EmbeddingBagCollectionSharder(fused_params=fused),
        ]
        constraints = {
            name: ParameterConstraints(
                sharding_types=["table_wise" if name.startswith("side_") else "row_wise"]
            )
            for name in self.layout.tables()
        }
        world = dist.get_world_size(self.group)
        # the planner checks that the shards fit: this machine's memory per process (its
        # defaults are 32 GB of GPU and 128 GB of host memory per rank)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        host = host_memory(local)
        gpu = (
            torch.cuda.get_device_properties(self.device).total_memory
            if self.device.type == "cuda"
            else None
        )
        planner = EmbeddingShardingPlanner(
            topology=Topology(
                world_size=world,
                compute_device=self.device.type,
                hbm_cap=gpu,
                ddr_cap=host,
                local_world_size=local,
            ),
            constraints=constraints,
            # a share of each device kept free; the model has no dense part to estimate
            storage_reservation=FixedPercentageStorageReservation(0.15),
        )
        tables = Tables(self.layout)
        plan = planner.collective_plan(tables, sharders, self.group)
        self.dmp = DistributedModelParallel(
            module=tables,
            device=self.device,
            env=ShardingEnv.from_process_group(self.group),
            plan=plan,
            sharders=sharders,
        )
        self.reset_parameters(seed)

    @property
    def num_fields(self) -> int:
        return self.layout.num_fields

    @property
    def tables(self) -> Tables:
        return self.dmp.module

    @_torchrec_quiet()
    def _local_shards(self) -> list[tuple[str, torch.Tensor, tuple[int, ...]]]:
        """(table, shard tensor, (row offset, column offset)) of this rank's shards; the
        tensors are views of the live tables."""
        return [
            (key.split(".")[-2], shard.tensor, tuple(shard.metadata.shard_offsets))
            for key, value in self.dmp.state_dict().items()
            for shard in value.local_shards()
        ]

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """Write the initial weights (:func:`initial_rows`) into this rank's shards."""
        for table, tensor, (r0, c0) in self._local_shards():
            if table in (CONTEXT, ATTENTION):  # zeros (initial_rows), without a copy
                tensor.zero_()
                continue
            # a block at a time: a shard-sized temporary would double the peak memory
            for lo in range(0, tensor.shape[0], INIT_BLOCK):
                n = min(INIT_BLOCK, tensor.shape[0] - lo)
                rows = initial_rows(self.layout, table, r0 + lo, n, seed)
                tensor[lo : lo + n].copy_(rows[:, c0 : c0 + tensor.shape[1]])

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next backward passes."""
        opt = self.dmp.fused_optimizer
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()  # hands the rate to FBGEMM (the update itself runs in the backward)

    def lookup(
        self, ids: torch.Tensor, negatives: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, list, torch.Tensor]:
        """The rows a step needs, from their owners.

        Args:
            ids: (N,) item indices of the walk positions.
            negatives: (N, K) negative item indices.

        Returns:
            W⁰ rows (N, D), Z rows of the positions (N, D), Z rows of the negatives (N, K, D),
            A rows (N, n + 1) or None, the field means [(N, D)] (zero for an empty bag), and
            which fields have a value (N, n).
        """
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        n, k = negatives.shape
        ones = torch.ones(n, dtype=torch.long, device=ids.device)
        own = self.tables.ec(
            KeyedJaggedTensor.from_lengths_sync(keys=[ITEM], values=ids, lengths=ones)
        )[ITEM].values()  # (N, D)
        z = (
            self.tables.ctx(
                KeyedJaggedTensor.from_lengths_sync(
                    keys=[CONTEXT],
                    values=torch.cat([ids[:, None], negatives], 1).reshape(-1),
                    lengths=ones * (1 + k),
                )
            )[CONTEXT]
            .values()
            .view(n, 1 + k, -1)
        )  # (N, 1 + K, D)
        logits = None
        if self.tables.att is not None:
            logits = self.tables.att(
                KeyedJaggedTensor.from_lengths_sync(keys=[ATTENTION], values=ids, lengths=ones)
            )[ATTENTION].values()[:, : self.num_fields + 1]  # (N, n + 1)
        means, present = [], torch.zeros(n, 0, dtype=torch.bool, device=ids.device)
        if self.num_fields:
            flats, lengths = [], []
            for off, val in zip(self.side_offsets, self.side_values):
                flats.append(gather_bags(ids, off, val)[0])
                lengths.append(off[ids + 1] - off[ids])  # (N,)
            pooled = self.tables.ebc(
                KeyedJaggedTensor.from_lengths_sync(
                    keys=[side_table(i) for i in range(self.num_fields)],
                    values=torch.cat(flats),
                    lengths=torch.cat(lengths),
                )
            ).to_dict()
            means = [pooled[side_table(i)] for i in range(self.num_fields)]  # (N, D) each
            present = torch.stack([length > 0 for length in lengths], 1)  # (N, n)
        return own, z[:, 0], z[:, 1:], logits, means, present

    def embed(
        self,
        own: torch.Tensor,
        logits: torch.Tensor | None,
        means: list[torch.Tensor],
        present: torch.Tensor,
        drop_item: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """H from looked-up rows (:meth:`lookup`), as :meth:`EGES.forward`. (N, D)."""
        if not self.num_fields:
            return own
        weights = source_weights(logits, present, drop_item)  # (N, n + 1)
        h = own * weights[:, :1]
        for i, mean in enumerate(means):
            h = h + mean * weights[:, i + 1 : i + 2]
        return h

    def walk_loss(
        self,
        walks: torch.Tensor,
        window: int,
        negatives: Callable[[tuple[int, int]], torch.Tensor],
        num_negatives: int,
        item_dropout: float = 0.0,
        offset: float = 0.0,
    ) -> tuple[torch.Tensor, int]:
        """:func:`eges.training.loss.walk_loss` with negatives per position (its random draws
        in its order: item dropout, then negatives), on the sharded tables. Its backward
        updates the rows (the optimiser is fused into it).

        Returns:
            (mean loss over the pairs, number of pairs P).
        """
        b, length = walks.shape
        flat = walks.reshape(-1)  # (N,)
        drop = (
            torch.rand(flat.shape, device=flat.device) < item_dropout
            if item_dropout > 0 and self.num_fields
            else None
        )  # (N,)
        neg = negatives((flat.numel(), num_negatives))  # (N, K)
        own, zc, z_neg, logits, means, present = self.lookup(flat, neg)
        h = self.embed(own, logits, means, present, drop)  # (N, D)
        mask = pair_mask(walks, window)  # (B, L, L)
        pairs = int(mask.sum())
        per_position = mask.sum(2).reshape(-1).to(h.dtype)  # (N,)
        loss = _PositionLoss.apply(
            h.view(b, length, -1),
            zc.view(b, length, -1),
            z_neg,
            mask.to(h.dtype),
            per_position,
            offset,
            max(pairs, 1),
        )
        return loss, pairs

    @_torchrec_quiet()
    def state_dict(self) -> dict:
        """This rank's part of the tables and of the optimiser state, for
        ``torch.distributed.checkpoint`` (sharded tensors: their shards and where they lie)."""
        return {"tables": self.dmp.state_dict(), "optimizer": self.dmp.fused_optimizer.state_dict()}

    @_torchrec_quiet()
    def save(self, path: str | Path) -> None:
        """Every rank writes its shards and optimiser state to the checkpoint directory."""
        import torch.distributed.checkpoint as dcp

        dcp.save(self.state_dict(), checkpoint_id=str(path), process_group=self.group)

    @_torchrec_quiet()
    def load(self, path: str | Path) -> None:
        """Read a checkpoint of :meth:`save`, written by this or another number of ranks."""
        import torch.distributed.checkpoint as dcp

        state = self.state_dict()
        dcp.load(state, checkpoint_id=str(path), process_group=self.group)
        self.dmp.load_state_dict(state["tables"])
        self.dmp.fused_optimizer.load_state_dict(state["optimizer"])

    @_torchrec_quiet()
    def local_bytes(self) -> dict[str, int]:
        """Bytes of this rank's shards: ``tables`` and ``optimizer`` (row-wise state)."""
        tables = sum(t.numel() * t.element_size() for _, t, _ in self._local_shards())
        state = 0
        for per_table in self.dmp.fused_optimizer.state_dict()["state"].values():
            for value in per_table.values():
                for shard in value.local_shards():
                    state += shard.tensor.numel() * shard.tensor.element_size()
        return {"tables": tables, "optimizer": state}

    @_torchrec_quiet()
    def full_tables(self, dst: int = 0) -> dict[str, torch.Tensor] | None:
        """Every table gathered whole on rank ``dst`` (None elsewhere): for small catalogues
        and tests only; a collective, every rank must call it."""
        rank = dist.get_rank(self.group)
        out = {}
        for key, value in self.dmp.state_dict().items():
            full = torch.empty(value.size(), device=self.device) if rank == dst else None
            value.gather(dst=dst, out=full)
            out[key.split(".")[-2]] = full
        return out if rank == dst else None

    @_torchrec_quiet()
    def full_optimizer_state(self, dst: int = 0) -> dict[str, torch.Tensor] | None:
        """Row-wise Adagrad's state of every table (rows,) gathered on rank ``dst`` (None
        elsewhere); a collective. A rank holds state only for the tables it has shards of, so
        the shards travel as objects, not through per-table collectives."""
        local = []
        for per_table in self.dmp.fused_optimizer.state_dict()["state"].values():
            for key, value in per_table.items():
                for shard in value.local_shards():
                    offset = shard.metadata.shard_offsets[0]
                    local.append((key.split(".")[0], value.size(), offset, shard.tensor.cpu()))
        rank = dist.get_rank(self.group)
        parts = [None] * dist.get_world_size(self.group) if rank == dst else None
        dist.gather_object(local, parts, dst=dst, group=self.group)
        if rank != dst:
            return None
        out: dict[str, torch.Tensor] = {}
        for part in parts:
            for table, size, offset, tensor in part:
                full = out.setdefault(table, torch.zeros(size))
                full.view(-1)[offset : offset + tensor.numel()] = tensor.reshape(-1)
        return out

    def bytes_per_rank(self) -> list[dict[str, int]]:
        """:meth:`local_bytes` of every rank, in rank order (a collective)."""
        parts: list = [None] * dist.get_world_size(self.group)
        dist.all_gather_object(parts, self.local_bytes(), group=self.group)
        return parts

    @_torchrec_quiet()
    def item_range(self) -> tuple[int, int]:
        """The rows [lo, hi) of W⁰ this rank holds (row-wise: one slice per rank; Z and A
        are cut at the same rows), item 0 (padding) left out."""
        ranges = [(r0, r0 + len(t)) for table, t, (r0, _) in self._local_shards() if table == ITEM]
        if not ranges:
            return (1, 1)
        lo, hi = min(r for r, _ in ranges), max(r for _, r in ranges)
        return max(lo, 1), max(hi, 1)

    @torch.no_grad()
    @_torchrec_quiet()
    def side_model(self, walk_counts) -> EGES:
        """On every rank, a plain :class:`~eges.training.model.EGES` with the trained side-info
        tables (whole: their size is the vocabularies', not the catalogue's) and the catalogue's
        side-info lists, but no item rows (its W⁰, A and Z hold the padding row alone): what
        cold start needs (:meth:`EGES.cold_start_items`, :meth:`EGES.cold_start`). A
        collective."""
        layout = self.layout
        model = EGES(0, list(layout.vocab_sizes), *self._csr, layout.embedding_dim, layout.mode)
        rank = dist.get_rank(self.group)
        src = dist.get_global_rank(self.group, 0)
        for key, value in self.dmp.state_dict().items():
            table = key.split(".")[-2]
            if not table.startswith("side_"):
                continue
            full = torch.empty(value.size(), device=self.device)
            value.gather(dst=0, out=full if rank == 0 else None)
            dist.broadcast(full, src=src, group=self.group)
            model.side[int(table.removeprefix("side_"))].weight.copy_(full.cpu())
        model.mark_trained_values(torch.as_tensor(walk_counts))
        model.eval()
        return model

    def replicated_model(self, walk_counts, dst: int = 0) -> EGES | None:
        """The trained tables as a plain :class:`~eges.training.model.EGES` on rank ``dst``
        (None elsewhere; a collective): every table gathered whole on that rank, so the
        catalogue must fit its memory. For tests and small catalogues; the trainer's export
        writes each rank's rows instead (:mod:`eges.training.parts`).

        Args:
            walk_counts: (V + 1,) occurrences of each item in the walks (which side-info
                values were trained, :meth:`EGES.mark_trained_values`).
        """
        tables = self.full_tables(dst)
        if tables is None:
            return None
        layout = self.layout
        model = EGES(
            layout.num_items,
            list(layout.vocab_sizes),
            *self._csr,
            layout.embedding_dim,
            layout.mode,
        )
        with torch.no_grad():
            model.item.weight.copy_(tables[ITEM])
            model.context.weight.copy_(tables[CONTEXT])
            if model.attention is not None:
                model.attention.weight.copy_(tables[ATTENTION][:, : self.num_fields + 1])
            for i, bag in enumerate(model.side):
                bag.weight.copy_(tables[side_table(i)])
        model.mark_trained_values(torch.as_tensor(walk_counts))
        return model
