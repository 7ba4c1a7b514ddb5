"""Candidate generation: the item-to-item top-K similarity table a recommender consumes.

    eges neighbors --run RUN_DIR --top-k 100 [--metric context|cosine|dot]
        [--popularity-prior 0.4] [--cooccurrence-weight 1]
        [--method exact|hnsw] [--block-size 4096] [--min-score S] [--exclude ITEMS.txt]
        [--same-field genres] [--output DIR] [--device auto|cpu|cuda]

writes ``RUN/neighbors/`` (or ``--output``) atomically, manifest last::

    neighbors.parquet   item_id, neighbor_id (raw ids), rank int32 (1 = nearest), score float32,
                        with --names also neighbor_name string (display name; null if none)
    manifest.json       counts, settings, timings, and for --method hnsw its recall@K vs exact

for every exported item (warm and cold), the item itself excluded.

Metrics: ``context`` (the default with exact search) scores a neighbour c of item q by
skip-gram's own prediction H_q · Z_c with the trained context table Z ("what occurs near q"):
it carries popularity, which cosine removes, and only items that were trained (have a context
row) can be neighbours, so a new item is never filled with other new items. It is the default
because it measured best for both cold-start and next-item neighbours on MovieLens
(docs/evaluation.md).
The served score adds a popularity prior, ``--popularity-prior`` β times ln(walk count of c)
(default 0.4): skip-gram's H·Z approaches log P(c | q) − log(K · P_noise(c)); negatives drawn
from unigram^0.75 take 0.75 · ln(count of c) out of it, and giving part of that back ranks
held-out co-occurrences and next items better (docs/evaluation.md); 0 serves H·Z alone. Exact
search only; a prior given with another metric, or a negative one, is refused. ``cosine`` (the
default with hnsw) and ``dot`` compare exported vectors.

``--cooccurrence-weight`` γ (context metric, default 0) adds item-based evidence for warm items:
γ · ln(1 + n_qc), where n_qc counts how often q and c followed each other in the training
sessions (the edge weights of the walk output the run was trained on, both directions). Items
that never met, and every new item, get nothing from it. On MovieLens it lifts the head of the
list (HR@10, MRR) above both H·Z and co-occurrence counting alone (docs/evaluation.md).

A run can hold its own default, chosen for its data on a validation hold-out by ``eges evaluate``
(``RUN/serving.json``, see :func:`served_score`): it replaces the metric, prior and
co-occurrence weight above when they are not given, and is ignored, with a warning, once the
run is trained again.

* **exact**: blocks of queries × all items with one matrix product each (torch; on the GPU when
  there is one), so memory is bounded by ``block_size × items``, not items².
* **hnsw**: faiss' HNSW graph index (inner product on normalised vectors for cosine), for
  catalogues where exact search is too slow; its recall@K against exact search on a sample of
  queries is measured and written to the manifest.

Filters: ``--min-score`` drops weaker neighbours (an item may then have fewer than K; a score
that is not a finite number is refused); ``--exclude`` never returns the listed items as
neighbours (e.g. unavailable ones; a UTF-8 file, one raw id a line, whatever the locale);
``--same-field F`` keeps only neighbours sharing at least one value of side-info field F.

New items need no recomputation: ``eges embed --output`` writes their neighbours in
the same schema, with the same exact search (:func:`exact_topk`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

from eges import schema
from eges.cli import fail, parser
from eges.config import POPULARITY_PRIOR
from eges.quiet import setup_logging
from eges.training.export import read_context, read_embeddings, read_export_manifest

log = logging.getLogger(__name__)

NEIGHBORS_DIR = "neighbors"
NEIGHBORS_FORMAT = "eges-neighbors"
METRICS = ("cosine", "dot", "context")
NEIGHBORS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("neighbor_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
)
# with --names: the neighbour's display name from the walk output's item table (null if none)
NEIGHBORS_NAMES_SCHEMA = NEIGHBORS_SCHEMA.append(pa.field("neighbor_name", pa.string()))


def run_item_names(run_dir: str | Path, export: dict[str, Any] | None = None) -> dict[str, str]:
    """item_id -> display name of a run's items, read from the item table of the walk output
    it was trained on (never from the raw input files); empty when that table has no names
    (a layout without names, or a walk output written before they were kept) or is gone."""
    export = export or read_export_manifest(run_dir)
    items = Path(export["walks"]) / schema.ITEMS_DIR
    if not items.is_dir():
        log.info("no item names: the walk output's item table %s is not there", items)
        return {}
    return schema.item_names(items)


def context_candidates(
    run_dir: str | Path, item_idx: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """The context rows Z of the exported items, for ``--metric context``: ((M, D) Z, (M,) which
    items were trained). A cold item has no trained context row and is never a neighbour."""
    z = torch.from_numpy(read_context(run_dir, item_idx))  # (M, D)
    return z, z.abs().sum(1) > 0


def check_weight(flag: str, value: float) -> None:
    """Raises ValueError unless ``value`` (of option ``flag``) is a finite number >= 0."""
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{flag} must be a finite number >= 0, not {value}")


def check_popularity_prior(prior: float) -> None:
    """Raises ValueError unless ``prior`` is a finite number >= 0."""
    check_weight("--popularity-prior", prior)


def resolve_popularity_prior(prior: float | None, metric: str) -> float:
    """The ``--popularity-prior`` to use: the default when it was not given.

    Raises:
        ValueError: it was given with a metric other than ``context`` (which ignores it), or it
            is negative or not finite.
    """
    if prior is None:
        return POPULARITY_PRIOR
    if metric != "context":
        raise ValueError(
            f"--popularity-prior is added to the context metric's H·Z only: it was given with "
            f"--metric {metric}, which ignores it (leave it out, or use --metric context)"
        )
    check_popularity_prior(prior)
    return prior


SERVING_FILE = "serving.json"  # in a run directory: the served score chosen on validation


def export_digest(run: str | Path) -> str | None:
    """A digest of the run's export manifest: which training a serving choice was made for."""
    path = Path(run) / "export" / schema.MANIFEST
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


# the parts of a serving choice: the neighbour table of trained items (the file's top level,
# chosen on next item) and new items' neighbours (under "new_items", chosen on cold start)
SERVING_USES = ("neighbors", "new_items")


def read_serving_choice(run: str | Path, use: str = "neighbors") -> dict[str, Any] | None:
    """The served score written into ``run`` by ``eges evaluate`` on a validation hold-out for
    ``use`` (:data:`SERVING_USES`; new items without a choice of their own get the neighbour
    table's): ``metric``, ``popularity_prior``, ``cooccurrence_weight`` and how they were
    chosen. None when there is none for that use, or when it was chosen for an earlier training
    of the run (a warning says so).

    Raises:
        ValueError: the file is there but not a valid choice.
    """
    if use not in SERVING_USES:
        raise ValueError(f"unknown use {use!r} of a serving choice (known: {SERVING_USES})")
    path = Path(run) / SERVING_FILE
    if not path.is_file():
        return None
    try:
        whole = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(whole, dict):
            raise TypeError("not an object")
        part = None if use == "neighbors" else whole.get(use)
        if part is not None and not (isinstance(part, dict) and "metric" in part):
            raise TypeError(f"{use!r} is not a choice")
        # new items without a choice of their own get the neighbour table's, when there is one
        choice = part if part is not None else whole if "metric" in whole else None
        if choice is not None:
            metric = choice["metric"]
            prior = float(choice.get("popularity_prior", POPULARITY_PRIOR))
            weight = float(choice.get("cooccurrence_weight", 0.0))  # absent before it existed
            fields = choice.get("field_weights") or {}  # new items' only; absent before
            fields = {str(f): float(w) for f, w in fields.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a valid serving choice ({exc}): remove it") from None
    if choice is None:
        return None
    if (
        metric not in ("context", "cosine")
        or not all(math.isfinite(x) and x >= 0 for x in (prior, weight))
        or not all(math.isfinite(w) and w > 0 for w in fields.values())
    ):
        raise ValueError(
            f"{path}: unknown metric {metric!r}, or a bad prior {prior!r}, co-occurrence "
            f"weight {weight!r} or field weights {fields!r}: remove it"
        )
    if whole.get("export_digest") != export_digest(run):
        log.warning(
            "%s was chosen for an earlier training of this run: ignored (run the validation "
            "evaluation again to choose for this one)",
            path,
        )
        return None
    return {
        **choice,
        "popularity_prior": prior,
        "cooccurrence_weight": weight,
        "field_weights": fields or None,
        "use": use if part is not None else "neighbors",  # which part it came from
    }


def score_label(metric: str, prior: float, cooccurrence: float = 0.0) -> str:
    """How a served score reads in messages: ``H·Z + 0.4·ln(walk count)`` (with
    ``+ 1·ln(1 + co-occurrences)`` when ``cooccurrence`` is not 0) or ``cosine``."""
    if metric != "context":
        return metric
    label = f"H·Z + {prior:g}·ln(walk count)"
    return label + (f" + {cooccurrence:g}·ln(1 + co-occurrences)" if cooccurrence else "")


class Served(NamedTuple):
    """The served score: ``metric``, ``prior`` (β), ``cooccurrence`` (γ); ``chosen``, the
    run's choice file when it decided any of them (else None), and ``chosen_for``, the use
    (:data:`SERVING_USES`) whose choice that was; ``field_weights``, the side-info field weights
    of new items' choice (``EGES.set_cold_weights``; served even when ``--metric`` and
    ``--popularity-prior`` are given), or None for the run's own."""

    metric: str
    prior: float
    cooccurrence: float
    chosen: Path | None
    chosen_for: str | None = None
    field_weights: dict[str, float] | None = None


def served_score(
    run: str | Path,
    metric: str | None,
    prior: float | None,
    method: str = "exact",
    cooccurrence: float | None = None,
    use: str = "neighbors",
) -> Served:
    """The metric, popularity prior and co-occurrence weight to serve for ``use`` (the
    neighbour table, or ``new_items``): those given, else the run's choice for that use
    (:func:`read_serving_choice`), else the defaults (context with the prior
    ``POPULARITY_PRIOR`` and no co-occurrence term for an exact search, cosine for HNSW).

    Raises:
        ValueError: see :func:`resolve_popularity_prior` and :func:`read_serving_choice`; a
            co-occurrence weight with a metric other than context, or negative.
    """
    choice = read_serving_choice(run, use) or {}
    chosen = None
    if metric is None:
        if method != "exact":
            metric = "cosine"
        elif prior is not None or cooccurrence is not None:
            metric = "context"  # the prior and the co-occurrence term belong to it
        elif choice:
            metric, chosen = choice["metric"], Path(run) / SERVING_FILE
        else:
            metric = "context"
    from_choice = metric == "context" and choice.get("metric") == "context"
    if prior is None and from_choice:
        prior, chosen = choice["popularity_prior"], Path(run) / SERVING_FILE
    if cooccurrence is None:
        cooccurrence = 0.0
        if from_choice and choice["cooccurrence_weight"]:
            cooccurrence, chosen = choice["cooccurrence_weight"], Path(run) / SERVING_FILE
    elif metric != "context":
        raise ValueError(
            f"--cooccurrence-weight is added to the context metric's H·Z only: it was given "
            f"with --metric {metric}, which ignores it (leave it out, or use --metric context)"
        )
    check_cooccurrence_weight(cooccurrence)
    prior = resolve_popularity_prior(prior, metric)
    # new items' field weights say how to embed a new item: served whenever new items have a
    # choice, whatever metric and prior are given
    fields = choice.get("field_weights") if choice.get("use") == "new_items" else None
    return Served(metric, prior, cooccurrence, chosen, choice["use"] if chosen else None, fields)


def check_cooccurrence_weight(weight: float) -> None:
    """Raises ValueError unless ``weight`` is a finite number >= 0."""
    check_weight("--cooccurrence-weight", weight)


def cooccurrence_counts(walk_dir: str | Path, item_idx: np.ndarray) -> sp.csr_matrix:
    """(M, M) float64 counts between the items ``item_idx`` (in that order, e.g. an export's
    rows): how often q was followed by c plus how often c was followed by q in the training
    sessions, i.e. the walk output's edge weights in both directions (symmetric; 0 on the
    diagonal, where the graph has no self-loops)."""
    table = schema.read_table(Path(walk_dir) / schema.EDGES_DIR, schema.EDGE_SCHEMA)
    src, dst = table["src"].to_numpy(), table["dst"].to_numpy()
    weight = table["weight"].to_numpy().astype(np.float64)
    size = 1 + max(int(src.max(initial=0)), int(dst.max(initial=0)), int(item_idx.max(initial=0)))
    row = np.full(size, -1)
    row[item_idx] = np.arange(len(item_idx))
    a, b = row[src], row[dst]
    ok = (a >= 0) & (b >= 0)  # an item without a vector (no export row) is never served
    n = len(item_idx)
    m = sp.coo_matrix((weight[ok], (a[ok], b[ok])), shape=(n, n)).tocsr()
    return (m + m.T).tocsr()


def log_cooccurrences(walk_dir: str | Path, item_idx: np.ndarray) -> sp.csr_matrix:
    """ln(1 + :func:`cooccurrence_counts`): the served score's co-occurrence term before its
    weight γ."""
    m = cooccurrence_counts(walk_dir, item_idx)
    m.data = np.log1p(m.data)
    return m


def cooccurrence_bonus(
    run_dir: str | Path, export: dict[str, Any], item_idx: np.ndarray, weight: float
) -> sp.csr_matrix | None:
    """(M, M) ``weight`` · ln(1 + co-occurrences) between the exported items ``item_idx``
    (:func:`cooccurrence_counts` of the walk output the run was trained on), the served
    score's item-based evidence; None when ``weight`` is 0.

    Raises:
        ValueError: ``weight`` is negative or not finite; the walk output's edge table is gone,
            or the walk output was written again after the run was trained.
    """
    check_cooccurrence_weight(weight)
    if weight == 0:
        return None
    walk_dir = Path(export["walks"])
    if not (walk_dir / schema.EDGES_DIR).is_dir():
        raise ValueError(
            f"the co-occurrence term reads the edge table of the walk output the run was "
            f"trained on, {walk_dir / schema.EDGES_DIR}, which is not there: restore it, or "
            "serve without the term (--cooccurrence-weight 0)"
        )
    digest = export.get("walks_manifest_sha256")
    if digest and digest != schema.manifest_digest(walk_dir):
        raise ValueError(
            f"the walk output {walk_dir} was written again after the run {run_dir} was "
            "trained, so its co-occurrences are not the ones the run learned from: train the "
            "run again, or serve without the term (--cooccurrence-weight 0)"
        )
    return weight * log_cooccurrences(walk_dir, item_idx)


def finite_float(text: str) -> float:
    """argparse type: a float that is a finite number (not nan, inf)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return x


def log_count_prior(counts: np.ndarray, prior: float) -> np.ndarray:
    """``prior`` · ln(count) per item, the popularity prior added to H·Z (float64); a count of
    0 (a cold item, never a candidate of ``--metric context``) gives 0."""
    return prior * np.log(np.maximum(np.asarray(counts, dtype=np.float64), 1.0))


def popularity_bias(emb: pa.Table, prior: float) -> torch.Tensor | None:
    """(M,) ``prior`` · ln(walk count) of the exported items (``embeddings.parquet``'s rows), the
    popularity prior added to H·Z (:func:`log_count_prior`); None when ``prior`` is 0.

    Raises:
        ValueError: ``prior`` is negative or not finite; the export has no walk counts (written
            before they were kept).
    """
    check_popularity_prior(prior)
    if prior == 0:
        return None
    if "walk_count" not in emb.column_names:
        raise ValueError(
            "this export has no walk counts (it was written by an older version): train "
            "the run again, or serve H·Z alone with --popularity-prior 0"
        )
    return torch.from_numpy(log_count_prior(emb["walk_count"].to_numpy(), prior)).float()


def prepare(vectors: np.ndarray | torch.Tensor, metric: str) -> torch.Tensor:
    """float32 tensor, rows L2-normalised for cosine (raw for dot and context)."""
    x = torch.as_tensor(vectors, dtype=torch.float32)
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    elif metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    return x


def shares_value(groups: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(len(rows), M) bool: whether item ``rows[r]`` and item m have a side-info value in common.

    Args:
        groups: sparse (M, V) 0/1 matrix of the items' values (see :func:`field_groups`).
        rows: item rows to compare with every item.
    """
    block = groups.index_select(0, rows.to(groups.device))  # sparse (b, V)
    return torch.sparse.mm(block, groups.t()).to_dense() > 0  # (b, M)


def exact_topk(
    queries: torch.Tensor,
    items: torch.Tensor,
    k: int,
    *,
    block_size: int = 4096,
    self_index: torch.Tensor | None = None,
    allowed: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    pair_bonus: sp.csr_matrix | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by inner product (plus a per-item ``bias`` and a per-pair ``pair_bonus``),
    query block by query block.

    Args:
        queries: (Q, D) (already normalised for cosine).
        items: (M, D).
        k: neighbours per query (k <= M).
        block_size: queries per matrix product; memory is O(block_size × M).
        self_index: (Q,) column of each query's own item, excluded (-1: none).
        allowed: (M,) bool, items that may be returned.
        groups: sparse (M, V) values of the items; when given, the queries are the items
            ``self_index`` and a neighbour must share a value with its query.
        bias: (M,) added to every query's score of each item (the popularity prior).
        pair_bonus: sparse (Q, M) added to the scores of those pairs (the co-occurrence term).

    Returns:
        (indices (Q, k) int64, scores (Q, k) float32); excluded slots have score -inf.
    """
    device = items.device
    bias = None if bias is None else bias.to(device)
    out_idx, out_score = [], []
    for lo in range(0, queries.shape[0], block_size):
        q = queries[lo : lo + block_size].to(device)
        scores = q @ items.T  # (b, M)
        if bias is not None:
            scores += bias
        if pair_bonus is not None:
            part = pair_bonus[lo : lo + block_size].tocoo()
            at = (torch.from_numpy(part.row).long(), torch.from_numpy(part.col).long())
            value = torch.from_numpy(part.data).to(device=device, dtype=scores.dtype)
            scores.index_put_(tuple(a.to(device) for a in at), value, accumulate=True)
        if self_index is not None:
            own = self_index[lo : lo + block_size].to(device)
            rows = torch.nonzero(own >= 0).squeeze(1)
            scores[rows, own[rows]] = float("-inf")
        if allowed is not None:
            scores[:, ~allowed.to(device)] = float("-inf")
        if groups is not None:
            own = self_index[lo : lo + block_size]
            scores[~shares_value(groups, own).to(device)] = float("-inf")
        best = torch.topk(scores, k, dim=1)
        out_idx.append(best.indices.cpu())
        out_score.append(best.values.cpu())
    return torch.cat(out_idx), torch.cat(out_score)


def hnsw_topk(
    vectors: np.ndarray, k: int, *, m: int = 32, ef_search: int = 256, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Approximate top-k of every row among all rows with faiss' HNSW (inner product), self
    excluded.

    Returns:
        (indices (M, k), scores (M, k), build seconds); missing slots have index -1.
    """
    logging.getLogger("faiss").setLevel(
        logging.WARNING
    )  # its loader logs every CPU variant it tries
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.add(x)
    build = time.perf_counter() - start
    index.hnsw.efSearch = max(ef_search, k + 1)
    scores, idx = index.search(x, k + 1)
    own = idx == np.arange(len(x))[:, None]
    # drop the item itself (or, if it was not found, the weakest extra result)
    keep = np.where(own.any(1, keepdims=True), ~own, np.arange(k + 1)[None, :] < k)
    return (idx[keep].reshape(len(x), k), scores[keep].reshape(len(x), k), build)


def recall_at_k(
    approx: np.ndarray,
    exact: np.ndarray,
    approx_valid: np.ndarray | None = None,
    exact_valid: np.ndarray | None = None,
) -> float:
    """Mean over queries of |approximate ∩ exact| / |exact|, counting valid slots only.

    Slots that filters left empty (score -inf, index -1) are not neighbours on either side;
    queries without any exact neighbour are skipped.
    """
    if approx_valid is None:
        approx_valid = approx >= 0
    if exact_valid is None:
        exact_valid = exact >= 0
    hits = []
    for a, av, e, ev in zip(
        approx.tolist(), approx_valid.tolist(), exact.tolist(), exact_valid.tolist()
    ):
        truth = {x for x, ok in zip(e, ev) if ok}
        if truth:
            found = {x for x, ok in zip(a, av) if ok}
            hits.append(len(found & truth) / len(truth))
    return float(np.mean(hits)) if hits else float("nan")


def field_groups(walk_dir: Path, field: str, item_idx: np.ndarray) -> torch.Tensor:
    """Sparse (M, V) 0/1 matrix: which values of side-info ``field`` each exported item has."""
    manifest = schema.read_manifest(walk_dir)
    fields = [f["name"] for f in manifest["side_info_fields"]]
    if field not in fields:
        raise ValueError(f"--same-field {field!r}: not a side-info field of this run ({fields})")
    table = schema.read_items(walk_dir / schema.ITEMS_DIR, fields)
    values = dict(zip(table["item_idx"].to_pylist(), table[field].to_pylist()))
    rows, cols = [], []
    for row, idx in enumerate(item_idx.tolist()):
        for v in values.get(idx, []):
            rows.append(row)
            cols.append(v)
    size = 1 + max(cols, default=0)
    return torch.sparse_coo_tensor(
        torch.tensor([rows, cols], dtype=torch.long), torch.ones(len(rows)), (len(item_idx), size)
    ).coalesce()


def build_table(
    run_dir: str | Path,
    top_k: int,
    *,
    metric: str = "cosine",
    popularity_prior: float = POPULARITY_PRIOR,
    cooccurrence_weight: float = 0.0,
    method: str = "exact",
    block_size: int = 4096,
    min_score: float | None = None,
    exclude: set[str] | None = None,
    same_field: str | None = None,
    output: str | Path | None = None,
    device: str = "auto",
    recall_sample: int = 1000,
    names: bool = False,
) -> dict[str, Any]:
    """Compute and write the neighbour table of a run's export.

    With ``names``, the table gets a ``neighbor_name`` column (:data:`NEIGHBORS_NAMES_SCHEMA`).
    ``popularity_prior`` and ``cooccurrence_weight``: β and γ of the served score
    H·Z + β·ln(walk count) + γ·ln(1 + co-occurrences) (:func:`cooccurrence_bonus`),
    ``metric="context"`` only.

    Returns:
        The manifest written beside the table.

    Raises:
        ValueError: bad arguments (K <= 0, K >= items, unknown field or metric).
        IncompleteOutputError: the run has no finished export.
    """
    run_dir = Path(run_dir)
    export = read_export_manifest(run_dir)
    emb, vectors = read_embeddings(run_dir)
    ids = emb["item_id"].to_pylist()
    n = len(ids)
    if top_k <= 0:
        raise ValueError(f"--top-k must be positive, got {top_k}")
    if top_k >= n:
        raise ValueError(f"--top-k {top_k} must be below the number of items ({n})")
    if block_size <= 0:
        raise ValueError(f"--block-size must be positive, got {block_size}")
    if min_score is not None and not math.isfinite(min_score):
        raise ValueError(f"--min-score must be a finite number, not {min_score}")
    check_popularity_prior(popularity_prior)
    check_cooccurrence_weight(cooccurrence_weight)
    if cooccurrence_weight and metric != "context":
        raise ValueError(f"--cooccurrence-weight needs --metric context, not {metric}")
    if method not in ("exact", "hnsw"):
        raise ValueError(f"--method must be exact or hnsw, not {method!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    name_of: dict[str, str] = {}
    if names:
        name_of = run_item_names(run_dir, export)
        if not name_of:
            raise ValueError(
                f"--names: the walk output {export['walks']} has no item names "
                "(its layout has none, e.g. a generic log without "
                "data.generic.name_column, or it was written before names were "
                "kept: re-run the walk job)"
            )
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    final = Path(output) if output else run_dir / NEIGHBORS_DIR
    if final.exists():
        try:
            replaceable = schema.read_manifest(final, kind=None).get("format") == NEIGHBORS_FORMAT
        except schema.IncompleteOutputError:
            replaceable = False
        if not replaceable:
            raise ValueError(
                f"output {final} exists and is not a neighbour table: refusing to "
                "replace it (choose another --output)"
            )
    x = prepare(vectors, metric)
    candidates = x  # (M, D): what a query's vector is multiplied with
    allowed = bias = bonus = None
    if metric == "context":
        if method != "exact":
            raise ValueError("--metric context needs --method exact")
        candidates, allowed = context_candidates(run_dir, emb["item_idx"].to_numpy())
        bias = popularity_bias(emb, popularity_prior)
        bonus = cooccurrence_bonus(run_dir, export, emb["item_idx"].to_numpy(), cooccurrence_weight)
    if exclude:
        unknown = exclude - set(ids)
        if unknown:
            log.warning(
                "%d excluded ids are not in the export (ignored), e.g. %s",
                len(unknown),
                sorted(unknown)[:5],
            )
        keep = torch.tensor([i not in exclude for i in ids])
        allowed = keep if allowed is None else allowed & keep
    groups = None
    if same_field:
        walk_dir = Path(export["walks"])
        groups = field_groups(walk_dir, same_field, emb["item_idx"].to_numpy())

    start = time.perf_counter()
    stats: dict[str, Any] = {}
    items_dev = candidates.to(dev)
    if method == "exact":
        idx, scores = exact_topk(
            x,
            items_dev,
            top_k,
            block_size=block_size,
            self_index=torch.arange(n),
            allowed=allowed,
            groups=groups,
            bias=bias,
            pair_bonus=bonus,
        )
        idx, scores = idx.numpy(), scores.numpy()
    else:
        if groups is not None or allowed is not None:
            # filter after the search: ask for more candidates than K
            log.info("filters with hnsw are applied to a wider candidate list")
        wide = min(n - 1, top_k * (4 if (groups is not None or allowed is not None) else 1))
        idx, scores, build = hnsw_topk(x.numpy(), wide)
        stats["index_build_s"] = round(build, 3)
        if allowed is not None or groups is not None:
            ok = idx >= 0
            safe = np.where(ok, idx, 0)
            if allowed is not None:
                ok &= allowed.numpy()[safe]
            if groups is not None:
                for lo in range(0, n, 256):  # (256, M) at a time, never items × candidates × V
                    rows = torch.arange(lo, min(lo + 256, n))
                    shared = shares_value(groups, rows).numpy()
                    ok[lo : lo + 256] &= np.take_along_axis(shared, safe[lo : lo + 256], 1)
            scores = np.where(ok, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        idx = np.take_along_axis(idx, order, 1)
        scores = np.take_along_axis(scores, order, 1)
        sample = np.random.default_rng(0).choice(n, min(recall_sample, n), replace=False)
        exact_idx, exact_scores = exact_topk(
            x[sample],
            items_dev,
            top_k,
            block_size=block_size,
            self_index=torch.from_numpy(sample),
            allowed=allowed,
            groups=groups,
        )
        e_idx, e_ok = exact_idx.numpy(), np.isfinite(exact_scores.numpy())
        a_idx, a_ok = idx[sample], np.isfinite(scores[sample]) & (idx[sample] >= 0)
        for k in sorted({top_k, min(10, top_k)}):
            stats[f"recall_at_{k}"] = recall_at_k(
                a_idx[:, :k], e_idx[:, :k], a_ok[:, :k], e_ok[:, :k]
            )
        stats["recall_sample"] = len(sample)
    seconds = time.perf_counter() - start

    keep = np.isfinite(scores) & (idx >= 0)
    if min_score is not None:
        keep &= scores >= min_score
    rows, cols = np.nonzero(keep)
    ids_arr = np.asarray(ids, dtype=object)
    columns = {
        "item_id": pa.array(ids_arr[rows].tolist(), pa.string()),
        "neighbor_id": pa.array(ids_arr[idx[rows, cols]].tolist(), pa.string()),
        "rank": pa.array((cols + 1).astype(np.int32)),
        "score": pa.array(scores[rows, cols].astype(np.float32)),
    }
    if names:
        names_arr = np.asarray([name_of.get(i) for i in ids], dtype=object)
        columns["neighbor_name"] = pa.array(names_arr[idx[rows, cols]].tolist(), pa.string())
    table = pa.table(columns, schema=NEIGHBORS_NAMES_SCHEMA if names else NEIGHBORS_SCHEMA)
    # ranks stay consecutive after filtering: recompute them per item
    table = _rerank(table)

    with schema.staged_dir(final, replace=True) as tmp:
        pq.write_table(table, tmp / "neighbors.parquet")
        manifest = {
            "format": NEIGHBORS_FORMAT,
            "format_version": 1,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run": str(run_dir),
            "settings": {
                "top_k": top_k,
                "metric": metric,
                "popularity_prior": popularity_prior if metric == "context" else None,
                "cooccurrence_weight": cooccurrence_weight if metric == "context" else None,
                "method": method,
                "block_size": block_size,
                "min_score": min_score,
                "excluded": len(exclude or ()),
                "same_field": same_field,
                "device": dev,
                "names": names,
            },
            "counts": {
                "items": n,
                "rows": table.num_rows,
                "items_with_fewer_than_k": int((keep.sum(1) < top_k).sum()),
                **({"items_with_name": sum(i in name_of for i in ids)} if names else {}),
            },
            "search_s": round(seconds, 3),
            **stats,
        }
        schema.write_manifest(tmp, manifest)
    log.info("wrote %d rows for %d items to %s", table.num_rows, n, final)
    return manifest


def _rerank(table: pa.Table) -> pa.Table:
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, [("item_id", "ascending"), ("rank", "ascending")])
    table = table.take(order)
    item = table["item_id"].to_numpy(zero_copy_only=False)
    starts = np.r_[True, item[1:] != item[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(item)), 0))
    rank = (np.arange(len(item)) - group_start + 1).astype(np.int32)
    i = table.schema.get_field_index("rank")
    return table.set_column(i, table.schema.field(i), pa.array(rank))  # keeps "not null"


def main(argv: list[str] | None = None) -> int:
    p = parser("neighbors", __doc__)
    p.add_argument("--run", required=True, help="run directory of eges/train.py")
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument(
        "--metric",
        choices=METRICS,
        help="context: H·Z, skip-gram's score of 'seen together', trained items only "
        "(default with --method exact, unless the run holds a choice made on validation by "
        "eges evaluate: RUN/serving.json); cosine/dot of the exported vectors "
        "(cosine is the default with --method hnsw)",
    )
    p.add_argument(
        "--popularity-prior",
        type=float,
        help="context metric only: serve H·Z + this (>= 0) times ln(walk count of the "
        f"neighbour) (default: the run's choice, else {POPULARITY_PRIOR}; 0: H·Z alone)",
    )
    p.add_argument(
        "--cooccurrence-weight",
        type=finite_float,
        help="context metric only: also add this (>= 0) times ln(1 + how often the two items "
        "followed each other in the training sessions), item-based evidence for warm items "
        "(default: the run's choice, else 0)",
    )
    p.add_argument("--method", choices=["exact", "hnsw"], default="exact")
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--min-score", type=finite_float, help="drop neighbours scoring below this")
    p.add_argument("--exclude", help="UTF-8 file with one raw item id per line, never returned")
    p.add_argument("--same-field", help="keep neighbours sharing a value of this field")
    p.add_argument("--output", help="output directory (default RUN/neighbors)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--names",
        action="store_true",
        help="add a neighbor_name column: the display names (titles) the walk job "
        "kept in its item table",
    )
    args = p.parse_args(argv)
    setup_logging()
    try:
        exclude = None
        if args.exclude:
            path = Path(args.exclude)
            if not path.is_file():
                raise FileNotFoundError(f"--exclude file not found: {path}")
            # UTF-8 whatever the locale (a byte-order mark is skipped)
            text = path.read_text(encoding="utf-8-sig")
            exclude = {line.strip() for line in text.splitlines() if line.strip()}
        served = served_score(
            args.run, args.metric, args.popularity_prior, args.method, args.cooccurrence_weight
        )
        metric = served.metric
        if served.chosen:
            log.info(
                "serving %s, the run's choice (%s)",
                score_label(metric, served.prior, served.cooccurrence),
                served.chosen,
            )
        m = build_table(
            args.run,
            args.top_k,
            metric=metric,
            popularity_prior=served.prior,
            cooccurrence_weight=served.cooccurrence,
            method=args.method,
            block_size=args.block_size,
            min_score=args.min_score,
            exclude=exclude,
            same_field=args.same_field,
            output=args.output,
            device=args.device,
            names=args.names,
        )
    except (ValueError, FileNotFoundError, schema.IncompleteOutputError) as exc:
        return fail(exc)
    recall = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k.startswith("recall_at"))
    print(
        f"{m['counts']['rows']:,} neighbour rows for {m['counts']['items']:,} items "
        f"({m['settings']['metric']}, {m['settings']['method']}, {m['search_s']:.1f} s"
        f"{', ' + recall if recall else ''})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
