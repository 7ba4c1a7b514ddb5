"""New items' field weights (train.cold_weights): the weighted mean, the export, the refusals."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from eges import schema
from eges.config import Config, ConfigError, TrainConfig
from eges.serving.embed import Embedder
from eges.train import train
from eges.training.export import EXPORT_DIR, load_model, read_embeddings
from tests.train.test_model import make
from tests.train.walkdir import make_complete_walk_dir


def test_cold_start_weighs_each_field_by_its_cold_weight():
    model = make()
    items = [
        [torch.tensor([2]), torch.tensor([1, 4])],
        [torch.tensor([], dtype=torch.long), torch.tensor([3])],
    ]
    with torch.no_grad():
        equal = model.cold_start(items)
        model.cold_weights.copy_(torch.tensor([0.8, 0.2]))
        got = model.cold_start(items)
    field0, field1 = model.side[0].weight[2], model.side[1].weight[[1, 4]].mean(0)
    torch.testing.assert_close(equal[0], (field0 + field1) / 2)
    torch.testing.assert_close(got[0], 0.8 * field0 + 0.2 * field1)
    # a field without a value is left out and the others' weights renormalised
    torch.testing.assert_close(got[1], model.side[1].weight[3])
    # the catalogue variant uses the same weights (item 4: field 0 {3}, field 1 {1, 4})
    with torch.no_grad():
        torch.testing.assert_close(
            model.cold_start_items(torch.tensor([4]))[0],
            0.8 * model.side[0].weight[3] + 0.2 * model.side[1].weight[[1, 4]].mean(0),
        )


def train_run(walk_dir, out, cold_weights=None, **settings):
    cfg = TrainConfig(
        data=str(walk_dir),
        output=str(out),
        embedding_dim=8,
        batch_size=8,
        window=2,
        num_negatives=2,
        cold_weights=cold_weights,
        **settings,
    )
    train(Config(train=cfg), progress_bar=False)
    return out


def test_the_export_keeps_and_serves_the_configured_weights(tmp_path):
    walk_dir = make_complete_walk_dir(tmp_path / "walks", walks=60, cold_items=4)
    equal = train_run(walk_dir, tmp_path / "equal")
    weighted = train_run(walk_dir, tmp_path / "weighted", {"genre": 3.0})

    def weights(run):
        return schema.read_manifest(run / EXPORT_DIR, kind=None)["cold_weights"]

    assert weights(equal) == {"genre": 1.0, "year": 1.0}
    got = weights(weighted)
    assert got == {"genre": 3.0, "year": 1.0}
    model, _ = load_model(weighted)
    assert model.cold_weights.tolist() == pytest.approx(list(got.values()))
    # the exported cold rows and eges embed's vectors are the weighted mean
    emb, vectors = read_embeddings(weighted)
    cold = emb["cold"].to_numpy()
    assert cold.sum() == 4
    ids = torch.from_numpy(emb["item_idx"].to_numpy()[cold]).long()
    side = [model.side[i].weight for i in range(2)]
    items = pq_items(walk_dir)
    w = torch.tensor(list(got.values()))
    for row, idx in zip(vectors[cold], ids.tolist()):
        genre, year = items[idx]
        parts = [(w[0], side[0][genre].mean(0))] + ([(w[1], side[1][year].mean(0))] if year else [])
        expected = sum(a * v for a, v in parts) / sum(a for a, _ in parts)
        np.testing.assert_allclose(row, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    embedder = Embedder(weighted)
    new, _ = embedder.embed([{"genre": ["Drama", "Comedy"], "year": ["1990"]}])
    expected = (w[0] * side[0][[1, 2]].mean(0) + w[1] * side[1][1]) / w.sum()
    plain = (side[0][[1, 2]].mean(0) + side[1][1]) / 2
    assert not np.allclose(new[0].numpy(), plain.detach().numpy())
    np.testing.assert_allclose(new[0].numpy(), expected.detach().numpy(), rtol=1e-5, atol=1e-6)


def pq_items(walk_dir):
    """item_idx -> (genre values, year values) of a walk output's item table."""
    table = pq.read_table(walk_dir / schema.ITEMS_DIR).to_pylist()
    return {r["item_idx"]: (r["genre"], r["year"]) for r in table}


def test_weights_for_fields_the_walk_output_lacks_or_sharded_tables_are_refused(tmp_path):
    walk_dir = make_complete_walk_dir(tmp_path / "walks", walks=20, cold_items=0)
    with pytest.raises(ConfigError, match="names tags, not side-info field"):
        train_run(walk_dir, tmp_path / "a", {"tags": 0.5})
    # BGE has no side-info tables: the weights are accepted and weigh nothing
    bge = train_run(walk_dir, tmp_path / "bge", {"genre": 2.0}, mode="bge")
    assert schema.read_manifest(bge / EXPORT_DIR, kind=None)["cold_weights"] == {}
    with pytest.raises(ConfigError, match="replicated tables only"):
        train_run(walk_dir, tmp_path / "b", {"genre": 2.0}, sharding="sharded")
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ConfigError, match="cold_weights"):
            TrainConfig(cold_weights={"genre": bad})
