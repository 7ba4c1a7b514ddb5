"""Synthetic walk outputs written with pyarrow against the schema module (no Spark needed)."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from eges import schema


def make_walk_dir(
    root: Path, shard_rows: list[int], walk_length: int = 5, num_items: int = 1000
) -> Path:
    """Shards of walks whose first item identifies the walk: walk g starts at item g + 1."""
    (root / "walks").mkdir(parents=True)
    files, g = [], 0
    for i, rows in enumerate(shard_rows):
        walks = []
        for _ in range(rows):
            length = 2 + g % (walk_length - 1)  # ragged: 2..walk_length
            walks.append([g + 1] + [1 + (g + k) % num_items for k in range(1, length)])
            g += 1
        path = root / "walks" / f"shard-{i:05d}.parquet"
        table = pa.table(
            {
                "walk_id": pa.array(range(g - rows, g), pa.int64()),
                "items": pa.array(walks, pa.list_(pa.int32())),
            }
        )
        pq.write_table(table, path, row_group_size=64)
        files.append({"path": f"walks/shard-{i:05d}.parquet", "rows": rows})
    schema.write_manifest(
        root,
        {
            "walks": {"path": "walks", "rows": g, "files": files},
            "config": {"walks": {"walk_length": walk_length}},
            "side_info_fields": [],
        },
    )
    return root


GENRES = ["Drama", "Comedy", "Action"]
YEARS = ["1990", "1991", "1992", "1993"]


def make_complete_walk_dir(root: Path, walks: int = 60, cold_items: int = 5) -> Path:
    """A walk output the trainer accepts (items, vocabularies, manifest), without Spark.

    Items ``m1`` … ``m<walks + cold_items>``; the last ``cold_items`` never occur in a walk.
    Item ``m<i + 1>`` has genre ``GENRES[i % 3]`` (plus ``GENRES[(i + 1) % 3]`` for odd i) and
    year ``YEARS[i % 4]``, none when i is a multiple of 7.
    """
    make_walk_dir(root, [walks // 2, walks - walks // 2], num_items=walks)
    n = walks + cold_items
    (root / schema.ITEMS_DIR).mkdir()
    pq.write_table(
        pa.table(
            {
                "item_idx": pa.array(range(1, n + 1), pa.int32()),
                "item_id": pa.array([f"m{i}" for i in range(1, n + 1)]),
                "count": pa.array([3] * n, pa.int64()),
                "genre": pa.array(
                    [[1 + i % 3] + ([1 + (i + 1) % 3] if i % 2 else []) for i in range(n)],
                    pa.list_(pa.int32()),
                ),
                "year": pa.array(
                    [[] if i % 7 == 0 else [1 + i % 4] for i in range(n)], pa.list_(pa.int32())
                ),
            }
        ),
        root / schema.ITEMS_DIR / "part-00000.parquet",
    )
    for name, values in (("genre", GENRES), ("year", YEARS)):
        (root / schema.VOCAB_DIR / name).mkdir(parents=True)
        pq.write_table(
            pa.table(
                {
                    "value": pa.array(values),
                    "index": pa.array(range(1, len(values) + 1), pa.int32()),
                    "count": pa.array([1] * len(values), pa.int64()),
                }
            ),
            root / schema.VOCAB_DIR / name / "part-00000.parquet",
        )
    manifest = schema.read_manifest(root, kind=None)
    manifest.update(
        format=schema.FORMAT_NAME,
        format_version=schema.FORMAT_VERSION,
        side_info_fields=[
            {"name": "genre", "vocab_size": len(GENRES)},
            {"name": "year", "vocab_size": len(YEARS)},
        ],
    )
    schema.write_manifest(root, manifest)
    return root
