"""Inputs in an object store: a real S3 API (moto's server mode on 127.0.0.1, started and stopped here) with
the standard AWS environment pointing at it. The same files on local disk are the independent reference:
their shards must be byte-identical, their hashes the manifest's, their ETags what boto3 lists."""

from __future__ import annotations

import json
import os
import shutil
import socket

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import xxhash
import zstandard
from helpers import SAMPLE, run_cli, s3_server, shard_bytes

import roolog
from roolog.errors import RoologError, UsageProblem
from roolog.read import stores
from roolog.read.sources import ReadOptions
from roolog.synthetic import generate_impressions

KEY = ("--key", "request_id", "--order-by", "position")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("aws")) as running:
        yield running


@pytest.fixture(scope="module")
def hive(tmp_path_factory):
    """Two days of a synthetic log in hive folders, two files a day, beside a _SUCCESS marker."""
    root = tmp_path_factory.mktemp("hive") / "logs"
    table = generate_impressions(400, 8, seed=3)
    for day in range(2):
        folder = root / f"ds=2026-01-0{day + 1}"
        folder.mkdir(parents=True)
        part = table.slice(day * 2000, 2000)
        pq.write_table(part.slice(0, 1000), folder / "part-0.parquet")
        pq.write_table(part.slice(1000), folder / "part-1.parquet")
    (root / "_SUCCESS").write_bytes(b"")
    return root


def convert_cli(inputs, out, *extra: str):
    proc = run_cli("convert", *map(str, inputs), "-o", str(out), *KEY, "-q", *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


def all_shards(out) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(d, f), out): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(out) for f in names if f.startswith("part-")}


def local_xxh64(path) -> str:
    return xxhash.xxh64(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("name", ["impressions.parquet", "impressions.csv.zst"])
def test_an_object_gives_the_local_files_bytes_and_the_manifest_records_what_was_read(store, tmp_path, name):
    bucket = store.bucket()
    uri = store.upload(os.path.join(SAMPLE, name), bucket, f"raw/{name}")
    convert_cli([os.path.join(SAMPLE, name)], tmp_path / "local")
    convert_cli([uri], tmp_path / "s3")
    assert shard_bytes(tmp_path / "s3") == shard_bytes(tmp_path / "local")
    [record] = json.loads((tmp_path / "s3" / "_manifest.json").read_text())["inputs"]
    assert record["path"] == uri and record["bytes"] == os.path.getsize(os.path.join(SAMPLE, name))
    assert record["xxh64"] == local_xxh64(os.path.join(SAMPLE, name))
    assert record["stat"]["etag"] == store.etag(uri)


def test_a_prefix_and_a_glob_give_the_local_bytes(store, tmp_path):
    bucket = store.bucket()
    folder = tmp_path / "flat"
    folder.mkdir()
    with open(os.path.join(SAMPLE, "impressions.csv.zst"), "rb") as fh:
        lines = zstandard.decompress(fh.read()).splitlines(True)
    half = len(lines) // 2
    (folder / "a.csv.zst").write_bytes(zstandard.compress(b"".join(lines[:half])))
    (folder / "b.csv").write_bytes(b"".join(lines[:1] + lines[half:]))
    (folder / "README.md").write_text("not a log")
    (folder / "_temporary").mkdir()  # a writer's leftovers, passed over as in a local folder
    (folder / "_temporary" / "c.csv").write_bytes(b"".join(lines[:2]))
    (folder / ".c.csv.crc").write_bytes(b"\0")
    prefix = store.upload(folder, bucket, "flat")
    store.client.put_object(Bucket=bucket, Key="flat/sub/", Body=b"")  # a "folder" marker object
    convert_cli([folder], tmp_path / "local")
    for name, spec in [("prefix", prefix + "/"), ("glob", f"s3://{bucket}/fl*/*.csv*")]:
        convert_cli([spec], tmp_path / name)
        assert shard_bytes(tmp_path / name) == shard_bytes(tmp_path / "local"), name
        inputs = json.loads((tmp_path / name / "_manifest.json").read_text())["inputs"]
        assert [r["path"] for r in inputs] == [f"s3://{bucket}/flat/a.csv.zst", f"s3://{bucket}/flat/b.csv"]


def test_hive_objects_give_the_local_bytes_rerun_downloads_nothing_and_a_change_redoes_its_day(
        store, tmp_path, hive, monkeypatch):
    bucket = store.bucket()
    uri = store.upload(hive, bucket, "logs")
    downloads: list[str] = []
    real = stores.download
    monkeypatch.setattr(stores, "download",
                        lambda obj, *rest: downloads.append(obj.uri) or real(obj, *rest))
    opts = dict(key="request_id", order_by="position", progress=False)
    roolog.convert([str(hive)], str(tmp_path / "local"), **opts)
    first = roolog.convert([uri], str(tmp_path / "s3"), **opts)
    assert all_shards(tmp_path / "s3") == all_shards(tmp_path / "local") and len(all_shards(tmp_path / "s3")) == 2
    assert sorted(downloads) == sorted(f"{uri}/ds=2026-01-0{d}/part-{p}.parquet" for d in (1, 2) for p in (0, 1))
    assert first["partition_by"] == "ds"

    downloads.clear()
    again = roolog.convert([uri], str(tmp_path / "s3"), **opts)
    assert downloads == [] and again["converted"] == [] and len(again["skipped"]) == 2

    day1 = (tmp_path / "s3" / "ds=2026-01-01" / "_manifest.json").read_bytes()
    changed = hive.parent / "changed"
    shutil.copytree(hive, changed)
    part = pq.read_table(changed / "ds=2026-01-02" / "part-1.parquet")
    pq.write_table(part.set_column(part.schema.get_field_index("click"), "click",
                                   pc.subtract(1, part.column("click")).cast(part.schema.field("click").type)),
                   changed / "ds=2026-01-02" / "part-1.parquet")
    store.upload(changed / "ds=2026-01-02" / "part-1.parquet", bucket, "logs/ds=2026-01-02/part-1.parquet")
    redone = roolog.convert([uri], str(tmp_path / "s3"), **opts)
    # the changed day's two objects are read again (its unit is made from both), the other day's are not
    assert sorted(downloads) == [f"{uri}/ds=2026-01-02/part-{p}.parquet" for p in (0, 1)]
    assert redone["converted"] == ["ds=2026-01-02"] and redone["skipped"] == ["ds=2026-01-01"]
    assert (tmp_path / "s3" / "ds=2026-01-01" / "_manifest.json").read_bytes() == day1
    roolog.convert([str(changed)], str(tmp_path / "local2"), **opts)
    assert all_shards(tmp_path / "s3") == all_shards(tmp_path / "local2")
    assert run_cli("verify", str(tmp_path / "s3")).returncode == 0


def test_stats_and_infer_schema_read_objects_as_they_read_files(store, tmp_path):
    bucket = store.bucket()
    uri = store.upload(os.path.join(SAMPLE, "impressions.csv.zst"), bucket, "raw/impressions.csv.zst")
    local = os.path.join(SAMPLE, "impressions.csv.zst")
    got = {}
    for name, spec in [("local", local), ("s3", uri)]:
        proc = run_cli("stats", spec, *KEY, "--json")
        assert proc.returncode == 0, proc.stderr
        got[name] = json.loads(proc.stdout)
        schema = tmp_path / f"{name}.toml"
        proc = run_cli("infer-schema", spec, *KEY, "-o", str(schema), "-q")
        assert proc.returncode == 0, proc.stderr
    assert got["s3"].pop("inputs") == [{"path": uri, "bytes": os.path.getsize(local)}]
    got["local"].pop("inputs")
    assert got["s3"] == got["local"]
    assert (tmp_path / "s3.toml").read_text() == (tmp_path / "local.toml").read_text()


@pytest.mark.parametrize("spec, env, why", [
    ("s3://no-such-bucket/logs/", {}, "there is no bucket 'no-such-bucket'"),
    ("s3://{bucket}/nothing/here/", {}, "input not found: s3://{bucket}/nothing/here/"),
    ("s3://{bucket}/raw/*.tsv", {}, "no input objects match"),
    ("s3://{bucket}/raw/a.parquet", {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},  # empty: unset
     "no credentials for s3://"),
    ("gs://{bucket}/raw/", {}, "no file system for gs://"),
])
def test_errors_are_one_line_and_leave_no_output(store, tmp_path, spec, env, why):
    bucket = store.bucket()
    store.upload(os.path.join(SAMPLE, "impressions.parquet"), bucket, "raw/a.parquet")
    proc = run_cli("convert", spec.format(bucket=bucket), "-o", str(tmp_path / "out"), *KEY, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("roolog: error: ") and why.format(bucket=bucket) in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_access_denied_is_one_line(store, tmp_path, monkeypatch):
    import moto.settings

    bucket = store.bucket()
    uri = store.upload(os.path.join(SAMPLE, "impressions.parquet"), bucket, "raw/a.parquet")
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server checks keys from now on
    with pytest.raises(UsageProblem, match=r"^s3://.*/raw/a.parquet: access denied"):
        roolog.convert([uri], str(tmp_path / "out"), key="request_id", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("what", ["changed", "deleted"])
def test_an_object_changed_or_deleted_during_the_run_fails_and_nothing_is_finished(store, tmp_path, monkeypatch,
                                                                                    what):
    bucket = store.bucket()
    uri = store.upload(os.path.join(SAMPLE, "impressions.parquet"), bucket, "raw/a.parquet")
    real = stores.download

    def meanwhile(obj, *rest):  # after the listing, before the read
        if what == "changed":
            store.client.put_object(Bucket=bucket, Key="raw/a.parquet", Body=b"PAR1 something else PAR1")
        else:
            store.client.delete_object(Bucket=bucket, Key="raw/a.parquet")
        return real(obj, *rest)

    monkeypatch.setattr(stores, "download", meanwhile)
    out = tmp_path / "out"
    with pytest.raises(RoologError, match=f"^{uri}: the object (was )?{what} during the run"):
        roolog.convert([uri], str(out), key="request_id", progress=False)
    assert not (out / "_manifest.json").exists() and not any(p.name.startswith("part-") for p in out.rglob("*"))


def test_a_failing_store_is_tried_five_times_then_one_line(store, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries off: roolog's are the ones counted
    waits: list[float] = []
    monkeypatch.setattr(stores, "sleep", waits.append)
    with pytest.raises(RoologError, match=r"the store failed 5 times looking it up \(EndpointConnectionError"):
        roolog.convert(["s3://logs/raw/"], str(tmp_path / "out"), key="request_id", progress=False)
    assert waits == list(stores.RETRY_DELAYS) == [0.5, 1.0, 2.0, 4.0]
    assert not (tmp_path / "out").exists()


def test_a_call_that_fails_then_succeeds_is_retried(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(stores, "sleep", waits.append)
    tries = iter([ConnectionError("reset"), OSError("503 SlowDown"), "listed"])

    def call():
        got = next(tries)
        if isinstance(got, Exception):
            raise got
        return got

    assert stores._call("s3://b/k", "listing", call) == "listed" and waits == [0.5, 1.0]


def test_storage_options_reach_the_file_system(store, tmp_path, monkeypatch):
    bucket = store.bucket()
    uri = store.upload(os.path.join(SAMPLE, "impressions.parquet"), bucket, "raw/a.parquet")
    convert_cli([os.path.join(SAMPLE, "impressions.parquet")], tmp_path / "local")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = {"AWS_ENDPOINT_URL": closed}  # only the option says where the server is
    proc = run_cli("convert", uri, "-o", str(tmp_path / "s3"), *KEY, "-q", "--storage-option",
                   f"endpoint_url={store.endpoint}", env=env)
    assert proc.returncode == 0, proc.stderr
    assert shard_bytes(tmp_path / "s3") == shard_bytes(tmp_path / "local")
    for bad, why in [("endpoint_url", "is not KEY=VALUE"), ("no_such_option=1", "not one the s3:// file system takes"),
                     ("secret=abc", "credentials are not taken from the command line")]:
        proc = run_cli("convert", uri, "-o", str(tmp_path / "bad"), *KEY, "--storage-option", bad)
        assert proc.returncode == 2 and why in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert stores.parse_storage_options(["a=true", "b=3", "c=x", "d=[1]", "e="]) == (
        ("a", True), ("b", 3), ("c", "x"), ("d", "[1]"), ("e", ""))
    manifest = json.loads((tmp_path / "s3" / "_manifest.json").read_text())
    assert "storage_options" not in json.dumps(manifest)  # how the store is reached decides nothing


@pytest.mark.spark
def test_the_spark_engine_reads_the_bucket_itself_and_gives_the_local_bytes(store, tmp_path, hive):
    from roolog.run.spark import spark_session

    bucket = store.bucket()
    uri = store.upload(hive, bucket, "logs")
    roolog.convert([str(hive)], str(tmp_path / "local"), key="request_id", order_by="position", progress=False)
    session = spark_session("local[2]")
    try:
        roolog.convert([uri], str(tmp_path / "spark"), key="request_id", order_by="position", progress=False,
                       engine="spark", read=ReadOptions())
    finally:
        session.stop()
    assert all_shards(tmp_path / "spark") == all_shards(tmp_path / "local")
    inputs = json.loads((tmp_path / "spark" / "ds=2026-01-01" / "_manifest.json").read_text())["inputs"]
    assert [r["xxh64"] for r in inputs] == [local_xxh64(hive / "ds=2026-01-01" / f"part-{p}.parquet") for p in (0, 1)]


def test_the_readme_commands_run_as_written_against_the_bucket(store, tmp_path, hive):
    """The roolog commands of README "Logs in object stores", on s3://logs/impressions/ (two hive days)."""
    import re
    import shlex

    from helpers import REPO

    with open(os.path.join(REPO, "README.md")) as fh:
        text = fh.read()
    section = text[text.index("\n## Logs in object stores"):]
    section = section[:section.index("\n## ", 1)]
    commands = [line for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines()
                if line.startswith("roolog ")]
    assert len(commands) == 2
    store.client.create_bucket(Bucket="logs")
    for day in ("01", "02"):
        store.upload(hive / f"ds=2026-01-{day}", "logs", f"impressions/ds=2026-12-{day}")
    for command in commands:
        proc = run_cli(*shlex.split(command)[1:], cwd=tmp_path)
        assert proc.returncode == 0, (command, proc.stderr)
    manifest = json.loads((tmp_path / "requests" / "_manifest.json").read_text())
    assert [p["name"] for p in manifest["partitions"]] == ["ds=2026-12-01", "ds=2026-12-02"]
    ids = pq.read_table(hive, columns=["request_id"]).column("request_id")
    assert f"{len(ids):,} impressions in {len(pc.unique(ids)):,} requests" in proc.stdout


def test_a_same_size_rewrite_in_the_same_second_is_redone_and_a_listing_in_milliseconds_is_not_a_change(
        store, tmp_path):
    bucket = store.bucket()
    text = b"request_id,item,click\n1,10,0\n1,11,1\n2,12,0\n"
    (tmp_path / "a.csv").write_bytes(text)
    uri = store.upload(tmp_path / "a.csv", bucket, "raw/a.csv")
    first = roolog.convert([uri], str(tmp_path / "out"), key="request_id", progress=False)
    (tmp_path / "a.csv").write_bytes(text.replace(b"11,1", b"11,0"))  # same size, other bytes
    store.upload(tmp_path / "a.csv", bucket, "raw/a.csv")
    again = roolog.convert([uri], str(tmp_path / "out"), key="request_id", progress=False)
    assert not first["skipped"] and not again["skipped"]  # the ETag told, whatever the mtime said
    roolog.convert([str(tmp_path / "a.csv")], str(tmp_path / "local"), key="request_id", progress=False)
    assert shard_bytes(tmp_path / "out") == shard_bytes(tmp_path / "local")
    [listed] = stores.list_objects(uri, ())[1]
    stores.check_unchanged(listed, ())
    later = stores.StoredObject(listed.uri, listed.size, listed.mtime_ns + 123_000_000, listed.etag)
    stores.check_unchanged(later, ())  # a listing's milliseconds (MinIO) against a HEAD's whole seconds
    with pytest.raises(RoologError, match="changed during the run"):
        stores.check_unchanged(stores.StoredObject(listed.uri, listed.size, listed.mtime_ns, "0" * 32), ())


def test_opening_a_gone_object_and_a_full_local_disk_are_said_as_such(store, tmp_path, monkeypatch):
    bucket = store.bucket()
    uri = store.upload(os.path.join(SAMPLE, "impressions.parquet"), bucket, "raw/a.parquet")
    [listed] = stores.list_objects(uri, ())[1]
    waits: list[float] = []
    monkeypatch.setattr(stores, "sleep", waits.append)
    with pytest.raises(OSError) as err:
        stores.download(listed, "/dev/full", ())  # writes fail with ENOSPC: the disk's fault, not the store's
    assert err.value.errno == 28 and not isinstance(err.value, RoologError) and waits == []
    with stores.open_object(uri, ()) as fh:
        assert pq.read_schema(fh).names == pq.read_schema(os.path.join(SAMPLE, "impressions.parquet")).names
    store.client.delete_object(Bucket=bucket, Key="raw/a.parquet")
    with pytest.raises(RoologError, match=f"^{uri}: the object was deleted during the run"):
        stores.open_object(uri, ())
    assert waits == []


def test_a_file_uri_is_the_local_path_and_never_reads_the_output_inside_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(os.path.join(SAMPLE, "impressions.parquet"), data / "a.parquet")
    for _ in range(2):  # the second run lists data/out/part-*.parquet too, unless it knows OUT is there
        proc = run_cli("convert", f"file://{data}/", "-o", str(data / "out"), *KEY, "-q")
        assert proc.returncode == 0, proc.stderr
    [record] = json.loads((data / "out" / "_manifest.json").read_text())["inputs"]
    assert record["path"] == str(data / "a.parquet")


def test_an_object_is_unchanged_only_with_the_same_size_mtime_and_etag():
    """What the listing alone decides (plan.unchanged): any of the three differing, or no ETag, is a change."""
    from dataclasses import replace

    from roolog.read.inputs import InputFile, InputRecord
    from roolog.run.plan import unchanged

    f = InputFile("s3://b/a.csv", "csv", None, (), 100, 1.5, 1_500_000_000, etag="e1")
    record = InputRecord("s3://b/a.csv", 100, 1.5, "0" * 16, {"mtime_ns": 1_500_000_000, "etag": "e1"})
    assert unchanged([record], [f])
    assert not unchanged([record], [replace(f, etag="e2")])  # rewritten within the same second
    assert not unchanged([record], [replace(f, mtime_ns=2_500_000_000)])
    assert not unchanged([record], [replace(f, size=101)])
    assert not unchanged([record], [replace(f, path="s3://b/b.csv")])
    no_etag = replace(f, etag="")
    assert not unchanged([replace(record, stat=no_etag.stat())], [no_etag])  # nothing tells: read again
