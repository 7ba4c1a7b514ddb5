"""Walker's alias method (Vose's construction), shared by the walk job and the negative sampler.

Drawing from a discrete distribution in O(1): pick a column k uniformly, then keep k with
probability ``prob[k]``, else take ``alias[k]``. This module is numpy only.
"""

from __future__ import annotations

import numpy as np


def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias method: O(n) build, O(1) draws.

    To draw: pick column k uniformly, then k with probability ``prob[k]``, else ``alias[k]``.

    Args:
        weights: non-negative weights, at least one positive.

    Returns:
        (prob float64, alias int32), both of length ``len(weights)``.
    """
    n = len(weights)
    w = np.asarray(weights, dtype=np.float64)
    if n == 1 or np.all(w == w[0]):
        return np.ones(n), np.arange(n, dtype=np.int32)
    scaled = w * (n / w.sum())
    prob = np.ones(n)
    alias = np.arange(n, dtype=np.int32)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    # leftovers are 1 up to rounding error
    return prob, alias
