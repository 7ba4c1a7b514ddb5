"""Writing the walk job's outputs: tables, walk shards, and the atomic publish of the directory.

Everything is written into a hidden temporary sibling of the output directory
(:func:`eges.schema.staged_dir`); the manifest is written last, then the directory is renamed
into place (an existing one is swapped out only with ``output.overwrite``). Readers therefore see
either no directory, the previous complete one, or
the new complete one — never a mix.

Output paths must be on a filesystem that the driver can rename on and every executor can write
to (local disk in local mode, a shared mount on a cluster).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from eges import schema
from eges.pipeline.spark import hash_partition_keys
from eges.pipeline.walks import assemble

log = logging.getLogger(__name__)


class OutputExistsError(FileExistsError):
    """The output directory exists and ``output.overwrite`` is false."""


def local_path(path: str) -> Path:
    """The output path as an absolute local path (``file://`` allowed, other schemes are not)."""
    if "://" in path and not path.startswith("file://"):
        raise ValueError(
            f"output path {path!r}: only local or mounted shared filesystems are supported "
            "(the directory is published with an atomic rename)"
        )
    return Path(path.removeprefix("file://")).expanduser().resolve()


def check_output(final: Path, overwrite: bool) -> None:
    """Refuse an existing destination unless ``overwrite``; warn about unfinished earlier runs.

    Raises:
        OutputExistsError: ``final`` exists and ``overwrite`` is false.
    """
    if final.exists() and not overwrite:
        raise OutputExistsError(
            f"output directory {final} exists; pass --set output.overwrite=true to replace it "
            "or choose another --output"
        )
    stale = sorted(final.parent.glob(f".{final.name}.tmp-*"))
    if stale:
        log.warning(
            "temporary directories of earlier runs that did not finish (safe to delete "
            "unless such a run is still going): %s",
            ", ".join(map(str, stale)),
        )


def write_table(
    df: DataFrame, root: Path, name: str, *, files: int = 1, sort_by: list[str] | None = None
) -> dict[str, Any]:
    """Write ``df`` as parquet into ``root/name`` and describe it for the manifest.

    Args:
        df: the table.
        root: the (temporary) output directory.
        name: table path relative to ``root`` (``items``, ``vocab/genres``).
        files: number of parquet files (range-partitioned by ``sort_by`` when given).
        sort_by: columns to order rows by, within and across files (files split on the first),
            so the files are the same for any Spark partitioning.

    Returns:
        ``{"path", "rows", "files": [{"path", "rows"}]}`` with paths relative to ``root``.
    """
    if sort_by:
        df = df.repartitionByRange(files, sort_by[0]).sortWithinPartitions(*sort_by)
    else:
        df = df.coalesce(files)
    df.write.parquet(str(root / name))
    return describe(root, name)


def describe(root: Path, name: str) -> dict[str, Any]:
    """Row counts of a written table, read from the parquet footers."""
    entries = [
        {"path": str(f.relative_to(root)), "rows": pq.read_metadata(f).num_rows}
        for f in schema.parquet_files(root / name)
    ]
    return {"path": name, "rows": sum(e["rows"] for e in entries), "files": entries}


def partition_keys(spark: SparkSession, n: int) -> list[int]:
    """Keys ``k_0 … k_{n-1}`` whose hash partition among ``n`` is their position: a
    ``repartition(n, key)`` by ``k_i`` sends the rows of ``k_i`` to partition ``i``.

    A ``repartition(n, shard)`` by the shard numbers themselves spreads them unevenly: Spark
    partitions by ``pmod(murmur3(shard), n)``, which for 8 shards uses 5 partitions and puts 3
    shards in one task (writing the walks of 10M items, that task took 47 s against a median
    of 15 s), and for 64 shards uses 37 partitions with up to 4 shards in one. See
    :func:`eges.pipeline.spark.hash_partition_keys`.
    """
    return [keys[0] for keys in hash_partition_keys(spark, n, [1] * n)]


def shard_partition(spark: SparkSession, n: int, shard: Column) -> Column:
    """The key to ``repartition(n, …)`` by that sends shard ``i`` (a column of 0 … n-1) to
    partition ``i`` (see :func:`partition_keys`; a long, as the keys were hashed)."""
    keys = F.array(*[F.lit(k).cast("long") for k in partition_keys(spark, n)])
    return F.element_at(keys, shard + 1)


def sharded_walks(
    walks: DataFrame, num_shards: int, seed: int, walk_length: int | None = None
) -> DataFrame:
    """``walk_id``, ``items``, ``shard``: the walks in their shard's partition (partition ``i``
    holds shard ``i``), ordered within it; one shuffle, the assembly of step rows included.
    The arguments are :func:`write_walk_shards`'s.

    The shuffle carries only the input's own columns: the shard and its partition key are
    functions of ``walk_id``, so the exchange partitions by the expression and they are computed
    again on the other side (for step rows, 40 bytes a row before compression instead of 56)."""
    order = F.xxhash64(F.lit(seed).cast("long"), F.col("walk_id"))
    shard = F.pmod(order, F.lit(num_shards)).cast("int")
    part = shard_partition(walks.sparkSession, num_shards, shard)  # shard i -> partition i
    # the exchange's key is ``part`` itself; naming it after the exchange lets the aggregation
    # below see that its input is already partitioned by it (no second shuffle)
    sharded = walks.repartition(num_shards, part).withColumn("_part", part)
    if walk_length is not None:  # grouped by (_part, walk_id): no second shuffle
        sharded = assemble(sharded, walk_length, keys=("_part",))
    # a partition holds one shard: sorting by the hash first lets the sort use it as its
    # prefix (a constant shard first would leave every comparison to the full keys)
    # the writer names a task's file after its partition: a row anywhere else would end up in
    # another shard's file, so it stops the job (a check per row, no extra pass)
    placed = F.assert_true(
        F.spark_partition_id() == F.col("shard"), "a walk is not in its shard's partition"
    )
    return (
        sharded.select("walk_id", "items", shard.alias("shard"), order.alias("_order"))
        .sortWithinPartitions("_order", "walk_id")
        .drop("_order")
        .filter(placed.isNull())
    )


def write_walk_shards(
    walks: DataFrame, out: Path, num_shards: int, seed: int, *, walk_length: int | None = None
) -> dict[str, Any]:
    """Write walks as up to ``num_shards`` parquet files of similar size, in seeded shuffled order.

    A walk's shard is ``pmod(h, num_shards)`` with ``h = xxhash64(seed, walk_id)``, and rows are
    ordered by ``(h, walk_id)`` within a shard, so that any block of a shard mixes start nodes
    and rounds (by walk id, a block would hold start nodes of one popularity band). Both depend
    only on the seed and the walk ids: the same walks give the same files, row for row and byte
    for byte, whatever the Spark partitioning (no sampling, unlike a range partitioning). Byte
    for byte within one Spark application: parquet-mr lists a column's encodings in its footer
    in an order that can change from one JVM to the next (the rows and pages do not).

    Each shard is written by exactly one Spark task, and each task writes one shard
    (``repartition`` by a key that sends shard ``i`` to partition ``i``, see
    :func:`partition_keys`; task ``i`` writes one file, ``part-0000i-…``); the files are
    renamed ``shard-00000.parquet`` … in shard order; a shard that no walk hashes to (possible only
    with very few walks) has no file, so the numbering stays contiguous. Spark's marker and
    checksum files are removed.

    Args:
        walks: ``walk_id``, ``items``; or, with ``walk_length``, the ``walk_id``, ``step``,
            ``prev``, ``node`` rows of :func:`eges.pipeline.walks.walk_steps`, which are sent to
            their shard and put together there (one shuffle for both).
        out: the (temporary) output directory.
        num_shards: the most files to write.
        seed: the walk seed.
        walk_length: nodes per walk, when ``walks`` are step rows.
    """
    spark_dir = out / f"_{schema.WALKS_DIR}_spark"
    # partition i is shard i, so the task's file is the shard's: no partitionBy("shard"),
    # which would sort every partition again by its one shard
    (
        sharded_walks(walks, num_shards, seed, walk_length)
        .select("walk_id", "items")
        .write.option("maxRecordsPerFile", 0)  # one file per task whatever the session says
        .parquet(str(spark_dir))
    )
    final = out / schema.WALKS_DIR
    final.mkdir()
    by_task: dict[int, list[Path]] = {}
    for part in schema.parquet_files(spark_dir):
        named = re.fullmatch(r"part-(\d+)-.+\.parquet", part.name)  # part-00003-<job>-c000…
        if named is None:
            raise RuntimeError(f"{part}: not a file name Spark's writer gives a task's output")
        if pq.read_metadata(part).num_rows:  # an empty partition may leave an empty file
            by_task.setdefault(int(named.group(1)), []).append(part)
    for i, task in enumerate(sorted(by_task)):
        if len(by_task[task]) != 1:  # one file per task
            raise RuntimeError(f"{spark_dir}: task {task} wrote {len(by_task[task])} files")
        by_task[task][0].rename(final / f"shard-{i:05d}.parquet")
    shutil.rmtree(spark_dir)
    return describe(out, schema.WALKS_DIR)
