"""The LightningModule wiring: the dataset learns the epoch from Lightning, so every epoch is a
new shuffle and covers every walk once."""

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from eges.config import TrainConfig
from eges.data.dataset import WalkDataset
from eges.data.sampling import AliasSampler
from eges.model import EGES
from eges.module import EGESModule
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
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[recorder])
    dataset = WalkDataset(walk_dir, 16, seed=5, shuffle_buffer=32)
    trainer.fit(module, train_dataloaders=DataLoader(dataset, batch_size=None))
    epochs = [recorder.firsts[e] for e in range(3)]
    assert all(sorted(e) == list(range(1, 101)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    assert trainer.global_step == 3 * len(dataset)
