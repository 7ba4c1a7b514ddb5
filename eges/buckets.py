"""Numeric side information (year, price, duration, age) as buckets, so unseen values still map.

A numeric field's vocabulary holds bucket labels, not raw values:

* **width** buckets: ``floor(x / width) * width``, labelled by that lower bound (width 10 makes
  decades of years: 1994 -> ``"1990"``; width 1 keeps each whole year: ``"1994"``).
* **quantile** bins: ``bins`` bins whose edges are the catalogue's quantiles, learned by the walk
  job and stored in its manifest (``side_info_fields[i].numeric.edges``); labels ``"<9.99"``,
  ``"[9.99, 25)"``, ``">=120"``.

A value is a plain decimal number (``12``, ``-3.5``, ``1e3``); anything else is not a number and
is ignored (counted by the walk job, reported by ``eges embed``). At serving time a new
item's value whose bucket no trained item carries — a year after the newest one, a price above
every bin of a width scheme — maps to the **nearest** trained bucket.

The Spark side (:mod:`eges.pipeline.buckets`) computes the same labels; this module is their
plain-Python twin and imports neither pyspark nor torch. Both follow one rule, so a raw string
gives the same bucket, number or null on either side:

* **white space**: the characters with Unicode's White_Space property (:data:`WHITE_SPACE`:
  ASCII tab to carriage return, space, U+0085, no-break space U+00A0, U+1680, U+2000–U+200A,
  U+2028, U+2029, U+202F, U+205F, U+3000) around a number are ignored; inside one (``1 234``
  with a no-break space) the value is not a number. Other characters that Python's
  ``str.strip`` would remove (U+001C–U+001F) are not white space here. Values of fields that are
  not numeric are trimmed of spaces (U+0020) only, as the walk job's ingest does.
* **parsing**: the text, correctly rounded to a 64-bit float (Python's ``float``, Java's
  ``Double.parseDouble``).
* **width buckets**: the bucket is ``k = floor(x / width + 1e-9)`` in 64-bit floating point
  (:data:`EDGE_NUDGE`), its label ``k × W`` computed exactly in decimal, where ``W`` is the
  width's shortest decimal form rounded half-up to at most 9 decimals, written with ``W``'s
  decimals (never a float formatted with ``%f``, whose last digits Java and Python round
  differently).
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

# characters with Unicode's White_Space property: ignored around a numeric value on both sides
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# a plain decimal number: what both sides accept (no "nan", "inf", "1_000", "12d", "1,5")
NUMBER_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_NUMBER = re.compile(NUMBER_PATTERN)
# |x| below this (2^53, where doubles stop holding every integer) or it is not a number here:
# the walk job's bucket arithmetic (x / width as a 64-bit integer) cannot overflow
MAX_ABS = float(2**53)
# added to x / width before the floor, so that a value on a bucket's edge (0.7 with width 0.1,
# 0.7 / 0.1 = 6.9999…) lands in the bucket it starts; the same on both sides
EDGE_NUDGE = 1e-9
# the smallest width: with |x| < MAX_ABS, x / width stays a 64-bit integer
MIN_WIDTH = 1e-3


def parse_number(raw: str) -> float | None:
    """A side-info value as a number, or None when it is not a plain decimal number below
    :data:`MAX_ABS` in magnitude (surrounding :data:`WHITE_SPACE` is ignored)."""
    raw = raw.strip(WHITE_SPACE)
    if not _NUMBER.match(raw):
        return None
    x = float(raw)
    return x if abs(x) < MAX_ABS else None


def width_decimals(width: float) -> int | None:
    """Decimals of a width's labels: None for a whole width (labels are integers), else the
    decimals of its shortest form (0.25 -> 2; a width is at least MIN_WIDTH, so never in
    exponent form), at most 9."""
    if float(width).is_integer():
        return None
    return min(9, len(repr(float(width)).split(".")[1]))


def label_width(width: float) -> Decimal:
    """``W``, the width the labels of a decimal width are multiples of: its shortest decimal
    form, rounded half-up to :func:`width_decimals` decimals (the width itself when it has at
    most 9)."""
    d = width_decimals(width)
    if d is None:
        raise ValueError(f"a whole width's labels are integers: {width!r}")
    return Decimal(repr(float(width))).quantize(Decimal(1).scaleb(-d), rounding=ROUND_HALF_UP)


def width_label(k: int, width: float) -> str:
    """The label of width bucket ``k``: ``k × width`` for a whole width, else ``k ×``
    :func:`label_width` computed exactly and written with its decimals."""
    if width_decimals(width) is None:
        return str(k * int(width))
    with localcontext() as ctx:
        ctx.prec = 60  # |k × W| < 2^53 + W: about 26 digits, exact
        return format(Decimal(k) * label_width(width), "f")


def format_edge(x: float) -> str:
    """A quantile edge as text: whole numbers without a decimal point, others in shortest form."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


@dataclass(frozen=True)
class NumericSpec:
    """How one numeric field maps values to bucket labels (exactly one of the two is set)."""

    width: float | None = None
    edges: tuple[float, ...] | None = None  # sorted, distinct: len(edges) + 1 bins

    def __post_init__(self) -> None:
        if (self.width is None) == (self.edges is None):
            raise ValueError("a numeric field has either a width or quantile edges")
        if self.width is not None and not (MIN_WIDTH <= self.width < MAX_ABS):
            raise ValueError(f"bucket width must be in [{MIN_WIDTH:g}, 2^53), got {self.width!r}")
        if self.edges is not None and list(self.edges) != sorted(set(self.edges)):
            raise ValueError(f"quantile edges must be sorted and distinct: {self.edges}")

    # ---- manifest form
    def to_manifest(self) -> dict[str, Any]:
        if self.width is not None:
            return {"width": self.width}
        return {"edges": list(self.edges), "labels": self.labels()}

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> NumericSpec:
        if entry.get("width") is not None:
            return cls(width=float(entry["width"]))
        return cls(edges=tuple(float(e) for e in entry["edges"]))

    # ---- labels
    def labels(self) -> list[str]:
        """The bins' labels in order (quantile bins only)."""
        if self.edges is None:
            raise ValueError("width buckets have no fixed list of labels")
        e = [format_edge(x) for x in self.edges]
        if not e:
            return ["all"]
        return [f"<{e[0]}"] + [f"[{a}, {b})" for a, b in zip(e, e[1:])] + [f">={e[-1]}"]

    def key(self, x: float) -> float:
        """The bucket's position on the number line: its lower bound (width) or bin number."""
        if self.width is not None:
            return float(self.label(x))  # the label's number: equal for equal labels
        return float(bisect.bisect_right(self.edges, x))

    def label(self, x: float) -> str:
        """The label of the bucket holding ``x`` (the walk job writes the same)."""
        if self.width is not None:
            return width_label(math.floor(x / self.width + EDGE_NUDGE), self.width)
        return self.labels()[bisect.bisect_right(self.edges, x)]

    def label_key(self, label: str) -> float | None:
        """The position of a label written by :meth:`label` (None: not one of them)."""
        if self.width is not None:
            return parse_number(label)
        try:
            return float(self.labels().index(label))
        except ValueError:
            return None


class NumericMapper:
    """Maps raw values of one numeric field to the labels of buckets that trained items carry.

    Args:
        spec: the field's bucket scheme.
        known: the labels that may be returned (the trained buckets).
    """

    def __init__(self, spec: NumericSpec, known: list[str]) -> None:
        self.spec = spec
        keyed = sorted((k, lab) for lab in known if (k := spec.label_key(lab)) is not None)
        self._keys = [k for k, _ in keyed]
        self._labels = [lab for _, lab in keyed]

    @property
    def empty(self) -> bool:
        """No trained item carries a bucket of this field (every value was invalid)."""
        return not self._keys

    def map(self, raw: str) -> tuple[str | None, bool]:
        """(label, exact): the bucket of ``raw``, or the nearest trained one (exact False);
        (None, False) when ``raw`` is not a number or no bucket is trained (:attr:`empty`)."""
        x = parse_number(raw)
        if x is None or not self._keys:
            return None, False
        key = self.spec.key(x)
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return self._labels[i], True
        # nearest trained bucket; a tie goes to the lower one
        near = [j for j in (i - 1, i) if 0 <= j < len(self._keys)]
        best = min(near, key=lambda j: (abs(self._keys[j] - key), j))
        return self._labels[best], False
