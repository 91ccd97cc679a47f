"""Adversarial tests: try to break roolog's promises (lossless round trip, one row per key, exact level
inference, clean one-line errors). Tests that expose real bugs are marked xfail(strict=True, reason="BUG: ...")."""

from __future__ import annotations

import collections
import datetime
import decimal
import gzip
import json
import os
import subprocess
import sys
import unicodedata
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_same_rows, canon, roundtrip, run_cli

import roolog
from roolog.errors import RoologError
from roolog.sources import ReadOptions

NAN = float("nan")


# ---- helpers -------------------------------------------------------------------------------------------

def _comparable(table: pa.Table) -> pa.Table:
    """Nanosecond temporal columns as int64, so that to_pylist (no pandas) keeps every bit."""
    for i, f in enumerate(table.schema):
        t = f.type
        if (pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time64(t)) and t.unit == "ns":
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
    return table


def assert_lossless(expected: pa.Table, actual: pa.Table) -> None:
    assert actual.schema.names == expected.schema.names
    for f in expected.schema:
        got = actual.schema.field(f.name).type
        assert got.equals(f.type), f"{f.name}: {got} != {f.type}"
    assert_same_rows(_comparable(expected), _comparable(actual))


def shard_rows(out) -> pa.Table:
    files = sorted(f for f in os.listdir(out) if f.startswith("part-"))
    return pa.concat_tables([pq.read_table(os.path.join(out, f)) for f in files])


def key_tuples(table: pa.Table, key) -> list[tuple]:
    table = _comparable(table)
    cols = [table.column(k).to_pylist() for k in key]
    return [tuple(canon(c[i]) for c in cols) for i in range(table.num_rows)]


def expected_request_level(table: pa.Table, key) -> set[str]:
    """Independent reference: a column is request-level iff it holds one value (bit-exact) per request."""
    keys = key_tuples(table, key)
    table = _comparable(table)
    out = set()
    for name in table.column_names:
        if name in key:
            continue
        seen: dict[tuple, set] = {}
        for k, v in zip(keys, table.column(name).to_pylist(), strict=True):
            seen.setdefault(k, set()).add(canon(v))
        if all(len(s) == 1 for s in seen.values()):
            out.add(name)
    return out


def levels_of(report) -> dict[str, str]:
    return {c["name"]: c["level"] for c in report["columns"]}


def write(table: pa.Table, path, row_group_size=None):
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def shuffled(table: pa.Table, seed: int) -> pa.Table:
    return table.take(pa.array(np.random.default_rng(seed).permutation(table.num_rows)))


def check_convert(tmp_path, table: pa.Table, key=("k",), row_group_size=None, **options):
    """Convert + explode through Parquet; asserts losslessness and one row per distinct key. Returns report."""
    os.makedirs(tmp_path, exist_ok=True)
    path = write(table, tmp_path / "in.parquet", row_group_size)
    reference = pq.read_table(path)  # what the reader hands roolog (e.g. date64 is stored as date32)
    report, back = roundtrip([path], tmp_path / "out", key=tuple(key), **options)
    assert_lossless(reference, back)
    rows = shard_rows(tmp_path / "out")
    out_keys = key_tuples(rows, key)
    distinct = set(key_tuples(reference, key))
    assert len(out_keys) == len(set(out_keys)) == len(distinct), "exactly one output row per distinct key"
    assert set(out_keys) == distinct
    assert report["totals"]["requests"] == len(distinct)
    assert report["totals"]["rows"] == reference.num_rows
    assert {n for n, lvl in levels_of(report).items() if lvl == "request"} == expected_request_level(reference, key)
    return report


# ---- lossless round trip for tricky types ----------------------------------------------------------------

K6 = [1, 1, 2, 2, 2, 3]  # requests of sizes 2, 3, 1


def _ts(values, unit, tz=None):
    return pa.array(values, pa.timestamp(unit, tz=tz))


D = decimal.Decimal
TYPE_CASES = {
    # name: (request-level values (constant per request), impression-level values) over K6
    "timestamp_us_tz": (_ts([5, 5, -7, -7, -7, None], "us", "Asia/Kolkata"),
                        _ts([5, 6, -7, None, 8, 9], "us", "America/New_York")),
    "timestamp_ns_utc": (_ts([1_000_000_001] * 2 + [-3] * 3 + [2**62], "ns", "UTC"),
                         _ts([1_000_000_001, 1_000_000_002, -3, -3, None, 0], "ns", "+05:30")),
    "timestamp_s_naive": (_ts([0, 0, 1, 1, 1, 2], "s"), _ts([0, 1, 1, 1, 2, None], "s")),
    "date32": (pa.array([0, 0, -1, -1, -1, 20000], pa.date32()), pa.array([0, 1, None, -1, -1, 5], pa.date32())),
    "date64": (pa.array([86400000] * 2 + [0] * 3 + [None], pa.date64()),
               pa.array([86400000, 0, 0, None, 0, 0], pa.date64())),
    "time64_ns": (pa.array([1, 1, 2, 2, 2, 3], pa.time64("ns")), pa.array([1, 2, 2, 2, 3, None], pa.time64("ns"))),
    "duration_ms": (pa.array([-1, -1, 2, 2, 2, 3], pa.duration("ms")), pa.array([1, 2, 2, 2, 3, 3], pa.duration("ms"))),
    "decimal128": (pa.array([D("1.10")] * 2 + [D("-0.01")] * 3 + [None], pa.decimal128(38, 2)),
                   pa.array([D("1.10"), D("1.11"), None, D("0.00"), D("-0.00"), D("9" * 36 + ".99")],
                            pa.decimal128(38, 2))),
    "decimal256": (pa.array([D("1e50")] * 2 + [D("0")] * 3 + [D("-1")], pa.decimal256(60, 0)),
                   pa.array([D("1e50"), D("2e50"), D("0"), D("0"), D("1"), None], pa.decimal256(60, 0))),
    "large_string": (pa.array(["", "", None, None, None, "\u00e9\U0001F600"], pa.large_string()),
                     pa.array(["", None, "a", "a", "", "\x00"], pa.large_string())),
    "binary": (pa.array([b"\x00\xff", b"\x00\xff", b"", b"", b"", None]),
               pa.array([b"\x00", b"\x00\x00", b"", None, b"", b"\xff"])),
    "large_binary": (pa.array([b"x", b"x", None, None, None, b""], pa.large_binary()),
                     pa.array([b"x", b"y", None, b"", b"", b""], pa.large_binary())),
    "fixed_size_binary": (pa.array([b"abc", b"abc", b"\x00\x00\x00", b"\x00\x00\x00", b"\x00\x00\x00", None],
                                   pa.binary(3)),
                          pa.array([b"abc", b"abd", None, b"abc", b"abc", b"zzz"], pa.binary(3))),
    "dictionary_string": (pa.array(["DE", "DE", "FR", "FR", "FR", None]).dictionary_encode(),
                          pa.array(["DE", "FR", "FR", None, "DE", "DE"]).dictionary_encode()),
    "bool_with_nulls": (pa.array([None, None, False, False, False, True]),
                        pa.array([True, None, False, None, None, None])),
    "float64_signed_zero_nan": (pa.array([-0.0, -0.0, NAN, NAN, NAN, 0.0]), pa.array([0.0, -0.0, NAN, 1.0, NAN, None])),
    "float32": (pa.array([1.5, 1.5, -0.0, -0.0, -0.0, None], pa.float32()),
                pa.array([1.5, None, -0.0, 0.0, 0.0, 1.0], pa.float32())),
    "float16": (pa.array(np.array([1, 1, -0.0, -0.0, -0.0, 2], np.float16)),
                pa.array(np.array([1, 2, -0.0, 0.0, 0.0, 2], np.float16))),
    "uint64_big": (pa.array([2**64 - 1] * 2 + [2**63] * 3 + [0], pa.uint64()),
                   pa.array([2**64 - 1, 2**63, 2**63 + 1, 2**63 + 1, 0, None], pa.uint64())),
    "int8_extremes": (pa.array([-128, -128, 127, 127, 127, None], pa.int8()),
                      pa.array([-128, 127, 0, 0, None, 1], pa.int8())),
    "null_type": (pa.nulls(6), None),
    "list_int_with_nulls": (pa.array([[1, None], [1, None], [], [], [], None]),
                            pa.array([[1, None], [1], [], None, [], [None]])),
    "list_of_float_bits": (pa.array([[-0.0, NAN]] * 2 + [[0.0]] * 3 + [[]]),
                           pa.array([[-0.0, NAN], [0.0, NAN], [0.0], [0.0], [-0.0], []])),
    "large_list": (pa.array([[1, 2]] * 2 + [None] * 3 + [[]], pa.large_list(pa.int32())),
                   pa.array([[1, 2], [2, 1], None, [], [], [3]], pa.large_list(pa.int32()))),
    "fixed_size_list": (pa.array([[1, 2]] * 2 + [[3, 4]] * 3 + [None], pa.list_(pa.int16(), 2)),
                        pa.array([[1, 2], [2, 1], [3, 4], [3, 4], None, [0, 0]], pa.list_(pa.int16(), 2))),
    "list_of_strings": (pa.array([["a", None, ""]] * 2 + [[""]] * 3 + [None]),
                        pa.array([["a", None, ""], ["a", "", None], [""], [None], [], None])),
    "list_of_lists_of_structs": (
        pa.array([[{"a": [1, 2], "b": None}]] * 2 + [[{"a": None, "b": "x"}, None]] * 3 + [[]]),
        pa.array([[{"a": [1, 2], "b": None}], [{"a": [1, 2], "b": ""}], [{"a": None, "b": "x"}, None],
                  [{"a": [], "b": "x"}, None], [None], None])),
    "struct_nested": (
        pa.array([{"x": -0.0, "y": ["a"]}] * 2 + [None] * 3 + [{"x": None, "y": None}]),
        pa.array([{"x": -0.0, "y": ["a"]}, {"x": 0.0, "y": ["a"]}, None, {"x": None, "y": None},
                  {"x": None, "y": []}, {"x": 1.0, "y": None}])),
    "map": (pa.array([[("a", 1)]] * 2 + [[]] * 3 + [None], pa.map_(pa.string(), pa.int64())),
            pa.array([[("a", 1)], [("a", 2)], [], None, [("a", None)], [("b", 1), ("a", 1)]],
                     pa.map_(pa.string(), pa.int64()))),
}


@pytest.mark.parametrize("name", sorted(TYPE_CASES))
@pytest.mark.parametrize("layout", ["contiguous", "shuffled_tiny_batches"])
def test_type_round_trips_with_exact_levels(tmp_path, name, layout):
    request_values, impression_values = TYPE_CASES[name]
    cols = {"k": pa.array(K6, pa.int64()), "req": request_values, "seq": pa.array(range(6), pa.int64())}
    if impression_values is not None:
        cols["imp"] = impression_values
    table = pa.table(cols)
    options = {}
    if layout == "shuffled_tiny_batches":
        table = shuffled(table, 7)
        options = dict(row_group_size=1, read=ReadOptions(batch_bytes=1), shards=2, memory_limit=4096)
    report = check_convert(tmp_path, table, **options)
    levels = levels_of(report)
    assert levels["req"] == "request"
    if impression_values is not None:
        assert levels["imp"] == "impression"
    # the shards keep request-level columns at their own type and impression-level columns as list<type>
    read_back = pq.read_schema(tmp_path / "in.parquet")
    shard_schema = pq.read_schema(tmp_path / "out" / "part-00000.parquet")
    assert shard_schema.field("req").type.equals(read_back.field("req").type)
    imp = "imp" if impression_values is not None else "seq"
    assert shard_schema.field(imp).type.value_type.equals(read_back.field(imp).type)


def test_list_of_dictionary_in_one_row_group(tmp_path):
    t = pa.list_(pa.dictionary(pa.int32(), pa.string()))
    table = pa.table({"k": K6, "req": pa.array([["a"]] * 2 + [["b", "a"]] * 3 + [None], t),
                      "imp": pa.array([["a"], ["b"], ["b", "a"], None, [], ["a"]], t)})
    report = check_convert(tmp_path, table)
    assert levels_of(report)["req"] == "request" and levels_of(report)["imp"] == "impression"


def test_dictionary_column_with_a_different_dictionary_per_file(tmp_path):
    a = pa.table({"k": [1, 1, 2], "v": pa.array(["x", "y", "x"]).dictionary_encode()})
    b = pa.table({"k": [3, 3, 4], "v": pa.array(["z", "w", "q"]).dictionary_encode()})
    write(a, tmp_path / "a.parquet")
    write(b, tmp_path / "b.parquet")
    report, back = roundtrip([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "out", key=("k",))
    assert report["totals"]["requests"] == 4
    assert_lossless(pa.concat_tables([pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")]),
                    back)


def test_dictionary_column_with_a_different_dictionary_per_row_group(tmp_path):
    table = pa.Table.from_batches([
        pa.record_batch({"k": [1, 1], "v": pa.array(["x", "y"]).dictionary_encode()}),
        pa.record_batch({"k": [2, 2], "v": pa.array(["p", "q"]).dictionary_encode()})])
    check_convert(tmp_path, table, row_group_size=2)


def test_unicode_and_very_long_strings(tmp_path):
    long_a = "\u00e9" * 300_000
    long_b = "x" * 700_000 + "\U0001F600"
    nfc, nfd = unicodedata.normalize("NFC", "caf\u00e9"), unicodedata.normalize("NFD", "caf\u00e9")
    table = pa.table({
        "k": [1, 1, 2, 2, 3, 3],
        "hist": [long_a, long_a, long_b, long_b, "", ""],  # request-level, huge
        "text": [nfc, nfd, long_a, long_a + "!", None, ""],  # NFC vs NFD differ; "" vs null differ
        "rtl": ["\u05e9\u05dc\u05d5\u05dd"] * 6,
    })
    report = check_convert(tmp_path, shuffled(table, 3), row_group_size=1, read=ReadOptions(batch_bytes=1000))
    assert levels_of(report) == {"k": "key", "hist": "request", "text": "impression", "rtl": "request"}


def test_empty_strings_are_not_nulls(tmp_path):
    table = pa.table({"k": [1, 1, 2, 2], "a": ["", None, "", ""], "b": [None, None, "", ""],
                      "l": pa.array([[], None, [], []], pa.list_(pa.int64()))})
    report = check_convert(tmp_path, table)
    assert levels_of(report)["a"] == "impression" and levels_of(report)["b"] == "request"
    assert levels_of(report)["l"] == "impression"
    rows = {r["k"]: r for r in shard_rows(tmp_path / "out").to_pylist()}
    assert rows[1]["a"] == ["", None] and rows[2]["b"] == ""


def test_zero_row_input_round_trips(tmp_path):
    table = pa.table({"k": pa.array([], pa.int64()), "v": pa.array([], pa.list_(pa.string())),
                      "t": pa.array([], pa.timestamp("ms", tz="UTC"))})
    path = write(table, tmp_path / "in.parquet")
    report, back = roundtrip([path], tmp_path / "out", key=("k",))
    assert report["totals"]["requests"] == 0
    assert_lossless(table, back)


def test_request_with_one_impression_everywhere(tmp_path):
    n = 50
    table = pa.table({"k": pa.array(np.arange(n)[::-1].copy()), "v": pa.array(np.arange(n) * 1.5),
                      "s": [f"s{i}" for i in range(n)]})
    report = check_convert(tmp_path, table, shards=3)
    assert set(levels_of(report).values()) == {"key", "request"}  # one value in every request
    assert report["impressions_per_request"]["max"] == 1


def test_all_rows_one_request_cut_in_many_batches(tmp_path):
    n = 5000
    table = pa.table({"k": pa.array(["only"] * n), "item": pa.array(np.arange(n)),
                      "user": pa.array([42] * n), "flip": pa.array([i == n - 1 for i in range(n)])})
    report = check_convert(tmp_path, table, row_group_size=700, read=ReadOptions(batch_bytes=2000),
                           memory_limit=4096)
    assert levels_of(report) == {"k": "key", "item": "impression", "user": "request", "flip": "impression"}
    rows = shard_rows(tmp_path / "out")
    assert rows.num_rows == 1
    assert rows.column("item")[0].as_py() == list(range(n))  # input order kept across carried pieces


# ---- keys ----------------------------------------------------------------------------------------------

def _keyed(keys, key_type=None, seed=0):
    keys = pa.array(keys, key_type) if key_type is not None else pa.array(keys)
    n = len(keys)
    return shuffled(pa.table({"k": keys, "seq": pa.array(range(n), pa.int64()),
                              "v": pa.array([i % 3 for i in range(n)], pa.int8())}), seed)


KEY_CASES = {
    "uint64_above_2_63": ([2**63, 2**63 + 1, 2**64 - 1, 0, 1, 2**63 - 1] * 4, pa.uint64()),
    "int64_extremes": ([-(2**63), 2**63 - 1, 0, -1] * 4, pa.int64()),
    "int8_negative": ([-128, 127, -1, 0] * 4, pa.int8()),
    "string_unicode_empty": (["", " ", "\u00e9", "e\u0301", "\U0001F600", "a\x00b", "A"] * 3, pa.string()),
    "string_that_look_alike": (["1", "01", "1.0", " 1", "1 "] * 3, pa.string()),
    "large_string": (["a", "b", "", "\u00e9"] * 4, pa.large_string()),
    "binary": ([b"", b"\x00", b"\x00\x00", b"\xff"] * 4, pa.binary()),
    "bool": ([True, False] * 6, pa.bool_()),
    "timestamp_tz": ([0, 1, -1, 2**40] * 4, pa.timestamp("us", tz="Europe/Berlin")),
    "duration": ([0, 1, -1] * 4, pa.duration("s")),
    "float_plain": ([1.5, -2.0, 3.25, 1e300] * 4, pa.float64()),
}


@pytest.mark.parametrize("name", sorted(KEY_CASES))
def test_key_types_one_row_per_key(tmp_path, name):
    keys, key_type = KEY_CASES[name]
    check_convert(tmp_path, _keyed(keys, key_type), row_group_size=3, read=ReadOptions(batch_bytes=1),
                  shards=3, memory_limit=4096)


def test_date32_key(tmp_path):
    check_convert(tmp_path, _keyed([0, 1, 19000, -5] * 3, pa.date32()))


def test_time32_key(tmp_path):
    check_convert(tmp_path, _keyed([0, 1000, 86_399_000] * 3, pa.time32("ms")))


def test_time64_key(tmp_path):
    check_convert(tmp_path, _keyed([0, 1000, 86_399_000] * 3, pa.time64("us")))


def test_dictionary_key_scattered(tmp_path):
    check_convert(tmp_path, _keyed(["b", "a", "c"] * 4).set_column(
        0, "k", _keyed(["b", "a", "c"] * 4).column("k").dictionary_encode()))


def test_dictionary_key_contiguous_across_row_groups(tmp_path):
    table = pa.table({"k": pa.array(["a", "a", "b", "b", "b", "c", "d", "d"]).dictionary_encode(),
                      "v": list(range(8))})
    check_convert(tmp_path, table, row_group_size=2, read=ReadOptions(batch_bytes=1))


def test_float_keys_signed_zero_scattered(tmp_path):
    table = pa.table({"k": pa.array([0.0, -0.0, 0.0, -0.0, 1.0, 0.0]), "v": list(range(6))})
    check_convert(tmp_path, table)


def test_float_keys_nan_scattered(tmp_path):
    table = pa.table({"k": pa.array([NAN, 1.0, NAN, 2.0, NAN, 1.0]), "v": list(range(6))})
    check_convert(tmp_path, table, shards=2)


def test_composite_key_where_one_part_repeats(tmp_path):
    rows = [(s, step) for s in ("sess-a", "sess-b", "") for step in (0, 1, 2)]
    rows = [r for r in rows for _ in range(3)]  # 3 impressions each
    table = pa.table({"session": [r[0] for r in rows], "step": pa.array([r[1] for r in rows], pa.int32()),
                      "user": [{"sess-a": 1, "sess-b": 2, "": 3}[r[0]] for r in rows],  # request-level
                      "item": list(range(len(rows)))})
    for seed, layout in enumerate([table, shuffled(table, 1)]):
        sub = layout.slice(0)
        report = check_convert(tmp_path / str(seed), sub, key=("session", "step"), row_group_size=4,
                               read=ReadOptions(batch_bytes=1), shards=2, memory_limit=4096)
        assert report["totals"]["requests"] == 9


def test_composite_key_parts_that_could_concatenate_alike(tmp_path):
    table = pa.table({"a": ["ab", "a", "ab", "a", "", "abc"], "b": ["c", "bc", "c", "bc", "abc", ""],
                      "v": list(range(6))})
    report = check_convert(tmp_path, table, key=("a", "b"))
    assert report["totals"]["requests"] == 4


def test_composite_uint64_and_bool_key(tmp_path):
    keys = [(2**64 - 1, True), (2**64 - 1, False), (2**63, True), (2**63, True)] * 3
    table = shuffled(pa.table({"a": pa.array([k[0] for k in keys], pa.uint64()),
                               "b": pa.array([k[1] for k in keys]), "v": list(range(len(keys)))}), 2)
    report = check_convert(tmp_path, table, key=("a", "b"), read=ReadOptions(batch_bytes=1), shards=3)
    assert report["totals"]["requests"] == 3


def test_same_keys_in_int32_and_int64_files_are_one_request(tmp_path):
    a = pa.table({"k": pa.array([1, 1, 2], pa.int32()), "v": [1, 2, 3]})
    b = pa.table({"k": pa.array([2, 1, 3], pa.int64()), "v": [4, 5, 6]})
    write(a, tmp_path / "a.parquet")
    write(b, tmp_path / "b.parquet")
    report, back = roundtrip([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "out", key=("k",))
    assert report["totals"]["requests"] == 3
    assert back.schema.field("k").type == pa.int64()
    assert sorted(zip(back.column("k").to_pylist(), back.column("v").to_pylist(), strict=True)) == [
        (1, 1), (1, 2), (1, 5), (2, 3), (2, 4), (3, 6)]


def test_request_split_across_files_and_columns_in_another_order(tmp_path):
    a = pa.table({"k": [1, 1, 2], "u": ["x", "x", "y"], "v": [1, 2, 3]})
    b = pa.table({"v": [4, 5, 6], "k": [2, 2, 3], "u": ["y", "y", "z"]})
    write(a, tmp_path / "a.parquet")
    write(b, tmp_path / "b.parquet")
    report, back = roundtrip([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "out", key=("k",))
    assert report["totals"]["requests"] == 3 and levels_of(report)["u"] == "request"
    assert_lossless(pa.concat_tables([a, b.select(["k", "u", "v"])]), back)


# ---- one row per key whatever the order, batch size, shards, memory limit -------------------------------

def _log(n_requests=120, seed=0, composite=False):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, n_requests)
    req = np.repeat(np.arange(n_requests), sizes)
    n = len(req)
    pos = rng.integers(0, 4, n).astype(object)
    pos[rng.random(n) < 0.1] = None
    f = rng.choice(np.array([0.0, -0.0, NAN, 1.5]), n)
    cols = {
        "k1": pa.array([int(r) % 7 if composite else int(r) * 2**57 % 2**63 + 2**63 for r in req], pa.uint64()),
        "seq": pa.array(np.arange(n)),
        "pos": pa.array(pos.tolist(), pa.int16()),
        "user": pa.array((req * 31 % 11).tolist(), pa.int64()),
        "hist": pa.array([[int(r), int(r) + 1] for r in req], pa.list_(pa.int64())),
        "f": pa.array(f),
        "s": pa.array([None if x % 5 == 0 else f"s{x % 3}" for x in rng.integers(0, 100, n)]),
    }
    if composite:
        cols["k2"] = pa.array([f"r{r // 7}" for r in req])
    return pa.table(cols)


GROUPING_CONFIGS = [
    # (seed, batch_bytes, row_group_size, shards, memory_limit, composite)
    (0, 32 << 20, None, 1, 1 << 30, False),
    (1, 2000, 50, 3, 64 << 10, False),
    (2, 300, 17, 2, 4096, True),
    (3, 1, 5, 4, 16 << 10, False),
    (4, 700, 1000, 5, 1 << 20, True),
]


@pytest.mark.parametrize("seed,batch_bytes,row_group_size,shards,memory_limit,composite", GROUPING_CONFIGS)
@pytest.mark.parametrize("order_by", [None, "pos"])
def test_one_row_per_key_any_order(tmp_path, seed, batch_bytes, row_group_size, shards, memory_limit, composite,
                                   order_by):
    log = _log(60 if batch_bytes == 1 else 120, seed, composite)
    table = shuffled(log, seed)
    key = ("k1", "k2") if composite else ("k1",)
    report = check_convert(tmp_path, table, key=key, row_group_size=row_group_size, order_by=order_by,
                           read=ReadOptions(batch_bytes=batch_bytes), shards=shards, memory_limit=memory_limit)
    assert report["totals"]["shards"] == shards
    rows = shard_rows(tmp_path / "out").to_pylist()
    # reference order: input order, or stable by `pos` with nulls last
    seq_of = collections.defaultdict(list)
    input_rows = table.to_pylist()
    for i, r in enumerate(input_rows):
        seq_of[tuple(r[c] for c in key)].append(i)
    for r in rows:
        idx = seq_of[tuple(r[c] for c in key)]
        if order_by:
            idx = sorted(idx, key=lambda i: (input_rows[i]["pos"] is None, input_rows[i]["pos"] or 0))
        assert r["seq"] == [input_rows[i]["seq"] for i in idx]
        n = len(r["seq"])
        for c in ("pos", "f", "s"):
            if isinstance(r[c], list):
                assert len(r[c]) == n


def test_shards_hold_disjoint_keys_and_every_shard_file_is_listed(tmp_path):
    table = shuffled(_log(100, 9), 9)
    check_convert(tmp_path, table, key=("k1",), shards=7, read=ReadOptions(batch_bytes=500), memory_limit=4096)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert [s["file"] for s in manifest["shards"]] == [f"part-{i:05d}.parquet" for i in range(7)]
    seen = set()
    for s in manifest["shards"]:
        keys = set(pq.read_table(tmp_path / "out" / s["file"], columns=["k1"]).column(0).to_pylist())
        assert not keys & seen
        seen |= keys
        assert pq.ParquetFile(tmp_path / "out" / s["file"]).metadata.num_rows == s["requests"]


def test_one_huge_request_with_a_small_memory_limit_and_few_file_descriptors(tmp_path):
    n = 60_000
    path = write(pa.table({"k": np.zeros(n, dtype=np.int64), "item": np.arange(n)}), tmp_path / "one.parquet")
    out = tmp_path / "out"
    exe = os.path.join(os.path.dirname(sys.executable), "roolog")
    proc = subprocess.run(["bash", "-c", f"ulimit -n 64 && exec {exe} convert {path} -o {out} --key k "
                           "--memory-limit 8KB -q"], capture_output=True, text=True)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert shard_rows(out).num_rows == 1


# ---- level inference ----------------------------------------------------------------------------------

def _inference_table():
    # 4 requests; each column is built so that exactly one rule decides its level
    k = [1, 1, 1, 2, 2, 3, 4, 4]
    return pa.table({
        "k": k,
        "const": [7, 7, 7, 8, 8, 9, 10, 10],
        "all_null_in_request": pa.array([None, None, None, 1, 1, None, 2, 2], pa.int64()),
        "null_vs_value": pa.array([1, None, 1, 2, 2, 3, 4, 4], pa.int64()),
        "neg_zero": [0.0, 0.0, 0.0, 1.0, 1.0, 2.0, -0.0, 0.0],
        "neg_zero_consistent": [-0.0, -0.0, -0.0, 0.0, 0.0, -0.0, 0.0, 0.0],
        "nan_everywhere": [NAN, NAN, NAN, 1.0, 1.0, NAN, NAN, NAN],
        "nan_vs_number": [NAN, NAN, NAN, 1.0, 1.0, NAN, NAN, 0.0],
        "empty_vs_null": ["", "", "", "x", "x", "", None, ""],
        "varies_in_last_request_only": [1, 1, 1, 2, 2, 3, 4, 5],
        "list_neg_zero": pa.array([[0.0]] * 3 + [[1.0]] * 2 + [[]] + [[-0.0], [0.0]]),
        "list_empty_vs_null": pa.array([[], [], [], None, None, [], None, []], pa.list_(pa.int64())),
        "struct_const": pa.array([{"a": NAN, "b": None}] * 3 + [{"a": -0.0, "b": "x"}] * 2 + [None] * 3),
        "bool_null_vs_false": pa.array([False, False, False, None, None, True, None, False]),
        "decimal_scale_zero": pa.array([D("0.00"), D("-0.00"), D("0.00")] + [D("1.00")] * 5, pa.decimal128(5, 2)),
    })


EXPECTED_INFERENCE = {
    "const": "request", "all_null_in_request": "request", "null_vs_value": "impression",
    "neg_zero": "impression", "neg_zero_consistent": "request", "nan_everywhere": "request",
    "nan_vs_number": "impression", "empty_vs_null": "impression", "varies_in_last_request_only": "impression",
    "list_neg_zero": "impression", "list_empty_vs_null": "impression", "struct_const": "request",
    "bool_null_vs_false": "impression",
    # Decimal -0.00 and 0.00 are the same decimal value (Arrow keeps no sign bit for zero)
    "decimal_scale_zero": "request",
}


@pytest.mark.parametrize("layout", ["contiguous", "reversed", "shuffled_one_row_batches"])
def test_inferred_levels_are_exact(tmp_path, layout):
    table = _inference_table()
    options = {}
    if layout == "reversed":
        table = table.take(pa.array(np.arange(table.num_rows)[::-1].copy()))
    elif layout == "shuffled_one_row_batches":
        table = shuffled(table, 12)
        options = dict(row_group_size=1, read=ReadOptions(batch_bytes=1), shards=3, memory_limit=4096)
    report = check_convert(tmp_path, table, **options)
    got = levels_of(report)
    assert {c: got[c] for c in EXPECTED_INFERENCE} == EXPECTED_INFERENCE


def test_column_that_varies_only_between_scattered_pieces_of_one_request(tmp_path):
    # Request 1's rows are far apart; `u` is constant inside each piece but not across them.
    table = pa.table({"k": [1, 1] + list(range(100, 140)) + [1, 1],
                      "u": ["a", "a"] + ["z"] * 40 + ["b", "b"],
                      "w": ["c", "c"] + [str(i) for i in range(40)] + ["c", "c"]})
    report = check_convert(tmp_path, table, read=ReadOptions(batch_bytes=64), memory_limit=4096, shards=2)
    assert levels_of(report)["u"] == "impression"
    assert levels_of(report)["w"] == "request"


def test_column_demoted_late_expands_already_spilled_requests(tmp_path):
    # `late` is constant for the first 300 requests (spilled as one value each), then varies once.
    k = np.repeat(np.arange(301), 2)
    late = np.repeat(np.arange(301), 2).astype(np.int64)
    late[-1] = -1
    table = pa.table({"k": k, "late": late, "item": np.arange(len(k))})
    report = check_convert(tmp_path, table, read=ReadOptions(batch_bytes=256), shards=2)
    assert levels_of(report)["late"] == "impression"
    assert pq.read_schema(tmp_path / "out" / "part-00001.parquet").field("late").type == pa.list_(pa.int64())


# ---- bad input: exit 1 or 2, one line 'roolog: error: ', no traceback, no manifest ------------------------

def fails_cleanly(proc, out, codes=(1, 2)):
    assert proc.returncode in codes, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("roolog: error: "), lines[0]
    assert not os.path.exists(os.path.join(out, "_manifest.json"))
    return lines[0]


def convert_cli(out, *args):
    return run_cli("convert", *map(str, args), "-o", str(out), "-q")


@pytest.fixture
def good_parquet(tmp_path):
    return write(pa.table({"rid": [1, 1, 2], "v": [1, 2, 3], "l": pa.array([[1], [2], [3]])}),
                 tmp_path / "good.parquet")


def _csv_bytes(n=3000) -> bytes:
    return b"rid,v\n" + b"".join(b"%d,%d\n" % (i // 3, i) for i in range(n))


BAD_FILES = {
    "garbage.parquet": lambda: np.random.default_rng(0).bytes(4096),
    "tiny.parquet": lambda: b"PAR1",
    "truncated.csv.gz": lambda: gzip.compress(_csv_bytes())[:200],
    "truncated_tail.csv.gz": lambda: gzip.compress(_csv_bytes())[:-5],
    "plain.csv.zst": _csv_bytes,
    "plain.parquet.zst": lambda: b"PAR1" + b"\x00" * 50 + b"PAR1",
    "notgzip.jsonl.gz": lambda: b'{"rid": 1}\n',
    "notjson.jsonl": lambda: b'{"rid": 1, "v": 2}\nthis is not json\n{"rid": 2, "v": 3}\n',
    "halfjson.jsonl": lambda: b'{"rid": 1, "v": 2}\n{"rid": 1, "v": \n',
    "header_only.csv": lambda: b"rid,v\n",
    "header_only_no_newline.csv": lambda: b"rid,v",
    "empty.jsonl": lambda: b"",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_input_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name]())
    out = tmp_path / "out"
    msg = fails_cleanly(convert_cli(out, path, "--key", "rid"), out)
    if name != "header_only.csv":  # a header-only CSV is reported by its (null-typed) key column
        assert str(path) in msg
    assert not os.path.exists(out)  # a failed first run leaves no folder behind


SCHEMAS = {
    "malformed": b'key = ["rid"\nrequest = \n',
    "listed_twice": b'key = ["rid"]\nrequest = ["v", "l"]\nimpression = ["v"]\n',
    "listed_twice_same_list": b'key = ["rid"]\nimpression = ["v", "l", "l"]\n',
    "key_also_request": b'key = ["rid"]\nrequest = ["rid", "l"]\nimpression = ["v"]\n',
    "duplicate_toml_key": b'key = ["rid"]\nkey = ["rid"]\nimpression = ["v", "l"]\n',
    "wrong_types": b'key = ["rid"]\nrequest = [1]\nimpression = ["v", "l"]\n',
    "unknown_setting": b'key = ["rid"]\nimpresion = ["v", "l"]\n',
    "missing_column": b'key = ["rid"]\nimpression = ["v"]\n',
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_bad_schema_files(tmp_path, good_parquet, name):
    schema = tmp_path / "s.toml"
    schema.write_bytes(SCHEMAS[name])
    out = tmp_path / "out"
    msg = fails_cleanly(convert_cli(out, good_parquet, "--schema", schema), out)
    assert str(schema) in msg


def test_schema_file_not_utf8(tmp_path, good_parquet):
    schema = tmp_path / "s.toml"
    schema.write_bytes(b'key = ["rid"]\nimpression = ["v", "l", "\xff"]\n')
    fails_cleanly(convert_cli(tmp_path / "out", good_parquet, "--schema", schema), tmp_path / "out")


@pytest.mark.parametrize("args,needle", [
    (("--key", "l"), "'l'"),
    (("--key", "nope"), "'nope'"),
    (("--key", "rid", "--order-by", "missing"), "'missing'"),
    (("--key", "rid", "--order-by", "rid"), "'rid'"),
    (("--key", "rid", "--order-by", "l"), "less"),  # a list cannot be ordered
    (("--key", "rid", "--on-conflict", "explode"), None),
])
def test_bad_options(tmp_path, good_parquet, args, needle):
    out = tmp_path / "out"
    proc = convert_cli(out, good_parquet, *args)
    if needle is None:  # Click's own usage errors: exit 2, no traceback, no output
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert not os.path.exists(out / "_manifest.json")
        return
    assert needle in fails_cleanly(proc, out)


def test_multi_character_delimiter(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(_csv_bytes(10))
    fails_cleanly(convert_cli(tmp_path / "out", path, "--key", "rid", "--delimiter", ";;"), tmp_path / "out")


def test_csv_with_duplicate_column_names(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"rid,v,v\n1,2,3\n1,4,5\n")
    fails_cleanly(convert_cli(tmp_path / "out", path, "--key", "rid"), tmp_path / "out")


@pytest.mark.parametrize("name", ["__roolog_n", "__roolog_impressions"])
def test_input_column_named_like_an_internal_column_is_refused(tmp_path, name):
    path = write(pa.table({"rid": [1, 1, 2], name: [5, 5, 7]}), tmp_path / "x.parquet")
    proc = convert_cli(tmp_path / "out", path, "--key", "rid")
    fails_cleanly(proc, tmp_path / "out")
    assert "reserved" in proc.stderr


def test_jsonl_field_first_seen_after_the_first_block_is_an_error_not_dropped(tmp_path):
    path = tmp_path / "x.jsonl"
    lines = [json.dumps({"rid": i // 3, "v": i}) for i in range(3000)] + [json.dumps({"rid": 9999, "v": 1, "x": 2})]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(roolog.errors.RoologError) as err:
        roolog.convert([str(path)], str(tmp_path / "out"), key=("rid",), progress=False,
                       read=ReadOptions(batch_bytes=4096))
    assert str(path) in str(err.value)
    assert not os.path.exists(tmp_path / "out")


def test_explode_with_a_manifest_missing_fields(tmp_path, good_parquet):
    out = tmp_path / "out"
    roolog.convert([str(good_parquet)], str(out), key=("rid",), progress=False)
    (out / "_manifest.json").write_text("{}")
    proc = run_cli("explode", str(out), "-o", str(tmp_path / "back.parquet"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("roolog: error: ")


def test_explode_with_a_corrupt_shard_fails_cleanly_and_writes_nothing(tmp_path, good_parquet):
    out = tmp_path / "out"
    roolog.convert([str(good_parquet)], str(out), key=("rid",), progress=False)
    (out / "part-00000.parquet").write_bytes(b"not parquet at all" * 10)
    target = tmp_path / "back.parquet"
    proc = run_cli("explode", str(out), "-o", str(target))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("roolog: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists(target) and not any(n.startswith("back.parquet.tmp") for n in os.listdir(tmp_path))


# ---- types beyond the common ones ---------------------------------------------------------------------------

def test_string_view_column_is_refused_cleanly(tmp_path):
    """Arrow has no take kernel for string_view yet: roolog says so in one line instead of crashing."""
    table = pa.table({"k": [1, 1, 2, 2, 3], "s": pa.array(["a", "a", "b", "c", None], pa.string_view())})
    with pytest.raises(RoologError, match="'s' has type string_view"):
        check_convert(tmp_path, table, row_group_size=1, read=ReadOptions(batch_bytes=1))


def test_uuid_extension_column(tmp_path):
    u = [uuid.UUID(int=i).bytes for i in (1, 1, 2, 3, 4)]
    check_convert(tmp_path, pa.table({"k": [1, 1, 2, 2, 3], "u": pa.array(u, pa.uuid())}))


def test_report_and_manifest_agree_with_the_data(tmp_path):
    table = shuffled(_log(80, 5, composite=True), 5)
    report = check_convert(tmp_path, table, key=("k1", "k2"), shards=3, read=ReadOptions(batch_bytes=1000))
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["totals"]["requests"] == report["totals"]["requests"]
    assert manifest["totals"]["impressions"] == table.num_rows
    read_back = pq.read_schema(tmp_path / "in.parquet")
    assert manifest["schema"]["columns"] == [{"name": f.name, "type": str(f.type)} for f in read_back]
    sizes = collections.Counter(key_tuples(table, ("k1", "k2"))).values()
    assert report["impressions_per_request"]["max"] == max(sizes)
    assert report["impressions_per_request"]["min"] == min(sizes)


def test_timestamps_as_dates_keep_their_timezone_through_explode(tmp_path):
    t = datetime.datetime(2024, 3, 31, 1, 30, tzinfo=datetime.timezone.utc)
    table = pa.table({"k": [1, 1, 2], "t": pa.array([t, t, t], pa.timestamp("ms", tz="Europe/Berlin"))})
    check_convert(tmp_path, table)
    back = pq.read_table(str(tmp_path / "out") + ".exploded.parquet")
    assert back.schema.field("t").type.tz == "Europe/Berlin"


# ---- declared schemas over scattered input -----------------------------------------------------------------

def _scattered_conflict(tmp_path):
    # request 1's `country` is constant inside each piece but differs across its two far-apart pieces
    table = pa.table({"rid": [1, 1] + list(range(10, 40)) + [1],
                      "country": ["DE", "DE"] + ["FR"] * 30 + ["IT"],
                      "user": [7, 7] + list(range(30)) + [7],
                      "item": list(range(33))})
    path = write(table, tmp_path / "in.parquet", row_group_size=4)
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["rid"]\nrequest = ["country", "user"]\nimpression = ["item"]\n')
    return table, path, schema


def test_declared_request_column_varying_across_scattered_pieces_is_caught(tmp_path):
    _, path, schema = _scattered_conflict(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("convert", str(path), "-o", str(out), "--schema", str(schema), "--memory-limit", "64KB", "-q")
    msg = fails_cleanly(proc, out, codes=(1,))
    assert "'country'" in msg and "rid=1" in msg


def test_declared_request_column_demoted_across_scattered_pieces_round_trips(tmp_path):
    table, path, schema = _scattered_conflict(tmp_path)
    report, back = roundtrip([path], tmp_path / "out", schema_file=str(schema), on_conflict="demote",
                             read=ReadOptions(batch_bytes=64), memory_limit=64 << 10, shards=2)
    assert report["demoted"] == ["country"]
    assert levels_of(report)["user"] == "request"
    assert_lossless(table, back)
    rows = {r["rid"]: r for r in shard_rows(tmp_path / "out").to_pylist()}
    assert rows[1]["country"] == ["DE", "DE", "IT"] and rows[1]["item"] == [0, 1, 32]


def test_drop_null_keys_with_scattered_rows(tmp_path):
    table = pa.table({"k": pa.array([1, None, 2, 1, None, 2, 3], pa.int64()), "v": list(range(7))})
    path = write(table, tmp_path / "in.parquet", row_group_size=2)
    report, back = roundtrip([path], tmp_path / "out", key=("k",), drop_null_keys=True,
                             read=ReadOptions(batch_bytes=1))
    assert report["null_key_rows_dropped"] == 2 and report["totals"]["requests"] == 3
    assert_lossless(table.filter(pa.array([True, False, True, True, False, True, True])), back)


def test_csv_empty_strings_and_null_values_round_trip(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('rid,s,n\n1,"",NA\n1,x,1\n2,NA,NA\n2,NA,NA\n3,"a,b","2"\n')
    from roolog.sources import open_source

    read = ReadOptions(null_values=("NA",))
    with open_source([str(path)], read) as source:
        reference = pa.Table.from_batches([sb.batch for sb in source.batches()], schema=source.schema)
    assert reference.column("s").to_pylist() == ["", "x", None, None, "a,b"]
    report, back = roundtrip([path], tmp_path / "out", key=("rid",), read=read)
    assert_lossless(reference, back)
    assert levels_of(report)["s"] == "impression" and report["totals"]["requests"] == 3
