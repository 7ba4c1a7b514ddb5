"""Evaluation metrics: AUC for link prediction, HR@K / recall@K / MRR for rankings.

Plain numpy, no torch: the functions take scores that any model (or baseline) produced.

Definitions (per query, then averaged over queries):

* **HR@K** (hit rate): 1 if at least one relevant item is in the top K, else 0.
* **recall@K**: relevant items in the top K / min(K, relevant items) — capped so that 1.0 is
  reachable when an item has more than K true neighbours.
* **MRR**: 1 / rank of the best-ranked relevant item; the rank counts the candidates scored
  strictly higher, plus half of the other candidates with an equal score (so a model that
  gives every candidate the same score gets the expected rank of a random order).
* **AUC**: probability that a positive scores above a negative, ties counted one half
  (Mann-Whitney U / (n_pos * n_neg)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _scores(name: str, positive, negative) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative scores as flat float64 arrays, checked for :func:`auc` and
    :func:`auc_components`."""
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"{name} needs at least one positive and one negative score")
    if np.isnan(pos).any() or np.isnan(neg).any():
        raise ValueError(f"{name}: NaN scores")
    return pos, neg


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of positive vs negative scores, ties counted one half.

    Raises:
        ValueError: either side is empty or a score is NaN.
    """
    pos, neg = _scores("auc", positive, negative)
    ranks = _midranks(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [values.size]])
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def auc_components(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of the AUC: per positive, the share of negatives it
    scores above (ties one half); per negative, the share of positives scored above it. The
    AUC is the mean of either.

    Raises:
        ValueError: either side is empty or a score is NaN.
    """
    pos, neg = _scores("auc_components", positive, negative)
    both = _midranks(np.concatenate([pos, neg]))
    v10 = (both[: pos.size] - _midranks(pos)) / neg.size
    v01 = 1.0 - (both[pos.size :] - _midranks(neg)) / pos.size
    return v10, v01


def auc_difference_interval(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    level: float = 0.95,
    items: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """DeLong's interval for AUC(a) − AUC(b) of two scorers on the same positives and
    negatives (their :func:`auc_components`): the paired comparison's variance over which
    pairs were held out and which negatives drawn, from the components' spread (the asymptotic
    counterpart of a paired bootstrap over the pairs, without its resorting).

    Item pairs that share an item are not independent (a popular item is in many of them), so
    with ``items`` — the two items of each positive and each negative pair (``pos_a, pos_b,
    neg_a, neg_b``) — the variance is clustered both ways: the sum of the variances clustered by
    each pair's first item and by its second, less the unclustered one (and at least the larger
    of the two), so that pairs sharing either item count as one draw.

    Returns:
        ``estimate``, ``low``, ``high``, ``se`` (the standard error).
    """
    from statistics import NormalDist

    (a10, a01), (b10, b01) = a, b
    if a10.shape != b10.shape or a01.shape != b01.shape:
        raise ValueError("the two scorers' components are not of the same pairs")
    d10, d01 = a10 - b10, a01 - b01
    m, n = d10.size, d01.size
    estimate = float(d10.mean())
    # each pair's share of the estimate's deviation (the influence of one draw)
    influence = np.concatenate([(d10 - estimate) / m, (d01 - d01.mean()) / n])

    def clustered(ids: np.ndarray | None) -> float:
        if ids is None:
            sums = influence
        else:
            _, cluster = np.unique(ids, return_inverse=True)
            sums = np.bincount(cluster, weights=influence)
        g = sums.size
        return float(g / (g - 1) * (sums**2).sum()) if g > 1 else 0.0

    var = clustered(None)
    if items is not None:
        pos_a, pos_b, neg_a, neg_b = (np.asarray(x) for x in items)
        if pos_a.size != m or pos_b.size != m or neg_a.size != n or neg_b.size != n:
            raise ValueError("items: one pair of items per positive and per negative")
        first = clustered(np.concatenate([pos_a, neg_a]))
        second = clustered(np.concatenate([pos_b, neg_b]))
        var = max(first + second - var, first, second)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    half = z * float(np.sqrt(var))
    return {"estimate": estimate, "low": estimate - half, "high": estimate + half, "se": half / z}


def rank_metrics(
    scores: np.ndarray, relevant: list[np.ndarray], ks: list[int]
) -> dict[str, np.ndarray]:
    """Per-query ranking metrics for one block of queries.

    Args:
        scores: (Q, C) scores of every candidate for each query; ``-inf`` marks a candidate that
            is never ranked (the query itself; what a top-K table does not list): it is not
            counted in ranks and never a hit, even when fewer than K candidates are finite.
        relevant: per query, the candidate columns that are relevant (at least one each).
        ks: cut-offs.

    Returns:
        ``hr@K``, ``recall@K`` for each K, and ``mrr``: arrays of shape (Q,).
    """
    scores = np.asarray(scores, dtype=np.float64)
    q, c = scores.shape
    if len(relevant) != q:
        raise ValueError(f"{q} score rows but {len(relevant)} relevance lists")
    if np.isnan(scores).any():
        raise ValueError("rank_metrics: NaN scores")
    unique = [np.unique(np.asarray(r, dtype=np.int64)) for r in relevant]
    if any(r.size and (r[0] < 0 or r[-1] >= c) for r in unique):
        raise ValueError(f"rank_metrics: a relevant column outside 0..{c - 1}")
    if q and all(r.size == 1 for r in unique):  # next item: no sort needed
        return _one_relevant_metrics(scores, np.concatenate(unique), ks)
    return _sorted_rank_metrics(scores, unique, ks)


def _sorted_rank_metrics(
    scores: np.ndarray, relevant: list[np.ndarray], ks: list[int]
) -> dict[str, np.ndarray]:
    """:func:`rank_metrics` by a stable sort of each row (``relevant``: unique columns)."""
    q, c = scores.shape
    kmax = min(max(ks), c)
    # top-K by score, ties broken by the lower column (deterministic)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :kmax]  # (Q, kmax)
    out = {f"hr@{k}": np.zeros(q) for k in ks}
    out.update({f"recall@{k}": np.zeros(q) for k in ks})
    out["mrr"] = np.zeros(q)
    for i, rel in enumerate(relevant):
        if rel.size == 0:
            raise ValueError(f"query {i} has no relevant candidate")
        row = scores[i]
        # a -inf candidate is never retrieved, even when fewer than K others are ranked
        hits = np.isin(top[i], rel) & (row[top[i]] > -np.inf)  # (kmax,)
        for k in ks:
            found = hits[:k].sum()
            out[f"hr@{k}"][i] = float(found > 0)
            out[f"recall@{k}"][i] = found / min(k, rel.size)
        best = row[rel].max()
        if best == -np.inf:
            continue  # every relevant candidate excluded: rank infinite, reciprocal 0
        higher = (row > best).sum()
        ties = (row == best).sum() - 1  # other candidates with the same score
        out["mrr"][i] = 1.0 / (1.0 + higher + ties / 2.0)
    return out


def _one_relevant_metrics(
    scores: np.ndarray, relevant: np.ndarray, ks: list[int]
) -> dict[str, np.ndarray]:
    """:func:`rank_metrics` when each query has one relevant candidate (``relevant``: (Q,)
    columns), without sorting: that candidate's place in the stable order by score is the
    number of candidates scored higher plus those scored equal in a lower column. The same
    values as the sorted path, several times faster on a large candidate set."""
    q, c = scores.shape
    best = scores[np.arange(q), relevant]  # (Q,)
    higher = (scores > best[:, None]).sum(axis=1)
    equal = scores == best[:, None]
    before = (equal & (np.arange(c)[None, :] < relevant[:, None])).sum(axis=1)
    found = best > -np.inf  # an excluded candidate is never retrieved
    out = {f"hr@{k}": (found & (higher + before < k)).astype(np.float64) for k in ks}
    out.update({f"recall@{k}": out[f"hr@{k}"].copy() for k in ks})  # one relevant: the same
    ties = equal.sum(axis=1) - 1
    out["mrr"] = np.where(found, 1.0 / (1.0 + higher + ties / 2.0), 0.0)
    return out


def list_metrics(
    lists: list[np.ndarray], relevant: list[np.ndarray], ks: list[int]
) -> dict[str, np.ndarray]:
    """Per-query metrics of served lists (a neighbour table's rows): the items a list shows, in
    its order, are all that is retrieved; whatever else it shows (items that are not relevant,
    and not candidates of the task either) takes its slot.

    Args:
        lists: per query, the item ids it lists, best first (possibly fewer than K, or none).
        relevant: per query, the relevant item ids (at least one each).
        ks: cut-offs.

    Returns:
        ``hr@K``, ``recall@K`` for each K, and ``mrr`` (1 / position of the first relevant item,
        0 when none is listed): arrays of shape (Q,).
    """
    q = len(lists)
    if len(relevant) != q:
        raise ValueError(f"{q} lists but {len(relevant)} relevance lists")
    out = {f"hr@{k}": np.zeros(q) for k in ks}
    out.update({f"recall@{k}": np.zeros(q) for k in ks})
    out["mrr"] = np.zeros(q)
    for i, (shown, rel) in enumerate(zip(lists, relevant)):
        rel = np.unique(np.asarray(rel))
        if rel.size == 0:
            raise ValueError(f"query {i} has no relevant item")
        hits = np.isin(np.asarray(shown), rel)
        for k in ks:
            found = hits[:k].sum()
            out[f"hr@{k}"][i] = float(found > 0)
            out[f"recall@{k}"][i] = found / min(k, rel.size)
        if hits.any():
            out["mrr"][i] = 1.0 / (1.0 + np.argmax(hits))
    return out


def bootstrap_interval(
    statistic: Callable[..., np.ndarray],
    per_query: list[np.ndarray],
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
    strata: np.ndarray | None = None,
) -> dict[str, Any]:
    """A paired bootstrap over queries: the percentile interval of ``statistic`` of the means.

    Every resample draws the queries once, with replacement, for all arrays together (paired:
    the models are compared on the same queries), so the interval reflects which queries the
    split happened to hold out, not only the models' own noise. Queries that are not
    independent (several next-item transitions from one item) are drawn together: ``groups``
    gives each query's cluster, and whole clusters are resampled.

    Queries of several splits (split seeds) are told apart by ``strata``: each split's clusters
    are drawn from that split only, as many as it has, and an array's mean is the mean of its
    splits' means (each split counts alike, as in a mean over runs). The splits are taken as
    independent draws of held-out queries, and the interval is given the splits drawn (their
    estimates one by one, ``per_split``, show how much the draw moves the statistic).

    Args:
        statistic: maps the means of the arrays (each of shape (R,), one per resample) to the
            compared quantity, e.g. ``np.subtract`` or a ratio; NaN for a resample where it is
            undefined (such resamples are left out, and counted in ``undefined``).
        per_query: one value per query for each model, all of the same length.
        resamples: bootstrap resamples.
        level: the interval's coverage.
        seed: the resampling seed.
        groups: (Q,) cluster of each query (any integers); None: every query its own.
        strata: (Q,) split of each query (any integers); None: one split.

    Returns:
        ``estimate`` (on all queries), ``low``, ``high`` (NaN when no resample is defined) and
        ``undefined`` (resamples left out); with more than one split, ``per_split``: the
        estimate on each split alone, in the order of their labels.
    """
    values = np.stack([np.asarray(a, dtype=np.float64) for a in per_query])  # (M, Q)
    q = values.shape[1]
    if q == 0:
        raise ValueError("no queries to resample")
    split = np.zeros(q, dtype=np.int64)
    if strata is not None:
        if np.shape(strata) != (q,):
            raise ValueError("strata: one split label per query")
        _, split = np.unique(np.asarray(strata), return_inverse=True)
    member = (
        np.arange(q) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    )
    if member.shape != (q,):
        raise ValueError("groups: one cluster label per query")
    # a cluster is a (split, group) pair: groups of different splits are never drawn together
    _, cluster = np.unique(split * (int(member.max()) + 1) + member, return_inverse=True)
    sizes = np.bincount(cluster).astype(np.float64)  # (G,)
    sums = np.stack([np.bincount(cluster, weights=v) for v in values])  # (M, G)
    cluster_split = np.zeros(sizes.size, dtype=np.int64)
    cluster_split[cluster] = split
    members = [np.flatnonzero(cluster_split == s) for s in range(int(split.max()) + 1)]
    g = len(sizes)
    rng = np.random.default_rng(seed)
    stats = []
    chunk = max(1, min(resamples, 5_000_000 // (g * len(values))))  # at most 40 MB at once
    for lo in range(0, resamples, chunk):
        r = min(chunk, resamples - lo)
        means = 0.0
        for c in members:
            idx = c[rng.integers(0, c.size, size=(r, c.size))]
            means = means + sums[:, idx].sum(axis=2) / sizes[idx].sum(axis=1)  # (M, R)
        stats.append(np.asarray(statistic(*(means / len(members))), dtype=np.float64))
    dist = np.concatenate(stats)
    defined = dist[np.isfinite(dist)]
    tail = (1.0 - level) / 2
    low, high = np.quantile(defined, [tail, 1.0 - tail]) if defined.size else (np.nan, np.nan)

    def estimate(of: list[np.ndarray]) -> float:
        split_means = np.stack([sums[:, c].sum(axis=1) / sizes[c].sum() for c in of])  # (S, M)
        return float(np.asarray(statistic(*split_means.mean(axis=0)[:, None]))[0])

    out: dict[str, Any] = {
        "estimate": estimate(members),
        "low": float(low),
        "high": float(high),
        "undefined": int(dist.size - defined.size),
    }
    if len(members) > 1:
        out["per_split"] = [estimate([c]) for c in members]
    return out


def pooled_difference_interval(per_split: list[dict[str, float]], level: float = 0.95) -> dict:
    """One interval for a difference estimated on several splits (split seeds), each with its
    standard error (e.g. :func:`auc_difference_interval`'s): the mean of the estimates, with the
    mean of the standard errors as its own. Whatever the correlation between the splits'
    estimates (splits drawn from the same data share much of it), the standard error of their
    mean is at most that, when each split's is right; DeLong's is given the models trained on
    that split, so the spread of ``per_split`` is worth reading beside it.

    Returns:
        ``estimate``, ``low``, ``high``, ``se`` and ``per_split`` (each split's estimate).
    """
    from statistics import NormalDist

    if not per_split:
        raise ValueError("no splits to pool")
    estimate = float(np.mean([p["estimate"] for p in per_split]))
    se = float(np.mean([p["se"] for p in per_split]))
    half = NormalDist().inv_cdf(0.5 + level / 2) * se
    return {
        "estimate": estimate,
        "low": estimate - half,
        "high": estimate + half,
        "se": se,
        "per_split": [float(p["estimate"]) for p in per_split],
    }
