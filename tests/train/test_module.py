"""The LightningModule wiring: the dataset learns the epoch from Lightning, so every epoch is a
new shuffle and covers every walk once."""

import os
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from eges.config import TrainConfig
from eges.training.dataset import WalkDataset
from eges.training.model import EGES
from eges.training.module import EGESModule
from eges.training.sampling import AliasSampler
from tests.train.walkdir import make_walk_dir


class Recorder(pl.Callback):
    def __init__(self):
        self.firsts: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.firsts.setdefault(trainer.current_epoch, []).extend(batch[:, 0].tolist())


def test_each_epoch_is_a_new_shuffle_of_all_walks(tmp_path):
    walk_dir = make_walk_dir(tmp_path / "walks", [30, 50, 20], num_items=120)
    empty = [torch.zeros(122, dtype=torch.long)]
    model = EGES(120, [1], empty, [torch.zeros(0, dtype=torch.long)], embedding_dim=4)
    cfg = TrainConfig(batch_size=16, window=2, num_negatives=2, epochs=3)
    module = EGESModule(model, AliasSampler(np.ones(121)), cfg)
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    dataset = WalkDataset(walk_dir, 16, seed=5, shuffle_buffer=32)
    module.loader = DataLoader(dataset, batch_size=None, num_workers=2)
    trainer.fit(module)
    epochs = [recorder.firsts[e] for e in range(3)]
    assert all(sorted(e) == list(range(1, 101)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    assert trainer.global_step == 3 * len(dataset)


def fit(walk_dir, tmp_path, *, max_steps=-1, epochs=2, ckpt_path=None, every=None):
    empty = [torch.zeros(122, dtype=torch.long)]
    model = EGES(120, [1], empty, [torch.zeros(0, dtype=torch.long)], embedding_dim=4)
    cfg = TrainConfig(batch_size=8, window=2, num_negatives=2, epochs=epochs)
    recorder = Recorder()
    callbacks = [recorder]
    if every:
        callbacks.append(
            pl.callbacks.ModelCheckpoint(
                dirpath=tmp_path / "ckpt",
                filename="step-{step}",
                every_n_train_steps=every,
                save_top_k=-1,
                auto_insert_metric_name=False,
            )
        )
    trainer = pl.Trainer(
        max_epochs=epochs,
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=bool(every),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    dataset = WalkDataset(walk_dir, 8, seed=5, shuffle_buffer=16)
    loader = DataLoader(dataset, batch_size=None, num_workers=3)
    trainer.fit(EGESModule(model, AliasSampler(np.ones(121)), cfg, loader), ckpt_path=ckpt_path)
    return recorder.firsts, len(dataset)


@pytest.mark.parametrize(
    "stop", [5, 13, 20]
)  # mid-epoch 0, mid-epoch 1, end of epoch 1 (13 = 1 epoch)
def test_resume_with_workers_trains_each_remaining_batch_once(tmp_path, stop):
    walk_dir = make_walk_dir(tmp_path / "walks", [30, 50, 20], num_items=120)
    full, per_epoch = fit(walk_dir, tmp_path / "full", epochs=2)
    assert per_epoch == 13
    fit(walk_dir, tmp_path, max_steps=stop, every=1)
    resumed, _ = fit(
        walk_dir,
        tmp_path / "resumed",
        epochs=2,
        ckpt_path=str(tmp_path / "ckpt" / f"step-{stop}.ckpt"),
    )
    done_epoch, done_batches = divmod(stop, per_epoch)
    for epoch in range(done_epoch, 2):
        expected = full[epoch][done_batches * 8 :] if epoch == done_epoch else full[epoch]
        assert sorted(resumed.get(epoch, [])) == sorted(expected), epoch


class LrRecorder(pl.Callback):
    def __init__(self):
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_linear_schedule_decays_the_learning_rate_over_all_steps(tmp_path, schedule):
    walk_dir = make_walk_dir(tmp_path / "walks", [30, 50, 20], num_items=120)
    empty = [torch.zeros(122, dtype=torch.long)]
    model = EGES(120, [1], empty, [torch.zeros(0, dtype=torch.long)], embedding_dim=4)
    cfg = TrainConfig(
        batch_size=8, window=2, num_negatives=2, epochs=2, lr=0.05, lr_schedule=schedule
    )
    recorder = LrRecorder()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    loader = DataLoader(WalkDataset(walk_dir, 8, seed=5, shuffle_buffer=16), batch_size=None)
    trainer.fit(EGESModule(model, AliasSampler(np.ones(121)), cfg, loader))
    total = trainer.global_step
    assert total == 26 and len(recorder.lrs) == total
    expected = [0.05 * (1 - i / total) if schedule == "linear" else 0.05 for i in range(total)]
    np.testing.assert_allclose(recorder.lrs, expected, rtol=1e-6)


def test_sum_reduction_returns_the_loss_summed_over_pairs():
    empty = [torch.zeros(12, dtype=torch.long)]
    model = EGES(10, [1], empty, [torch.zeros(0, dtype=torch.long)], embedding_dim=4)
    with torch.no_grad():
        model.context.weight.normal_()
    walks = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]])
    losses = {}
    for reduction in ("mean", "sum"):
        cfg = TrainConfig(window=2, num_negatives=2, loss_reduction=reduction)
        module = EGESModule(model, AliasSampler(np.ones(11)), cfg)
        module.log = lambda *a, **k: None  # no trainer attached
        torch.manual_seed(0)  # the same negatives
        losses[reduction] = module.training_step(walks, 0)
    pairs = 2 * (3 + 2) + 2 * (2 + 1)
    torch.testing.assert_close(losses["sum"], losses["mean"] * pairs)


def test_attention_lr_gives_the_attention_rows_their_own_learning_rate():
    offsets = [torch.tensor([0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2], dtype=torch.long)]
    model = EGES(10, [2], offsets, [torch.tensor([1, 2])], embedding_dim=4)
    cfg = TrainConfig(lr=0.01, attention_lr=0.5, lr_schedule="constant")
    opt = EGESModule(model, AliasSampler(np.ones(11)), cfg).configure_optimizers()
    groups = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert groups[id(model.attention.weight)] == 0.5
    assert {groups[id(p)] for n, p in model.named_parameters() if "attention" not in n} == {0.01}
    assert len(groups) == len(list(model.parameters()))  # every parameter exactly once


CASES = [  # (what each rank can run, train.kernel, what each rank must train with)
    (["c", "c"], "auto", ["c", "c"]),
    (["c", "torch"], "auto", ["torch", "torch"]),  # one rank without the C step: nobody
    (["torch", "torch"], "auto", ["torch", "torch"]),
    (["c", "torch"], "c", ["error", "error"]),  # asked for c: every rank stops
]


def _agree(rank: int, out: str) -> None:
    import torch.distributed as dist

    from eges.training.module import agree_on_kernel, check_same_sharding

    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    results = []
    for local, setting, _ in CASES:
        try:
            results.append(agree_on_kernel(local[rank], setting))
        except RuntimeError as e:
            results.append(f"error: {e}")
    # train.sharding=auto decided on each rank: the same choice passes, different ones stop all
    for sharded in ([True, True], [False, False], [True, False]):
        try:
            check_same_sharding(sharded[rank])
            results.append("same")
        except RuntimeError as e:
            results.append(f"error: {e}")
    (Path(out) / f"rank{rank}").write_text("\n".join(results))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # as tests/train/test_optim.py: no interpreter shutdown under live gloo threads


def test_the_ranks_agree_on_one_form_of_the_step(tmp_path):
    """The C step and the PyTorch form differ in rounding: ranks that ran different forms
    would drift apart (14,498 of 38,400 elements differed after 20 RowAdam steps)."""
    mp.spawn(_agree, args=(str(tmp_path),), nprocs=2, join=True)
    got = [(tmp_path / f"rank{r}").read_text().splitlines() for r in (0, 1)]
    for case, (_, _, expected) in enumerate(CASES):
        assert [got[r][case].split(":")[0] for r in (0, 1)] == expected, CASES[case]
    assert all("rank(s) 1 cannot run the C step" in got[r][len(CASES) - 1] for r in (0, 1))
    for r in (0, 1):
        assert got[r][len(CASES) :][:2] == ["same", "same"]
        assert got[r][-1].startswith(
            "error: train.sharding=auto chose sharded tables on rank(s) [0]"
        )
