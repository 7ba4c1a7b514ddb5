"""A small catalogue makes HR@K meaningless when K is a large share of the candidates: the
evaluation says so (measured on a 165-item log: HR@50 was 1.000 for every model, random
included, with 149 candidates)."""

import numpy as np

from eges.evaluation.evaluate import LARGE_K_SHARE, large_k_warning
from eges.evaluation.metrics import rank_metrics


def test_warns_when_k_is_a_large_share_of_the_candidates():
    warning = large_k_warning("next", [10, 50], 149)
    assert warning.startswith("next: HR@50 ranks among only 149 candidates, so K is 34%")
    assert "read HR@10 and MRR" in warning
    assert large_k_warning("cold", [10, 50], int(50 / LARGE_K_SHARE)) is None
    assert large_k_warning("cold", [10, 50], int(50 / LARGE_K_SHARE) - 1) is not None


def test_the_share_is_what_a_random_order_finds():
    # the warning's claim, checked: a random ranking of 149 candidates puts the one true item
    # in its top 50 about a third of the time
    rng = np.random.default_rng(0)
    n, queries = 149, 4000
    scores = rng.random((queries, n))
    relevant = [np.array([r]) for r in rng.integers(0, n, queries)]
    hr = rank_metrics(scores, relevant, [50])["hr@50"].mean()
    assert abs(hr - 50 / n) < 0.03
