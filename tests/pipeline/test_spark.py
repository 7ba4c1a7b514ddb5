"""Which Spark settings the walk job applies: spark-submit's command line wins over the config."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eges.config import ConfigError, SparkConfig
from eges.pipeline.cli import memory_bytes, spark_submit_args
from eges.pipeline.spark import check_driver_memory, resolve_settings

REPO = Path(__file__).resolve().parents[2]
CFG = SparkConfig(
    master="local[2]",
    app_name="eges-walks",
    shuffle_partitions=7,
    conf={"spark.driver.memory": "3g"},
)


def test_without_spark_submit_the_config_applies():
    settings = resolve_settings(CFG, None)
    assert settings["spark.master"] == "local[2]"
    assert settings["spark.sql.shuffle.partitions"] == "7"
    assert settings["spark.driver.memory"] == "3g"
    assert "spark.master" not in resolve_settings(SparkConfig(master=None), None)


def test_plan_strings_are_cut_unless_the_config_or_spark_submit_says_otherwise(spark):
    """Spark writes every query's plan as a string; a deep one (a validation hold-out of items
    on ml-100k) filled a 1 GiB driver heap. The cap is on by default, in the live session too,
    and stays changeable."""
    key = "spark.sql.maxPlanStringLength"
    assert resolve_settings(CFG, None)[key] == "1m"
    assert spark.conf.get(key) == "1m"
    assert resolve_settings(SparkConfig(conf={key: "8m"}), None)[key] == "8m"
    assert key not in resolve_settings(CFG, {"spark.master": "local[1]", key: "2m"})


def test_spark_submit_settings_are_not_overridden():
    submitted = {
        "spark.master": "spark://h:7077",
        "spark.app.name": "mine",
        "spark.sql.shuffle.partitions": "3",
        "spark.submit.deployMode": "client",
    }
    settings = resolve_settings(CFG, submitted, {"spark.ui.enabled": "false"})
    for key in ("spark.master", "spark.app.name", "spark.sql.shuffle.partitions"):
        assert key not in settings  # spark-submit's value stays
    # the driver JVM already runs: setting it would only make spark.conf report a wrong heap
    assert "spark.driver.memory" not in settings
    assert settings["spark.ui.enabled"] == "false"


def test_the_default_app_name_of_spark_submit_gives_way():
    """spark-submit names the app after the script unless --name is given."""
    submitted = {"spark.master": "local[*]", "spark.app.name": Path(sys.argv[0]).name}
    assert resolve_settings(CFG, submitted)["spark.app.name"] == "eges-walks"


def test_python_without_spark_submit_runs_in_local_mode(tmp_path):
    """``python jobs/walks.py`` with no master anywhere: local mode, every core."""
    code = (
        "from eges.config import SparkConfig\n"
        "from eges.pipeline.spark import build_spark\n"
        "s = build_spark(SparkConfig(shuffle_partitions=5), {'spark.ui.enabled': 'false'})\n"
        "print('MASTER', s.sparkContext.master, s.conf.get('spark.sql.shuffle.partitions'))\n"
        "s.stop()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MASTER local[*] 5" in proc.stdout


def test_settings_the_results_depend_on_always_apply(caplog):
    """A cluster's spark-defaults.conf (or --conf) may set another time zone: timestamps would
    then be read in it and sessions split elsewhere. The walk job keeps UTC, and says so."""
    submitted = {
        "spark.master": "spark://h:7077",
        "spark.sql.session.timeZone": "Asia/Shanghai",
        "spark.sql.csv.parser.columnPruning.enabled": "true",
    }
    cfg = SparkConfig(conf={"spark.sql.session.timeZone": "Europe/Berlin"})
    for given in (submitted, None):
        with caplog.at_level("WARNING", logger="eges.pipeline.spark"):
            settings = resolve_settings(cfg, given)
        assert settings["spark.sql.session.timeZone"] == "UTC"
        assert settings["spark.sql.csv.parser.columnPruning.enabled"] == "false"
    assert "spark.sql.session.timeZone=Asia/Shanghai is ignored" in caplog.text
    assert "spark.sql.session.timeZone=Europe/Berlin is ignored" in caplog.text


def test_yaml_booleans_are_written_as_spark_writes_them():
    settings = resolve_settings(
        SparkConfig(conf={"spark.eventLog.enabled": True, "spark.x.flag": False}), None
    )
    assert settings["spark.eventLog.enabled"] == "true" and settings["spark.x.flag"] == "false"


def test_memory_strings_and_the_heap_check(caplog):
    assert memory_bytes("512m") == 512 * 2**20
    assert memory_bytes("3g") == memory_bytes("3GB") == memory_bytes("3072") == 3 * 2**30
    with pytest.raises(ConfigError, match="not a JVM memory size"):
        memory_bytes("lots")
    assert spark_submit_args(CFG) == ["--driver-memory", "3g"]
    assert spark_submit_args(SparkConfig()) == []
    with caplog.at_level(logging.WARNING, logger="eges.pipeline.spark"):
        assert check_driver_memory(int(0.95 * 3 * 2**30), "3g", submitted=True)
        assert check_driver_memory(2**30, None, submitted=True)
        assert not caplog.records
        assert not check_driver_memory(2**30, "3g", submitted=True)
    assert "spark.driver.memory=3g of the config does not take effect" in caplog.text
    assert "heap is 1.0 GiB" in caplog.text and "spark-submit --driver-memory 3g" in caplog.text


# builds the walk job's session with a driver memory from the config and prints the real heap
HEAP_PROBE = """
import logging, sys
from eges.config import SparkConfig
from eges.pipeline.spark import build_spark
logging.basicConfig(level=logging.WARNING)
cfg = SparkConfig(master="local[1]", shuffle_partitions=1, log_level="ERROR",
                  conf={"spark.driver.memory": sys.argv[1]})
s = build_spark(cfg, {"spark.ui.enabled": "false"})
heap = s.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory()
print("HEAP", heap, "CONF", s.conf.get("spark.driver.memory", "unset"), flush=True)
s.stop()
"""


def run_probe(probe: Path, submit_args: list[str] | None) -> tuple[int, str, str]:
    """Run the probe with python (``submit_args`` None) or spark-submit; (heap, conf, log)."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("SPARK_DRIVER_MEMORY", None)
    if submit_args is None:
        cmd = [sys.executable, str(probe), "1536m"]
    else:
        cmd = [str(bin_dir / "spark-submit"), *submit_args, str(probe), "1536m"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    words = next(line for line in proc.stdout.splitlines() if line.startswith("HEAP")).split()
    return int(words[1]), words[3], out


@pytest.mark.slow
def test_the_configured_driver_memory_reaches_the_heap(tmp_path):
    """spark.driver.memory=1536m in the config: started by python the JVM gets it; under a
    bare spark-submit it cannot (its JVM already runs with the 1 GiB default), and a warning
    names spark-submit --driver-memory; given that option (spark_submit_args), the heap is it."""
    probe = tmp_path / "probe.py"
    probe.write_text(HEAP_PROBE)
    want = 1536 * 2**20
    args = spark_submit_args(SparkConfig(conf={"spark.driver.memory": "1536m"}))
    assert args == ["--driver-memory", "1536m"]

    heap, conf, out = run_probe(probe, [*args, "--master", "local[1]"])
    assert abs(heap - want) < 0.15 * want and conf == "1536m", out[-3000:]
    assert "does not take effect" not in out

    heap, conf, out = run_probe(probe, ["--master", "local[1]"])
    assert heap < 0.8 * want, out[-3000:]  # spark-submit's default heap
    # spark.log_level applies from the SparkContext's start: none of Spark's ~40 INFO lines
    assert not re.search(r"^\d\d/\d\d/\d\d [\d:]+ INFO ", out, re.M), out[-3000:]
    assert conf != "1536m"  # spark.conf does not claim a heap the driver lacks
    assert "spark.driver.memory=1536m of the config does not take effect" in out
    assert "spark-submit --driver-memory 1536m" in out

    heap, conf, out = run_probe(probe, None)
    assert abs(heap - want) < 0.15 * want and conf == "1536m", out[-3000:]
    assert "does not take effect" not in out


def test_print_submit_args_gives_the_driver_memory_of_the_config():
    """What `make walks` / `make demo` put before jobs/walks.py on the spark-submit line."""

    def submit_args(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(REPO / "jobs" / "walks.py"), "--print-submit-args", *args]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)

    proc = submit_args("--config", "conf/ml-25m.yaml")
    assert proc.returncode == 0 and proc.stdout == "--driver-memory 8g\n", proc.stderr
    proc = submit_args("--config", "conf/ml-latest-small.yaml")
    assert proc.returncode == 0 and proc.stdout == "\n", proc.stderr
    proc = submit_args(
        "--config", "conf/ml-25m.yaml", "--set", "spark.conf={spark.driver.memory: x}"
    )
    assert proc.returncode == 2 and "not a JVM memory size" in proc.stderr
