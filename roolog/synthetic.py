"""Seeded synthetic impression logs with a realistic shape (for sample_data/, tests and benchmarks).

Each request has request-level features (user, country, device, time, a user-history list) copied onto
its 1..max impressions, and impression-level features (position, item, price, click). Clicks depend on
whether the item's category is in the user's history and on position, so a model can learn them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COUNTRIES = np.array(["DE", "FR", "GB", "US", "BR", "IN", "JP", "ES", "IT", "NL"])
DEVICES = np.array(["mobile", "desktop", "tablet"])
CATEGORIES = 50


def generate_impressions(requests: int, history_len: int = 50, mean_impressions: int = 10,
                         seed: int = 0, shuffle: bool = False, string_keys: bool = False,
                         first_request: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = np.clip(rng.poisson(mean_impressions, requests), 1, 10 * mean_impressions).astype(np.int64)
    rows = int(n.sum())
    req = np.repeat(np.arange(requests), n)
    user = rng.integers(1, max(2, requests // 3), requests)
    history = rng.integers(0, 100_000, (requests, history_len))
    favourite = history % CATEGORIES  # the categories a user has seen
    position = np.arange(rows) - np.repeat(np.cumsum(n) - n, n)
    item = rng.integers(0, 100_000, rows)
    seen = (favourite[req] == (item % CATEGORIES)[:, None]).any(axis=1)
    logit = -2.2 + 2.0 * seen - 0.08 * position
    click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    start = np.datetime64("2026-11-20T00:00:00", "ms") + rng.integers(0, 86_400_000, requests).astype("m8[ms]")
    ids = np.arange(first_request, first_request + requests)
    key = np.char.add("req-", ids.astype(str)) if string_keys else ids + 1_000_000
    table = pa.table({
        "request_id": pa.array(key[req]),
        "user_id": pa.array(user[req]),
        "country": pa.array(COUNTRIES[rng.integers(0, len(COUNTRIES), requests)][req]),
        "device": pa.array(DEVICES[rng.integers(0, len(DEVICES), requests)][req]),
        "request_time": pa.array(start[req]),
        "user_history_item_ids": pa.ListArray.from_arrays(
            pa.array(np.arange(rows + 1) * history_len, pa.int32()), pa.array(history[req].ravel())),
        "position": pa.array(position.astype(np.int32)),
        "item_id": pa.array(item),
        "price": pa.array(np.round(rng.gamma(2.0, 40.0, rows), 2)),
        "click": pa.array(click),
    })
    if shuffle:
        table = table.take(pa.array(rng.permutation(rows)))
    return table


def interleave_order(table: pa.Table, window: float, seed: int, key: str = "request_id") -> np.ndarray:
    """A row order for a contiguous log that spreads each request over about `window` concurrent ones, as a
    time-ordered log merged from many servers is: request r starts at time r, its rows come at r plus
    sorted uniform offsets in [0, window) (so they stay in order), and all rows are sorted by time."""
    ids = table.column(key).combine_chunks()
    changes = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    req = np.r_[0, np.cumsum(changes)] if len(ids) else np.zeros(0, np.int64)
    offset = np.random.default_rng(seed).random(len(req)) * window
    offset = offset[np.lexsort((offset, req))]  # sorted within each request
    return np.argsort(req + offset, kind="stable")


def history_as_text(table: pa.Table) -> pa.Table:
    """CSV has no lists: the history becomes a space-separated string."""
    i = table.schema.get_field_index("user_history_item_ids")
    text = [" ".join(map(str, h)) for h in table.column(i).to_pylist()]
    return table.set_column(i, "user_history_item_ids", pa.array(text))


def write_impressions(path: str, requests: int, history_len: int = 50, seed: int = 0, string_keys: bool = False,
                      chunk_requests: int = 20_000) -> int:
    """A contiguous log too big to build in memory, written chunk by chunk; returns its row count."""
    import pyarrow.parquet as pq

    rows, writer = 0, None
    for i, first in enumerate(range(0, requests, chunk_requests)):
        table = generate_impressions(min(chunk_requests, requests - first), history_len, seed=seed * 100_003 + i,
                                     string_keys=string_keys, first_request=first)
        writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
        rows += table.num_rows
    if writer is not None:
        writer.close()
    return rows
