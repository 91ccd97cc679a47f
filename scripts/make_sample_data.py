#!/usr/bin/env python3
"""Write sample_data/: a small seeded impression log as Parquet and as CSV.zst (deterministic)."""

import argparse
import io
import os
import sys

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import zstandard

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from roolog.synthetic import generate_impressions, history_as_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "sample_data"))
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--history-len", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    table = generate_impressions(args.requests, args.history_len, seed=args.seed)
    pq.write_table(table, os.path.join(args.out, "impressions.parquet"), compression="zstd")
    buf = io.BytesIO()
    pcsv.write_csv(history_as_text(table), buf)
    with open(os.path.join(args.out, "impressions.csv.zst"), "wb") as fh:
        fh.write(zstandard.ZstdCompressor(level=19).compress(buf.getvalue()))
    print(f"wrote {table.num_rows} impression rows of {args.requests} requests to {args.out}")


if __name__ == "__main__":
    main()
