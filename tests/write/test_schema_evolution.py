"""Partitions whose columns differ - a column added or dropped on some day, as cron-fed tables evolve - are
read under one schema: explode, RequestDataset, train and the documented readers give every column, null
where a partition lacks it; a --schema naming a column some partitions lack is accepted for them."""

from __future__ import annotations

import glob
import os

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, run_cli

import roolog

SAMPLE_PARQUET = os.path.join(SAMPLE, "impressions.parquet")


@pytest.fixture(scope="module")
def evolved(tmp_path_factory):
    """The sample as two days: day 1 has user_id and no `discount`; day 2 lost user_id and gained
    `discount` (impression-level) and `app_version` (request-level). Returns (log folder, OUT, expected)."""
    root = tmp_path_factory.mktemp("evolved")
    table = pq.read_table(SAMPLE_PARQUET)
    ids = sorted(set(table.column("request_id").to_pylist()))
    day1 = table.filter(pc.less(table["request_id"], ids[len(ids) // 2]))
    day2 = table.filter(pc.greater_equal(table["request_id"], ids[len(ids) // 2])).drop_columns(["user_id"])
    day2 = day2.append_column("discount", pc.multiply(day2["price"], 0.5))
    day2 = day2.append_column("app_version", pc.cast(pc.bit_wise_and(day2["request_id"], 0), pa.int32()))
    for name, t in (("ds=1", day1), ("ds=2", day2)):
        (root / "log" / name).mkdir(parents=True)
        pq.write_table(t, root / "log" / name / "part.parquet")
    schema = root / "schema.toml"
    schema.write_text('key = ["request_id"]\norder_by = "position"\nlabels = ["click"]\n'
                      'request = ["user_id", "country", "device", "request_time", "user_history_item_ids", '
                      '"app_version", "ds"]\nimpression = ["position", "item_id", "price", "click", "discount"]\n')
    out = root / "out"
    proc = run_cli("convert", str(root / "log"), "-o", str(out), "--schema", str(schema), "-q")
    assert proc.returncode == 0, proc.stderr
    expected = pa.concat_tables([day1.append_column("ds", pa.array([1] * day1.num_rows)),
                                 day2.append_column("ds", pa.array([2] * day2.num_rows))], promote_options="default")
    return root, out, expected


def canonical(table: pa.Table, columns) -> list[tuple]:
    t = table.select(columns)
    return sorted(zip(*(t.column(c).to_pylist() for c in columns), strict=True), key=repr)


COLUMNS = ["request_id", "user_id", "position", "item_id", "price", "discount", "app_version", "ds"]


def test_convert_without_a_schema_file_and_explode_give_every_column(evolved, tmp_path):
    root, _, expected = evolved
    out = tmp_path / "inferred"
    assert run_cli("convert", str(root / "log"), "-o", str(out), "--key", "request_id", "-q").returncode == 0
    roolog.explode(str(out), str(tmp_path / "x.parquet"))
    back = pq.read_table(tmp_path / "x.parquet")
    assert set(back.column_names) == set(expected.column_names)
    assert canonical(back, COLUMNS) == canonical(expected, COLUMNS)


def test_explode_of_the_declared_output_is_exact(evolved, tmp_path):
    _, out, expected = evolved
    roolog.explode(str(out), str(tmp_path / "x.parquet"))
    back = pq.read_table(tmp_path / "x.parquet")
    assert back.schema.field("discount").type == pa.float64() and back.schema.field("user_id").type == pa.int64()
    assert canonical(back, expected.column_names) == canonical(expected, expected.column_names)


def test_request_dataset_reads_absent_columns_as_null(evolved):
    from roolog.data import RequestDataset

    _, out, expected = evolved
    data = RequestDataset(str(out), batch_requests=10_000)
    assert "discount" in data.features.impression_dense and "user_id" in data.features.request_ids
    batches = list(data)
    impressions = sum(b.impressions for b in batches)
    assert impressions == expected.num_rows
    discount = pa.array([v for b in batches for v in b.impression_dense["discount"].tolist()])
    assert pc.sum(pc.is_nan(discount)).as_py() == pc.sum(expected["discount"].is_null()).as_py()
    users = sum(int((b.request_ids["user_id"].lengths == 0).sum()) for b in batches)
    assert users == len(set(expected.filter(expected["user_id"].is_null()).column("request_id").to_pylist()))


def test_train_runs_on_an_evolved_output(evolved):
    _, out, _ = evolved
    proc = run_cli("train", str(out), "--label", "click", "--epochs", "1", "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr


def test_the_documented_readers_give_the_union_of_columns(evolved):
    _, out, _ = evolved
    files = sorted(glob.glob(f"{out}/*=*/*.parquet"))
    # pyarrow: one schema unified from every shard's
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    table = pads.dataset(str(out), schema=schema, format="parquet", partitioning="hive").to_table()
    assert {"user_id", "discount", "app_version"} <= set(table.column_names) and table.num_rows == 2000
    # polars: each file scanned, concatenated by name
    frame = pl.concat([pl.scan_parquet(f) for f in files], how="diagonal_relaxed").collect()
    assert {"user_id", "discount", "app_version"} <= set(frame.columns) and frame.height == 2000
    # DuckDB: union_by_name
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{out}/*=*/*.parquet', hive_partitioning = true, "
                     "union_by_name = true)")
    assert {"user_id", "discount", "app_version", "ds"} <= set(rel.columns) and len(rel.fetchall()) == 2000


@pytest.mark.spark
def test_spark_merge_schema_gives_the_union_of_columns(evolved):
    from roolog.run.spark import spark_session

    _, out, _ = evolved
    spark = spark_session("local[1]")
    try:
        frame = spark.read.option("mergeSchema", "true").parquet(str(out))
        assert {"user_id", "discount", "app_version", "ds"} <= set(frame.columns) and frame.count() == 2000
    finally:
        spark.stop()


def test_a_schema_file_column_a_flat_input_lacks_is_still_an_error(evolved, tmp_path):
    root, _, _ = evolved
    schema = tmp_path / "s.toml"
    schema.write_text((root / "schema.toml").read_text().replace('"discount"]', '"discount", "typo"]'))
    proc = run_cli("convert", str(SAMPLE_PARQUET), "-o", str(tmp_path / "o"), "--schema", str(schema), "-q")
    assert proc.returncode == 2 and "'" in proc.stderr and "not in the input" in proc.stderr


def test_a_schema_file_column_that_no_partition_has_is_a_warning(evolved, tmp_path):
    root, _, _ = evolved
    schema = tmp_path / "s.toml"
    schema.write_text((root / "schema.toml").read_text().replace('"discount"]', '"discount", "dicsount"]'))
    proc = run_cli("convert", str(root / "log"), "-o", str(tmp_path / "o"), "--schema", str(schema))
    assert proc.returncode == 0, proc.stderr
    assert "['dicsount'] that no partition has" in proc.stderr
    assert "that no partition has" not in run_cli("convert", str(root / "log"), "-o", str(tmp_path / "o2"),
                                                  "--schema", str(root / "schema.toml")).stderr
