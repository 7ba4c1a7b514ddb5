"""Numeric side information: Spark's bucket labels equal the plain-Python twin's, quantile
edges come from the catalogue, bad values are counted, and unseen values map to a trained bucket."""

import random

import pytest

from eges.buckets import NumericMapper, NumericSpec, parse_number
from eges.config import Bucket
from eges.pipeline.buckets import bucket_fields


def frame(spark, rows):
    return spark.createDataFrame(rows, "item_id string, price array<string>, year array<string>")


def labels(df, field):
    return {r.item_id: list(r[field]) for r in df.collect()}


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("12", 12.0),
        (" -3.5 ", -3.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("7.", 7.0),
        ("+2", 2.0),
        ("nan", None),
        ("inf", None),
        ("1_000", None),
        ("12d", None),
        ("1,5", None),
        ("", None),
        ("1e400", None),
        ("abc", None),
    ],
)
def test_parse_number(raw, expected):
    assert parse_number(raw) == expected


def test_width_labels_match_python(spark):
    rng = random.Random(3)
    values = (
        [str(rng.randint(1890, 2025)) for _ in range(60)]
        + [f"{rng.uniform(-50, 500):.3f}" for _ in range(60)]
        + ["0", "-0.0", "1e2", "0.7", "0.3", "1.1", "2.5", "\t1994 ", " 12"]  # edges, spaces
        + ["N/A", "1e19", "-9007199254740993", "nan", "twelve"]  # not numbers here
    )
    invalid = sum(parse_number(v) is None for v in values)
    assert invalid == 5
    rows = [(f"i{k}", [v], [v]) for k, v in enumerate(values)]
    for width in (10, 1, 0.25, 2.5, 0.1, 0.001):
        out, info = bucket_fields(frame(spark, rows), {"price": Bucket(width=width)})
        spec = NumericSpec(width=float(width))
        got = labels(out, "price")
        for k, v in enumerate(values):
            x = parse_number(v)
            assert got[f"i{k}"] == ([] if x is None else [spec.label(x)]), (width, v)
        assert info["price"] == {"width": float(width), "invalid_values": invalid}
        assert labels(out, "year") == {f"i{k}": [v] for k, v in enumerate(values)}  # untouched
    decades = NumericSpec(width=10.0)
    assert [decades.label(x) for x in (1994, 2019, 1990, -5)] == ["1990", "2010", "1990", "-10"]
    assert NumericSpec(width=0.25).label(1.3) == "1.25"
    # a value on a bucket's edge starts that bucket (0.7 / 0.1 is 6.999… in floating point)
    tenths = NumericSpec(width=0.1)
    assert [tenths.label(x) for x in (0.7, 0.3, 0.69, -0.1)] == ["0.7", "0.3", "0.6", "-0.1"]


def test_quantile_bins_learned_from_the_catalogue(spark):
    prices = [str(p) for p in range(1, 101)]  # 1..100: quartile edges 26, 51, 76
    rows = [(f"i{p}", [p], []) for p in prices] + [("bad", ["cheap"], []), ("none", [], [])]
    out, info = bucket_fields(frame(spark, rows), {"price": Bucket(bins=4)})
    edges = info["price"]["edges"]
    assert len(edges) == 3 and all(abs(e - q) <= 1 for e, q in zip(edges, (25, 50, 75)))
    assert info["price"]["invalid_values"] == 1
    assert info["price"]["labels"] == NumericSpec(edges=tuple(edges)).labels()
    got = labels(out, "price")
    assert got["bad"] == [] and got["none"] == []
    spec = NumericSpec.from_manifest(info["price"])
    for p in prices:
        assert got[f"i{p}"] == [spec.label(float(p))]
    counts = {}
    for p in prices:
        counts[got[f"i{p}"][0]] = counts.get(got[f"i{p}"][0], 0) + 1
    assert sorted(counts) == sorted(spec.labels()) and all(20 <= c <= 30 for c in counts.values())


def test_ties_give_fewer_distinct_bins(spark):
    rows = [(f"i{k}", ["5"], []) for k in range(30)] + [("j", ["9"], [])]
    _, info = bucket_fields(frame(spark, rows), {"price": Bucket(bins=10)})
    assert info["price"]["edges"] == sorted(set(info["price"]["edges"]))
    assert len(info["price"]["labels"]) == len(info["price"]["edges"]) + 1 <= 3


def test_mapper_nearest_trained_bucket():
    years = NumericMapper(NumericSpec(width=1.0), ["1995", "2001", "2018"])
    assert years.map("2001") == ("2001", True)
    assert years.map("2019") == ("2018", False)  # after the newest trained year
    assert years.map("1900") == ("1995", False)
    assert years.map("1998") == ("1995", False)  # equally far from 1995 and 2001: the lower
    assert years.map("1999") == ("2001", False)
    assert years.map("soon") == (None, False)
    decades = NumericMapper(NumericSpec(width=10.0), ["1990", "2010"])
    assert decades.map("2019") == ("2010", True) and decades.map("2035") == ("2010", False)
    spec = NumericSpec(edges=(10.0, 20.0, 30.0))
    assert spec.labels() == ["<10", "[10, 20)", "[20, 30)", ">=30"]
    price = NumericMapper(spec, ["[10, 20)", ">=30"])  # "<10" and "[20, 30)" never trained
    assert price.map("15") == ("[10, 20)", True)
    assert price.map("1e6") == (">=30", True)
    assert price.map("3") == ("[10, 20)", False)
    assert NumericMapper(spec, []).map("15") == (None, False)
    assert NumericMapper(spec, []).empty and not price.empty


def test_spec_rejects_bad_schemes():
    with pytest.raises(ValueError):
        NumericSpec()
    with pytest.raises(ValueError):
        NumericSpec(width=0.0)
    with pytest.raises(ValueError):
        NumericSpec(width=1e-4)  # below MIN_WIDTH: x / width could overflow 64 bits
    with pytest.raises(ValueError):
        NumericSpec(edges=(2.0, 1.0))


# white space the two sides once read differently (Python's str.strip removed all of it, Spark's
# \s only ASCII), and values whose label depends on digits beyond 9 decimals (Java's %f rounds
# a double's shortest form, Python its exact value)
PARITY_VALUES = [
    "\u00a01994",  # no-break space: white space on both sides
    "1994\u2003",  # em space
    "\u3000 12.5\u2028",
    "\t7 \n",
    "1\u00a0234",  # inside a number: not a number on either side
    "\x1c12",  # str.strip() removes U+001C, which is not White_Space: not a number
    "12\x1f",
    "\u00a0",
    "0.69999999999",  # within 1e-9 widths of an edge
    "6.9999999995",
    "404008299523874.25",  # label k × 0.1 = …874.2 exactly, …874.3 from Java's %.1f
    "839377688863220.2",
    "-830660861759777.8",
    "684920.4462803649",
    "922062.5604792223",
    "0.0000000005",
]
PARITY_WIDTHS = (1, 0.1, 0.25, 0.001, 0.0012345678905, 3.0000000005, 1234.5678901234567)


def test_spark_and_python_read_the_same_strings_alike(spark):
    """The same raw strings through the walk job's Spark path and the Python path of ``eges
    embed`` (parse_number, NumericSpec.label, NumericMapper) give the same number or null and
    the same bucket label."""
    from pyspark.sql import functions as F

    from eges.pipeline.buckets import _number

    rows = [(f"i{k}", [v], []) for k, v in enumerate(PARITY_VALUES)]
    df = frame(spark, rows)
    parsed = {
        r.item_id: r.x
        for r in df.select("item_id", _number(F.col("price")[0]).alias("x")).collect()
    }
    for k, v in enumerate(PARITY_VALUES):
        assert parsed[f"i{k}"] == parse_number(v), repr(v)
    assert parse_number("\u00a01994") == 1994.0 and parse_number("\x1c12") is None
    for width in PARITY_WIDTHS:
        out, info = bucket_fields(df, {"price": Bucket(width=width)})
        spec = NumericSpec(width=float(width))
        got = labels(out, "price")
        mapper = NumericMapper(spec, sorted({lab for labs in got.values() for lab in labs}))
        for k, v in enumerate(PARITY_VALUES):
            x = parse_number(v)
            want = [] if x is None else [spec.label(x)]
            assert got[f"i{k}"] == want, (width, v)
            assert mapper.map(v) == ((want[0], True) if want else (None, False)), (width, v)
        assert info["price"]["invalid_values"] == 4
    assert NumericSpec(width=0.1).label(404008299523874.25) == "404008299523874.2"
    # labels are exact multiples of the width rounded to 9 decimals: 810 × 0.001234568
    assert NumericSpec(width=0.0012345678905).label(1.0) == "1.000000080"
