"""Equal tuning on a validation hold-out: every model gets the same grid, chosen by one measure.

    eges tune --config conf/ml-100k.yaml [--output DIR] [--models eges,deepwalk]

The next-item task's validation hold-out (``split.holdout: validation``: the test period is
removed from the data, the period before it is held out) is built once by the walk job; then
each model of ``--models`` is trained at every point of one grid, relative to its own
configured settings, so that no model gets more tries than another:

* learning rate × ``--lr-factors`` (default 0.5, 1, 2): ``train.lr`` for EGES, its
  ``evaluate.model_settings`` entry for GES and BGE, ``evaluate.deepwalk_lr`` for DeepWalk;
* epochs × ``--epoch-factors`` (default 1, 2);
* negative-sampling exponent in ``--ns-exponents`` (default 0.5, 0.75; as given);

once per training seed of ``evaluate.seeds``. Every trained model is scored with every served
score H·Z + β·ln(walk count) + γ·ln(1 + co-occurrences) of the evaluation's grid (β in
{0, 0.1, 0.2, 0.4, 0.8}, γ in {0, 0.5, 1, 2}; β = γ = 0 is skip-gram's own H·Z), and cosine
is shown beside them. Per model, the point and served score with the best mean MRR over the
seeds (the head of the list) is chosen (:func:`choose`).

Outputs in ``--output`` (default: ``evaluate.output`` with ``-tune`` appended):
``tuning.json`` (every point's scores, the choice, the budget), ``tuning.md`` (the same as a
report) and ``tuned.yaml``, a config layer with the choice (:func:`overlay`): report it once on
test with ``eges evaluate --config CONF --config OUTPUT/tuned.yaml``. EGES's settings go to
``train`` (the product's training) and its β and γ to ``evaluate.popularity_prior`` and
``cooccurrence_weight``; GES's and BGE's settings and terms to ``evaluate.model_settings``;
DeepWalk's to ``evaluate.deepwalk_*``. Finished trainings are reused
(``next/runs/<model>-<point>-seed<N>``), so an interrupted tuning continues; DeepWalk is
trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from eges import schema
from eges.cli import fail, parser
from eges.config import Config, ConfigError, add_config_arguments, config_from_args
from eges.evaluation.evaluate import (
    CHOICE_GRIDS,
    LEARNED,
    EvaluationError,
    Models,
    _clock,
    grid_label,
    model_config,
    next_queries,
    rank_queries,
    walk_output,
)
from eges.evaluation.metrics import bootstrap_interval
from eges.quiet import close_log_file, setup_logging

log = logging.getLogger("eges.evaluation.tune")

LOG_FILE = "tune.log"  # in the tuning directory: every library's log lines
TUNABLE = (*LEARNED, "deepwalk")
TASK = "next"
KEY = "mrr"  # what the choice maximises: the head of the list
SHOWN = ("hr@10", "hr@50", "mrr")
LR_FACTORS = (0.5, 1.0, 2.0)
EPOCH_FACTORS = (1, 2)
NS_EXPONENTS = (0.5, 0.75)


@dataclasses.dataclass(frozen=True)
class Point:
    """One model's training settings at a point of the grid."""

    lr: float
    epochs: int
    ns_exponent: float

    @property
    def label(self) -> str:
        return f"lr{self.lr:.12g}-ep{self.epochs}-ns{self.ns_exponent:.12g}"


def configured(cfg: Config, model: str) -> Point:
    """The settings ``model`` has in ``cfg``: the grid's centre."""
    if model == "deepwalk":
        ev = cfg.evaluate
        epochs = ev.deepwalk_epochs or cfg.train.epochs
        return Point(ev.deepwalk_lr, epochs, ev.deepwalk_ns_exponent)
    t = model_config(cfg, model).train
    return Point(t.lr, t.epochs, t.ns_exponent)


def grid(
    cfg: Config,
    model: str,
    lr_factors: tuple[float, ...] = LR_FACTORS,
    epoch_factors: tuple[int, ...] = EPOCH_FACTORS,
    exponents: tuple[float, ...] = NS_EXPONENTS,
) -> tuple[list[Point], int | None]:
    """Every point of the grid for ``model``, around its configured settings (the learning
    rate and epochs relative to them, the exponent as given), and the index of the configured
    point itself (factors 1 and its own exponent; None when the grid leaves it out)."""
    base = configured(cfg, model)
    points, home = [], None
    for f in lr_factors:
        for e in epoch_factors:
            for x in exponents:
                if f == 1 and e == 1 and x == base.ns_exponent:
                    home = len(points)
                points.append(Point(float(f"{base.lr * f:.12g}"), base.epochs * e, x))
    return points, home


def point_config(cfg: Config, model: str, point: Point) -> Config:
    """``cfg`` with ``model`` trained at ``point``."""
    ev = cfg.evaluate
    if model == "deepwalk":
        ev = dataclasses.replace(
            ev,
            deepwalk_lr=point.lr,
            deepwalk_epochs=point.epochs,
            deepwalk_ns_exponent=point.ns_exponent,
        )
    elif model == "eges":  # EGES's settings are train's
        train = dataclasses.replace(
            cfg.train, lr=point.lr, epochs=point.epochs, ns_exponent=point.ns_exponent
        )
        return dataclasses.replace(cfg, train=train)
    else:
        settings = {"lr": point.lr, "epochs": point.epochs, "ns_exponent": point.ns_exponent}
        settings = {**ev.model_settings.get(model, {}), **settings}
        ev = dataclasses.replace(ev, model_settings={**ev.model_settings, model: settings})
    return dataclasses.replace(cfg, evaluate=ev)


def served_scores(model: str) -> dict[str, tuple[float, float] | None]:
    """Scorer name -> (β, γ) of the served scores the choice is made among; cosine -> None
    (shown, not chosen: it is not what a run's neighbour table or DeepWalk's prior row serve)."""
    out: dict[str, tuple[float, float] | None] = {model: None}
    for b, g in CHOICE_GRIDS[TASK]:
        out[f"{model}·ctx·{grid_label(b, g)}"] = (b, g)
    return out


def tune(
    cfg: Config,
    models: list[str],
    output: Path,
    lr_factors: tuple[float, ...] = LR_FACTORS,
    epoch_factors: tuple[int, ...] = EPOCH_FACTORS,
    exponents: tuple[float, ...] = NS_EXPONENTS,
) -> dict[str, Any]:
    """Train and score every model at every point of the grid on the next-item validation
    hold-out; write ``tuning.json``, ``tuning.md`` and ``tuned.yaml``.

    Returns:
        What ``tuning.json`` holds: ``grid``; per model (``models``) its ``points`` (each with
        its scores' mean metrics), ``chosen``, and the budget (``trainings``,
        ``train_seconds``, ``seconds``); ``overlay`` (the config layer).
    """
    models = list(dict.fromkeys(models))  # each once
    unknown = sorted(set(models) - set(TUNABLE))
    if unknown or not models:
        raise ConfigError(f"eges tune --models: {unknown or 'none'} (tunable: {list(TUNABLE)})")
    cfg = dataclasses.replace(
        cfg,
        split=dataclasses.replace(cfg.split, holdout="validation"),
        evaluate=dataclasses.replace(cfg.evaluate, tasks=[TASK], output=str(output)),
    )
    output.mkdir(parents=True, exist_ok=True)
    for name in ("tuning.json", "tuning.md", "tuned.yaml"):  # a failed run leaves none behind
        (output / name).unlink(missing_ok=True)
    start = time.perf_counter()
    walk_dir = walk_output(cfg, TASK, output)
    built = Models(cfg, TASK, walk_dir, output)
    built.tuning = True
    queries, relevant, candidates = next_queries(built, cfg.split.seed)
    if len(queries) == 0:
        raise EvaluationError("the validation period has no transition between trained items")
    seeds = cfg.evaluate.seeds
    grids, homes = {}, {}
    for m in models:
        grids[m], homes[m] = grid(cfg, m, lr_factors, epoch_factors, exponents)
    total = sum(len(g) for g in grids.values()) * len(seeds)
    done = 0
    report: dict[str, Any] = {}
    for model in models:
        model_start = time.perf_counter()
        names = served_scores(model)
        points = []
        # (point, scorer) -> MRR per query, summed over the seeds
        per_query: dict[tuple[int, str], np.ndarray] = {}
        for i, point in enumerate(grids[model]):
            settings = point_config(cfg, model, point)
            runs: dict[str, list[dict[str, float]]] = {}
            for seed in seeds:
                done += 1
                log.info(
                    "[tune %d/%d] %s lr %g, %d epoch(s), exponent %g, seed %d (%d left after "
                    "it; %s elapsed)",
                    done,
                    total,
                    model,
                    point.lr,
                    point.epochs,
                    point.ns_exponent,
                    seed,
                    total - done,
                    _clock(time.perf_counter() - start),
                )
                run_dir = output / TASK / "runs" / f"{model}-{point.label}-seed{seed}"
                for scorer in built.build(model, seed, settings=settings, run_dir=run_dir):
                    if scorer.name not in names:
                        continue
                    values: dict[str, np.ndarray] = {}
                    res = rank_queries(
                        scorer, queries, relevant, candidates, [10, 50], True, values
                    )
                    if res is None:
                        raise EvaluationError(f"{scorer.name} scored no validation query")
                    runs.setdefault(scorer.name, []).append(res)
                    key = (i, scorer.name)
                    per_query[key] = per_query.get(key, 0) + values[KEY]
            scores = {
                name: {k: float(np.mean([r[k] for r in rs])) for k in SHOWN}
                for name, rs in runs.items()
            }
            points.append({**dataclasses.asdict(point), "scores": scores})
        home = homes[model]
        best = choose(points, names, home)
        b, g = names[best[1]]
        chosen = {**dataclasses.asdict(grids[model][best[0]]), "popularity_prior": b}
        chosen.update(cooccurrence_weight=g, scores=points[best[0]]["scores"][best[1]])
        # against the configured settings with the same served score: what tuning bought
        if home is not None:  # per-query MRR, each summed over the same seeds
            n = len(seeds)
            chosen["against_configured"] = bootstrap_interval(
                np.subtract, [per_query[best] / n, per_query[(home, best[1])] / n], groups=queries
            )
        seconds = built.train_seconds.pop(model, [])
        report[model] = {
            "points": points,
            "chosen": chosen,
            "trainings": len(grids[model]) * len(seeds),
            "train_seconds": round(float(sum(seconds)), 1),
            "seconds": round(time.perf_counter() - model_start, 1),
        }
        log.info(
            "%s: lr %g, %d epoch(s), exponent %g with H·Z + %g·ln(walk count) + "
            "%g·ln(1 + co-occurrences): MRR %.4f",
            model,
            chosen["lr"],
            chosen["epochs"],
            chosen["ns_exponent"],
            b,
            g,
            chosen["scores"][KEY],
        )
    results = {
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "data": cfg.data.path,
        "task": TASK,
        "chosen_by": f"next-item {KEY} on a validation hold-out",
        "queries": int(len(queries)),
        "candidates": int(len(candidates)),
        "seeds": seeds,
        "grid": {
            "lr_factors": list(lr_factors),
            "epoch_factors": list(epoch_factors),
            "ns_exponents": list(exponents),
            "served": [list(bg) for bg in CHOICE_GRIDS[TASK]],
        },
        "models": report,
        "overlay": overlay(report, cfg),
        "seconds": round(time.perf_counter() - start, 1),
    }
    header = (
        f"# chosen by `eges tune` on the next-item validation hold-out ({KEY}), "
        f"{results['created_at']}, data {cfg.data.path};\n# report it once on test: "
        f"eges evaluate --config <your config> --config {output / 'tuned.yaml'}\n"
    )
    schema.write_text_atomic(
        output / "tuned.yaml", header + yaml.safe_dump(results["overlay"], sort_keys=False)
    )
    schema.write_text_atomic(output / "tuning.md", report_text(results))
    schema.write_text_atomic(output / "tuning.json", json.dumps(results, indent=1))
    return results


def choose(
    points: list[dict[str, Any]],
    names: dict[str, tuple[float, float] | None],
    home: int | None,
) -> tuple[int, str]:
    """(point index, scorer name) with the best mean MRR among the served scores (``names``
    with a (β, γ); cosine is not chosen). A tie goes to the configured point ``home``, then
    to the earlier point, then to the earlier served score (smaller β, then γ)."""
    served = [(i, n) for i in range(len(points)) for n, bg in names.items() if bg]
    order = {k: j for j, k in enumerate(served)}
    return max(served, key=lambda k: (points[k[0]]["scores"][k[1]][KEY], k[0] == home, -order[k]))


def overlay(report: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """The config layer with each tuned model's choice. A model not tuned keeps the settings
    it has in ``cfg``, written out where they would otherwise follow EGES's (GES's and BGE's
    training settings and served terms, DeepWalk's epochs, β and γ)."""
    out: dict[str, Any] = {}
    ev: dict[str, Any] = {}
    for model, block in report.items():
        c = block["chosen"]
        settings = {"lr": c["lr"], "epochs": c["epochs"], "ns_exponent": c["ns_exponent"]}
        terms = {"popularity_prior": c["popularity_prior"]}
        terms["cooccurrence_weight"] = c["cooccurrence_weight"]
        if model == "eges":
            out["train"] = settings
            ev.update(terms)
        elif model == "deepwalk":
            ev.update(
                deepwalk_lr=c["lr"],
                deepwalk_epochs=c["epochs"],
                deepwalk_ns_exponent=c["ns_exponent"],
                deepwalk_prior=terms["popularity_prior"],
                deepwalk_cooccurrence_weight=terms["cooccurrence_weight"],
            )
        else:
            ev.setdefault("model_settings", {})[model] = {**settings, **terms}
    if "eges" in report:  # what follows train and EGES's terms stays as it was
        for model in ("ges", "bge"):
            if model not in report:
                own = model_config(cfg, model)
                p = configured(cfg, model)
                ev.setdefault("model_settings", {})[model] = {
                    "lr": p.lr,
                    "epochs": p.epochs,
                    "ns_exponent": p.ns_exponent,
                    "popularity_prior": own.evaluate.popularity_prior,
                    "cooccurrence_weight": own.evaluate.cooccurrence_weight,
                }
        if "deepwalk" not in report:
            ev.update(
                deepwalk_epochs=configured(cfg, "deepwalk").epochs,
                deepwalk_prior=cfg.evaluate.deepwalk_beta,
                deepwalk_cooccurrence_weight=cfg.evaluate.deepwalk_gamma,
            )
    if ev:
        out["evaluate"] = ev
    return out


def report_text(results: dict[str, Any]) -> str:
    """``tuning.md``: the grid, the budget, each model's points and its choice."""
    g = results["grid"]
    lines = [
        "# Tuning on the next-item validation hold-out",
        "",
        f"Data `{results['data']}`, {results['created_at']}; {results['queries']:,} validation "
        f"transitions, {results['candidates']:,} candidates; training seeds {results['seeds']}.",
        "",
        "**The grid, the same for every model** (around each model's configured settings): "
        f"learning rate × {g['lr_factors']}, epochs × {g['epoch_factors']}, "
        f"negative-sampling exponent {g['ns_exponents']}; each run scored with H·Z + "
        "β·ln(walk count) + γ·ln(1 + co-occurrences) for β in {0, 0.1, 0.2, 0.4, 0.8} and γ "
        "in {0, 0.5, 1, 2}. The choice: the best mean MRR over the seeds.",
        "",
        "| model | trainings | training time | wall time |",
        "|---|---|---|---|",
    ]
    for model, block in results["models"].items():
        lines.append(
            f"| {model} | {block['trainings']} | {block['train_seconds']:.0f} s "
            f"| {block['seconds']:.0f} s |"
        )
    lines += ["", f"Total {results['seconds']:.0f} s.", ""]
    for model, block in results["models"].items():
        c = block["chosen"]
        lines += [
            f"## {model}",
            "",
            f"Chosen: lr {c['lr']:g}, {c['epochs']} epoch(s), exponent {c['ns_exponent']:g}, "
            f"β {c['popularity_prior']:g}, γ {c['cooccurrence_weight']:g}: "
            + ", ".join(f"{k} {c['scores'][k]:.4f}" for k in SHOWN)
            + ".",
        ]
        if "against_configured" in c:
            a = c["against_configured"]
            lines.append(
                f"MRR against the configured settings with the same β and γ: "
                f"{a['estimate']:+.4f} (95% interval {a['low']:+.4f} to {a['high']:+.4f}; "
                "chosen and scored on the same validation data, so optimistic)."
            )
        lines += [
            "",
            "| lr | epochs | exponent | best served score | HR@10 | HR@50 | MRR | cosine MRR |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in sorted(block["points"], key=lambda p: -_best(p, model)[1][KEY]):
            name, s = _best(p, model)
            cosine = p["scores"].get(model, {}).get(KEY, float("nan"))
            lines.append(
                f"| {p['lr']:g} | {p['epochs']} | {p['ns_exponent']:g} | "
                f"{name.split('·ctx·', 1)[-1]} | {s['hr@10']:.4f} | {s['hr@50']:.4f} | "
                f"{s['mrr']:.4f} | {cosine:.4f} |"
            )
        lines.append("")
    lines += [
        "Report the choice once on test with the layer this tuning wrote:",
        "",
        "```bash",
        "eges evaluate --config <your config> --config tuned.yaml",
        "```",
        "",
    ]
    return "\n".join(lines)


def _best(point: dict[str, Any], model: str) -> tuple[str, dict[str, float]]:
    served = {n: s for n, s in point["scores"].items() if n != model}
    name = max(served, key=lambda n: served[n][KEY])
    return name, served[name]


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas: {text!r}")
    if not values or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"expected finite numbers: {text!r}")
    return values


def _positive(text: str) -> tuple[float, ...]:
    values = _floats(text)
    if min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected numbers > 0: {text!r}")
    return values


def _epochs(text: str) -> tuple[int, ...]:
    values = _positive(text)
    if not all(float(v).is_integer() for v in values):
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1: {text!r}")
    return tuple(int(v) for v in values)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("tune", __doc__)
    add_config_arguments(p)
    p.add_argument("--output", help="tuning directory (default: evaluate.output + '-tune')")
    p.add_argument(
        "--models",
        default="eges,deepwalk",
        help=f"models to tune, separated by commas (of {', '.join(TUNABLE)}; default "
        "eges,deepwalk)",
    )
    p.add_argument("--lr-factors", type=_positive, default=LR_FACTORS, help="default 0.5,1,2")
    p.add_argument("--epoch-factors", type=_epochs, default=EPOCH_FACTORS, help="default 1,2")
    p.add_argument("--ns-exponents", type=_floats, default=NS_EXPONENTS, help="default 0.5,0.75")
    p.add_argument("--log-file", help=f"default: OUTPUT/{LOG_FILE}, appended to")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
        output = Path(args.output or cfg.evaluate.output.rstrip("/") + "-tune")
        setup_logging(args.log_file or output / LOG_FILE)
        models = list(dict.fromkeys(m.strip() for m in args.models.split(",") if m.strip()))
        results = tune(cfg, models, output, args.lr_factors, args.epoch_factors, args.ns_exponents)
    except (ConfigError, EvaluationError, schema.IncompleteOutputError) as exc:
        return fail(exc)
    finally:
        close_log_file()
    for model, block in results["models"].items():
        c = block["chosen"]
        print(
            f"{model}: lr {c['lr']:g}, {c['epochs']} epoch(s), exponent {c['ns_exponent']:g}, "
            f"β {c['popularity_prior']:g}, γ {c['cooccurrence_weight']:g}: MRR "
            f"{c['scores'][KEY]:.4f} ({block['trainings']} trainings, {block['seconds']:.0f} s)"
        )
    print(f"tuning finished in {results['seconds']:.0f} s -> {output / 'tuning.md'}")
    print(f"report it once on test: eges evaluate --config ... --config {output / 'tuned.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
