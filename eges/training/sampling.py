"""Negative sampling: unigram^ns_exponent over item frequencies in the walks, O(1) per draw.

An alias table lives on the model's device as two tensors; a draw is one uniform integer, one
uniform float and two gathers. Unlike ``torch.multinomial`` (limited to 2^24 categories) or
``WeightedRandomSampler`` (Python-slow), it works for any number of items at GPU speed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from eges.alias import alias_table


def walk_frequencies(shards: list[Path], num_items: int) -> np.ndarray:
    """Occurrences of every item_idx in the walks, streamed shard by shard. Shape (V + 1,)."""
    counts = np.zeros(num_items + 1, dtype=np.int64)
    for path in shards:
        for batch in pq.ParquetFile(path).iter_batches(columns=["items"]):
            flat = batch.column(0).flatten().to_numpy()
            counts += np.bincount(flat, minlength=num_items + 1)[: num_items + 1]
    return counts


class AliasSampler(nn.Module):
    """Draws item indices with probability ∝ frequency^exponent (padding and unseen items never).

    Args:
        frequencies: (V + 1,) counts; entry 0 (padding) is ignored.
        exponent: below 1 flattens the distribution towards rare items; word2vec's 0.75 here,
            the trainer passes ``train.ns_exponent`` (0.75 by default).
    """

    def __init__(self, frequencies: np.ndarray, exponent: float = 0.75) -> None:
        super().__init__()
        w = np.asarray(frequencies, dtype=np.float64).copy()
        w[0] = 0.0
        if not (w > 0).any():
            raise ValueError("no item occurs in the walks: cannot sample negatives")
        w = np.where(w > 0, w**exponent, 0.0)
        prob, alias = alias_table(w)
        self.register_buffer("prob", torch.from_numpy(prob).float(), persistent=False)
        self.register_buffer("alias", torch.from_numpy(alias.astype(np.int64)), persistent=False)
        self.register_buffer("probabilities", torch.from_numpy(w / w.sum()), persistent=False)

    def forward(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample a tensor of item indices of the given shape (int64, on the sampler's device)."""
        n = self.prob.numel()
        k = torch.randint(n, shape, device=self.prob.device, generator=generator)
        u = torch.rand(shape, device=self.prob.device, generator=generator)
        return torch.where(u < self.prob[k], k, self.alias[k])
