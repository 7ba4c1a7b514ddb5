"""Trainer entry point: stream walk shards into EGES with Lightning, on one or many processes.

    torchrun --nproc-per-node=2 eges/train.py --config conf/ml-latest-small.yaml
    python eges/train.py --config conf/ml-latest-small.yaml [--data WALKS] [--output RUN]
                         [--set train.max_steps=200] [--resume]

CPU (gloo) or GPU (nccl) is chosen automatically (``train.accelerator``, ``train.backend``).
Checkpoints go to ``RUN/checkpoints`` every ``train.checkpoint_every_n_steps`` steps and at each
epoch end; ``--resume`` continues from the newest one. Metrics (loss, pairs/s, learning rate) go
to ``RUN/logs/metrics.csv`` and, with the ``tensorboard`` extra installed, to
``RUN/logs/tensorboard`` (``tensorboard --logdir RUN/logs``). The export is written into a
temporary sibling that replaces ``RUN/export`` in one rename when complete: by rank 0 alone
with replicated tables, by every rank its own rows with sharded ones (``train.sharding``). With
``train.overwrite`` the previous checkpoints and logs are deleted at the start (``--resume``
then continues the new run, never the old one); the previous export stays in place, complete,
until the new one replaces it, also when the new run fails or is killed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import re
import shutil
import signal
import sys
import time
import warnings
import zipfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script (torchrun eges/train.py): import the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# PyTorch's CPU allocator puts tensors of 2 MB and more on transparent huge pages when this is
# set before torch loads: fewer TLB misses in the row gathers of a large catalogue (1.2x the
# steps/s of RowAdam at 1M items, bench/results.md). THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

from eges import schema  # noqa: E402
from eges.cli import fail, parser  # noqa: E402
from eges.config import (  # noqa: E402
    AUTO_SPARSE_ITEMS,
    Config,
    ConfigError,
    add_config_arguments,
    config_from_args,
)
from eges.quiet import close_log_file, quiet_warnings, setup_logging  # noqa: E402
from eges.training.optim import OPTIMIZER_KEY  # noqa: E402
from eges.training.sharded import SHARDED_OPTIMIZER  # noqa: E402

log = logging.getLogger("eges.train")

LOG_FILE = "train.log"  # RUN/train.log: every library's log lines (the screen shows fewer)
LOG_DIR = "logs"  # RUN/logs: metrics.csv (always) and tensorboard/ (with the extra installed)
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_HINT = (
    "TensorBoard logging is off (no usable tensorboard package): "
    "pip install -c constraints.txt -e '.[tensorboard]' (or make install) adds "
    f"RUN/{LOG_DIR}/{TENSORBOARD_DIR}; the CSV log is written either way"
)


def _checkpoint_optimizer(ckpt: Path) -> str | None:
    """The optimiser ``ckpt`` was trained with (None if it does not say). Checkpoints older
    than the stored name count as Adam when their parameter groups are Adam's (``amsgrad``)."""
    saved = torch.load(ckpt, map_location="cpu", mmap=True, weights_only=False)
    used = saved.get(OPTIMIZER_KEY)
    if used is None:
        groups = (saved.get("optimizer_states") or [{}])[0].get("param_groups") or [{}]
        used = "adam" if "amsgrad" in groups[0] else None
    return used


def _resolve_sharding(t, items, local_world: int, gpu: bool, ckpt: Path | None) -> str:
    """``train.sharding``, ``auto`` decided (and said why): as the resumed checkpoint was
    trained, else by the catalogue's size against a process's memory
    (:func:`eges.training.sharded.choose_sharding`). Each rank decides alone (no process group
    exists yet); :func:`eges.training.module.check_same_sharding` stops ranks that differ."""
    from eges.training.sharded import choose_sharding, process_memory, torchrec_available

    if t.sharding != "auto":
        return t.sharding
    if ckpt is not None:  # a checkpoint that does not name its optimiser is replicated's
        way = "sharded" if _checkpoint_optimizer(ckpt) == SHARDED_OPTIMIZER else "replicated"
        log.info("tables: %s, as %s was trained (train.sharding=auto)", way, ckpt.name)
        return way
    size = (items.num_items, t.embedding_dim, len(items.fields), t.mode)
    memory = process_memory(gpu, local_world)
    way, why = choose_sharding(*size, memory)
    if way == "sharded":  # can it run? (importing torchrec takes seconds: only when needed)
        try:  # the settings the sharded path refuses (TrainConfig's checks)
            dataclasses.replace(t, sharding="sharded")
            blocked = torchrec_available()
        except ConfigError as exc:
            blocked = str(exc)
        way, why = choose_sharding(*size, memory, blocked)
    (log.warning if "cannot run" in why else log.info)(
        "tables: %s (train.sharding=auto: %s)", way, why
    )
    return way


def _resumed_optimizer(ckpt: Path, asked: str, resolved: str) -> str:
    """The optimiser to resume ``ckpt`` with: the one it was trained with (Adam's and RowAdam's
    states do not fit each other). ``auto`` follows the checkpoint; another explicit choice is
    refused."""
    used = _checkpoint_optimizer(ckpt)
    if (used == SHARDED_OPTIMIZER) != (resolved == SHARDED_OPTIMIZER):  # tables, not optimiser
        way = "sharded" if used == SHARDED_OPTIMIZER else "replicated"
        raise ConfigError(
            f"--resume: {ckpt.name} was trained with {way} tables; resume with "
            f"--set train.sharding={way}"
        )
    if used is None or used == resolved:
        return resolved
    if asked == "auto":
        log.info("optimizer: %s, as %s was trained (auto)", used, ckpt.name)
        return used
    raise ConfigError(
        f"--resume: {ckpt.name} was trained with train.optimizer={used}, not {asked}; "
        f"resume with --set train.optimizer={used}"
    )


def _check_precision(optimizer: str, world: int, precision: str) -> None:
    """Refuse fp16 mixed precision with RowAdam on several processes: the gradient scaler
    looks for inf/nan in each process's own gradients before RowAdam exchanges them, so one
    process could skip a step while the others wait for it in the exchange."""
    if optimizer == "sparse_adam" and world > 1 and precision.startswith("16"):
        raise ConfigError(
            f"train.precision={precision} with train.optimizer=sparse_adam on {world} "
            "processes: use bf16-mixed or 32-true, or train.optimizer=adam"
        )


def _check_kernel(t, gpu: bool) -> str:
    """Say which form of the step this process can train with (``train.kernel``); refuse ``c``
    where it cannot. The ranks then agree on one form (:meth:`EGESModule.setup`).

    Returns:
        ``c`` or ``torch``.
    """
    from eges.training import fused

    if t.kernel == "torch":
        log.info("training step: PyTorch operators (train.kernel=torch)")
        return "torch"
    why = (
        "the device is a GPU"
        if gpu
        else "train.negatives_per is walk"
        if t.negatives_per != "position"
        else f"train.precision is {t.precision}"
        if str(t.precision) not in ("32-true", "32")
        else fused.unusable_reason(t.kernel)
    )
    if why is None:
        log.info(
            "training step: the C kernel, %s (train.kernel=%s)", fused.load().flavour.name, t.kernel
        )
        return "c"
    if t.kernel == "c":
        raise ConfigError(f"train.kernel=c cannot be used: {why}; use auto or torch")
    log.info("training step: PyTorch operators (train.kernel=auto: %s)", why)
    return "torch"


# the run's last steps must be at least this share below a constant score's loss
LEARNED_MARGIN = 0.02


def learning_diagnostics(loss: dict[str, float] | None) -> tuple[str, str | None]:
    """(the loss line of the summary, a warning when training did not move the loss).

    Args:
        loss: :meth:`eges.training.module.EGESModule.loss_summary`.
    """
    if loss is None:
        return "loss: no step was trained", "no training step ran (train.max_steps, or no walks)"
    line = (
        f"loss {loss['start']:.3f} over the first {loss['window']} steps -> {loss['end']:.3f} "
        f"over the last; a constant score gives {loss['constant']:.3f}"
    )
    if loss["end"] > loss["constant"] * (1 - LEARNED_MARGIN):
        return line, (
            f"training barely learned: the loss ended at {loss['end']:.3f}, within "
            f"{LEARNED_MARGIN:.0%} of a constant score's {loss['constant']:.3f} (what a model "
            "that knows nothing about the items reaches). Too few steps, too small a "
            "train.lr, or walks that carry little signal; the vectors are exported, but check "
            "them before serving"
        )
    if loss["end"] > loss["start"]:
        return line, (
            f"the loss rose from {loss['start']:.3f} to {loss['end']:.3f}: train.lr may be "
            "too large"
        )
    return line, None


def _group_open() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class RunExistsError(FileExistsError):
    """The run directory already holds a run and neither --resume nor overwrite was given."""


class TrainingInterrupted(Exception):
    """Training stopped by Ctrl-C (SIGINT) or SIGTERM; says what was kept and how to go on.
    ``status`` is the shell's exit status for that signal (130, 143)."""

    def __init__(self, step: int, checkpoint: Path | None, sigterm: bool = False) -> None:
        kept = (
            f"the newest checkpoint, {checkpoint}, holds step {_checkpoint_step(checkpoint)}; "
            "run the same command with --resume to continue from it"
            if checkpoint is not None
            else "no checkpoint was written yet (train.checkpoint_every_n_steps): "
            "the next run starts over"
        )
        what = "stopped by SIGTERM" if sigterm else "interrupted"
        self.status = 128 + (signal.SIGTERM if sigterm else signal.SIGINT)
        super().__init__(f"{what} at step {step}: {kept}; nothing was exported")


def _world() -> tuple[int, int, int]:
    """(global rank, local world size, world size) from torchrun's environment."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        int(os.environ.get("WORLD_SIZE", 1)),
    )


def _checkpoint_step(ckpt: Path) -> int:
    """The step a checkpoint's name gives (``step-120``, ``epoch-0-step-120``); -1 if none."""
    match = re.search(r"step-(\d+)", ckpt.stem)
    return int(match.group(1)) if match else -1


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest step.

    At equal steps the step checkpoint wins over the epoch-end one: when ``max_steps`` stops an
    epoch early, Lightning still runs the epoch-end hook, and resuming from that checkpoint would
    treat the cut-short epoch as finished.
    """

    def key(path: Path) -> tuple[int, int]:
        return (_checkpoint_step(path), path.stem.startswith("step-"))

    for ckpt in sorted((run_dir / "checkpoints").glob("*.ckpt"), key=key, reverse=True):
        # torch.save writes a zip whose central directory comes last: a checkpoint cut short
        # by a kill or a full disk fails this check, and the previous one (still there: the
        # callback deletes it only after the new one is written) is used instead
        if zipfile.is_zipfile(ckpt):
            return ckpt
        log.warning("skipping incomplete checkpoint %s", ckpt)
    return None


def tensorboard_available() -> bool:
    """Whether TensorBoard logging works here: the ``tensorboard`` package (the ``tensorboard``
    extra) is installed and torch's event writer, which Lightning uses, imports."""
    import importlib.util

    try:
        if importlib.util.find_spec("tensorboard") is None:
            return False
        import torch.utils.tensorboard  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken install (e.g. protobuf) must not stop training
        log.warning(
            "tensorboard is installed but does not import (%s: %s)", type(exc).__name__, exc
        )
        return False
    return True


def _resumable_csv_logger(run_dir: Path, resumed_step: int | None):
    """Lightning's CSV logger writing ``RUN/logs/metrics.csv``. Lightning deletes an existing
    file when its logger starts; on a resume from step N this one keeps the rows of the steps
    before N (the later ones are trained again) and appends to them."""
    import csv
    import warnings

    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter
    from pytorch_lightning.loggers.logger import rank_zero_experiment

    class Writer(ExperimentWriter):
        def __init__(self, log_dir: str) -> None:
            path = Path(log_dir) / self.NAME_METRICS_FILE
            kept: list[dict[str, str]] = []
            if resumed_step is not None and path.is_file():
                with path.open(newline="") as f:
                    kept = [r for r in csv.DictReader(f) if float(r["step"]) < resumed_step]
            with warnings.catch_warnings():  # "... will be deleted": not these rows
                warnings.filterwarnings("ignore", message="Experiment logs directory")
                super().__init__(log_dir)
            if kept:
                self.metrics_keys = sorted(set().union(*kept))
                with path.open("w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                    writer.writeheader()
                    writer.writerows(kept)

    class Logger(CSVLogger):
        # rank_zero_experiment as on Lightning's own: the other ranks get a dummy. Without it
        # every rank rewrote (and Lightning's writer deleted) the same metrics.csv at once, and
        # a rank that lost the race failed a resume with FileNotFoundError (seen in CI).
        @property
        @rank_zero_experiment
        def experiment(self):
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = Writer(log_dir=self.log_dir)
            return self._experiment

    return Logger(run_dir, name=LOG_DIR, version="")


def stderr_progress_bar():
    """Lightning's training progress bar, on stderr (where tqdm puts its bars by default) so
    that stdout carries only the run's summary; Lightning's own writes to stdout."""
    from pytorch_lightning.callbacks import TQDMProgressBar
    from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

    class StderrProgressBar(TQDMProgressBar):
        def init_train_tqdm(self) -> Tqdm:  # Lightning's bar, but for the file
            return Tqdm(
                desc=self.train_description,
                position=2 * self.process_position,
                disable=self.is_disabled,
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
                smoothing=0,
                bar_format=self.BAR_FORMAT,
            )

    return StderrProgressBar()


def make_loggers(run_dir: Path, rank: int = 0, resumed_step: int | None = None) -> list:
    """Lightning loggers of a run: CSV (``RUN/logs/metrics.csv``, continued on a resume from
    step ``resumed_step``) and, when the package is installed, TensorBoard
    (``RUN/logs/tensorboard``); without it one info line (rank 0)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    loggers = [_resumable_csv_logger(run_dir, resumed_step)]
    if tensorboard_available():
        # version="": the events go straight into RUN/logs/tensorboard, no version_N folders
        # (train.overwrite deletes RUN/logs; --resume adds an event file beside the old ones)
        loggers.append(
            TensorBoardLogger(
                run_dir / LOG_DIR, name=TENSORBOARD_DIR, version="", default_hp_metric=False
            )
        )
    elif rank == 0:
        log.info(TENSORBOARD_HINT)
    return loggers


def check_run_dir(cfg: Config, resume: bool) -> tuple[dict, Path | None]:
    """What the walk output and the run directory allow, checked before anything is written
    there: (the walk manifest, the checkpoint ``resume`` continues from or None).

    Raises:
        IncompleteOutputError: ``train.data`` is not a finished walk output.
        FileNotFoundError: ``resume`` without a checkpoint.
        RunExistsError: a plain run over a directory that holds a run.
    """
    from eges.training.export import EXPORT_DIR

    t = cfg.train
    manifest = schema.read_manifest(Path(t.data))  # refuses an unfinished walk output
    run_dir = Path(t.output).resolve()
    # an export whose replacement died between its two renames is put back before anything
    # looks at the run directory (safe from every rank at once)
    schema.recover_dir(run_dir / EXPORT_DIR)
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
        return manifest, ckpt
    if not t.overwrite:
        # an export counts as much as checkpoints: a run killed before its first checkpoint
        # leaves only the previous export, which a plain run must not replace unasked
        held = [p.name for p in (run_dir / "checkpoints", run_dir / EXPORT_DIR) if p.exists()]
        if held:
            raise RunExistsError(
                f"run directory {run_dir} already has {' and '.join(held)}; use "
                "--resume to continue it, --set train.overwrite=true to start "
                "over, or another --output"
            )
    return manifest, None


def train(cfg: Config, resume: bool = False, progress_bar: bool = True) -> dict:
    """Train, checkpoint and export one run.

    Args:
        cfg: resolved config; ``cfg.train.data`` is the walk output, ``cfg.train.output`` the run.
        resume: continue from the newest checkpoint of the run directory.
        progress_bar: Lightning's progress bar (off in ``eges evaluate``'s many trainings).

    Returns:
        Training statistics (on rank 0 also the export manifest under ``"export"``).
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.strategies import DDPStrategy
    from torch.utils.data import DataLoader

    from eges.training import fused
    from eges.training.dataset import WalkDataset
    from eges.training.export import export_run
    from eges.training.items import load_items
    from eges.training.memory import retain_freed_memory
    from eges.training.model import EGES
    from eges.training.module import EGESModule, RowSyncStrategy, ShardedEGESModule
    from eges.training.optim import resolve_optimizer
    from eges.training.sampling import AliasSampler, walk_frequencies
    from eges.training.sharded import ShardedEGES, quiet_torchrec

    t = cfg.train
    retain_freed_memory()  # the step's MB-sized temporaries stay in the heap between steps
    rank, local_world, world = _world()
    run_dir = Path(t.output).resolve()
    walk_dir = Path(t.data)
    manifest, ckpt = check_run_dir(cfg, resume)
    walks_digest = schema.manifest_digest(walk_dir)  # the walks this run trains on, as read now

    gpu = t.accelerator == "gpu" or (t.accelerator == "auto" and torch.cuda.is_available())
    backend = t.backend if t.backend != "auto" else ("nccl" if gpu else "gloo")

    # The dataset resumes mid-epoch itself (EGESModule.on_train_start skips the trained batches);
    # Lightning's warning that it cannot do so does not apply.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
    quiet_warnings()  # Lightning's LeafSpec deprecation and IterableDataset-length warnings
    pl.seed_everything(t.seed + rank, workers=True)  # each rank samples differently
    items = load_items(walk_dir, manifest)
    dataset = WalkDataset(
        walk_dir,
        t.batch_size,
        seed=t.seed,
        shuffle_buffer=t.shuffle_buffer,
        rank=rank,
        world_size=world,
    )
    counts = walk_frequencies([s.path for s in dataset.shards], items.num_items)
    t = dataclasses.replace(t, sharding=_resolve_sharding(t, items, local_world, gpu, ckpt))
    sharded = t.sharding == "sharded"
    optimizer = SHARDED_OPTIMIZER if sharded else resolve_optimizer(t.optimizer, items.num_items)
    if ckpt is not None:
        optimizer = _resumed_optimizer(ckpt, t.optimizer, optimizer)
    if sharded:
        quiet_torchrec()
        # the rows are updated inside the backward: "pre-optimisation state" does not exist
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
        log.info(
            "tables sharded by row over %d process(es) (train.sharding=sharded), %s",
            world,
            "row-wise Adagrad fused into the backward",
        )
    elif t.optimizer == "auto":
        log.info(
            "optimizer: %s (auto, %s items; dense Adam up to %s)",
            optimizer,
            f"{items.num_items:,}",
            f"{AUTO_SPARSE_ITEMS:,}",
        )
    _check_precision(optimizer, world, t.precision)
    kernel = _check_kernel(t, gpu) if not sharded else "torch"
    # config.yaml and the export keep the settings as given (the evaluation compares them to
    # reuse a run); the export's training section records the optimiser used
    t = dataclasses.replace(t, optimizer=optimizer)
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = (
        EGES(
            items.num_items,
            items.vocab_sizes,
            items.offsets,
            items.values,
            t.embedding_dim,
            t.mode,
            sparse=optimizer == "sparse_adam",
        )
        if not sharded
        else None
    )
    if model is not None:
        model.mark_trained_values(torch.from_numpy(counts))
        try:
            model.set_cold_weights(t.cold_weights, items.fields)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    pl.seed_everything(t.seed + rank, workers=True)
    loader = DataLoader(dataset, batch_size=None, num_workers=t.num_workers, pin_memory=gpu)
    sampler = AliasSampler(counts, t.ns_exponent)
    if sharded:
        module = ShardedEGESModule(
            lambda: ShardedEGES(
                items.num_items,
                items.vocab_sizes,
                items.offsets,
                items.values,
                t.embedding_dim,
                t.mode,
                lr=t.lr,
                seed=t.seed,
                device=torch.device("cuda", torch.cuda.current_device()) if gpu else "cpu",
            ),
            sampler,
            t,
            loader,
            run_dir / "checkpoints" / "tables",
        )
    else:
        module = EGESModule(model, sampler, t, loader, kernel)

    # buffers (side-info tables, the sampler's alias table) never change: do not re-broadcast
    # them from rank 0 every step; sparse_adam exchanges the gradients itself (RowAdam), and
    # sharded tables move their rows themselves (TorchRec)
    ddp = RowSyncStrategy if optimizer in ("sparse_adam", SHARDED_OPTIMIZER) else DDPStrategy
    strategy = ddp(process_group_backend=backend, broadcast_buffers=False) if world > 1 else "auto"
    callbacks = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="step-{step}",
            every_n_train_steps=t.checkpoint_every_n_steps,
            save_top_k=1,
            monitor="step",
            mode="max",
            auto_insert_metric_name=False,
        ),
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="epoch-{epoch}-step-{step}",
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            save_top_k=1,
            monitor="step",
            mode="max",
            auto_insert_metric_name=False,
        ),
        # the learning rate of every parameter group (lr-Adam, lr-RowAdam, ...) at each logged step
        LearningRateMonitor(logging_interval="step"),
    ]
    if progress_bar:
        callbacks.append(stderr_progress_bar())
    trainer = pl.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=local_world,
        num_nodes=world // local_world,
        strategy=strategy,
        max_epochs=t.epochs,
        max_steps=t.max_steps,
        precision=t.precision,
        callbacks=callbacks,
        logger=make_loggers(run_dir, rank, _checkpoint_step(ckpt) if ckpt else None),
        # a run shorter than the interval logs every epoch's batches still (Lightning would
        # log none of them, and warn so for every run of a small log)
        log_every_n_steps=max(1, min(t.log_every_n_steps, len(dataset))),
        default_root_dir=run_dir,
        enable_model_summary=rank == 0,
        enable_progress_bar=progress_bar,
        use_distributed_sampler=False,  # the dataset splits itself by (rank, worker)
    )
    if rank == 0:
        if not resume and t.overwrite:
            # start afresh: the previous run's checkpoints must never be resumed as this run's.
            # Its export stays published until export_run swaps the new one in, so a run that
            # fails or is killed leaves it complete and readable.
            for stale in ("checkpoints", LOG_DIR):
                shutil.rmtree(run_dir / stale, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / schema.CONFIG_FILE).write_text(cfg.to_yaml())
        log.info(
            "training %s on %d walks (%d batches per rank and epoch), %d process(es), %s",
            t.mode,
            dataset.total_walks,
            len(dataset),
            world,
            "GPU" if gpu else "CPU",
        )
    owns_group = not _group_open()
    start = time.perf_counter()
    c_steps_before = fused.steps_run
    try:
        trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)
    except SystemExit as exc:  # Lightning's answer to Ctrl-C (exit(1)) and to SIGTERM
        if trainer.interrupted:
            from pytorch_lightning.utilities.exceptions import SIGTERMException

            raise TrainingInterrupted(
                trainer.global_step,
                latest_checkpoint(run_dir),
                sigterm=isinstance(exc, SIGTERMException),
            ) from None
        raise
    seconds = time.perf_counter() - start
    shard_bytes = None
    if sharded:  # a collective: each rank's bytes
        shard_bytes = module.sharded.bytes_per_rank()
        (log.info if rank == 0 else log.debug)(
            "sharded tables per rank (bytes of tables + optimiser state): %s",
            ", ".join(f"{b['tables'] + b['optimizer']:,}" for b in shard_bytes),
        )
    stats = {
        "steps": trainer.global_step,
        "epochs_completed": trainer.current_epoch,
        "pairs_per_rank": module.pairs_seen,
        "train_seconds": round(seconds, 3),
        "processes": world,
        "device": "gpu" if gpu else "cpu",
        # this rank's peak of allocated GPU memory (tensors; the CUDA context is extra)
        "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if gpu else None,
        "optimizer": optimizer,
        # the form of the step the ranks agreed on, and the C steps this rank ran
        "kernel": module.kernel,
        "c_steps": fused.steps_run - c_steps_before,
        "resumed_from": ckpt.name if ckpt else None,
        "sharding": t.sharding,
        # sharded: each rank's bytes of tables and optimiser state
        "shard_bytes": shard_bytes,
        # this rank's loss at the start and the end, and a constant score's
        "loss": module.loss_summary(),
    }
    if sharded:
        from eges.training.parts import export_partitioned

        # every rank writes its own rows (a collective, before the group goes)
        manifest = export_partitioned(
            module.sharded,
            items,
            counts,
            cfg,
            run_dir,
            extra={"training": dict(stats)},
            walks_digest=walks_digest,
            bytes_per_rank=shard_bytes,
        )
        if manifest is not None:
            stats["export"] = manifest
        # TorchRec's modules and the fused optimiser (which Lightning keeps, with its scheduler)
        # hold the process group: a group destroyed while they live keeps its gloo threads
        # until the interpreter exits, which then aborts now and then ("terminate called
        # without an active exception": 2 runs of 20)
        module.sharded = None
        trainer.strategy.optimizers = []
        trainer.strategy.lr_scheduler_configs = []
        trainer.strategy._lightning_optimizers = []
        gc.collect()
        if module.own_group:
            torch.distributed.destroy_process_group()
    if owns_group and _group_open():
        # Lightning leaves a gloo group open at exit; its worker threads may still be freeing
        # the last collective's tensors, which needs the GIL, and a thread that asks for it
        # while the interpreter shuts down aborts the process ("terminate called without an
        # active exception", SIGABRT). Destroying the group joins those threads now (measured:
        # 9 -> 6 threads per rank). Only after a successful fit: after a failure a collective
        # may still wait for a lost peer, and destroying would wait for gloo's timeout.
        torch.distributed.destroy_process_group()
    if trainer.is_global_zero and not sharded:
        stats["export"] = export_run(
            model,
            items,
            counts,
            cfg,
            run_dir,
            extra={"training": dict(stats)},
            walks_digest=walks_digest,
        )
    return stats


# how long a process other than its node's first waits for torchrun to stop it (seconds)
PEER_ERROR_GRACE = 15.0


def _fail_once_per_node(exc: Exception) -> int:
    """Report an error found before training once per node, not once per process.

    Every process of a node reads the same config and files, so all find the same error; the
    node's first process says it. The others must not exit first: torchrun stops the whole group
    as soon as one process ends, which could stop the first before it prints (seen in CI). They
    wait to be stopped, and say the error themselves if they are not (an error of theirs alone).
    """
    if int(os.environ.get("LOCAL_RANK", 0)) != 0:
        time.sleep(PEER_ERROR_GRACE)
    return fail(exc)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("train", __doc__)
    add_config_arguments(p)
    p.add_argument("--data", help="walk job output directory (overrides train.data)")
    p.add_argument("--output", help="run directory (overrides train.output)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument(
        "--nproc-per-node",
        type=int,
        metavar="N",
        help="start N training processes on this machine (DDP), as torchrun --standalone "
        "--nproc-per-node=N eges/train.py does, but a process that fails ends the run with its "
        "own error alone, without torchrun's report; several machines: torchrun itself",
    )
    p.add_argument(
        "--log-file",
        help=f"where every library's log lines go (default: "
        f"RUN/{LOG_FILE}, appended to; rank 0 only); the screen shows this "
        "project's lines and warnings",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.nproc_per_node is not None:
        return launch(args.nproc_per_node, argv)
    try:
        return _main(args)
    finally:
        close_log_file()


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc-per-node N`` (or ``=N``, or an abbreviation argparse takes
    for it: ``--nproc 2``; no other option of the trainer starts with ``--n``)."""
    out, skip = [], False
    for arg in argv:
        name, has_value = arg.split("=", 1)[0], "=" in arg
        if skip:
            skip = False
        elif len(name) >= 3 and "--nproc-per-node".startswith(name):
            skip = not has_value
        else:
            out.append(arg)
    return out


def _cause_order(failure) -> tuple[int, int]:
    """Sort key of a failed process of torchrun's, the likeliest cause of the failure first.

    torchrun's failure times are whole seconds, so the time alone does not tell which process
    ended first. A handled error (2) or an interrupt (130) is its own cause; a process ended by
    a signal other than torchrun's SIGTERM (SIGKILL by the OOM killer, SIGSEGV) cannot be the
    consequence of another's failure; a process that crashed (another status) may be: its peer's
    death breaks its collective; SIGTERM is how torchrun stops the rest (a training process
    that catches it ends with 143).
    """
    code = failure.exitcode
    stopped = code in (-signal.SIGTERM, 128 + signal.SIGTERM)  # (143: Lightning caught it)
    if code in (2, 130):
        group = 0
    elif stopped:
        group = 3
    elif code < 0:
        group = 1
    else:
        group = 2
    return group, failure.timestamp


def launch(nproc: int, argv: list[str]) -> int:
    """``eges train --nproc-per-node N``: torchrun's launcher (``torch.distributed.run``, one
    node, a rendezvous on a free local port) run in this process, so that a failed run ends as
    any other command does: the failing process's error (printed by it, once per node) and its
    exit status, not torchrun's traceback and report of every process.

    Returns:
        0, or the exit status of the process that failed first (130 after Ctrl-C; 128 + n for
        a process ended by signal n).
    """
    if nproc < 1:
        return fail(f"--nproc-per-node must be at least 1, not {nproc}")
    if "LOCAL_RANK" in os.environ:
        return fail("--nproc-per-node starts the processes itself: not under torchrun")
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    setup_logging()
    # torchrun's own lines (its rendezvous, the processes it stops) are details of a failure
    # that the failing process explains itself
    # (each of torchrun's loggers has a level of its own: set theirs, not a parent's)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if nproc > 1:  # torchrun's default for several processes
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    launcher_args = torchrun.parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", str(Path(__file__).resolve())]
        + _without_nproc(argv)
    )
    try:
        torchrun.run(launcher_args)
    except ChildFailedError as exc:
        rank, failure = min(exc.failures.items(), key=lambda rf: (_cause_order(rf[1]), rf[0]))
        status = failure.exitcode
        if status in (2, 130):  # a handled error or an interrupt: the process said what happened
            return status
        if status < 0:
            print(f"error: training process {rank} was ended by signal {-status}", file=sys.stderr)
            return 128 - status
        print(
            f"error: training process {rank} failed with exit status {status} (its output above)",
            file=sys.stderr,
        )
        return status
    except SignalException as exc:  # Ctrl-C (or a kill) of the launcher: the processes got it
        return 128 + int(exc.sigval)
    return 0


def _main(args: argparse.Namespace) -> int:
    setup_logging()
    try:
        cfg = config_from_args(args, {"train.data": args.data, "train.output": args.output})
        check_run_dir(cfg, args.resume)  # a refused run leaves no train.log (nor directory)
        if _world()[0] == 0:  # one file: the other ranks' lines are rank 0's
            setup_logging(args.log_file or Path(cfg.train.output) / LOG_FILE)
        else:  # nor the screen twice: the other ranks say only warnings and errors
            logging.getLogger("eges").setLevel(logging.WARNING)
        stats = train(cfg, resume=args.resume)
    except (ConfigError, schema.IncompleteOutputError, RunExistsError, FileNotFoundError) as exc:
        return _fail_once_per_node(exc)
    except TrainingInterrupted as exc:
        if _world()[0] == 0:  # one message, not one per process; below the progress bar
            print(f"\n{exc}", file=sys.stderr)
        return exc.status  # the shell's status for a process stopped by that signal
    except OSError as exc:  # unwritable run directory, disk full (checkpoint or export)
        return fail(
            f"cannot write the run {args.output or 'directory'}: {exc}; the export is "
            "only published when complete, and --resume skips an incomplete checkpoint"
        )
    if "export" in stats:
        e = stats["export"]["counts"]
        pairs = stats["pairs_per_rank"] * stats["processes"]
        print(
            f"trained {stats['steps']} steps in {stats['train_seconds']:.1f} s on "
            f"{stats['processes']} {stats['device']} process(es): ~{pairs:,} pairs "
            f"({pairs / max(stats['train_seconds'], 1e-9):,.0f} pairs/s incl. start-up)\n"
            f"exported {e['vectors']:,} vectors ({e['warm']:,} warm, {e['cold']:,} cold) to "
            f"{Path(cfg.train.output) / 'export'}"
        )
        line, warning = learning_diagnostics(stats["loss"])
        print(line)
        if warning:
            log.warning(warning)
        health = stats["export"].get("health", {})
        cosines = [
            f"{name} {g['mean_pairwise_cosine']:.3f}"
            for name, g in health.items()
            if name != "collapsed" and g["mean_pairwise_cosine"] is not None
        ]
        if cosines:
            print(
                "mean pairwise cosine (near 1: collapsed): "
                + ", ".join(cosines)
                + (
                    f"  -- COLLAPSED: {', '.join(health['collapsed'])}"
                    if health.get("collapsed")
                    else ""
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
