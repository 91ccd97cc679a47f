"""Round trips and inferred levels on the real logs in ../shared/datasets, checked against SOURCE.md."""

import os

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from helpers import LTR, MIND, SAMPLE, TRIVAGO, assert_same_rows, levels, roundtrip

TRIVAGO_REQUEST = {"source_file", "split", "user_id", "session_id", "timestamp", "step", "action_type",
                   "reference", "platform", "city", "device", "current_filters"}
LTR_REAL_QUERY_FEATURES = {"f12", "f28", "f29", "f39", "f71", "f161", "f170", "f181", "f222", "f264", "f271"}


def read_csv_reference(path: str) -> pa.Table:
    """pyarrow's own reading of a whole CSV at once, to hold roolog's streamed reading against."""
    return pcsv.read_csv(path)


def test_mind_parquet(shared_datasets, tmp_path):
    path = os.path.join(MIND, "impressions_exploded.parquet")
    report, exploded = roundtrip([path], tmp_path / "out", key=("impression_id",), order_by="position")
    assert report["totals"]["requests"] == 5000
    assert report["totals"]["rows"] == 189_359
    lv = levels(report)
    assert lv["request"] == {"user_id", "time", "history"}
    assert lv["impression"] == {"position", "news_id", "clicked"}
    assert report["impressions_per_request"] == {"min": 2, "median": 24, "mean": 37.872, "p99": 159, "max": 283}
    assert_same_rows(pq.read_table(path), exploded)


def test_mind_csv(shared_datasets, tmp_path):
    path = os.path.join(MIND, "impressions_exploded_first1000.csv")
    report, exploded = roundtrip([path], tmp_path / "out", key=("impression_id",))
    assert report["totals"]["requests"] == 1000
    assert report["totals"]["rows"] == 39_528
    assert levels(report)["request"] == {"user_id", "time", "history"}
    assert_same_rows(read_csv_reference(path), exploded)


def test_trivago(shared_datasets, tmp_path):
    path = os.path.join(TRIVAGO, "clickout_impressions_exploded.csv")
    report, exploded = roundtrip([path], tmp_path / "out", key=("request_id",), order_by="position")
    assert report["totals"]["requests"] == 2250
    assert report["totals"]["rows"] == 51_382
    lv = levels(report)
    assert lv["request"] == TRIVAGO_REQUEST
    assert lv["impression"] == {"position", "item_id", "price", "clicked"}
    assert_same_rows(read_csv_reference(path), exploded)


def test_trivago_composite_key(shared_datasets, tmp_path):
    path = os.path.join(TRIVAGO, "clickout_impressions_exploded.csv")
    report, exploded = roundtrip([path], tmp_path / "out", key=("session_id", "step"), shards=3)
    assert report["totals"]["requests"] == 2250
    assert levels(report)["request"] == TRIVAGO_REQUEST - {"session_id", "step"} | {"request_id"}
    assert_same_rows(read_csv_reference(path), exploded)


@pytest.mark.parametrize("name,queries,rows", [("rank_train.csv", 201, 3005), ("rank_test.csv", 50, 768)])
def test_ltr(shared_datasets, tmp_path, name, queries, rows):
    path = os.path.join(LTR, name)
    report, exploded = roundtrip([path], tmp_path / "out", key=("query_id",), order_by="row_in_query")
    assert report["totals"]["requests"] == queries
    assert report["totals"]["rows"] == rows
    if name == "rank_train.csv":
        lv = levels(report)
        assert len(lv["request"]) == 93
        assert {"row_in_query", "label"} <= lv["impression"]
        assert len(lv["impression"]) == 209
        reference = read_csv_reference(path)
        valued = {c for c in lv["request"] if reference.column(c).null_count < reference.num_rows}
        assert valued == LTR_REAL_QUERY_FEATURES
    assert_same_rows(read_csv_reference(path), exploded)


def test_sample_data_both_formats_agree(tmp_path):
    report_pq, from_parquet = roundtrip([os.path.join(SAMPLE, "impressions.parquet")], tmp_path / "a",
                                        key=("request_id",), order_by="position")
    assert_same_rows(pq.read_table(os.path.join(SAMPLE, "impressions.parquet")), from_parquet)
    report_csv, from_csv = roundtrip([os.path.join(SAMPLE, "impressions.csv.zst")], tmp_path / "b",
                                     key=("request_id",), order_by="position")
    assert report_pq["totals"]["requests"] == report_csv["totals"]["requests"] == 2000
    assert levels(report_pq) == levels(report_csv)
    assert from_csv.column("item_id").to_pylist() == from_parquet.column("item_id").to_pylist()
