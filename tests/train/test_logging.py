"""The screen shows the project's own lines and warnings; every library's details go to the log
file: the real trainer CLI (one process) on a synthetic walk output, and the filter itself."""

import logging
import subprocess
import sys
from pathlib import Path

from eges.quiet import close_log_file, current_log_file, details_only, setup_logging
from tests.train.walkdir import make_complete_walk_dir

REPO = Path(__file__).resolve().parents[2]


def test_trainer_cli_keeps_library_details_in_the_run_log(tmp_path):
    walks = make_complete_walk_dir(tmp_path / "walks", 40, 3)
    run = tmp_path / "run"
    conf = tmp_path / "conf.yaml"
    conf.write_text("train: {accelerator: cpu}\n")
    cmd = [
        sys.executable,
        "eges/train.py",
        "--config",
        str(conf),
        "--data",
        str(walks),
        "--output",
        str(run),
        "--set",
        "train.embedding_dim=8",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.window=2",
        "--set",
        "train.log_every_n_steps=1",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    log = (run / "train.log").read_text()
    # Lightning's device lines and model summary: in the file, not on the screen
    for detail in ("GPU available", "Total params", "Seed set to"):
        assert detail in log and detail not in proc.stderr, detail
    # the project's own lines are in both; the summary is on stdout
    assert "eges.train: training eges on 40 walks" in proc.stderr
    assert "eges.train: training eges on 40 walks" in log
    assert "exported 43 vectors" in proc.stdout
    # a second run (resuming the finished run: nothing left to train) appends to the file
    again = subprocess.run(
        cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr  # the finished run's last checkpoint
    assert (run / "train.log").read_text().startswith(log)


def test_screen_filter_and_file(tmp_path, capsys):
    path = tmp_path / "details.log"
    try:
        setup_logging(path)
        assert current_log_file() == path
        logging.getLogger("eges.somewhere").info("a stage")
        logging.getLogger("somelib.core").info("library chatter")
        logging.getLogger("somelib.core").warning("library warning")
    finally:
        close_log_file()
    assert current_log_file() is None
    err = capsys.readouterr().err
    assert "a stage" in err and "library warning" in err and "library chatter" not in err
    text = path.read_text()
    assert "a stage" in text and "library chatter" in text and "library warning" in text


def test_a_refused_run_writes_nothing_in_the_run_directory(tmp_path):
    """The trainer's checks come before its log file: a run it refuses leaves no train.log."""

    conf = tmp_path / "conf.yaml"
    conf.write_text("train: {accelerator: cpu}\n")

    def trainer(data: Path, run: Path) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "eges/train.py", "--config", str(conf), "--data", str(data)]
        cmd += ["--output", str(run)]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()  # no manifest: not a finished walk output
    run = tmp_path / "run"
    proc = trainer(unfinished, run)
    assert proc.returncode == 2 and str(unfinished) in proc.stderr, proc.stderr
    assert not run.exists()
    (run / "export").mkdir(parents=True)  # a previous run's export
    proc = trainer(make_complete_walk_dir(tmp_path / "walks", 40, 3), run)
    assert proc.returncode == 2 and "already has export" in proc.stderr, proc.stderr
    assert [p.name for p in run.iterdir()] == ["export"]


def test_details_only_sends_a_stages_info_lines_to_the_file(tmp_path, capsys):
    path = tmp_path / "details.log"
    try:
        setup_logging(path)
        with details_only("eges.train", "eges.serving"):
            logging.getLogger("eges.train").info("per-model detail")
            logging.getLogger("eges.serving.neighbors").info("table detail")
            logging.getLogger("eges.training").info("sibling, not a child")
            logging.getLogger("eges.train").warning("a warning still shows")
        logging.getLogger("eges.train").info("after the block")
    finally:
        close_log_file()
    err = capsys.readouterr().err
    assert "per-model detail" not in err and "table detail" not in err
    assert "sibling, not a child" in err and "a warning still shows" in err
    assert "after the block" in err
    text = path.read_text()
    assert "per-model detail" in text and "table detail" in text


def test_only_rank_zero_touches_the_metrics_file(tmp_path, monkeypatch):
    """Every rank builds the loggers, but only rank 0's writer may read, keep or delete
    metrics.csv: a resume whose ranks all rewrote it raced (a rank failed with
    FileNotFoundError when another had just deleted the file)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    from eges.train import make_loggers

    metrics = tmp_path / "logs" / "metrics.csv"
    metrics.parent.mkdir()
    rows = "epoch,loss,step\n0,2.7,9\n0,2.6,19\n0,2.5,29\n"
    metrics.write_text(rows)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    other = make_loggers(tmp_path, rank=1, resumed_step=20)[0]
    other.experiment.log_metrics({"loss": 1.0}, step=30)
    other.save()
    assert metrics.read_text() == rows  # untouched by rank 1
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    first = make_loggers(tmp_path, rank=0, resumed_step=20)[0]
    first.experiment  # rank 0 keeps the steps before the resumed one
    assert [r.split(",")[-1] for r in metrics.read_text().split()[1:]] == ["9", "19"]
