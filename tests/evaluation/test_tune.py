"""eges tune: the same grid for every model on the next-item validation hold-out, the choice,
and the config layer it writes — real trainings (the trainer and gensim) on a small walk output
written without Spark."""

import dataclasses
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from eges import schema
from eges.config import Config, EvaluateConfig, SplitConfig, TrainConfig, load_config
from eges.evaluation.evaluate import TASK_SPLIT, model_config
from eges.evaluation.tune import (
    Point,
    choose,
    configured,
    grid,
    main,
    overlay,
    point_config,
    tune,
)
from tests.train.walkdir import make_complete_walk_dir


def small_config(tmp_path) -> Config:
    return Config(
        split=SplitConfig(holdout="validation"),
        train=TrainConfig(embedding_dim=8, batch_size=8, window=2, num_negatives=2, epochs=1),
        evaluate=EvaluateConfig(seeds=[1, 2], output=str(tmp_path / "eval")),
    )


def next_walk_output(cfg: Config, root):
    """``root/next/walks`` as the next-item task's walk job would leave it (validation)."""
    walk_dir = make_complete_walk_dir(root / "next" / "walks", walks=40, cold_items=0)
    # the training graph (item i followed by i + 1, as in the walks) and the held-out period
    for table, src in (
        (schema.EDGES_DIR, range(1, 40)),
        (schema.EVAL_DIR + "/test_transitions", range(1, 31)),
    ):
        (walk_dir / table).mkdir(parents=True)
        pq.write_table(
            pa.table(
                {
                    "src": pa.array(src, pa.int64()),
                    "dst": pa.array([s + 1 for s in src], pa.int64()),
                    "weight": pa.array([1] * len(src), pa.int64()),
                }
            ),
            walk_dir / table / "part-00000.parquet",
        )
    job = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, **TASK_SPLIT["next"]))
    manifest = schema.read_manifest(walk_dir, kind=None)
    manifest["config"] = {k: job.to_dict()[k] for k in ("data", "sessions", "walks", "split")}
    manifest.update(split={"kind": "time", "tables": {"test_transitions": 30}}, counts={})
    schema.write_manifest(walk_dir, manifest)


def test_the_grid_is_the_same_for_every_model_around_its_own_settings():
    cfg = Config(
        train=TrainConfig(lr=0.01, epochs=3),
        evaluate=EvaluateConfig(
            deepwalk_lr=0.025, deepwalk_epochs=2, model_settings={"ges": {"lr": 0.04}}
        ),
    )
    assert configured(cfg, "eges") == Point(0.01, 3, 0.75)
    assert configured(cfg, "ges") == Point(0.04, 3, 0.75)
    assert configured(cfg, "deepwalk") == Point(0.025, 2, 0.75)
    shapes = {}
    for model in ("eges", "ges", "bge", "deepwalk"):
        points, home = grid(cfg, model)
        base = configured(cfg, model)
        shapes[model] = [(p.lr / base.lr, p.epochs / base.epochs, p.ns_exponent) for p in points]
        assert len(points) == 12 and points[home] == base
    assert len({tuple(s) for s in shapes.values()}) == 1  # the same relative grid for all
    assert grid(cfg, "eges", lr_factors=(0.5, 2.0))[1] is None  # the configured point left out
    # each point trains the model it is for, and nothing else
    p = Point(0.02, 6, 0.5)
    ges = point_config(cfg, "ges", p)
    assert model_config(ges, "ges").train == dataclasses.replace(
        cfg.train, lr=0.02, epochs=6, ns_exponent=0.5
    )
    assert model_config(ges, "eges").train == cfg.train
    # GES's own served terms, where the layer sets them, replace EGES's for GES only
    own = dataclasses.replace(
        cfg.evaluate, model_settings={"ges": {"popularity_prior": 0.8, "cooccurrence_weight": 1}}
    )
    own = dataclasses.replace(cfg, evaluate=own)
    assert model_config(own, "ges").evaluate.popularity_prior == 0.8
    assert model_config(own, "ges").evaluate.cooccurrence_weight == 1.0
    assert model_config(own, "bge").evaluate.popularity_prior == cfg.evaluate.popularity_prior
    dw = point_config(cfg, "deepwalk", p).evaluate
    assert (dw.deepwalk_lr, dw.deepwalk_epochs, dw.deepwalk_ns_exponent) == (0.02, 6, 0.5)
    assert model_config(point_config(cfg, "deepwalk", p), "eges").train == cfg.train


def test_tuning_trains_every_point_chooses_the_best_and_writes_a_loadable_layer(tmp_path, caplog):
    cfg = small_config(tmp_path)
    out = tmp_path / "tune"
    next_walk_output(cfg, out)
    with caplog.at_level(logging.INFO, logger="eges.evaluation"):
        res = tune(cfg, ["eges", "deepwalk"], out, (1.0, 2.0), (1,), (0.5, 0.75))
    assert "reusing walk output" in caplog.text  # the validation walks above, not a new job
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[tune ")]
    assert len(progress) == 2 * 4 * 2 and progress[-1].startswith("[tune 16/16] deepwalk")
    for model in ("eges", "deepwalk"):
        block = res["models"][model]
        assert block["trainings"] == 8
        points = block["points"]
        base = configured(cfg, model)
        assert [(p["lr"], p["ns_exponent"]) for p in points] == [
            (base.lr * f, x) for f in (1.0, 2.0) for x in (0.5, 0.75)
        ]
        for p in points:  # cosine and every served score (β, γ) of the grid
            assert len(p["scores"]) == 1 + 20
            assert all(
                0 <= s["mrr"] <= 1 and s["hr@10"] <= s["hr@50"] for s in p["scores"].values()
            )
        # the choice is the best served score over every point (cosine is shown, not chosen)
        served = [
            (s["mrr"], p["lr"], p["ns_exponent"], name)
            for p in points
            for name, s in p["scores"].items()
            if name != model
        ]
        best = max(served)
        c = block["chosen"]
        assert c["scores"]["mrr"] == best[0]
        assert (c["lr"], c["ns_exponent"]) in {(lr, x) for m, lr, x, _ in served if m == best[0]}
    # the EGES runs were trained with the point's settings, one directory per point and seed
    for p in res["models"]["eges"]["points"]:
        label = Point(p["lr"], p["epochs"], p["ns_exponent"]).label
        for seed in (1, 2):
            export = schema.read_manifest(
                out / "next" / "runs" / f"eges-{label}-seed{seed}" / "export", kind=None
            )
            t = export["config"]["train"]
            assert (t["lr"], t["ns_exponent"], t["seed"]) == (p["lr"], p["ns_exponent"], seed)
    # the configured point is in the grid: the choice is compared with it, on the same queries
    for model in ("eges", "deepwalk"):
        versus = res["models"][model]["chosen"]["against_configured"]
        assert versus["low"] <= versus["estimate"] <= versus["high"]
    # the layer loads over the config and carries each model's choice, with its types
    (tmp_path / "base.yaml").write_text(cfg.to_yaml())
    layered = load_config([tmp_path / "base.yaml", out / "tuned.yaml"])
    e, d = res["models"]["eges"]["chosen"], res["models"]["deepwalk"]["chosen"]
    t = layered.train
    assert (t.lr, t.epochs, t.ns_exponent) == (e["lr"], e["epochs"], e["ns_exponent"])
    assert type(t.epochs) is int and type(layered.evaluate.deepwalk_epochs) is int
    assert layered.evaluate.deepwalk_epochs == d["epochs"]
    assert layered.evaluate.popularity_prior == e["popularity_prior"]
    assert layered.evaluate.cooccurrence_weight == e["cooccurrence_weight"]
    ev = layered.evaluate
    assert (ev.deepwalk_lr, ev.deepwalk_ns_exponent) == (d["lr"], d["ns_exponent"])
    assert (ev.deepwalk_beta, ev.deepwalk_gamma) == (
        d["popularity_prior"],
        d["cooccurrence_weight"],
    )
    assert json.loads((out / "tuning.json").read_text())["overlay"] == res["overlay"]
    report = (out / "tuning.md").read_text()
    assert "## eges" in report and "## deepwalk" in report and "| eges | 8 |" in report
    assert "against the configured settings" in report
    # GES and BGE were not tuned: the layer keeps them at their configured settings
    assert load_config([tmp_path / "base.yaml", out / "tuned.yaml"]).evaluate.model_settings == {
        m: {
            "lr": 0.01,
            "epochs": 1,
            "ns_exponent": 0.75,
            "popularity_prior": 0.4,
            "cooccurrence_weight": 0.0,
        }
        for m in ("ges", "bge")
    }
    # a second tuning reuses the trained runs
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="eges.evaluation"):
        again = tune(cfg, ["eges"], out, (1.0, 2.0), (1,), (0.5, 0.75))
    assert caplog.text.count("reusing run") == 8
    assert again["models"]["eges"]["chosen"] == res["models"]["eges"]["chosen"]


def test_each_tuned_model_keeps_its_own_choice_and_the_others_their_settings(tmp_path):
    cfg = Config(
        train=TrainConfig(lr=0.01, epochs=3),
        evaluate=EvaluateConfig(popularity_prior=0.4, cooccurrence_weight=0.5),
    )
    chosen = {"lr": 0.02, "epochs": 2, "ns_exponent": 0.5, "popularity_prior": 0.2}
    chosen["cooccurrence_weight"] = 1.0
    eges = {**chosen, "lr": 0.005, "popularity_prior": 0.8}
    layer = overlay({"ges": {"chosen": chosen}, "eges": {"chosen": eges}}, cfg)
    assert layer["train"] == {"lr": 0.005, "epochs": 2, "ns_exponent": 0.5}
    assert layer["evaluate"]["model_settings"] == {
        "ges": {
            "lr": 0.02,
            "epochs": 2,
            "ns_exponent": 0.5,
            "popularity_prior": 0.2,
            "cooccurrence_weight": 1.0,
        },
        "bge": {
            "lr": 0.01,
            "epochs": 3,
            "ns_exponent": 0.75,
            "popularity_prior": 0.4,
            "cooccurrence_weight": 0.5,
        },
    }
    (tmp_path / "base.yaml").write_text(cfg.to_yaml())
    (tmp_path / "tuned.yaml").write_text(yaml.safe_dump(layer))
    layered = load_config([tmp_path / "base.yaml", tmp_path / "tuned.yaml"])
    ges, bge = model_config(layered, "ges"), model_config(layered, "bge")
    assert (ges.train.lr, ges.train.epochs, ges.evaluate.popularity_prior) == (0.02, 2, 0.2)
    assert (bge.train.lr, bge.train.epochs, bge.evaluate.popularity_prior) == (0.01, 3, 0.4)
    # DeepWalk, not tuned, keeps the epochs and served terms it had (they followed EGES's)
    ev = layered.evaluate
    assert (ev.deepwalk_epochs, ev.deepwalk_beta, ev.deepwalk_gamma) == (3, 0.4, 0.5)
    assert (ev.deepwalk_lr, ev.deepwalk_ns_exponent) == (0.025, 0.75)


def test_ties_go_to_the_configured_point_then_the_earlier_one():
    names = {"eges": None, "eges·ctx·β0": (0.0, 0.0), "eges·ctx·β0.4": (0.4, 0.0)}

    def point(mrr_b0, mrr_b04, cosine=0.0):
        s = {"eges": {"mrr": cosine}, "eges·ctx·β0": {"mrr": mrr_b0}}
        s["eges·ctx·β0.4"] = {"mrr": mrr_b04}
        return {"scores": s}

    points = [point(0.1, 0.3), point(0.3, 0.2), point(0.3, 0.1, cosine=0.9)]
    assert choose(points, names, home=None) == (0, "eges·ctx·β0.4")  # earlier point
    assert choose(points, names, home=1) == (1, "eges·ctx·β0")  # the configured one
    assert choose([point(0.2, 0.2)], names, home=0) == (0, "eges·ctx·β0")  # smaller β
    # cosine (0.9 at point 2) is never chosen


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "eges,content"], "tunable"),
        (["--lr-factors", "0,1"], "numbers > 0"),
        (["--epoch-factors", "1.5"], "whole numbers"),
        (["--ns-exponents", "x"], "numbers separated by commas"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    (tmp_path / "c.yaml").write_text("train: {epochs: 1}\n")
    try:
        code = main(["--config", str(tmp_path / "c.yaml"), "--output", str(tmp_path / "t"), *args])
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t" / "next").exists()  # refused before any work
