"""The LightningModule: :class:`eges.training.model.EGES` with the sampler, optimiser and logs.

Gradient synchronisation under DDP — every parameter is an embedding table:

* ``optimizer: adam``: dense gradients; DDP all-reduces the whole tables every step. Works on
  gloo and NCCL. The fastest on ml-latest-small (9.7k items) on 1 and 2 CPU processes
  (bench/results.md): the tables are small, and dense Adam's update beats summing sparse
  gradients. Its step reads and writes every row, so it slows down as the catalogue grows.
* ``optimizer: sparse_adam``: sparse gradients (only the rows a batch touched) and
  :class:`eges.training.optim.RowAdam`, which exchanges them between processes itself (dense
  ``all_gather``: nothing gloo-specific; tested on gloo) and updates those rows only: a step's
  cost does not grow with the catalogue. The processes run under :class:`RowSyncStrategy`
  (DDP without the model wrapper).
* ``optimizer: auto`` (default): ``adam`` up to 50,000 items, ``sparse_adam`` above
  (:func:`eges.training.optim.resolve_optimizer`).
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from torch.utils.data import DataLoader

from eges.config import TrainConfig
from eges.training.loss import constant_model_loss, walk_loss
from eges.training.model import EGES
from eges.training.optim import OPTIMIZER_KEY, RowAdam
from eges.training.sampling import AliasSampler

log = logging.getLogger(__name__)
LOSS_WINDOW = 20  # steps averaged for the loss at the start and at the end of a run
SHARDED_KEY = "sharded_tables"  # a sharded run's checkpoint: the name of its tables' checkpoint


class EGESModule(pl.LightningModule):
    """Lightning wrapper: one training step = one batch of walks (B, L).

    Args:
        model: the EGES network.
        sampler: negative sampler over the item frequencies of the walks.
        cfg: the ``train`` config section.
        loader: the training DataLoader over a :class:`eges.training.dataset.WalkDataset`; it is
            handed to Lightning through :meth:`train_dataloader`.
        kernel: the form of the step this process can run (``c`` or ``torch``, as the trainer
            decided it; default ``cfg.kernel``). Under DDP the ranks agree on one form in
            :meth:`setup`.
    """

    def __init__(
        self,
        model: EGES,
        sampler: AliasSampler,
        cfg: TrainConfig,
        loader: DataLoader | None = None,
        kernel: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.sampler = sampler
        self.cfg = cfg
        self.loader = loader
        self.kernel = kernel or cfg.kernel
        self.pairs_seen = 0
        self._t0: float | None = None
        self._pairs_at_t0 = 0
        # this process's step losses (detached: no device sync per step), first and last steps
        self._loss_head: list[torch.Tensor] = []
        self._loss_tail: deque[torch.Tensor] = deque(maxlen=LOSS_WINDOW)
        self._loss_steps = 0

    def setup(self, stage: str) -> None:
        # before the optimisers are made (RowAdam's update follows the step's form)
        check_same_sharding(False)
        if dist.is_available() and dist.is_initialized():
            self.kernel = agree_on_kernel(self.kernel, self.cfg.kernel)

    def train_dataloader(self) -> DataLoader:
        # Lightning does not tell an IterableDataset the epoch. It calls this hook after it has
        # restored a checkpoint's loop state and before it creates the loader's iterator (which
        # forks the workers, who keep the dataset as it is then), so the epoch and, on a
        # mid-epoch resume, the batches already trained are set here. Later epochs are set in
        # on_train_epoch_start, before their iterator is created.
        if self.loader is None:
            raise RuntimeError("EGESModule was built without a DataLoader")
        loop = self.trainer.fit_loop
        epochs, batches = loop.epoch_progress.total, loop.epoch_loop.batch_progress.current
        epoch = loop.epoch_progress.current.processed
        skip = 0
        if (
            loop.restarting
            and epochs.started == epochs.ready
            and epochs.processed == epochs.started - 1
        ):  # saved inside an epoch
            if loop.epoch_loop.batch_progress.is_last_batch:
                epoch += 1  # saved after its last batch: Lightning goes on with the next epoch
            else:
                skip = batches.processed
        self._set_epoch(epoch, skip)
        return self.loader

    def on_train_start(self) -> None:
        self._t0, self._pairs_at_t0 = time.perf_counter(), self.pairs_seen

    def on_train_epoch_start(self) -> None:
        self._set_epoch(self.current_epoch, 0)
        self._t0, self._pairs_at_t0 = time.perf_counter(), self.pairs_seen

    def _set_epoch(self, epoch: int, skip_batches: int) -> None:
        dataset = getattr(self.loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch, skip_batches=skip_batches)
            if skip_batches:
                log.info("resuming epoch %d after its first %d batches", epoch, skip_batches)

    def training_step(self, walks: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, pairs = walk_loss(
            self.model,
            walks,
            self.cfg.window,
            self.sampler,
            self.cfg.num_negatives,
            self.cfg.negatives_per,
            self.cfg.item_dropout,
            self.cfg.prior_offset,
            self.kernel,
        )
        self._log_step(loss, pairs, walks.shape[0])
        # the logged loss is the mean per pair either way
        return loss * pairs if self.cfg.loss_reduction == "sum" else loss

    def _log_step(self, loss: torch.Tensor, pairs: int, walks: int) -> None:
        """Count the step's pairs; log the loss, and the rate on the logging steps only (each
        self.log costs about 6% of a C step on ml-latest-small, bench/results.md)."""
        self.pairs_seen += pairs
        value = loss.detach()
        if len(self._loss_head) < LOSS_WINDOW:
            self._loss_head.append(value)
        self._loss_tail.append(value)
        self._loss_steps += 1
        self.log("loss", loss, prog_bar=True, batch_size=walks)
        if self._t0 is not None and (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            elapsed = time.perf_counter() - self._t0
            if elapsed > 0:
                rate = (self.pairs_seen - self._pairs_at_t0) / elapsed
                self.log("pairs_per_s", rate, prog_bar=True, batch_size=walks)

    def loss_summary(self) -> dict[str, float] | None:
        """This process's mean loss over the first and the last :data:`LOSS_WINDOW` steps of
        this run (after a resume: of the resumed part; a run of fewer than twice as many steps:
        its first and last half), and the loss of a constant score
        (:func:`eges.training.loss.constant_model_loss`); None before any step."""
        if not self._loss_head:
            return None
        window = min(LOSS_WINDOW, max(1, self._loss_steps // 2))
        return {
            "start": torch.stack(self._loss_head[:window]).float().mean().item(),
            "end": torch.stack(list(self._loss_tail)[-window:]).float().mean().item(),
            "constant": constant_model_loss(self.cfg.num_negatives),
            "window": window,
            "steps": self._loss_steps,
        }

    def configure_optimizers(self):
        params = self.model.parameters()
        if self.cfg.attention_lr is not None and self.model.attention is not None:
            attention = list(self.model.attention.parameters())
            rest = [p for p in self.model.parameters() if all(p is not a for a in attention)]
            params = [{"params": rest}, {"params": attention, "lr": self.cfg.attention_lr}]
        opt = make_optimizer(params, self.cfg.optimizer, self.cfg.lr, self.kernel != "torch")
        return self._with_schedule(opt)

    def _with_schedule(self, opt: torch.optim.Optimizer):
        """``opt`` with the configured learning-rate schedule, as configure_optimizers returns."""
        if self.cfg.lr_schedule == "constant":
            return opt
        # not trainer.estimated_stepping_batches: it builds the loader through
        # train_dataloader before a checkpoint's loop state is restored, so a resumed run
        # would not skip the batches it had trained
        if self.loader is None:
            raise RuntimeError("EGESModule was built without a DataLoader")
        total = self.cfg.epochs * len(self.loader)  # batches per rank and epoch
        if self.cfg.max_steps > 0:
            total = min(total, self.cfg.max_steps)
        total = max(total, 1)
        floor = 1e-4  # word2vec's min_alpha / alpha

        def linear(step: int) -> float:
            return max(1.0 - step / total, floor)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["pairs_seen"] = self.pairs_seen
        checkpoint[OPTIMIZER_KEY] = self.cfg.optimizer

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.pairs_seen = checkpoint.get("pairs_seen", 0)


class ShardedEGESModule(EGESModule):
    """The trainer's module with the tables sharded over the ranks (``train.sharding: sharded``,
    :class:`eges.training.sharded.ShardedEGES`).

    The tables are built in :meth:`setup`, once the process group exists (one process gets a
    group of its own). The optimiser runs inside the backward pass, so the loop optimises
    manually: each step sets the scheduled learning rate, runs the loss and its backward (which
    updates the rows), and steps the fused optimiser only so that Lightning counts the step.
    Checkpoints: Lightning's file (loop state, counters) on rank 0, and beside it the tables and
    the optimiser state written by every rank through ``torch.distributed.checkpoint``
    (``checkpoints/tables/step-N``), which a run on another number of processes reads.

    Args:
        build: makes the :class:`~eges.training.sharded.ShardedEGES` (called in :meth:`setup`).
        sampler, cfg, loader: as :class:`EGESModule`.
        checkpoint_dir: where the tables' checkpoints go.
    """

    def __init__(
        self,
        build: Callable[[], object],
        sampler: AliasSampler,
        cfg: TrainConfig,
        loader: DataLoader | None,
        checkpoint_dir: Path,
    ) -> None:
        super().__init__(None, sampler, cfg, loader, kernel="torch")
        self.build = build
        self.checkpoint_dir = Path(checkpoint_dir)
        self.sharded = None
        self.own_group = False
        self._saved: str | None = None  # the tables' checkpoint written last
        self.automatic_optimization = False

    def setup(self, stage: str) -> None:
        if not dist.is_initialized():  # one process: a group of one (the trainer ends it)
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
            self.own_group = True
        check_same_sharding(True)
        if self.sharded is None:
            self.sharded = self.build()

    def configure_optimizers(self):
        return self._with_schedule(self.sharded.dmp.fused_optimizer)

    def training_step(self, walks: torch.Tensor, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        scheduler = self.lr_schedulers()
        # the schedule's rate (TorchRec's optimiser does not checkpoint its parameter groups,
        # so after a resume only the scheduler knows it)
        lr = scheduler.get_last_lr()[0] if scheduler is not None else self.cfg.lr
        self.sharded.set_lr(lr)  # this step's rate, before its backward applies it
        loss, pairs = self.sharded.walk_loss(
            walks,
            self.cfg.window,
            self.sampler,
            self.cfg.num_negatives,
            self.cfg.item_dropout,
            -math.log(self.cfg.num_negatives) if self.cfg.prior_offset else 0.0,
        )
        self.manual_backward(loss)  # the rows are updated here
        # logged before the step is counted, as on the replicated path
        self.log("lr-RowWiseAdagrad", lr, batch_size=walks.shape[0])
        self._log_step(loss, pairs, walks.shape[0])
        opt.step()  # counts the step (the update already ran)
        if scheduler is not None:
            scheduler.step()
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        name = f"step-{self.global_step}"
        if self._saved != name:  # both checkpoint callbacks may save one step
            self.sharded.save(self.checkpoint_dir / name)  # every rank: its shards
            self._saved = name
        checkpoint[SHARDED_KEY] = name
        # the fused optimiser's state is in the tables' checkpoint, by shard; rank 0's part
        # alone in Lightning's file could not be restored
        checkpoint["optimizer_states"] = []
        if self.global_rank == 0:  # the tables of checkpoint files that are gone
            files = self.checkpoint_dir.parent.glob("*.ckpt")
            kept = {f"step-{m[1]}" for f in files if (m := re.search(r"step-(\d+)", f.name))}
            for old in self.checkpoint_dir.glob("step-*"):
                if old.name not in kept | {name}:
                    shutil.rmtree(old, ignore_errors=True)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        name = checkpoint.get(SHARDED_KEY)
        if name is None:
            raise ValueError("this checkpoint was not trained with sharded tables")
        self.sharded.load(self.checkpoint_dir / name)


def _every_rank(flag: bool) -> list[bool]:
    """``flag`` of every rank of the default process group, in rank order (a collective)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    flags = torch.zeros(world, dtype=torch.int32, device=device)
    flags[rank] = int(flag)
    dist.all_reduce(flags)
    return [bool(f) for f in flags.tolist()]


def check_same_sharding(sharded: bool) -> None:
    """Raise on every rank unless all ranks chose the same tables (``train.sharding: auto``
    decides on each rank from its own memory and packages): replicated and sharded ranks
    would wait on each other's collectives. The first collective of both modules' set-up."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flags = _every_rank(sharded)
    if len(set(flags)) > 1:
        ranks = [r for r, f in enumerate(flags) if f]
        raise RuntimeError(
            f"train.sharding=auto chose sharded tables on rank(s) {ranks} and replicated ones "
            "on the others (their memory or installed packages differ): set train.sharding "
            "to replicated or sharded"
        )


def agree_on_kernel(local: str, setting: str) -> str:
    """The form of the step every rank of the default process group trains with.

    The C step and the PyTorch form agree only up to rounding, and so do their row updates:
    ranks that took different forms would drift apart (DDP and RowAdam keep models identical
    only if every rank computes the same update). One process that cannot use the C step (no
    compiler on its node, a refused cache) therefore makes all of them use the PyTorch form.

    Args:
        local: the form this process can run, ``c`` or ``torch`` (the trainer resolves
            ``auto`` first; a library caller's ``auto`` counts as able and stays ``auto``).
        setting: ``train.kernel`` as given.

    Returns:
        ``local`` where every rank can run the C step, else ``torch``.

    Raises:
        RuntimeError: on every rank, where ``setting`` is ``c`` and some rank cannot run it.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    unable = [r for r, ok in enumerate(_every_rank(local != "torch")) if not ok]
    if not unable:
        return local  # c, or auto (the step then decides, where no rank is unable)
    if len(unable) == world:
        return "torch"
    ranks = ", ".join(map(str, unable))
    if setting == "c":
        raise RuntimeError(f"train.kernel=c: rank(s) {ranks} cannot run the C step")
    if rank == 0 or local != "torch":
        log.warning(
            "training step: PyTorch operators on every rank: rank(s) %s cannot run the C "
            "step, and ranks must compute the same update",
            ranks,
        )
    return "torch"


def make_optimizer(params, name: str, lr: float, native: bool = True) -> torch.optim.Optimizer:
    """The optimiser named by ``train.optimizer``.

    Dense Adam uses the fused kernel: one pass over each table instead of one per Adam
    operation (the step-throughput comparison is in bench/results.md). RowAdam updates its rows
    in C where it can unless ``native`` is False (``train.kernel: torch``).
    """
    if name == "sparse_adam":
        return RowAdam(params, lr=lr, native=native)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, fused=True)


class RowSyncStrategy(DDPStrategy):
    """DDP processes whose gradients :class:`~eges.training.optim.RowAdam` exchanges itself.

    Lightning's DDP set-up (process group, ranks, samplers, checkpoints on rank 0) without
    wrapping the model in ``DistributedDataParallel``: DDP would all-reduce the sparse gradients,
    which only gloo can. The parameters are broadcast from
    rank 0 once, as DDP does when it wraps a model.
    """

    def configure_ddp(self) -> None:
        assert self.model is not None
        with torch.no_grad():
            for p in self.model.parameters():
                dist.broadcast(p.data, 0)
