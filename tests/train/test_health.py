"""Vector health at export: the mean pairwise cosine, and the collapse warning."""

import logging

import numpy as np
import pytest
import torch

from eges.training.export import COLLAPSED, mean_pairwise_cosine, vector_health
from tests.train.test_model import make


def brute(x: np.ndarray) -> float:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    n = len(u)
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))


@pytest.mark.parametrize("shift", [0.0, 1.0, 5.0])
def test_mean_pairwise_cosine_equals_the_mean_over_all_pairs(shift):
    x = np.random.default_rng(1).normal(size=(200, 12)) + shift  # shift: anisotropy grows
    assert mean_pairwise_cosine(x) == pytest.approx(brute(x), abs=1e-9)
    with_zero = np.vstack([x, np.zeros((3, 12))])  # zero rows have no direction: left out
    assert mean_pairwise_cosine(with_zero) == pytest.approx(brute(x), abs=1e-9)
    assert mean_pairwise_cosine(x[:1]) is None


def test_mean_pairwise_cosine_in_chunks_is_the_same(monkeypatch):
    # the export sums unit vectors a chunk at a time (no float64 copy of a 1M-row table)
    x = np.random.default_rng(2).normal(size=(50, 8)).astype(np.float32) + 1.0
    x[7] = 0.0  # a zero row inside a chunk
    whole = mean_pairwise_cosine(x)
    monkeypatch.setattr("eges.training.export.CHUNK", 6)
    assert mean_pairwise_cosine(x) == pytest.approx(whole, abs=1e-12)
    assert mean_pairwise_cosine(np.zeros((0, 8), np.float32)) is None


def test_health_of_a_random_model_is_fine_and_a_collapsed_one_warns(caplog):
    model = make(dim=16)
    model.mark_trained_values(torch.tensor([0, 5, 2, 1, 3, 0, 4]))  # item 5 has no side info
    idx = np.array([1, 2, 3, 4, 6])
    cold = np.array([False, False, False, True, False])
    with torch.no_grad():
        vectors = model(torch.from_numpy(idx)).numpy()
    health = vector_health(model, idx, vectors, cold)
    assert health["warm"]["vectors"] == 4 and health["cold"]["mean_pairwise_cosine"] is None
    assert health["side_info_only"]["vectors"] == 4
    assert abs(health["warm"]["mean_pairwise_cosine"]) < COLLAPSED
    assert health["collapsed"] == []

    # every warm item's vector points the same way, up to a little noise
    common = np.random.default_rng(0).normal(size=16)
    noisy = common + 0.01 * np.random.default_rng(1).normal(size=(5, 16))
    with caplog.at_level(logging.WARNING, logger="eges.training.export"):
        health = vector_health(model, idx, noisy.astype(np.float32), cold)
    assert health["warm"]["mean_pairwise_cosine"] > 0.99
    assert health["collapsed"] == ["warm"]
    assert "the warm vectors have collapsed" in caplog.text
