"""Ctrl-C during training: one message that says what was kept and how to resume, the shell's
exit status for SIGINT, no stack trace; the resumed run's metrics.csv keeps the steps before its
checkpoint. The real entry point (``python eges/train.py``) in a subprocess, stopped by a real
SIGINT."""

import csv
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train.walkdir import make_complete_walk_dir

REPO = Path(__file__).resolve().parents[2]


def train_cmd(walk_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    sets = {
        "embedding_dim": 8,
        "batch_size": 8,
        "shuffle_buffer": 8,
        "window": 2,
        "num_negatives": 2,
        "epochs": 200,  # far more than the test waits for
        "checkpoint_every_n_steps": 20,
        "log_every_n_steps": 5,
    }
    cmd = [sys.executable, str(REPO / "eges" / "train.py"), "--config"]
    cmd += [str(REPO / "conf" / "ml-latest-small.yaml"), "--data", str(walk_dir)]
    cmd += ["--output", str(run_dir)]
    for key, value in sets.items():
        cmd += ["--set", f"train.{key}={value}"]
    return cmd + list(extra)


def steps_logged(run_dir: Path) -> list[int]:
    with (run_dir / "logs" / "metrics.csv").open(newline="") as f:
        return sorted({int(float(r["step"])) for r in csv.DictReader(f) if r.get("loss")})


@pytest.mark.parametrize(
    "sig, status, said",
    [
        (signal.SIGINT, 130, "interrupted at step"),
        (signal.SIGTERM, 143, "stopped by SIGTERM at step"),
    ],
)
def test_ctrl_c_says_how_to_resume_and_the_resumed_metrics_keep_the_earlier_steps(
    tmp_path, sig, status, said
):
    """Ctrl-C, and SIGTERM (a scheduler's or torchrun's way to stop a process), which Lightning
    catches the same way: one line, the signal's shell status."""
    walk_dir = make_complete_walk_dir(tmp_path / "walks", walks=400, cold_items=5)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        train_cmd(walk_dir, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("step-*.ckpt")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    time.sleep(1.0)  # a few steps past the checkpoint
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "Traceback" not in err and "Traceback" not in out
    message = [line for line in err.splitlines() if line.startswith(said)]
    assert len(message) == 1, err
    # the newest checkpoint: a step one, or an epoch end's when the signal came after one
    assert "--resume" in message[0], message[0]
    assert re.search(r"checkpoints/(epoch-\d+-)?step-\d+\.ckpt", message[0]), message[0]
    assert not (run_dir / "export").exists()
    ckpt = max(int(p.stem.split("-")[-1]) for p in (run_dir / "checkpoints").glob("step-*.ckpt"))
    before = steps_logged(run_dir)
    assert before and before[0] < ckpt

    stop = ckpt + 10
    done = subprocess.run(
        train_cmd(walk_dir, run_dir, "--resume", "--set", f"train.max_steps={stop}"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    after = steps_logged(run_dir)
    # the steps before the checkpoint are still there, the later ones once, up to the stop
    assert [s for s in after if s < ckpt] == [s for s in before if s < ckpt]
    assert max(after) >= stop - 5 and len(after) == len(set(after))


def test_stdout_carries_only_the_summary_and_the_bar_goes_to_stderr(tmp_path):
    walk_dir = make_complete_walk_dir(tmp_path / "walks", walks=60, cold_items=5)
    cmd = train_cmd(walk_dir, tmp_path / "run", "--set", "train.epochs=2")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    firsts = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    assert firsts == ["trained", "exported", "loss", "mean"], done.stdout
    assert "it/s" in done.stderr or "Epoch" in done.stderr  # the bar, where it belongs
