"""Cold start on a generated log with planted communities: how close do a new item's neighbours
come to its community, from side information alone, against content overlap and an oracle?

    .venv/bin/python bench/cold_oracle.py --synth data/synth-noisy --run out/synth-noisy/run \
        [--walks WALKS] [--queries 500] [--k 10] [--seed 0] [--alpha 1]

``--synth`` is an ``eges synth`` output (its ``communities.csv`` is the truth); ``--run`` a run
trained on walks of that log. Each query is an item of the log, embedded by ``eges embed``'s
code from its side information alone (genres, year, tags read from ``movies.csv`` and
``tags.csv``, as a new movie would be), and never its own neighbour. With ``--walks``, the walk
output the run was trained on, made with ``split.kind: items`` (and ``split.cold_fields: all``
to keep the tags), the queries are its held-out items, which training never saw; otherwise a
sample of all items, whose own events trained the values they are embedded from. Printed per
scorer: precision@K, the share of a query's K neighbours in the query's community.

* **EGES, side information only**, cosine and the served context score, with the run's field
  weights for new items (``train.cold_weights``) and, when those are not all equal, with equal
  ones;
* **content overlap**: TF-IDF cosine over the same side-info values (the evaluation's
  ``content`` model);
* **oracle**: a naive-Bayes classifier over the same values, trained on the communities of
  every other item (the truth of the warm items), picks the query's community; its neighbours
  are that community's K most active items. A bound for any scorer that sees only side
  information, not a reachable target.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eges import schema  # noqa: E402
from eges.serving.embed import Embedder, load_new_items  # noqa: E402

CONTENT = "content overlap (TF-IDF cosine)"
ORACLE = "oracle (naive Bayes on the true communities)"
RUN_WEIGHTS = "field weights of the run"
EQUAL_WEIGHTS = "equal field weights (the paper's mean)"


def token_matrix(items: list[dict[str, list[str]]]) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary (items, field=value tokens) matrix, and each column's field."""
    vocab: dict[tuple[str, str], int] = {}
    rows, cols = [], []
    for row, item in enumerate(items):
        for field, values in item.items():
            for value in values:
                rows.append(row)
                cols.append(vocab.setdefault((field, value), len(vocab)))
    x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(items), len(vocab)))
    x.data[:] = 1.0  # a value counts once
    return x, np.array([field for field, _ in vocab])


def content_neighbours(x: sp.csr_matrix, queries: np.ndarray, k: int) -> np.ndarray:
    """Top-k rows of ``x`` by TF-IDF cosine to each query row, the query excluded."""
    df = np.asarray((x > 0).sum(0)).ravel()
    idf = np.log((1.0 + x.shape[0]) / (1.0 + df)) + 1.0
    t = sp.csr_matrix(x @ sp.diags(idf))
    norms = np.sqrt(np.asarray(t.multiply(t).sum(1)).ravel())
    t = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ t)
    scores = (t[queries] @ t.T).toarray()
    scores[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def oracle_neighbours(
    x: sp.csr_matrix,
    fields: np.ndarray,
    community: np.ndarray,
    activity: np.ndarray,
    queries: np.ndarray,
    k: int,
    alpha: float,
) -> np.ndarray:
    """Naive Bayes trained without the query picks its community: per field a multinomial over
    its values (additive smoothing ``alpha``), as ``eges synth`` draws each field given the
    community. The neighbours are that community's k most active other items."""
    num_comm = int(community.max()) + 1
    onehot = sp.csr_matrix(
        (np.ones(len(community)), (community, np.arange(len(community)))),
        shape=(num_comm, len(community)),
    )
    counts = np.asarray((onehot @ x).todense())  # (communities, tokens)
    sizes = np.bincount(community, minlength=num_comm).astype(np.float64)
    by_activity = [
        np.flatnonzero(community == c)[np.argsort(-activity[community == c], kind="stable")]
        for c in range(num_comm)
    ]
    out = np.empty((len(queries), k), dtype=np.int64)
    for row, q in enumerate(queries):
        xq = x[q].toarray().ravel()
        c_counts, c_sizes = counts.copy(), sizes.copy()
        c_counts[community[q]] -= xq  # leave the query out of its own community's counts
        c_sizes[community[q]] -= 1
        theta = np.empty_like(c_counts)
        for f in np.unique(fields):
            cols = fields == f
            total = c_counts[:, cols].sum(1, keepdims=True) + alpha * cols.sum()
            theta[:, cols] = np.log(c_counts[:, cols] + alpha) - np.log(total)
        log_post = np.log(np.maximum(c_sizes, 1e-12)) + theta @ xq
        members = [i for i in by_activity[int(np.argmax(log_post))] if i != q][:k]
        out[row] = (members + [-1] * k)[:k]
    return out


def heldout_rows(walk_dir: Path, row_of: dict[str, int]) -> np.ndarray:
    """Rows (in ``row_of``) of the held-out items of an items-split walk output."""
    manifest = schema.read_manifest(walk_dir)
    if manifest.get("split", {}).get("kind") != "items":
        raise SystemExit(f"{walk_dir} is not an items split (split.kind: items)")
    pairs = schema.read_table(walk_dir / schema.EVAL_DIR / "heldout_neighbours", schema.EDGE_SCHEMA)
    held = set(pairs["src"].to_numpy().tolist())
    items = pq.read_table(walk_dir / schema.ITEMS_DIR, columns=["item_idx", "item_id"])
    ids = [
        i for i, x in zip(items["item_id"].to_pylist(), items["item_idx"].to_pylist()) if x in held
    ]
    return np.array(sorted(row_of[i] for i in ids))


def precision(neighbours: np.ndarray, community: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(Q,) each query's precision@K: the share of its K neighbours in its community."""
    found = np.where(neighbours >= 0, community[np.maximum(neighbours, 0)], -1)
    return (found == community[queries][:, None]).mean(1)


def ratio_interval(
    a: np.ndarray, b: np.ndarray, rounds: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """mean(a) / mean(b) over the same queries, with a 95% paired bootstrap over queries."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(a), (rounds, len(a)))
    boot = a[pick].mean(1) / np.maximum(b[pick].mean(1), 1e-12)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(a.mean() / max(b.mean(), 1e-12)), float(lo), float(hi)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synth", required=True, help="an eges synth output directory")
    p.add_argument("--run", required=True, help="a run trained on walks of that log")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=1.0, help="the oracle's additive smoothing")
    p.add_argument("--walks", help="the run's walk output; items split: its held-out items")
    args = p.parse_args()
    # every query is also in the run's export, and eges embed warns about each such id
    logging.getLogger("eges.serving").setLevel(logging.ERROR)
    synth = Path(args.synth)
    truth = pd.read_csv(synth / "communities.csv").set_index("movieId")["community"]
    activity = pd.read_csv(synth / "ratings.csv", usecols=["movieId"])["movieId"].value_counts()

    embedder = Embedder(args.run)
    new = load_new_items(
        synth / "movies.csv", embedder.fields, layout="movielens", tags=synth / "tags.csv"
    )
    ids = np.array([int(i) for i in new.ids])
    community = truth.reindex(ids).to_numpy()
    acts = activity.reindex(ids).fillna(0).to_numpy()
    row_of = {str(i): r for r, i in enumerate(ids)}
    held = heldout_rows(Path(args.walks), row_of) if args.walks else None
    rng = np.random.default_rng(args.seed)
    pool = np.arange(len(ids)) if held is None else held
    queries = np.sort(rng.choice(pool, min(args.queries, len(pool)), replace=False))

    x, fields = token_matrix(new.items)
    results = {
        CONTENT: precision(content_neighbours(x, queries, args.k), community, queries),
        ORACLE: precision(
            oracle_neighbours(x, fields, community, acts, queries, args.k, args.alpha),
            community,
            queries,
        ),
    }
    learned = embedder.model.cold_weights.clone()
    weightings = {RUN_WEIGHTS: learned}
    if not torch.equal(learned, torch.ones_like(learned)):
        weightings[EQUAL_WEIGHTS] = torch.ones_like(learned)
    for weighting, weights in weightings.items():
        embedder.model.cold_weights.copy_(weights)
        vectors, _ = embedder.embed([new.items[q] for q in queries])
        for metric in ("cosine", "context"):
            lists = embedder.most_similar(
                vectors, args.k, metric=metric, ids=[new.ids[q] for q in queries]
            )
            found = np.array(
                [
                    ([row_of.get(n.item_id, -1) for n in ns] + [-1] * args.k)[: args.k]
                    for ns in lists
                ]
            )
            results[f"EGES side information only, {weighting}, {metric}"] = precision(
                found, community, queries
            )
    embedder.model.cold_weights.copy_(learned)
    print(f"{len(queries)} queries of {len(ids)} items, {community.max() + 1} communities")
    fields = ", ".join(f"{f} {w:.3f}" for f, w in zip(embedder.fields, learned.tolist()))
    print(f"the run's field weights for new items: {fields}")
    print(f"| scorer | precision@{args.k} |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value.mean():.3f} |")
    content, oracle = results[CONTENT], results[ORACLE]
    for metric in ("cosine", "context"):
        served = results[f"EGES side information only, {RUN_WEIGHTS}, {metric}"]
        pairs = [("content", content), ("the oracle", oracle)]
        equal = results.get(f"EGES side information only, {EQUAL_WEIGHTS}, {metric}")
        if equal is not None:
            pairs.append(("equal field weights", equal))
        print(f"\nEGES ({RUN_WEIGHTS}, {metric}) against (95% paired bootstrap over queries):")
        for name, other in pairs:
            r, lo, hi = ratio_interval(served, other)
            print(f"- {name}: {r:.3f}x ({lo:.3f}-{hi:.3f})")


if __name__ == "__main__":
    main()
