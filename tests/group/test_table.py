"""The pool's request table (roolog.group.grouper.RequestTable): each shuffled request's request-level
values stored once, every later row compared with them exactly; its runs are those Grouping.fold gives."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from roolog.errors import RoologError
from roolog.group import grouper as grouper_module
from roolog.group.grouper import Grouping, RequestTable
from roolog.group.schema import Levels
from roolog.synthetic import generate_impressions

REQUEST = ["user_id", "country", "device", "request_time", "user_history_item_ids"]
IMPRESSION = ["position", "item_id", "price", "click"]


def shuffled(requests: int = 300, seed: int = 4) -> pa.Table:
    return generate_impressions(requests, history_len=3, seed=seed, shuffle=True)


def grouping(table: pa.Table, fixed: set[str] = frozenset()) -> Grouping:
    return Grouping(table.schema, ("request_id",), "position",
                    Levels(request=list(REQUEST), impression=list(IMPRESSION), fixed=set(fixed)))


def filled(table: pa.Table, g: Grouping, batch_rows: int = 97) -> RequestTable:
    pool = RequestTable(g)
    for i, batch in enumerate(table.to_batches(max_chunksize=batch_rows)):
        seq = np.arange(i * batch_rows, i * batch_rows + batch.num_rows)
        assert pool.add(batch, seq, f"log, rows {seq[0] + 1}-{seq[-1] + 1}")
    return pool


def reference(table: pa.Table, g: Grouping) -> pa.RecordBatch:
    """Grouping.fold over all the rows at once: the independent computation."""
    batch = table.combine_chunks().to_batches()[0]
    return g.fold(batch, np.ones(batch.num_rows, np.int64), np.arange(batch.num_rows), "log")


@pytest.mark.parametrize("batch_rows", [1, 97, 5000])
def test_the_runs_are_those_of_one_fold_of_every_row(batch_rows):
    table = shuffled()
    g = grouping(table)
    runs = filled(table, g, batch_rows).runs()
    assert runs.num_rows == 300
    assert runs.equals(reference(table, grouping(table)))


def test_a_column_that_varies_is_demoted_with_the_values_every_row_held():
    table = shuffled(seed=6)
    device = table.column("device").to_pylist()
    ids = table.column("request_id").to_numpy()
    victim = np.flatnonzero(ids == ids[len(ids) // 2])
    device[victim[-1]] = "changed"  # the last row of one request, long after its first
    table = table.set_column(table.schema.get_field_index("device"), "device", pa.array(device))
    g = grouping(table)
    runs = filled(table, g).runs()
    assert "device" in g.levels.impression and "device" not in g.levels.request
    expected_g = grouping(table)
    expected = reference(table, expected_g)
    assert expected_g.levels.impression == g.levels.impression
    assert runs.equals(expected)


def test_a_declared_column_that_varies_names_the_request_and_both_values():
    table = shuffled(seed=8)
    country = table.column("country").to_pylist()
    ids = table.column("request_id").to_numpy()
    rows = np.flatnonzero(ids == ids[10])
    country[rows[-1]] = "XX"
    table = table.set_column(table.schema.get_field_index("country"), "country", pa.array(country))
    with pytest.raises(RoologError) as err:
        filled(table, grouping(table, fixed={"country"}))
    message = str(err.value)
    assert f"request_id={ids[10]}" in message and "'country'" in message and "'XX'" in message, message
    assert "--on-conflict demote" in message


def test_two_keys_of_one_hash_are_refused_and_nothing_changes(monkeypatch):
    table = shuffled(40)
    g = grouping(table)
    batches = table.to_batches(max_chunksize=50)
    pool = RequestTable(g)
    assert pool.add(batches[0], np.arange(batches[0].num_rows), "log")
    before = (pool.rows, pool.slots, pool.nbytes)
    real = grouper_module.key_hashes
    monkeypatch.setattr(grouper_module, "key_hashes", lambda cols: np.zeros(len(cols[0]), np.uint64) + real(
        [batches[0].column("request_id").slice(0, 1)])[0])  # every key hashes as the first one did
    assert not pool.add(batches[1], np.arange(50, 50 + batches[1].num_rows), "log")
    assert (pool.rows, pool.slots, pool.nbytes) == before
