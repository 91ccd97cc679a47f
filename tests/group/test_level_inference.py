"""Level inference is exact (bit-exact per request, whatever the layout), and declared schemas hold over
requests whose rows are scattered through the input."""

from __future__ import annotations

import decimal
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import (
    LTR,
    NAN,
    SAMPLE,
    assert_lossless,
    check_convert,
    fails_cleanly,
    levels_of,
    roundtrip,
    run_cli,
    shard_rows,
    shuffled,
    write,
)

import roolog
from roolog.read.sources import ReadOptions

D = decimal.Decimal


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
    from roolog.read.sources import open_source

    read = ReadOptions(null_values=("NA",))
    with open_source([str(path)], read) as source:
        reference = pa.Table.from_batches([sb.batch for sb in source.batches()], schema=source.schema)
    assert reference.column("s").to_pylist() == ["", "x", None, None, "a,b"]
    report, back = roundtrip([path], tmp_path / "out", key=("rid",), read=read)
    assert_lossless(reference, back)
    assert levels_of(report)["s"] == "impression" and report["totals"]["requests"] == 3


def test_labels_are_recorded_as_infer_schema_suggests_them(tmp_path, shared_datasets):
    """Without a schema file, convert records as labels the impression-level integer or boolean columns
    named like a target that hold only 0 and 1, which is what infer-schema suggests; never a graded, a
    float or a request-level one."""
    def labels(out) -> list[str]:
        return json.loads((out / "_manifest.json").read_text())["schema"]["labels"]

    roolog.convert([os.path.join(SAMPLE, "impressions.parquet")], str(tmp_path / "s"), key=["request_id"],
                   progress=False)
    assert labels(tmp_path / "s") == ["click"]
    suggested = run_cli("infer-schema", os.path.join(SAMPLE, "impressions.parquet"), "--key", "request_id")
    assert 'labels = ["click"]' in suggested.stdout
    roolog.convert([os.path.join(LTR, "rank_train.csv")], str(tmp_path / "ltr"), key=["query_id"],
                   progress=False)
    assert labels(tmp_path / "ltr") == []  # `label` there is graded 0..4
    table = pa.table({"r": [1, 1, 2, 2], "booked": [True, False, None, False], "click_prob": [0.0, 1.0, 1.0, 0.0],
                      "is_click": [0, 2, 1, 0], "target_user": [1, 1, 0, 0], "purchase": [0, 1, 1, 1]})
    pq.write_table(table, tmp_path / "t.parquet")
    roolog.convert([str(tmp_path / "t.parquet")], str(tmp_path / "t"), key=["r"], progress=False)
    assert labels(tmp_path / "t") == ["booked", "purchase"]  # not a float, a 2, or a request-level column
