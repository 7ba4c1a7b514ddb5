"""Cold start: embed items never seen in training from their side information alone.

As in the paper (§3.3.2), a new item's vector is the mean of its side-information embeddings (a
multi-valued field contributes the mean of its values), each field weighted by the run's
``train.cold_weights`` (equal by default) or by new items' chosen field weights (below).
Values missing from the training vocabulary are reported and ignored — never a crash; an item
without any known value gets no vector and is reported. A numeric field's value (year, price:
see :mod:`eges.buckets`) maps to its bucket, or to the nearest bucket a trained item carries.

    eges embed --run RUN_DIR --items new_items.csv --top-k 10 [--output out.parquet]

Two layouts of ``new_items.csv`` (``--layout``; by default told apart by the header):

* **simple**: an ``item_id`` column and one column per side-info field of the run (``genres``,
  ``year``, ``tags`` for MovieLens); multi-valued fields separate values with ``|`` (``--sep``).
  Fields may be left out or empty.
* **movielens**: ``movieId,title,genres`` as in ``movies.csv`` (a header with ``movieId`` and
  no ``item_id``), read with the walk job's rules (:mod:`eges.movielens`): genres split on
  ``|`` with "(no genres listed)" meaning none, the year from the title's trailing "(YYYY)",
  tags lower-cased and stripped. Tags come from an optional ``tags`` column (``|`` between
  tags) and/or ``--tags tags.csv`` (``movieId,tag``, one tag per row, as MovieLens'
  ``tags.csv``). Rows the walk job would drop (a missing or non-integer movieId, a wrong number
  of fields) are reported and skipped; rows of one movieId are merged.

Neighbours are printed as ``rank. id  name  score``, the name being the display name (title)
the walk job kept in its item table, when the data has one.

``--metric`` and ``--popularity-prior`` default to the run's choice for new items made on a
cold-start validation (``RUN/serving.json``'s ``new_items``), else to the neighbour table's
choice (as ``eges neighbors``), else context with a prior of 0.4. New items' choice may come
with side-info field weights (a new item's vector is a weighted mean over its fields): they are
served whenever the run has that choice, with any ``--metric`` and ``--popularity-prior``, over
the run's own ``train.cold_weights``, and named on stderr. The prior
applies to ``--metric context`` only: given with ``--metric cosine``, or negative, it is
refused.

Input files are UTF-8, with or without the byte-order mark Excel writes. A header that lacks the
expected columns but has them when split on another delimiter (``;``, a tab) is an error naming
``--delimiter``. Each new id must occur once (ids are trimmed of spaces, as the walk job trims
them); duplicates are refused, naming them. An id that is already in the run's export is
embedded from its side information all the same, with a warning, and never listed as its own
neighbour.

``--output`` is written through a temporary file in its directory and one rename (a reader sees
the old file or the new one, never a part). An existing file is replaced only with
``--overwrite``, and only when it is a neighbour table (the schema written here); a path in the
run's export directory is refused.
"""

from __future__ import annotations

import csv
import logging
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from eges import movielens as ml_rules
from eges import schema
from eges.buckets import NumericMapper, NumericSpec
from eges.cli import fail, parser
from eges.quiet import setup_logging
from eges.schema import IncompleteOutputError
from eges.serving.neighbors import (
    NEIGHBORS_NAMES_SCHEMA,
    NEIGHBORS_SCHEMA,
    POPULARITY_PRIOR,
    SERVING_FILE,
    check_popularity_prior,
    context_candidates,
    exact_topk,
    popularity_bias,
    prepare,
    run_item_names,
    score_label,
    served_score,
)
from eges.training.export import EXPORT_DIR, load_model, read_embeddings

log = logging.getLogger(__name__)

ENCODING = "utf-8-sig"  # UTF-8; a byte-order mark (Excel's "CSV UTF-8") is read, not kept
# delimiters tried when a header lacks its columns, to tell the user which --delimiter to pass
OTHER_DELIMITERS = (",", ";", "\t", "|")


@dataclass
class Neighbour:
    item_id: str
    score: float
    name: str | None = None  # display name (title) from the walk output's item table


class Embedder:
    """A finished run, loaded for cold-start embedding and nearest-neighbour queries.

    Args:
        run_dir: a run directory with a complete ``export/``.
        popularity_prior: β of the ``context`` score H·Z + β·ln(walk count of the neighbour),
            as ``eges neighbors --popularity-prior`` (0: H·Z alone).
    """

    def __init__(self, run_dir: str | Path, popularity_prior: float = POPULARITY_PRIOR) -> None:
        check_popularity_prior(popularity_prior)
        self.run_dir = Path(run_dir)
        self.popularity_prior = popularity_prior
        self.model, meta = load_model(self.run_dir)
        self.fields: list[str] = meta["fields"][: self.model.num_fields]
        # values normalised at ingest are normalised the same way here ("Pixar" -> "pixar")
        self.lowercase = set(meta.get("lowercase_fields", []))
        export = self.run_dir / EXPORT_DIR
        self.vocab = {}
        for f in self.fields:
            t = pq.read_table(export / "vocab" / f"{f}.parquet")
            self.vocab[f] = dict(zip(t["value"].to_pylist(), t["index"].to_pylist()))
        self.trained = {
            f: getattr(self.model, f"side_trained_{i}").cpu().numpy()
            for i, f in enumerate(self.fields)
        }
        # numeric fields: a raw value maps to its bucket, or the nearest trained bucket
        self.numeric = {
            f: NumericMapper(
                NumericSpec.from_manifest(spec),
                [v for v, i in self.vocab[f].items() if self.trained[f][i]],
            )
            for f, spec in meta.get("numeric_fields", {}).items()
            if f in self.vocab
        }
        emb, vectors = read_embeddings(self.run_dir)
        self.item_ids: list[str] = emb["item_id"].to_pylist()
        # item_id -> display name, kept by the walk job (empty: the data has none)
        self.names: dict[str, str] = run_item_names(self.run_dir)
        self._unit = prepare(vectors, "cosine")
        self._context, self._trained = context_candidates(self.run_dir, emb["item_idx"].to_numpy())
        # the walk counts give the popularity prior, computed when first needed
        self._counts = emb.select([c for c in emb.column_names if c == "walk_count"])
        self._bias: torch.Tensor | None = None
        self.unknown: Counter = Counter()
        self.nearest: Counter = Counter()  # numeric values mapped to the nearest trained bucket

    def _bucket(self, field: str, raw: str) -> str | None:
        """The trained bucket label of a numeric field's raw value; None (counted) when it is
        not a number."""
        mapper = self.numeric[field]
        label, exact = mapper.map(raw)
        if label is None and mapper.empty:
            self.unknown[f"{field} (no trained bucket)"] += 1
            log.warning(
                "%s: no trained item has a value of this numeric field: %r ignored", field, raw
            )
        elif label is None:
            self.unknown[f"{field} (not a number)"] += 1
            log.warning("%s value %r is not a number: ignored", field, raw)
        elif not exact:
            self.nearest[field] += 1
            log.warning(
                "%s value %r is outside the trained buckets: mapped to the nearest, %r",
                field,
                raw,
                label,
            )
        return label

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
                    value = ml_rules.spark_trim(value)  # spaces only, as the walk job's ingest
                    if f in self.lowercase:
                        value = value.lower()
                    if f in self.numeric:
                        value = self._bucket(f, value)
                        if value is None:
                            continue
                    idx = self.vocab[f].get(value)
                    if idx is None:
                        self.unknown[f] += 1
                        log.warning("unknown %s value %r: ignored", f, value)
                    elif not self.trained[f][idx]:
                        self.unknown[f"{f} (untrained)"] += 1
                        log.warning(
                            "%s value %r occurs only on items without interactions: "
                            "its embedding was never trained, ignored",
                            f,
                            value,
                        )
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

    def _prior_bias(self) -> torch.Tensor | None:
        if self._bias is None and self.popularity_prior:
            self._bias = popularity_bias(self._counts, self.popularity_prior)
        return self._bias

    def most_similar(
        self,
        vectors: torch.Tensor,
        top_k: int = 10,
        metric: str = "context",
        ids: list[str] | None = None,
    ) -> list[list[Neighbour]]:
        """The top exported items for each row of ``vectors``.

        ``context`` (default): trained items by H·Z plus the popularity prior, the skip-gram
        score of "seen together", as the default neighbour table; ``cosine``: every exported
        item by cosine similarity. ``ids``: the raw id of each row; an exported item is never
        its own neighbour.
        """
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        if metric not in ("context", "cosine"):
            raise ValueError(f"metric must be context or cosine, not {metric!r}")
        own = (
            torch.tensor([self._row.get(i, -1) for i in ids])
            if ids is not None
            else torch.full((len(vectors),), -1)
        )
        # the same exact search as the neighbour table (eges.serving.neighbors), so rows agree
        if metric == "context":
            allowed = self._trained
            idx, scores = exact_topk(
                vectors.float(),
                self._context,
                min(top_k, int(allowed.sum())),
                self_index=own,
                allowed=allowed,
                bias=self._prior_bias(),
            )
        else:
            idx, scores = exact_topk(
                prepare(vectors, "cosine"),
                self._unit,
                min(top_k, self._unit.shape[0]),
                self_index=own,
            )
        return [
            [
                Neighbour(self.item_ids[j], float(s), self.names.get(self.item_ids[j]))
                for s, j in zip(row_s, row_i)
                if s != float("-inf")  # excluded: the item itself, or no candidate left
            ]
            for row_s, row_i in zip(scores.tolist(), idx.tolist())
        ]

    @cached_property
    def _row(self) -> dict[str, int]:
        """Raw id -> row of the export (built on first use)."""
        return {item_id: j for j, item_id in enumerate(self.item_ids)}

    def in_export(self, ids: list[str]) -> list[str]:
        """The ids among ``ids`` that are already items of the run's export."""
        return [i for i in ids if i in self._row]


def read_new_items(
    path: str | Path, fields: list[str], sep: str = "|", delimiter: str = ","
) -> tuple[list[str], list[dict[str, list[str]]]]:
    """Read a CSV of new items (``item_id`` + field columns). Unknown columns are warned about."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"new-items file not found: {path}")
    with path.open(newline="", encoding=ENCODING) as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        if not reader.fieldnames or "item_id" not in reader.fieldnames:
            raise ValueError(
                f"{path}: needs an item_id column; has {reader.fieldnames}"
                + delimiter_hint(path, delimiter)
            )
        extra = [c for c in reader.fieldnames if c != "item_id" and c not in fields]
        if extra:
            log.warning(
                "%s: columns %s are not side-info fields of this run (%s): ignored",
                path,
                extra,
                fields,
            )
        ids, items = [], []
        for row in reader:
            ids.append(ml_rules.spark_trim(row["item_id"] or ""))
            # values trimmed of spaces only, as the walk job trims them (a tab stays: a numeric
            # field's value ignores any white space around the number, see eges.buckets)
            values = {
                f: [ml_rules.spark_trim(v) for v in (row.get(f) or "").split(sep)] for f in fields
            }
            items.append({f: [v for v in vs if v] for f, vs in values.items()})
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(
            f"{path}: {len(duplicates)} item_id(s) occur more than once: "
            f"{', '.join(map(repr, duplicates[:10]))}{' …' if len(duplicates) > 10 else ''} "
            "(give each new item once)"
        )
    return ids, items


def delimiter_hint(path: Path, delimiter: str) -> str:
    """`` (…: pass --delimiter X)`` when the header of ``path`` has the columns of a layout
    (``item_id``, or ``movieId,title,genres``) once split on another delimiter X; else ""."""
    with path.open(newline="", encoding=ENCODING) as fh:
        line = fh.readline()
    for other in OTHER_DELIMITERS:
        if other == delimiter:
            continue
        header = next(csv.reader([line], delimiter=other), [])
        if "item_id" in header or all(c in header for c in MOVIELENS_COLUMNS):
            shown = "'\\t'" if other == "\t" else repr(other)
            return (
                f" (split on {shown} the header has the expected columns: pass --delimiter {shown})"
            )
    return ""


MOVIELENS_COLUMNS = ["movieId", "title", "genres"]  # movies.csv, as the walk job requires


@dataclass
class NewItems:
    """New items read from a file: raw ids, side-info values per field, display names."""

    ids: list[str]
    items: list[dict[str, list[str]]]
    names: list[str | None]
    skipped: list[str]  # rows not read, with the reason (as the walk job would drop them)


def detect_layout(path: str | Path, delimiter: str = ",") -> str:
    """``movielens`` when the header has ``movieId`` and no ``item_id``, else ``simple``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"new-items file not found: {path}")
    with path.open(newline="", encoding=ENCODING) as fh:
        header = next(csv.reader(fh, delimiter=delimiter), [])
    return "movielens" if "movieId" in header and "item_id" not in header else "simple"


def _movielens_rows(
    path: Path, required: list[str], delimiter: str, skipped: list[str]
) -> tuple[list[str], list[dict[str, str]]]:
    """Rows of a MovieLens-style CSV with a canonical movieId; the others go to ``skipped``."""
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    with path.open(newline="", encoding=ENCODING) as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; the header has {header}"
                + delimiter_hint(path, delimiter)
            )
        ids, rows = [], []
        for line, row in enumerate(reader, 2):
            raw = row.get("movieId")
            if None in row or any(v is None for v in row.values()):
                why = "malformed row (wrong number of fields)"
            elif not (raw or "").strip(" "):
                why = "missing movieId"
            elif ml_rules.movie_id(raw) is None:
                why = f"non-integer movieId {raw!r}"
            else:
                ids.append(ml_rules.movie_id(raw))
                rows.append(row)
                continue
            skipped.append(f"{path.name} line {line}: {why}")
    return ids, rows


def read_movielens_items(
    path: str | Path,
    fields: list[str],
    sep: str = "|",
    tags: str | Path | None = None,
    delimiter: str = ",",
) -> NewItems:
    """New items in MovieLens layout (``movieId,title,genres`` [+ ``tags``] and/or a tags file),
    with the walk job's rules; see the module docstring.

    Args:
        path: the movies file.
        fields: side-info fields of the run (genres, year and tags are filled where listed).
        sep: separator of the tags in a ``tags`` column.
        tags: optional file with ``movieId`` and ``tag`` columns, one tag per row.
        delimiter: field delimiter of the files.
    """
    path = Path(path)
    skipped: list[str] = []
    ids, rows = _movielens_rows(path, MOVIELENS_COLUMNS, delimiter, skipped)
    known = {"genres", "year", "tags"}
    missing = [f for f in ("genres", "year") if f not in fields]
    if missing:
        log.warning(
            "%s: the run has no side-info field %s: those values are not used", path, missing
        )
    if rows:
        extra = [c for c in rows[0] if c not in MOVIELENS_COLUMNS and c != "tags"]
        if extra:
            log.warning("%s: columns %s are not read in the movielens layout: ignored", path, extra)
    order: list[str] = []
    values: dict[str, dict[str, list[str]]] = {}
    titles: dict[str, set[str]] = {}
    for item_id, row in zip(ids, rows):
        if item_id not in values:
            order.append(item_id)
            values[item_id] = {"genres": [], "year": [], "tags": []}
            titles[item_id] = set()
        v = values[item_id]
        v["genres"] += ml_rules.genres(row["genres"])
        v["year"] += ml_rules.year(row["title"])
        v["tags"] += (row.get("tags") or "").split(sep) if sep else [row.get("tags") or ""]
        title = (row["title"] or "").strip(" ")
        if title:
            titles[item_id].add(title)
    if tags is not None:
        tag_ids, tag_rows = _movielens_rows(Path(tags), ["movieId", "tag"], delimiter, skipped)
        unmatched = 0
        for item_id, row in zip(tag_ids, tag_rows):
            if item_id in values:
                values[item_id]["tags"].append(row["tag"])
            else:
                unmatched += 1
        if unmatched:
            log.warning("%s: %d tag rows of movies not in %s: ignored", tags, unmatched, path.name)
    for line in skipped:
        log.warning("skipped %s", line)
    items = []
    for item_id in order:
        v = values[item_id]
        merged = {
            "genres": ml_rules.clean(v["genres"]),
            "year": ml_rules.clean(v["year"]),
            "tags": ml_rules.tags(v["tags"]),
        }
        items.append({f: merged[f] for f in fields if f in known})
    names = [min(titles[i]) if titles[i] else None for i in order]
    return NewItems(order, items, names, skipped)


def load_new_items(
    path: str | Path,
    fields: list[str],
    sep: str = "|",
    layout: str = "auto",
    tags: str | Path | None = None,
    delimiter: str = ",",
) -> NewItems:
    """New items in either layout (``auto``: :func:`detect_layout`)."""
    if layout == "auto":
        layout = detect_layout(path, delimiter)
    if layout == "movielens":
        return read_movielens_items(path, fields, sep, tags, delimiter)
    if layout != "simple":
        raise ValueError(f"--layout must be auto, simple or movielens, not {layout!r}")
    if tags is not None:
        raise ValueError("--tags needs the movielens layout (movieId,title,genres)")
    ids, items = read_new_items(path, fields, sep, delimiter)
    return NewItems(ids, items, [None] * len(ids), [])


def check_output(path: str | Path, run_dir: Path, overwrite: bool) -> Path:
    """The ``--output`` file, checked before anything is computed.

    Raises:
        ValueError: the path is in the run's export directory; it exists and ``overwrite`` was
            not given, or it is not a neighbour table (a directory, another file).
    """
    path = Path(path)
    export = (run_dir / EXPORT_DIR).resolve()
    resolved = path.resolve()
    if resolved == export or export in resolved.parents:
        raise ValueError(f"--output {path} is in the run's export directory {export}: refused")
    if path.is_dir():
        raise ValueError(f"--output {path} is a directory: --output names a parquet file")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise ValueError(f"--output {path} exists: pass --overwrite to replace it")
        try:
            names = pq.read_schema(path).names
        except (OSError, pa.ArrowException):
            names = None
        if names not in (NEIGHBORS_SCHEMA.names, NEIGHBORS_NAMES_SCHEMA.names):
            raise ValueError(
                f"--output {path} exists and is not a neighbour table: refusing to replace "
                "it (choose another --output)"
            )
    if not path.parent.is_dir():
        raise ValueError(f"--output {path}: the directory {path.parent} does not exist")
    return path


NAME_WIDTH = 60  # longer display names are cut in the printed lines (not in --output)


def display_width(text: str) -> int:
    """Terminal columns of ``text``: 2 for East Asian wide and full-width characters, 0 for
    combining marks, 1 for the others."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def fit(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns (an ellipsis marks the cut), then padded to
    exactly ``width`` columns."""
    if display_width(text) > width:
        while display_width(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - display_width(text))


def format_neighbours(neighbours: list[Neighbour]) -> list[str]:
    """``rank. id  name  score`` lines (``rank. id  score`` when no neighbour has a name)."""
    if not neighbours:
        return []
    id_width = max(8, *(display_width(n.item_id) for n in neighbours))
    names = [n.name or "" for n in neighbours]
    if not any(names):
        return [
            f"  {rank:>3}. {fit(n.item_id, id_width)}  {n.score:.3f}"
            for rank, n in enumerate(neighbours, 1)
        ]
    width = min(NAME_WIDTH, max(display_width(x) for x in names))
    return [
        f"  {rank:>3}. {fit(n.item_id, id_width)}  {fit(name, width)}  {n.score:.3f}"
        for rank, (n, name) in enumerate(zip(neighbours, names), 1)
    ]


def main(argv: list[str] | None = None) -> int:
    p = parser("embed", __doc__)
    p.add_argument("--run", required=True, help="run directory of eges/train.py")
    p.add_argument(
        "--items",
        required=True,
        help="CSV of new items: item_id + field columns, or movieId,title,genres",
    )
    p.add_argument(
        "--layout",
        choices=["auto", "simple", "movielens"],
        default="auto",
        help="simple: item_id + one column per field; movielens: movieId,title,"
        "genres (+ tags) read with the walk job's rules; auto (default): "
        "movielens when the header has movieId and no item_id",
    )
    p.add_argument("--tags", help="movielens layout: a tags file (movieId,tag; one tag a row)")
    p.add_argument("--delimiter", default=",", help="field delimiter of the CSV files")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--sep", default="|", help="separator of multi-valued fields")
    p.add_argument(
        "--metric",
        choices=["context", "cosine"],
        help="context: trained items by H·Z + the popularity prior; cosine: every exported "
        "item by cosine similarity (default: the run's choice for new items made on "
        "validation by eges evaluate, else its neighbour table's, else context)",
    )
    p.add_argument(
        "--popularity-prior",
        type=float,
        help="context metric only: add this (>= 0) times ln(walk count of the neighbour) to "
        f"H·Z (default: the run's choice for new items, else its neighbour table's, else "
        f"{POPULARITY_PRIOR}; 0: H·Z alone)",
    )
    p.add_argument(
        "--output",
        help="write neighbours as parquet in the schema of the "
        "neighbour table (item_id, neighbor_id, rank, score)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="with --output: replace an existing neighbour table file",
    )
    p.add_argument(
        "--names",
        action="store_true",
        help="with --output: add neighbor_name, as eges neighbors --names does",
    )
    args = p.parse_args(argv)
    setup_logging(level=logging.WARNING)
    try:
        output = check_output(args.output, Path(args.run), args.overwrite) if args.output else None
        served = served_score(args.run, args.metric, args.popularity_prior, use="new_items")
        metric, prior = served.metric, served.prior
        if served.chosen:
            whose = "new items" if served.chosen_for == "new_items" else "its neighbour table"
            print(
                f"serving {score_label(metric, prior)}: the run's choice for {whose} "
                f"({served.chosen})"
                + (  # new items followed nothing in the training sessions
                    "; its co-occurrence term adds nothing to new items"
                    if served.cooccurrence
                    else ""
                ),
                file=sys.stderr,
            )
        emb = Embedder(args.run, prior)
        if served.field_weights:  # new items' choice, over the run's train.cold_weights
            choice_file = Path(args.run) / SERVING_FILE
            emb.model.set_cold_weights(
                served.field_weights, emb.fields, source=f"{choice_file}: new items' field_weights"
            )
            print(
                "new items' side-info field weights: "
                + ", ".join(f"{f} {w:g}" for f, w in served.field_weights.items())
                + f" (the run's choice for new items, {choice_file})",
                file=sys.stderr,
            )
        new = load_new_items(
            args.items, emb.fields, args.sep, args.layout, args.tags, args.delimiter
        )
        if args.names and args.output and not emb.names:
            raise ValueError(
                "--names: the run's walk output has no item names (its layout has "
                "none, or it was written before names were kept)"
            )
        existing = emb.in_export(new.ids)
        if existing:
            log.warning(
                "%d new id(s) are already items of the run's export, embedded again from their "
                "side information alone (never listed as their own neighbour): %s",
                len(existing),
                ", ".join(map(repr, existing[:10])) + (" …" if len(existing) > 10 else ""),
            )
        known, neighbours = [], []
        if new.ids:
            vectors, known = emb.embed(new.items)
            neighbours = emb.most_similar(vectors, args.top_k, metric, new.ids)
    except (FileNotFoundError, ValueError, IncompleteOutputError) as exc:
        return fail(exc)
    rows = []
    for item_id, name, item, ok, nbrs in zip(new.ids, new.names, new.items, known, neighbours):
        desc = "; ".join(f"{f}={'|'.join(v)}" for f, v in item.items() if v)
        label = f"{item_id}  {name}" if name else item_id
        if not ok:
            print(f"{label}: no known side-info value ({desc or 'none given'}): no vector")
            continue
        print(f"{label} ({desc})")
        for line in format_neighbours(nbrs):
            print(line)
        for rank, n in enumerate(nbrs, 1):
            rows.append(
                {
                    "item_id": item_id,
                    "neighbor_id": n.item_id,
                    "rank": rank,
                    "score": n.score,
                    "neighbor_name": n.name,
                }
            )
    if new.skipped:
        print(f"skipped {len(new.skipped)} rows: {'; '.join(new.skipped)}", file=sys.stderr)
    if emb.unknown:
        print(f"ignored unknown values: {dict(emb.unknown)}", file=sys.stderr)
    if emb.nearest:
        print(
            f"numeric values outside the trained buckets, mapped to the nearest: "
            f"{dict(emb.nearest)}",
            file=sys.stderr,
        )
    if output is not None:
        out_schema = NEIGHBORS_NAMES_SCHEMA if args.names else NEIGHBORS_SCHEMA
        if not args.names:
            rows = [{k: v for k, v in r.items() if k != "neighbor_name"} for r in rows]
        with schema.replaced_atomically(output) as tmp:  # a reader never sees a part
            pq.write_table(pa.Table.from_pylist(rows, schema=out_schema), tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
