"""Shared test helpers (import with `from helpers import ...`): paths to the real logs, a lossless-compare of
row multisets, a CLI runner, and the convert-and-check helpers
of the type, key, grouping, level inference and bad input tests."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("ROOLOG_SHARED", os.path.join(REPO, "..", "shared"))
DATASETS = os.path.join(SHARED, "datasets")
SAMPLE = os.path.join(REPO, "sample_data")
MIND = os.path.join(DATASETS, "mind_small_sample")
SAMPLE_SCHEMA = os.path.join(REPO, "schemas", "sample.toml")


def sample_output(out, **options) -> str:
    """The sample log converted with its schema file into `out` (options: shards, row group sizes, ...)."""
    import roolog

    roolog.convert([os.path.join(SAMPLE, "impressions.parquet")], str(out), schema_file=SAMPLE_SCHEMA,
                   progress=False, **options)
    return str(out)


def mind_output(out) -> str:
    """The MIND sample converted with its schema file into `out`."""
    import roolog

    roolog.convert([os.path.join(MIND, "impressions_exploded.parquet")], str(out),
                   schema_file=os.path.join(REPO, "schemas", "mind.toml"), progress=False)
    return str(out)
TRIVAGO = os.path.join(DATASETS, "trivago_recsys2019_sample")
LTR = os.path.join(DATASETS, "lightgbm_lambdarank_example")
NAN = float("nan")


def canon(value):
    """A hashable, bit-exact stand-in for a cell: -0.0 != 0.0, NaN == NaN, lists become tuples."""
    if isinstance(value, float):
        return ("float", value.hex()) if not math.isnan(value) else ("float", "nan")
    if isinstance(value, list):
        return tuple(canon(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, canon(v)) for k, v in value.items())
    return value


def row_multiset(table: pa.Table) -> collections.Counter:
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return collections.Counter(tuple(canon(c[r]) for c in columns) for r in range(table.num_rows))


def assert_same_rows(expected: pa.Table, actual: pa.Table) -> None:
    assert actual.schema.names == expected.schema.names
    for f in expected.schema:
        assert actual.schema.field(f.name).type.equals(f.type), f"{f.name}: {actual.schema.field(f.name).type}"
    assert actual.num_rows == expected.num_rows
    assert row_multiset(actual) == row_multiset(expected)


def roundtrip(inputs, out, **options) -> tuple[dict, pa.Table]:
    """convert then explode; returns the report and the exploded table."""
    import roolog

    options.setdefault("progress", False)
    report = roolog.convert([str(i) for i in inputs], str(out), **options)
    target = str(out) + ".exploded.parquet"
    roolog.explode(str(out), target)
    return report, pq.read_table(target)


def roolog_exe() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "roolog")
    return exe if os.path.exists(exe) else "roolog"


def run_cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The installed `roolog` entry point, as a real subprocess (`env`: extra environment variables)."""
    return subprocess.run([roolog_exe(), *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, **env) if env else None)


def levels(report: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"key": set(), "request": set(), "impression": set()}
    for c in report["columns"]:
        out[c["level"]].add(c["name"])
    return out


def shard_bytes(out) -> dict[str, bytes]:
    """Every shard file of an output folder (a pathlib.Path), by name: for byte-identity checks."""
    return {f: (out / f).read_bytes() for f in sorted(os.listdir(out)) if f.startswith("part-")}


def manifest_without_timestamps(out) -> dict:
    manifest = json.loads((out / "_manifest.json").read_text())
    manifest.pop("created"), manifest.pop("checksum")  # the checksum seals the timestamp too
    for p in manifest.get("partitions", []):
        p.pop("manifest_xxh64")  # of a partition manifest: its timestamp too
    return manifest


# ---- convert-and-check helpers ----------------------------------------------------------------------------

def comparable(table: pa.Table) -> pa.Table:
    """Nanosecond temporal columns as int64, so that to_pylist (no pandas) keeps every bit."""
    for i, f in enumerate(table.schema):
        t = f.type
        if (pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time64(t)) and t.unit == "ns":
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
    return table


def assert_lossless(expected: pa.Table, actual: pa.Table) -> None:
    assert actual.schema.names == expected.schema.names
    for f in expected.schema:
        got = actual.schema.field(f.name).type
        assert got.equals(f.type), f"{f.name}: {got} != {f.type}"
    assert_same_rows(comparable(expected), comparable(actual))


def shard_rows(out) -> pa.Table:
    files = sorted(f for f in os.listdir(out) if f.startswith("part-"))
    return pa.concat_tables([pq.read_table(os.path.join(out, f)) for f in files])


def key_tuples(table: pa.Table, key) -> list[tuple]:
    table = comparable(table)
    cols = [table.column(k).to_pylist() for k in key]
    return [tuple(canon(c[i]) for c in cols) for i in range(table.num_rows)]


def expected_request_level(table: pa.Table, key) -> set[str]:
    """Independent reference: a column is request-level iff it holds one value (bit-exact) per request."""
    keys = key_tuples(table, key)
    table = comparable(table)
    out = set()
    for name in table.column_names:
        if name in key:
            continue
        seen: dict[tuple, set] = {}
        for k, v in zip(keys, table.column(name).to_pylist(), strict=True):
            seen.setdefault(k, set()).add(canon(v))
        if all(len(s) == 1 for s in seen.values()):
            out.add(name)
    return out


def levels_of(report) -> dict[str, str]:
    return {c["name"]: c["level"] for c in report["columns"]}


def write(table: pa.Table, path, row_group_size=None):
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def shuffled(table: pa.Table, seed: int) -> pa.Table:
    return table.take(pa.array(np.random.default_rng(seed).permutation(table.num_rows)))


def check_convert(tmp_path, table: pa.Table, key=("k",), row_group_size=None, **options):
    """Convert + explode through Parquet; asserts losslessness and one row per distinct key. Returns report."""
    os.makedirs(tmp_path, exist_ok=True)
    path = write(table, tmp_path / "in.parquet", row_group_size)
    reference = pq.read_table(path)  # what the reader hands roolog (e.g. date64 is stored as date32)
    report, back = roundtrip([path], tmp_path / "out", key=tuple(key), **options)
    assert_lossless(reference, back)
    rows = shard_rows(tmp_path / "out")
    out_keys = key_tuples(rows, key)
    distinct = set(key_tuples(reference, key))
    assert len(out_keys) == len(set(out_keys)) == len(distinct), "exactly one output row per distinct key"
    assert set(out_keys) == distinct
    assert report["totals"]["requests"] == len(distinct)
    assert report["totals"]["rows"] == reference.num_rows
    assert {n for n, lvl in levels_of(report).items() if lvl == "request"} == expected_request_level(reference, key)
    return report


def random_log(n_requests=120, seed=0, composite=False):
    """A log of `n_requests` requests of 1 to 8 rows each: key `k1` (uint64 at or above 2**63), or
    (`k1`, `k2`) when `composite`; nulls, -0.0 and NaN among the values."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, n_requests)
    req = np.repeat(np.arange(n_requests), sizes)
    n = len(req)
    pos = rng.integers(0, 4, n).astype(object)
    pos[rng.random(n) < 0.1] = None
    f = rng.choice(np.array([0.0, -0.0, NAN, 1.5]), n)
    cols = {
        "k1": pa.array([int(r) % 7 if composite else int(r) * 2**57 % 2**63 + 2**63 for r in req], pa.uint64()),
        "seq": pa.array(np.arange(n)),
        "pos": pa.array(pos.tolist(), pa.int16()),
        "user": pa.array((req * 31 % 11).tolist(), pa.int64()),
        "hist": pa.array([[int(r), int(r) + 1] for r in req], pa.list_(pa.int64())),
        "f": pa.array(f),
        "s": pa.array([None if x % 5 == 0 else f"s{x % 3}" for x in rng.integers(0, 100, n)]),
    }
    if composite:
        cols["k2"] = pa.array([f"r{r // 7}" for r in req])
    return pa.table(cols)


def fails_cleanly(proc, out, codes=(1, 2)):
    """The failure contract: exit code in `codes`, one 'roolog: error: ' line, no traceback, no manifest in `out`;
    returns the line."""
    assert proc.returncode in codes, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("roolog: error: "), lines[0]
    assert not os.path.exists(os.path.join(out, "_manifest.json"))
    return lines[0]


def request_order(out, impression: set[str] | None = None):
    """The documented order of the requests in each shard of `out`, as a sort key of (a request row as
    `to_pylist` gives it, its first input row): the manifest's `encodings.request_order` (by number of
    impressions, or by a timestamp column, nulls last; none: input order), then the first input row."""
    with open(os.path.join(str(out), "_manifest.json")) as fh:
        manifest = json.load(fh)
    chosen = manifest["encodings"].get("request_order")
    lists = set(manifest["schema"]["impression"]) if impression is None else impression

    def key(request: dict, first_row: int) -> tuple:
        if chosen is None:
            return (first_row,)
        if chosen == "impressions":
            n = next((len(request[c]) for c in request if c in lists), request.get("__roolog_impressions"))
            return (n, first_row)
        value = request[chosen]
        return (value is None, value if value is not None else 0, first_row)

    return key


class S3Store:
    """A running S3 API (moto's server mode) and a boto3 client on it; see `s3_server`."""

    _names = iter(range(10**9))

    def __init__(self, endpoint: str):
        import boto3

        self.endpoint = endpoint
        self.client = boto3.client("s3")

    def bucket(self) -> str:
        """A new empty bucket's name."""
        name = f"logs-{next(self._names)}"
        self.client.create_bucket(Bucket=name)
        return name

    def upload(self, local, bucket: str, prefix: str) -> str:
        """A local file or folder tree put under s3://bucket/prefix; returns that URI."""
        local = str(local)
        if os.path.isfile(local):
            self.client.upload_file(local, bucket, prefix)
        else:
            for dirpath, _, names in os.walk(local):
                for n in names:
                    rel = os.path.relpath(os.path.join(dirpath, n), local).replace(os.sep, "/")
                    self.client.upload_file(os.path.join(dirpath, n), bucket, f"{prefix}/{rel}")
        return f"s3://{bucket}/{prefix}"

    def etag(self, uri: str) -> str:
        bucket, key = uri[len("s3://"):].split("/", 1)
        return self.client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


@contextlib.contextmanager
def s3_server(folder):
    """moto's S3 server on 127.0.0.1 (a free port) with the standard AWS environment pointing at it, for
    this process and what it starts; `folder` holds no AWS config, so no ~/.aws of whoever runs the tests
    counts. Stopped, and the environment put back, on exit."""
    import pytest
    from moto.server import ThreadedMotoServer  # the dev extra's moto[server]

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    none = os.path.join(str(folder), "no-aws-config")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                                "AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": none,
                                "AWS_CONFIG_FILE": none}.items():
                mp.setenv(name, value)
            mp.delenv("AWS_PROFILE", raising=False)
            yield S3Store(f"http://{host}:{port}")
    finally:
        server.stop()
