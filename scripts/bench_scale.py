#!/usr/bin/env python3
"""Scale benchmark (not a CI test): convert a 20M-row impression log with bounded memory.

Generates a seeded log chunk by chunk (never whole in memory), either *scattered* (each request's
impressions spread over the whole file) or *contiguous*, then runs `roolog convert --memory-limit` as a
whole process under /usr/bin/time -v and prints wall time, peak RSS and spill bytes.

    python scripts/bench_scale.py --rows 20000000 --layout both --memory-limit 1GB [--skew 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from roolog.group.keys import xxh64_u64  # noqa: E402

SPREAD = 32  # a request's impressions are spread over this many chunks (and it has at most this many)


def _mix(*parts: np.ndarray) -> np.ndarray:
    """A seeded, deterministic pseudo-random uint64 per element."""
    h = np.zeros(len(parts[0]), dtype=np.uint64)
    for p in parts:
        h = xxh64_u64(h ^ p.astype(np.uint64))
    return h


def _rows(requests: np.ndarray, impression: np.ndarray, history_len: int) -> pa.Table:
    """Impression rows for (request, impression index) pairs; request features depend on the request only."""
    r = requests.astype(np.uint64)
    history = _mix(np.repeat(r, history_len), np.tile(np.arange(history_len, dtype=np.uint64), len(r))) % 100_000
    return pa.table({
        "request_id": pa.array(requests.astype(np.int64) + 10_000_000),
        "user_id": pa.array((_mix(r, np.full(len(r), 1)) % 2_000_000).astype(np.int64)),
        "country": pa.array((_mix(r, np.full(len(r), 2)) % 40).astype(np.int8)),
        "user_history_item_ids": pa.FixedSizeListArray.from_arrays(pa.array(history.astype(np.int64)),
                                                                   history_len).cast(pa.list_(pa.int64())),
        "position": pa.array(impression.astype(np.int32)),
        "item_id": pa.array((_mix(r, impression.astype(np.uint64) + 7) % 1_000_000).astype(np.int64)),
        "price": pa.array((_mix(r, impression.astype(np.uint64) + 9) % 100_000).astype(np.float64) / 100),
        "click": pa.array((_mix(r, impression.astype(np.uint64) + 11) % 10 == 0).astype(np.int8)),
    })


def generate(path: str, rows: int, layout: str, history_len: int, skew: int = 0, seed: int = 1) -> int:
    """Write the log; `skew` adds one request with that many impressions (spread like the others)."""
    rng = np.random.default_rng(seed)
    n_requests = rows // 10
    sizes = np.clip(rng.poisson(10, n_requests), 1, SPREAD).astype(np.int64)
    writer = None
    written = 0
    if layout == "scattered":  # chunk c holds impression i of request r when (c - r) mod SPREAD == i
        chunks = [(r := np.arange(n_requests), (c - r) % SPREAD) for c in range(SPREAD)]
        chunks = [(r[i < sizes], i[i < sizes]) for r, i in chunks]
        big = np.arange(skew)
        chunks = [(np.r_[r, np.full(len(big[big % SPREAD == c]), n_requests)], np.r_[i, big[big % SPREAD == c]])
                  for c, (r, i) in enumerate(chunks)]
        # each chunk is written in sub-batches to bound memory
        pieces = ((r[a:a + 500_000], i[a:a + 500_000]) for r, i in chunks for a in range(0, len(r), 500_000))
    else:
        starts = np.r_[0, np.cumsum(sizes)]
        per = 50_000

        def contiguous():
            for a in range(0, n_requests, per):
                n = sizes[a:a + per]
                req = np.repeat(np.arange(a, a + len(n)), n)
                yield req, np.arange(len(req)) - np.repeat(starts[a:a + len(n)] - starts[a], n)
            if skew:
                yield np.full(skew, n_requests), np.arange(skew)

        pieces = contiguous()
    for req, imp in pieces:
        table = _rows(req, imp, history_len)
        writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=1_000_000)
        written += table.num_rows
    writer.close()
    return written


def run(path: str, out: str, memory_limit: str) -> dict:
    exe = os.path.join(os.path.dirname(sys.executable), "roolog")
    cmd = ["/usr/bin/time", "-v", exe, "convert", path, "-o", out, "--key", "request_id", "--order-by", "position",
           "--memory-limit", memory_limit, "--json", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    report = json.loads(proc.stdout)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr).group(1)
    return {"wall": wall, "peak_rss_mb": rss // 1024, "spill_mb": report["spill"]["bytes"] >> 20,
            "parts": report["spill"]["most_parts"], "requests": report["totals"]["requests"],
            "rows": report["totals"]["rows"], "rows_per_second": report["rows_per_second"],
            "output_mb": report["totals"]["output_bytes"] >> 20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--layout", choices=["scattered", "contiguous", "both"], default="both")
    ap.add_argument("--history-len", type=int, default=10)
    ap.add_argument("--memory-limit", default="1GB")
    ap.add_argument("--skew", type=int, default=0, help="add one request with this many impressions (e.g. 100000)")
    ap.add_argument("--workdir", default=None, help="where the log and output go (default: a temp folder)")
    args = ap.parse_args()
    layouts = ["scattered", "contiguous"] if args.layout == "both" else [args.layout]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        print("| layout | rows | requests | input MB | wall | peak RSS MB | spill MB | parts | rows/s | output MB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for layout in layouts:
            path = os.path.join(tmp, f"{layout}.parquet")
            generate(path, args.rows, layout, args.history_len, args.skew)
            r = run(path, os.path.join(tmp, f"{layout}.out"), args.memory_limit)
            print(f"| {layout} | {r['rows']:,} | {r['requests']:,} | {os.path.getsize(path) >> 20} | {r['wall']} | "
                  f"{r['peak_rss_mb']:,} | {r['spill_mb']:,} | {r['parts']} | {r['rows_per_second']:,.0f} | "
                  f"{r['output_mb']} |", flush=True)


if __name__ == "__main__":
    main()
