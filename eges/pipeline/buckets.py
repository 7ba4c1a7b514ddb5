"""Numeric side-information fields -> bucket labels on the Spark side (as :mod:`eges.buckets`).

Runs on the catalogue after ingest and before the vocabularies are built: a numeric field's
values are replaced by their bucket labels, values that are not numbers are dropped and counted,
and quantile edges are learned from the catalogue's values. The rule that both sides follow
(white space, parsing, labels) is in :mod:`eges.buckets`' docstring.
"""

from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from eges.buckets import (
    EDGE_NUDGE,
    MAX_ABS,
    MIN_WIDTH,
    NUMBER_PATTERN,
    WHITE_SPACE,
    NumericSpec,
    label_width,
    width_decimals,
)
from eges.config import Bucket
from eges.pipeline.ingest import clean_values, col

log = logging.getLogger(__name__)

# relative error of the quantile edges (approxQuantile): exact below ~10k distinct values
QUANTILE_ERROR = 1e-4
# WHITE_SPACE as a Java regex character class (\uXXXX escapes); \z: the very end of the text
_SPACE = "[" + "".join(f"\\u{ord(c):04x}" for c in WHITE_SPACE) + "]"
_AROUND = rf"^{_SPACE}+|{_SPACE}+\z"


def _number(v: Column) -> Column:
    """A value as a double; null when it is not a plain decimal number below MAX_ABS (the
    WHITE_SPACE around it ignored, as :func:`eges.buckets.parse_number`)."""
    v = F.regexp_replace(v, _AROUND, "")
    x = v.try_cast("double")
    return F.when(v.rlike(NUMBER_PATTERN) & (F.abs(x) < F.lit(MAX_ABS)), x)


def _width_label(x: Column, width: float) -> Column:
    """As :func:`eges.buckets.width_label`: k × W in exact decimal arithmetic, never a double
    formatted by Java (which rounds its shortest form, not its exact value)."""
    k = F.floor(x / F.lit(width) + F.lit(EDGE_NUDGE))
    if width_decimals(width) is None:
        return (k * F.lit(int(width))).cast("string")
    w = label_width(width)
    # |k| <= MAX_ABS / width + 1: its digits plus W's stay within a decimal's 38, so exact
    digits = len(str(int(MAX_ABS / max(width, MIN_WIDTH)) + 2))
    return (k.cast(f"decimal({digits},0)") * F.lit(w)).cast("string")


def _quantile_label(x: Column, spec: NumericSpec) -> Column:
    edges = (
        F.array(*[F.lit(e) for e in spec.edges]) if spec.edges else F.array().cast("array<double>")
    )
    position = F.size(F.filter(edges, lambda e: e <= x))  # bisect_right
    label = F.element_at(F.array(*[F.lit(lab) for lab in spec.labels()]), position + 1)
    return F.when(x.isNotNull(), label)


def _labeller(spec: NumericSpec):
    """value -> label column function for F.transform (one argument: no index)."""

    def label(v: Column) -> Column:
        x = _number(v)
        return _width_label(x, spec.width) if spec.width is not None else _quantile_label(x, spec)

    return label


def learn_spec(side_info: DataFrame, field: str, bucket: Bucket) -> NumericSpec:
    """The bucket scheme of one field: its width, or quantile edges learned from its values."""
    if bucket.width is not None:
        return NumericSpec(width=float(bucket.width))
    values = side_info.select(F.explode(col(field)).alias("v")).select(
        _number(F.col("v")).alias("x")
    )
    probs = [i / bucket.bins for i in range(1, bucket.bins)]
    edges = values.na.drop().approxQuantile("x", probs, QUANTILE_ERROR)
    return NumericSpec(edges=tuple(sorted(set(edges))))


def bucket_fields(
    side_info: DataFrame, buckets: dict[str, Bucket]
) -> tuple[DataFrame, dict[str, dict]]:
    """Replace the values of each numeric field by its bucket labels.

    Args:
        side_info: ``item_id`` + array<string> fields (one row per item).
        buckets: field -> its bucket config; other fields are left as they are.

    Returns:
        (the side info with labels, field -> manifest entry: the scheme (``width``, or
        ``edges`` + ``labels``) and ``invalid_values``, the values dropped as not numbers).
    """
    if not buckets:
        return side_info, {}
    specs = {f: learn_spec(side_info, f, b) for f, b in buckets.items()}
    invalid = side_info.agg(
        *[
            F.sum(F.size(F.filter(col(f), lambda v: _number(v).isNull()))).alias(f"_{i}")
            for i, f in enumerate(specs)
        ]
    ).first()
    out: dict[str, dict] = {}
    labelled = {}
    for i, (f, spec) in enumerate(specs.items()):
        out[f] = {**spec.to_manifest(), "invalid_values": int(invalid[i] or 0)}
        if out[f]["invalid_values"]:
            log.warning(
                "%s: %d values are not numbers and were ignored", f, out[f]["invalid_values"]
            )
        labelled[f] = clean_values(F.transform(col(f), _labeller(spec))).alias(f)
    return side_info.select(*[labelled.get(c, col(c)) for c in side_info.columns]), out
