"""Exactly one request row per key whatever the row order, batch size or memory limit."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import assert_same_rows, roundtrip, row_multiset

import roolog
from roolog.read.sources import ReadOptions
from roolog.synthetic import generate_impressions


def request_rows(out) -> pa.Table:
    tables = [pq.read_table(os.path.join(out, f)) for f in sorted(os.listdir(out)) if f.startswith("part-")]
    return pa.concat_tables(tables)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    contiguous = generate_impressions(400, 8, seed=11)
    shuffled = contiguous.take(pa.array(np.random.default_rng(5).permutation(contiguous.num_rows)))
    pq.write_table(contiguous, folder / "contiguous.parquet")
    pq.write_table(shuffled, folder / "shuffled.parquet", row_group_size=500)
    return folder, contiguous


def test_shuffled_gives_the_same_requests_as_contiguous(logs, tmp_path):
    folder, contiguous = logs
    roolog.convert([str(folder / "contiguous.parquet")], str(tmp_path / "a"), key=("request_id",),
                   order_by="position", progress=False)
    report, exploded = roundtrip([folder / "shuffled.parquet"], tmp_path / "b", key=("request_id",),
                                 order_by="position", read=ReadOptions(batch_bytes=20_000))
    a, b = request_rows(tmp_path / "a"), request_rows(tmp_path / "b")
    assert a.num_rows == b.num_rows == 400
    assert len(set(b.column("request_id").to_pylist())) == 400
    assert row_multiset(a) == row_multiset(b)
    assert_same_rows(contiguous, exploded)
    assert report["totals"]["requests"] == 400


def test_tiny_memory_limit_folds_in_parts_and_gives_the_same_bytes(logs, tmp_path):
    folder, contiguous = logs
    roolog.convert([str(folder / "shuffled.parquet")], str(tmp_path / "a"), key=("request_id",),
                   order_by="position", progress=False, shards=2)
    report, exploded = roundtrip([folder / "shuffled.parquet"], tmp_path / "b", key=("request_id",),
                                 order_by="position", shards=2, memory_limit=64 << 10,
                                 read=ReadOptions(batch_bytes=50_000))
    assert report["spill"]["most_parts"] > 1
    for shard in ("part-00000.parquet", "part-00001.parquet"):
        assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()
    assert_same_rows(contiguous, exploded)


def test_requests_cut_by_batch_boundaries_are_carried(logs, tmp_path):
    folder, contiguous = logs
    report, exploded = roundtrip([folder / "contiguous.parquet"], tmp_path / "o", key=("request_id",),
                                 read=ReadOptions(batch_bytes=3_000))
    assert report["totals"]["requests"] == 400
    assert_same_rows(contiguous, exploded)
    # without an order column, lists keep input order: the contiguous input's positions are 0, 1, 2, ...
    for positions in request_rows(tmp_path / "o").column("position").to_pylist():
        assert positions == list(range(len(positions)))


def test_one_huge_request_is_emitted_in_pieces_and_merged(tmp_path):
    n = 30_000
    table = pa.table({"rid": np.r_[np.zeros(n, dtype=np.int64), np.arange(1, 50)],
                      "item": np.arange(n + 49), "user": np.r_[np.full(n, 7), np.arange(1, 50)]})
    pq.write_table(table, tmp_path / "skew.parquet")
    report, exploded = roundtrip([tmp_path / "skew.parquet"], tmp_path / "o", key=("rid",),
                                 read=ReadOptions(batch_bytes=8_000), memory_limit=1 << 20)
    assert report["totals"]["requests"] == 50
    assert report["impressions_per_request"]["max"] == n
    rows = request_rows(tmp_path / "o").sort_by("rid")
    assert rows.column("item")[0].as_py() == list(range(n))  # input order kept across the pieces
    assert_same_rows(table, exploded)


def test_order_by_is_stable_and_puts_nulls_last(tmp_path):
    table = pa.table({"rid": [1, 1, 1, 1, 2, 2], "pos": [2, None, 1, 1, 5, 4], "item": list("abcdef")})
    pq.write_table(table, tmp_path / "t.parquet")
    roolog.convert([str(tmp_path / "t.parquet")], str(tmp_path / "o"), key=("rid",), order_by="pos",
                   progress=False)
    rows = request_rows(tmp_path / "o").sort_by("rid").to_pylist()
    assert rows[0]["item"] == ["c", "d", "a", "b"]
    assert rows[0]["pos"] == [1, 1, 2, None]
    assert rows[1]["item"] == ["f", "e"]


def test_scattered_request_whose_column_only_varies_across_pieces(tmp_path):
    """A column constant within each run but not across a request's runs is still impression-level."""
    table = pa.table({"rid": [1, 2, 1, 3, 2], "country": ["DE", "FR", "IT", "ES", "FR"], "item": [1, 2, 3, 4, 5]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1)
    report, exploded = roundtrip([tmp_path / "t.parquet"], tmp_path / "o", key=("rid",),
                                 read=ReadOptions(batch_bytes=1))
    assert {c["name"]: c["level"] for c in report["columns"]}["country"] == "impression"
    assert_same_rows(table, exploded)
    rows = {r["rid"]: r for r in request_rows(tmp_path / "o").to_pylist()}
    assert rows[1]["country"] == ["DE", "IT"] and rows[2]["country"] == ["FR", "FR"]


def test_demote_keeps_a_varying_declared_column_as_a_list(tmp_path):
    table = pa.table({"rid": [1, 1, 2, 2], "user": [5, 5, 6, 6], "country": ["DE", "DE", "FR", "IT"],
                      "item": [1, 2, 3, 4]})
    pq.write_table(table, tmp_path / "t.parquet")
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["rid"]\nrequest = ["user", "country"]\nimpression = ["item"]\n')
    report, exploded = roundtrip([tmp_path / "t.parquet"], tmp_path / "o", schema_file=str(schema),
                                 on_conflict="demote")
    assert report["demoted"] == ["country"]
    assert_same_rows(table, exploded)
    assert pq.read_schema(tmp_path / "o" / "part-00000.parquet").field("country").type == pa.list_(pa.string())


def test_no_impression_level_column_keeps_the_row_count(tmp_path):
    table = pa.table({"rid": [1, 1, 1, 2], "user": [5, 5, 5, 6]})
    pq.write_table(table, tmp_path / "t.parquet")
    report, exploded = roundtrip([tmp_path / "t.parquet"], tmp_path / "o", key=("rid",))
    assert report["totals"]["rows"] == 4
    assert_same_rows(table, exploded)


def test_shard_is_xxh64_of_the_key_mod_n(logs, tmp_path):
    from roolog.group.keys import key_hashes

    folder, _ = logs
    roolog.convert([str(folder / "contiguous.parquet")], str(tmp_path / "o"), key=("request_id",), shards=4,
                   progress=False)
    for i in range(4):
        keys = pq.read_table(tmp_path / "o" / f"part-{i:05d}.parquet", columns=["request_id"]).column(0)
        assert keys.num_chunks <= 1 and len(keys) > 0
        assert set(key_hashes([keys.combine_chunks()]) % np.uint64(4)) == {i}


def test_parts_are_merged_back_in_input_order(tmp_path):
    from roolog.group.spill import merge_by_seq

    def stream(seqs, size):
        for i in range(0, len(seqs), size):
            yield pa.record_batch({"__roolog_seq": pa.array(seqs[i:i + size], pa.int64())})

    merged = merge_by_seq([stream([0, 3, 4, 9], 3), stream([], 1), stream([1, 2, 5, 6, 7, 8, 10], 2)])
    assert [s for b in merged for s in b.column(0).to_pylist()] == list(range(11))


def test_nan_in_the_order_column_is_placed_last_whatever_the_batching(tmp_path):
    table = pa.table({"rid": [1, 1, 2, 2, 3, 3], "pos": [float("nan"), 1.0, 2.0, 1.0, 0.0, 1.0],
                      "v": [10, 11, 20, 21, 30, 31]})
    pq.write_table(table, tmp_path / "t.parquet")
    outs = []
    for batch_bytes in (1, 1 << 20):
        out = tmp_path / f"o{batch_bytes}"
        roolog.convert([str(tmp_path / "t.parquet")], str(out), key=("rid",), order_by="pos", progress=False,
                       read=ReadOptions(batch_bytes=batch_bytes))
        outs.append((out / "part-00000.parquet").read_bytes())
        assert request_rows(out).sort_by("rid").column("v")[0].as_py() == [11, 10]
    assert outs[0] == outs[1]


def test_row_groups_do_not_depend_on_batching(tmp_path):
    rng = np.random.default_rng(1)
    rid = np.repeat(np.arange(4000), 50)
    table = pa.table({"rid": rid, "x": rng.integers(0, 1 << 62, len(rid)), "y": rng.integers(0, 4, len(rid))})
    pq.write_table(table, tmp_path / "t.parquet")
    outs = []
    for batch_bytes in (64 << 10, 64 << 20):
        out = tmp_path / f"o{batch_bytes}"
        roolog.convert([str(tmp_path / "t.parquet")], str(out), key=("rid",), progress=False,
                       read=ReadOptions(batch_bytes=batch_bytes))
        outs.append((out / "part-00000.parquet").read_bytes())
    assert outs[0] == outs[1]


def test_scattered_request_with_only_null_lists(tmp_path):
    """Found by hypothesis in CI: a list column with no values at all, in requests folded from pieces."""
    table = pa.table({"k": [-20, -13, -6, -13, -6], "l": pa.array([None] * 5, pa.list_(pa.int64()))})
    pq.write_table(table, tmp_path / "t.parquet")
    report, exploded = roundtrip([tmp_path / "t.parquet"], tmp_path / "o", key=("k",), shards=3,
                                 read=ReadOptions(batch_bytes=200))
    assert report["totals"]["requests"] == 3
    assert_same_rows(table, exploded)
