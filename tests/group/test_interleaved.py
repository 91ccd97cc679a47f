"""Interleaved logs (each request's rows spread over a window of concurrent requests, as a log merged from
many servers is): the stream grouper folds them whole in memory, across read batches, and the output is
the one a single batch (or the spill) gives, byte for byte."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import assert_lossless, request_order, run_cli, shard_bytes

import roolog
from roolog.errors import RoologError
from roolog.group.grouper import HASH_COL, N_COL, SEQ_COL, Grouping, StreamGrouper
from roolog.group.schema import Levels
from roolog.read.sources import ReadOptions, where_through
from roolog.synthetic import generate_impressions, interleave_order

REQUEST = ["user_id", "country", "device", "request_time", "user_history_item_ids"]
IMPRESSION = ["position", "item_id", "price", "click"]


def interleaved(requests: int, window: float, seed: int = 0) -> pa.Table:
    table = generate_impressions(requests, history_len=5, seed=seed)
    return table.take(pa.array(interleave_order(table, window, seed + 1)))


def stream(table: pa.Table, batch_rows: int) -> list[pa.RecordBatch]:
    """The run batches a StreamGrouper gives for the table read `batch_rows` rows at a time."""
    grouping = Grouping(table.schema, ("request_id",), "position", Levels(request=REQUEST, impression=IMPRESSION))
    grouper = StreamGrouper(grouping)
    runs = []
    for i, batch in enumerate(table.to_batches(max_chunksize=batch_rows)):
        runs += grouper.feed(batch, f"log.parquet, rows {i * batch_rows + 1}-{i * batch_rows + batch.num_rows}")
    return runs + list(grouper.flush())


@pytest.mark.parametrize("window,batch_rows", [(4, 997), (16, 997), (64, 5000)])  # a request: ~10 rows
def test_interleaved_requests_come_out_whole_and_in_input_order(window, batch_rows):
    table = interleaved(3000, window)
    runs = pa.Table.from_batches(stream(table, batch_rows))
    assert runs.num_rows == 3000  # every request in one run: none left for the spill to fold
    assert len(np.unique(runs.column(HASH_COL).to_numpy())) == 3000
    ids = table.column("request_id").to_numpy()
    _, first = np.unique(ids, return_index=True)
    assert runs.column(SEQ_COL).to_numpy().tolist() == sorted(first.tolist())  # by each request's first row
    assert runs.column("request_id").to_pylist() == ids[np.sort(first)].tolist()


@pytest.mark.parametrize("pool_bytes", [60_000, 1 << 30])
def test_a_shuffled_log_is_pooled_in_bounded_memory_and_folded_together(pool_bytes):
    table = generate_impressions(1000, history_len=2, seed=3, shuffle=True)
    grouping = Grouping(table.schema, ("request_id",), "position", Levels(request=REQUEST, impression=IMPRESSION))
    grouper = StreamGrouper(grouping, pool_bytes=pool_bytes)
    batches = table.to_batches(max_chunksize=250)  # about a quarter of the small pool each
    runs, folds = [], 0
    for batch in batches:
        folded = list(grouper.feed(batch, "log"))
        runs += folded
        folds += len(folded)
        assert grouper.carried_rows * (table.nbytes / table.num_rows) <= pool_bytes + batch.nbytes
    runs += grouper.flush()
    # each pool fills to pool_bytes before it is folded (its count starts afresh): not a fold per batch
    assert folds <= table.nbytes // pool_bytes + 1, (folds, len(batches))
    runs = pa.Table.from_batches(runs)
    assert runs.column(N_COL).to_numpy().sum() == table.num_rows
    if pool_bytes < table.nbytes:  # requests in several pieces: the spill folds them
        assert 1000 < runs.num_rows < table.num_rows  # but each pool's pieces of a request are one run
    else:  # the whole log in one pool: every request one run, in input order
        ids = table.column("request_id").to_numpy()
        _, first = np.unique(ids, return_index=True)
        assert runs.column("request_id").to_pylist() == ids[np.sort(first)].tolist()


@pytest.mark.parametrize("window", [8, 64])
def test_the_output_does_not_depend_on_the_read_batches(tmp_path, window):
    table = interleaved(4000, window, seed=5)
    log = tmp_path / "log.parquet"
    pq.write_table(table, log, row_group_size=1500)
    outs = []
    for i, batch_bytes in enumerate((1 << 30, 20_000, 7_000)):  # one batch; many, across requests
        out = tmp_path / f"out{i}"
        roolog.convert([str(log)], str(out), key=["request_id"], order_by="position", shards=3,
                       read=ReadOptions(batch_bytes=batch_bytes), progress=False)
        outs.append(shard_bytes(out))
    assert outs[0] == outs[1] == outs[2]
    assert run_cli("explode", str(tmp_path / "out2"), "-o", str(tmp_path / "back.parquet")).returncode == 0
    assert_lossless(table, pq.read_table(tmp_path / "back.parquet"))


def test_a_conflict_in_a_carried_request_names_its_rows(tmp_path):
    table = interleaved(400, 8, seed=7)
    ids = table.column("request_id").to_numpy()
    victim = ids[2000]
    rows = np.flatnonzero(ids == victim)
    country = table.column("country").to_pylist()
    country[rows[-1]] = "XX"  # the request's last row disagrees
    table = table.set_column(table.schema.get_field_index("country"), "country", pa.array(country))
    log = tmp_path / "log.parquet"
    pq.write_table(table, log)
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["request_id"]\norder_by = "position"\n'
                      f"request = {REQUEST}\nimpression = {IMPRESSION}\n".replace("'", '"'))
    with pytest.raises(RoologError) as err:  # read in batches of about 900 rows
        roolog.convert([str(log)], str(tmp_path / "out"), schema_file=str(schema), progress=False,
                       read=ReadOptions(batch_bytes=100_000))
    message = str(err.value)
    assert f"request_id={victim}" in message and "'country'" in message, message
    first, last = (int(x) for x in message.rsplit("rows ", 1)[1].split(")")[0].split("-"))
    assert first <= rows[0] + 1 and rows[-1] + 1 <= last  # the rows named hold the whole request
    assert last - first < table.num_rows // 2  # and are not the whole file
    assert not os.path.exists(tmp_path / "out" / "_manifest.json")


def test_where_through():
    assert where_through("a.csv, rows 1-10", "a.csv, rows 11-20") == "a.csv, rows 1-20"
    assert where_through("a.csv, rows 1-10", "b.csv, rows 1-5") == "b.csv, rows 1-5"
    assert where_through("x, y, rows 3-4", "x, y, rows 5-9") == "x, y, rows 3-9"  # a comma in the path


def test_a_few_scattered_requests_are_folded_alone(tmp_path):
    """A contiguous log with a few requests' last rows moved to the end (as a cut between file pieces
    leaves them): those are folded on their own, the rest stays in the spill as written; the bytes are
    those of folding the whole spill (a memory limit so small that the spill is split in parts)."""
    table = generate_impressions(3000, history_len=5, seed=9)
    ids = table.column("request_id").to_numpy()
    movers = np.flatnonzero(np.isin(ids, ids[::997][:6]) & (table.column("position").to_numpy() > 2))
    order = np.r_[np.setdiff1d(np.arange(table.num_rows), movers), movers]
    table = table.take(pa.array(order))
    log = tmp_path / "log.parquet"
    pq.write_table(table, log)
    outs = []
    for name, memory in (("alone", 1 << 30), ("whole", 200_000)):
        roolog.convert([str(log)], str(tmp_path / name), key=["request_id"], order_by="position", shards=2,
                       memory_limit=memory, progress=False)
        outs.append(shard_bytes(tmp_path / name))
    assert outs[0] == outs[1]
    shards = [pq.read_table(tmp_path / "alone" / f) for f in ("part-00000.parquet", "part-00001.parquet")]
    ids = table.column("request_id").to_numpy()
    _, first = np.unique(ids, return_index=True)
    rank = dict(zip(ids[first].tolist(), first.tolist(), strict=True))
    order = request_order(tmp_path / "alone")
    for shard in shards:  # each request once, in the documented order (from the order of its first row)
        got = shard.column("request_id").to_pylist()
        keys = [order(r, rank[r["request_id"]]) for r in shard.to_pylist()]
        assert keys == sorted(keys) and len(set(got)) == len(got)
    assert sum(s.num_rows for s in shards) == 3000
    assert run_cli("explode", str(tmp_path / "alone"), "-o", str(tmp_path / "back.parquet")).returncode == 0
    assert_lossless(table, pq.read_table(tmp_path / "back.parquet"))


def test_one_long_request_is_carried_in_bounded_memory():
    """A request longer than the carry's bound: its rows leave in pieces (the spill folds them), not held."""
    table = generate_impressions(30, history_len=2, seed=4)
    ids = table.column("request_id").to_numpy()
    table = table.set_column(table.schema.get_field_index("request_id"), "request_id",
                             pa.array(np.zeros(len(ids), dtype=ids.dtype)))  # every row one request
    table = table.set_column(table.schema.get_field_index("position"), "position", pa.array(np.arange(len(ids))))
    grouping = Grouping(table.schema, ("request_id",), "position", Levels(request=[], impression=[
        c for c in table.column_names if c != "request_id"]))
    carry = 20_000
    grouper = StreamGrouper(grouping, carry_bytes=carry, pool_bytes=carry)
    per_row = table.nbytes / table.num_rows
    runs = []
    for batch in table.to_batches(max_chunksize=20):
        runs += grouper.feed(batch, "log")
        assert grouper.carried_rows * per_row <= carry + batch.nbytes
    runs += grouper.flush()
    assert sum(r.column(N_COL).to_numpy().sum() for r in runs) == table.num_rows
