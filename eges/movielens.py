"""The MovieLens ingest rules, shared by the walk job and the serving side.

The walk job (``eges/pipeline/ingest.py``) applies these rules to ``movies.csv`` and
``tags.csv`` as Spark column expressions; ``eges embed`` applies them in plain Python
to new items handed over in the same layout, so that a new movie gets exactly the side-info
values the walk job would have given it. The constants are the single definition both use.

Shared module: imports neither pyspark nor torch.
"""

from __future__ import annotations

import re

GENRE_SEP = "|"  # movies.csv genres: "Comedy|Drama"
NO_GENRE = "(no genres listed)"  # the genres value meaning "none"
# the year of a title: a trailing "(YYYY)", white space after it allowed (ASCII digits and
# white space, as Java's regex reads \d and \s, so both sides agree)
YEAR_PATTERN = r"\(([0-9]{4})\)\s*$"
_YEAR = re.compile(YEAR_PATTERN, re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+")


def spark_trim(value: str) -> str:
    """Spark's ``trim``: strips spaces (U+0020) only, not tabs or other white space."""
    return value.strip(" ")


def clean(values: list[str]) -> list[str]:
    """Trimmed, non-empty, de-duplicated and sorted, as ingest's ``clean_values``."""
    return sorted({spark_trim(v) for v in values if v is not None and spark_trim(v)})


def genres(text: str | None) -> list[str]:
    """A movies.csv ``genres`` cell: split on '|'; "(no genres listed)" means none."""
    return [g for g in clean((text or "").split(GENRE_SEP)) if g != NO_GENRE]


def year(title: str | None) -> list[str]:
    """The year of a title's trailing "(YYYY)", as a list of at most one value."""
    match = _YEAR.search(title or "")
    return [match.group(1)] if match else []


def tags(values: list[str]) -> list[str]:
    """Tags of one movie: lower-cased, stripped, de-duplicated (sorted)."""
    return clean([spark_trim(v).lower() for v in values if v is not None])


def movie_id(text: str | None) -> str | None:
    """A movieId as ingest canonicalises it (" 007" -> "7"); None when it is not an integer."""
    text = spark_trim(text or "")
    return str(int(text)) if _INTEGER.fullmatch(text) else None
