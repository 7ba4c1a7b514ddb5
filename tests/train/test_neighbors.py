"""The item-to-item neighbour table: exact search against a brute-force reference, filters,
block-size invariance, the approximate index, and argument errors."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from eges import schema
from eges.export import EXPORT_DIR, RUN_FORMAT
from eges.neighbors import build_table, exact_topk, hnsw_topk, prepare, recall_at_k


def brute(x: np.ndarray, k: int) -> np.ndarray:
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)


@pytest.mark.parametrize("block_size", [1, 7, 300, 1000])
def test_exact_equals_brute_force_for_any_block_size(vectors, block_size):
    x = prepare(vectors, "cosine")
    idx, scores = exact_topk(x, x, 10, block_size=block_size, self_index=torch.arange(300))
    unit = x.numpy()
    np.testing.assert_array_equal(idx.numpy(), brute(unit, 10))
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(unit @ unit.T, idx.numpy(), 1),
                               rtol=1e-5)


def test_dot_metric_does_not_normalise(vectors):
    x = prepare(vectors, "dot")
    idx, _ = exact_topk(x, x, 5, self_index=torch.arange(300))
    np.testing.assert_array_equal(idx.numpy(), brute(vectors, 5))
    with pytest.raises(ValueError, match="metric"):
        prepare(vectors, "l2")


def test_filters_exclude_items_and_require_a_shared_value(vectors):
    x = prepare(vectors, "cosine")
    allowed = torch.ones(300, dtype=torch.bool)
    allowed[::3] = False
    idx, _ = exact_topk(x, x, 10, self_index=torch.arange(300), allowed=allowed)
    assert allowed[idx].all()
    groups = torch.zeros(300, 4)
    groups[torch.arange(300), torch.arange(300) % 4] = 1  # item i has value i % 4
    idx, scores = exact_topk(x, x, 10, self_index=torch.arange(300), groups=groups,
                             query_groups=groups)
    assert ((idx % 4) == (torch.arange(300) % 4)[:, None]).all()


def test_recall_at_k_by_hand():
    assert recall_at_k(np.array([[1, 2, 3], [4, 5, 6]]), np.array([[1, 2, 7], [6, 5, 4]])) \
        == pytest.approx((2 / 3 + 1) / 2)


def test_hnsw_excludes_self_and_its_recall_is_measured(vectors):
    x = prepare(vectors, "cosine").numpy()
    idx, scores, _ = hnsw_topk(x, 10)
    assert idx.shape == (300, 10)
    assert not (idx == np.arange(300)[:, None]).any()
    r = recall_at_k(idx, brute(x, 10))
    assert 0.0 <= r <= 1.0


def make_run(root, vectors: np.ndarray):
    export = root / EXPORT_DIR
    export.mkdir(parents=True)
    n, d = vectors.shape
    pq.write_table(pa.table({
        "item_idx": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "item_id": pa.array([f"i{i}" for i in range(n)]),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), d)
        .cast(pa.list_(pa.float32())),
        "cold": pa.array([False] * n),
    }), export / "embeddings.parquet")
    schema.write_manifest(export, {"format": RUN_FORMAT, "walks": str(root / "walks")})
    return root


def test_table_matches_exact_search_and_filters(vectors, tmp_path):
    run = make_run(tmp_path / "run", vectors)
    m = build_table(run, 5)
    table = pq.read_table(run / "neighbors" / "neighbors.parquet")
    schema.check_schema(table.schema, pa.schema([("item_id", pa.string()),
                                                 ("neighbor_id", pa.string()),
                                                 ("rank", pa.int32()), ("score", pa.float32())]),
                        "neighbors")
    assert m["counts"] == {"items": 300, "rows": 1500, "items_with_fewer_than_k": 0}
    got = table.to_pandas()
    first = got[got["item_id"] == "i0"].sort_values("rank")
    unit = prepare(vectors, "cosine").numpy()
    assert list(first["neighbor_id"]) == [f"i{j}" for j in brute(unit, 5)[0]]
    assert list(first["rank"]) == [1, 2, 3, 4, 5]

    threshold = float(np.median(got["score"]))
    build_table(run, 5, min_score=threshold, exclude={"i1", "i2"})
    filtered = pq.read_table(run / "neighbors" / "neighbors.parquet").to_pandas()
    assert (filtered["score"] >= threshold).all() and len(filtered) < 1500
    assert not filtered["neighbor_id"].isin(["i1", "i2"]).any()
    for _, g in filtered.groupby("item_id"):  # ranks stay 1..n after filtering
        assert sorted(g["rank"]) == list(range(1, len(g) + 1))
    assert sorted(p.name for p in run.iterdir()) == ["export", "neighbors"]


def test_bad_arguments_are_clear_errors(vectors, tmp_path):
    run = make_run(tmp_path / "run", vectors)
    with pytest.raises(ValueError, match="positive"):
        build_table(run, 0)
    with pytest.raises(ValueError, match="below the number of items"):
        build_table(run, 300)
    with pytest.raises(schema.IncompleteOutputError, match="no finished export"):
        build_table(tmp_path / "nowhere", 5)
