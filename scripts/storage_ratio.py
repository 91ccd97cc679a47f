#!/usr/bin/env python3
"""Storage ratio of roolog against the flat impression-level Parquet (zstd level 3), per log.

For each log: write it as one flat Parquet file with pyarrow (zstd-3, default encodings), convert it with
`roolog convert` (a whole process), and print flat bytes / roolog bytes, roolog's in-memory ratio and its
rows/s. Logs: sample_data/, the real logs in ../shared/datasets, and a seeded 1M-row synthetic log.

    python scripts/storage_ratio.py [--synthetic-requests 100000]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DATASETS = os.path.join(REPO, "..", "shared", "datasets")
sys.path.insert(0, REPO)
from roolog.synthetic import generate_impressions  # noqa: E402

LOGS = [  # name, path, key, order column
    ("sample", os.path.join(REPO, "sample_data", "impressions.parquet"), ["request_id"], "position"),
    ("MIND", os.path.join(DATASETS, "mind_small_sample", "impressions_exploded.parquet"), ["impression_id"],
     "position"),
    ("trivago", os.path.join(DATASETS, "trivago_recsys2019_sample", "clickout_impressions_exploded.csv"),
     ["request_id"], "position"),
    ("LTR train", os.path.join(DATASETS, "lightgbm_lambdarank_example", "rank_train.csv"), ["query_id"],
     "row_in_query"),
]


def read(path):
    return pq.read_table(path) if path.endswith(".parquet") else pcsv.read_csv(path)


def measure(name, path, key, order_by, tmp):
    flat = os.path.join(tmp, f"{name}.flat.parquet")
    pq.write_table(read(path), flat, compression="zstd", compression_level=3)
    out = os.path.join(tmp, f"{name}.out")
    args = [os.path.join(os.path.dirname(sys.executable), "roolog"), "convert", flat, "-o", out, "--order-by",
            order_by, "--json", "-q"] + [a for k in key for a in ("--key", k)]
    report = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    t = report["totals"]
    flat_bytes = os.path.getsize(flat)
    return (name, t["rows"], t["requests"], flat_bytes, t["output_bytes"], flat_bytes / t["output_bytes"],
            t["logical_ratio"], report["rows_per_second"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic-requests", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logs = [entry for entry in LOGS if os.path.exists(entry[1])]
        synthetic = os.path.join(tmp, "synthetic.parquet")
        pq.write_table(generate_impressions(args.synthetic_requests, 100, seed=1), synthetic)
        logs.append(("synthetic, history 100", synthetic, ["request_id"], "position"))
        print("| log | rows | requests | flat zstd-3 bytes | roolog bytes | on-disk ratio | in-memory ratio | rows/s |")
        print("|---|---|---|---|---|---|---|---|")
        for entry in logs:
            name, rows, requests, flat, ours, ratio, logical, rate = measure(*entry, tmp)
            print(f"| {name} | {rows:,} | {requests:,} | {flat:,} | {ours:,} | {ratio:.3f} | {logical:.2f} | "
                  f"{rate:,.0f} |")


if __name__ == "__main__":
    main()
