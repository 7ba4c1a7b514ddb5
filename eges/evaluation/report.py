"""The evaluation report: ``report.md`` with the comparison tables and PNG plots beside it.

Written by :func:`eges.evaluation.evaluate.run_evaluation` from ``results.json`` and the runs it
trained:

* ``loss.png`` — training loss of EGES, GES and BGE (first seed, first task);
* ``weights.png`` — learned side-information weights per source over warm items (paper Fig. 6);
* ``projection.png`` — 2-D PCA of EGES item vectors coloured by the first value of the genre
  field (or the first field);
* ``cold_hit_rate.png`` — cold-start hit rate against K for every model that can score it.
"""

from __future__ import annotations

import csv
import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from eges import schema
from eges.config import AUTO_SPARSE_ITEMS, Config

log = logging.getLogger(__name__)

NAMES = {
    "eges": "EGES",
    "ges": "GES",
    "bge": "BGE (ours)",
    "deepwalk": "DeepWalk (gensim)",
    "content": "content (TF-IDF)",
    "cooccurrence": "co-occurrence",
    "popularity": "popularity",
    "random": "random",
    "eges·ctx": "EGES, H·Z + prior",
    "ges·ctx": "GES, H·Z + prior",
    "bge·ctx": "BGE (ours), H·Z + prior",
    "deepwalk·ctx": "DeepWalk, H·Z",
    "deepwalk·ctx·prior": "DeepWalk, H·Z + prior",
    "eges·table": "EGES, cosine table",
    "ges·table": "GES, cosine table",
    "bge·table": "BGE (ours), cosine table",
    "eges·ctx·table": "EGES, served table (H·Z + prior, default)",
    "ges·ctx·table": "GES, served table (H·Z + prior, default)",
    "bge·ctx·table": "BGE (ours), served table (H·Z + prior, default)",
}
COLUMNS = {
    "link": [("auc", "AUC"), ("auc_matched", "AUC, degree-matched negatives")],
    "cold": [
        ("hr@10", "HR@10"),
        ("hr@50", "HR@50"),
        ("recall@10", "recall@10"),
        ("recall@50", "recall@50"),
        ("mrr", "MRR"),
    ],
    "next": [("hr@10", "HR@10"), ("hr@50", "HR@50"), ("mrr", "MRR")],
}
COLUMNS["cold_all"] = COLUMNS["cold"]
TITLES = {
    "link": "Link prediction (hidden item pairs vs sampled non-edges)",
    "cold": "Cold start (held-out items embedded from editorial side information only)",
    "cold_all": "Cold start with user-written fields (optimistic: a new item has none)",
    "next": "Next item (later-period transitions a→b, b ranked among all trained items)",
}
PAPER = [  # arXiv:1803.02349, Table 2: link-prediction AUC
    ("Amazon (Electronics)", 0.9327, 0.9575, 0.9700),
    ("Taobao", 0.8797, 0.9704, 0.9746),
]


def _cell(summary: dict[str, Any], key: str) -> str:
    if summary.get("n/a"):
        return "n/a"
    v = summary.get(key)
    if v is None:
        return "–"
    if summary.get("n", 1) > 1:
        return f"{v['mean']:.4f} ± {v['std']:.4f}"
    return f"{v['mean']:.4f}"


def field_variant(name: str) -> bool:
    """Whether a scorer is one of the field-weight variants scored for new items' choice on
    validation (``eges·w(genres×2)``, ``eges·ctx·β0.4·w(…)``): their MRRs are in the choice's
    section, not in the tables and plots."""
    return "·w(" in name


def task_table(task: str, block: dict[str, Any]) -> list[str]:
    cols = COLUMNS[task]
    header = "| model | " + " | ".join(c for _, c in cols) + " | coverage | runs |"
    lines = [header, "|" + "---|" * (len(cols) + 3)]
    for model, summary in block["summary"].items():
        if field_variant(model):
            continue
        cells = [_cell(summary, k) for k, _ in cols]
        cov = "—" if summary.get("n/a") else f"{summary['coverage']['mean']:.3f}"
        runs = "—" if summary.get("n/a") else str(summary["n"])
        if summary.get("n/a"):
            cells = ["cannot score (no vector for these items)"] + [""] * (len(cols) - 1)
        lines.append(f"| {NAMES.get(model, model)} | " + " | ".join(cells) + f" | {cov} | {runs} |")
    return lines


def _mean(block: dict[str, Any], model: str, key: str) -> float | None:
    s = block["summary"].get(model)
    if not s or s.get("n/a") or key not in s:
        return None
    return s[key]["mean"]


KEY_NAMES = {"hr@10": "HR@10", "hr@50": "HR@50", "mrr": "MRR"}


def _interval(block: dict[str, Any], kind: str, model: str, metric: str, against=None):
    """The interval of one comparison (see ``evaluate.bar_intervals`` and
    ``evaluate.link_intervals``); None for results without it (evaluations before 2026-12-06;
    for link prediction, before 2026-12-07)."""
    for entry in block.get("intervals", []):
        if (entry["kind"], entry["model"], entry["metric"]) == (kind, model, metric) and (
            against is None or entry["against"] == against
        ):
            return entry
    return None


def _per_split(interval: dict[str, Any], spec: str = ".2f", seeds: list | None = None) -> str:
    """``; per split seed 0: a, 1: b, 2: c`` for an interval pooled over split seeds (its
    ``split_seeds``, else ``seeds``: the order of its ``per_split``); empty otherwise."""
    values = interval.get("per_split")
    seeds = interval.get("split_seeds", seeds)
    if not values or not seeds or len(seeds) != len(values):
        return ""
    return "; per split seed " + ", ".join(f"{s}: {v:{spec}}" for s, v in zip(seeds, values))


def _against_peers(
    block: dict[str, Any],
    served: str,
    key: str,
    peers: tuple[str, ...],
    seeds: list | None = None,
) -> tuple[str, bool] | None:
    """``served``'s mean of ``key``, then each peer's with the interval of ``served`` minus it,
    as the text after the metric's name; and whether ``served`` is above every peer: surely
    (the interval's low end above 0), or, for results without intervals (next item before
    2026-12-06, link before 2026-12-07), by its mean. Peers not evaluated are left out; None
    when ``served`` or every peer was not. ``seeds``: see :func:`_per_split`."""
    e = _mean(block, served, key)
    means = {m: v for m in peers if (v := _mean(block, m, key)) is not None}
    if e is None or not means:
        return None
    parts, ok = [], True
    for m, v in means.items():
        iv = _interval(block, "difference", served, key, [m])
        if iv is None:
            parts.append(f"{NAMES[m]} {v:.4f}")
            ok = ok and e >= v
        else:
            parts.append(
                f"{NAMES[m]} {v:.4f} (difference {iv['low']:+.4f} to {iv['high']:+.4f}"
                f"{_per_split(iv, '+.4f', seeds)})"
            )
            ok = ok and iv["low"] > 0
    return f"{NAMES[served]} {e:.4f} vs " + ", ".join(parts), ok


def quality_bar(results: dict[str, Any]) -> list[str]:
    """The project's quality bar (stated in the report and the README): cold-start HR@50 and
    recall@50 at least 1.3× the better of popularity and content-only similarity; next-item
    HR@10, HR@50 and MRR of the served table above DeepWalk's (H·Z, with and without the
    popularity prior) and co-occurrence's; on link prediction, whether the served score's AUC
    (H·Z + prior) is surely above each peer's, with uniform and degree-matched negatives, and
    AUC EGES ≥ GES ≥ BGE (the paper's ordering), with the intervals of both differences.

    A bar is met only when its 95% interval (when the results have one: a paired bootstrap over
    queries; DeLong's for link AUCs) lies wholly above it: a ratio whose interval reaches below
    1.3×, or a difference whose interval reaches 0, is not met.
    """
    lines = []
    seeds = results.get("split_seeds")  # the order of a pooled interval's per_split
    cold = results["tasks"].get("cold")
    if cold:
        for model in ("eges·ctx·table", "eges·table", "eges", "eges·ctx"):
            for key in ("hr@50", "recall@50"):
                e = _mean(cold, model, key)
                base = [
                    v
                    for v in (_mean(cold, "popularity", key), _mean(cold, "content", key))
                    if v is not None
                ]
                if e is None or not base or max(base) <= 0:
                    continue
                ratio = e / max(base)
                iv = _interval(cold, "ratio", model, key)
                if iv is None:
                    span, met = "(no interval)", ratio >= 1.3
                else:
                    each = _per_split(iv, seeds=seeds)
                    span = f"(95% interval {iv['low']:.2f}–{iv['high']:.2f}×{each})"
                    met = iv["low"] >= 1.3
                lines.append(
                    f"- cold start {key}: {NAMES[model]} {e:.4f} = **{ratio:.3f}×** {span} "
                    f"the better of popularity and content ({max(base):.4f}); "
                    f"bar 1.3×: {'met' if met else 'not met'}"
                )
    nxt = results["tasks"].get("next")
    served = "eges·ctx·table"
    for key in ("hr@10", "hr@50", "mrr") if nxt else ():
        peers = ("deepwalk·ctx", "deepwalk·ctx·prior", "cooccurrence")
        if (against := _against_peers(nxt, served, key, peers, seeds)) is not None:
            text, ok = against
            lines.append(
                f"- next item {KEY_NAMES[key]}: {text}; above each: {'met' if ok else 'not met'}"
            )
    from eges.evaluation.evaluate import LINK_PEERS, LINK_SERVED

    link = results["tasks"].get("link")
    served = LINK_SERVED
    for key, name in COLUMNS["link"] if link else ():
        if (against := _against_peers(link, served, key, LINK_PEERS, seeds)) is not None:
            text, ok = against
            lines.append(
                f"- link prediction {name}: {text}; surely above each: {'yes' if ok else 'no'}"
            )
    if link:
        e, g, b = (_mean(link, m, "auc") for m in ("eges", "ges", "bge"))
        if None not in (e, g, b):
            ok = e >= g >= b
            spans = [
                f"{NAMES[x]} − {NAMES[y]} {iv['low']:+.4f} to {iv['high']:+.4f}"
                f"{_per_split(iv, '+.4f', seeds)}"
                for x, y in (("eges", "ges"), ("ges", "bge"))
                if (iv := _interval(link, "difference", x, "auc", [y])) is not None
            ]
            lines.append(
                f"- link prediction AUC: EGES {e:.4f}, GES {g:.4f}, BGE {b:.4f}; "
                f"EGES ≥ GES ≥ BGE: {'yes' if ok else 'no'}"
                + (f" (95% intervals: {'; '.join(spans)})" if spans else "")
            )
    return lines


def summary_text(results: dict[str, Any], root: Path) -> str:
    """The short on-screen summary."""
    out = [f"evaluation finished in {results['seconds']:.0f} s -> {root / 'report.md'}"]
    for task, block in results["tasks"].items():
        first = next(iter(block["summary"].values()), {})
        if task == "link":
            keys = [k for k, _ in COLUMNS[task] if k in first] or [COLUMNS[task][0][0]]
        else:
            keys = ["hr@50" if "hr@50" in first else COLUMNS[task][0][0]]
        # the β variants scored to choose the served score on validation: in the report only
        shown = {
            m: s for m, s in block["summary"].items() if "·β" not in m and not field_variant(m)
        }
        for key in keys:
            parts = [
                f"{model} {'n/a' if s.get('n/a') else format(s[key]['mean'], '.3f')}"
                for model, s in shown.items()
            ]
            out.append(f"  {task:<5} {key:<7} " + "  ".join(parts))
    out += ["  " + line.lstrip("- ").replace("**", "") for line in quality_bar(results)]
    return "\n".join(out)


# --------------------------------------------------------------------------- plots


SHOWN_SCORES = 12  # candidates of a choice listed in the report (beyond it, the best)


def serving_section(choice: dict[str, Any] | None) -> list[str]:
    """The report's lines on the served score chosen on validation (none without a choice)."""
    if not choice:
        return []
    from eges.serving.neighbors import score_label  # torch: only when there is a choice

    what = score_label(
        choice["metric"], choice["popularity_prior"], choice.get("cooccurrence_weight", 0.0)
    )
    fields = choice.get("field_weights")
    if fields:
        what += ", side-info field weights " + ", ".join(f"{f} {w:g}" for f, w in fields.items())
    scores = list(choice["scores"].items())
    shown = (
        scores
        if len(scores) <= SHOWN_SCORES
        else sorted(scores, key=lambda kv: -kv[1])[:SHOWN_SCORES]
    )
    chosen = choice.get("candidate")
    added = chosen in choice["scores"] and all(k != chosen for k, _ in shown)
    if added:  # e.g. cosine, served as the fallback
        shown.append((chosen, choice["scores"][chosen]))
    lines = [
        "",
        "## Served score chosen on validation"
        + (" for new items" if choice.get("use") == "new_items" else ""),
        "",
        f"Chosen: **{what}** ({choice['chosen_by']}). MRR per candidate"
        + (
            f" (the best {SHOWN_SCORES} of {len(scores)}"
            + (", and the one served)" if added else ")")
            if len(shown) < len(scores)
            else ""
        )
        + ": "
        + ", ".join(f"{k} {v:.4f}" for k, v in shown)
        + ".",
    ]
    if any("w(" in k for k, _ in scores):
        lines.append(
            "Candidates marked w(field×m) embed the held-out items with that field's weight "
            "times m, the others as the run's `train.cold_weights` (all 1 by default); to report "
            "a chosen weighting on test, set `train.cold_weights` to it."
        )
    versus = choice.get("against_content")
    if versus:
        lines.append(
            f"Against content-only similarity (MRR {choice['content']:.4f}): the best served "
            f"score differs by {versus['estimate']:+.4f} (95% interval {versus['low']:+.4f} to "
            f"{versus['high']:+.4f}{_per_split(versus, '+.4f', choice.get('split_seeds'))})"
            + (
                "."
                if choice["behaviour_signal"]
                else "; behaviour adds too little to the side information here, so cosine "
                "(whose vectors carry the side information) is served."
                if choice["metric"] == "cosine"
                else "; behaviour adds too little to the side information here, but cosine "
                "is surely worse than the best, which is served."
            )
        )
    where = choice.get("written_to")
    new_items = choice.get("use") == "new_items"
    serves = (
        "`eges embed` serves"
        if new_items
        else "`eges neighbors` serves (and `eges embed`, unless new items have a choice of "
        "their own)"
    )
    lines.append(
        f"Written to `{where}`: {serves} it by default."
        if where
        else "No full-data run was found (`evaluate.run`, `train.output`) to write it into."
    )
    return lines


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(runs: dict[str, Path], path: Path) -> bool:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    drawn = False
    for name, run in runs.items():
        f = run / "logs" / "metrics.csv"
        if not f.exists():
            continue
        steps, loss = [], []
        with f.open() as fh:
            for row in csv.DictReader(fh):
                if row.get("loss"):
                    steps.append(int(row["step"]))
                    loss.append(float(row["loss"]))
        if steps:
            ax.plot(steps, loss, label=NAMES.get(name, name))
            drawn = True
    ax.set_xlabel("step")
    ax.set_ylabel("SGNS loss per pair")
    ax.set_title("Training loss")
    ax.legend()
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def plot_weights(run: Path, path: Path) -> bool:
    from eges.training.export import EMBEDDINGS, WEIGHTS, read_export_table

    weights = read_export_table(run, WEIGHTS)
    if weights is None:
        return False
    warm = read_export_table(run, EMBEDDINGS, columns=["item_idx", "cold"])
    warm_idx = set(np.asarray(warm["item_idx"])[~np.asarray(warm["cold"])].tolist())
    keep = np.isin(weights["item_idx"].to_numpy(), list(warm_idx))
    cols = [c for c in weights.column_names if c.startswith("weight_")]
    data = [weights[c].to_numpy()[keep] for c in cols]
    data = [d[d > 0] for d in data]  # a source the item lacks has weight 0
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2, 3.5))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(cols) + 1), [c.removeprefix("weight_") for c in cols])
    ax.axhline(1.0 / len(cols), color="grey", lw=0.8, ls="--", label="equal weights (GES)")
    ax.set_ylabel("softmax weight a_v^j")
    ax.set_title("EGES weights per source, warm items")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


@functools.cache
def _font_charmaps() -> tuple[tuple[str, frozenset[int]], ...]:
    """(font file, its characters) for matplotlib's default font first, then every font it
    knows of."""
    from matplotlib import font_manager, ft2font

    default = font_manager.findfont(font_manager.FontProperties())
    out = []
    for file in dict.fromkeys([default, *(f.fname for f in font_manager.fontManager.ttflist)]):
        try:
            out.append((file, frozenset(ft2font.FT2Font(file).get_charmap())))
        except (OSError, RuntimeError, ValueError):  # a font FreeType cannot read
            continue
    return tuple(out)


def drawable_labels(labels: list[str], fallbacks: list[str]) -> tuple[list[str], str | None]:
    """Labels every character of which a font here can draw, and that font's file.

    ``labels`` in matplotlib's default font when it has all their glyphs, else in the first
    installed font that has them; when none has, ``fallbacks`` (ids) in the default font. A
    plot of item names in a script no font here covers thus shows ids, not empty boxes and a
    "Glyph missing" warning per character.
    """
    chars = {ord(c) for text in labels for c in text if not c.isspace()}
    fonts = _font_charmaps()
    for file, charmap in fonts:
        if chars <= charmap:
            return labels, file
    return fallbacks, fonts[0][0] if fonts else None


def plot_projection(run: Path, path: Path) -> bool:
    from eges.training.export import read_embeddings, read_export_manifest
    from eges.training.items import load_items, load_vocab

    export_manifest = read_export_manifest(run)
    walk_dir = Path(export_manifest["walks"])
    emb, vectors = read_embeddings(run)
    warm = ~np.asarray(emb["cold"])
    idx, vectors = emb["item_idx"].to_numpy()[warm], vectors[warm]
    if len(idx) < 3:
        return False
    items = load_items(walk_dir)
    if not items.fields:
        return False
    f = next((i for i, name in enumerate(items.fields) if "genre" in name), 0)
    names = {v: k for k, v in load_vocab(walk_dir, items.fields[f]).items()}
    off, val = items.offsets[f].numpy(), items.values[f].numpy()
    first = np.array([val[off[i]] if off[i + 1] > off[i] else 0 for i in idx])
    centred = vectors - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T  # (M, 2)
    top = [
        v
        for v, _ in sorted(
            zip(*np.unique(first[first > 0], return_counts=True)), key=lambda t: -t[1]
        )[:8]
    ]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    other = ~np.isin(first, top)
    ax.scatter(xy[other, 0], xy[other, 1], s=3, c="lightgrey", label="other")
    field = items.fields[f]
    labels, font = drawable_labels(
        [names.get(int(v), str(v)) for v in top], [f"{field} #{v}" for v in top]
    )
    for v, label in zip(top, labels):
        m = first == v
        ax.scatter(xy[m, 0], xy[m, 1], s=4, label=label)
    ax.set_title(f"EGES item vectors, PCA, coloured by first {field} value")
    from matplotlib.font_manager import FontProperties

    prop = FontProperties(size=7, **({"fname": font} if font else {}))
    ax.legend(markerscale=3, loc="best", prop=prop)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_cold_curve(block: dict[str, Any], path: Path) -> bool:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    drawn = False
    for model, s in block["summary"].items():
        if s.get("n/a") or field_variant(model):
            continue
        ks = sorted(int(k[3:]) for k in s if k.startswith("hr@"))
        mean = np.array([s[f"hr@{k}"]["mean"] for k in ks])
        std = np.array([s[f"hr@{k}"]["std"] for k in ks])
        ax.errorbar(ks, mean, yerr=std, marker="o", ms=3, capsize=2, label=NAMES.get(model, model))
        drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("hit rate @K")
    ax.set_title("Cold start: held-out items with a true neighbour in the top K")
    ax.legend(fontsize=7)
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


# --------------------------------------------------------------------------- report


def _task_dir(cfg: Config, root: Path, task: str) -> Path:
    """Where ``task``'s first split (of its split seeds) has its walk output and runs."""
    from eges.evaluation.evaluate import split_root, split_seeds

    return split_root(cfg, root, split_seeds(cfg, task)[0]) / task


def _plot_run(cfg: Config, root: Path, tasks: list[str]) -> Path | None:
    """The EGES run whose weights and vectors are plotted: the full-data run if there is one."""
    for run in [cfg.evaluate.run, cfg.train.output]:
        if run and (Path(run) / "export" / schema.MANIFEST).exists():
            return Path(run)
    for task in tasks:
        run = _task_dir(cfg, root, task) / "runs" / f"eges-seed{cfg.evaluate.seeds[0]}"
        if (run / "export" / schema.MANIFEST).exists():
            return run
    return None


def write_report(cfg: Config, results: dict[str, Any], root: Path) -> Path:
    """Write ``root/report.md`` and its plots; returns the report path."""
    tasks = list(results["tasks"])
    seed = cfg.evaluate.seeds[0]
    t = cfg.train
    prior = cfg.evaluate.popularity_prior
    ev = cfg.evaluate
    split_seeds = results.get("split_seeds", [cfg.split.seed])
    optimizer = t.optimizer
    if optimizer == "auto":
        optimizer = f"auto (Adam up to {AUTO_SPARSE_ITEMS:,} items, sparse_adam above),"
    lines = [
        "# EGES evaluation report",
        "",
        f"Data: `{cfg.data.path}` ({cfg.data.format}); created {results['created_at']}; "
        f"{results['seconds']:.0f} s in all.",
        f"Training: embedding_dim {t.embedding_dim}, window {t.window}, {t.num_negatives} "
        f"negatives (exponent {t.ns_exponent:g}), {t.epochs} epoch(s), batch {t.batch_size} "
        f"walks, {optimizer} lr {t.lr}; "
        f"walks: {cfg.walks.walks_per_node} per node, length {cfg.walks.walk_length}. "
        f"Learned models: mean ± standard deviation over training seeds {results['seeds']}"
        + (
            f" and, on the item and pair hold-outs, split seeds {split_seeds} "
            "(`evaluate.split_seeds`; there the other models' ± is over the split seeds; the "
            "walks are fixed by `walks.seed`). "
            if len(split_seeds) > 1
            else " (the split and the walks are fixed by `split.seed` and `walks.seed`). "
        )
        + "DeepWalk is gensim "
        "Word2Vec skip-gram on the same walks with the same window, negatives and dimension "
        f"({ev.deepwalk_epochs or t.epochs} epoch(s), learning rate {ev.deepwalk_lr:g}, "
        f"negative-sampling exponent {ev.deepwalk_ns_exponent:g}: `evaluate.deepwalk_*`). The "
        "H·Z rows of EGES, GES and BGE and their served tables add the popularity prior of "
        f"`eges neighbors`: H·Z + {prior:g}·ln(walk count of the candidate) "
        "(`evaluate.popularity_prior`)"
        + (
            f" (on cold start β {ev.new_items_beta:g}, `evaluate.new_items_prior`)"
            if ev.new_items_beta != prior
            else ""
        )
        + (
            f" + {ev.cooccurrence_weight:g}·ln(1 + co-occurrences of the pair in the training "
            "sessions) (`evaluate.cooccurrence_weight`)"
            if ev.cooccurrence_weight
            else ""
        )
        + "; DeepWalk's H·Z is shown without it (gensim's own score) "
        f"and with β {ev.deepwalk_beta:g}"
        + (f" and γ {ev.deepwalk_gamma:g}" if ev.deepwalk_gamma else "")
        + "."
        + "".join(
            f" {m.upper()}'s own settings: {', '.join(f'{k} {v:g}' for k, v in s.items())} "
            "(`evaluate.model_settings`)."
            for m, s in ev.model_settings.items()
        ),
        "",
        (
            "**Scored on the validation hold-out** (`split.holdout: validation`): the test "
            "part was removed from the data; use these numbers to choose settings, then report "
            "once on the test hold-out."
            if cfg.split.holdout == "validation"
            else "Scored on the test hold-out (`split.holdout: test`). The quality bar's "
            "intervals are 95% paired bootstraps over the queries (each model's values "
            "averaged over its training seeds first; next-item transitions from one item "
            "resampled together); link prediction's AUC differences have DeLong's intervals "
            "over the held-out pairs and negatives, clustered by both items of a pair; a bar "
            "is met only when its interval clears it. "
            + (
                f"The item and pair hold-outs were drawn with split seeds {split_seeds}, and "
                "their intervals pool the splits: the bootstrap draws each split's queries from "
                "that split alone (taking the splits as independent draws), and a link AUC "
                "difference is the mean of the splits' DeLong estimates with the mean of their "
                "standard errors. Both are given the splits drawn and the models trained on "
                "them: the estimate on each split, listed with every interval, shows how much "
                "the draw itself moves a result. The time split of next item has no seed."
                if len(split_seeds) > 1
                else "They do not cover other splits (`evaluate.split_seeds`)."
            )
        ),
        "",
    ]
    for task in tasks:
        block = results["tasks"][task]
        info = block["info"]
        lines += [f"## {TITLES[task]}", ""]
        split = info["split"]
        if task == "link":
            tables = split.get("tables", {})
            lines.append(
                f"{tables.get('hidden_edges', 0):,} of the connected item pairs "
                f"hidden (`split.edge_fraction` {split.get('edge_fraction', 0):.3f} "
                f"of {split.get('edges_before', 0):,} directed edges' pairs), scored "
                f"against {tables.get('non_edges', 0):,} sampled unconnected pairs"
                + (
                    f" drawn uniformly, and {tables['non_edges_matched']:,} drawn with the hidden "
                    "pairs' degrees (uniform negatives are mostly rare items, which popularity "
                    "alone tells apart)."
                    if "non_edges_matched" in tables
                    else "."
                )
            )
        elif task in ("cold", "cold_all"):
            removed = split.get("removed_fields")
            kept = (
                f"they keep no {', '.join(removed)} (written by users after an item exists)"
                if removed
                else "they keep every side-information field"
            )
            lines.append(
                f"{split.get('heldout_items', 0):,} items held out "
                f"(`split.item_fraction` {split.get('item_fraction', 0)}); {kept}; "
                f"{info.get('queries', 0):,} of them have a warm neighbour in the full "
                f"graph and are queries; candidates: {info['candidates']:,} warm items. "
                "recall@K is capped: found / min(K, true neighbours)."
            )
        else:
            lines.append(
                f"Events from {split.get('cutoff_ts', 0):.0f} (unix s, the "
                f"{1 - split.get('time_fraction', 0):.0%} quantile) held out; "
                f"{info.get('queries', 0):,} distinct transitions a→b with both items "
                f"in the training graph; candidates: {info['candidates']:,} items."
            )
        if info.get("per_split"):
            lines.append(
                f"Above: split seed {info['per_split'][0]['seed']}. The results pool split "
                f"seeds {info['split_seeds']}"
                + (
                    " ("
                    + ", ".join(f"{p['queries']:,}" for p in info["per_split"] if "queries" in p)
                    + " queries)"
                    if task != "link"
                    else ""
                )
                + "."
            )
        lines += [f"**Warning:** {w}" for w in info.get("warnings", [])]
        lines += ["", *task_table(task, block), ""]
        secs = {m: v for m, v in info.get("train_seconds", {}).items() if v}
        if secs:
            lines.append(
                "Training time per run (s): "
                + ", ".join(f"{NAMES.get(m, m)} {np.mean(v):.1f}" for m, v in secs.items())
                + "."
            )
            lines.append("")
    lines += [
        "## Paper, for context (other data)",
        "",
        "Link-prediction AUC from the paper (Wang et al., KDD 2018, Table 2). Those are Amazon "
        "and Taobao graphs with far more items and behaviour than MovieLens; the numbers are not "
        "comparable with ours, only the ordering is.",
        "",
        "| data | BGE | GES | EGES |",
        "|---|---|---|---|",
        *[f"| {name} | {b:.4f} | {g:.4f} | {e:.4f} |" for name, b, g, e in PAPER],
    ]
    link = results["tasks"].get("link")
    if link:
        cells = [
            _cell(link["summary"].get(m, {"n/a": True}), "auc") for m in ("bge", "ges", "eges")
        ]
        lines.append(f"| this run: {Path(cfg.data.path).name} | " + " | ".join(cells) + " |")
    for task in ("next", "cold"):  # the neighbour table's choice, then new items'
        lines += serving_section(results.get("tasks", {}).get(task, {}).get("serving"))
    bar = quality_bar(results)
    if bar:
        lines += [
            "",
            "## Quality bar",
            "",
            "The project's bar: EGES's cold-start HR@50 and recall@50 at least 1.3× the "
            "better of popularity and content-only similarity (both strong on MovieLens); "
            "next-item HR@10, HR@50 and MRR of the served table above DeepWalk's (H·Z, with "
            "and without the popularity prior) and co-occurrence's; link-prediction AUC EGES ≥ "
            "GES ≥ BGE, as in the paper.",
            "",
            *bar,
        ]

    lines += ["", "## Plots", ""]
    from eges.evaluation.evaluate import split_seeds as task_split_seeds

    seeds = task_split_seeds(cfg, tasks[0])
    runs = _task_dir(cfg, root, tasks[0]) / "runs"
    plot_runs = {m: runs / f"{m}-seed{seed}" for m in ("eges", "ges", "bge")}
    if plot_loss(plot_runs, root / "loss.png"):
        lines += [
            f"Training loss on the `{tasks[0]}` split"
            + (f" (split seed {seeds[0]})" if len(seeds) > 1 else "")
            + f", seed {seed}:",
            "",
            "![training loss](loss.png)",
            "",
        ]
    run = _plot_run(cfg, root, tasks)
    if run is not None:
        if plot_weights(run, root / "weights.png"):
            lines += [
                f"Learned side-information weights (run `{run}`; softmax of A per item, "
                "sources an item lacks left out):",
                "",
                "![weights](weights.png)",
                "",
            ]
        if plot_projection(run, root / "projection.png"):
            lines += ["![projection](projection.png)", ""]
    cold = results["tasks"].get("cold")
    if cold and plot_cold_curve(cold, root / "cold_hit_rate.png"):
        lines += ["![cold-start hit rate vs K](cold_hit_rate.png)", ""]
    if cold and cold.get("examples"):
        lines += [
            "## Cold-start examples",
            "",
            "Held-out items (no interactions in training) with their side information, "
            "their strongest true neighbours, and each model's top 10 (✓ = a true "
            "neighbour)"
            + (
                f"; from the first split (split seed {cold['info']['split_seeds'][0]})."
                if cold["info"].get("split_seeds")
                else "."
            ),
            "",
        ]
        for ex in cold["examples"]:
            side = "; ".join(f"{f}: {', '.join(v)}" for f, v in ex["side_info"].items())
            lines += [
                f"### {ex['title']} (item {ex['item_id']})",
                "",
                f"Side info: {side}",
                "",
                f"True neighbours: {ex['true_neighbours']}; strongest: "
                + ", ".join(ex["strongest_neighbours"][:5]),
                "",
            ]
            for model, top in ex["models"].items():
                lines.append(
                    f"- **{NAMES.get(model, model)}**: "
                    + ", ".join(f"{name}{' ✓' if hit else ''}" for name, hit in top)
                )
            lines.append("")
    path = root / "report.md"
    schema.write_text_atomic(path, "\n".join(lines) + "\n")  # never half a report
    log.info("wrote %s", path)
    return path
