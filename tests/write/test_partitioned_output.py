"""Partitioned outputs: the partition column lives in the path only (as Spark and write_dataset write it),
explode restores it with its type, partitions keep their own column types, and footers carry the levels."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from helpers import SAMPLE, assert_same_rows, run_cli


def hive_logs(root, tables: dict[str, pa.Table]):
    for name, table in tables.items():
        (root / name).mkdir(parents=True)
        pq.write_table(table, root / name / "p.parquet")
    return root


def with_column(table: pa.Table, name: str, value, type_: pa.DataType) -> pa.Table:
    return table.append_column(name, pa.array([value] * table.num_rows, type_))


def test_hive_partition_column_is_in_the_path_only_and_explode_restores_it(tmp_path):
    day1 = pa.table({"k": [1, 1, 2], "item": [10, 11, 12], "user": ["a", "a", "b"]})
    day2 = pa.table({"k": [3, 3, 3], "item": [13, 14, 15], "user": ["c", "c", "c"]})
    hive = hive_logs(tmp_path / "h", {"ds=20261120": day1, "ds=20261121": day2})
    out = tmp_path / "out"
    assert run_cli("convert", str(hive), "-o", str(out), "--key", "k", "-q").returncode == 0
    for day in ("ds=20261120", "ds=20261121"):
        assert pq.read_schema(out / day / "part-00000.parquet").names == ["k", "item", "user"]
    table = pq.read_table(out)  # pyarrow's hive discovery: one row per request, ds from the path
    assert sorted(table.column("k").to_pylist()) == [1, 2, 3]
    assert sorted(table.column("ds").to_pylist()) == [20261120, 20261120, 20261121]
    proc = run_cli("explode", str(out), "-o", str(tmp_path / "back.parquet"))
    assert proc.returncode == 0, proc.stderr
    expected = pa.concat_tables([with_column(day1, "ds", 20261120, pa.int64()),
                                 with_column(day2, "ds", 20261121, pa.int64())])
    assert_same_rows(expected, pq.read_table(tmp_path / "back.parquet"))
    one = run_cli("explode", str(out / "ds=20261121"), "-o", str(tmp_path / "day2.parquet"))
    assert one.returncode == 0, one.stderr
    assert_same_rows(expected.slice(3), pq.read_table(tmp_path / "day2.parquet"))


def test_partition_by_a_data_column_restores_its_exact_values_and_type(tmp_path):
    table = pq.read_table(os.path.join(SAMPLE, "impressions.parquet"))
    table = table.append_column("day", pc.cast(pc.divide(table.column("request_id"), 500), pa.int16()))
    table = table.append_column("score", pa.array([0.1 + (i % 3) * 1e-17 for i in range(table.num_rows)]))
    pq.write_table(table, tmp_path / "log.parquet")
    out = tmp_path / "out"
    proc = run_cli("convert", str(tmp_path / "log.parquet"), "-o", str(out), "--key", "request_id",
                   "--order-by", "position", "--partition-by", "day", "-q")
    assert proc.returncode == 0, proc.stderr
    days = sorted(f"day={d}" for d in set(table.column("day").to_pylist()))
    assert len(days) > 1 and sorted(n for n in os.listdir(out) if "=" in n) == days
    assert "day" not in pq.read_schema(out / days[0] / "part-00000.parquet").names
    assert run_cli("explode", str(out), "-o", str(tmp_path / "back.parquet")).returncode == 0
    back = pq.read_table(tmp_path / "back.parquet")
    assert back.schema.field("day").type == pa.int16()
    assert_same_rows(table, back)


def test_partitions_with_different_column_types_are_widened_losslessly(tmp_path):
    big = 2**40 + 1
    hive = hive_logs(tmp_path / "h", {
        "ds=1": pa.table({"k": pa.array([1, 1], pa.int32()), "v": pa.array([1, 2], pa.int32())}),
        "ds=2": pa.table({"k": pa.array([2, 2], pa.int64()), "v": pa.array([big, 3], pa.int64())}),
    })
    out = tmp_path / "out"
    assert run_cli("convert", str(hive), "-o", str(out), "--key", "k", "-q").returncode == 0
    assert run_cli("explode", str(out), "-o", str(tmp_path / "back.parquet")).returncode == 0
    back = pq.read_table(tmp_path / "back.parquet")
    assert back.schema.field("v").type == pa.int64() and back.schema.field("k").type == pa.int64()
    assert sorted(back.column("v").to_pylist()) == [1, 2, 3, big]


def test_partitions_whose_types_cannot_be_unified_are_one_line(tmp_path):
    hive = hive_logs(tmp_path / "h", {
        "ds=1": pa.table({"k": [1, 1], "v": pa.array([1.5, 2.5], pa.float64())}),
        "ds=2": pa.table({"k": [2, 2], "v": pa.array([1, 2], pa.decimal128(20, 2))}),
    })
    out = tmp_path / "out"
    assert run_cli("convert", str(hive), "-o", str(out), "--key", "k", "-q").returncode == 0
    proc = run_cli("explode", str(out), "-o", str(tmp_path / "back.parquet"))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "'v'" in proc.stderr and "ds=1" in proc.stderr and "ds=2" in proc.stderr and "decimal" in proc.stderr
    assert not (tmp_path / "back.parquet").exists()


def test_stats_on_an_unfinished_output_says_so(tmp_path):
    out = tmp_path / "out"
    killed = run_cli("convert", os.path.join(SAMPLE, "impressions.parquet"), "-o", str(out), "--key", "request_id",
                     "-q", env={"ROOLOG_FAILPOINT": "write"})
    assert killed.returncode == -9 and not (out / "_manifest.json").exists()
    proc = run_cli("stats", str(out))
    assert proc.returncode == 1 and "unfinished roolog output" in proc.stderr, proc.stderr


def test_each_footer_carries_the_levels(tmp_path):
    out = tmp_path / "out"
    assert run_cli("convert", os.path.join(SAMPLE, "impressions.parquet"), "-o", str(out), "--key", "request_id",
                   "--order-by", "position", "--shards", "2", "-q").returncode == 0
    manifest = json.loads((out / "_manifest.json").read_text())["schema"]
    for shard in ("part-00000.parquet", "part-00001.parquet"):
        footer = json.loads(pq.read_schema(out / shard).metadata[b"roolog"])
        assert footer["key"] == manifest["key"] == ["request_id"] and footer["order_by"] == "position"
        assert footer["request"] == manifest["request"] and footer["impression"] == manifest["impression"]
        assert footer["roolog_version"] and footer["count_column"] is None
        lists = {f.name for f in pq.read_schema(out / shard) if pa.types.is_list(f.type)}
        assert set(footer["impression"]) <= lists
