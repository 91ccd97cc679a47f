"""--engine spark on a Spark standalone cluster (a master and two one-core workers in JVMs of their own, on
127.0.0.1): relative paths from another working folder, the local engine's bytes on the sample, a shuffled
log and every real log, a task that dies once and is retried, and bad data giving the local engine's line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from helpers import LTR, MIND, REPO, SAMPLE, TRIVAGO, run_cli, s3_server, shard_bytes

import roolog
from roolog.synthetic import generate_impressions

sys.path.insert(0, os.path.join(REPO, "scripts"))
from spark_cluster import StandaloneCluster  # noqa: E402  (scripts/: the benchmark starts the same cluster)

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REAL_LOGS = [  # (input, options): every impression log in ../shared/datasets
    (os.path.join(MIND, "impressions_exploded.parquet"), {"key": ["impression_id"], "order_by": "position"}),
    (os.path.join(TRIVAGO, "clickout_impressions_exploded.csv"), {"key": ["session_id", "step"]}),
    (os.path.join(LTR, "rank_train.csv"), {"key": ["query_id"], "order_by": "row_in_query"}),
]

# run in a Python of its own, in another working folder: one driver for several conversions on the cluster
DRIVER = """
import json, os, sys
import roolog
from roolog.run.spark import spark_session
spark_session(sys.argv[1])
results = {}
for name, inputs, options, failpoint in json.loads(sys.argv[2]):
    os.environ.pop("ROOLOG_SPARK_FAILPOINT", None)
    if failpoint:
        os.environ["ROOLOG_SPARK_FAILPOINT"] = failpoint
    try:
        report = roolog.convert(inputs, name, engine="spark", progress=False, shards=3, **options)
        results[name] = {"engine": report["engine"]}
    except roolog.RoologError as err:
        results[name] = {"error": str(err), "exit_code": err.exit_code}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("aws")) as running:
        yield running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, store):  # the S3 server first: the workers and their executors get its environment
    with StandaloneCluster(tmp_path_factory.mktemp("cluster"), workers=2, cores=1) as running:
        yield running


def same_output(a, b) -> None:
    assert shard_bytes(a) and shard_bytes(a) == shard_bytes(b)
    ma, mb = (json.loads((d / "_manifest.json").read_text()) for d in (a, b))
    for m in (ma, mb):
        m.pop("created"), m.pop("checksum")  # the checksum seals the timestamp too
    assert ma == mb


def test_relative_paths_from_another_folder_give_the_local_engines_bytes(cluster, tmp_path):
    url = cluster.url
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(os.path.join(SAMPLE, "impressions.parquet"), work / "logs.parquet")
    proc = run_cli("convert", "logs.parquet", "-o", "out", "--key", "request_id", "--order-by", "position",
                   "--shards", "3", "--engine", "spark", "--spark-master", url, "-q", cwd=work)
    assert proc.returncode == 0, proc.stderr
    roolog.convert([str(work / "logs.parquet")], str(tmp_path / "local"), key=["request_id"], order_by="position",
                   shards=3, progress=False)
    same_output(work / "out", tmp_path / "local")
    engine = json.loads((work / "out" / "_report.json").read_text())["engine"]
    assert engine["name"] == "spark" and engine["master"] == url


def test_the_executors_read_a_bucket_and_give_the_local_engines_bytes(cluster, store, tmp_path):
    """Hive folders in S3 (a Parquet object of several row groups: several read tasks on one object), read
    by the cluster's executors from the store: the local engine's bytes from the same files on disk."""
    logs = tmp_path / "logs"
    table = generate_impressions(300, 6, seed=5)
    for day in range(2):
        (logs / f"ds={day}").mkdir(parents=True)
        pq.write_table(table.slice(day * 1500, 1500), logs / f"ds={day}" / "a.parquet", row_group_size=400)
    pq.write_table(table.slice(3000), logs / "ds=1" / "b.parquet")
    bucket = store.bucket()
    uri = store.upload(logs, bucket, "logs")
    proc = run_cli("convert", uri + "/", "-o", str(tmp_path / "spark"), "--key", "request_id", "--order-by", "position",
                   "--shards", "3", "--engine", "spark", "--spark-master", cluster.url, "-q")
    assert proc.returncode == 0, proc.stderr
    roolog.convert([str(logs)], str(tmp_path / "local"), key=["request_id"], order_by="position", shards=3,
                   progress=False)
    for day in ("ds=0", "ds=1"):
        assert shard_bytes(tmp_path / "spark" / day) == shard_bytes(tmp_path / "local" / day)
    inputs = json.loads((tmp_path / "spark" / "ds=1" / "_manifest.json").read_text())["inputs"]
    assert [r["path"] for r in inputs] == [f"{uri}/ds=1/a.parquet", f"{uri}/ds=1/b.parquet"]


def test_shuffled_and_real_logs_a_retried_task_and_bad_data(cluster, tmp_path, shared_datasets, monkeypatch):
    work = tmp_path / "elsewhere"
    work.mkdir()
    pq.write_table(generate_impressions(3000, 12, seed=11, shuffle=True), work / "shuffled.parquet",
                   row_group_size=5000)
    bad = work / "bad.csv"
    bad.write_text("request_id,item\n1,a\n1,b\n,c\n2,d\n")
    jobs = [("shuffled", ["shuffled.parquet"], {"key": ["request_id"], "order_by": "position"}, None),
            ("retried", ["shuffled.parquet"], {"key": ["request_id"]}, "write"),
            ("bad", ["bad.csv"], {"key": ["request_id"]}, None)]
    jobs += [(f"real{i}", [os.path.relpath(path, work)], options, None) for i, (path, options) in enumerate(REAL_LOGS)]
    proc = subprocess.run([sys.executable, "-c", DRIVER, cluster.url, json.dumps(jobs)], cwd=work, capture_output=True,
                          text=True, env=dict(os.environ, SPARK_LOCAL_IP="127.0.0.1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "roolog failpoint write" in cluster.executor_logs()  # the retried task did die once, on a worker
    monkeypatch.chdir(work)  # the local engine is given the same relative paths
    for name, inputs, options, _ in jobs:
        local = tmp_path / f"local-{name}"
        if name == "bad":
            with pytest.raises(roolog.RoologError) as err:
                roolog.convert(inputs, str(local), progress=False, shards=3, **options)
            assert results[name] == {"error": str(err.value), "exit_code": 1}
            assert "bad.csv" in str(err.value) and not (work / "bad").exists()
            continue
        assert results[name]["engine"]["master"] == cluster.url, results[name]
        roolog.convert(inputs, str(local), progress=False, shards=3, **options)
        same_output(work / name, local)
    attempts = [f for _, _, files in os.walk(work / "retried") for f in files if "attempt" in f or ".tmp" in f]
    assert attempts == []
