"""`convert --cluster-by COL`: requests with equal cluster values in one shard (xxh64 of the values mod N,
computed here independently with xxhash), next to each other, ordered by the values (nulls last) then by input
order; lossless; the same bytes whatever the memory limit; the option recorded and checked like the others."""

import json
import os
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from helpers import assert_same_rows, roundtrip, run_cli, shard_bytes

import roolog
from roolog.synthetic import generate_repeat_users


def _log(seed: int, users: int = 40, requests: int = 400, shuffle: bool = True, strings: bool = False) -> pa.Table:
    """Impression rows of `requests` requests by `users` users (some with a null user, some with a null
    country), rows shuffled so that requests are scattered; column `row` is each row's input position."""
    rng = np.random.default_rng(seed)
    rows = {"request_id": [], "user_id": [], "country": [], "history": [], "item_id": [], "position": []}
    for r in range(requests):
        u = int(rng.integers(users))
        user = None if u == 0 else (f"u{u:03d}é" if strings else u * 7919)
        country = None if u % 5 == 1 else ["de", "fr", "us"][u % 3]
        history = [int(x) for x in rng.integers(0, 50, size=int(rng.integers(0, 30)))]
        for p in range(int(rng.integers(1, 8))):
            rows["request_id"].append(r * 13 + 5)
            rows["user_id"].append(user)
            rows["country"].append(country)
            rows["history"].append(history)
            rows["item_id"].append(int(rng.integers(1000)))
            rows["position"].append(p)
    table = pa.table(rows, schema=pa.schema([("request_id", pa.int64()),
                                             ("user_id", pa.string() if strings else pa.int64()),
                                             ("country", pa.string()), ("history", pa.list_(pa.int64())),
                                             ("item_id", pa.int64()), ("position", pa.int32())]))
    if shuffle:
        table = table.take(pa.array(rng.permutation(table.num_rows)))
    return table


def _hash(value, t: pa.DataType) -> int:
    """xxh64 of one cluster value's canonical bytes (README: int64 as 8 little-endian bytes, text as UTF-8,
    null as no bytes)."""
    if value is None:
        return xxhash.xxh64_intdigest(b"")
    if pa.types.is_integer(t):
        return xxhash.xxh64_intdigest(struct.pack("<q", value))
    return xxhash.xxh64_intdigest(value.encode())


def _expected_shard(values: tuple, types: list[pa.DataType], shards: int) -> int:
    hashes = [_hash(v, t) for v, t in zip(values, types, strict=True)]
    h = hashes[0] if len(hashes) == 1 else xxhash.xxh64_intdigest(struct.pack(f"<{len(hashes)}Q", *hashes))
    return h % shards


def _sort_key(values: tuple, first_row: int):
    return tuple((v is None, v if v is not None else 0) for v in values) + (first_row,)


def _check_clustered(table: pa.Table, out, columns: tuple[str, ...], shards: int) -> None:
    """Every request in the shard its cluster values hash to, shards ordered by (values, first input row)."""
    first_row: dict = {}
    for i, k in enumerate(table.column("request_id").to_pylist()):
        first_row.setdefault(k, i)
    types = [table.schema.field(c).type for c in columns]
    seen = 0
    for s in range(shards):
        shard = pq.read_table(os.path.join(out, f"part-{s:05d}.parquet"))
        keys = shard.column("request_id").to_pylist()
        values = list(zip(*(shard.column(c).to_pylist() for c in columns), strict=True))
        assert all(_expected_shard(v, types, shards) == s for v in values), f"shard {s}: a request elsewhere"
        order = [_sort_key(v, first_row[k]) for v, k in zip(values, keys, strict=True)]
        assert order == sorted(order), f"shard {s}: requests not ordered by {columns}, then input order"
        seen += len(keys)
    assert seen == len(first_row)


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("strings", [False, True])
def test_requests_go_to_their_cluster_shard_in_cluster_order_and_explode_back(tmp_path, shards, strings):
    table = _log(seed=shards + 10 * strings, strings=strings)
    pq.write_table(table, tmp_path / "log.parquet", row_group_size=300)
    report, exploded = roundtrip([tmp_path / "log.parquet"], tmp_path / "out", key="request_id",
                                 order_by="position", shards=shards, cluster_by="user_id")
    _check_clustered(table, tmp_path / "out", ("user_id",), shards)
    assert_same_rows(table, exploded.select(table.column_names))
    assert report["totals"]["requests"] == len(set(table.column("request_id").to_pylist()))


def test_two_cluster_columns_hash_and_order_together(tmp_path):
    table = _log(seed=3)
    pq.write_table(table, tmp_path / "log.parquet")
    _, exploded = roundtrip([tmp_path / "log.parquet"], tmp_path / "out", key="request_id", order_by="position",
                            shards=4, cluster_by=["country", "user_id"])
    _check_clustered(table, tmp_path / "out", ("country", "user_id"), 4)
    assert_same_rows(table, exploded.select(table.column_names))


def test_same_bytes_whatever_the_memory_limit_and_input_batching(tmp_path):
    """A small memory limit makes many sorted runs per shard, merged on reading: the bytes must not change."""
    table = _log(seed=5, users=60, requests=1500)
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=200)
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=100_000)
    options = dict(key="request_id", order_by="position", shards=2, cluster_by="user_id", progress=False)
    roolog.convert([str(tmp_path / "a.parquet")], str(tmp_path / "big"), memory_limit=1 << 30, **options)
    roolog.convert([str(tmp_path / "a.parquet")], str(tmp_path / "small"), memory_limit=200_000, **options)
    roolog.convert([str(tmp_path / "b.parquet")], str(tmp_path / "other"), memory_limit=300_000, **options)
    big = shard_bytes(tmp_path / "big")
    assert shard_bytes(tmp_path / "small") == big
    assert shard_bytes(tmp_path / "other") == big
    _check_clustered(table, tmp_path / "small", ("user_id",), 2)


def test_recorded_in_manifest_and_footer_and_a_change_redoes(tmp_path):
    table = _log(seed=6, shuffle=False)
    pq.write_table(table, tmp_path / "log.parquet")
    args = [str(tmp_path / "log.parquet"), "-o", str(tmp_path / "out"), "--key", "request_id", "--json", "-q"]
    first = run_cli("convert", *args, "--cluster-by", "user_id")
    assert first.returncode == 0, first.stderr
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["options"]["cluster_by"] == ["user_id"]
    footer = json.loads(pq.ParquetFile(tmp_path / "out" / "part-00000.parquet").schema_arrow.metadata[b"roolog"])
    assert footer["cluster_by"] == ["user_id"]
    again = run_cli("convert", *args, "--cluster-by", "user_id")
    assert json.loads(again.stdout)["skipped"] is True
    plain = run_cli("convert", *args)
    assert json.loads(plain.stdout)["skipped"] is False
    assert "cluster_by" not in json.loads((tmp_path / "out" / "_manifest.json").read_text())["options"]
    footer = json.loads(pq.ParquetFile(tmp_path / "out" / "part-00000.parquet").schema_arrow.metadata[b"roolog"])
    assert "cluster_by" not in footer


def test_schema_file_cluster_by(tmp_path):
    table = _log(seed=7)
    pq.write_table(table, tmp_path / "log.parquet")
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["request_id"]\norder_by = "position"\nrequest = ["user_id", "country", "history"]\n'
                      'impression = ["item_id", "position"]\ncluster_by = ["user_id"]\n')
    roolog.convert([str(tmp_path / "log.parquet")], str(tmp_path / "out"), schema_file=str(schema), shards=2,
                   progress=False)
    _check_clustered(table, tmp_path / "out", ("user_id",), 2)
    other = run_cli("convert", str(tmp_path / "log.parquet"), "-o", str(tmp_path / "o2"), "--schema", str(schema),
                    "--cluster-by", "country")
    assert other.returncode == 2 and "disagrees with the schema file's cluster_by" in other.stderr


def test_a_cluster_column_that_varies_inside_a_request_is_an_error_naming_it(tmp_path):
    table = _log(seed=8, shuffle=False)
    users = table.column("user_id").to_pylist()
    users[1] = 424242  # row 1 belongs to the first request, whose row 0 has another user
    assert table.column("request_id")[0] == table.column("request_id")[1]
    pq.write_table(table.set_column(1, "user_id", pa.array(users, pa.int64())), tmp_path / "log.parquet")
    for extra in ([], ["--on-conflict", "demote"]):
        result = run_cli("convert", str(tmp_path / "log.parquet"), "-o", str(tmp_path / "out"), "--key",
                         "request_id", "--cluster-by", "user_id", *extra)
        assert result.returncode == 1, result.stderr
        assert "--cluster-by column 'user_id' varies inside request request_id=5" in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "out" / "_manifest.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--cluster-by", "request_id"], "is a key column"),
    (["--cluster-by", "position", "--order-by", "position"], "is the order column"),
    (["--cluster-by", "nope"], "'nope' is not a column of the input"),
    (["--cluster-by", "score"], "has type double; a cluster column must be"),
    (["--cluster-by", "user_id", "--cluster-by", "user_id"], "names 'user_id' more than once"),
])
def test_usage_errors_in_one_line(tmp_path, args, message):
    table = _log(seed=9, shuffle=False, requests=20)
    table = table.append_column("score", pa.array(np.arange(table.num_rows) / 3.0))
    pq.write_table(table, tmp_path / "log.parquet")
    result = run_cli("convert", str(tmp_path / "log.parquet"), "-o", str(tmp_path / "out"), "--key", "request_id",
                     "-q", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_repeat_users_meet_the_storage_targets(tmp_path):
    """Issue 25's targets on the repeat-user log: >= 5.5x smaller than the flat time-ordered file and >= 1.8x
    smaller than the flat file sorted by user (pyarrow, zstd 3), at one shard and at several."""
    table = generate_repeat_users(users=300, requests_per_user=20, history_len=200, seed=3)
    flat, by_user = tmp_path / "flat.parquet", tmp_path / "by_user.parquet"
    pq.write_table(table, flat, compression="zstd", compression_level=3)
    pq.write_table(table.sort_by("user_id"), by_user, compression="zstd", compression_level=3)
    for shards in (1, 4):
        out = tmp_path / f"out{shards}"
        roolog.convert([str(flat)], str(out), key="request_id", order_by="position", shards=shards,
                       cluster_by="user_id", progress=False)
        size = sum(len(b) for b in shard_bytes(out).values())
        assert os.path.getsize(flat) >= 5.5 * size, (shards, os.path.getsize(flat) / size)
        assert os.path.getsize(by_user) >= 1.8 * size, (shards, os.path.getsize(by_user) / size)


def test_stats_and_infer_schema_suggest_a_cluster_column_only_where_it_pays(tmp_path):
    """The suggestion is honest: where stats suggests user_id, convert --cluster-by user_id makes the shards at
    least a tenth smaller; a log whose user id repeats but whose request-level values do not gain (random
    histories) and the sample log (users do not repeat) get no suggestion."""
    repeat = tmp_path / "repeat.parquet"
    pq.write_table(generate_repeat_users(users=200, requests_per_user=15, history_len=100, seed=4), repeat)
    suggestion = roolog.stats([str(repeat)], ("request_id",))["cluster_suggestion"]
    assert suggestion["column"] == "user_id" and suggestion["ratio"] > 1.3
    sizes = {}
    for cluster in ((), ("user_id",)):
        out = tmp_path / f"out{len(cluster)}"
        roolog.convert([str(repeat)], str(out), key="request_id", cluster_by=cluster, progress=False)
        sizes[cluster] = sum(len(b) for b in shard_bytes(out).values())
    assert sizes[()] >= sizes[("user_id",)] / 0.9
    text = run_cli("stats", str(repeat), "--key", "request_id")
    assert "suggestion: --cluster-by user_id" in text.stdout + text.stderr
    schema = tmp_path / "s.toml"
    assert run_cli("infer-schema", str(repeat), "--key", "request_id", "-o", str(schema), "-q").returncode == 0
    assert 'cluster_by = ["user_id"]' in schema.read_text()
    roolog.convert([str(repeat)], str(tmp_path / "inferred"), schema_file=str(schema), progress=False)
    def requests(out):
        return pq.read_table(out / "part-00000.parquet", columns=["request_id"]).column(0).to_pylist()
    assert requests(tmp_path / "inferred") == requests(tmp_path / "out1")  # clustered alike

    random_histories = tmp_path / "random.parquet"
    pq.write_table(_log(seed=12, users=30, requests=600, shuffle=False), random_histories)
    assert roolog.stats([str(random_histories)], ("request_id",))["cluster_suggestion"] is None
    sample = os.path.join(os.path.dirname(__file__), "..", "..", "sample_data", "impressions.parquet")
    assert roolog.stats([sample], ("request_id",))["cluster_suggestion"] is None
