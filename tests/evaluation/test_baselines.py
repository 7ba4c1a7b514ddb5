"""Baselines and scorers on tiny hand-built inputs."""

import numpy as np
import pytest
import torch

from eges.evaluation.baselines import (
    ContextScorer,
    MatrixScorer,
    PopularityScorer,
    SparseVectorScorer,
    VectorScorer,
    content_vectors,
    cooccurrence,
    deepwalk,
)
from eges.training.items import ItemTable


def items_with(field_values: list[list[int]], vocab_size: int) -> ItemTable:
    """One side-info field; item i (from 1) has field_values[i - 1]."""
    lengths = [len(v) for v in field_values]
    off = np.zeros(len(field_values) + 2, dtype=np.int64)
    off[2:] = np.cumsum(lengths)
    vals = np.array([v for vs in field_values for v in vs], dtype=np.int64)
    return ItemTable(
        item_ids=[""] + [str(i) for i in range(1, len(field_values) + 1)],
        counts=np.ones(len(field_values) + 1, dtype=np.int64),
        fields=["genre"],
        vocab_sizes=[vocab_size],
        offsets=[torch.from_numpy(off)],
        values=[torch.from_numpy(vals)],
        lowercase=[],
    )


def test_cooccurrence_counts_window_pairs_both_ways():
    walks = [np.array([1, 2, 3]), np.array([2, 1]), np.array([4, 4, 1])]
    m = cooccurrence(walks, num_items=4, window=1).toarray()
    assert m[1, 2] == m[2, 1] == 2  # 1-2 in walk 0 and 2-1 in walk 1
    assert m[2, 3] == 1 and m[1, 3] == 0  # distance 2 is outside window 1
    assert m[4, 4] == 0  # an item never co-occurs with itself
    assert m[4, 1] == 1
    assert cooccurrence(walks, 4, window=2).toarray()[1, 3] == 1


def test_content_scores_shared_rare_values_highest():
    # items 1 and 2 share a rare value 3; item 3 shares only the common value 1; item 4 has none
    items = items_with([[1, 3], [1, 3], [1, 2], []], vocab_size=3)
    scorer = SparseVectorScorer("content", content_vectors(items))
    s = scorer.score(np.array([1]), np.array([2, 3, 4]))[0]
    assert s[0] == pytest.approx(1.0) and 0 < s[1] < s[0] and s[2] == 0
    assert scorer.covered(np.array([1, 4])).tolist() == [True, False]


def test_vector_and_context_scorers():
    vec = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]], dtype=np.float32)
    cos = VectorScorer("m", np.array([1, 2, 3]), vec, num_items=4)
    assert cos.score(np.array([1]), np.array([2, 3])).tolist() == [[1.0, 0.0]]
    assert cos.covered(np.array([1, 4])).tolist() == [True, False]
    context = np.zeros((5, 2), dtype=np.float32)
    context[2] = [1.0, 1.0]
    context[3] = [0.0, 2.0]
    ctx = ContextScorer("m·ctx", np.array([1, 2, 3]), vec, context)
    assert ctx.score(np.array([1]), np.array([2, 3])).tolist() == [[1.0, 0.0]]
    # a pair scores both directions: (H1·Z3 + H3·Z1) / 2 = (0 + 0) / 2; (H2·Z3 + H3·Z2) / 2 = 1.5
    assert ctx.pair_scores(np.array([1, 2]), np.array([3, 3])).tolist() == [0.0, 1.5]
    # the popularity prior: a candidate's bias is added to its score, both directions of a pair
    bias = np.array([0.0, 0.5, 0.25, 1.0, 0.0])
    ctx = ContextScorer("m·ctx", np.array([1, 2, 3]), vec, context, bias)
    assert ctx.score(np.array([1]), np.array([2, 3])).tolist() == [[1.25, 1.0]]
    assert ctx.pair_scores(np.array([1, 2]), np.array([3, 3])).tolist() == [0.75, 1.5 + 0.625]


def test_pair_scores_match_the_score_matrix():
    rng = np.random.default_rng(1)
    m = MatrixScorer("co", cooccurrence([rng.integers(1, 20, 10) for _ in range(50)], 20, 3))
    a, b = rng.integers(1, 21, 100), rng.integers(1, 21, 100)
    full = m.score(np.arange(21), np.arange(21))
    assert np.array_equal(m.pair_scores(a, b, block=7), full[a, b])


def test_popularity_is_the_same_ranking_for_every_query():
    pop = PopularityScorer(np.array([0, 5, 1, 3]))
    s = pop.score(np.array([1, 2]), np.array([1, 2, 3]))
    assert s.tolist() == [[5, 1, 3], [5, 1, 3]]
    assert pop.pair_scores(np.array([1]), np.array([3])).tolist() == [15]


def test_deepwalk_learns_the_two_communities():
    rng = np.random.default_rng(0)
    walks = [rng.choice([1, 2, 3], 8) for _ in range(300)] + [
        rng.choice([4, 5, 6], 8) for _ in range(300)
    ]
    idx, vec, ctx, seconds = deepwalk(
        walks,
        6,
        embedding_dim=16,
        window=2,
        num_negatives=3,
        ns_exponent=0.75,
        epochs=5,
        seed=1,
        workers=1,
    )
    assert sorted(idx.tolist()) == [1, 2, 3, 4, 5, 6] and vec.shape == ctx.shape == (6, 16)
    s = VectorScorer("dw", idx, vec, 6).score(np.array([1]), np.array([2, 4]))[0]
    assert s[0] > s[1]


def test_the_served_table_scores_exactly_what_it_lists(tmp_path):
    """Scoring the neighbour table gives the metrics of its top K, which for exact search
    equal those of cosine over the same vectors (self excluded) at every K up to its size."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from eges.evaluation.baselines import TableScorer, VectorScorer
    from eges.evaluation.evaluate import rank_queries
    from eges.serving.neighbors import build_table
    from tests.train.test_neighbors import make_run

    vectors = np.random.default_rng(3).normal(size=(120, 8)).astype(np.float32)
    run = make_run(tmp_path / "run", vectors)
    build_table(run, 10)
    table = pq.read_table(run / "neighbors" / "neighbors.parquet")
    item_ids = [""] + [f"i{i}" for i in range(120)]
    served = TableScorer("t", table, item_ids)
    cosine = VectorScorer("v", np.arange(1, 121), vectors, 120)
    items = np.arange(1, 121)
    rng = np.random.default_rng(0)
    relevant = [rng.choice(119, 6, replace=False) for _ in items]  # candidate positions
    candidates = rng.permutation(items)
    got = rank_queries(served, items, relevant, candidates, [1, 5, 10], exclude_self=True)
    want = rank_queries(cosine, items, relevant, candidates, [1, 5, 10], exclude_self=True)
    for key in ("hr@1", "hr@5", "hr@10", "recall@10"):
        assert got[key] == pytest.approx(want[key]), key
    assert 0 < got["hr@10"] < 1
    # only even items are candidates of the task, but the table also lists odd ones: they take
    # their slots, as they would on screen (brute force over all items, self excluded)
    even = candidates[candidates % 2 == 0]
    rel_even = [rng.choice(len(even), 4, replace=False) for _ in items]
    got = rank_queries(served, items, rel_even, even, [3, 10], exclude_self=True)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    shown = np.argsort(-sims, axis=1)[:, :10] + 1  # item_idx, best first
    for k in (3, 10):
        want_hr = np.mean([np.isin(shown[i, :k], even[r]).any() for i, r in enumerate(rel_even)])
        assert got[f"hr@{k}"] == pytest.approx(want_hr), k
    assert (
        got["hr@10"] < rank_queries(cosine, items, rel_even, even, [10], exclude_self=True)["hr@10"]
    )  # cosine over even only
    # beyond its K the table retrieves nothing more: HR@50 stays at HR@10
    wide = rank_queries(served, items, relevant, candidates, [10, 50], exclude_self=True)
    assert wide["hr@50"] == wide["hr@10"]
    # pairs: listed in either direction scores K + 1 - rank, else 0
    first = table.filter(pc.equal(table["item_id"], "i0")).to_pylist()
    top = next(r for r in first if r["rank"] == 1)
    b = item_ids.index(top["neighbor_id"])
    pair = served.pair_scores(np.array([1, 1]), np.array([b, 1]))
    assert pair[0] == 10 and pair[1] == 0


@pytest.mark.parametrize("prior", [0.0, 0.4])
def test_the_evaluations_h_dot_z_ranks_as_the_served_context_table(tmp_path, prior):
    """run_scorers' H·Z scorer (with the walk counts' prior as the evaluation gives it) and the
    served table by --metric context rank the trained candidates the same way."""
    from eges.evaluation.evaluate import rank_queries, run_scorers
    from eges.training.items import load_items
    from tests.train.test_neighbors import add_model, make_run

    n = 120
    vectors = np.random.default_rng(4).normal(size=(n, 8)).astype(np.float32)
    run = make_run(tmp_path / "run", vectors)
    z = add_model(run, n, 8)
    scorers = {s.name: s for s in run_scorers("m", run, load_items(run / "walks"), prior)}
    items = np.arange(1, n + 1)
    candidates = np.random.default_rng(0).permutation(items[np.abs(z[1:]).sum(1) > 0])
    position = {int(c): j for j, c in enumerate(candidates)}
    rng = np.random.default_rng(1)
    relevant = [np.array([position[c] for c in rng.choice(candidates, 3)]) for _ in items]
    ks = [1, 5, 10]
    got = rank_queries(scorers["m·ctx·table"], items, relevant, candidates, ks, exclude_self=True)
    want = rank_queries(scorers["m·ctx"], items, relevant, candidates, ks, exclude_self=True)
    for key in ("hr@1", "hr@5", "hr@10"):
        assert got[key] == pytest.approx(want[key]), key
    assert 0 < got["hr@10"] < 1
    if prior:  # without the prior the scorer ranks otherwise: the test can tell them apart
        bare = run_scorers("b", run, load_items(run / "walks"), 0.0)[1]
        other = rank_queries(bare, items, relevant, candidates, ks, exclude_self=True)
        assert any(other[k] != pytest.approx(got[k]) for k in ("hr@1", "hr@5", "hr@10"))
