"""TensorBoard: the real trainer (eges.train.train, one process) on a synthetic walk output logs
loss, pairs/s and the learning rate to RUN/logs/tensorboard, read back with TensorBoard's event
reader; the export's embedding-projector files are read back with the projector plugin's own
parsers. Also: without the tensorboard package the trainer still runs (CSV only, one info line),
and the known-harmless Lightning warnings are filtered, by message only."""

import logging
import sys
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("tensorboard")  # the `tensorboard` extra (installed by make install / CI)

from eges.config import Config, TrainConfig  # noqa: E402
from eges.quiet import HARMLESS_WARNINGS, quiet_warnings  # noqa: E402
from eges.training.export import EXPORT_DIR, PROJECTOR_DIR, write_projector  # noqa: E402
from tests.train.walkdir import GENRES, YEARS, make_complete_walk_dir  # noqa: E402

WALKS, COLD = 60, 5
STEPS = 16  # 2 epochs of 8 batches (60 walks, batch_size 8)


def tiny_config(walk_dir, run_dir) -> Config:
    return Config(
        train=TrainConfig(
            data=str(walk_dir),
            output=str(run_dir),
            embedding_dim=8,
            batch_size=8,
            epochs=2,
            window=2,
            num_negatives=2,
            log_every_n_steps=1,
            checkpoint_every_n_steps=1000,
        )
    )


def harmless(w: warnings.WarningMessage) -> bool:
    return any(str(w.message).startswith(m) for m, _, _ in HARMLESS_WARNINGS)


@pytest.fixture(scope="module")
def walk_dir(tmp_path_factory):
    return make_complete_walk_dir(tmp_path_factory.mktemp("tb") / "walks", WALKS, COLD)


@pytest.fixture(scope="module")
def trained(walk_dir, tmp_path_factory):
    """One real training; every warning it raises is recorded (none hidden by earlier ones)."""
    from eges.train import train

    run_dir = tmp_path_factory.mktemp("tb-run") / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = train(tiny_config(walk_dir, run_dir))
    return run_dir, stats, caught


def test_event_file_has_loss_pairs_per_s_and_the_decaying_learning_rate(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, stats, _ = trained
    assert stats["steps"] == STEPS
    tb_dir = run_dir / "logs" / "tensorboard"
    assert list(tb_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "logs" / "metrics.csv").is_file()  # the CSV log is kept beside it
    events = EventAccumulator(str(tb_dir))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss", "pairs_per_s"} <= set(tags), tags
    lr_tags = [t for t in tags if t.startswith("lr-")]
    assert lr_tags, tags
    loss = events.Scalars("loss")
    assert len(loss) == STEPS  # log_every_n_steps=1
    assert all(np.isfinite(e.value) and e.value > 0 for e in loss)
    assert all(e.value > 0 for e in events.Scalars("pairs_per_s"))
    lr = [e.value for e in events.Scalars(lr_tags[0])]
    assert lr[0] == pytest.approx(0.01)  # train.lr, decayed linearly (train.lr_schedule)
    assert all(b < a for a, b in zip(lr, lr[1:])) and lr[-1] < 0.002


def test_projector_files_match_the_export(trained):
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_plugin
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    run_dir, stats, _ = trained
    export = run_dir / EXPORT_DIR
    config_path = export / PROJECTOR_DIR / "projector_config.pbtxt"
    config = text_format.Parse(config_path.read_text(), ProjectorConfig())
    assert len(config.embeddings) == 1
    emb = config.embeddings[0]
    # resolved as TensorBoard resolves them: relative to the config, inside its folder
    tensor_path = projector_plugin._rel_to_abs_asset_path(emb.tensor_path, str(config_path))
    metadata_path = projector_plugin._rel_to_abs_asset_path(emb.metadata_path, str(config_path))
    vectors = projector_plugin._read_tensor_tsv_file(tensor_path)

    table = pq.read_table(export / "embeddings.parquet").to_pandas()
    manifest = stats["export"]
    assert len(table) == manifest["counts"]["vectors"] == WALKS + COLD
    assert vectors.shape == (len(table), 8)
    np.testing.assert_allclose(vectors, np.stack(table["vector"]), rtol=1e-6)

    lines = open(metadata_path, encoding="utf-8").read().splitlines()
    header, rows = lines[0].split("\t"), [line.split("\t") for line in lines[1:]]
    assert header == ["item_id", "cold", "genre", "year"]
    assert len(rows) == len(vectors) and all(len(r) == len(header) for r in rows)
    assert [r[0] for r in rows] == table["item_id"].tolist()
    assert [r[1] == "true" for r in rows] == table["cold"].tolist()
    assert sum(r[1] == "true" for r in rows) == COLD
    for r in rows:  # side information as make_complete_walk_dir wrote it
        i = int(r[0][1:]) - 1
        genres = [GENRES[i % 3]] + ([GENRES[(i + 1) % 3]] if i % 2 else [])
        assert r[2] == "|".join(genres), r
        assert r[3] == ("" if i % 7 == 0 else YEARS[i % 4]), r
    assert manifest["projector"] == {
        "path": PROJECTOR_DIR,
        "rows": len(rows),
        "vectors": len(rows),
        "sampled": False,
        "metadata_columns": header,
    }


def test_projector_is_a_seeded_sample_above_the_cap(trained, walk_dir, tmp_path):
    from eges.schema import VOCAB_SCHEMA, read_table
    from eges.training.items import load_items

    run_dir, _, _ = trained
    table = pq.read_table(run_dir / EXPORT_DIR / "embeddings.parquet").to_pandas()
    items = load_items(walk_dir)
    vocabs = {f: read_table(walk_dir / "vocab" / f, VOCAB_SCHEMA) for f in items.fields}
    vectors = np.stack(table["vector"]).astype(np.float32)
    args = (
        table["item_idx"].to_numpy(),
        table["item_id"].tolist(),
        vectors,
        table["cold"].to_numpy(),
        items,
        vocabs,
    )
    entry = write_projector(tmp_path / "a", *args, seed=3, max_rows=10)
    again = write_projector(tmp_path / "b", *args, seed=3, max_rows=10)
    assert entry["rows"] == 10 and entry["vectors"] == len(table) and entry["sampled"]
    assert "sample" in entry["note"]
    assert (tmp_path / "a" / "metadata.tsv").read_text() == (
        tmp_path / "b" / "metadata.tsv"
    ).read_text() and entry == again
    ids = [
        line.split("\t")[0]
        for line in (tmp_path / "a" / "metadata.tsv").read_text().splitlines()[1:]
    ]
    rows = table.set_index("item_id").loc[ids]
    got = np.loadtxt(tmp_path / "a" / "vectors.tsv", delimiter="\t", dtype=np.float32)
    np.testing.assert_allclose(got, np.stack(rows["vector"]), rtol=1e-6)
    assert ids == sorted(ids, key=lambda s: int(s[1:]))  # item order kept


def test_training_shows_none_of_the_filtered_warnings(trained):
    _, _, caught = trained
    assert not [str(w.message) for w in caught if harmless(w)]


def test_filters_match_the_library_messages_and_nothing_else():
    """Lightning and torch really emit these messages here (so the training test above checks
    something), the filters remove them, and other warnings of the same category still show."""
    import pytorch_lightning as pl
    from pytorch_lightning.utilities._pytree import _tree_flatten
    from pytorch_lightning.utilities.data import has_len_all_ranks
    from torch.utils.data import DataLoader, IterableDataset

    class Walks(IterableDataset):  # an IterableDataset with __len__, as the trainer's
        def __iter__(self):
            return iter([])

        def __len__(self):
            return 3

    strategy = pl.strategies.SingleDeviceStrategy(torch.device("cpu"))

    def emit():
        _tree_flatten(torch.zeros(1))
        has_len_all_ranks(DataLoader(Walks(), batch_size=None), strategy)
        # the trainer's DDP setting (a real process group of one gloo process)
        torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2), broadcast_buffers=False)
        warnings.warn("another future change", FutureWarning)
        warnings.warn("another user warning", UserWarning)

    dist = torch.distributed
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        check_filters(emit)
    finally:
        dist.destroy_process_group()


def check_filters(emit) -> None:
    """Every filtered message is emitted once by ``emit``; the filters remove those alone."""
    with warnings.catch_warnings(record=True) as plain:
        warnings.simplefilter("always")
        emit()
    assert sum(harmless(w) for w in plain) == len(HARMLESS_WARNINGS), [
        str(w.message) for w in plain
    ]
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        quiet_warnings()
        emit()
    assert sorted(str(w.message) for w in quiet) == [
        "another future change",
        "another user warning",
    ]


def test_without_tensorboard_the_trainer_logs_csv_and_says_how_to_get_it(
    walk_dir, tmp_path, monkeypatch, caplog
):
    from eges.train import TENSORBOARD_HINT, train

    # the package made unimportable for this test (None in sys.modules: import fails)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="eges.train"):
        stats = train(tiny_config(walk_dir, run_dir))
    assert stats["steps"] == STEPS and stats["export"]["counts"]["vectors"] == WALKS + COLD
    assert not (run_dir / "logs" / "tensorboard").exists()
    csv = (run_dir / "logs" / "metrics.csv").read_text().splitlines()
    assert "loss" in csv[0] and "lr-" in csv[0] and len(csv) > STEPS
    hints = [r.getMessage() for r in caplog.records if r.getMessage() == TENSORBOARD_HINT]
    assert len(hints) == 1 and "[tensorboard]" in hints[0]
    assert (run_dir / EXPORT_DIR / PROJECTOR_DIR / "vectors.tsv").is_file()  # written anyway


def test_projector_metadata_has_the_display_names_when_the_walk_output_has_them(
    trained, walk_dir, tmp_path
):
    from eges.schema import VOCAB_SCHEMA, read_table
    from eges.training.items import load_items

    run_dir, _, _ = trained
    table = pq.read_table(run_dir / EXPORT_DIR / "embeddings.parquet").to_pandas()
    items = load_items(walk_dir)
    vocabs = {f: read_table(walk_dir / "vocab" / f, VOCAB_SCHEMA) for f in items.fields}
    names = {i: f"Title\t{i}" for i in table["item_id"][::2]}  # a tab inside: made a space
    entry = write_projector(
        tmp_path / "p",
        table["item_idx"].to_numpy(),
        table["item_id"].tolist(),
        np.stack(table["vector"]),
        table["cold"].to_numpy(),
        items,
        vocabs,
        names=names,
    )
    lines = (tmp_path / "p" / "metadata.tsv").read_text().splitlines()
    assert (
        lines[0].split("\t")
        == entry["metadata_columns"]
        == ["item_id", "name", "cold", "genre", "year"]
    )
    for line in lines[1:]:
        cells = line.split("\t")
        assert cells[1] == (f"Title {cells[0]}" if cells[0] in names else "")
