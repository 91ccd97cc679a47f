"""Hypothesis: random logs (sizes incl. 1, nulls, strings, lists, floats, composite keys, any row order)
convert and explode back to the same rows, with levels decided exactly as an independent check says."""

import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
from helpers import assert_same_rows, canon, roundtrip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roolog.read.sources import ReadOptions

FLOATS = st.sampled_from([0.0, -0.0, 1.5, float("nan"), float("inf"), None])
STRINGS = st.one_of(st.none(), st.text(alphabet="ab\u00e9 ,\"", max_size=3))
INT_LISTS = st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(-3, 3)), max_size=3))
COLUMNS = {"f": (FLOATS, pa.float64()), "s": (STRINGS, pa.string()), "l": (INT_LISTS, pa.list_(pa.int64())),
           "i": (st.one_of(st.none(), st.integers(-2, 2)), pa.int32())}


@st.composite
def logs(draw):
    composite = draw(st.booleans())
    n_requests = draw(st.integers(1, 12))
    sizes = draw(st.lists(st.integers(1, 5), min_size=n_requests, max_size=n_requests))
    constant = {c: draw(st.booleans()) for c in COLUMNS}  # per column: request-level by construction?
    rows = []
    for r, size in enumerate(sizes):
        fixed = {c: draw(strategy) for c, (strategy, _) in COLUMNS.items()}
        for _ in range(size):
            row = {"k1": r % 4, "k2": f"r{r // 4}"} if composite else {"k1": r * 7 - 20}
            row["pos"] = draw(st.integers(0, 3))
            for c, (strategy, _) in COLUMNS.items():
                row[c] = fixed[c] if constant[c] else draw(strategy)
            rows.append(row)
    order = draw(st.permutations(range(len(rows))))
    rows = [rows[i] for i in order]
    fields = [pa.field("k1", pa.int64())] + ([pa.field("k2", pa.string())] if composite else [])
    fields += [pa.field("pos", pa.int16())] + [pa.field(c, t) for c, (_, t) in COLUMNS.items()]
    key = ("k1", "k2") if composite else ("k1",)
    return pa.Table.from_pylist(rows, schema=pa.schema(fields)), key


def expected_request_level(table: pa.Table, key) -> set[str]:
    values: dict[str, dict] = {}
    for row in table.to_pylist():
        k = tuple(row[c] for c in key)
        for c, v in row.items():
            values.setdefault(c, {}).setdefault(k, set()).add(canon(v))
    return {c for c, per_key in values.items() if c not in key and all(len(s) == 1 for s in per_key.values())}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(), st.sampled_from([1, 3]), st.sampled_from([None, "pos"]), st.sampled_from([200, 1 << 20]))
def test_random_logs_round_trip(log, shards, order_by, batch_bytes):
    table, key = log
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.parquet")
        pq.write_table(table, path, row_group_size=7)
        report, exploded = roundtrip([path], os.path.join(tmp, "out"), key=key, shards=shards, order_by=order_by,
                                     memory_limit=4096, read=ReadOptions(batch_bytes=batch_bytes))
        n_keys = len({tuple(r[c] for c in key) for r in table.select(list(key)).to_pylist()})
        assert report["totals"]["requests"] == n_keys
        request_level = {c["name"] for c in report["columns"] if c["level"] == "request"}
        assert request_level == expected_request_level(table, key)
        assert_same_rows(table, exploded)
        out_keys = pa.concat_tables(
            [pq.read_table(os.path.join(tmp, "out", f), columns=list(key))
             for f in os.listdir(os.path.join(tmp, "out")) if f.startswith("part-")]).to_pylist()
        assert len(out_keys) == len({tuple(r.values()) for r in out_keys}) == n_keys
