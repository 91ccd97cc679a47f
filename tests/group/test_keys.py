"""Keys of every type (and composite keys) give exactly one output row per distinct key."""

from __future__ import annotations

import pyarrow as pa
import pytest
from helpers import NAN, assert_lossless, check_convert, levels_of, roundtrip, shuffled, write

from roolog.read.sources import ReadOptions

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
