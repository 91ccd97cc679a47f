#!/usr/bin/env python3
"""Training throughput: request layout vs impression layout, same model, same impressions seen.

For each history length, a seeded synthetic log (the project's own generator) is converted with roolog,
then `roolog.train` runs twice over the same training batches: --layout request (the request tower and
its causal attention over the history once per request) and --layout impression (the classic
pipeline: each impression carries its own copy of the history, the tower runs once per impression).
Both see the same impressions in the same order from the same initial weights, so eval AUC should agree;
the ratio of impressions/s (after warm-up, data loading included) is the training-side win.

    python scripts/bench_train.py              # history 100 and 1,000 (about 10 minutes on 2 CPU cores)
    python scripts/bench_train.py --quick      # small, a check that the script runs
    python scripts/bench_train.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import pyarrow.parquet as pq

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
import roolog  # noqa: E402
from roolog.synthetic import generate_impressions  # noqa: E402
from roolog.train import TrainConfig, train  # noqa: E402

CASES = {  # history length: (requests in the log, training steps of 512 impressions)
    100: (20_000, 120),
    1000: (2_000, 12),
}
QUICK = {20: (2_000, 10), 200: (1_000, 6)}


def make_output(folder: str, requests: int, history: int) -> str:
    log = os.path.join(folder, f"h{history}.parquet")
    pq.write_table(generate_impressions(requests, history_len=history, seed=history), log)
    out = os.path.join(folder, f"h{history}_out")
    roolog.convert([log], out, key=("request_id",), order_by="position",
                   schema_file=os.path.join(REPO, "schemas", "sample.toml"), progress=False)
    return out


def run(out: str, layout: str, history: int, steps: int, device: str) -> dict:
    cfg = TrainConfig(layout=layout, max_history=history, max_steps=steps, batch_impressions=512, device=device,
                      warmup_steps=3, progress=False)
    return train(out, cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small cases, a check that the script runs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="roolog-bench-train-") as folder:
        for history, (requests, steps) in (QUICK if args.quick else CASES).items():
            out = make_output(folder, requests, history)
            by_layout = {layout: run(out, layout, history, steps, args.device) for layout in ("request", "impression")}
            req, imp = by_layout["request"], by_layout["impression"]
            results.append({"history": history, "requests": requests, "steps": steps, **by_layout})
            speed_up = req["impressions_per_s"] / imp["impressions_per_s"]
            rows.append(f"| {history:,} | {req['device']} | {req['impressions_seen']:,} | "
                        f"{imp['impressions_per_s']:,.0f} | {req['impressions_per_s']:,.0f} | {speed_up:.2f}x | "
                        f"{imp['eval']['auc']:.4f} | {req['eval']['auc']:.4f} | "
                        f"{abs(req['eval']['auc'] - imp['eval']['auc']):.4f} |")
            print(f"history {history}: done", file=sys.stderr)
    print("| history | device | impressions seen (each) | impression layout imp/s | request layout imp/s | "
          "speed-up | AUC impression | AUC request | AUC diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)


if __name__ == "__main__":
    main()
