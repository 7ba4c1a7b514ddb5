"""Metric functions on hand-computed cases."""

import numpy as np
import pytest

from eges.evaluation.metrics import (
    _one_relevant_metrics,
    _sorted_rank_metrics,
    auc,
    auc_components,
    auc_difference_interval,
    rank_metrics,
)


def test_auc_hand_cases():
    assert auc([3, 2], [1, 0]) == 1.0
    assert auc([0, 1], [2, 3]) == 0.0
    assert auc([1], [1]) == 0.5  # a tie counts one half
    # pairs: .1<.35, .1<.8, .4>.35, .4<.8 -> 1 of 4
    assert auc([0.1, 0.4], [0.35, 0.8]) == 0.25
    # ties across and within sides: (2 vs 1) win, (2 vs 2) half, (1 vs 1) half, (1 vs 2) loss
    assert auc([2, 1], [1, 2]) == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)


def test_auc_agrees_with_pairwise_counting():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40), rng.integers(0, 5, 30)  # many ties
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc(pos, neg) == pytest.approx(wins / (40 * 30))


def test_auc_rejects_empty_and_nan():
    with pytest.raises(ValueError):
        auc([], [1.0])
    with pytest.raises(ValueError):
        auc([np.nan], [1.0])


def test_rank_metrics_hand_case():
    scores = np.array([[0.9, 0.8, 0.1, 0.5], [0.9, 0.8, 0.1, 0.5], [0.2, 0.2, 0.2, 0.2]])
    m = rank_metrics(scores, [np.array([2]), np.array([1, 2]), np.array([0])], ks=[1, 2])
    # query 0: item 2 ranked 4th; query 1: item 1 ranked 2nd; query 2: all tied
    assert m["hr@1"].tolist() == [0, 0, 1]  # stable order puts column 0 first on a full tie
    assert m["hr@2"].tolist() == [0, 1, 1]
    assert m["recall@2"].tolist() == [0, 0.5, 1]  # found / min(K, relevant)
    assert m["mrr"][0] == pytest.approx(1 / 4)
    assert m["mrr"][1] == pytest.approx(1 / 2)
    assert m["mrr"][2] == pytest.approx(1 / (1 + 3 / 2))  # expected rank among 4 tied


def test_rank_metrics_capped_recall_and_excluded_candidates():
    scores = np.array([[-np.inf, 0.9, 0.8, 0.7, 0.6]])  # column 0 is the query itself
    m = rank_metrics(scores, [np.array([1, 2, 3, 4])], ks=[2, 10])
    assert m["recall@2"][0] == 1.0  # 2 found of min(2, 4)
    assert m["recall@10"][0] == 1.0  # 4 found of min(10, 4) (the query is never ranked)
    assert m["mrr"][0] == 1.0
    m = rank_metrics(scores, [np.array([0])], ks=[2])
    assert m["mrr"][0] == 0.0 and m["hr@2"][0] == 0.0


def test_rank_metrics_checks_its_input():
    with pytest.raises(ValueError):
        rank_metrics(np.zeros((2, 3)), [np.array([0])], ks=[1])
    with pytest.raises(ValueError):
        rank_metrics(np.zeros((1, 3)), [np.array([], dtype=int)], ks=[1])


def test_a_minus_inf_candidate_is_never_a_hit():
    # only one candidate is ranked; the relevant one is not listed (-inf): a top-2 list that
    # shows one item does not contain it
    m = rank_metrics(np.array([[1.0, -np.inf, -np.inf]]), [np.array([1])], [2])
    assert m["hr@2"][0] == 0.0 and m["recall@2"][0] == 0.0 and m["mrr"][0] == 0.0


def test_list_metrics_score_a_served_list_as_shown():
    from eges.evaluation.metrics import list_metrics

    # relevant {7, 9}: list 1 shows 9 second; list 2 shows neither; list 3 is empty
    m = list_metrics(
        [np.array([4, 9, 7]), np.array([4, 5]), np.array([], dtype=np.int64)],
        [np.array([7, 9])] * 3,
        [1, 2, 3],
    )
    assert m["hr@1"].tolist() == [0, 0, 0] and m["hr@2"].tolist() == [1, 0, 0]
    assert m["recall@3"].tolist() == [1.0, 0, 0] and m["recall@2"][0] == 0.5
    assert m["mrr"].tolist() == [0.5, 0, 0]


def test_bootstrap_interval_covers_the_truth_and_pairs_the_queries():
    from eges.evaluation.metrics import bootstrap_interval

    rng = np.random.default_rng(1)
    # two models that hit the same hard queries: their difference is much surer than either
    hard = rng.random(3000) < 0.5
    a = (~hard & (rng.random(3000) < 0.9)).astype(float)
    b = a * (rng.random(3000) < 0.97)  # b misses 3% of a's hits
    diff = bootstrap_interval(np.subtract, [a, b], seed=0)
    assert diff["low"] > 0 and diff["low"] <= diff["estimate"] <= diff["high"]
    assert diff["estimate"] == pytest.approx(a.mean() - b.mean())
    alone = bootstrap_interval(lambda x: x, [a], seed=0)
    assert diff["high"] - diff["low"] < (alone["high"] - alone["low"]) / 2
    # the interval of a mean covers the true rate in about 95% of samples
    covered = 0
    for seed in range(200):
        x = (np.random.default_rng(seed).random(400) < 0.3).astype(float)
        iv = bootstrap_interval(lambda m: m, [x], resamples=400, seed=seed)
        covered += iv["low"] <= 0.3 <= iv["high"]
    assert 0.90 <= covered / 200 <= 0.99
    with pytest.raises(ValueError, match="no queries"):
        bootstrap_interval(np.subtract, [np.array([]), np.array([])])


def test_bootstrap_resamples_clusters_together_and_skips_undefined_resamples():
    from eges.evaluation.metrics import bootstrap_interval

    rng = np.random.default_rng(2)
    # 50 source items with 40 transitions each: hits depend mostly on the item
    item_rate = rng.random(50)
    groups = np.repeat(np.arange(50), 40)
    hits = (rng.random(2000) < item_rate[groups]).astype(float)
    flat = bootstrap_interval(lambda m: m, [hits], seed=0)
    clustered = bootstrap_interval(lambda m: m, [hits], seed=0, groups=groups)
    assert clustered["estimate"] == flat["estimate"] == pytest.approx(hits.mean())
    assert clustered["high"] - clustered["low"] > 2 * (flat["high"] - flat["low"])
    # a ratio whose denominator is 0 in some resamples: those are left out, and counted
    base = np.zeros(40)
    base[0] = 1.0
    iv = bootstrap_interval(
        lambda a, b: np.where(b > 0, a / np.where(b > 0, b, 1), np.nan), [np.ones(40), base], seed=0
    )
    assert iv["undefined"] > 0 and np.isfinite(iv["low"]) and iv["low"] <= iv["high"]


def test_rank_metrics_one_relevant_fast_path_equals_the_sorted_path():
    """Next item has one relevant candidate per query, scored without a sort: the same values
    as the sorted path, with ties (coarse scores), excluded (-inf) and +inf candidates."""
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(300, 40)).astype(np.float64)  # many ties
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    scores[rng.random(scores.shape) < 0.03] = np.inf
    columns = rng.integers(0, 40, size=300)
    single = [np.array([j]) for j in columns]
    ks = [1, 5, 10, 50]
    fast = _one_relevant_metrics(scores, columns, ks)
    sorted_path = _sorted_rank_metrics(scores, single, ks)
    assert list(fast) == list(sorted_path)
    for key in fast:
        np.testing.assert_array_equal(fast[key], sorted_path[key], err_msg=key)
    assert 0 < fast["hr@5"].mean() < 1 and (fast["mrr"] == 0).any()
    # rank_metrics takes it for one relevant item each, and the sorted path otherwise
    got = rank_metrics(scores, single, ks)
    for key in fast:
        np.testing.assert_array_equal(got[key], fast[key], err_msg=key)
    two = [np.array([j, (j + 1) % 40]) for j in columns]
    assert not np.array_equal(rank_metrics(scores, two, ks)["mrr"], fast["mrr"])


@pytest.mark.parametrize(
    "scores, relevant, message",
    [
        (np.array([[0.1, np.nan]]), [np.array([0])], "NaN"),
        (np.array([[0.1, 0.2]]), [np.array([2])], "outside"),
        (np.array([[0.1, 0.2]]), [np.array([-1])], "outside"),
    ],
)
def test_rank_metrics_refuses_nan_scores_and_columns_out_of_range(scores, relevant, message):
    with pytest.raises(ValueError, match=message):
        rank_metrics(scores, relevant, [1])


def test_delong_interval_of_an_auc_difference_matches_a_paired_bootstrap():
    """The components average to the AUC; the interval of two correlated scorers' difference is
    as wide as a paired bootstrap over the positives and negatives (ties included)."""
    rng = np.random.default_rng(1)
    m, n = 300, 500
    truth = rng.standard_normal(m + n)
    pa, na = truth[:m] + 1 + rng.normal(0, 0.5, m), truth[m:] + rng.normal(0, 0.5, n)
    pb = np.round(truth[:m] + 0.8 + rng.normal(0, 0.8, m), 1)
    nb = np.round(truth[m:] + rng.normal(0, 0.8, n), 1)
    a, b = auc_components(pa, na), auc_components(pb, nb)
    assert a[0].mean() == pytest.approx(auc(pa, na)) and a[1].mean() == pytest.approx(auc(pa, na))
    assert b[0].mean() == pytest.approx(auc(pb, nb))
    got = auc_difference_interval(a, b)
    assert got["estimate"] == pytest.approx(auc(pa, na) - auc(pb, nb))
    boot = []
    for _ in range(1000):
        i, j = rng.integers(0, m, m), rng.integers(0, n, n)
        boot.append(auc(pa[i], na[j]) - auc(pb[i], nb[j]))
    low, high = np.quantile(boot, [0.025, 0.975])
    assert got["high"] - got["low"] == pytest.approx(high - low, rel=0.15)
    assert got["low"] == pytest.approx(low, abs=0.01)
    assert got["high"] == pytest.approx(high, abs=0.01)
    with pytest.raises(ValueError, match="same pairs"):
        auc_difference_interval(a, auc_components(pb[:10], nb))


def test_auc_components_by_brute_force_with_ties():
    pos, neg = np.array([0.3, 0.5, 0.5, 0.9]), np.array([0.1, 0.5, 0.5])
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = auc_components(pos, neg)
    np.testing.assert_allclose(v10, psi.mean(axis=1))
    np.testing.assert_allclose(v01, psi.mean(axis=0))


def test_pairs_sharing_items_widen_the_auc_interval():
    """Clustered by both items of a pair: with every item in one pair it is DeLong's plain
    interval; with a few popular items in many pairs, and scores that follow the items, it is
    wider, as a bootstrap over the items would be."""
    rng = np.random.default_rng(2)
    m = n = 400
    distinct = [np.arange(k, k + 2 * s, 2) for k, s in ((0, m), (1, m), (5000, n), (5001, n))]
    pos_a, neg_a = rng.normal(1, 1, m), rng.normal(0, 1, n)
    a = auc_components(pos_a, neg_a)
    b = auc_components(pos_a + rng.normal(0, 1, m), neg_a + rng.normal(0, 1, n))
    plain = auc_difference_interval(a, b)
    assert auc_difference_interval(a, b, items=distinct) == pytest.approx(plain)
    # the positives' first item drawn among 20; scorer a is better or worse by that item
    first = rng.integers(0, 20, m)
    effect = rng.normal(0, 2, 20)
    a = auc_components(pos_a + effect[first], neg_a)
    shared = (first, distinct[1], distinct[2], distinct[3])
    plain = auc_difference_interval(a, b)
    clustered = auc_difference_interval(a, b, items=shared)
    assert clustered["estimate"] == plain["estimate"]
    assert clustered["high"] - clustered["low"] > 1.5 * (plain["high"] - plain["low"])
    with pytest.raises(ValueError, match="one pair of items"):
        auc_difference_interval(a, b, items=(first[:5], *shared[1:]))


def test_bootstrap_over_split_seeds_draws_each_split_from_itself():
    """Queries of several splits (split seeds): each split's queries are resampled within it,
    each split's mean counts alike, and the estimate of each split alone is reported."""
    from eges.evaluation.metrics import bootstrap_interval

    # split 0: 300 queries all hit; split 1: 100 queries all miss. Resampled within the
    # splits, every resample's mean is exactly 0.5; drawn across them it would vary
    hits = np.concatenate([np.ones(300), np.zeros(100)])
    strata = np.repeat([7, 3], [300, 100])  # any labels, in any order
    iv = bootstrap_interval(lambda m: m, [hits], seed=0, strata=strata)
    assert iv["estimate"] == iv["low"] == iv["high"] == pytest.approx(0.5)
    assert iv["per_split"] == [0.0, 1.0]  # in the order of the labels: 3, then 7
    pooled = bootstrap_interval(lambda m: m, [hits], seed=0)
    assert pooled["estimate"] == pytest.approx(0.75) and pooled["high"] - pooled["low"] > 0.05
    assert "per_split" not in pooled
    # one split is the plain bootstrap, draw for draw: the numbers of the bootstrap before
    # strata existed (2026-12-07), with and without clusters
    rng = np.random.default_rng(3)
    a, b = rng.random(500), rng.random(500)
    groups = rng.integers(0, 60, 500)
    for g, low, high in (
        (None, -0.030899252504, 0.041061741791),
        (groups, -0.026613655756, 0.038136574075),
    ):
        for strata in (None, np.zeros(500, int)):
            iv = bootstrap_interval(np.subtract, [a, b], seed=1, groups=g, strata=strata)
            assert iv["estimate"] == pytest.approx(0.004289245491, abs=1e-11)
            assert (iv["low"], iv["high"]) == pytest.approx((low, high), abs=1e-11)
    # clusters never span splits: the same group label in two splits is two clusters
    groups = np.tile(np.arange(10), 2)
    values = np.concatenate([np.ones(10), np.zeros(10)])
    iv = bootstrap_interval(
        lambda m: m, [values], seed=0, groups=groups, strata=np.repeat([0, 1], 10)
    )
    assert iv["low"] == iv["high"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="strata"):
        bootstrap_interval(lambda m: m, [values], strata=np.zeros(3))


def test_pooled_difference_interval_averages_estimates_and_standard_errors():
    from eges.evaluation.metrics import (
        auc_components,
        auc_difference_interval,
        pooled_difference_interval,
    )

    rng = np.random.default_rng(4)
    splits = []
    for _ in range(3):
        pos, neg = rng.normal(1.0, 1, 400), rng.normal(0, 1, 400)
        a = auc_components(pos, neg)
        b = auc_components(pos + rng.normal(0, 1, 400), neg + rng.normal(0, 1, 400))
        splits.append(auc_difference_interval(a, b))
    for s in splits:
        assert s["high"] - s["estimate"] == pytest.approx(1.959964 * s["se"], rel=1e-5)
    iv = pooled_difference_interval(splits)
    assert iv["estimate"] == pytest.approx(np.mean([s["estimate"] for s in splits]))
    assert iv["se"] == pytest.approx(np.mean([s["se"] for s in splits]))
    assert iv["low"] == pytest.approx(iv["estimate"] - 1.959964 * iv["se"], rel=1e-5)
    assert iv["per_split"] == [s["estimate"] for s in splits]
    with pytest.raises(ValueError, match="no splits"):
        pooled_difference_interval([])
