"""The README's main job (`make demo`) end to end on a slice of ml-latest-small: walk job with
spark-submit, 2-process training (torchrun's launcher), evaluation of every model on all three
tasks, report.

The slice (a quarter of the users) and small settings (2 walks per node, d=16, 1 epoch, 2 seeds)
keep it to a few minutes; the full-size runs are recorded in the closing notes, not here.
"""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(ml_small, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data = root / "data"
    data.mkdir()
    ratings = pd.read_csv(ml_small / "ratings.csv", dtype=str)
    ratings[ratings["userId"].astype(int) <= 150].to_csv(data / "ratings.csv", index=False)
    for name in ("movies.csv", "tags.csv"):
        (data / name).write_bytes((ml_small / name).read_bytes())
    cfg = {
        "data": {"format": "movielens", "path": str(data)},
        "walks": {"walks_per_node": 2},
        "output": {"path": str(root / "walks"), "num_shards": 2},
        "spark": {"master": "local[2]", "shuffle_partitions": 4},
        "train": {
            "data": str(root / "walks"),
            "output": str(root / "run"),
            "embedding_dim": 16,
            "batch_size": 64,
            "epochs": 1,
        },
        "evaluate": {"output": str(root / "eval"), "seeds": [1, 2], "examples": 2},
    }
    conf = root / "demo.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        ["make", "demo", f"DEMO_CONFIG={conf}", "NPROC=2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Lightning's device lines stayed off the screen, in the trainer's and evaluation's logs
    assert "GPU available" not in proc.stdout + proc.stderr
    for log in (root / "run" / "train.log", root / "eval" / "evaluate.log"):
        assert "GPU available" in log.read_text(), log
    # the evaluation's many trainings and exports say so in its log, not on the screen: the
    # screen has the demo's own training (step 2/3) only; no library warnings either
    screen = proc.stdout + proc.stderr
    started = re.compile(r"INFO eges\.train: training (eges|ges|bge) on")
    assert len(started.findall(screen)) == 1, screen[-3000:]
    assert len(started.findall((root / "eval" / "evaluate.log").read_text())) > 3
    for noise in (
        "smaller than the logging interval",
        "Glyph",
        "All paths were ignored",
        "Asked to cache already cached data",  # Spark: a table persisted twice
        "OMP_NUM_THREADS",  # torchrun's banner (eges train --nproc-per-node sets it)
        "broadcast_buffers",  # torch's deprecation of the setting the trainer passes on purpose
    ):
        assert noise not in screen, noise
    # Spark's start-up details: spark.log_level (WARN) applies from the start under spark-submit
    assert not re.search(r"^\d\d/\d\d/\d\d [\d:]+ INFO ", screen, re.M), screen[-3000:]
    return root, proc.stdout


def test_demo_writes_a_complete_report(demo):
    root, stdout = demo
    ev = root / "eval"
    report = (ev / "report.md").read_text()
    for heading in (
        "Link prediction",
        "Cold start",
        "Next item",
        "Paper, for context",
        "Cold-start examples",
    ):
        assert heading in report
    for png in ("loss.png", "weights.png", "projection.png", "cold_hit_rate.png"):
        assert (ev / png).stat().st_size > 1000, png
        assert f"({png})" in report
    assert "evaluation finished" in stdout and "cold  hr@50" in stdout
    # the examples are headed by the titles the walk job kept: "### Heat (1995) (item 6)"
    examples = re.findall(
        r"^### (.+) \(item (\d+)\)$", report.split("Cold-start examples")[1], flags=re.M
    )
    assert len(examples) == 2 and all(re.search(r"\(\d{4}\)", t) for t, _ in examples), examples
    # the quality bar once, in its section: served cold start first, then next item and link
    bar = report.split("## Quality bar")[1]
    assert report.count("- next item HR@50:") == 1 and "- next item HR@50:" in bar
    assert bar.index("served table (H·Z + prior, default)") < bar.index("cosine table")
    # the full-data run of step 2 exported once, from rank 0 of the 2 processes
    export = json.loads((root / "run" / "export" / "manifest.json").read_text())
    assert export["training"]["processes"] == 2


def test_demo_results_cover_every_model_and_task(demo):
    root, _ = demo
    results = json.loads((root / "eval" / "results.json").read_text())
    tasks = results["tasks"]
    assert set(tasks) == {"link", "cold", "next"}
    for task, block in tasks.items():
        s = block["summary"]
        assert {
            "eges",
            "eges·ctx",
            "ges",
            "bge",
            "deepwalk",
            "content",
            "cooccurrence",
            "popularity",
            "random",
        } <= set(s), task
        for model in ("eges", "ges", "bge", "deepwalk", "random"):
            if not s[model].get("n/a"):
                assert s[model]["n"] == 2, (task, model)  # one result per seed
    cold = tasks["cold"]["summary"]
    for model in ("bge", "deepwalk", "cooccurrence"):  # nothing to embed a cold item with
        assert cold[model].get("n/a"), model
    assert cold["eges"]["coverage"]["mean"] == 1.0
    link = tasks["link"]["summary"]
    # calibrated on this slice on 2026-11-28 (2 seeds): EGES AUC 0.639 ± 0.002, random 0.503
    assert link["eges"]["auc"]["mean"] > 0.58
    assert abs(link["random"]["auc"]["mean"] - 0.5) < 0.05
    assert tasks["next"]["info"]["queries"] > 100


def untrained_scorer(cfg, walk_dir: Path, seed: int):
    """The exported vectors of the same EGES before its first step: what ``eges/train.py``
    builds (same seed, same side-info tables, same trained-value mask), not trained."""
    import torch

    from eges.evaluation.baselines import VectorScorer
    from eges.schema import WALKS_DIR, parquet_files
    from eges.training.export import item_vectors
    from eges.training.items import load_items
    from eges.training.model import EGES
    from eges.training.sampling import walk_frequencies

    items = load_items(walk_dir)
    counts = walk_frequencies(parquet_files(walk_dir / WALKS_DIR), items.num_items)
    torch.manual_seed(seed)
    model = EGES(
        items.num_items,
        items.vocab_sizes,
        items.offsets,
        items.values,
        cfg.train.embedding_dim,
        "eges",
    )
    model.mark_trained_values(torch.from_numpy(counts))
    with torch.no_grad():
        idx, vectors, _ = item_vectors(model, items, counts)
    return VectorScorer("untrained", idx, vectors, items.num_items)


@pytest.fixture(scope="module")
def untrained(demo) -> dict[str, float]:
    """Cold-start HR@50 and link AUC of the untrained model, mean over the demo's seeds, on the
    demo's own splits, queries and candidates."""
    from eges.config import load_config
    from eges.evaluation.evaluate import Models, cold_queries, rank_queries, score_link

    root, _ = demo
    cfg = load_config(root / "demo.yaml")
    cold, link = [], []
    models = Models(cfg, "cold", root / "eval" / "cold" / "walks", root / "eval")
    queries, relevant, candidates = cold_queries(models, cfg.split.seed)
    link_walks = root / "eval" / "link" / "walks"
    for seed in cfg.evaluate.seeds:
        scorer = untrained_scorer(cfg, models.walk_dir, seed)
        cold.append(
            rank_queries(scorer, queries, relevant, candidates, [50], exclude_self=False)["hr@50"]
        )
        link.append(score_link(untrained_scorer(cfg, link_walks, seed), link_walks)["auc"])
    summary = json.loads((root / "eval" / "results.json").read_text())["tasks"]
    print(
        f"untrained: cold HR@50 {np.mean(cold):.4f} (random "
        f"{summary['cold']['summary']['random']['hr@50']['mean']:.4f}, trained "
        f"{summary['cold']['summary']['eges']['hr@50']['mean']:.4f}); link AUC "
        f"{np.mean(link):.4f} (trained {summary['link']['summary']['eges']['auc']['mean']:.4f})"
    )
    return {"cold": float(np.mean(cold)), "link": float(np.mean(link)), "tasks": summary}


def test_training_beats_the_same_model_untrained_on_link_prediction(untrained):
    """Random side-info tables already make a random-projection content model, so "beats
    random" proves little: the trained model is compared with itself before training."""
    link = untrained["tasks"]["link"]["summary"]
    # measured on this slice on 2026-11-28 (2 seeds): trained 0.759 (0.647 before the linear
    # decay and the prior offset), untrained 0.550
    assert link["eges"]["auc"]["mean"] > untrained["link"] + 0.05


def test_training_beats_the_same_model_untrained_on_cold_start(untrained):
    # measured on this slice on 2026-11-28 (2 seeds): trained 0.263 ± 0.006 vs untrained 0.218
    # (random 0.067). Before the linear decay and the prior offset (same day) trained was 0.215:
    # training did not improve the side-information-only vectors at all
    cold = untrained["tasks"]["cold"]["summary"]
    assert cold["eges"]["hr@50"]["mean"] > 1.1 * untrained["cold"]


def test_results_json_is_written_after_the_report(demo, tmp_path):
    """results.json marks a finished evaluation: it never exists beside a report that failed."""
    from eges.config import load_config
    from eges.evaluation.evaluate import publish_results

    root, _ = demo
    cfg = load_config(root / "demo.yaml")
    results = json.loads((root / "eval" / "results.json").read_text())
    (tmp_path / "report.md").mkdir()  # the report cannot be written
    with pytest.raises(OSError):
        publish_results(cfg, results, tmp_path)
    assert not (tmp_path / "results.json").exists()
    (tmp_path / "report.md").rmdir()
    publish_results(cfg, results, tmp_path)
    assert (
        json.loads((tmp_path / "results.json").read_text())["tasks"].keys()
        == results["tasks"].keys()
    )
    assert "## Cold start" in (tmp_path / "report.md").read_text()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
