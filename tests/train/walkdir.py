"""Synthetic walk outputs written with pyarrow against the schema module (no Spark needed)."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from eges import schema


def make_walk_dir(root: Path, shard_rows: list[int], walk_length: int = 5,
                  num_items: int = 1000) -> Path:
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
        table = pa.table({"walk_id": pa.array(range(g - rows, g), pa.int64()),
                          "items": pa.array(walks, pa.list_(pa.int32()))})
        pq.write_table(table, path, row_group_size=64)
        files.append({"path": f"walks/shard-{i:05d}.parquet", "rows": rows})
    schema.write_manifest(root, {"walks": {"path": "walks", "rows": g, "files": files},
                                 "config": {"walks": {"walk_length": walk_length}},
                                 "side_info_fields": []})
    return root
