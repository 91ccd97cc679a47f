#!/usr/bin/env python3
"""roolog convert --engine local against --engine spark, as whole processes, at 1M and 5M rows (and 20M).

Spark runs in local mode (local[*]) and, with --cluster, on a Spark standalone cluster on this machine (the
master and workers in JVMs of their own, scripts/spark_cluster.py): two workers of one core each, and one
worker of two cores. The input is one Parquet file: its row groups are read by several tasks
(sources.Piece), so one big file spreads.

Each case is a seeded synthetic log (roolog's own generator, contiguous requests, a 100-item history per
request); both engines convert it with the same options and the same shard count, `runs` times each,
interleaved. Before any timing counts, the two outputs are checked to be byte-identical (every shard's
xxh64 and the manifest but its timestamp). Peak memory is the sum over the whole process tree, sampled
every 50 ms: for Spark that is the Python driver, the JVM and its Python workers together. Spark's wall
time includes starting its JVM (about 5-10 s here); on a standalone cluster the master's and workers' JVMs
and their executors count too. A markdown table, then how each engine's time grows.

    python scripts/bench_spark.py               # 1M and 5M rows, 1 run each (about 5 minutes on 2 cores)
    python scripts/bench_spark.py --cluster --sizes 1M,5M,20M   # and on standalone clusters, up to 20M rows
    python scripts/bench_spark.py --quick       # 100K rows: a smoke check of the script
"""

from __future__ import annotations

import argparse
import contextlib
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
from spark_cluster import StandaloneCluster  # noqa: E402  (scripts/spark_cluster.py)

from roolog.synthetic import write_impressions  # noqa: E402

ROOLOG = os.path.join(os.path.dirname(sys.executable), "roolog")
CORES = os.cpu_count() or 1
CASES = {"1M": 100_000, "5M": 500_000, "20M": 2_000_000}  # rows: requests (about 10 impressions each)
QUICK = {"100K": 10_000}
CLUSTERS = {"standalone 2 workers x 1 core": (2, 1), "standalone 1 worker x 2 cores": (1, 2)}
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


def timed(cmd: list[str], also: list[int] | None = None) -> dict:
    """Wall seconds and the peak resident bytes of the process tree (and of the trees of `also`)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid) + sum(_tree_rss(p) for p in also or []))
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


def run_case(tmp: str, name: str, requests: int, runs: int, shards: int,
             engines: dict[str, tuple[list[str], list[int]]]) -> tuple[list[tuple], dict]:
    """Each engine (extra convert arguments, pids whose trees count too) converts the case's log `runs`
    times, interleaved; the outputs must be byte-identical to the local engine's."""
    src = os.path.join(tmp, f"{requests}.parquet")
    rows = write_impressions(src, requests, HISTORY, seed=1)
    outs = {engine: os.path.join(tmp, f"out-{i}") for i, engine in enumerate(engines)}
    results: dict[str, list[dict]] = {engine: [] for engine in outs}
    for r in range(runs):
        for engine, out in outs.items():
            shutil.rmtree(out, ignore_errors=True)
            extra, also = engines[engine]
            results[engine].append(timed([ROOLOG, "convert", src, "-o", out, "--key", "request_id", "--order-by",
                                          "position", "--shards", str(shards), "--json", "-q", *extra], also))
        if r == 0 and any(fingerprint(outs["local"]) != fingerprint(out) for out in outs.values()):
            raise SystemExit(f"{name}: the engines' outputs differ")
    table, walls = [], {}
    for engine, res in results.items():
        wall = statistics.median(x["wall"] for x in res)
        rss = statistics.median(x["rss"] for x in res)
        walls[engine] = wall
        report = res[0]["report"]
        tasks = report.get("engine", {}).get("read_tasks") or "-"
        table.append((f"{name} rows", engine, f"{wall:.1f}", f"{rss / 2**20:,.0f}", f"{rows / wall:,.0f}",
                      str(tasks), f"{report['totals']['output_bytes'] / 2**20:.1f}", "yes"))
    os.remove(src)
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    return table, walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--shards", type=int, default=CORES, help="shards for all engines (default: the cores)")
    ap.add_argument("--sizes", default="1M,5M", help=f"cases, of {','.join(CASES)}")
    ap.add_argument("--cluster", action="store_true", help="also on standalone clusters: " + "; ".join(CLUSTERS))
    ap.add_argument("--quick", action="store_true", help="one small case")
    args = ap.parse_args()
    cases = QUICK if args.quick else {n: CASES[n] for n in args.sizes.split(",")}
    rows, walls = [], {}
    with tempfile.TemporaryDirectory(prefix="roolog-bench-spark-") as tmp, contextlib.ExitStack() as stack:
        engines: dict[str, tuple[list[str], list[int]]] = {"local": ([], []),
                                                           "spark local[*]": (["--engine", "spark"], [])}
        for label, (workers, cores) in CLUSTERS.items() if args.cluster else ():
            cluster = stack.enter_context(StandaloneCluster(tempfile.mkdtemp(dir=tmp), workers, cores, "3g"))
            engines[label] = (["--engine", "spark", "--spark-master", cluster.url], cluster.pids())
        for name, requests in cases.items():
            table, walls[name] = run_case(tmp, name, requests, args.runs, args.shards, engines)
            rows += table
            print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"roolog convert, --shards {args.shards}, {CORES} cores, median of {args.runs} run(s); Spark's JVM start "
          "included\n")
    print(markdown(("case", "engine", "wall s", "peak RSS MB (process tree)", "rows/s", "read tasks", "output MB",
                    "byte-identical"), rows))
    names = list(walls)
    if len(names) > 1:
        first, last = names[0], names[-1]
        print()
        for engine in walls[first]:
            print(f"- {engine}: {last} / {first} rows = x{walls[last][engine] / walls[first][engine]:.2f} wall time")


if __name__ == "__main__":
    main()
