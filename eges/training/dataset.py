"""Streaming the walk shards into training: an IterableDataset split by (rank, worker).

Lightning does not shard an IterableDataset, so this one does it itself, deterministically:

1. every epoch the shard list (sorted, from the manifest) is permuted with ``seed + epoch``, the
   same permutation on every rank, and read as one long sequence of walks;
2. the sequence is cut into ``world_size`` contiguous ranges of exactly ``N // world_size`` walks
   (the remainder, fewer than ``world_size`` walks, is skipped that epoch), so **every rank runs
   the same number of steps** — DDP hangs otherwise;
3. a rank's range is cut again between its DataLoader workers;
4. walks are shuffled in blocks of ``shuffle_buffer`` (seeded by seed, epoch, rank, worker) and
   yielded as padded ``(B, L)`` int64 tensors (0 = padding).

Only the row ranges a worker needs are read, batch by batch with pyarrow, so memory is bounded by
the shuffle buffer whatever the corpus size. The (centre, context) pairs are formed later, with
tensor ops, from each batch of walks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from eges import schema

log = logging.getLogger(__name__)

READ_ROWS = 8192  # rows per pyarrow read batch


@dataclass(frozen=True)
class Shard:
    path: Path
    rows: int


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def pad_walks(walks: pa.Array, length: int) -> np.ndarray:
    """A list array of ragged walks -> (n, length) int64 array, 0-padded on the right.

    From the array's flat values and lengths, without a Python list per walk.
    """
    if walks.null_count:
        raise ValueError(f"{walks.null_count} walk(s) are null: not a walk job's output")
    lengths = walks.value_lengths().to_numpy(zero_copy_only=False)  # (n,)
    if len(lengths) and lengths.max() > length:
        raise ValueError(f"a walk of {lengths.max()} items is longer than {length}")
    out = np.zeros((len(walks), length), dtype=np.int64)
    out[np.arange(length)[None, :] < lengths[:, None]] = walks.flatten().to_numpy(
        zero_copy_only=False
    )  # row-major: each row's first lengths[i] slots, in order
    return out


class WalkDataset(IterableDataset):
    """Batches of walks from a walk job output directory.

    Args:
        walk_dir: the walk job's output (refused without a complete manifest).
        batch_size: walks per batch.
        seed: base seed of the shard order and the shuffling.
        shuffle_buffer: walks shuffled together.
        rank, world_size: override the process group (tests); default: torch.distributed.
    """

    def __init__(
        self,
        walk_dir: str | Path,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle_buffer: int = 8192,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.walk_dir = Path(walk_dir)
        manifest = schema.read_manifest(self.walk_dir)
        self.shards = [
            Shard(self.walk_dir / s["path"], int(s["rows"]))
            for s in sorted(manifest["walks"]["files"], key=lambda s: s["path"])
        ]
        self.walk_length = int(manifest["config"]["walks"]["walk_length"])
        self.total_walks = sum(s.rows for s in self.shards)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self._rank, self._world = rank, world_size
        self.epoch = 0
        self.skip_batches = 0

    # ------------------------------------------------------------------ split

    @property
    def rank_world(self) -> tuple[int, int]:
        rank, world = _dist()
        return (
            self._rank if self._rank is not None else rank,
            self._world if self._world is not None else world,
        )

    def walks_per_rank(self) -> int:
        return self.total_walks // self.rank_world[1]

    def __len__(self) -> int:
        """Batches per rank and epoch (the same on every rank)."""
        return math.ceil(self.walks_per_rank() / self.batch_size) if self.walks_per_rank() else 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch (shard order, shuffling) and batches already trained in it (resume)."""
        self.epoch = epoch
        self.skip_batches = skip_batches

    def shard_order(self, epoch: int) -> list[Shard]:
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in perm]

    def worker_range(self, worker: int, workers: int) -> tuple[int, int]:
        """[start, end) of this (rank, worker) in the epoch's walk sequence."""
        rank, _ = self.rank_world
        per_rank = self.walks_per_rank()
        lo = rank * per_rank
        # whole batches per worker, the first `extra` workers one more: worker w then made the
        # batches w, w + workers, w + 2·workers, … of the DataLoader's round-robin order
        base, extra = divmod(len(self), workers)
        first = worker * base + min(worker, extra)
        last = first + base + (worker < extra)
        return lo + min(first * self.batch_size, per_rank), lo + min(
            last * self.batch_size, per_rank
        )

    def worker_skip(self, worker: int, workers: int) -> int:
        """Of the epoch's first ``skip_batches`` batches, how many this worker made."""
        return max(0, (self.skip_batches - worker + workers - 1) // workers)

    # ------------------------------------------------------------------ reading

    def _read(self, start: int, end: int) -> Iterator[np.ndarray]:
        """Walks [start, end) of this epoch's sequence, in padded (n, L) chunks."""
        offset = 0
        for shard in self.shard_order(self.epoch):
            s_lo, s_hi = offset, offset + shard.rows
            offset = s_hi
            if s_hi <= start or s_lo >= end:
                continue
            pos = s_lo
            for batch in pq.ParquetFile(shard.path).iter_batches(
                batch_size=READ_ROWS, columns=["items"]
            ):
                b_lo, b_hi = pos, pos + batch.num_rows
                pos = b_hi
                if b_hi <= start:
                    continue
                if b_lo >= end:
                    break
                lo, hi = max(start, b_lo) - b_lo, min(end, b_hi) - b_lo
                yield pad_walks(batch.column(0).slice(lo, hi - lo), self.walk_length)

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rank, _ = self.rank_world
        start, end = self.worker_range(worker, workers)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        # resuming mid-epoch: the DataLoader took batch i from worker i % workers
        skip = self.worker_skip(worker, workers)
        block_size = (self.shuffle_buffer // self.batch_size) * self.batch_size
        parts: list[np.ndarray] = []  # (n, L) chunks not yet shuffled
        held = 0
        emitted = 0
        for chunk in self._read(start, end):
            parts.append(chunk)
            held += len(chunk)
            while held >= block_size:
                rows = np.concatenate(parts)
                block, rest = rows[:block_size], rows[block_size:]
                parts, held = [rest], len(rest)
                for batch in self._batches(block, rng):
                    emitted += 1
                    if emitted > skip:
                        yield batch
        rest = np.concatenate(parts) if parts else np.zeros((0, self.walk_length), np.int64)
        for batch in self._batches(rest, rng):
            emitted += 1
            if emitted > skip:
                yield batch

    def _batches(self, walks: np.ndarray, rng: np.random.Generator) -> Iterator[torch.Tensor]:
        """Shuffled batches of a block of padded walks (n, L)."""
        if not len(walks):
            return
        walks = walks[rng.permutation(len(walks))]
        for i in range(0, len(walks), self.batch_size):
            yield torch.from_numpy(walks[i : i + self.batch_size])  # (B, L)
