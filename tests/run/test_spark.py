"""`convert --engine spark` (local mode) against the local engine: the same shards, byte for byte, and the same
manifest; the same errors; no partial or duplicate file after a task attempt dies."""

import gzip
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# no skipping: without the spark extra or Java these tests fail, as the feature would (.ci/run installs both)
import pyspark  # noqa: E402,F401
import pytest
from helpers import LTR, MIND, SAMPLE, TRIVAGO, assert_same_rows, run_cli, shard_bytes
from helpers import manifest_without_timestamps as manifest

import roolog
from roolog.errors import RoologError
from roolog.read.sources import ReadOptions
from roolog.synthetic import generate_impressions

pytestmark = pytest.mark.spark

SAMPLE_PARQUET = os.path.join(SAMPLE, "impressions.parquet")
SAMPLE_KEY = dict(key=("request_id",), order_by="position")
FINISHED = {".roolog.json", ".roolog.lock", ".roolog.readers.lock", "_manifest.json", "_report.json"}
CONFLICTING_SCHEMA = """key = ["request_id"]
order_by = "position"
request = ["user_id", "country", "device", "request_time", "user_history_item_ids", "price"]
impression = ["position", "item_id", "click"]
"""


@pytest.fixture(scope="module", autouse=True)
def spark():
    """One Spark session for the module: 2 threads, and a task may fail once (local[2,2]) so retries run."""
    from roolog.run.spark import spark_session

    session = spark_session("local[2,2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    path = tmp_path_factory.mktemp("spark") / "shuffled.parquet"
    pq.write_table(generate_impressions(3000, 12, seed=11, shuffle=True), path, row_group_size=5000)
    return path


def both(inputs, tmp_path, **options) -> tuple[dict, dict]:
    """Convert with each engine into tmp_path/local and tmp_path/spark; returns the two reports."""
    options.setdefault("progress", False)
    inputs = [str(i) for i in inputs]
    local = roolog.convert(inputs, str(tmp_path / "local"), **options)
    spark = roolog.convert(inputs, str(tmp_path / "spark"), engine="spark", **options)
    return local, spark


def assert_same_output(tmp_path, local: dict, spark: dict) -> None:
    a, b = tmp_path / "local", tmp_path / "spark"
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))
    assert shard_bytes(a) == shard_bytes(b)
    assert manifest(a) == manifest(b)
    assert spark["engine"]["name"] == "spark"
    assert local["engine"] == {"name": "local", "master": None, "read_tasks": None}
    # the reports agree but for the Arrow bytes of the grouped batches in memory (a few bytes of offsets and
    # validity per batch: the engines cut the requests into batches differently)
    batching = {"logical_bytes_request", "logical_ratio"}
    for key in ("totals", "impressions_per_request", "demoted", "null_key_rows_dropped", "partition"):
        assert without(local[key], batching) == without(spark[key], batching), key
    columns = [{c["name"]: without(c, batching) for c in report["columns"]} for report in (local, spark)]
    assert columns[0] == columns[1]  # (listed by bytes saved: the order may differ between near-ties)


def without(value, keys: set[str]):
    return {k: v for k, v in value.items() if k not in keys} if isinstance(value, dict) else value


def test_sample_data_byte_identical_and_explodes_back(tmp_path):
    local, spark = both([SAMPLE_PARQUET], tmp_path, shards=3, **SAMPLE_KEY)
    assert_same_output(tmp_path, local, spark)
    assert set(os.listdir(tmp_path / "spark")) == FINISHED | {f"part-0000{i}.parquet" for i in range(3)}
    roolog.explode(str(tmp_path / "spark"), str(tmp_path / "back.parquet"))
    assert_same_rows(pq.read_table(SAMPLE_PARQUET), pq.read_table(tmp_path / "back.parquet"))


def test_compressed_inputs(tmp_path):
    local, spark = both([os.path.join(SAMPLE, "impressions.csv.zst")], tmp_path / "csv", shards=2, **SAMPLE_KEY)
    assert_same_output(tmp_path / "csv", local, spark)
    packed = tmp_path / "impressions.parquet.gz"
    with open(SAMPLE_PARQUET, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    local, spark = both([packed], tmp_path / "parquet", shards=2, **SAMPLE_KEY)
    assert_same_output(tmp_path / "parquet", local, spark)


def test_shuffled_log_small_batches_and_spill_parts(shuffled, tmp_path):
    # requests scattered over the whole file, read in many small batches, folded in several spill parts
    local, spark = both([shuffled], tmp_path, shards=4, read=ReadOptions(batch_bytes=40_000),
                        memory_limit=60 << 10, row_group_bytes=50_000, row_group_requests=40, **SAMPLE_KEY)
    assert_same_output(tmp_path, local, spark)
    assert spark["spill"]["most_parts"] > 1
    groups = pq.ParquetFile(tmp_path / "spark" / "part-00000.parquet").metadata
    assert groups.num_row_groups > 1 and max(groups.row_group(g).num_rows for g in range(groups.num_row_groups)) <= 40


def test_string_and_composite_keys(tmp_path):
    table = generate_impressions(800, 5, seed=3, shuffle=True, string_keys=True)
    table = table.append_column("step", pa.array(np.arange(table.num_rows) % 3))
    path = tmp_path / "log.parquet"
    pq.write_table(table, path, row_group_size=700)
    local, spark = both([path], tmp_path, key=("request_id", "step"), shards=3)
    assert_same_output(tmp_path, local, spark)
    assert spark["totals"]["requests"] > 800


def test_a_column_varying_in_one_shard_only_is_impression_level_everywhere(tmp_path):
    table = generate_impressions(400, 4, seed=5)
    flag = np.zeros(table.num_rows, dtype=np.int64)
    flag[np.flatnonzero(table.column("position").to_numpy() == 1)[17]] = 1  # one impression of one request
    path = tmp_path / "log.parquet"
    pq.write_table(table.append_column("flag", pa.array(flag)), path)
    local, spark = both([path], tmp_path, shards=5, **SAMPLE_KEY)
    assert_same_output(tmp_path, local, spark)
    assert "flag" in manifest(tmp_path / "spark")["schema"]["impression"]


@pytest.mark.parametrize("name,options", [
    ("mind-parquet", dict(key=("impression_id",), order_by="position", shards=3)),
    ("mind-csv", dict(key=("impression_id",))),
    ("trivago", dict(key=("request_id",), order_by="position", shards=2)),
    ("trivago-composite", dict(key=("session_id", "step"), shards=3)),
    ("ltr-train", dict(key=("query_id",), order_by="row_in_query")),
    ("ltr-test", dict(key=("query_id",), order_by="row_in_query", shards=2)),
])
def test_real_logs(shared_datasets, tmp_path, name, options):
    path = {"mind-parquet": os.path.join(MIND, "impressions_exploded.parquet"),
            "mind-csv": os.path.join(MIND, "impressions_exploded_first1000.csv"),
            "trivago": os.path.join(TRIVAGO, "clickout_impressions_exploded.csv"),
            "trivago-composite": os.path.join(TRIVAGO, "clickout_impressions_exploded.csv"),
            "ltr-train": os.path.join(LTR, "rank_train.csv"),
            "ltr-test": os.path.join(LTR, "rank_test.csv")}[name]
    local, spark = both([path], tmp_path, **options)
    assert_same_output(tmp_path, local, spark)


def test_hive_folders_and_partition_by_column(tmp_path):
    table = pq.read_table(SAMPLE_PARQUET)
    for i, day in enumerate(["2026-11-20", "2026-11-21"]):
        folder = tmp_path / "logs" / f"ds={day}"
        folder.mkdir(parents=True)
        pq.write_table(table.slice(i * 9000, 9000), folder / "part-0.parquet")
    local, spark = both([tmp_path / "logs"], tmp_path, shards=2, **SAMPLE_KEY)
    assert local["partitions"] and [p["name"] for p in local["partitions"]] == ["ds=2026-11-20", "ds=2026-11-21"]
    for part in ("ds=2026-11-20", "ds=2026-11-21"):
        assert shard_bytes(tmp_path / "local" / part) == shard_bytes(tmp_path / "spark" / part)
        assert manifest(tmp_path / "local" / part) == manifest(tmp_path / "spark" / part)
    assert manifest(tmp_path / "local") == manifest(tmp_path / "spark")

    by_country = tmp_path / "country"
    by_country.mkdir()
    local, spark = both([SAMPLE_PARQUET], by_country, partition_by="country", shards=2, **SAMPLE_KEY)
    assert local["converted"] == spark["converted"] and len(spark["converted"]) == 10
    for part in spark["converted"]:
        assert shard_bytes(by_country / "local" / part) == shard_bytes(by_country / "spark" / part)
        assert manifest(by_country / "local" / part) == manifest(by_country / "spark" / part)
    assert local["cross_partition_requests"] == spark["cross_partition_requests"]


def test_a_conflicting_request_column_fails_with_the_same_message(tmp_path):
    schema = tmp_path / "schema.toml"
    schema.write_text(CONFLICTING_SCHEMA)
    messages = []
    for engine in ("local", "spark"):
        with pytest.raises(RoologError) as err:
            roolog.convert([SAMPLE_PARQUET], str(tmp_path / engine), schema_file=str(schema), shards=4,
                           progress=False, engine=engine)
        assert err.value.exit_code == 1
        assert not (tmp_path / engine).exists()  # a failed first run leaves no folder
        messages.append(str(err.value))
    assert "column 'price' is declared request-level but varies inside request request_id=" in messages[0]
    assert messages[0] == messages[1]
    # --on-conflict demote: stored as a list, in both engines alike
    local, spark = both([SAMPLE_PARQUET], tmp_path / "demote", schema_file=str(schema), shards=4,
                        on_conflict="demote")
    assert spark["demoted"] == ["price"]
    assert_same_output(tmp_path / "demote", local, spark)


def test_null_keys(tmp_path):
    table = pq.read_table(SAMPLE_PARQUET)
    key = table.column("request_id").to_pylist()
    for i in (5, 700, 15_000):
        key[i] = None
    path = tmp_path / "nulls.parquet"
    pq.write_table(table.set_column(0, "request_id", pa.array(key, pa.int64())), path, row_group_size=4000)
    messages = []
    for engine in ("local", "spark"):
        with pytest.raises(RoologError) as err:
            roolog.convert([str(path)], str(tmp_path / engine), key=("request_id",), progress=False, engine=engine)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and ", row 6: key column 'request_id' is null" in messages[0]
    local, spark = both([path], tmp_path / "dropped", drop_null_keys=True, shards=2, **SAMPLE_KEY)
    assert spark["null_key_rows_dropped"] == 3
    assert_same_output(tmp_path / "dropped", local, spark)


@pytest.mark.parametrize("step", ["group", "write"])
def test_a_retried_task_leaves_no_partial_or_duplicate_file(shuffled, tmp_path, monkeypatch, step):
    # the first attempt of every task dies halfway through writing its file; Spark retries it
    monkeypatch.setenv("ROOLOG_SPARK_FAILPOINT", step)
    local, spark = both([shuffled], tmp_path, shards=3, **SAMPLE_KEY)
    assert_same_output(tmp_path, local, spark)
    assert set(os.listdir(tmp_path / "spark")) == FINISHED | {f"part-0000{i}.parquet" for i in range(3)}


@pytest.mark.parametrize("failpoint", [None, "group"])
def test_cluster_by_the_local_engines_bytes(shuffled, tmp_path, monkeypatch, failpoint):
    """--cluster-by: each group task's sorted runs, merged by the write task, give the local engine's shards,
    also with a small memory limit (many runs per task) and when every group task's first attempt dies."""
    if failpoint:
        monkeypatch.setenv("ROOLOG_SPARK_FAILPOINT", failpoint)
    local, spark = both([shuffled], tmp_path, shards=3, memory_limit=120 << 10, cluster_by=["user_id"],
                        **SAMPLE_KEY)
    assert_same_output(tmp_path, local, spark)
    users = pq.read_table(tmp_path / "spark" / "part-00001.parquet", columns=["user_id"]).column(0).to_pylist()
    assert users == sorted(users, key=lambda u: (u is None, u or 0)) and len(set(users)) < len(users)


def test_a_failed_job_is_one_line_and_leaves_no_output(shuffled, tmp_path, monkeypatch):
    monkeypatch.setenv("ROOLOG_SPARK_FAILPOINT", "write:always")
    with pytest.raises(RoologError) as err:
        roolog.convert([str(shuffled)], str(tmp_path / "out"), shards=2, progress=False, engine="spark",
                       **SAMPLE_KEY)
    assert err.value.exit_code == 1
    assert str(err.value) == ("the Spark job failed: RuntimeError: roolog failpoint write:always "
                              "(a task attempt dies while writing)")
    assert not (tmp_path / "out").exists()


def test_empty_input(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(SAMPLE_PARQUET).slice(0, 0), path)
    local, spark = both([path], tmp_path, shards=2, **SAMPLE_KEY)
    assert_same_output(tmp_path, local, spark)


def test_cli(tmp_path):
    """A whole process: quiet on success (no Spark log lines), one line and exit 1 on bad data."""
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(tmp_path / "out"), "--key", "request_id", "--order-by",
                   "position", "--engine", "spark", "--spark-master", "local[1]", "-q")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    reference = tmp_path / "reference"
    roolog.convert([SAMPLE_PARQUET], str(reference), progress=False, **SAMPLE_KEY)
    assert shard_bytes(tmp_path / "out") == shard_bytes(reference)

    schema = tmp_path / "schema.toml"
    schema.write_text(CONFLICTING_SCHEMA)
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(tmp_path / "bad"), "--schema", str(schema), "--engine",
                   "spark", "--spark-master", "local[1]", "-q")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("roolog: error: column 'price' is declared request-level but varies inside")
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "bad").exists()
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(tmp_path / "x"), "--key", "request_id",
                   "--spark-master", "local[1]")
    assert proc.returncode == 2 and "--spark-master needs --engine spark" in proc.stderr
