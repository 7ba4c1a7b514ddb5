"""Which Spark settings the walk job applies: spark-submit's command line wins over the config."""

import subprocess
import sys
from pathlib import Path

from eges.config import SparkConfig
from eges.pipeline.spark import resolve_settings

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
    assert settings["spark.driver.memory"] == "3g"  # not given to spark-submit: the config's
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
