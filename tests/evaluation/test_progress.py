"""The evaluation's progress lines: one before each model (and seed) of the whole evaluation,
counted over every task, with what is left and the time elapsed — from the real task loop, on a
synthetic link-task walk output (no Spark; the cheap models only)."""

import dataclasses
import logging
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eges import schema
from eges.config import Config, EvaluateConfig, TrainConfig
from eges.evaluation.evaluate import TASK_SPLIT, Progress, evaluate_task, model_seeds
from tests.train.walkdir import make_complete_walk_dir

LINE = re.compile(r"^\[(\w+) (\d+)/(\d+)\] (.+) \((\d+) left after it; (\d+:\d\d) elapsed\)$")


LINK_PAIRS = {
    "hidden_edges": [(1, 2), (3, 4), (5, 6)],
    "non_edges": [(1, 30), (7, 33), (9, 39)],
    "non_edges_matched": [(1, 31), (2, 34), (3, 38)],
}


def link_walk_output(cfg: Config, root, tables: dict | None = None):
    """``root/link/walks`` as the link task's walk job would leave it, so evaluate reuses it;
    ``tables``: its held-out pairs and negatives (default :data:`LINK_PAIRS`)."""
    walk_dir = make_complete_walk_dir(root / "link" / "walks", walks=40, cold_items=0)
    for name, pairs in (tables or LINK_PAIRS).items():
        (walk_dir / schema.EVAL_DIR / name).mkdir(parents=True)
        src, dst = zip(*pairs)
        pq.write_table(
            pa.table(
                {
                    "src": pa.array(src, pa.int32()),
                    "dst": pa.array(dst, pa.int32()),
                    "weight": pa.array([1] * len(pairs), pa.int64()),
                }
            ),
            walk_dir / schema.EVAL_DIR / name / "part-00000.parquet",
        )
    job = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, **TASK_SPLIT["link"]))
    manifest = schema.read_manifest(walk_dir, kind=None)
    manifest["config"] = {k: job.to_dict()[k] for k in ("data", "sessions", "walks", "split")}
    tables = {name: 3 for name in schema.EVAL_TABLES["edges"]}
    manifest.update(split={"kind": "edges", "tables": tables}, counts={"walks": 40})
    schema.write_manifest(walk_dir, manifest)


def test_one_line_per_model_and_seed_over_all_tasks(tmp_path, caplog):
    cfg = Config(
        evaluate=EvaluateConfig(
            output=str(tmp_path),
            tasks=["link", "cold"],
            models=["popularity", "random"],
            seeds=[1, 2],
        )
    )
    assert model_seeds(cfg) == [("popularity", 1), ("random", 1), ("random", 2)]
    link_walk_output(cfg, tmp_path)
    progress = Progress(cfg)
    assert progress.total == 6  # 2 tasks x (popularity once + random per seed)
    with caplog.at_level(logging.INFO, logger="eges.evaluation.evaluate"):
        out = evaluate_task(cfg, "link", tmp_path, progress)
    lines = [LINE.match(r.getMessage()) for r in caplog.records]
    lines = [m.groups() for m in lines if m]
    assert [(t, int(i), int(n), what, int(left)) for t, i, n, what, left, _ in lines] == [
        ("link", 1, 6, "popularity", 5),
        ("link", 2, 6, "random seed 1", 4),
        ("link", 3, 6, "random seed 2", 3),
    ]
    assert set(out["results"]) == {"popularity", "random"}  # the loop really ran them
    assert {"auc", "auc_matched"} <= set(out["results"]["popularity"][0])
    assert len(out["results"]["random"]) == 2
    # the counter goes on across tasks
    assert progress.next("cold", "random", 2).startswith("[cold 4/6] random seed 2 (2 left")


def test_default_evaluation_counts_every_seeded_model_per_seed():
    cfg = Config()
    ev = cfg.evaluate
    seeded = {"eges", "ges", "bge", "deepwalk", "random"} & set(ev.models)
    per_task = len(seeded) * len(ev.seeds) + len(set(ev.models) - seeded)
    assert Progress(cfg).total == len(ev.tasks) * per_task


def test_deepwalk_takes_its_settings_from_the_config(tmp_path):
    """evaluate.deepwalk_*: gensim's learning rate, epochs and exponent reach its training, and
    deepwalk_prior (null: popularity_prior) is the β of its prior rows — the real gensim run."""
    import numpy as np

    from eges.evaluation.evaluate import Models
    from eges.serving.neighbors import log_count_prior

    walk_dir = make_complete_walk_dir(tmp_path / "walks", walks=60, cold_items=0)

    def deepwalk(**settings):
        cfg = Config(evaluate=EvaluateConfig(output=str(tmp_path), **settings))
        models = Models(cfg, "link", walk_dir, tmp_path)
        scorers = {s.name: s for s in models.build("deepwalk", 1)}
        return models, scorers

    models, default = deepwalk(deepwalk_epochs=20)  # enough passes to move on 60 short walks
    _, still = deepwalk(deepwalk_epochs=20, deepwalk_lr=1e-9, deepwalk_prior=0.0)
    _, other = deepwalk(deepwalk_epochs=20, deepwalk_ns_exponent=0.0)
    _, longer = deepwalk(deepwalk_epochs=40)
    beta = EvaluateConfig().popularity_prior
    np.testing.assert_allclose(
        default["deepwalk·ctx·prior"].bias, log_count_prior(models.counts, beta)
    )
    assert not still["deepwalk·ctx·prior"].bias.any()  # β 0: gensim's own score
    # a learning rate of ~0 leaves gensim's random start; another exponent or number of epochs
    # trains other vectors (two runs of one setting differ by gensim's threads at most)
    _, again = deepwalk(deepwalk_epochs=20)

    def apart(a, b):
        return float(np.abs(a["deepwalk"].table - b["deepwalk"].table).mean())

    # measured 2026-12-06: 0 between identical runs; 0.086 (lr), 0.0022 (exponent), 0.0074
    # (epochs) for the changed settings
    noise = apart(default, again)
    for changed in (still, other, longer):
        assert apart(default, changed) > 3 * noise + 1e-4


def test_the_served_rows_add_the_configured_cooccurrence_term(tmp_path):
    """evaluate.cooccurrence_weight γ: the served rows (EGES's H·Z + prior and its table,
    DeepWalk's prior row) add γ·ln(1 + the training graph's edge weights, both directions);
    on a validation hold-out EGES also gets a scorer per (β, γ) of the choice's grid (per β on
    cold start, whose served rows take evaluate.new_items_prior) — real gensim and trainer runs
    on a synthetic walk output."""
    import numpy as np

    from eges.evaluation.evaluate import SERVING_GRID, SERVING_PRIORS, Models, grid_label

    walk_dir = make_complete_walk_dir(tmp_path / "walks", walks=60, cold_items=0)
    src, dst, weight = [1, 2, 2, 5], [2, 1, 3, 9], [4, 2, 1, 7]
    (walk_dir / schema.EDGES_DIR).mkdir()
    pq.write_table(
        pa.table({"src": src, "dst": dst, "weight": weight}, schema=schema.EDGE_SCHEMA),
        walk_dir / schema.EDGES_DIR / "part-00000.parquet",
    )
    want = np.zeros((61, 61))
    np.add.at(want, (src, dst), weight)
    want = 0.5 * np.log1p(want + want.T)

    def scorers(model: str, task: str = "next", **split):
        ev = EvaluateConfig(output=str(tmp_path), cooccurrence_weight=0.5, new_items_prior=0.8)
        cfg = Config(evaluate=ev)
        cfg = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, **split))
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, embedding_dim=8))
        return {s.name: s for s in Models(cfg, task, walk_dir, tmp_path).build(model, 1)}

    deepwalk = scorers("deepwalk")
    np.testing.assert_allclose(deepwalk["deepwalk·ctx·prior"].pairs.toarray(), want)
    assert deepwalk["deepwalk·ctx"].pairs is None  # gensim's own score stays as it is
    eges = scorers("eges", holdout="validation")
    np.testing.assert_allclose(eges["eges·ctx"].pairs.toarray(), want)
    assert {f"eges·ctx·{grid_label(b, g)}" for b, g in SERVING_GRID} < set(eges)
    assert eges["eges·ctx·β0.4·γ2"].pairs.toarray() == pytest.approx(4 * want)
    assert eges["eges·ctx·β0.4"].pairs is None
    table = schema.read_manifest(
        tmp_path / "next" / "runs" / "eges-seed1" / "neighbors-context", kind=None
    )
    assert table["settings"]["cooccurrence_weight"] == 0.5
    assert table["settings"]["popularity_prior"] == EvaluateConfig().popularity_prior
    # cold start's served rows take new items' own β when it is set
    cold = scorers("eges", "cold", holdout="validation")
    table = schema.read_manifest(
        tmp_path / "cold" / "runs" / "eges-seed1" / "neighbors-context", kind=None
    )
    assert table["settings"]["popularity_prior"] == 0.8
    assert {f"eges·ctx·β{b:g}" for b in SERVING_PRIORS} < set(cold)  # the cold grid: no γ
    assert not any("·γ" in name for name in cold)


def test_cold_validation_scores_each_field_weighting_of_the_held_out_items(tmp_path):
    """On the cold-start validation EGES is also scored with new items' field weights varied
    (each field that a held-out item has, times each multiplier): the variant's cold rows are
    the run's model under those weights, its warm rows the export's."""
    import numpy as np
    import torch

    from eges.evaluation.evaluate import FIELD_MULTIPLIERS, Models, field_label
    from eges.training.export import load_model, read_embeddings
    from eges.training.items import load_items
    from eges.training.model import EGES

    walk_dir = make_complete_walk_dir(tmp_path / "walks", walks=60, cold_items=4)
    held = schema.EVAL_DIR + "/heldout_neighbours"
    (walk_dir / held).mkdir(parents=True)
    pq.write_table(
        pa.table({"src": [61, 62, 64], "dst": [1, 2, 3], "weight": [1, 1, 1]},
                 schema=schema.EDGE_SCHEMA),
        walk_dir / held / "part-00000.parquet",
    )  # fmt: skip
    cfg = Config(evaluate=EvaluateConfig(output=str(tmp_path)))
    cfg = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, holdout="validation"))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, embedding_dim=8))
    models = Models(cfg, "cold", walk_dir, tmp_path)
    scorers = {s.name: s for s in models.build("eges", 1)}
    # with two fields only their ratio matters: year×0.5 is genre×2, and so on
    labels = [field_label("genre", m) for m in FIELD_MULTIPLIERS]
    assert list(models.weightings) == labels
    assert models.weightings[field_label("genre", 0.5)] == {"genre": 0.5, "year": 1.0}
    for label in labels:
        assert f"eges·{label}" in scorers and f"eges·ctx·β0.4·{label}" in scorers
    run = tmp_path / "cold" / "runs" / "eges-seed1"
    exported, _ = load_model(run)
    items = load_items(walk_dir)
    model = EGES(items.num_items, items.vocab_sizes, items.offsets, items.values, 8)
    model.load_state_dict(exported.state_dict())
    model.set_cold_weights({"genre": 0.25}, items.fields)
    emb, vectors = read_embeddings(run)
    cold = emb["cold"].to_numpy(zero_copy_only=False)
    idx = emb["item_idx"].to_numpy()
    with torch.no_grad():
        want = model.cold_start_items(torch.from_numpy(idx[cold].astype(np.int64))).numpy()

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    got = scorers[f"eges·{field_label('genre', 0.25)}"].table  # unit rows by item index
    np.testing.assert_allclose(got[idx[cold]], unit(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[idx[~cold]], unit(vectors[~cold]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(unit(want), unit(vectors[cold]), atol=1e-3)
    # the test hold-out scores no variants
    test_cfg = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, holdout="test"))
    assert not any(
        "·w(" in s.name for s in Models(test_cfg, "cold", walk_dir, tmp_path).build("eges", 1)
    )


def test_link_task_gives_each_auc_difference_its_interval(tmp_path):
    """The link task's comparisons (served score against a peer) carry DeLong intervals whose
    estimate is the difference of the mean AUCs over the training seeds — a real training."""
    cfg = Config(
        train=TrainConfig(embedding_dim=8, batch_size=8, window=2, num_negatives=2),
        evaluate=EvaluateConfig(
            output=str(tmp_path), tasks=["link"], models=["eges", "popularity"], seeds=[1, 2]
        ),
    )
    link_walk_output(cfg, tmp_path)
    out = evaluate_task(cfg, "link", tmp_path)
    got = {(iv["model"], iv["against"][0], iv["metric"]): iv for iv in out["intervals"]}
    assert set(got) == {("eges·ctx", "popularity", k) for k in ("auc", "auc_matched")}
    for key in ("auc", "auc_matched"):
        served = np.mean([r[key] for r in out["results"]["eges·ctx"]])
        popularity = out["results"]["popularity"][0][key]
        iv = got[("eges·ctx", "popularity", key)]
        assert iv["estimate"] == pytest.approx(served - popularity)
        assert iv["low"] <= iv["estimate"] <= iv["high"] and iv["method"] == "delong"


def test_pair_hold_outs_are_evaluated_and_pooled_over_split_seeds(tmp_path, caplog):
    """With ``evaluate.split_seeds``, link prediction runs once per split seed (split.seed's
    in the evaluation directory, the other in split-<seed>/), the results of both are kept and
    each interval pools the splits; the time split (next item) is counted once."""
    cfg = Config(
        train=TrainConfig(embedding_dim=8, batch_size=8, window=2, num_negatives=2),
        evaluate=EvaluateConfig(
            output=str(tmp_path),
            tasks=["link", "next"],
            models=["eges", "popularity"],
            seeds=[1],
            split_seeds=[1, 0],
        ),
    )
    link_walk_output(cfg, tmp_path)  # split.seed 0
    other = {
        "hidden_edges": [(2, 3), (4, 5), (6, 7)],
        "non_edges": [(2, 31), (8, 35), (10, 36)],
        "non_edges_matched": [(2, 32), (3, 35), (4, 37)],
    }
    one = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, seed=1))
    link_walk_output(one, tmp_path / "split-1", other)
    progress = Progress(cfg)
    assert progress.total == 2 * 2 + 2  # link on 2 splits, next on its one
    with caplog.at_level(logging.INFO, logger="eges.evaluation.evaluate"):
        out = evaluate_task(cfg, "link", tmp_path, progress)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[")]
    assert [m.split(" (")[0] for m in said] == [
        "[link split 1 1/6] eges seed 1",
        "[link split 1 2/6] popularity",
        "[link split 0 3/6] eges seed 1",
        "[link split 0 4/6] popularity",
    ]
    assert not any("walk job with" in r.getMessage() for r in caplog.records)  # both reused
    for where in (tmp_path / "split-1", tmp_path):
        assert (where / "link" / "runs" / "eges-seed1" / "export").is_dir()
    info = out["info"]
    assert info["split_seeds"] == [1, 0] and [p["seed"] for p in info["per_split"]] == [1, 0]
    served, popularity = out["results"]["eges·ctx"], out["results"]["popularity"]
    assert len(served) == len(popularity) == 2  # split 1, then split 0
    assert popularity[0]["auc"] != popularity[1]["auc"]  # different pairs held out
    for iv in out["intervals"]:
        if iv["against"] != ["popularity"]:
            continue
        key = iv["metric"]
        each = [s[key] - p[key] for s, p in zip(served, popularity)]
        assert iv["per_split"] == pytest.approx(each)
        assert iv["estimate"] == pytest.approx(np.mean(each))
        assert iv["low"] < iv["estimate"] < iv["high"] and iv["method"] == "delong, pooled"
        assert iv["split_seeds"] == [1, 0]  # the order of per_split
    # the report says which splits it pools and lists each interval's value per split seed
    from eges.evaluation.evaluate import summarise
    from eges.evaluation.report import write_report

    out["summary"] = {m: summarise(r) for m, r in out["results"].items()}
    results = {
        "created_at": "today",
        "data": cfg.data.path,
        "seeds": cfg.evaluate.seeds,
        "split_seeds": cfg.evaluate.split_seeds,
        "ks": cfg.evaluate.ks,
        "tasks": {"link": out},
        "seconds": 1.0,
        "config": cfg.to_dict(),
    }
    report = write_report(cfg, results, tmp_path).read_text()
    assert "Above: split seed 1. The results pool split seeds [1, 0]." in report
    assert "and, on the item and pair hold-outs, split seeds [1, 0]" in report
    iv = next(i for i in out["intervals"] if i["against"] == ["popularity"])
    a, b = iv["per_split"]
    assert f"per split seed 1: {a:+.4f}, 0: {b:+.4f}" in report
    assert "Training loss on the `link` split (split seed 1), seed 1:" in report
