"""A wide impression log for the benchmarks, and an interleaver (the shape of issue 17).

Request level (copied onto each impression row): request_id, user_id, request_time, two strings (locale,
platform), six integers (ctx_i0..ctx_i5), four floats (ctx_f0..ctx_f3) and two 100-item histories
(hist_items: int64, hist_actions: int8). Impression level: position, item_id, seven more numbers
(int and float: score_0..score_6), impression_time, and two 0/1 labels (click, purchase).

Row orders:
    contiguous    each request's rows together, requests in order
    interleaved   each request's rows spread over about `window` concurrent requests, as a time-ordered
                  log merged from many servers is: request r starts at time r, its rows come at r + sorted
                  uniform offsets in [0, window), and all rows are sorted by time (positions stay in order)
    shuffled      a random permutation of all rows

    python scripts/widelog.py OUT.parquet --requests 100000 --order interleaved --window 64
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from roolog.synthetic import interleave_order

HISTORY = 100
LOCALES = np.array(["de_DE", "en_GB", "en_US", "fr_FR", "pt_BR", "ja_JP", "es_ES", "it_IT"])
PLATFORMS = np.array(["ios", "android", "web", "tv"])


def wide_requests(requests: int, seed: int, first_request: int = 0, mean_impressions: int = 10) -> pa.Table:
    """`requests` requests of the wide shape, contiguous."""
    rng = np.random.default_rng(seed)
    n = np.clip(rng.poisson(mean_impressions, requests), 1, 10 * mean_impressions).astype(np.int64)
    rows = int(n.sum())
    req = np.repeat(np.arange(requests), n)
    position = (np.arange(rows) - np.repeat(np.cumsum(n) - n, n)).astype(np.int32)
    start = np.datetime64("2026-11-20T00:00:00", "ms") + rng.integers(0, 86_400_000, requests).astype("m8[ms]")
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * HISTORY)
    items = rng.integers(0, 1_000_000, (requests, HISTORY))
    actions = rng.integers(0, 4, (requests, HISTORY)).astype(np.int8)
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(np.arange(first_request, first_request + requests, dtype=np.int64)[req] + 10**9),
        "user_id": pa.array(rng.integers(1, max(2, requests // 3), requests)[req]),
        "request_time": pa.array(start[req]),
        "locale": pa.array(LOCALES[rng.integers(0, len(LOCALES), requests)][req]),
        "platform": pa.array(PLATFORMS[rng.integers(0, len(PLATFORMS), requests)][req]),
    }
    for i in range(6):
        columns[f"ctx_i{i}"] = pa.array(rng.integers(0, 10 ** (i + 1), requests)[req])
    for i in range(4):
        columns[f"ctx_f{i}"] = pa.array(np.round(rng.normal(0, 1, requests), 4)[req])
    columns["hist_items"] = pa.ListArray.from_arrays(offsets, pa.array(items[req].ravel()))
    columns["hist_actions"] = pa.ListArray.from_arrays(offsets, pa.array(actions[req].ravel()))
    columns["position"] = pa.array(position)
    columns["item_id"] = pa.array(rng.integers(0, 1_000_000, rows))
    for i in range(7):
        values = rng.integers(0, 1000, rows) if i % 2 else np.round(rng.gamma(2.0, 1.0, rows), 3)
        columns[f"score_{i}"] = pa.array(values)
    columns["impression_time"] = pa.array(start[req] + (position.astype(np.int64) * 40).astype("m8[ms]"))
    click = rng.random(rows) < 0.08
    columns["click"] = pa.array(click.astype(np.int8))
    columns["purchase"] = pa.array((click & (rng.random(rows) < 0.1)).astype(np.int8))
    return pa.table(columns)


def write_wide(path: str, requests: int, order: str = "contiguous", window: float = 64, seed: int = 1,
               chunk_requests: int = 25_000) -> int:
    """Write the log; returns its rows. Contiguous logs are written chunk by chunk (any size); interleaved
    and shuffled ones are built in memory (1M rows: about 2 GB)."""
    if order == "contiguous":
        writer, rows = None, 0
        for i, first in enumerate(range(0, requests, chunk_requests)):
            table = wide_requests(min(chunk_requests, requests - first), seed * 100_003 + i, first)
            writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=64 * 1024)
            rows += table.num_rows
        if writer is not None:
            writer.close()
        return rows
    table = wide_requests(requests, seed)
    rng_seed = seed * 7 + 1
    if order == "interleaved":
        perm = interleave_order(table, window, rng_seed)
    elif order == "shuffled":
        perm = np.random.default_rng(rng_seed).permutation(table.num_rows)
    else:
        raise SystemExit(f"--order must be contiguous, interleaved or shuffled, not {order!r}")
    pq.write_table(table.take(pa.array(perm)), path, compression="zstd", row_group_size=64 * 1024)
    return table.num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--order", default="contiguous", choices=["contiguous", "interleaved", "shuffled"])
    ap.add_argument("--window", type=float, default=64, help="concurrent requests (interleaved)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rows = write_wide(args.out, args.requests, args.order, args.window, args.seed)
    print(f"{args.out}: {rows:,} rows")


if __name__ == "__main__":
    main()
