"""The models EGES is compared with, and one scoring interface for all of them.

A :class:`Scorer` gives a score to (query item, candidate item) pairs. Every model in the
evaluation is one, so every task scores them the same way:

* :class:`VectorScorer` — cosine similarity of item vectors: EGES/GES/BGE exports and
  :func:`deepwalk` (gensim skip-gram on the same walks, the paper's BGE as most users run it);
  a content-only model: :func:`content_vectors` (TF-IDF over side-info values, fields prefixed).
* :class:`ContextScorer` — the same models scored as skip-gram predicts: H_q · Z_c with the
  context table Z (shown as ``<model>·ctx``);
* :class:`MatrixScorer` — :func:`cooccurrence` counts: how often two items appear within
  ``window`` positions of each other in the training walks (the same walks the learned models
  see, so link prediction's hidden pairs are not leaked).
* :class:`TableScorer` — what is served: a query's neighbours as the run's neighbour table
  (``eges.serving.neighbors``) lists them, in its order; an item it does not list for the query is
  not
  retrieved at all (shown as ``<model>·table``);
* :class:`PopularityScorer` — the candidate's frequency in the training walks (product of the
  two frequencies for a pair: preferential attachment).
* :class:`RandomScorer` — a seeded uniform score.

``covered(items)`` says which items a model has a representation for; an item it does not cover
scores 0 against everything, and the evaluation reports coverage (a model that covers none of
a task's queries is reported as unable to score it, not skipped).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from eges.training.items import ItemTable

log = logging.getLogger(__name__)


class Scorer:
    """Scores item pairs; subclasses implement :meth:`score` and :meth:`covered`."""

    name = "scorer"

    def covered(self, items: np.ndarray) -> np.ndarray:
        """(N,) bool: which items the model can represent."""
        raise NotImplementedError

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(Q, C) scores of every candidate for every query (float)."""
        raise NotImplementedError

    def pair_scores(self, a: np.ndarray, b: np.ndarray, block: int = 4096) -> np.ndarray:
        """(N,) scores of the pairs (a[i], b[i])."""
        out = np.empty(len(a), dtype=np.float64)
        for lo in range(0, len(a), block):
            qa, qb = a[lo : lo + block], b[lo : lo + block]
            uniq, inv = np.unique(qb, return_inverse=True)
            s = self.score(qa, uniq)  # (n, U)
            out[lo : lo + block] = s[np.arange(len(qa)), inv]
        return out


class VectorScorer(Scorer):
    """Cosine similarity of item vectors.

    Args:
        name: model name for the report.
        item_idx: (M,) items that have a vector.
        vectors: (M, D).
        num_items: V (indices run 1..V).
    """

    def __init__(
        self, name: str, item_idx: np.ndarray, vectors: np.ndarray, num_items: int
    ) -> None:
        self.name = name
        d = vectors.shape[1]
        self.table = np.zeros((num_items + 1, d), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.table[item_idx] = vectors / np.maximum(norms, 1e-12)
        self.has = np.zeros(num_items + 1, dtype=bool)
        self.has[item_idx] = norms[:, 0] > 0

    def covered(self, items: np.ndarray) -> np.ndarray:
        return self.has[items]

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return self.table[queries] @ self.table[candidates].T  # (Q, C)


class ContextScorer(VectorScorer):
    """Skip-gram's own prediction: the query's vector dotted with the candidate's context
    (output) vector, H_q · Z_c — the logit of "c occurs near q" the model was trained on —
    plus the candidate's ``bias`` (the served popularity prior β·ln(walk count), as
    ``eges neighbors`` adds it). A pair scores the mean of both directions.

    Args:
        name: model name for the report.
        item_idx: (M,) items with a vector H (cold items included).
        vectors: (M, D) H.
        context: (V + 1, D) Z; rows of items never trained are zero.
        bias: (V + 1,) added to a candidate's score; None: H·Z alone.
        pairs: sparse (V + 1, V + 1) added to the score of each pair (the served score's
            co-occurrence term γ·ln(1 + co-occurrences), symmetric); None: nothing.
    """

    def __init__(
        self,
        name: str,
        item_idx: np.ndarray,
        vectors: np.ndarray,
        context: np.ndarray,
        bias: np.ndarray | None = None,
        pairs: sp.csr_matrix | None = None,
    ) -> None:
        self.name = name
        self.bias = np.zeros(len(context)) if bias is None else np.asarray(bias, dtype=np.float64)
        self.pairs = None if pairs is None else pairs.tocsr()
        num_rows, d = context.shape
        self.table = np.zeros((num_rows, d), dtype=np.float32)
        self.table[item_idx] = vectors
        self.context = np.asarray(context, dtype=np.float32)
        self.has = np.zeros(num_rows, dtype=bool)
        self.has[item_idx] = np.abs(vectors).sum(1) > 0

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        out = self.table[queries] @ self.context[candidates].T + self.bias[candidates]  # (Q, C)
        if self.pairs is not None:  # the pairs' nonzeros only: a block's rows, then columns
            rows = self.pairs[queries].tocoo()
            column = np.full(self.pairs.shape[1], -1)
            column[candidates] = np.arange(len(candidates))
            keep = column[rows.col] >= 0
            out = np.asarray(out, dtype=np.float64)
            np.add.at(out, (rows.row[keep], column[rows.col[keep]]), rows.data[keep])
        return out

    def pair_scores(self, a: np.ndarray, b: np.ndarray, block: int = 4096) -> np.ndarray:
        ab = (self.table[a] * self.context[b]).sum(1) + self.bias[b]
        ba = (self.table[b] * self.context[a]).sum(1) + self.bias[a]
        both = (ab + ba) / 2.0
        if self.pairs is not None:  # symmetric: the same in both directions
            both = both + np.asarray(self.pairs[a, b]).ravel()
        return both


class SparseVectorScorer(VectorScorer):
    """Cosine similarity of sparse row vectors (TF-IDF)."""

    def __init__(self, name: str, rows: sp.csr_matrix) -> None:
        self.name = name
        norms = np.sqrt(np.asarray(rows.multiply(rows).sum(1)).ravel())  # (V+1,)
        self.table = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ rows)
        self.has = norms > 0

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return (self.table[queries] @ self.table[candidates].T).toarray()


class TableScorer(Scorer):
    """The served neighbour table: candidate c of query q scores K + 1 − rank when q's row lists
    c at that rank, and −inf (never retrieved) otherwise; a pair scores the better of its two
    directions (0 when neither lists the other). Ranking tasks score :meth:`listed` as shown
    (see ``eges.evaluation.evaluate.rank_queries``): a listed item that is not a candidate of the
    task still
    takes its slot.

    Args:
        name: model name for the report.
        table: ``neighbors.parquet`` (``item_id``, ``neighbor_id``, ``rank``).
        item_ids: raw id of every item_idx (index 0 = padding).
    """

    def __init__(self, name: str, table: pa.Table, item_ids: list[str]) -> None:
        self.name = name
        ids = pa.array(item_ids[1:], pa.string())  # position p holds item_idx p + 1
        q, c = (self._positions(table[col], ids) + 1 for col in ("item_id", "neighbor_id"))
        rank = table["rank"].to_numpy().astype(np.float64)
        top_k = rank.max(initial=0.0)
        n = len(item_ids)
        self.matrix = sp.csr_matrix((top_k + 1.0 - rank, (q, c)), shape=(n, n))
        self.has = np.asarray(self.matrix.getnnz(axis=1)).ravel() > 0

    @staticmethod
    def _positions(column: pa.ChunkedArray, ids: pa.Array) -> np.ndarray:
        pos = pc.index_in(column, value_set=ids).combine_chunks()
        if pos.null_count:
            raise ValueError(
                f"the neighbour table names {pos.null_count} items that are not in "
                "the item table of the walks it is scored on"
            )
        return pos.to_numpy().astype(np.int64)

    def covered(self, items: np.ndarray) -> np.ndarray:
        return self.has[items]

    def listed(self, query: int) -> np.ndarray:
        """The items the table lists for ``query``, best first (what a recommender shows; the
        evaluation ranks these, not only the task's candidates)."""
        lo, hi = self.matrix.indptr[query], self.matrix.indptr[query + 1]
        order = np.argsort(-self.matrix.data[lo:hi], kind="stable")
        return self.matrix.indices[lo:hi][order]

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        s = self.matrix[queries][:, candidates].toarray()  # (Q, C)
        return np.where(s > 0, s, -np.inf)

    def pair_scores(self, a: np.ndarray, b: np.ndarray, block: int = 4096) -> np.ndarray:
        ab = np.asarray(self.matrix[a, b]).ravel()
        ba = np.asarray(self.matrix[b, a]).ravel()
        return np.maximum(ab, ba)


class MatrixScorer(Scorer):
    """Scores read from a sparse (V+1, V+1) item-item matrix (co-occurrence counts)."""

    def __init__(self, name: str, matrix: sp.csr_matrix) -> None:
        self.name = name
        self.matrix = matrix.tocsr()
        self.has = np.asarray(self.matrix.getnnz(axis=1)).ravel() > 0

    def covered(self, items: np.ndarray) -> np.ndarray:
        return self.has[items]

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return self.matrix[queries][:, candidates].toarray().astype(np.float64)


class PopularityScorer(Scorer):
    """The candidate's frequency in the training walks; a pair scores the product."""

    name = "popularity"

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = np.asarray(counts, dtype=np.float64)

    def covered(self, items: np.ndarray) -> np.ndarray:
        return np.ones(len(items), dtype=bool)  # non-personalised: scores any query

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts[candidates], (len(queries), len(candidates))).copy()

    def pair_scores(self, a: np.ndarray, b: np.ndarray, block: int = 4096) -> np.ndarray:
        return self.counts[a] * self.counts[b]


class RandomScorer(Scorer):
    """Uniform random scores from a seed (the floor every model must beat)."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def covered(self, items: np.ndarray) -> np.ndarray:
        return np.ones(len(items), dtype=bool)

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return self.rng.random((len(queries), len(candidates)))


def read_walks(walk_dir: str | Path) -> list[np.ndarray]:
    """Every walk of a walk output as an integer array, as stored (int64; int32 in format 1),
    for gensim and the co-occurrence counts."""
    from eges import schema

    walks: list[np.ndarray] = []
    for path in schema.parquet_files(Path(walk_dir) / schema.WALKS_DIR):
        col = pq.read_table(path, columns=["items"]).column("items").combine_chunks()
        flat = col.flatten().to_numpy()
        offsets = col.offsets.to_numpy()
        walks += np.split(flat, offsets[1:-1])
    return walks


def cooccurrence(walks: list[np.ndarray], num_items: int, window: int) -> sp.csr_matrix:
    """Symmetric counts of item pairs within ``window`` positions in the walks (i ≠ j).

    Returns:
        (V+1, V+1) csr matrix of float64 counts.
    """
    length = max((len(w) for w in walks), default=0)
    padded = np.zeros((len(walks), length), dtype=np.int64)
    for i, w in enumerate(walks):
        padded[i, : len(w)] = w
    rows, cols = [], []
    for d in range(1, min(window, length - 1) + 1):
        a, b = padded[:, :-d].ravel(), padded[:, d:].ravel()  # (B*(L-d),)
        ok = (a > 0) & (b > 0) & (a != b)
        rows.append(a[ok])
        cols.append(b[ok])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    n = num_items + 1
    m = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)).tocsr()
    return (m + m.T).tocsr()


def content_vectors(items: ItemTable) -> sp.csr_matrix:
    """TF-IDF rows over every side-info value of every item (binary term frequency, smoothed
    idf ``log((1 + N) / (1 + df)) + 1``; a value is its field and vocabulary index, so equal
    strings in two fields stay distinct).

    Returns:
        (V+1, total vocabulary) csr matrix; row 0 and items without side info are empty.
    """
    n = items.num_items + 1
    blocks = []
    for off, val, size in zip(items.offsets, items.values, items.vocab_sizes):
        off, val = off.numpy(), val.numpy()
        lengths = np.diff(off)[:n]  # per item, row 0 included
        rows = np.repeat(np.arange(n), lengths)
        m = sp.csr_matrix((np.ones(len(val)), (rows, val)), shape=(n, size + 1))
        m.data[:] = 1.0  # binary: duplicates were summed on construction, a value counts once
        blocks.append(m)
    if not blocks:
        return sp.csr_matrix((n, 1))
    x = sp.hstack(blocks).tocsr()
    df = np.asarray((x > 0).sum(0)).ravel()
    idf = np.log((1.0 + n - 1) / (1.0 + df)) + 1.0
    return sp.csr_matrix(x @ sp.diags(idf))


def deepwalk(
    walks: list[np.ndarray],
    num_items: int,
    *,
    embedding_dim: int,
    window: int,
    num_negatives: int,
    ns_exponent: float = 0.75,
    epochs: int,
    seed: int,
    workers: int = 2,
    lr: float = 0.025,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """gensim ``Word2Vec`` skip-gram on the walks (DeepWalk), set up for a fair comparison with
    this trainer: same window, negatives, dimension and epochs; ``sample=0`` (no down-sampling of
    frequent items) and ``shrink_windows=False`` (gensim otherwise draws a smaller window per
    position and forms fewer pairs). The evaluation's defaults (``evaluate.deepwalk_lr``,
    ``deepwalk_ns_exponent``) are gensim's own learning rate and ``ns_exponent`` 0.75, the best
    exponent on ml-latest-small's next item (H·Z HR@50 0.133 against 0.130 at 0.5 and 0.119 at
    0.25, 2026-11-30, bench/results.md).

    Returns:
        (item_idx (M,), vectors (M, D), context vectors (M, D), training seconds).
    """
    from gensim.models import Word2Vec

    sentences = [[str(i) for i in w] for w in walks]
    model = Word2Vec(
        vector_size=embedding_dim,
        window=window,
        negative=num_negatives,
        ns_exponent=ns_exponent,
        sg=1,
        hs=0,
        min_count=1,
        sample=0,
        shrink_windows=False,
        workers=workers,
        seed=seed,
        alpha=lr,
        min_alpha=min(lr, 1e-4),  # gensim decays to 1e-4: from a smaller lr that would rise
    )
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=epochs)
    seconds = time.perf_counter() - start
    keys = model.wv.index_to_key
    idx = np.array([int(k) for k in keys], dtype=np.int64)
    keep = (idx >= 1) & (idx <= num_items)
    return idx[keep], model.wv.vectors[keep], model.syn1neg[keep], seconds
