"""The walk job on a real Spark standalone cluster (a master and two 1-core workers on loopback,
started from the installed pyspark), with the project shipped as ``--py-files dist/eges.zip``:
its walks, items and edges are identical to a local-mode run with the same seed, and spark-submit's
``--master`` and ``--conf`` win over the config's ``spark`` section."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from eges import schema
from eges.config import load_config
from eges.pipeline.job import run_walk_job

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from local_cluster import local_cluster  # noqa: E402

pytestmark = pytest.mark.cluster

SETS = [
    "walks.walks_per_node=3",
    "output.num_shards=3",
    "spark.shuffle_partitions=6",
    "spark.graph_partitions=5",
]


def table(out: Path, name: str, expected) -> pd.DataFrame:
    df = schema.read_table(out / name, expected).to_pandas()
    for col in df.columns:
        if df[col].dtype == object and len(df) and not isinstance(df[col].iloc[0], str):
            df[col] = df[col].map(tuple)  # list columns compare as tuples
    return df.sort_values(list(df.columns[:2])).reset_index(drop=True)


def test_cluster_walks_equal_local_mode(spark, ml_small, tmp_path):
    local_out, cluster_out = tmp_path / "local", tmp_path / "cluster"
    common = [f"data.path={ml_small}", *SETS]
    run_walk_job(
        spark,
        load_config(REPO / "conf" / "ml-latest-small.yaml", [*common, f"output.path={local_out}"]),
    )
    subprocess.run(["make", "dist/eges.zip"], cwd=REPO, check=True, capture_output=True)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    with local_cluster(tmp_path / "cluster-state", workers=2, cores=1, memory="2g") as url:
        cmd = [
            str(Path(sys.executable).parent / "spark-submit"),
            "--master",
            url,
            "--py-files",
            str(REPO / "dist" / "eges.zip"),
            "--conf",
            "spark.executor.memory=1g",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            f"spark.pyspark.python={sys.executable}",
            "--conf",
            "spark.sql.shuffle.partitions=5",
            str(REPO / "jobs" / "walks.py"),
            "--config",
            str(REPO / "conf" / "ml-latest-small.yaml"),
            "--config",
            str(REPO / "conf" / "cluster.yaml"),
            *[x for s in [*common, f"output.path={cluster_out}"] for x in ("--set", s)],
            # a config that pins a local master: spark-submit's --master still wins
            "--set",
            "spark.master=local[1]",
        ]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = schema.read_manifest(cluster_out)
    assert manifest["spark_master"] == url  # it really ran on the cluster
    assert manifest["spark_shuffle_partitions"] == 5  # --conf beat the config's 6
    assert manifest["counts"] == schema.read_manifest(local_out)["counts"]
    for name, expected in [("walks", schema.WALK_SCHEMA), ("edges", schema.EDGE_SCHEMA)]:
        pd.testing.assert_frame_equal(
            table(cluster_out, name, expected), table(local_out, name, expected)
        )
    fields = [f["name"] for f in manifest["side_info_fields"]]
    items = schema.item_schema(fields, names=True)  # MovieLens items carry their titles
    pd.testing.assert_frame_equal(
        table(cluster_out, "items", items), table(local_out, "items", items)
    )
    # the cluster processes are gone (stopped by pid)
    pids = [int(p) for p in (tmp_path / "cluster-state" / "pids").read_text().split()]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
