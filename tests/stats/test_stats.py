"""roolog stats and infer-schema: exact figures on the real logs, checked against SOURCE.md and polars."""

import json
import os

import polars as pl
import pytest
from helpers import LTR, MIND, SAMPLE, TRIVAGO, run_cli
from test_real_logs import LTR_REAL_QUERY_FEATURES, TRIVAGO_REQUEST

import roolog
from roolog.group.schema import load_schema
from roolog.stats.statistics import stats_output, stats_raw

LOGS = {  # path, key, requests (SOURCE.md), request-level columns (SOURCE.md)
    "mind": (os.path.join(MIND, "impressions_exploded.parquet"), ("impression_id",), 5000,
             {"user_id", "time", "history"}),
    "trivago": (os.path.join(TRIVAGO, "clickout_impressions_exploded.csv"), ("request_id",), 2250, TRIVAGO_REQUEST),
    "ltr": (os.path.join(LTR, "rank_train.csv"), ("query_id",), 201, None),
}


def polars_frame(path: str) -> pl.DataFrame:
    return pl.read_parquet(path) if path.endswith(".parquet") else pl.read_csv(path, infer_schema_length=None)


@pytest.mark.parametrize("name", sorted(LOGS))
def test_stats_on_real_logs_match_source_md_and_polars(shared_datasets, name):
    path, key, requests, request_columns = LOGS[name]
    report = stats_raw([path], key)
    assert report["requests"] == requests
    levels = {c["name"]: c["level"] for c in report["columns"]}
    if request_columns is not None:
        assert {n for n, lv in levels.items() if lv == "request"} == request_columns
    else:  # LTR: 93 query-level columns, 11 of them with values
        assert sum(lv == "request" for lv in levels.values()) == 93
        assert {n for n, lv in levels.items() if lv == "request"} >= LTR_REAL_QUERY_FEATURES

    df = polars_frame(path)
    sizes = df.group_by(list(key)).len()["len"]
    assert report["rows"] == df.height
    ipr = report["impressions_per_request"]
    assert (ipr["min"], ipr["max"]) == (sizes.min(), sizes.max())
    assert ipr["mean"] == pytest.approx(sizes.mean(), abs=1e-3)
    assert ipr["median"] == int(sizes.sort()[(len(sizes) + 1) // 2 - 1])  # nearest-rank median
    others = [c for c in df.columns if c not in key]
    varying = df.group_by(list(key)).agg([pl.col(c).n_unique().alias(c) for c in others])
    for c in report["columns"]:
        if c["level"] == "key":
            continue
        expected = int((varying[c["name"]] > 1).sum())
        assert c["varying_requests"] == expected, c["name"]
        assert (c["level"] == "request") == (expected == 0)
    e = report["on_disk_estimate"]
    assert e["estimate"] and e["sample_requests"] == min(requests, 10_000) and e["flat_bytes"] > 0


def test_stats_json_cli_and_sorted_by_saving(tmp_path):
    proc = run_cli("stats", os.path.join(SAMPLE, "impressions.parquet"), "--key", "request_id", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    saved = [c["saved_bytes"] for c in report["columns"]]
    assert saved == sorted(saved, reverse=True)
    assert report["columns"][0]["name"] == "user_history_item_ids"
    assert sum(b["requests"] for b in report["histogram"]) == report["requests"] == 2000
    wide = run_cli("stats", os.path.join(SAMPLE, "impressions.parquet"), "--key", "request_id", env={"COLUMNS": "200"})
    assert "user_history_item_ids" in wide.stdout and "estimate" in wide.stdout
    narrow = run_cli("stats", os.path.join(SAMPLE, "impressions.parquet"), "--key", "request_id", env={"COLUMNS": "90"})
    table = narrow.stdout.splitlines()[7:18]
    assert all(len(line) <= 90 for line in table) and "user_history_item_ids" not in narrow.stdout


def test_stats_on_output_agrees_with_the_run(tmp_path):
    out = tmp_path / "out"
    report = roolog.convert([os.path.join(SAMPLE, "impressions.parquet")], str(out), key=("request_id",), shards=2,
                            progress=False)
    st = stats_output(str(out))
    assert st["totals"]["requests"] == report["totals"]["requests"]
    assert st["totals"]["impressions"] == report["totals"]["rows"]
    assert st["totals"]["bytes"] == report["totals"]["output_bytes"]
    assert st["totals"]["shards"] == 2
    columns = {c["name"]: c for c in st["partitions"][0]["columns"]}
    for c in report["columns"]:
        assert columns[c["name"]]["compressed_bytes"] == c["on_disk_bytes"]
    proc = run_cli("stats", str(out), "--json")
    assert json.loads(proc.stdout)["totals"] == st["totals"]


def test_stats_on_a_partitioned_output_has_a_line_per_partition(tmp_path):
    import pyarrow.parquet as pq

    from roolog.synthetic import generate_impressions

    for day in (1, 2):
        folder = tmp_path / "logs" / f"ds=2026-11-0{day}"
        folder.mkdir(parents=True)
        pq.write_table(generate_impressions(50, 3, seed=day), folder / "x.parquet")
    roolog.convert([str(tmp_path / "logs")], str(tmp_path / "out"), key=("request_id",), progress=False)
    proc = run_cli("stats", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "ds=2026-11-01" in proc.stdout and "ds=2026-11-02" in proc.stdout and "total" in proc.stdout


@pytest.mark.parametrize("path,key", [(os.path.join(SAMPLE, "impressions.parquet"), "request_id"),
                                      (os.path.join(TRIVAGO, "clickout_impressions_exploded.csv"), "request_id")])
def test_infer_schema_round_trips_through_convert(tmp_path, path, key):
    target = tmp_path / "inferred.toml"
    proc = run_cli("infer-schema", path, "--key", key, "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    schema = load_schema(str(target))
    assert schema.order_by == "position" and len(schema.labels) == 1
    text = target.read_text()
    assert "# impression-level: varies in" in text
    out = tmp_path / "out"
    assert run_cli("convert", path, "-o", str(out), "--schema", str(target), "-q").returncode == 0
    manifest = json.loads((out / "_manifest.json").read_text())["schema"]
    assert set(manifest["request"]) == set(schema.request) and manifest["order_by"] == "position"


def test_infer_schema_shows_a_near_miss(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"rid": r, "pos": i, "country": "DE" if (r, i) != (7, 2) else "FR", "clicked": int(i == 0)}
            for r in range(208) for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    proc = run_cli("infer-schema", str(tmp_path / "t.parquet"), "--key", "rid")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if '"country"' in x)
    assert "varies in 1 of 208 requests" in line and "nearly constant" in line
    for other in ('"pos"', '"clicked"'):  # they vary in every request: no near miss
        line = next(x for x in proc.stdout.splitlines() if x.strip().startswith(other))
        assert "varies in 208 of 208 requests" in line and "nearly constant" not in line, line
    assert 'order_by = "pos"' in proc.stdout and 'labels = ["clicked"]' in proc.stdout


def test_stats_bad_input_gets_the_same_one_line_errors(tmp_path):
    for args, code, words in [((os.path.join(SAMPLE, "impressions.parquet"), "--key", "nope"), 1, "'nope'"),
                              ((str(tmp_path / "missing.csv"), "--key", "x"), 2, "missing.csv")]:
        proc = run_cli("stats", *args)
        assert proc.returncode == code and words in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = run_cli("infer-schema", os.path.join(SAMPLE, "impressions.parquet"))
    assert proc.returncode == 2 and "--key" in proc.stderr
