#!/usr/bin/env python3
"""roolog convert --engine local against --engine spark (local mode), as whole processes, at 1M and 5M rows.

Each case is a seeded synthetic log (roolog's own generator, contiguous requests, a 100-item history per
request); both engines convert it with the same options and the same shard count, `runs` times each,
interleaved. Before any timing counts, the two outputs are checked to be byte-identical (every shard's
xxh64 and the manifest but its timestamp). Peak memory is the sum over the whole process tree, sampled
every 50 ms: for Spark that is the Python driver, the JVM and its Python workers together. Spark's wall
time includes starting its JVM (about 5-10 s here). A markdown table, then how each engine's time grows.

    python scripts/bench_spark.py               # 1M and 5M rows, 1 run each (about 5 minutes on 2 cores)
    python scripts/bench_spark.py --quick       # 100K rows: a smoke check of the script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
from bench import markdown  # noqa: E402  (scripts/bench.py: the same table format)

from roolog.synthetic import write_impressions  # noqa: E402

ROOLOG = os.path.join(os.path.dirname(sys.executable), "roolog")
CORES = os.cpu_count() or 1
CASES = {"1M rows": 100_000, "5M rows": 500_000}  # requests (about 10 impressions each)
QUICK = {"100K rows": 10_000}
HISTORY = 100


def _tree_rss(root: int) -> int:
    """Resident bytes of `root` and every process below it."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0) * 1024
        except OSError:
            continue
    return total


def timed(cmd: list[str]) -> dict:
    """Wall seconds and the peak resident bytes of the process tree."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall": wall, "rss": peak, "report": json.loads(out)}


def fingerprint(out: str) -> dict:
    """What must be identical: every shard's hash and the manifest but its creation time."""
    with open(os.path.join(out, "_manifest.json")) as fh:
        manifest = json.load(fh)
    manifest.pop("created")
    return manifest


def run_case(tmp: str, name: str, requests: int, runs: int, shards: int) -> tuple[list[tuple], dict]:
    src = os.path.join(tmp, f"{requests}.parquet")
    rows = write_impressions(src, requests, HISTORY, seed=1)
    outs = {engine: os.path.join(tmp, f"out-{engine}") for engine in ("local", "spark")}
    results: dict[str, list[dict]] = {engine: [] for engine in outs}
    for r in range(runs):
        for engine, out in outs.items():
            shutil.rmtree(out, ignore_errors=True)
            results[engine].append(timed([ROOLOG, "convert", src, "-o", out, "--key", "request_id", "--order-by",
                                          "position", "--shards", str(shards), "--engine", engine, "--json", "-q"]))
        if r == 0 and fingerprint(outs["local"]) != fingerprint(outs["spark"]):
            raise SystemExit(f"{name}: the engines' outputs differ")
    table, walls = [], {}
    for engine, res in results.items():
        wall = statistics.median(x["wall"] for x in res)
        rss = statistics.median(x["rss"] for x in res)
        walls[engine] = wall
        out_bytes = res[0]["report"]["totals"]["output_bytes"]
        table.append((name, engine, f"{wall:.1f}", f"{rss / 2**20:,.0f}", f"{rows / wall:,.0f}",
                      f"{out_bytes / 2**20:.1f}", "yes"))
    os.remove(src)
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    return table, walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--shards", type=int, default=CORES, help="shards for both engines (default: the cores)")
    ap.add_argument("--quick", action="store_true", help="one small case")
    args = ap.parse_args()
    cases = QUICK if args.quick else CASES
    rows, walls = [], {}
    with tempfile.TemporaryDirectory(prefix="roolog-bench-spark-") as tmp:
        for name, requests in cases.items():
            table, walls[name] = run_case(tmp, name, requests, args.runs, args.shards)
            rows += table
            print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"roolog convert, --shards {args.shards}, {CORES} cores, median of {args.runs} run(s); Spark in local "
          f"mode (local[*]), its JVM start included\n")
    print(markdown(("case", "engine", "wall s", "peak RSS MB (process tree)", "rows/s", "output MB",
                    "byte-identical"), rows))
    names = list(walls)
    if len(names) > 1:
        first, last = names[0], names[-1]
        print()
        for engine in ("local", "spark"):
            print(f"- {engine}: {last} / {first} = x{walls[last][engine] / walls[first][engine]:.2f} wall time")


if __name__ == "__main__":
    main()
