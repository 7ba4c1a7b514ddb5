"""The walk job as a whole: atomic outputs, refusal to overwrite, the CLI (``python`` and
``spark-submit``), and determinism across Spark masters (local[2] in-process vs local[1] in a
subprocess)."""

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from eges import schema
from eges.config import load_config
from eges.pipeline.ingest import InputError
from eges.pipeline.job import run_walk_job, summary
from eges.pipeline.shards import OutputExistsError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """A small generic e-commerce log: 40 users, 60 items in 3 brands, sessions with gaps."""
    root = tmp_path_factory.mktemp("logs")
    rng = random.Random(0)
    lines = ["user,item,ts,action"]
    for u in range(40):
        t = 1_700_000_000 + rng.randrange(10_000)
        for _ in range(rng.randrange(5, 30)):
            t += rng.choice([30, 60, 120, 7200])
            lines.append(
                f"u{u},i{rng.randrange(60)},{t},{rng.choice(['click', 'click', 'buy', 'fav'])}"
            )
    (root / "events.csv").write_text("\n".join(lines) + "\n")
    items = ["item,brand,tags"] + [f"i{i},b{i % 3},t{i % 5}|t{i % 7}" for i in range(70)]
    (root / "items.csv").write_text("\n".join(items) + "\n")
    return root


def config_args(logs: Path, out: Path) -> list[str]:
    return [
        f"data.path={logs}",
        f"output.path={out}",
        "data.generic.events=events.csv",
        "data.generic.items=items.csv",
        "data.generic.user_col=user",
        "data.generic.item_col=item",
        "data.generic.time_col=ts",
        "data.generic.time_format=unix",
        "data.generic.behavior_col=action",
        "data.generic.behaviors=[click, buy]",
        "data.generic.side_info=[{name: brand}, {name: tags, sep: '|'}]",
        "data.generic.name_column=null",
        "walks.walks_per_node=4",
        "walks.walk_length=6",
        "output.num_shards=3",
    ]


def read_walks(out: Path) -> dict:
    t = schema.read_table(out / "walks", schema.WALK_SCHEMA)
    return dict(zip(t["walk_id"].to_pylist(), t["items"].to_pylist()))


def kept_seconds(logs: Path) -> list[int]:
    """The ``ts`` of the rows of the logs the walk job keeps (actions click and buy)."""
    rows = [line.split(",") for line in (logs / "events.csv").read_text().splitlines()[1:]]
    return [int(ts) for _, _, ts, action in rows if action in ("click", "buy")]


def test_generic_logs_end_to_end_and_output_is_atomic(spark, logs, tmp_path, caplog):
    out = tmp_path / "walks"
    cfg = load_config(REPO / "conf" / "generic-example.yaml", config_args(logs, out))
    with caplog.at_level("WARNING", logger="eges.pipeline.ingest"):
        manifest = run_walk_job(spark, cfg)
    # the kept events' time range (November 2023), plausible: no warning
    ts = kept_seconds(logs)
    assert manifest["event_time"] == {
        "first": datetime.fromtimestamp(min(ts), timezone.utc).isoformat(),
        "last": datetime.fromtimestamp(max(ts), timezone.utc).isoformat(),
        "first_ts": min(ts),
        "last_ts": max(ts),
    }
    assert manifest["event_time"]["first"].startswith("2023-11-14T")
    assert "event times" not in caplog.text and "WARNING" not in summary(manifest, out)
    assert manifest["counts"]["items"] == 70  # 60 with events at most + catalogue-only items
    assert manifest["counts"]["items_without_events"] >= 10
    assert any("action not in" in why for why in manifest["dropped"])
    assert len(manifest["walks"]["files"]) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["walks"]  # no temporary leftovers
    first = read_walks(out)

    # a second run into the same directory is refused and leaves it untouched
    with pytest.raises(OutputExistsError, match="output.overwrite"):
        run_walk_job(spark, cfg)
    assert read_walks(out) == first

    # with overwrite it is replaced as a whole: a different seed, different walks
    again = load_config(
        REPO / "conf" / "generic-example.yaml",
        config_args(logs, out) + ["output.overwrite=true", "walks.seed=99"],
    )
    run_walk_job(spark, again)
    assert schema.read_manifest(out)["seed"] == 99
    assert read_walks(out) != first
    assert [p.name for p in tmp_path.iterdir()] == ["walks"]


def test_seconds_read_as_milliseconds_are_reported_and_warned(spark, logs, tmp_path, caplog):
    """A wrong time_format parses without an error: with unix_ms on the logs' seconds every event
    is in January 1970 and each user's events are one session. The manifest and the summary
    show the range, and a warning says why it is wrong (the right format: the end-to-end test
    above)."""
    out = tmp_path / "walks"
    cfg = load_config(
        REPO / "conf" / "generic-example.yaml",
        config_args(logs, out) + ["data.generic.time_format=unix_ms"],
    )
    with caplog.at_level("WARNING", logger="eges.pipeline.ingest"):
        manifest = run_walk_job(spark, cfg)
    span = schema.read_manifest(out)["event_time"]
    ts = kept_seconds(logs)
    assert span["first_ts"] == min(ts) / 1000 and span["last_ts"] == max(ts) / 1000
    assert span["first"].startswith("1970-01-20T") and span["last"].startswith("1970-01-20T")
    assert "event times run from 1970-01-20" in caplog.text and "time_format" in caplog.text
    assert "before 1990-01-01" in span["warning"]
    text = summary(manifest, out)
    assert f"times     {span['first']} .. {span['last']}" in text
    assert "  WARNING   event times run from 1970" in text
    assert manifest["counts"]["sessions"] == manifest["counts"]["users"]  # the symptom


def test_the_shipped_generic_example_prices_in_quantile_bins(spark, tmp_path):
    """conf/generic-example.yaml as shipped: price as 4 quantile levels, titles as names."""
    import csv

    from eges.buckets import NumericSpec

    out = tmp_path / "walks"
    manifest = run_walk_job(
        spark, load_config(REPO / "conf" / "generic-example.yaml", [f"output.path={out}"])
    )
    price = next(f for f in manifest["side_info_fields"] if f["name"] == "price")
    spec = NumericSpec.from_manifest(price["numeric"])
    assert len(spec.edges) == 3 and price["numeric"]["invalid_values"] == 0
    assert price["vocab_size"] == 4
    assert manifest["counts"]["items_with_name"] == manifest["counts"]["items"] == 30
    raw = {
        r["item_id"]: float(r["price"])
        for r in csv.DictReader(open(REPO / "examples" / "generic" / "items.csv"))
    }
    vocab = schema.read_table(out / "vocab" / "price", schema.VOCAB_SCHEMA)
    label_of = dict(zip(vocab["index"].to_pylist(), vocab["value"].to_pylist()))
    fields = [f["name"] for f in manifest["side_info_fields"]]
    items = schema.read_items(out / "items", fields).to_pylist()
    assert {i["item_id"]: [label_of[v] for v in i["price"]] for i in items} == {
        k: [spec.label(p)] for k, p in raw.items()
    }
    assert sorted(vocab["count"].to_pylist()) == [7, 7, 8, 8]  # quartiles of 30 prices


def test_no_edges_is_an_error_not_an_empty_output(spark, logs, tmp_path):
    out = tmp_path / "walks"
    cfg = load_config(
        REPO / "conf" / "generic-example.yaml",
        config_args(logs, out) + ["data.generic.time_format=iso"],
    )
    with pytest.raises(ValueError, match="no edges.*unparsable ts"):
        run_walk_job(spark, cfg)
    assert list(tmp_path.iterdir()) == []


def test_failed_run_leaves_nothing_behind(spark, logs, tmp_path):
    out = tmp_path / "walks"
    cfg = load_config(
        REPO / "conf" / "generic-example.yaml",
        config_args(logs, out) + ["data.generic.items=nope.csv"],
    )
    with pytest.raises(InputError, match="nope.csv"):
        run_walk_job(spark, cfg)
    assert list(tmp_path.iterdir()) == []


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / "walks.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def spark_submit(*args: str) -> subprocess.CompletedProcess:
    """The installed spark-submit, its driver and workers on this interpreter."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYSPARK_PYTHON": sys.executable,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        [str(bin_dir / "spark-submit"), *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.slow
def test_spark_submit_settings_win_over_the_config(logs, tmp_path):
    """--master and --conf given to spark-submit beat the config's spark section."""
    out = tmp_path / "walks"
    proc = spark_submit(
        "--master",
        "local[1]",
        "--conf",
        "spark.sql.shuffle.partitions=3",
        "--conf",
        "spark.ui.enabled=false",
        str(REPO / "jobs" / "walks.py"),
        "--config",
        str(REPO / "conf" / "generic-example.yaml"),
        *[a for kv in config_args(logs, out) for a in ("--set", kv)],
        "--set",
        "spark.master=local[2]",
        "--set",
        "spark.shuffle_partitions=7",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = schema.read_manifest(out)
    assert manifest["spark_master"] == "local[1]"
    assert manifest["spark_shuffle_partitions"] == 3
    assert "spark     master local[1], shuffle partitions 3" in proc.stdout
    assert "spark.master local[2] of the config is ignored" in proc.stdout  # the log says so
    # the job's own reads raise no warning (a "_" directory was "ignored" before)
    assert "All paths were ignored" not in proc.stdout + proc.stderr


def test_spark_submit_errors_go_to_stderr(tmp_path):
    """spark-submit merges its Python driver's stderr into stdout; errors still reach stderr,
    before the SparkSession exists (a config error) and after it stopped (a missing input)."""
    job = str(REPO / "jobs" / "walks.py")
    config = str(REPO / "conf" / "ml-latest-small.yaml")
    for args, message in [
        (["--set", "walks.nope=1"], "error: unknown config key 'walks.nope'"),
        (["--nope"], "error: unrecognized arguments: --nope"),
        (
            ["--set", f"data.path={tmp_path}", "--output", str(tmp_path / "out")],
            "error: input file not found",
        ),
    ]:
        proc = spark_submit(
            "--master",
            "local[1]",
            "--conf",
            "spark.ui.enabled=false",
            job,
            "--config",
            config,
            *args,
        )
        assert proc.returncode == 2, proc.stdout[-3000:]
        assert message in proc.stderr
        assert "error:" not in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_cli_local1_gives_the_same_walks_as_local2(spark, logs, tmp_path):
    ours = tmp_path / "local2"
    base = config_args(logs, ours)
    run_walk_job(spark, load_config(REPO / "conf" / "generic-example.yaml", base))

    theirs = tmp_path / "local1"
    proc = run_cli(
        "--config",
        str(REPO / "conf" / "generic-example.yaml"),
        *[a for kv in config_args(logs, theirs) for a in ("--set", kv)],
        "--set",
        "spark.master=local[1]",
        "--set",
        "spark.shuffle_partitions=1",
        "--set",
        "spark.graph_partitions=5",
        "--set",
        "spark.conf={spark.ui.enabled: 'false'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "walk job finished" in proc.stdout and "dropped rows:" in proc.stdout
    assert json.loads((theirs / "manifest.json").read_text())["spark_master"] == "local[1]"
    assert read_walks(theirs) == read_walks(ours)
    for table in ("items", "edges"):
        assert pq.read_table(theirs / table).equals(pq.read_table(ours / table))


def test_hot_nodes_split_or_not_give_the_same_output(spark, logs, tmp_path, caplog):
    # 16 adjacency partitions of ~60 nodes and a small share: the busiest items are split
    runs = {}
    for share in ("null", "0.1"):
        out = tmp_path / f"share-{share}"
        args = config_args(logs, out) + [
            f"walks.hot_node_share={share}",
            "spark.graph_partitions=16",
        ]
        with caplog.at_level("INFO", logger="eges.pipeline.walks"):
            caplog.clear()
            cfg = load_config(REPO / "conf" / "generic-example.yaml", args)
            manifest = run_walk_job(spark, cfg)
        runs[share] = (manifest["counts"], read_walks(out), caplog.text)
    (plain_counts, plain, plain_log), (split_counts, split, split_log) = runs["null"], runs["0.1"]
    assert "hot nodes split" in split_log and "hot node" not in plain_log
    assert split == plain
    assert split_counts["nodes_with_out_edges"] == plain_counts["nodes_with_out_edges"]
    assert len(split) == 4 * plain_counts["nodes_with_out_edges"]


def test_cli_reports_user_errors_without_a_traceback(tmp_path):
    proc = run_cli("--config", str(REPO / "conf" / "ml-latest-small.yaml"), "--set", "walks.nope=1")
    assert proc.returncode == 2
    assert "unknown config key 'walks.nope'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(
        "--config",
        str(REPO / "conf" / "ml-latest-small.yaml"),
        "--set",
        f"data.path={tmp_path}",
        "--output",
        str(tmp_path / "out"),
        "--set",
        "spark.master=local[1]",
    )
    assert proc.returncode == 2
    assert "input file not found" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
