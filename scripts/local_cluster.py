"""A Spark standalone cluster on loopback from the installed pyspark: one master, N workers.

    python scripts/local_cluster.py start [--workers 2] [--cores 1] [--memory 2g] [--dir DIR]
    spark-submit --master "$(cat DIR/master-url)" --py-files dist/eges.zip jobs/walks.py \
        --config conf/ml-latest-small.yaml --config conf/cluster.yaml
    python scripts/local_cluster.py stop [--dir DIR]

``start`` waits until every worker has registered, writes the master URL to ``DIR/master-url``
and the process ids to ``DIR/pids``; ``stop`` kills exactly those processes. Tests use
:func:`local_cluster`, a context manager that always stops what it started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            state = json.load(r)
    except OSError:
        return -1
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


def start(
    directory: Path, workers: int = 2, cores: int = 1, memory: str = "2g", timeout: float = 120.0
) -> tuple[str, list[int]]:
    """Start a master and ``workers`` workers; returns (master URL, pids)."""
    directory.mkdir(parents=True, exist_ok=True)
    spark_class = str(spark_home() / "bin" / "spark-class")
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_HOME": str(spark_home()),
        "PYSPARK_PYTHON": sys.executable,
    }
    port, ui = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []

    def launch(name: str, args: list[str]) -> None:
        log = open(directory / f"{name}.log", "w")
        procs.append(
            subprocess.Popen(
                [spark_class, *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    try:
        launch(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
        )
        for i in range(workers):
            work = directory / f"worker-{i}"
            work.mkdir(exist_ok=True)
            launch(
                f"worker-{i}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    url,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    str(cores),
                    "--memory",
                    memory,
                    "--webui-port",
                    str(free_port()),
                    "--work-dir",
                    str(work),
                ],
            )
        deadline = time.monotonic() + timeout
        while _alive_workers(ui) < workers:
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not come up (logs in {directory})")
            time.sleep(0.5)
    except BaseException:
        stop([p.pid for p in procs])
        raise
    pids = [p.pid for p in procs]
    (directory / "master-url").write_text(url + "\n")
    (directory / "pids").write_text("\n".join(map(str, pids)) + "\n")
    return url, pids


def stop(pids: list[int], grace: float = 10.0) -> None:
    """Terminate the process groups of ``pids`` (each JVM was started in its own session)."""
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.2)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextmanager
def local_cluster(
    directory: Path, workers: int = 2, cores: int = 1, memory: str = "2g"
) -> Iterator[str]:
    """A running cluster for the ``with`` block; yields the master URL; always stops it."""
    url, pids = start(directory, workers, cores, memory)
    try:
        yield url
    finally:
        stop(pids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("--dir", type=Path, default=Path("out/cluster"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--memory", default="2g")
    args = p.parse_args(argv)
    if args.action == "start":
        url, pids = start(args.dir, args.workers, args.cores, args.memory)
        print(
            f"{url}  (pids {' '.join(map(str, pids))}; stop with: python {sys.argv[0]} stop "
            f"--dir {args.dir})"
        )
        return 0
    pid_file = args.dir / "pids"
    if not pid_file.exists():
        print(f"no cluster started from {args.dir}", file=sys.stderr)
        return 1
    stop([int(x) for x in pid_file.read_text().split()])
    pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
