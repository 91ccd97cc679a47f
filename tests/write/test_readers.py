"""OUT is a dataset the common readers open as README's "Reading the output" says: one row per request, and
the SQL there turns request rows back into the input's impressions. Each output also holds the temp folder
of a run killed mid-way, which no reader may pick up."""

from __future__ import annotations

import os

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, assert_same_rows, run_cli

SAMPLE_PARQUET = os.path.join(SAMPLE, "impressions.parquet")
REQUEST = ["request_id", "user_id", "country", "device", "request_time", "user_history_item_ids"]
IMPRESSION = ["position", "item_id", "price", "click"]


def _with_a_killed_run(args: list[str]) -> None:
    assert run_cli("convert", *args, "-q").returncode == 0
    killed = run_cli("convert", *args, "--force", "-q", env={"ROOLOG_FAILPOINT": "write"})
    assert killed.returncode == -9  # its temp folder, with a built shard, stays until the next run


@pytest.fixture(scope="module")
def sample():
    return pq.read_table(SAMPLE_PARQUET)


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    out = tmp_path_factory.mktemp("readers") / "flat"
    _with_a_killed_run([SAMPLE_PARQUET, "-o", str(out), "--key", "request_id", "--order-by", "position",
                        "--shards", "3"])
    assert any(n.startswith(".roolog-tmp") for n in os.listdir(out))
    return str(out)


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory, sample):
    """The sample split into two days of hive folders ds=1/ and ds=2/."""
    root = tmp_path_factory.mktemp("readers")
    for day in (1, 2):
        (root / "logs" / f"ds={day}").mkdir(parents=True)
        rows = sample.filter(pa.compute.equal(pa.compute.bit_wise_and(sample.column("request_id"), 1), day - 1))
        pq.write_table(rows, root / "logs" / f"ds={day}" / "p.parquet")
    out = root / "partitioned"
    _with_a_killed_run([str(root / "logs"), "-o", str(out), "--key", "request_id", "--order-by", "position",
                        "--shards", "2"])
    return str(out)


def _impressions_with_day(sample: pa.Table) -> pa.Table:
    day = pa.compute.add(pa.compute.bit_wise_and(sample.column("request_id"), 1), 1)
    return sample.append_column("ds", day.cast(pa.int64()))


def _one_row_per_request(table: pa.Table, sample: pa.Table) -> None:
    requests = sample.group_by("request_id").aggregate([]).num_rows
    assert table.num_rows == requests
    assert sorted(table.column("request_id").to_pylist()) == sorted(set(sample.column("request_id").to_pylist()))
    assert sum(len(v) for v in table.column("item_id").to_pylist()) == sample.num_rows


def test_pyarrow(flat, partitioned, sample):
    _one_row_per_request(pq.read_table(flat), sample)
    _one_row_per_request(pads.dataset(flat, format="parquet").to_table(), sample)
    table = pq.read_table(partitioned)
    _one_row_per_request(table, sample)
    assert set(table.column("ds").to_pylist()) == {1, 2}
    _one_row_per_request(pads.dataset(partitioned, format="parquet", partitioning="hive").to_table(), sample)


def test_polars(flat, partitioned, sample):
    _one_row_per_request(pl.scan_parquet(f"{flat}/*.parquet").collect().to_arrow(), sample)
    frame = pl.scan_parquet(f"{partitioned}/*=*/*.parquet", hive_partitioning=True).collect()
    _one_row_per_request(frame.to_arrow(), sample)
    assert set(frame["ds"].to_list()) == {1, 2}


UNNEST = ("SELECT request_id, user_id, country, device, request_time, user_history_item_ids, "
          "unnest(position) AS position, unnest(item_id) AS item_id, unnest(price) AS price, "
          "unnest(click) AS click{extra} FROM read_parquet('{glob}'{options})")


def arrow(relation) -> pa.Table:
    """A DuckDB result as an Arrow table (DuckDB 2 names it to_arrow_table, 1.x arrow)."""
    return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()


def test_duckdb(flat, partitioned, sample):
    con = duckdb.connect()
    _one_row_per_request(arrow(con.sql(f"SELECT * FROM read_parquet('{flat}/*.parquet')")), sample)
    table = con.sql(f"SELECT * FROM read_parquet('{partitioned}/*=*/*.parquet', hive_partitioning = true)")
    _one_row_per_request(arrow(table), sample)
    back = arrow(con.sql(UNNEST.format(extra="", glob=f"{flat}/*.parquet", options="")))
    assert_same_rows(sample, back.select(sample.schema.names).cast(sample.schema))
    back = arrow(con.sql(UNNEST.format(extra=", ds", glob=f"{partitioned}/*=*/*.parquet",
                                       options=", hive_partitioning = true")))
    expected = _impressions_with_day(sample)
    assert_same_rows(expected, back.select(expected.schema.names).cast(expected.schema))


def test_duckdb_cross_product_warning_is_real(flat):
    """README warns that FROM t, UNNEST(a), UNNEST(b) multiplies rows: it does, so the SELECT form is needed."""
    con = duckdb.connect()
    crossed = con.sql(f"SELECT count(*) FROM read_parquet('{flat}/*.parquet') t, unnest(t.item_id) a, "
                      "unnest(t.position) b").fetchall()[0][0]
    zipped = con.sql(f"SELECT count(*) FROM (SELECT unnest(item_id), unnest(position) "
                     f"FROM read_parquet('{flat}/*.parquet'))").fetchall()[0][0]
    assert zipped == pq.ParquetFile(SAMPLE_PARQUET).metadata.num_rows < crossed


SPARK_EXPLODE = ("SELECT request_id, user_id, country, device, request_time, user_history_item_ids, "
                 "inline(arrays_zip(position, item_id, price, click)){extra} FROM requests")


@pytest.mark.spark
def test_spark(flat, partitioned, sample):
    from roolog.run.spark import spark_session

    spark = spark_session("local[1]")
    try:
        _one_row_per_request(spark.read.parquet(flat).toArrow(), sample)
        frame = spark.read.parquet(partitioned)
        _one_row_per_request(frame.toArrow(), sample)
        spark.read.parquet(flat).createOrReplaceTempView("requests")
        back = spark.sql(SPARK_EXPLODE.format(extra="")).toArrow()
        assert_same_rows(sample, back.select(sample.schema.names).cast(sample.schema))
        frame.createOrReplaceTempView("requests")
        back = spark.sql(SPARK_EXPLODE.format(extra=", ds")).toArrow()
        expected = _impressions_with_day(sample)
        assert_same_rows(expected, back.select(expected.schema.names).cast(expected.schema))
    finally:
        spark.stop()
