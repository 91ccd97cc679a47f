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


def generate_repeat_users(users: int = 1000, requests_per_user: int = 28, history_len: int = 200,
                          max_shift: int = 3, snapshot_share: float = 0.3, mean_impressions: int = 10,
                          seed: int = 0) -> pa.Table:
    """A time-ordered log of repeat users, the shape RecD's savings come from: each user makes about
    `requests_per_user` requests over a day, and between two of them the history (the last `history_len`
    items the user engaged with) slides by 1..`max_shift` new items, or - with probability `snapshot_share`
    - stays the same. Requests of all users interleave by time, as a logging service writes them."""
    rng = np.random.default_rng(seed)
    per_user = np.clip(rng.poisson(requests_per_user, users), 1, 4 * requests_per_user).astype(np.int64)
    requests = int(per_user.sum())
    owner = np.repeat(np.arange(users), per_user)
    nth = np.arange(requests) - np.repeat(np.cumsum(per_user) - per_user, per_user)  # a user's j-th request
    shift = np.where(rng.random(requests) < snapshot_share, 0, rng.integers(1, max_shift + 1, requests))
    shift[nth == 0] = 0
    offset = np.cumsum(shift) - np.repeat(np.cumsum(shift)[np.cumsum(per_user) - per_user], per_user)
    stream_len = history_len + int(offset.max(initial=0)) + 1
    streams = rng.integers(0, 100_000, (users, stream_len))  # each user's engagements, oldest first
    window = offset[:, None] + np.arange(history_len)[None, :]
    history = streams[owner[:, None], window]
    time = np.empty(requests, np.int64)
    for first, count in zip(np.cumsum(per_user) - per_user, per_user, strict=True):  # each user's requests in order
        time[first:first + count] = np.sort(rng.integers(0, 86_400_000, count))
    order = np.lexsort((owner, time))  # the log: all users' requests by time
    history = history[order]
    n = np.clip(rng.poisson(mean_impressions, requests), 1, 10 * mean_impressions).astype(np.int64)[order]
    req = np.repeat(np.arange(requests), n)  # rows, in log order
    rows = int(n.sum())
    position = np.arange(rows) - np.repeat(np.cumsum(n) - n, n)
    item = rng.integers(0, 100_000, rows)
    seen = (history[req] % CATEGORIES == (item % CATEGORIES)[:, None]).any(axis=1)
    click = (rng.random(rows) < 1 / (1 + np.exp(-(-2.2 + 2.0 * seen - 0.08 * position)))).astype(np.int8)
    start = np.datetime64("2026-11-20T00:00:00", "ms") + time[order].astype("m8[ms]")
    return pa.table({
        "request_id": pa.array((np.arange(requests) + 5_000_000)[req]),
        "user_id": pa.array((owner[order] + 1)[req]),
        "request_time": pa.array(start[req]),
        "user_history_item_ids": pa.ListArray.from_arrays(
            pa.array(np.arange(rows + 1) * history_len, pa.int32()), pa.array(history[req].ravel())),
        "position": pa.array(position.astype(np.int32)),
        "item_id": pa.array(item),
        "click": pa.array(click),
    })
