"""Publishing output directories (eges.schema.staged_dir, publish_dir, recover_dir) with real
directories and real processes: what a killed writer leaves behind is cleaned up or restored,
and what a live writer is building is never touched.

A writer is killed at an exact point by running it in a child process whose ``Path.rename`` or
``shutil.rmtree`` sends the process SIGKILL (or makes it wait) at that call: the same state a
power cut or ``kill -9`` there leaves.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from eges import schema

REPO = Path(__file__).resolve().parent.parent

# A child process: publishes OUT (version given by argv[2]) with staged_dir; argv[3] says where
# it stops: "none" (finishes), "hold" (prints its staging directory, then waits in the body),
# "kill-between-renames", "hold-between-renames" (after final was set aside, before the new
# one is renamed in), "kill-before-delete" (new one in place, old one not yet deleted).
WRITER = textwrap.dedent("""
    import os, shutil, signal, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[4])
    from eges import schema

    final, version, stop = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    renames = []
    real_rename, real_rmtree = Path.rename, shutil.rmtree

    def rename(self, target):
        if (stop.endswith("between-renames") and renames
                and Path(target) == final):  # the second rename: tmp -> final
            if stop == "kill-between-renames":
                os.kill(os.getpid(), signal.SIGKILL)
            print("between", flush=True)
            time.sleep(60)
        renames.append(target)
        return real_rename(self, target)

    def rmtree(path, *args, **kwargs):
        if stop == "kill-before-delete" and ".old-" in Path(path).name:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_rmtree(path, *args, **kwargs)

    Path.rename = rename
    shutil.rmtree = rmtree
    with schema.staged_dir(final, replace=True) as tmp:
        (tmp / "data.txt").write_text(version)
        if stop == "hold":
            print(tmp, flush=True)
            time.sleep(60)
        schema.write_manifest(tmp, {"version": version})
""")


def writer(final: Path, version: str, stop: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(final), version, stop, str(REPO)],
        stdout=subprocess.PIPE,
        text=True,
    )


def publish(final: Path, version: str, stop: str = "none") -> int:
    """Run a writer to its end (or its SIGKILL); its exit status."""
    proc = writer(final, version, stop)
    proc.communicate(timeout=60)
    return proc.returncode


def version_of(final: Path) -> str:
    assert (
        json.loads((final / schema.MANIFEST).read_text())["version"]
        == (final / "data.txt").read_text()
    )
    return (final / "data.txt").read_text()


def hidden(final: Path, kind: str) -> list[Path]:
    return sorted(final.parent.glob(f".{final.name}.{kind}-*"))


def test_publish_replaces_and_leaves_nothing_beside(tmp_path):
    final = tmp_path / "out"
    assert publish(final, "v1") == 0 and publish(final, "v2") == 0
    assert version_of(final) == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_live_writers_staging_directory_survives_another_writer(tmp_path):
    final = tmp_path / "out"
    live = writer(final, "slow", "hold")
    try:
        staging = Path(live.stdout.readline().strip())
        assert staging.is_dir() and hidden(final, "tmp") == [staging]
        with schema.staged_dir(final, replace=True) as tmp:  # a second writer, this process
            assert staging.is_dir(), "a live writer's staging directory was removed"
            (tmp / "data.txt").write_text("mine")
            schema.write_manifest(tmp, {"version": "mine"})
        assert staging.is_dir() and (staging / "data.txt").read_text() == "slow"
        assert version_of(final) == "mine"
    finally:
        live.kill()
        live.wait()
    # killed now: its staging directory is provably dead, and the next writer removes it
    assert hidden(final, "tmp") == [staging]
    assert publish(final, "v3") == 0
    assert hidden(final, "tmp") == [] and version_of(final) == "v3"


def test_staging_directory_of_a_live_process_is_kept_by_pid(tmp_path):
    """Ownership is the pid in the name: an unrelated live process (sleep) keeps its directory
    alive, and once that process is gone the directory is removed."""
    final = tmp_path / "out"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        mine = schema._sibling(final, "tmp")
        theirs = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{sleeper.pid}-"))
        theirs.mkdir(parents=True)
        schema.recover_dir(final)
        assert theirs.is_dir()
        assert schema.owner_state(theirs, f".{final.name}.tmp-") == "alive"
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    assert schema.owner_state(theirs, f".{final.name}.tmp-") == "dead"
    schema.recover_dir(final)
    assert not theirs.exists()


def test_directories_of_unknown_owner_are_left_alone(tmp_path, caplog):
    final = tmp_path / "out"
    legacy = tmp_path / ".out.tmp-0123abcd"  # an earlier version's name: no owner
    host = "00000000" if schema._host_key() != "00000000" else "11111111"
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid with no process here says nothing about a process of another host
    other_host = tmp_path / f".out.tmp-0123abcd-{gone.pid}-{host}"
    for d in (legacy, other_host):
        d.mkdir()
    with schema.staged_dir(final, replace=False) as tmp:
        schema.write_manifest(tmp, {})
    assert legacy.is_dir() and other_host.is_dir()
    assert "remove it by hand" in caplog.text


def test_killed_between_renames_restores_the_previous_output(tmp_path):
    final = tmp_path / "out"
    assert publish(final, "v1") == 0
    assert publish(final, "v2", "kill-between-renames") == -signal.SIGKILL
    # the crash state: no final, the previous output set aside, the new one staged
    assert not final.exists() and len(hidden(final, "old")) == 1
    schema.recover_dir(final)
    assert version_of(final) == "v1"
    assert hidden(final, "old") == [] and hidden(final, "tmp") == []


def test_next_writer_restores_then_replaces(tmp_path):
    final = tmp_path / "out"
    assert publish(final, "v1") == 0
    assert publish(final, "v2", "kill-between-renames") == -signal.SIGKILL
    assert publish(final, "v3") == 0
    assert version_of(final) == "v3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_killed_before_deleting_the_old_output_leaves_it_removed_next_time(tmp_path):
    final = tmp_path / "out"
    assert publish(final, "v1") == 0
    assert publish(final, "v2", "kill-before-delete") == -signal.SIGKILL
    assert version_of(final) == "v2" and len(hidden(final, "old")) == 1
    # the set-aside copy lost its manifest before its deletion began: never restorable
    assert not (hidden(final, "old")[0] / schema.MANIFEST).exists()
    schema.recover_dir(final)
    assert version_of(final) == "v2" and hidden(final, "old") == []


def test_incomplete_set_aside_copy_is_kept_while_the_output_is_missing(tmp_path, caplog):
    final = tmp_path / "out"
    assert publish(final, "v1") == 0
    assert publish(final, "v2", "kill-before-delete") == -signal.SIGKILL
    (old,) = hidden(final, "old")
    schema.recover_dir(final)  # final present: the partial copy goes
    assert not old.exists()
    assert publish(final, "v3", "kill-before-delete") == -signal.SIGKILL
    (old,) = hidden(final, "old")
    shutil.rmtree(final)  # someone deleted the output: the partial copy is all there is
    schema.recover_dir(final)
    assert old.is_dir() and (old / "data.txt").read_text() == "v2" and not final.exists()
    assert "is not complete" in caplog.text


def test_live_publisher_between_renames_is_not_interfered_with(tmp_path):
    final = tmp_path / "out"
    assert publish(final, "v1") == 0
    live = writer(final, "v2", "hold-between-renames")
    try:
        assert live.stdout.readline().strip() == "between"
        assert not final.exists()
        schema.recover_dir(final)  # must not restore v1 under a writer about to publish v2
        assert not final.exists() and len(hidden(final, "old")) == 1
    finally:
        live.kill()
        live.wait()
    schema.recover_dir(final)  # the publisher is dead now
    assert version_of(final) == "v1"


def test_pid_liveness_counts_a_zombie_as_dead():
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        assert not schema._pid_alive(child.pid)  # exited, not reaped yet
    finally:
        child.wait()
    assert not schema._pid_alive(child.pid)
    assert schema._pid_alive(os.getpid())


@pytest.mark.parametrize("replace", [False, True])
def test_failed_body_removes_its_staging_directory(tmp_path, replace):
    final = tmp_path / "out"
    with pytest.raises(ValueError), schema.staged_dir(final, replace=replace) as tmp:
        (tmp / "partial").write_text("x")
        raise ValueError("body failed")
    assert list(tmp_path.iterdir()) == []


def test_a_host_of_the_same_name_after_another_boot_is_another_host(tmp_path):
    """Two hosts with one host name, both in the initial pid namespace (whose inode is the same
    on every kernel), differ by their boot id only: a staging directory of the other host, whose
    pid says nothing about a process here, is left alone."""
    if schema.BOOT_ID.is_file():
        assert schema._boot_id() == schema.BOOT_ID.read_text().strip()
    assert schema._host_key() == schema._host_key(schema._boot_id())
    other = schema._host_key("3f2504e0-4f89-41d3-9a0c-0305e82c3301")
    assert other != schema._host_key()
    gone = subprocess.Popen(["true"])
    gone.wait()
    final = tmp_path / "out"
    theirs = tmp_path / f".out.tmp-0123abcd-{gone.pid}-{other}"
    theirs.mkdir()
    assert schema.owner_state(theirs, ".out.tmp-") == "unknown"
    schema.recover_dir(final)
    assert theirs.is_dir()


def test_concurrent_writers_of_one_file_never_fail_nor_mix(tmp_path):
    """Writers of one path (two evaluations writing one report) each rename a complete file of
    their own; a reader sees one writer's whole text, never a part or a mix."""
    path = tmp_path / "report.md"
    texts = [f"writer {i}: " + chr(0x4E00 + i) * 100_000 + "\n" for i in range(6)]
    errors: list[BaseException] = []
    torn: list[int] = []
    done = threading.Event()

    def write(text: str) -> None:
        try:
            for _ in range(60):
                schema.write_text_atomic(path, text)
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        while not done.is_set():
            try:
                got = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except UnicodeDecodeError:  # cut inside a character: a part of a file
                torn.append(-1)
                continue
            if got not in texts:
                torn.append(len(got))

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join()
    assert errors == [] and torn == []
    assert path.read_text(encoding="utf-8") in texts
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary files left


def test_text_is_written_as_utf8_whatever_the_locale(tmp_path):
    """A report with titles in any script, written by a process whose locale is C (ASCII)."""
    path = tmp_path / "report.md"
    text = "| Amélie (2001) | 千と千尋の神隠し | Ç’est—ça |\n"
    path.write_text("old\n")
    code = (
        "import locale, sys\n"
        "from eges import schema\n"
        "print(locale.getpreferredencoding(False))\n"
        f"schema.write_text_atomic(sys.argv[1], {ascii(text)})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.pop("PYTHONIOENCODING", None)
    env.update(LANG="C", LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "utf" not in proc.stdout.lower()  # the locale really is not UTF-8
    assert path.read_bytes().decode("utf-8") == text
    # a text that cannot be written leaves the file as it was and nothing beside it
    with pytest.raises(UnicodeEncodeError):
        schema.write_text_atomic(path, "half \ud800")
    assert path.read_bytes().decode("utf-8") == text
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_walk_outputs_of_format_1_int32_indices_are_still_read(tmp_path):
    """Format 2 writes item indices as int64; a version-1 output (int32) is read alike, and an
    unknown version is refused. Only readers widen: the walk job's own check is exact."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for version in (1, 2):
        out = tmp_path / f"v{version}"
        out.mkdir()
        schema.write_manifest(out, {"format": schema.FORMAT_NAME, "format_version": version})
        assert schema.read_manifest(out)["format_version"] == version
    v3 = tmp_path / "v3"
    v3.mkdir()
    schema.write_manifest(v3, {"format": schema.FORMAT_NAME, "format_version": 3})
    with pytest.raises(schema.IncompleteOutputError, match="v3"):
        schema.read_manifest(v3)
    edges = tmp_path / "edges"
    edges.mkdir()
    old = pa.table(
        {
            "src": pa.array([1, 2], pa.int32()),
            "dst": pa.array([2, 3], pa.int32()),
            "weight": pa.array([4, 5], pa.int64()),
        }
    )
    pq.write_table(old, edges / "part-0.parquet")
    assert schema.read_table(edges, schema.EDGE_SCHEMA)["src"].to_pylist() == [1, 2]
    with pytest.raises(ValueError, match="schema mismatch"):
        schema.check_schema(old.schema, schema.EDGE_SCHEMA, "edges")  # the job's exact check
    walks = pa.schema([("walk_id", pa.int64()), ("items", pa.list_(pa.int64()))])
    schema.check_schema(walks, schema.WALK_SCHEMA, "walks")
    with pytest.raises(ValueError, match="schema mismatch"):  # not an integer at all
        schema.check_schema(
            pa.schema([("walk_id", pa.int64()), ("items", pa.list_(pa.float64()))]),
            schema.WALK_SCHEMA,
            "walks",
            older=True,
        )
