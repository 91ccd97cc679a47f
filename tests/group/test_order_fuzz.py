"""Hypothesis: the order of things in the shards. Random impression logs (a key of one or two columns with
nulls in it, an optional order column with nulls and ties, value columns of many Arrow types), each request's
rows scattered over the file, over several input files and over Parquet row groups, read in small batches and
folded in several spill parts. Against an independent model (plain Python over what pyarrow reads back):

  (a) in each request the impressions are in input order, or with order_by stably sorted by the order column
      (numbers ascending, then NaN, then null: "stable; nulls last", README), read from the shard files;
  (b) in each shard the requests are in the documented order (helpers.request_order: by the manifest's
      request_order, then by their first row in the input: file order as given, then row order), each
      request in one shard, once;
  (c) explode gives back exactly the input rows (as a multiset, with the input's types), null keys dropped.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
from helpers import assert_same_rows, canon, request_order
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import roolog
from roolog.read.sources import ReadOptions


def _ints(bits: int, signed: bool = True):
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else st.integers(0, 2**bits - 1)


_TEXT = st.text(alphabet="ab\u00e9 ,\"\n\u4e2d", max_size=3)
_F32 = st.sampled_from([0.0, -0.0, 1.5, -2.25, float("nan"), float("inf")])
_F64 = st.sampled_from([0.0, -0.0, 0.1, -1e300, float("nan"), float("-inf")])
_MICROS = st.integers(-(10**15), 10**15)
# name -> (value strategy, Arrow type); every value may also be null
VALUE_TYPES = {
    "i8": (_ints(8), pa.int8()), "i16": (_ints(16), pa.int16()), "i32": (_ints(32), pa.int32()),
    "i64": (_ints(64), pa.int64()), "u8": (_ints(8, False), pa.uint8()), "u16": (_ints(16, False), pa.uint16()),
    "u32": (_ints(32, False), pa.uint32()), "u64": (_ints(64, False), pa.uint64()),
    "f32": (_F32, pa.float32()), "f64": (_F64, pa.float64()), "b": (st.booleans(), pa.bool_()),
    "s": (_TEXT, pa.string()), "ls": (_TEXT, pa.large_string()), "bin": (st.binary(max_size=3), pa.binary()),
    "d32": (st.dates(datetime.date(1900, 1, 1), datetime.date(2100, 1, 1)), pa.date32()),
    "ts": (_MICROS, pa.timestamp("us", tz="Europe/Berlin")),
    "dec": (st.integers(-(10**11), 10**11).map(lambda i: Decimal(i).scaleb(-3)), pa.decimal128(14, 3)),
    "li": (st.lists(st.one_of(st.none(), st.integers(-3, 3)), max_size=3), pa.list_(pa.int32())),
    "dict": (st.sampled_from(["x", "y", "", "zz"]), pa.dictionary(pa.int32(), pa.string())),
}
# order columns: few distinct values (ties), nulls, and for floats NaN and -0.0 next to 0.0
ORDER_TYPES = {
    "int": (st.integers(0, 3), pa.int16()),
    "float": (st.sampled_from([0.0, -0.0, 1.0, 2.5, float("nan")]), pa.float64()),
    "str": (st.sampled_from(["", "a", "b", "\u00e9"]), pa.string()),
}
KEY_TYPES = {"int": pa.int64(), "str": pa.string(), "large": pa.large_string(),
             "dict": pa.dictionary(pa.int32(), pa.string())}


def _array(values: list, t: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(t):
        return pa.array(values, t.value_type).dictionary_encode()
    return pa.array(values, t)


def _key_value(r: int, t: pa.DataType):
    return r * 7 - 20 if pa.types.is_integer(t) else f"r{r:02d}"


@st.composite
def logs(draw):
    """(files as tables, key, order column or None, options). Every request has rows; some extra rows have a
    null in a key column (dropped); the rows are shuffled (or left grouped) and cut into 1-3 files."""
    composite = draw(st.booleans())
    k1_type = KEY_TYPES[draw(st.sampled_from(sorted(KEY_TYPES)))]
    key = ("k1", "k2") if composite else ("k1",)
    columns = draw(st.lists(st.sampled_from(sorted(VALUE_TYPES)), min_size=1, max_size=5, unique=True))
    order = draw(st.sampled_from([None, *sorted(ORDER_TYPES)]))
    n_requests = draw(st.integers(1, 10))
    constant = {c: draw(st.booleans()) for c in columns}  # request-level by construction (may still vary)
    if order:
        constant["pos"] = draw(st.integers(0, 4)) == 0

    def value(c):
        strategy = ORDER_TYPES[order][0] if c == "pos" else VALUE_TYPES[c][0]
        return draw(st.one_of(st.none(), strategy))

    names = [*columns, *(["pos"] if order else [])]
    rows = []
    for r in range(n_requests):
        fixed = {c: value(c) for c in names}
        for _ in range(draw(st.integers(1, 5))):
            row = ({"k1": _key_value(r % 3, k1_type), "k2": f"s{r // 3}"} if composite
                   else {"k1": _key_value(r, k1_type)})
            rows.append(row | {c: fixed[c] if constant[c] else value(c) for c in names})
    for _ in range(draw(st.integers(0, 3))):  # rows with a null key column: dropped, wherever they are
        r = draw(st.integers(0, n_requests - 1))
        row = {"k1": _key_value(r % 3 if composite else r, k1_type), "k2": f"s{r // 3}"} if composite \
            else {"k1": None}
        row[draw(st.sampled_from(key))] = None
        rows.append(row | {c: value(c) for c in names})
    if draw(st.integers(0, 4)):
        rows = [rows[i] for i in draw(st.permutations(range(len(rows))))]
    fields = [pa.field("k1", k1_type)] + ([pa.field("k2", pa.string())] if composite else [])
    fields += [pa.field(c, VALUE_TYPES[c][1]) for c in columns]
    fields += [pa.field("pos", ORDER_TYPES[order][1])] if order else []
    table = pa.table([_array([row[f.name] for row in rows], f.type) for f in fields], schema=pa.schema(fields))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=2)))
    bounds = [0, *cuts, len(rows)]
    files = [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    options = dict(shards=draw(st.sampled_from([1, 2, 3])), memory_limit=draw(st.sampled_from([4096, 1 << 30])),
                   read=ReadOptions(batch_bytes=draw(st.sampled_from([64, 1 << 20]))),
                   row_group_size=draw(st.integers(1, 8)))
    return files, key, "pos" if order else None, options


def order_rank(value) -> tuple:
    """The documented order of an order column's values: ascending (-0.0 ties with 0.0), NaN after every
    number, null last."""
    if value is None:
        return (2,)
    if isinstance(value, float) and value != value:
        return (1,)
    return (0, value)


def model(rows: list[dict], key: tuple[str, ...], order_by: str | None):
    """Independent of roolog: request key -> the input positions of its impressions in the documented order,
    in the order of each request's first row. Rows with a null key column are left out."""
    requests: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        k = tuple(row[c] for c in key)
        if None not in k:
            requests.setdefault(k, []).append(i)  # dicts keep insertion order: first-row order
    if order_by:
        requests = {k: sorted(ix, key=lambda i: order_rank(rows[i][order_by])) for k, ix in requests.items()}
    return requests


def request_level(rows: list[dict], requests: dict[tuple, list[int]], names: list[str]) -> set[str]:
    """Columns holding one value (bit for bit; null is a value) in every request."""
    return {c for c in names if all(len({canon(rows[i][c]) for i in ix}) == 1 for ix in requests.values())}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs())
def test_order_within_requests_and_shards_and_exact_rows(log):
    files, key, order_by, options = log
    row_group_size = options.pop("row_group_size")
    table = pa.concat_tables(files).combine_chunks()
    rows = table.to_pylist()
    requests = model(rows, key, order_by)
    first_row = {k: min(ix) for k, ix in requests.items()}
    names = [n for n in table.schema.names if n not in key]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for j, part in enumerate(files):
            paths.append(os.path.join(tmp, f"in-{j}.parquet"))
            pq.write_table(part, paths[-1], row_group_size=row_group_size)
        out = os.path.join(tmp, "out")
        report = roolog.convert(paths, out, key=key, order_by=order_by, drop_null_keys=True, progress=False,
                                **options)
        assert report["null_key_rows_dropped"] == table.num_rows - sum(map(len, requests.values()))
        seen: set[tuple] = set()
        shards = sorted(f for f in os.listdir(out) if f.startswith("part-"))
        assert len(shards) == options["shards"]
        order = request_order(out, None)
        for shard in shards:
            stored = pq.read_table(os.path.join(out, shard))
            footer = json.loads(stored.schema.metadata[b"roolog"])
            assert set(footer["request"]) == request_level(rows, requests, names), shard
            impression = set(footer["impression"])
            positions = []
            for request in stored.to_pylist():
                k = tuple(request[c] for c in key)
                assert k in requests and k not in seen, f"{shard}: request {k} unknown or twice"
                seen.add(k)
                expected = requests[k]
                positions.append(order(request, first_row[k]))
                for c in names:  # (a) impressions in input order, or stably sorted by the order column
                    if c in impression:
                        want = [canon(rows[i][c]) for i in expected]
                        assert [canon(v) for v in request[c]] == want, f"{shard}, request {k}, column {c}"
                    else:
                        assert {canon(rows[i][c]) for i in expected} == {canon(request[c])}, (shard, k, c)
                if not impression:
                    assert request["__roolog_impressions"] == len(expected)
            assert positions == sorted(positions), f"{shard}: requests not in the documented order"  # (b)
        assert seen == set(requests)
        back = os.path.join(tmp, "back.parquet")
        roolog.explode(out, back)  # (c)
        kept = [i for ix in requests.values() for i in ix]
        assert_same_rows(table.take(pa.array(sorted(kept), pa.int64())), pq.read_table(back))
