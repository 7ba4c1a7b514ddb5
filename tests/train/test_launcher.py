"""``eges train --nproc-per-node N``: torchrun's launcher run in the command's own process, with
real training processes (gloo on CPU). A failed run ends with the failing process's one-line
error and its exit status, not torchrun's traceback; Ctrl-C says how to resume, once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from eges import train
from tests.train.walkdir import make_complete_walk_dir

REPO = Path(__file__).resolve().parents[2]
TORCHRUN_NOISE = ("Traceback", "ChildFailedError", "Root Cause", "torch/distributed")


def launch_cmd(walk_dir: Path, run_dir: Path, conf: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "eges", "train", "--nproc-per-node", "2", "--config", str(conf)]
    return cmd + ["--data", str(walk_dir), "--output", str(run_dir), *extra]


def small_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "conf.yaml"
    conf.write_text(
        "train: {accelerator: cpu, embedding_dim: 8, batch_size: 8, window: 2, "
        "shuffle_buffer: 8, num_negatives: 2}\n"
    )
    return conf


def test_two_processes_train_once_and_a_refused_config_is_one_line(tmp_path):
    walks = make_complete_walk_dir(tmp_path / "walks", walks=100, cold_items=3)
    conf = small_conf(tmp_path)
    run = tmp_path / "run"
    refused = subprocess.run(
        launch_cmd(walks, run, conf, "--set", "train.nope=1"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines()[0].startswith("error: unknown config key 'train.nope'")
    assert len(refused.stderr.splitlines()) == 1, refused.stderr  # nothing of torchrun's
    done = subprocess.run(
        launch_cmd(walks, run, conf), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 cpu process(es)" in done.stdout
    # the second process says no info line the first already said, and no harmless warning
    for line in ("training eges on 100 walks", "tables: replicated", "optimizer: adam"):
        assert done.stderr.count(line) == 1, (line, done.stderr[-3000:])
    assert "broadcast_buffers" not in done.stderr
    assert not any(noise in done.stderr for noise in TORCHRUN_NOISE), done.stderr[-3000:]


def training_under_way(tmp_path: Path) -> subprocess.Popen:
    """A long 2-process launch, returned once its first step checkpoint is written. In its own
    session, like a shell's job: Ctrl-C is SIGINT to the launcher and its processes."""
    walks = make_complete_walk_dir(tmp_path / "walks", walks=400, cold_items=3)
    run = tmp_path / "run"
    cmd = launch_cmd(walks, run, small_conf(tmp_path), "--set", "train.epochs=500")
    cmd += ["--set", "train.checkpoint_every_n_steps=20"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list((run / "checkpoints").glob("step-*.ckpt")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    return proc


def test_ctrl_c_of_the_launcher_says_how_to_resume_once(tmp_path):
    proc = training_under_way(tmp_path)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    message = [line for line in err.splitlines() if line.startswith("interrupted at step")]
    assert len(message) == 1 and "--resume" in message[0], err[-3000:]
    assert not any(noise in err + out for noise in TORCHRUN_NOISE), err[-3000:]


def test_a_killed_process_ends_the_run_with_its_signal(tmp_path):
    proc = training_under_way(tmp_path)
    # the launcher's children are the training processes (the OOM killer's way of ending one)
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(children) == 2, children
    os.kill(int(children[-1]), signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGKILL, err[-3000:]
    assert "was ended by signal 9" in err.splitlines()[-1], err[-3000:]
    assert "ChildFailedError" not in err


def test_the_launcher_is_not_for_a_process_torchrun_started(monkeypatch, capsys):
    conf = ["--config", str(REPO / "conf" / "ml-latest-small.yaml")]
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert train.main([*conf, "--nproc-per-node", "2"]) == 2
    assert "not under torchrun" in capsys.readouterr().err
    monkeypatch.delenv("LOCAL_RANK")
    assert train.main([*conf, "--nproc-per-node", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_the_processes_get_the_arguments_less_the_launchers():
    given = ["--config", "c.yaml", "--nproc-per-node", "2", "--set", "train.lr=0.1"]
    assert train._without_nproc(given) == ["--config", "c.yaml", "--set", "train.lr=0.1"]
    assert train._without_nproc(["--nproc-per-node=4", "--resume"]) == ["--resume"]
    # argparse takes abbreviations: the processes must not get one back and launch again
    assert train._without_nproc(["--nproc", "2", "--resume"]) == ["--resume"]
    assert train._without_nproc(["--np=2", "--data", "w"]) == ["--data", "w"]
