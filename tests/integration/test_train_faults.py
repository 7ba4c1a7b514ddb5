"""Training beyond one process group and through failures, with real torchrun processes:

* a 2-"node" rendezvous on loopback (two torchrun launches, c10d endpoint on 127.0.0.1);
* SIGKILL of the whole training mid-epoch, then ``--resume``;
* a full disk (RLIMIT_FSIZE) and an unwritable run directory: a clear error, nothing presented
  as complete;
* a ``train.overwrite`` run that fails: the previous export stays published, unchanged.

What resume promises (eges/training/dataset.py): the run continues from the newest complete
checkpoint; the batches trained before it are skipped exactly (none repeated, none left out
within the epoch); the steps trained after it and before the kill are trained again — the
work since the last checkpoint is redone, never lost.
"""

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eges import schema
from eges.config import load_config
from eges.pipeline.job import run_walk_job

REPO = Path(__file__).resolve().parents[2]
TRAIN = [
    "train.embedding_dim=16",
    "train.batch_size=64",
    "train.log_every_n_steps=5",
    "train.shuffle_buffer=512",
]


@pytest.fixture(scope="module")
def walks(spark, ml_small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fault-walks") / "walks"
    run_walk_job(
        spark,
        load_config(
            REPO / "conf" / "ml-latest-small.yaml",
            [
                f"data.path={ml_small}",
                f"output.path={out}",
                "walks.walks_per_node=2",
                "output.num_shards=4",
            ],
        ),
    )
    return out


def command(walks: Path, run: Path, *extra: str, launcher: list[str]) -> list[str]:
    sets = [a for kv in TRAIN for a in ("--set", kv)]
    return [
        *launcher,
        str(REPO / "eges" / "train.py"),
        "--config",
        str(REPO / "conf" / "ml-latest-small.yaml"),
        "--data",
        str(walks),
        "--output",
        str(run),
        *sets,
        *extra,
    ]


def torchrun(nproc: int = 2, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", *args]


ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def export_manifest(run: Path) -> dict:
    return json.loads((run / "export" / "manifest.json").read_text())


def checkpoint_step(run: Path) -> int:
    """Step of the checkpoint --resume would use (-1 without one)."""
    from eges.train import latest_checkpoint

    ckpt = latest_checkpoint(run)
    return int(re.search(r"step-(\d+)", ckpt.stem).group(1)) if ckpt else -1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.cluster
def test_two_node_rendezvous_on_loopback(walks, tmp_path):
    run = tmp_path / "run"
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            command(
                walks,
                run,
                "--set",
                "train.max_steps=30",
                launcher=torchrun(
                    1,
                    "--nnodes=2",
                    f"--node-rank={rank}",
                    "--rdzv-backend=c10d",
                    f"--rdzv-endpoint={endpoint}",
                    "--rdzv-id=eges-test",
                ),
            ),
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outs = [n.communicate(timeout=600) for n in nodes]
    for n, (out, err) in zip(nodes, outs):
        assert n.returncode == 0, err[-3000:]
    m = export_manifest(run)
    assert m["training"]["processes"] == 2 and m["training"]["steps"] == 30
    # one export, written by global rank 0 only: exactly one node printed it
    assert sum("exported" in out for out, _ in outs) == 1
    assert len(list(run.glob("export*"))) == 1


def test_sigkill_mid_epoch_then_resume(walks, tmp_path):
    run = tmp_path / "run"
    args = ["--set", "train.max_steps=120", "--set", "train.checkpoint_every_n_steps=20"]
    proc = subprocess.Popen(
        command(walks, run, *args, launcher=torchrun(2)),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    try:
        # wait for a complete checkpoint of step 40 or later. Each checkpoint replaces the
        # previous one (save_top_k=1) only after it is written, so once true this stays true
        # whenever the poll looks; a file name alone could be one still being written.
        while checkpoint_step(run) < 40:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, no clean-up
        proc.wait()
    assert not (run / "export").exists()  # nothing presented as finished
    resumed = subprocess.run(
        command(walks, run, *args, "--resume", launcher=torchrun(2)),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    m = export_manifest(run)
    assert m["training"]["steps"] == 120  # the same total as an uninterrupted run
    start = int(re.search(r"step-(\d+)", m["training"]["resumed_from"]).group(1))
    assert start >= 40
    per_epoch = int(re.search(r"\((\d+) batches per rank and epoch\)", resumed.stderr).group(1))
    skip = re.search(r"resuming epoch (\d+) after its first (\d+) batches", resumed.stderr)
    if start % per_epoch:  # mid-epoch: exactly the batches before the checkpoint are skipped
        assert skip and (int(skip.group(1)), int(skip.group(2))) == divmod(start, per_epoch)
    else:  # at an epoch boundary the next epoch starts from its first batch
        assert skip is None


def limit_file_size(max_bytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def test_full_disk_fails_clearly_and_publishes_nothing(walks, tmp_path):
    run = tmp_path / "run"
    # checkpoints of this model are ~2 MB: a 256 kB file-size limit stands in for a full disk
    proc = subprocess.run(
        command(
            walks,
            run,
            "--set",
            "train.max_steps=10",
            "--set",
            "train.checkpoint_every_n_steps=5",
            launcher=[sys.executable],
        ),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit_file_size(256 * 1024),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: cannot write the run" in proc.stderr and "File too large" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run / "export").exists()
    # what was cut short is not offered for --resume
    from eges.train import latest_checkpoint

    assert latest_checkpoint(run) is None


def test_unwritable_run_directory_is_a_clear_error(walks, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the run's parent directory should be")
    proc = subprocess.run(
        command(walks, blocker / "run", "--set", "train.max_steps=5", launcher=[sys.executable]),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2 and "error:" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert blocker.read_text().startswith("a file")


def test_failed_overwrite_keeps_the_previous_export(walks, tmp_path):
    run = tmp_path / "run"
    first = ["--set", "train.max_steps=10", "--set", "train.checkpoint_every_n_steps=5"]
    proc = subprocess.run(
        command(walks, run, *first, launcher=[sys.executable]),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from eges.training.export import read_embeddings

    before = export_manifest(run)
    table, vectors = read_embeddings(run)
    assert checkpoint_step(run) == 10
    # as if a writer of this process's host had died between publish_dir's two renames: the
    # export set aside under a dead owner's name, none in place; the next run restores it
    gone = subprocess.Popen(["true"])
    gone.wait()
    aside = schema._sibling(run / "export", "old")
    (run / "export").rename(
        aside.with_name(aside.name.replace(f"-{os.getpid()}-", f"-{gone.pid}-"))
    )
    # the overwrite run fails writing its first checkpoint (a full disk), mid-training
    again = [
        "--set",
        "train.overwrite=true",
        "--set",
        "train.seed=7",
        "--set",
        "train.max_steps=10",
        "--set",
        "train.checkpoint_every_n_steps=5",
    ]
    proc = subprocess.run(
        command(walks, run, *again, launcher=[sys.executable]),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit_file_size(256 * 1024),
    )
    assert proc.returncode == 2 and "File too large" in proc.stderr, proc.stderr[-2000:]
    assert export_manifest(run) == before
    table_after, vectors_after = read_embeddings(run)
    assert table_after["item_id"].to_pylist() == table["item_id"].to_pylist()
    assert (vectors_after == vectors).all()
    # the previous run's checkpoints are gone: --resume cannot continue it as the new run
    assert checkpoint_step(run) == -1
    # an overwrite that finishes replaces the export, and leaves nothing beside it
    proc = subprocess.run(
        command(walks, run, *again, launcher=[sys.executable]),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert export_manifest(run)["config"]["train"]["seed"] == 7
    assert not (read_embeddings(run)[1] == vectors).all()
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


def test_a_config_error_under_torchrun_is_said_once(walks, tmp_path):
    proc = subprocess.run(
        command(walks, tmp_path / "run", "--set", "train.nope=1", launcher=torchrun(2)),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    # both processes refuse the config; the first of the node says so (torchrun then adds its
    # own summary of the failed processes, which is not ours to change)
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith("error: unknown config key 'train.nope'")
    # the first process's exit is the one torchrun saw first: the others waited to be stopped
    # rather than racing it (when one of them ended first, torchrun stopped the first process
    # before it could print)
    root_cause = proc.stderr.split("Root Cause", 1)[1]
    assert "(local_rank: 0)" in root_cause and "exitcode  : 2" in root_cause, root_cause


def test_an_error_of_a_later_process_alone_is_still_said(tmp_path, monkeypatch, capsys):
    # a process that is not its node's first waits for torchrun to stop it; when nothing does
    # (the first process did not find the error), it says the error itself
    from eges import train

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(train, "PEER_ERROR_GRACE", 0.2)
    config = str(REPO / "conf" / "ml-latest-small.yaml")
    started = time.monotonic()
    status = train.main(
        ["--config", config, "--output", str(tmp_path / "run"), "--set", "train.nope=1"]
    )
    assert status == 2 and time.monotonic() - started >= 0.2
    assert capsys.readouterr().err.startswith("error: unknown config key 'train.nope'")
