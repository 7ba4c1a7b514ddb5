"""Evaluation: EGES against GES, BGE and simpler models on three hold-out tasks, and the report.

    eges evaluate --config conf/ml-100k.yaml [--output DIR] [--set evaluate.seeds=[1,2,3]]

For each task the walk job runs once with a hold-out split (``split.kind``, see
:mod:`eges.pipeline.splits`; launched as ``spark-submit jobs/walks.py``, since this side never
imports pyspark), then every model is fitted on the same training walks and scored on the same
held-out data:

* ``link`` — link prediction as in the paper: hidden item pairs vs as many sampled non-edges,
  AUC of the pair scores.
* ``cold`` — cold start: held-out items (all their events removed) are embedded from side
  information alone and their nearest warm items compared with their true graph neighbours in the
  full data: HR@K, recall@K (capped, see :mod:`eges.evaluation.metrics`), MRR.
* ``next`` — next item: a→b transitions of the latest events; b ranked among all trained items by
  similarity to a: HR@K, MRR.

Learned models (EGES, GES, BGE with this project's trainer; DeepWalk with gensim) are fitted once
per seed in ``evaluate.seeds`` (training seed; the split and the walks are fixed by
``split.seed`` and ``walks.seed``) and reported as mean ± standard deviation. Ties in a
ranking are broken by a seeded random order of the candidates, never by item index (which would
be popularity order). An item a model cannot represent scores 0 and is reported as coverage; a
query the model cannot represent counts as a miss; a model that covers no query of a task is
reported as unable to score it.

Outputs (``evaluate.output``): ``<task>/walks`` (walk outputs), ``<task>/runs/<model>-seed<N>``
(training runs), ``results.json`` and the report (``report.md`` + PNG plots, see
:mod:`eges.evaluation.report`), ``results.json`` last. Walk outputs whose config matches are
reused, and
runs whose training settings match and that were trained on that very walk output (its
manifest's digest), so an interrupted evaluation continues where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from eges import schema
from eges.cli import fail, parser
from eges.config import (
    MODEL_SCORE_KEYS,
    Config,
    ConfigError,
    add_config_arguments,
    config_from_args,
)
from eges.evaluation.baselines import (
    ContextScorer,
    MatrixScorer,
    PopularityScorer,
    RandomScorer,
    Scorer,
    SparseVectorScorer,
    TableScorer,
    VectorScorer,
    content_vectors,
    cooccurrence,
    deepwalk,
    read_walks,
)
from eges.evaluation.metrics import (
    auc_components,
    auc_difference_interval,
    bootstrap_interval,
    list_metrics,
    pooled_difference_interval,
    rank_metrics,
)
from eges.pipeline.cli import spark_submit_args
from eges.quiet import close_log_file, current_log_file, details_only, setup_logging
from eges.training.items import ItemTable, load_items, load_vocab
from eges.training.sampling import walk_frequencies

log = logging.getLogger("eges.evaluation.evaluate")
LOG_FILE = "evaluate.log"  # in the evaluation directory: every library's log lines

REUSABLE_EXPORT_VERSION = 2  # the oldest run export reused (it has walk counts)
# each task's split settings; cold: a held-out item keeps its editorial fields only, as a
# brand-new item would; cold_all: it keeps user-written ones too (optimistic, for comparison)
TASK_SPLIT: dict[str, dict[str, str]] = {
    "link": {"kind": "edges"},
    "cold": {"kind": "items", "cold_fields": "editorial"},
    "cold_all": {"kind": "items", "cold_fields": "all"},
    "next": {"kind": "time"},
}
COLD_TASKS = ("cold", "cold_all")
# the stages the evaluation runs for every model: their INFO lines go to evaluate.log only
PER_MODEL_LOGGERS = ("eges.train", "eges.training", "eges.serving")
LEARNED = ("eges", "ges", "bge")
SEEDED = (*LEARNED, "deepwalk", "random")
CURVE_KS = [1, 2, 5, 10, 20, 50, 100]  # cold-start hit rate vs K (report plot)
TABLE_K = max(CURVE_KS)  # neighbours per item in the served table the evaluation scores
BLOCK = 512  # queries scored at once
REPO = Path(__file__).resolve().parents[2]


class EvaluationError(RuntimeError):
    """A step of the evaluation failed (the message says which and where its log is)."""


# --------------------------------------------------------------------------- walk outputs


def _walk_sections(cfg: Config) -> dict[str, Any]:
    d = cfg.to_dict()
    return {k: d[k] for k in ("data", "sessions", "walks", "split")}


def walk_output(cfg: Config, task: str, root: Path) -> Path:
    """The walk output of ``task``'s split, made with ``spark-submit jobs/walks.py`` unless a
    complete one with the same data/sessions/walks/split config exists."""
    out = root / task / "walks"
    job_cfg = dataclasses.replace(
        cfg,
        split=dataclasses.replace(cfg.split, **TASK_SPLIT[task]),
        output=dataclasses.replace(cfg.output, path=str(out), overwrite=True),
    )
    if (out / schema.MANIFEST).exists():
        done = schema.read_manifest(out)
        sections = ("data", "sessions", "walks", "split")
        same = {k: done["config"].get(k) for k in sections} == _walk_sections(job_cfg)
        # an output of an earlier version may lack a table
        complete = set(schema.EVAL_TABLES[job_cfg.split.kind]) <= set(
            done.get("split", {}).get("tables", {})
        )
        if same and complete:
            log.info("%s: reusing walk output %s", task, out)
            return out
    out.parent.mkdir(parents=True, exist_ok=True)
    conf = out.parent / "walks.yaml"
    conf.write_text(job_cfg.to_yaml())
    submit = Path(sys.executable).parent / "spark-submit"
    if not submit.exists():
        submit = shutil.which("spark-submit")
    job = REPO / "jobs" / "walks.py"
    if submit is None or not job.exists():
        raise EvaluationError(
            "the evaluation runs `spark-submit jobs/walks.py`: install the "
            "project with pyspark (make install) and run from the repository"
        )
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    log.info("%s: walk job with split.kind=%s -> %s", task, job_cfg.split.kind, out)
    # the driver's heap is fixed before the job reads its config: spark-submit must set it
    cmd = [str(submit), *spark_submit_args(job_cfg.spark), str(job), "--config", str(conf)]
    # with a log file, Spark's progress bars and log lines go there and one line comes back
    # here; without one (a library call), the job's output shows as it comes
    details = current_log_file()
    with open(details, "a", encoding="utf-8") if details else contextlib.nullcontext() as f:
        if f is not None:
            f.write(f"==== {task}: {' '.join(cmd)}\n")
            f.flush()
        code = subprocess.run(
            cmd, env=env, cwd=Path.cwd(), stdout=f, stderr=subprocess.STDOUT if f else None
        ).returncode
    if code != 0:
        where = f"; its output is at the end of {details}" if details else ""
        raise EvaluationError(f"{task}: the walk job failed (exit {code}){where}: {' '.join(cmd)}")
    if details is None:
        return out
    done = schema.read_manifest(out)
    c = done["counts"]
    log.info(
        "%s: walk job finished in %.0f s: %s walks over %s items (%s without events)",
        task,
        done.get("timings_s", {}).get("total", float("nan")),
        f"{c['walks']:,}",
        f"{c['items']:,}",
        f"{c['items_without_events']:,}",
    )
    return out


# --------------------------------------------------------------------------- models


def model_config(cfg: Config, model: str) -> Config:
    """``cfg`` with ``evaluate.model_settings``'s settings for ``model`` (if any): its training
    settings in ``train``, its served terms in ``evaluate.popularity_prior`` and
    ``cooccurrence_weight``."""
    settings = cfg.evaluate.model_settings.get(model)
    if not settings:
        return cfg
    train = {k: int(v) if k == "epochs" else float(v) for k, v in settings.items()}
    score = {k: float(train.pop(k)) for k in MODEL_SCORE_KEYS if k in train}
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, **train),
        evaluate=dataclasses.replace(cfg.evaluate, **score),
    )


def learned_run(cfg: Config, walk_dir: Path, run_dir: Path, mode: str, seed: int) -> Path:
    """Train (or reuse) one EGES/GES/BGE run on ``walk_dir``; returns the run directory.

    A finished run is reused only when it was trained with the same ``train`` settings on this
    very walk output: its export records the digest of the walk manifest it read, and a walk
    job that rewrote ``walk_dir`` (another split, seed or data at the same path) changes it.
    """
    t = dataclasses.replace(
        cfg.train, data=str(walk_dir), output=str(run_dir), mode=mode, seed=seed, overwrite=True
    )
    export = run_dir / "export"
    schema.recover_dir(export)  # an export set aside by a killed publish is reused, not retrained
    if (export / schema.MANIFEST).exists():
        done = schema.read_manifest(export, kind=None)
        same_walks = done.get("walks_manifest_sha256") == schema.manifest_digest(walk_dir)
        same_settings = done.get("config", {}).get("train") == dataclasses.asdict(t)
        # version 2 has the walk counts; its zero vectors (items without a usable side-info
        # value) are left out when read, as version 3 does not write them
        current = done.get("format_version", 1) >= REUSABLE_EXPORT_VERSION
        if same_walks and same_settings and current:
            log.info("reusing run %s", run_dir)
            return run_dir
        log.info(
            "%s %s: training again",
            run_dir,
            "was trained on an earlier walk output"
            if not same_walks
            else "was trained with other settings"
            if not same_settings
            else "has an export without walk counts (an older version)",
        )
    from eges.train import train

    with details_only(*PER_MODEL_LOGGERS):
        train(dataclasses.replace(cfg, train=t), progress_bar=False)
    return run_dir


def run_scorers(
    name: str,
    run_dir: Path,
    items: ItemTable,
    popularity_prior: float,
    top_k: int = TABLE_K,
    grid: tuple[tuple[float, float], ...] = (),
    cooccurrence_weight: float = 0.0,
    log_cooccurrences: sp.csr_matrix | None = None,
    variants: list[tuple[str, np.ndarray]] = (),
    tables: bool = True,
) -> list[Scorer]:
    """A run's scorers: cosine of the exported vectors (``name``), the served score H·Z +
    ``popularity_prior`` · ln(walk count, from the export) + ``cooccurrence_weight`` ·
    ln(1 + co-occurrences) with its context table (``name·ctx``), and the neighbour tables it
    serves (``eges.serving.neighbors``, exact, top ``top_k``): by that same score
    (``name·ctx·table``, the default table) and by cosine (``name·table``). A cold item's row of
    a table is what ``eges.serving.embed`` (same metric) returns for a new item with its side
    information. ``grid``: further served scores, one per (β, γ) (``name·ctx·β<β>``, with
    ``·γ<γ>`` when γ is not 0), for the served score's choice on validation
    (:func:`choose_serving`). ``log_cooccurrences``: (V + 1, V + 1) ln(1 + co-occurrences) by
    item index (:meth:`Models.log_cooccurrences`); needed when a γ is not 0. ``variants``:
    (label, vectors) of the same run with other cold rows (new items' field weights,
    :meth:`Models.field_variants`), each scored by cosine (``name·label``) and by every served
    score of ``grid`` (``name·ctx·β<β>·label``). ``tables``: False leaves the tables out
    (the tuning grid scores the full rankings only)."""
    import pyarrow.parquet as pq

    from eges.serving.neighbors import build_table, log_count_prior
    from eges.training.export import read_context, read_embeddings

    emb, vectors = read_embeddings(run_dir)
    idx = emb["item_idx"].to_numpy()
    # (V + 1, D): Z by item index; an item without a vector has no trained row (zero)
    context = np.zeros((items.num_items + 1, vectors.shape[1]), dtype=np.float32)
    context[idx] = read_context(run_dir, idx)
    counts = emb["walk_count"].to_numpy()

    if log_cooccurrences is None and (cooccurrence_weight or any(g for _, g in grid)):
        raise ValueError("a co-occurrence weight needs log_cooccurrences")

    def served(
        label: str, prior: float, weight: float, rows: np.ndarray = vectors
    ) -> ContextScorer:
        bias = np.zeros(len(context))  # (V + 1,): the prior of the served score, per item index
        bias[idx] = log_count_prior(counts, prior)
        pairs = None if weight == 0 else weight * log_cooccurrences
        return ContextScorer(label, idx, rows, context, bias, pairs)

    scorers: list[Scorer] = [
        VectorScorer(name, idx, vectors, items.num_items),
        served(f"{name}·ctx", popularity_prior, cooccurrence_weight),
    ]
    for prior, weight in grid:
        scorers.append(served(f"{name}·ctx·{grid_label(prior, weight)}", prior, weight))
    for label, rows in variants:
        scorers.append(VectorScorer(f"{name}·{label}", idx, rows, items.num_items))
        for prior, weight in grid:
            scorers.append(
                served(f"{name}·ctx·{grid_label(prior, weight)}·{label}", prior, weight, rows)
            )
    served_tables = (("cosine", "·table"), ("context", "·ctx·table"))
    for metric, suffix in served_tables if tables and len(idx) > 1 else ():
        out = run_dir / f"neighbors-{metric}"
        with details_only(*PER_MODEL_LOGGERS):
            build_table(
                run_dir,
                min(top_k, len(idx) - 1),
                metric=metric,
                popularity_prior=popularity_prior,
                cooccurrence_weight=cooccurrence_weight if metric == "context" else 0.0,
                output=out,
            )
        scorers.append(
            TableScorer(f"{name}{suffix}", pq.read_table(out / "neighbors.parquet"), items.item_ids)
        )
    return scorers


def grid_label(prior: float, weight: float) -> str:
    """A served score of the validation grid in scorer names: ``β0.4``, ``β0.4·γ1``."""
    return f"β{prior:g}" + (f"·γ{weight:g}" if weight else "")


# new items' field weights compared on the cold-start validation: the run's own
# (train.cold_weights), and each field that some held-out item has weighed by one of these
# times its own weight, the others kept
FIELD_MULTIPLIERS = (0.25, 0.5, 2.0, 4.0)


def field_label(field: str, multiplier: float) -> str:
    """A field-weight variant in scorer names: ``w(genres×2)``."""
    return f"w({field}×{multiplier:g})"


class Models:
    """Builds every model of ``evaluate.models`` for one task's walk output."""

    def __init__(self, cfg: Config, task: str, walk_dir: Path, root: Path) -> None:
        self.cfg, self.task, self.walk_dir, self.root = cfg, task, walk_dir, root
        self.items: ItemTable = load_items(walk_dir)
        shards = schema.parquet_files(walk_dir / schema.WALKS_DIR)
        self.counts = walk_frequencies(shards, self.items.num_items)
        self._walks: list[np.ndarray] | None = None
        self._log_cooccurrences: sp.csr_matrix | None = None
        self.train_seconds: dict[str, list[float]] = {}
        # field-weight variants scored for the cold-start choice: label -> new items' weights
        self.weightings: dict[str, dict[str, float]] = {}
        # eges tune: every learned model and DeepWalk scored with each served score of the
        # task's grid (CHOICE_GRIDS), without the neighbour tables
        self.tuning = False

    @staticmethod
    def _direction(weights: dict[str, float], fields: list[str]) -> tuple[float, ...]:
        total = sum(weights[f] for f in fields)
        return tuple(round(weights[f] / total, 9) for f in fields)

    def field_variants(self, run: Path) -> list[tuple[str, np.ndarray]]:
        """The run's exported vectors with the cold rows embedded again under each field-weight
        variant (:data:`FIELD_MULTIPLIERS`, for the fields some held-out item has; a variant
        with the same ratios between those fields as an earlier one is left out); the weights
        of each are kept in :attr:`weightings`. None with fewer than two such fields."""
        import torch

        from eges.training.export import load_model, read_embeddings
        from eges.training.model import EGES

        items = self.items
        exported, meta = load_model(run)
        n = exported.num_fields
        try:
            held, _, _ = read_pairs(self.walk_dir, "heldout_neighbours")
        except schema.IncompleteOutputError:  # no held-out item: nothing to choose for
            return []
        held = torch.from_numpy(np.unique(held).astype(np.int64))
        fields = [
            f
            for i, f in enumerate(items.fields[:n])
            if bool(((items.offsets[i][held + 1] - items.offsets[i][held]) > 0).any())
        ]
        if len(fields) < 2:  # one field: its weight cannot change a new item's direction
            return []
        model = EGES(
            items.num_items, items.vocab_sizes, items.offsets, items.values,
            meta["embedding_dim"], meta["mode"],
        )  # fmt: skip
        # the side-info tables alone: cold start needs nothing else, and a partitioned
        # export's model.pt holds only them (side_only)
        side = {
            k: v
            for k, v in exported.state_dict().items()
            if k.startswith("side.") or k.startswith("side_trained_")
        }
        model.load_state_dict(side, strict=False)
        base = dict(zip(items.fields[:n], exported.cold_weights.tolist()))
        emb, vectors = read_embeddings(run)
        cold = emb["cold"].to_numpy(zero_copy_only=False)
        cold_ids = torch.from_numpy(emb["item_idx"].to_numpy()[cold].astype(np.int64))
        out = []
        seen = {self._direction(base, fields)}  # only the ratios of the fields present matter
        for field_name in fields:
            for m in FIELD_MULTIPLIERS:
                weights = {**base, field_name: base[field_name] * m}
                if self._direction(weights, fields) in seen:  # e.g. genres×2 = year×0.5
                    continue
                seen.add(self._direction(weights, fields))
                model.set_cold_weights(weights, items.fields)
                rows = vectors.copy()
                with torch.no_grad():
                    rows[cold] = model.cold_start_items(cold_ids).numpy()
                label = field_label(field_name, m)
                self.weightings[label] = weights
                out.append((label, rows))
        return out

    @property
    def log_cooccurrences(self) -> sp.csr_matrix:
        """(V + 1, V + 1) ln(1 + co-occurrences) by item index: the served score's co-occurrence
        term before its weight (``eges.serving.neighbors.log_cooccurrences``)."""
        if self._log_cooccurrences is None:
            from eges.serving.neighbors import log_cooccurrences

            items = np.arange(self.items.num_items + 1)
            self._log_cooccurrences = log_cooccurrences(self.walk_dir, items)
        return self._log_cooccurrences

    @property
    def walks(self) -> list[np.ndarray]:
        if self._walks is None:
            self._walks = read_walks(self.walk_dir)
        return self._walks

    def build(
        self, model: str, seed: int, settings: Config | None = None, run_dir: Path | None = None
    ) -> list[Scorer]:
        """The scorers of one model (learned models give a cosine and a context scorer).
        ``settings``: the config to train with instead of the evaluation's (a tuning point);
        ``run_dir``: where a learned model's run goes (default ``<task>/runs/<model>-seed<N>``)."""
        cfg = model_config(settings or self.cfg, model)
        t, n = cfg.train, self.items.num_items
        if model in LEARNED:
            run = learned_run(
                cfg,
                self.walk_dir,
                run_dir or self.root / self.task / "runs" / f"{model}-seed{seed}",
                model,
                seed,
            )
            stats = schema.read_manifest(run / "export", kind=None).get("training", {})
            self.train_seconds.setdefault(model, []).append(stats.get("train_seconds", 0.0))
            ev = cfg.evaluate
            choosing = model == "eges" and cfg.split.holdout == "validation"
            grid = CHOICE_GRIDS.get(self.task, ()) if choosing or self.tuning else ()
            weights = {ev.cooccurrence_weight, *(w for _, w in grid)}
            # cold start chooses new items' side-info field weights with their score
            variants = self.field_variants(run) if choosing and self.task == "cold" else []
            return run_scorers(
                model,
                run,
                self.items,
                ev.new_items_beta if self.task in COLD_TASKS else ev.popularity_prior,
                grid=grid,
                cooccurrence_weight=ev.cooccurrence_weight,
                log_cooccurrences=self.log_cooccurrences if any(weights) else None,
                variants=variants,
                tables=not self.tuning,
            )
        if model == "deepwalk":
            ev = cfg.evaluate
            idx, vectors, context, seconds = deepwalk(
                self.walks,
                n,
                embedding_dim=t.embedding_dim,
                window=t.window,
                num_negatives=t.num_negatives,
                ns_exponent=ev.deepwalk_ns_exponent,
                epochs=ev.deepwalk_epochs or t.epochs,
                seed=seed,
                lr=ev.deepwalk_lr,
            )
            self.train_seconds.setdefault(model, []).append(round(seconds, 3))
            full_context = np.zeros((n + 1, context.shape[1]), dtype=np.float32)
            full_context[idx] = context
            from eges.serving.neighbors import log_count_prior

            def served(name: str, prior: float, weight: float) -> ContextScorer:
                bias = log_count_prior(self.counts, prior)
                pairs = weight * self.log_cooccurrences if weight else None
                return ContextScorer(name, idx, vectors, full_context, bias, pairs)

            grid = CHOICE_GRIDS.get(self.task, ()) if self.tuning else ()
            return [
                VectorScorer("deepwalk", idx, vectors, n),
                ContextScorer("deepwalk·ctx", idx, vectors, full_context),  # gensim's own
                served("deepwalk·ctx·prior", ev.deepwalk_beta, ev.deepwalk_gamma),
                *(served(f"deepwalk·ctx·{grid_label(b, g)}", b, g) for b, g in grid),
            ]
        if model == "content":
            return [SparseVectorScorer("content", content_vectors(self.items))]
        if model == "cooccurrence":
            return [MatrixScorer("cooccurrence", cooccurrence(self.walks, n, t.window))]
        if model == "popularity":
            return [PopularityScorer(self.counts)]
        if model == "random":
            return [RandomScorer(seed)]
        raise ConfigError(f"unknown model {model!r}")


# --------------------------------------------------------------------------- tasks


def read_pairs(walk_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = schema.read_table(walk_dir / schema.EVAL_DIR / name, schema.EDGE_SCHEMA)
    return (
        t["src"].to_numpy().astype(np.int64),
        t["dst"].to_numpy().astype(np.int64),
        t["weight"].to_numpy(),
    )


def score_link(
    scorer: Scorer,
    walk_dir: Path,
    components: dict[str, tuple[np.ndarray, ...]] | None = None,
) -> dict[str, float]:
    """AUC of hidden pairs vs sampled non-edges; uncovered pairs score 0.

    ``auc`` against the uniform non-edges (the paper's); ``auc_matched`` against the non-edges
    drawn with the hidden pairs' degrees (walk outputs since 2026-12-06), which popularity alone
    cannot tell apart. ``components``: filled with each AUC's DeLong components
    (:func:`eges.evaluation.metrics.auc_components`, an uncovered pair scoring 0) followed by
    the items of the positive and of the negative pairs (``pos_a, pos_b, neg_a, neg_b``), for
    the intervals of :func:`link_intervals`.
    """
    a, b, _ = read_pairs(walk_dir, "hidden_edges")
    negatives = {"auc": read_pairs(walk_dir, "non_edges")}
    if (walk_dir / schema.EVAL_DIR / "non_edges_matched").exists():
        negatives["auc_matched"] = read_pairs(walk_dir, "non_edges_matched")
    src = np.concatenate([a, *[n[0] for n in negatives.values()]])
    dst = np.concatenate([b, *[n[1] for n in negatives.values()]])
    ok = scorer.covered(src) & scorer.covered(dst)
    if not ok.any():
        return {"n/a": 1.0}
    scores = np.zeros(len(src))
    scores[ok] = scorer.pair_scores(src[ok], dst[ok])
    out, lo = {}, len(a)
    for key, (na, _, _) in negatives.items():
        v10, v01 = auc_components(scores[: len(a)], scores[lo : lo + len(na)])
        out[key] = float(v10.mean())  # the AUC (ties one half), as auc() gives it
        if components is not None:
            items = (a, b, src[lo : lo + len(na)], dst[lo : lo + len(na)])
            components[key] = (v10, v01, *items)
        lo += len(na)
    out["coverage"] = float(ok.mean())
    out["pairs"] = float(len(a))
    return out


def _block_metrics(
    scorer: Scorer,
    queries: np.ndarray,
    relevant: list[np.ndarray],
    candidates: np.ndarray,
    ks: list[int],
    exclude_self: bool,
) -> dict[str, np.ndarray]:
    """Per-query ranking metrics of every candidate's score, for queries the scorer covers."""
    parts: dict[str, list[np.ndarray]] = {}
    column = {int(c): j for j, c in enumerate(candidates)}
    for lo in range(0, len(queries), BLOCK):
        q = queries[lo : lo + BLOCK]
        scores = np.asarray(scorer.score(q, candidates), dtype=np.float64)  # (Q, C)
        if exclude_self:
            for i, item in enumerate(q):
                j = column.get(int(item))
                if j is not None:
                    scores[i, j] = -np.inf
        for key, values in rank_metrics(scores, relevant[lo : lo + BLOCK], ks).items():
            parts.setdefault(key, []).append(values)
    return {key: np.concatenate(v) for key, v in parts.items()}


def rank_queries(
    scorer: Scorer,
    queries: np.ndarray,
    relevant: list[np.ndarray],
    candidates: np.ndarray,
    ks: list[int],
    exclude_self: bool,
    per_query: dict[str, np.ndarray] | None = None,
) -> dict[str, float] | None:
    """Mean ranking metrics of ``queries`` against ``candidates`` (given in the seeded
    tie-break order, see :func:`_tiebreak`).

    Args:
        relevant: per query, positions in ``candidates`` of the relevant items.
        exclude_self: a query is never its own candidate.
        per_query: filled with each metric's value per query (0 for a query not covered), for
            the intervals of :func:`eges.evaluation.metrics.bootstrap_interval`.

    Returns:
        Means over all queries (uncovered queries count as misses) and ``coverage``; None when
        the scorer covers no query.
    """
    covered = scorer.covered(queries)
    if not covered.any():
        return None
    rel = [r for r, c in zip(relevant, covered) if c]
    if isinstance(scorer, TableScorer):  # served lists: scored as shown, whatever they list
        lists = [scorer.listed(int(q)) for q in queries[covered]]
        m = list_metrics(lists, [candidates[r] for r in rel], ks)
    else:
        m = _block_metrics(scorer, queries[covered], rel, candidates, ks, exclude_self)
    out: dict[str, float] = {}
    for key, values in m.items():
        full = np.zeros(len(queries))
        full[covered] = values
        out[key] = float(full.mean())
        if per_query is not None:
            per_query[key] = full
    out["coverage"] = float(covered.mean())
    out["queries"] = float(len(queries))
    return out


def _tiebreak(candidates: np.ndarray, seed: int) -> np.ndarray:
    """Candidates in a seeded random order: stable sorting then breaks score ties at random."""
    return candidates[np.random.default_rng(seed).permutation(len(candidates))]


def _candidates(models: Models, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every item of the training walks in tie-break order, and item_idx -> column (-1: none)."""
    candidates = _tiebreak(np.flatnonzero(models.counts > 0), seed)
    position = np.full(models.items.num_items + 1, -1)
    position[candidates] = np.arange(len(candidates))
    return candidates, position


def cold_queries(models: Models, seed: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Held-out items, their warm true neighbours (as candidate positions), the candidates."""
    src, dst, _ = read_pairs(models.walk_dir, "heldout_neighbours")
    candidates, position = _candidates(models, seed)
    queries, relevant = [], []
    for q in np.unique(src):
        rel = position[dst[src == q]]
        rel = rel[rel >= 0]
        if rel.size:
            queries.append(q)
            relevant.append(rel)
    return np.array(queries, dtype=np.int64), relevant, candidates


def next_queries(models: Models, seed: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Later-period transitions a→b: queries a, relevant {b}, candidates every trained item."""
    src, dst, _ = read_pairs(models.walk_dir, "test_transitions")
    candidates, position = _candidates(models, seed)
    keep = (position[src] >= 0) & (position[dst] >= 0)
    order = np.argsort(src[keep], kind="stable")  # queries of one item scored together
    src, dst = src[keep][order], dst[keep][order]
    return src, [np.array([p]) for p in position[dst]], candidates


def model_seeds(cfg: Config) -> list[tuple[str, int]]:
    """(model, training seed) in the order one task builds them: seeded models once per seed
    of ``evaluate.seeds``, the others once."""
    ev = cfg.evaluate
    return [
        (model, seed)
        for model in ev.models
        for seed in (ev.seeds if model in SEEDED else [ev.seeds[0]])
    ]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """One line before each model (and seed) of the whole evaluation: which, how many are left,
    time elapsed, e.g. ``[cold 5/27] eges seed 2 (22 left after it; 4:05 elapsed)``."""

    def __init__(self, cfg: Config) -> None:
        runs = len(model_seeds(cfg))
        self.total = sum(len(split_seeds(cfg, task)) * runs for task in cfg.evaluate.tasks)
        self.done = 0
        self.start = time.perf_counter()

    def next(self, task: str, model: str, seed: int) -> str:
        self.done += 1
        what = f"{model} seed {seed}" if model in SEEDED else model
        line = (
            f"[{task} {self.done}/{self.total}] {what} ({self.total - self.done} left "
            f"after it; {_clock(time.perf_counter() - self.start)} elapsed)"
        )
        log.info("%s", line)
        return line


# HR@K with K above this share of the candidates says little: a random order finds about
# that share of the true items already
LARGE_K_SHARE = 0.1


def large_k_warning(task: str, ks: list[int], candidates: int) -> str | None:
    """A warning when the largest K of ``evaluate.ks`` is a large share of the candidates."""
    k = max(ks)
    share = k / max(candidates, 1)
    if share <= LARGE_K_SHARE:
        return None
    return (
        f"{task}: HR@{k} ranks among only {candidates:,} candidates, so K is {share:.0%} of "
        f"them and even a random order finds about {min(share, 1):.0%} of the true items; "
        f"read HR@{min(ks)} and MRR, or set evaluate.ks lower"
    )


# the tasks whose split a seed draws (items or item pairs held out); the time split has none
SEEDED_SPLITS = ("link", *COLD_TASKS)


def split_seeds(cfg: Config, task: str) -> list[int]:
    """The split seeds ``task`` is evaluated on: ``evaluate.split_seeds`` (empty:
    ``split.seed``) for the item and pair hold-outs; ``split.seed`` alone for the time split,
    which no seed draws."""
    if task in SEEDED_SPLITS and cfg.evaluate.split_seeds:
        return list(cfg.evaluate.split_seeds)
    return [cfg.split.seed]


def split_root(cfg: Config, root: Path, seed: int) -> Path:
    """Where one split seed's walk outputs and runs go: the evaluation directory itself for
    ``split.seed`` (as in an evaluation with one split), ``split-<seed>/`` in it for others."""
    return root if seed == cfg.split.seed else root / f"split-{seed}"


@dataclasses.dataclass
class SplitResults:
    """One task on one split: what :func:`evaluate_task` pools over the split seeds."""

    seed: int
    results: dict[str, list[dict[str, float]]]  # per scorer, one entry per training seed
    per_query: dict[str, list[dict[str, np.ndarray]]]  # per scorer, one entry per seed
    link_parts: dict[str, list[dict[str, tuple[np.ndarray, ...]]]]  # per scorer and seed
    info: dict[str, Any]
    groups: np.ndarray | None  # next item: the queries' source items (resampled together)
    weightings: dict[str, dict[str, float]]
    examples: list[dict] | None


def evaluate_task(
    cfg: Config, task: str, root: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Every model of ``evaluate.models`` on one task, on each of its split seeds
    (:func:`split_seeds`); per model a list of results, one per split and training seed (split
    by split). The intervals pool the splits. ``progress`` logs a line before each model and
    seed (default: counted for this task)."""
    if progress is None:
        progress = Progress(
            dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, tasks=[task]))
        )
    seeds = split_seeds(cfg, task)
    splits = [
        evaluate_split(
            dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, seed=seed)),
            task,
            split_root(cfg, root, seed),
            progress,
            task if len(seeds) == 1 else f"{task} split {seed}",
        )
        for seed in seeds
    ]
    first = splits[0]
    results: dict[str, list[dict[str, float]]] = {}
    train_seconds: dict[str, list[float]] = {}
    for one in splits:
        for name, runs in one.results.items():
            results.setdefault(name, []).extend(runs)
        for model, secs in one.info["train_seconds"].items():
            train_seconds.setdefault(model, []).extend(secs)
    info = {**first.info, "train_seconds": train_seconds}
    if len(splits) > 1:
        info["split_seeds"] = seeds
        info["per_split"] = [
            {
                "seed": one.seed,
                **{k: one.info[k] for k in ("split", "queries", "candidates") if k in one.info},
            }
            for one in splits
        ]
        info["warnings"] = list(
            dict.fromkeys(w for one in splits for w in one.info.get("warnings", []))
        )
        if not info["warnings"]:
            del info["warnings"]
    out: dict[str, Any] = {"results": results, "info": info}
    per_query, groups, strata = pool_per_query(splits)
    if per_query:
        out["intervals"] = bar_intervals(task, per_query, groups, strata)
    if any(one.link_parts for one in splits):
        out.setdefault("intervals", []).extend(
            pooled_link_intervals([link_intervals(one.link_parts) for one in splits])
        )
    if len(splits) > 1:
        for entry in out.get("intervals", []):
            entry["split_seeds"] = seeds  # the order of its per_split
    if task in CHOICE_GRIDS and cfg.split.holdout == "validation" and per_query:
        # a variant's weights are train.cold_weights times its multiplier: the same in every
        # split and training seed
        weightings = {k: v for one in splits for k, v in one.weightings.items()}
        choice = choose_serving(per_query, groups, task, weightings, strata)
        if choice is not None:
            if len(splits) > 1:
                choice["split_seeds"] = seeds
            out["serving"] = choice
    if first.examples is not None:
        out["examples"] = first.examples
    return out


def evaluate_split(
    cfg: Config, task: str, root: Path, progress: Progress, label: str
) -> SplitResults:
    """Every model of ``evaluate.models`` on one task's split (``split.seed``), its walk output
    and runs under ``root``; ``label`` names it in the progress lines."""
    ev = cfg.evaluate
    walk_dir = walk_output(cfg, task, root)
    models = Models(cfg, task, walk_dir, root)
    ks = sorted(set(ev.ks) | (set(CURVE_KS) if task in COLD_TASKS else set()))
    split_seed = cfg.split.seed
    if task in COLD_TASKS:
        queries, relevant, candidates = cold_queries(models, split_seed)
    elif task == "next":
        queries, relevant, candidates = next_queries(models, split_seed)
    warnings = []
    if task != "link":
        warning = large_k_warning(task, ev.ks, len(candidates))
        if warning:
            log.warning("%s", warning)
            warnings.append(warning)
    results: dict[str, list[dict[str, float]]] = {}
    per_query: dict[str, list[dict[str, np.ndarray]]] = {}  # per scorer, one entry per seed
    # link: per scorer and seed, each AUC's components
    link_parts: dict[str, list[dict[str, tuple[np.ndarray, ...]]]] = {}
    examples = (
        ExampleQueries(cfg, models, queries, relevant, candidates)
        if task == "cold" and ev.examples  # the editorial task's, as a new item would get
        else None
    )
    for model, seed in model_seeds(cfg):
        progress.next(label, model, seed)
        start = time.perf_counter()
        for scorer in models.build(model, seed):
            if examples is not None and seed == ev.seeds[0]:
                examples.add(scorer)
            if task == "link":
                parts: dict[str, tuple[np.ndarray, ...]] = {}
                res = score_link(scorer, walk_dir, parts)
                if parts and scorer.name in LINK_MODELS:
                    link_parts.setdefault(scorer.name, []).append(parts)
            else:
                values: dict[str, np.ndarray] = {}
                res = rank_queries(
                    scorer, queries, relevant, candidates, ks, task == "next", values
                ) or {"n/a": 1.0}
                if values and _needs_per_query(scorer.name):
                    per_query.setdefault(scorer.name, []).append(values)
            res["seconds"] = round(time.perf_counter() - start, 3)
            results.setdefault(scorer.name, []).append(res)
            log.info(
                "%s %-14s seed %d: %s",
                label,
                scorer.name,
                seed,
                ", ".join(
                    f"{k} {v:.4f}"
                    for k, v in res.items()
                    if k in ("auc", "auc_matched", "hr@10", "hr@50", "mrr", "coverage")
                ),
            )
    manifest = schema.read_manifest(walk_dir)
    info = {
        "split": manifest["split"],
        "counts": manifest["counts"],
        "candidates": int((models.counts > 0).sum()),
        "train_seconds": models.train_seconds,
    }
    if task != "link":
        info["queries"] = int(len(queries))
    if warnings:
        info["warnings"] = warnings
    return SplitResults(
        seed=split_seed,
        results=results,
        per_query=per_query,
        link_parts=link_parts,
        info=info,
        # next-item transitions from one item are not independent: resampled together
        groups=queries if task == "next" else None,
        weightings=models.weightings,
        examples=examples.rows if examples is not None else None,
    )


def pool_per_query(
    splits: list[SplitResults],
) -> tuple[dict[str, list[dict[str, np.ndarray]]], np.ndarray | None, np.ndarray | None]:
    """The splits' per-query values as one set of queries for the intervals: with one split,
    as they are; with several, per scorer one entry whose values are each split's mean over its
    training seeds, split after split, with each query's cluster (``groups``) and split seed
    (``strata``: its split's position in ``splits``) for
    :func:`eges.evaluation.metrics.bootstrap_interval`. Scorers and metrics missing from a split
    are left out."""
    if len(splits) == 1:
        return splits[0].per_query, splits[0].groups, None
    names = set.intersection(*(set(one.per_query) for one in splits))
    pooled: dict[str, list[dict[str, np.ndarray]]] = {}
    for name in sorted(names):
        keys = set.intersection(*(set(r) for one in splits for r in one.per_query[name]))
        if keys:
            pooled[name] = [
                {
                    k: np.concatenate(
                        [np.mean([r[k] for r in one.per_query[name]], axis=0) for one in splits]
                    )
                    for k in sorted(keys)
                }
            ]
    if not pooled:
        return {}, None, None
    name, key = next((n, next(iter(v[0]))) for n, v in pooled.items())
    lengths = [len(one.per_query[name][0][key]) for one in splits]
    # the splits' positions, not their seeds: an interval's per_split follows the labels' order
    strata = np.repeat(np.arange(len(splits)), lengths)
    groups = (
        None
        if any(one.groups is None for one in splits)
        else np.concatenate([one.groups for one in splits])
    )
    return pooled, groups, strata


def pooled_link_intervals(per_split: list[list[dict]]) -> list[dict]:
    """Each link comparison of :func:`link_intervals` pooled over the splits
    (:func:`eges.evaluation.metrics.pooled_difference_interval`); with one split, as it is.
    A comparison missing from a split is left out."""
    if len(per_split) == 1:
        return per_split[0]

    def key(entry: dict) -> tuple:
        return entry["model"], tuple(entry["against"]), entry["metric"]

    out = []
    for entry in per_split[0]:
        same = [e for entries in per_split for e in entries if key(e) == key(entry)]
        if len(same) == len(per_split):
            out.append({**entry, **pooled_difference_interval(same), "method": "delong, pooled"})
    return out


# what the quality bar compares (eges.evaluation.report.quality_bar): cold start, each EGES
# score against the better of these baselines (a ratio); next item, the served table against
# each peer (a difference), at the head of the list as well as at 50
COLD_MODELS = ("eges·ctx·table", "eges·table", "eges", "eges·ctx")
COLD_BASELINES = ("popularity", "content")
COLD_KEYS = ("hr@50", "recall@50")
SERVED = "eges·ctx·table"
NEXT_PEERS = ("deepwalk·ctx", "deepwalk·ctx·prior", "cooccurrence")
NEXT_KEYS = ("hr@10", "hr@50", "mrr")


# link prediction's comparisons, each AUC with DeLong's interval: the served score (H·Z +
# prior) against the peers, and the paper's ordering EGES ≥ GES ≥ BGE (cosine)
LINK_SERVED = "eges·ctx"
LINK_PEERS = ("deepwalk·ctx", "deepwalk·ctx·prior", "popularity", "cooccurrence")
LINK_ORDER = (("eges", "ges"), ("ges", "bge"))
LINK_MODELS = (LINK_SERVED, *LINK_PEERS, "eges", "ges", "bge")
LINK_KEYS = ("auc", "auc_matched")


def link_intervals(
    parts: dict[str, list[dict[str, tuple[np.ndarray, ...]]]],
) -> list[dict]:
    """95% intervals of link prediction's AUC differences (:data:`LINK_SERVED` against each of
    :data:`LINK_PEERS`, and :data:`LINK_ORDER`), by DeLong's method on each scorer's AUC
    components averaged over its training seeds (the mean of those is the mean AUC over the
    seeds), clustered by both items of a pair (pairs sharing an item are not independent;
    :func:`eges.evaluation.metrics.auc_difference_interval`). ``parts``: per scorer and seed,
    what :func:`score_link` fills. Comparisons whose scorers or AUCs were not evaluated are
    left out.

    Returns:
        One entry per comparison: ``kind`` (difference), ``model``, ``against``, ``metric``,
        ``estimate``, ``low``, ``high``, ``method`` (delong).
    """

    def mean_over_seeds(name: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        runs = parts.get(name, [])
        if not runs or any(key not in r for r in runs):
            return None
        return tuple(np.mean([r[key][i] for r in runs], axis=0) for i in (0, 1))

    def items(key: str) -> tuple[np.ndarray, ...]:  # the same pairs for every scorer
        return next(r[key][2:] for runs in parts.values() for r in runs if key in r)

    pairs = [(LINK_SERVED, p) for p in LINK_PEERS] + list(LINK_ORDER)
    out = []
    for key in LINK_KEYS:
        for model, peer in pairs:
            a, b = mean_over_seeds(model, key), mean_over_seeds(peer, key)
            if a is None or b is None:
                continue
            interval = auc_difference_interval(a, b, items=items(key))
            out.append(
                dict(
                    kind="difference",
                    model=model,
                    against=[peer],
                    metric=key,
                    method="delong",
                    **interval,
                )
            )
    return out


def _ratio_to_best(model: np.ndarray, *baselines: np.ndarray) -> np.ndarray:
    best = np.max(np.stack(baselines), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(best > 0, model / best, np.nan)


def _needs_per_query(name: str) -> bool:
    """Whether a scorer's per-query values are kept: those of the quality bar's comparisons
    and of the served score's choice only (they are an array per query, metric and seed)."""
    # SERVED and "eges" (cosine) are among COLD_MODELS, "content" among COLD_BASELINES
    return (
        name in (*COLD_MODELS, *COLD_BASELINES, *NEXT_PEERS)
        or name.startswith("eges·ctx·β")
        or name.startswith("eges·w(")
    )


def bar_intervals(
    task: str,
    per_query: dict[str, list[dict[str, np.ndarray]]],
    groups: np.ndarray | None = None,
    strata: np.ndarray | None = None,
) -> list[dict]:
    """95% paired-bootstrap intervals over queries of the quality bar's comparisons.

    Learned models' per-query values are averaged over their training seeds first, so the
    interval covers the queries the split held out as well as the seeds. Comparisons whose
    models or metrics were not evaluated are left out. ``groups`` and ``strata`` (the split
    seed of each query, see :func:`pool_per_query`): see
    :func:`eges.evaluation.metrics.bootstrap_interval`.

    Returns:
        One entry per comparison: ``kind`` (ratio or difference), ``model``, ``against`` (the
        baselines or the peer), ``metric``, ``estimate``, ``low``, ``high``.
    """

    def mean_over_seeds(name: str, key: str) -> np.ndarray | None:
        runs = per_query.get(name, [])
        if not runs or any(key not in r for r in runs):
            return None
        return np.mean([r[key] for r in runs], axis=0)

    out = []
    if task in COLD_TASKS:
        for model, key in ((m, k) for m in COLD_MODELS for k in COLD_KEYS):
            e = mean_over_seeds(model, key)
            against = [b for b in COLD_BASELINES if mean_over_seeds(b, key) is not None]
            if e is None or not against:
                continue
            base = [mean_over_seeds(b, key) for b in against]
            if max(b.mean() for b in base) == 0:
                continue
            interval = bootstrap_interval(_ratio_to_best, [e, *base], groups=groups, strata=strata)
            out.append(dict(kind="ratio", model=model, against=against, metric=key, **interval))
    elif task == "next":
        for peer, key in ((p, k) for k in NEXT_KEYS for p in NEXT_PEERS):
            e, v = mean_over_seeds(SERVED, key), mean_over_seeds(peer, key)
            if e is None or v is None:
                continue
            interval = bootstrap_interval(np.subtract, [e, v], groups=groups, strata=strata)
            out.append(
                dict(kind="difference", model=SERVED, against=[peer], metric=key, **interval)
            )
    return out


# the served scores compared on a validation hold-out: cosine, and
# H·Z + β·ln(walk count) + γ·ln(1 + co-occurrences) for every (β, γ) of this grid
SERVING_PRIORS = (0.0, 0.1, 0.2, 0.4, 0.8)
SERVING_COOCCURRENCE = (0.0, 0.5, 1.0, 2.0)
SERVING_GRID = tuple((b, g) for b in SERVING_PRIORS for g in SERVING_COOCCURRENCE)
# per task whose validation chooses a served score, its grid of (β, γ): next item chooses the
# neighbour table's; cold start (editorial fields) new items', where γ adds nothing (a new item
# followed nothing in the training sessions)
CHOICE_GRIDS = {"next": SERVING_GRID, "cold": tuple((b, 0.0) for b in SERVING_PRIORS)}
# what each task's choice is served for (eges.serving.neighbors.SERVING_USES)
CHOICE_USES = {"next": "neighbors", "cold": "new_items"}
CHOICE_NAMES = {"next": "next item", "cold": "cold start"}
SERVING_KEY = "mrr"  # the head of the list: what a recommender shows first


def _split_mean(values: np.ndarray, strata: np.ndarray | None) -> float:
    """The mean of ``values``, or with ``strata`` the mean of each split's mean."""
    if strata is None:
        return float(values.mean())
    return float(np.mean([values[strata == s].mean() for s in np.unique(strata)]))


def choose_serving(
    per_query: dict[str, list[dict[str, np.ndarray]]],
    groups: np.ndarray | None = None,
    task: str = "next",
    weightings: dict[str, dict[str, float]] | None = None,
    strata: np.ndarray | None = None,
) -> dict[str, Any] | None:
    """The served score for EGES's neighbours, chosen on ``task`` of a validation hold-out
    (next item: the neighbour table's; cold: new items'): the best of cosine and
    H·Z + β·ln(walk count) + γ·ln(1 + co-occurrences) for (β, γ) in the task's grid
    (``CHOICE_GRIDS``) by MRR.

    When that best is not surely above content-only similarity (the 95% paired-bootstrap
    interval of the difference reaches 0), behaviour adds too little to the side information
    (``behaviour_signal`` false); cosine, whose vectors carry the side information, is then
    served unless it is surely worse than the best. The check tests the winner on the data it
    was chosen on, so it leans towards finding a signal.

    ``weightings``: new items' field-weight variants scored beside the run's own weights
    (:attr:`Models.weightings`, label -> weights); each is a candidate with every score, and
    the choice's ``field_weights`` are the winner's (None: the run's own).

    ``strata``: each query's split seed, for queries of several splits (:func:`pool_per_query`):
    a score's MRR is then the mean of the splits' MRRs.

    Returns:
        ``metric``, ``popularity_prior``, ``cooccurrence_weight``, ``field_weights``,
        ``scores`` (MRR per candidate), ``behaviour_signal``, ``against_content`` (the
        interval); None when EGES was not scored.
    """

    def mrr(name: str) -> np.ndarray | None:
        runs = per_query.get(name, [])
        return np.mean([r[SERVING_KEY] for r in runs], axis=0) if runs else None

    weightings = weightings or {}
    candidates: dict[tuple[str, float, float, str], np.ndarray | None] = {}
    for w in ("", *weightings):  # "": the run's own field weights
        suffix = f"·{w}" if w else ""
        candidates[("cosine", 0.0, 0.0, w)] = mrr(f"eges{suffix}")
        for b, g in CHOICE_GRIDS[task]:
            candidates[("context", b, g, w)] = mrr(f"eges·ctx·{grid_label(b, g)}{suffix}")
    scored = {k: v for k, v in candidates.items() if v is not None}
    if not scored:
        return None
    # ties go to the run's own field weights, to cosine, then to the smaller co-occurrence weight
    means = {k: _split_mean(v, strata) for k, v in scored.items()}
    best = max(scored, key=lambda k: (means[k], k[3] == "", k[0] == "cosine", -k[2]))

    def label(metric: str, b: float, g: float, w: str) -> str:
        what = "cosine" if metric == "cosine" else f"context β {b:g}" + (f" γ {g:g}" if g else "")
        return what + (f" {w}" if w else "")

    out: dict[str, Any] = {
        "metric": best[0],
        "popularity_prior": best[1],
        "cooccurrence_weight": best[2],
        "field_weights": weightings.get(best[3]),
        "candidate": label(*best),  # its key in scores
        "chosen_by": f"{CHOICE_NAMES[task]} {SERVING_KEY} on a validation hold-out",
        "task": task,
        "use": CHOICE_USES[task],
        "scores": {label(*k): v for k, v in means.items()},
        "behaviour_signal": True,
    }
    content = mrr("content")
    if content is not None:
        versus = bootstrap_interval(
            np.subtract, [scored[best], content], groups=groups, strata=strata
        )
        out["against_content"] = versus
        out["content"] = _split_mean(content, strata)
        out["behaviour_signal"] = bool(versus["low"] > 0)
    cosine = scored.get(("cosine", 0.0, 0.0, ""))
    if not out["behaviour_signal"] and cosine is not None and best[0] != "cosine":
        gap = bootstrap_interval(np.subtract, [scored[best], cosine], groups=groups, strata=strata)
        out["best_against_cosine"] = gap
        if gap["low"] <= 0:  # cosine is not surely worse
            out.update(
                metric="cosine",
                popularity_prior=0.0,
                cooccurrence_weight=0.0,
                field_weights=None,
                candidate="cosine",
            )
    return out


class ExampleQueries:
    """A few held-out items with their side info, true neighbours and each model's top 10."""

    TOP = 10
    MODELS = ("eges", "eges·ctx", "content", "popularity")  # shown in the report

    def __init__(
        self,
        cfg: Config,
        models: Models,
        queries: np.ndarray,
        relevant: list[np.ndarray],
        candidates: np.ndarray,
    ) -> None:
        rng = np.random.default_rng(cfg.split.seed)
        rich = [i for i, r in enumerate(relevant) if len(r) >= 5] or list(range(len(queries)))
        pick = sorted(
            rng.choice(rich, size=min(cfg.evaluate.examples, len(rich)), replace=False).tolist()
        )
        self.queries = queries[pick]
        self.candidates = candidates
        self.truth = [set(candidates[relevant[i]].tolist()) for i in pick]
        items = models.items
        # display names the walk job kept (MovieLens/RecBole titles, data.generic.name_column)
        titles = schema.item_names(Path(models.walk_dir) / schema.ITEMS_DIR)
        self.name = lambda i: titles.get(items.item_ids[i], items.item_ids[i])
        vocabs = {
            f: {v: k for k, v in load_vocab(models.walk_dir, f).items()} for f in items.fields
        }
        src, dst, weight = read_pairs(models.walk_dir, "heldout_neighbours")
        self.rows = []
        for q, truth in zip(self.queries, self.truth):
            side = {}
            for f, off, val in zip(items.fields, items.offsets, items.values):
                vals = val[off[q] : off[q + 1]].tolist()
                if vals:
                    side[f] = [vocabs[f][v] for v in vals[:8]] + (["…"] if len(vals) > 8 else [])
            mine = src == q
            order = np.argsort(-weight[mine], kind="stable")
            self.rows.append(
                {
                    "item_id": items.item_ids[q],
                    "title": self.name(q),
                    "side_info": side,
                    "true_neighbours": len(truth),
                    "strongest_neighbours": [self.name(i) for i in dst[mine][order][: self.TOP]],
                    "models": {},
                }
            )

    def add(self, scorer: Scorer) -> None:
        if scorer.name not in self.MODELS or not scorer.covered(self.queries).any():
            return
        scores = scorer.score(self.queries, self.candidates)  # (E, C)
        top = np.argsort(-scores, axis=1, kind="stable")[:, : self.TOP]
        for row, q_top, truth in zip(self.rows, top, self.truth):
            row["models"][scorer.name] = [
                [self.name(int(self.candidates[j])), int(self.candidates[j]) in truth]
                for j in q_top
            ]


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Mean, standard deviation (n - 1) and count of every metric over seeds."""
    if any("n/a" in r for r in runs):
        return {"n/a": True}
    keys = [k for k in runs[0] if k != "seconds"]
    out: dict[str, Any] = {"n": len(runs)}
    for k in keys:
        values = np.array([r[k] for r in runs], dtype=np.float64)
        out[k] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        }
    return out


def run_evaluation(cfg: Config) -> dict[str, Any]:
    """Run every task of ``evaluate.tasks``, write ``results.json`` and the report.

    Returns:
        The results (as written to ``results.json``).
    """
    ev = cfg.evaluate
    root = Path(ev.output)
    if (root / "results.json").exists() and not ev.overwrite:
        raise FileExistsError(
            f"{root} already holds an evaluation; --set evaluate.overwrite=true "
            "to run it again (finished walk outputs and runs are reused)"
        )
    root.mkdir(parents=True, exist_ok=True)
    # results.json marks a finished evaluation: an overwrite that dies midway must not leave the
    # previous one's results beside a half-replaced report
    (root / "results.json").unlink(missing_ok=True)
    start = time.perf_counter()
    progress = Progress(cfg)
    log.info(
        "evaluating %d model runs: %d task(s), %d split(s) in all, x %d (model, seed)",
        progress.total,
        len(ev.tasks),
        sum(len(split_seeds(cfg, task)) for task in ev.tasks),
        len(model_seeds(cfg)),
    )
    tasks: dict[str, Any] = {}
    for task in ev.tasks:
        t0 = time.perf_counter()
        tasks[task] = evaluate_task(cfg, task, root, progress)
        tasks[task]["summary"] = {m: summarise(r) for m, r in tasks[task]["results"].items()}
        tasks[task]["seconds"] = round(time.perf_counter() - t0, 1)
    choices = [tasks[t]["serving"] for t in CHOICE_GRIDS if "serving" in tasks.get(t, {})]
    if choices:
        written = write_serving_choice(cfg, choices)
        for choice in choices:
            choice["written_to"] = written
    results = {
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "data": cfg.data.path,
        "seeds": ev.seeds,
        "split_seeds": ev.split_seeds or [cfg.split.seed],
        "ks": ev.ks,
        "tasks": tasks,
        "seconds": round(time.perf_counter() - start, 1),
        "config": cfg.to_dict(),
    }
    publish_results(cfg, results, root)
    return results


def write_serving_choice(cfg: Config, choices: list[dict[str, Any]]) -> str | None:
    """Write the served scores chosen on validation (:func:`choose_serving`, one per use) into
    the full-data run (``evaluate.run``, else ``train.output``), where ``eges neighbors`` (the
    neighbour table's choice, the file's top level) and ``eges embed`` (``new_items``, else the
    neighbour table's) serve them by default. A use not chosen this time keeps the choice
    already in the file when that was made for the same training. Returns the file written, or
    None when there is no such run."""
    from eges.serving.neighbors import SERVING_FILE, export_digest, score_label

    def label(choice: dict[str, Any]) -> str:
        what = score_label(
            choice["metric"], choice["popularity_prior"], choice.get("cooccurrence_weight", 0.0)
        )
        fields = choice.get("field_weights")
        if fields:
            what += " (field weights " + ", ".join(f"{f} {w:g}" for f, w in fields.items()) + ")"
        return f"{what} for {choice['use'].replace('_', ' ')}"

    for choice in choices:
        if not choice["behaviour_signal"]:
            log.warning(
                "%s on validation: EGES's best served score (MRR %.4f) is not surely above "
                "content-only similarity (%.4f): this log's behaviour adds too little to its "
                "side information; %s",
                CHOICE_NAMES[choice["task"]],
                max(choice["scores"].values()),
                choice["content"],
                "cosine is served, as its vectors carry the side information"
                if choice["metric"] == "cosine"
                else "the best is still served, as cosine is surely worse",
            )
    what = "; ".join(label(c) for c in choices)
    for run in (cfg.evaluate.run, cfg.train.output):
        if run and (Path(run) / "export" / schema.MANIFEST).exists():
            path = Path(run) / SERVING_FILE
            digest = export_digest(run)  # the training it was chosen for
            entry: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                old = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(old, dict) and old.get("export_digest") == digest:
                    entry = old  # keeps the use not chosen this time
            for choice in choices:
                choice = {**choice, "data": cfg.data.path, "created_at": time.strftime("%Y-%m-%d")}
                if choice["use"] == "neighbors":
                    entry = {k: v for k, v in entry.items() if k == "new_items"}
                    entry.update(choice)
                else:
                    entry[choice["use"]] = choice
            entry["export_digest"] = digest  # each choice carries its own data and date
            schema.write_text_atomic(path, json.dumps(entry, indent=2) + "\n")
            log.info("served score chosen on validation: %s; written to %s", what, path)
            return str(path)
    log.warning(
        "served score chosen on validation: %s; no full-data run at evaluate.run or "
        "train.output to write it into (eges neighbors and eges embed serve a run's "
        "serving.json by default)",
        what,
    )
    return None


def publish_results(cfg: Config, results: dict[str, Any], root: Path) -> None:
    """Write the report (``report.md`` + plots), then ``results.json`` last, each atomically
    (temporary file + rename): ``results.json`` exists only beside the report made from it."""
    from eges.evaluation.report import write_report

    write_report(cfg, results, root)
    schema.write_text_atomic(root / "results.json", json.dumps(results, indent=1, default=float))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("evaluate", __doc__)
    add_config_arguments(p)
    p.add_argument("--output", help="evaluation directory (evaluate.output)")
    p.add_argument(
        "--log-file",
        help=f"where every library's log lines go (default: "
        f"OUTPUT/{LOG_FILE}, appended to); the screen shows the progress, warnings "
        "and the summary",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        cfg = config_from_args(args, {"evaluate.output": args.output})
        setup_logging(args.log_file or Path(cfg.evaluate.output) / LOG_FILE)
        results = run_evaluation(cfg)
    except (ConfigError, FileExistsError, EvaluationError, schema.IncompleteOutputError) as exc:
        return fail(exc)
    finally:
        close_log_file()
    from eges.evaluation.report import summary_text

    print(summary_text(results, Path(cfg.evaluate.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
