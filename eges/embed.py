"""Cold start: embed items never seen in training from their side information alone.

As in the paper (§3.3.2), a new item's vector is the mean of its side-information embeddings (a
multi-valued field contributes the mean of its values). Values missing from the training
vocabulary are reported and ignored — never a crash; an item without any known value gets no
vector and is reported.

    python -m eges.embed --run RUN_DIR --items new_items.csv --top-k 10 [--output out.parquet]

``new_items.csv`` has an ``item_id`` column and one column per side-info field of the run
(``genres``, ``year``, ``tags`` for MovieLens); multi-valued fields separate values with ``|``
(``--sep``). Fields may be left out or empty.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from eges.export import EXPORT_DIR, load_model, read_embeddings
from eges.neighbors import NEIGHBORS_SCHEMA, exact_topk, prepare

log = logging.getLogger(__name__)


@dataclass
class Neighbour:
    item_id: str
    score: float


class Embedder:
    """A finished run, loaded for cold-start embedding and nearest-neighbour queries.

    Args:
        run_dir: a run directory with a complete ``export/``.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.model, meta = load_model(self.run_dir)
        self.fields: list[str] = meta["fields"][: self.model.num_fields]
        # values normalised at ingest are normalised the same way here ("Pixar" -> "pixar")
        self.lowercase = set(meta.get("lowercase_fields", []))
        export = self.run_dir / EXPORT_DIR
        self.vocab = {}
        for f in self.fields:
            t = pq.read_table(export / "vocab" / f"{f}.parquet")
            self.vocab[f] = dict(zip(t["value"].to_pylist(), t["index"].to_pylist()))
        self.trained = {f: getattr(self.model, f"side_trained_{i}").cpu().numpy()
                        for i, f in enumerate(self.fields)}
        emb, vectors = read_embeddings(self.run_dir)
        self.item_ids: list[str] = emb["item_id"].to_pylist()
        self._unit = prepare(vectors, "cosine")
        rows = torch.from_numpy(emb["item_idx"].to_numpy().astype("int64"))
        self._context = self.model.context.weight.detach().float()[rows]  # (M, D) Z
        self._trained = self._context.abs().sum(1) > 0  # cold items have no context row
        self.unknown: Counter = Counter()

    def embed(self, items: list[dict[str, list[str]]]) -> tuple[torch.Tensor, list[bool]]:
        """Vectors of new items.

        Args:
            items: per item, field name -> list of raw values (unknown fields are reported).

        Returns:
            ((N, D) vectors, per item whether any value was known; unknown ones are zero).
        """
        side_ids, known = [], []
        for item in items:
            per_field = []
            for f in self.fields:
                ids = []
                for value in item.get(f, []):
                    value = value.strip()
                    if f in self.lowercase:
                        value = value.lower()
                    idx = self.vocab[f].get(value)
                    if idx is None:
                        self.unknown[f] += 1
                        log.warning("unknown %s value %r: ignored", f, value)
                    elif not self.trained[f][idx]:
                        self.unknown[f"{f} (untrained)"] += 1
                        log.warning("%s value %r occurs only on items without interactions: "
                                    "its embedding was never trained, ignored", f, value)
                    else:
                        ids.append(idx)
                per_field.append(torch.tensor(ids, dtype=torch.long))
            for f in item:
                if f not in self.fields:
                    self.unknown[f"field {f}"] += 1
            side_ids.append(per_field)
            known.append(any(v.numel() for v in per_field))
        with torch.no_grad():
            return self.model.cold_start(side_ids), known

    def most_similar(self, vectors: torch.Tensor, top_k: int = 10, metric: str = "context"
                     ) -> list[list[Neighbour]]:
        """The top exported items for each row of ``vectors``.

        ``context`` (default): trained items by H·Z, the skip-gram score of "seen together",
        as the default neighbour table; ``cosine``: every exported item by cosine similarity.
        """
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        if metric not in ("context", "cosine"):
            raise ValueError(f"metric must be context or cosine, not {metric!r}")
        # the same exact search as the neighbour table (eges.neighbors), so rows agree
        if metric == "context":
            allowed = self._trained
            idx, scores = exact_topk(vectors.float(), self._context,
                                     min(top_k, int(allowed.sum())), allowed=allowed)
        else:
            idx, scores = exact_topk(prepare(vectors, "cosine"), self._unit,
                                     min(top_k, self._unit.shape[0]))
        return [[Neighbour(self.item_ids[j], float(s)) for s, j in zip(row_s, row_i)]
                for row_s, row_i in zip(scores.tolist(), idx.tolist())]


def read_new_items(path: str | Path, fields: list[str], sep: str = "|"
                   ) -> tuple[list[str], list[dict[str, list[str]]]]:
    """Read a CSV of new items (``item_id`` + field columns). Unknown columns are warned about."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"new-items file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "item_id" not in reader.fieldnames:
            raise ValueError(f"{path}: needs an item_id column; has {reader.fieldnames}")
        extra = [c for c in reader.fieldnames if c != "item_id" and c not in fields]
        if extra:
            log.warning("%s: columns %s are not side-info fields of this run (%s): ignored",
                        path, extra, fields)
        ids, items = [], []
        for row in reader:
            ids.append(row["item_id"])
            items.append({f: [v.strip() for v in (row.get(f) or "").split(sep) if v.strip()]
                          for f in fields})
    return ids, items


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eges.embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory of eges/train.py")
    p.add_argument("--items", required=True, help="CSV of new items: item_id + field columns")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--sep", default="|", help="separator of multi-valued fields")
    p.add_argument("--metric", choices=["context", "cosine"], default="context",
                   help="context: trained items by H·Z (default, as the neighbour table); "
                        "cosine: every exported item by cosine similarity")
    p.add_argument("--output", help="write neighbours as parquet in the schema of the "
                                    "neighbour table (item_id, neighbor_id, rank, score)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        emb = Embedder(args.run)
        ids, items = read_new_items(args.items, emb.fields, args.sep)
        vectors, known = emb.embed(items)
        neighbours = emb.most_similar(vectors, args.top_k, args.metric)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = []
    for item_id, item, ok, nbrs in zip(ids, items, known, neighbours):
        desc = "; ".join(f"{f}={'|'.join(v)}" for f, v in item.items() if v)
        if not ok:
            print(f"{item_id}: no known side-info value ({desc or 'none given'}): no vector")
            continue
        print(f"{item_id} ({desc})")
        for rank, n in enumerate(nbrs, 1):
            print(f"  {rank:>3}. {n.item_id:<20} {n.score:.3f}")
            rows.append({"item_id": item_id, "neighbor_id": n.item_id, "rank": rank,
                         "score": n.score})
    if emb.unknown:
        print(f"ignored unknown values: {dict(emb.unknown)}", file=sys.stderr)
    if args.output:
        pq.write_table(pa.Table.from_pylist(rows, schema=NEIGHBORS_SCHEMA), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
