#!/usr/bin/env python3
"""roolog against DuckDB, Polars and the decode floor, side by side, as whole processes.

For each synthetic case (the project's own seeded generator, roolog.synthetic, and the wide log of
scripts/widelog.py: 15 request-level columns with two 100-item histories, 13 impression-level ones; rows
contiguous, shuffled, or interleaved over a window of concurrent requests) every tool runs N times,
interleaved, under
/usr/bin/time -v: roolog convert; DuckDB (threads = cores, any_value for request columns,
list(col ORDER BY position)); Polars lazy (group_by + sort_by(position) inside the agg, sink_parquet);
and the decode floor (pyarrow read_table of every column). Before any timing counts, each peer's output
is checked to hold the same requests and values as roolog's. Then a markdown table: median wall, peak
RSS, CPU seconds, output bytes, and ratios to the floor and to the best peer. The real logs in
../shared/datasets are compared for bytes: flat Parquet zstd-3 vs roolog vs DuckDB vs Polars; so is a
time-ordered log of repeat users (roolog.synthetic.generate_repeat_users): flat, flat sorted by user,
roolog, roolog --cluster-by user_id (1 and 4 shards), and DuckDB and Polars grouped and sorted by user.

    python scripts/bench.py                 # all cases, 3 runs each (about 35 minutes here)
    python scripts/bench.py --quick         # small cases, 1 run: a smoke check of the script
    python scripts/bench.py --storage       # only the bytes: real logs and the repeat-user log (a minute)
    python scripts/bench.py --object-store  # the 1M-row logs from a local S3 server against disk (5 minutes)
    python scripts/bench.py --no-storage --case "1M rows CSV, history 20 as text"   # one case, no bytes part

The text cases (CSV, TSV.gz, JSON Lines) hold the same generator's rows with the history as space-separated
text (JSON times as epoch milliseconds); their peers are DuckDB read_csv/read_ndjson, Polars
scan_csv/scan_ndjson and pyarrow's read_csv/read_json as the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

import polars as pl
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
from roolog.synthetic import (  # noqa: E402
    generate_impressions,
    generate_repeat_users,
    history_as_text,
    interleave_order,
    write_impressions,
)

sys.path.insert(0, os.path.join(REPO, "scripts"))
from widelog import write_wide  # noqa: E402

PY = sys.executable
ROOLOG = os.path.join(os.path.dirname(PY), "roolog")
CORES = os.cpu_count() or 1
REQUEST = ["user_id", "country", "device", "request_time", "user_history_item_ids"]
IMPRESSION = ["position", "item_id", "price", "click"]
WIDE_REQUEST = ["user_id", "request_time", "locale", "platform", *(f"ctx_i{i}" for i in range(6)),
                *(f"ctx_f{i}" for i in range(4)), "hist_items", "hist_actions"]
WIDE_IMPRESSION = ["position", "item_id", *(f"score_{i}" for i in range(7)), "impression_time", "click", "purchase"]
WINDOW = 64  # concurrent requests in the interleaved cases
CASES = {  # name: (requests, history length, layout); "wide ..." layouts are widelog.py orders
    "1M rows, history 100": (100_000, 100, "contiguous"),
    "5M rows, history 100": (500_000, 100, "contiguous"),
    "0.5M rows, history 1,000": (50_000, 1000, "contiguous"),
    "1M rows shuffled": (100_000, 100, "shuffled"),
    "1M rows interleaved (window 64)": (100_000, 100, "interleaved"),
    "1M rows, string keys": (100_000, 100, "strings"),
    "1M rows CSV, no history": (100_000, 0, "csv"),  # text input: type checks, quoted line breaks
    "1M rows CSV, history 20 as text": (100_000, 20, "csv"),
    "1M rows TSV.gz, history 20 as text": (100_000, 20, "tsv.gz"),
    "0.5M rows JSON Lines, history 20 as text": (50_000, 20, "jsonl"),
    "wide 5M rows": (500_000, 100, "wide contiguous"),
    "wide 1M rows": (100_000, 100, "wide contiguous"),
    "wide 1M rows interleaved (window 64)": (100_000, 100, "wide interleaved"),
    "wide 1M rows shuffled": (100_000, 100, "wide shuffled"),
}
QUICK = {"100K rows, history 100": (10_000, 100, "contiguous"), "100K rows shuffled": (10_000, 100, "shuffled"),
         "100K rows CSV": (10_000, 0, "csv"), "100K rows TSV.gz, history 20": (10_000, 20, "tsv.gz"),
         "50K rows JSON Lines, history 20": (5_000, 20, "jsonl"),
         "wide 100K rows interleaved": (10_000, 100, "wide interleaved")}
TEXT = ("csv", "tsv.gz", "jsonl")  # text layouts: the file's suffix; a history is a space-separated string

DUCKDB = """
import duckdb, sys
src, out, key, order, request, impression = sys.argv[1:7]
cols = [f"any_value({c}) AS {c}" for c in request.split(",") if c] + [
    f"list({c} ORDER BY {order}) AS {c}" for c in impression.split(",")]
con = duckdb.connect()
con.execute(f"SET threads TO {CORES}")
read = (f"read_ndjson('{src}')" if src.endswith(".jsonl") else f"read_parquet('{src}')" if src.endswith(".parquet")
        else f"read_csv('{src}')")
con.execute(f"COPY (SELECT {key}, {', '.join(cols)} FROM {read} GROUP BY {key}) "
            f"TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
""".replace("{CORES}", str(CORES))
POLARS = """
import polars as pl, sys
src, out, key, order, request, impression = sys.argv[1:7]
aggs = [pl.col(c).first() for c in request.split(",") if c] + [
    pl.col(c).sort_by(order) for c in impression.split(",")]
scan = (pl.scan_parquet(src) if src.endswith(".parquet") else pl.scan_ndjson(src) if src.endswith(".jsonl")
        else pl.scan_csv(src, try_parse_dates=True, separator="\t" if ".tsv" in src else ","))
scan.group_by(key).agg(aggs).sink_parquet(out, compression="zstd", compression_level=3)
"""
SORTED_BY = {  # the grouped output sorted by a column, as each peer would write it clustered
    "duckdb": DUCKDB.replace("GROUP BY {key})", "GROUP BY {key} ORDER BY {sort}, min(file_row_number))")
                    .replace("read_parquet('{src}')", "read_parquet('{src}', file_row_number=true)")
                    .replace("src, out, key, order, request, impression = sys.argv[1:7]",
                             "src, out, key, order, request, impression, sort = sys.argv[1:8]"),
    "polars": POLARS.replace(".agg(aggs).sink_parquet", ".agg(aggs).sort(sort, maintain_order=True).sink_parquet")
                    .replace("src, out, key, order, request, impression = sys.argv[1:7]",
                             "src, out, key, order, request, impression, sort = sys.argv[1:8]")
                    .replace("group_by(key)", "group_by(key, maintain_order=True)"),
}
FLOOR = """
import pyarrow as pa, pyarrow.csv as pc, pyarrow.json as pj, pyarrow.parquet as pq, sys
src = sys.argv[1]
if src.endswith(".parquet"):
    pq.read_table(src)
elif src.endswith(".jsonl"):
    pj.read_json(src)
else:  # read_csv takes .gz by its name
    pc.read_csv(src, parse_options=pc.ParseOptions(delimiter="\t" if ".tsv" in src else ","))
"""


def timed(cmd: list[str]) -> dict:
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-3000:]}")

    def field(name: str) -> str:
        return re.search(rf"{re.escape(name)}: (\S+)", proc.stderr).group(1)

    h, m, s = ([0] + [float(x) for x in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")])[-3:]
    return {"wall": h * 3600 + m * 60 + s, "rss_mb": int(field("Maximum resident set size (kbytes)")) / 1024,
            "cpu": float(field("User time (seconds)")) + float(field("System time (seconds)"))}


def folder_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".parquet"))


def tool_commands(src: str, out: str, key: str, order: str, request: list[str], impression: list[str]) -> dict:
    levels = [",".join(request), ",".join(impression)]
    roolog = [ROOLOG, "convert", src, "-o", out + ".roolog", "--key", key, "--order-by", order, "-q", "--force"]
    commands = {
        "floor": [PY, "-c", FLOOR, src],
        "roolog": roolog,
        "duckdb": [PY, "-c", DUCKDB, src, out + ".duckdb.parquet", key, order, *levels],
        "polars": [PY, "-c", POLARS, src, out + ".polars.parquet", key, order, *levels],
    }
    if src.endswith(".csv"):  # the cost of reading the file quote-aware, as a line break in a value makes it
        commands["roolog --newlines-in-values"] = [*roolog[:4], out + ".roolog-nl", *roolog[5:],
                                                   "--newlines-in-values"]
    return commands


def read_output(path: str, key: str) -> pa.Table:
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.startswith("part-"))
        table = pa.concat_tables([pq.read_table(f) for f in files])
    else:
        table = pq.read_table(path)
    return table.sort_by(key)


def check_same(reference: pa.Table, other: pa.Table, tool: str, case: str) -> None:
    """Same requests, same values, column by column (types cast to roolog's)."""
    if other.num_rows != reference.num_rows:
        raise SystemExit(f"{case}: {tool} wrote {other.num_rows} requests, roolog {reference.num_rows}")
    for f in reference.schema:
        theirs = other.column(f.name).combine_chunks().cast(f.type)
        if not theirs.equals(reference.column(f.name).combine_chunks()):
            raise SystemExit(f"{case}: {tool} differs from roolog in column {f.name}")


def make_case(tmp: str, name: str, requests: int, history: int, layout: str) -> str:
    path = os.path.join(tmp, re.sub(r"\W+", "_", name) + ".parquet")
    if layout in TEXT:
        path = path.replace(".parquet", "." + layout)
        table = generate_impressions(requests, max(history, 1), seed=1)
        table = history_as_text(table) if history else table.drop_columns(["user_history_item_ids"])
        if layout == "jsonl":  # times as epoch milliseconds, as JSON logs write them
            frame = pl.from_arrow(table).with_columns(pl.col("request_time").dt.epoch("ms"))
            frame.write_ndjson(path)
        else:
            with pa.output_stream(path, compression="gzip" if path.endswith(".gz") else None) as out:
                pcsv.write_csv(table, out, pcsv.WriteOptions(delimiter="\t" if layout == "tsv.gz" else ","))
    elif layout == "shuffled":
        pq.write_table(generate_impressions(requests, history, seed=1, shuffle=True), path, compression="zstd")
    elif layout == "interleaved":
        table = generate_impressions(requests, history, seed=1)
        order = interleave_order(table, WINDOW, seed=2)
        pq.write_table(table.take(pa.array(order)), path, compression="zstd")
    elif layout.startswith("wide "):
        write_wide(path, requests, layout.removeprefix("wide "), WINDOW, seed=1)
    else:
        write_impressions(path, requests, history, seed=1, string_keys=layout == "strings")
    return path


def run_case(tmp: str, name: str, spec: tuple, runs: int) -> list[tuple]:
    src = make_case(tmp, name, *spec)
    out = os.path.join(tmp, "out")
    wide = spec[2].startswith("wide ")
    request = WIDE_REQUEST if wide else [c for c in REQUEST if spec[1] or c != "user_history_item_ids"]
    cmds = tool_commands(src, out, "request_id", "position", request, WIDE_IMPRESSION if wide else IMPRESSION)
    times: dict[str, list[dict]] = {t: [] for t in cmds}
    for r in range(runs):
        for tool, cmd in cmds.items():
            times[tool].append(timed(cmd))
        if r == 0:  # correctness before anything is reported
            reference = read_output(out + ".roolog", "request_id")
            for tool in ("duckdb", "polars"):
                check_same(reference, read_output(f"{out}.{tool}.parquet", "request_id"), tool, name)
    sizes = {"roolog": folder_bytes(out + ".roolog"), "duckdb": folder_bytes(out + ".duckdb.parquet"),
             "polars": folder_bytes(out + ".polars.parquet"), "floor": None}
    med = {t: {k: statistics.median(x[k] for x in v) for k in ("wall", "rss_mb", "cpu")} for t, v in times.items()}
    best_peer = min(med["duckdb"]["wall"], med["polars"]["wall"])
    sizes["roolog --newlines-in-values"] = folder_bytes(out + ".roolog-nl") if len(cmds) > 4 else None
    rows = []
    for tool in cmds:
        m = med[tool]
        rows.append((name, tool, f"{m['wall']:.2f}", f"{m['rss_mb']:,.0f}", f"{m['cpu']:.1f}",
                     "-" if sizes[tool] is None else f"{sizes[tool] / 2**20:.1f}",
                     f"{m['wall'] / med['floor']['wall']:.2f}", f"{m['wall'] / best_peer:.2f}"))
    os.remove(src)
    return rows


def real_logs(tmp: str) -> list[tuple]:
    """Bytes only: the flat file (pyarrow, zstd-3) vs roolog vs DuckDB vs Polars, levels from roolog."""
    datasets = os.path.join(REPO, "..", "shared", "datasets")
    logs = [("MIND", "mind_small_sample/impressions_exploded.parquet", "impression_id", "position"),
            ("trivago", "trivago_recsys2019_sample/clickout_impressions_exploded.csv", "request_id", "position"),
            ("LTR train", "lightgbm_lambdarank_example/rank_train.csv", "query_id", "row_in_query")]
    rows = []
    for name, rel, key, order in logs:
        path = os.path.join(datasets, rel)
        if not os.path.exists(path):
            continue
        table = pq.read_table(path) if path.endswith(".parquet") else pcsv.read_csv(path)
        flat = os.path.join(tmp, f"{key}.flat.parquet")
        pq.write_table(table, flat, compression="zstd", compression_level=3)
        out = os.path.join(tmp, f"{key}.real")
        cmds = tool_commands(flat, out, key, order, [], [])
        timed(cmds["roolog"])
        with open(os.path.join(out + ".roolog", "_manifest.json")) as fh:
            manifest = json.load(fh)["schema"]
        cmds = tool_commands(flat, out, key, order, manifest["request"], manifest["impression"])
        timed(cmds["duckdb"])
        timed(cmds["polars"])
        size = {t: folder_bytes(p) for t, p in (("flat", flat), ("roolog", out + ".roolog"),
                                                 ("duckdb", out + ".duckdb.parquet"),
                                                 ("polars", out + ".polars.parquet"))}
        rows.append((name, f"{size['flat']:,}", f"{size['roolog']:,}", f"{size['duckdb']:,}", f"{size['polars']:,}",
                     f"{size['flat'] / size['roolog']:.3f}", f"{size['flat'] / size['duckdb']:.3f}",
                     f"{size['flat'] / size['polars']:.3f}"))
    return rows


def repeat_users(tmp: str, runs: int) -> list[tuple]:
    """Bytes (and roolog's wall seconds, median of `runs`) on the time-ordered repeat-user log: issue 25's
    storage targets are >= 5.5x the flat file and >= 1.8x the flat file sorted by user."""
    table = generate_repeat_users(users=1000, requests_per_user=28, history_len=200, seed=1)
    flat, by_user = os.path.join(tmp, "repeat.parquet"), os.path.join(tmp, "repeat.by_user.parquet")
    pq.write_table(table, flat, compression="zstd", compression_level=3)
    pq.write_table(table.sort_by("user_id"), by_user, compression="zstd", compression_level=3)
    out = os.path.join(tmp, "repeat")
    request, impression = ["user_id", "request_time", "user_history_item_ids"], ["position", "item_id", "click"]
    cmds = tool_commands(flat, out, "request_id", "position", request, impression)
    levels = [",".join(request), ",".join(impression)]
    tools = {
        "roolog": cmds["roolog"],
        "roolog --cluster-by user_id": [*cmds["roolog"][:4], out + ".c1", *cmds["roolog"][5:],
                                        "--cluster-by", "user_id", "--shards", "1"],
        "roolog --cluster-by user_id --shards 4": [*cmds["roolog"][:4], out + ".c4", *cmds["roolog"][5:],
                                                   "--cluster-by", "user_id", "--shards", "4"],
        "DuckDB, sorted by user": [PY, "-c", SORTED_BY["duckdb"], flat, out + ".duckdb.parquet", "request_id",
                                   "position", *levels, "user_id"],
        "Polars, sorted by user": [PY, "-c", SORTED_BY["polars"], flat, out + ".polars.parquet", "request_id",
                                   "position", *levels, "user_id"],
    }
    paths = dict(zip(tools, [out + ".roolog", out + ".c1", out + ".c4", out + ".duckdb.parquet",
                             out + ".polars.parquet"], strict=True))
    walls: dict[str, list[float]] = {t: [] for t in tools}
    for _ in range(runs):
        for tool, cmd in tools.items():
            walls[tool].append(timed(cmd)["wall"])
    reference = read_output(paths["roolog"], "request_id")
    for tool, path in paths.items():
        check_same(reference, read_output(path, "request_id"), tool, "repeat users")
    rows = [("flat, time-ordered (pyarrow)", f"{os.path.getsize(flat):,}", "1.00", "-", "-"),
            ("flat, sorted by user (pyarrow)", f"{os.path.getsize(by_user):,}",
             f"{os.path.getsize(flat) / os.path.getsize(by_user):.2f}", "1.00", "-")]
    for tool, path in paths.items():
        size = folder_bytes(path)
        rows.append((tool, f"{size:,}", f"{os.path.getsize(flat) / size:.2f}", f"{os.path.getsize(by_user) / size:.2f}",
                     f"{statistics.median(walls[tool]):.2f}"))
    return rows


OBJECT_CASES = ("1M rows, history 100", "1M rows CSV, no history")
S3_OPTIONS = ("import os; S3 = {'aws_endpoint_url': os.environ['AWS_ENDPOINT_URL'], 'aws_allow_http': 'true', "
              "'aws_access_key_id': 'testing', 'aws_secret_access_key': 'testing', 'aws_region': 'us-east-1'}\n")
POLARS_S3 = S3_OPTIONS + POLARS.replace("pl.scan_csv(src, ", "pl.scan_csv(src, storage_options=S3, ").replace(
    "pl.scan_parquet(src)", "pl.scan_parquet(src, storage_options=S3)")
FLOOR_S3 = ("import os, sys, pyarrow.csv as pc, pyarrow.fs as fs, pyarrow.parquet as pq; "
            "s3 = fs.S3FileSystem(endpoint_override=os.environ['AWS_ENDPOINT_URL'], access_key='testing', "
            "secret_key='testing', region='us-east-1'); p = sys.argv[1][len('s3://'):]; "
            "pc.read_csv(s3.open_input_stream(p)) if p.endswith('.csv') else pq.read_table(p, filesystem=s3)")


def object_store(tmp: str, runs: int) -> list[tuple]:
    """The same log read from local disk and from a local S3 server (moto's server mode, a separate process on
    127.0.0.1): roolog, Polars (its own S3 reader) and pyarrow's read (S3FileSystem); DuckDB's S3 reader is an
    extension it downloads, not available offline. roolog's shards from S3 must be the disk run's bytes."""
    import socket
    import time
    import urllib.request

    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([os.path.join(os.path.dirname(PY), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    rows = []
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        client = boto3.client("s3")
        client.create_bucket(Bucket="bench")
        for name in OBJECT_CASES:
            src = make_case(tmp, name, *CASES[name])
            uri = f"s3://bench/{os.path.basename(src)}"
            client.upload_file(src, "bench", os.path.basename(src))
            out = os.path.join(tmp, "objects")
            cmds = {}
            for where, path in (("disk", src), ("S3", uri)):
                cmds[f"roolog ({where})"] = [ROOLOG, "convert", path, "-o", f"{out}.{where}.roolog", "--key",
                                             "request_id", "--order-by", "position", "-q", "--force"]
                levels = [",".join(c for c in REQUEST if not (src.endswith(".csv") and c == "user_history_item_ids")),
                          ",".join(IMPRESSION)]
                cmds[f"polars ({where})"] = [PY, "-c", POLARS_S3 if where == "S3" else POLARS, path,
                                             f"{out}.{where}.polars.parquet", "request_id", "position", *levels]
                cmds[f"floor ({where})"] = [PY, "-c", FLOOR_S3 if where == "S3" else FLOOR, path]
            times: dict[str, list[float]] = {t: [] for t in cmds}
            for r in range(runs):
                for tool, cmd in cmds.items():
                    times[tool].append(timed(cmd)["wall"])
                if r == 0:
                    for tool in ("roolog", "polars"):
                        disk, s3 = (read_output(f"{out}.{w}.{tool}" + (".parquet" if tool == "polars" else ""),
                                                "request_id") for w in ("disk", "S3"))
                        check_same(disk, s3, f"{tool} from S3", name)
                    shards = [sorted(os.listdir(f"{out}.{w}.roolog")) for w in ("disk", "S3")]
                    for f in (f for f in shards[0] if f.startswith("part-")):
                        with open(os.path.join(f"{out}.disk.roolog", f), "rb") as a, \
                                open(os.path.join(f"{out}.S3.roolog", f), "rb") as b:
                            if a.read() != b.read():
                                raise SystemExit(f"{name}: roolog's shard {f} from S3 differs from the disk run's")
            med = {t: statistics.median(v) for t, v in times.items()}
            for tool in ("roolog", "polars", "floor"):
                rows.append((name, tool, f"{med[tool + ' (disk)']:.2f}", f"{med[tool + ' (S3)']:.2f}",
                             f"{med[tool + ' (S3)'] / med[tool + ' (disk)']:.2f}"))
            rows.append((name, "roolog (S3) / polars (S3)", "", "", f"{med['roolog (S3)'] / med['polars (S3)']:.2f}"))
            os.remove(src)
            print(f"done: {name} from S3", file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait()
    return rows


def markdown(header: tuple, rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small cases, one run")
    ap.add_argument("--case", action="append", help="only these cases (by name)")
    ap.add_argument("--storage", action="store_true", help="only the bytes: real logs and repeat users")
    ap.add_argument("--no-storage", action="store_true", help="leave out the bytes of real logs and repeat users")
    ap.add_argument("--object-store", action="store_true",
                    help="only the 1M-row logs read from a local S3 server (moto) against the same files on disk")
    args = ap.parse_args()
    if args.object_store:
        with tempfile.TemporaryDirectory(prefix="roolog-bench-") as tmp:
            rows = object_store(tmp, args.runs)
        print(f"Read from local disk and from a local S3 server (moto, 127.0.0.1), {CORES} cores, median of "
              f"{args.runs} run(s), wall seconds:\n")
        print(markdown(("case", "tool", "disk s", "S3 s", "S3 / disk"), rows))
        return
    cases = QUICK if args.quick else CASES
    if args.case:
        cases = {k: v for k, v in cases.items() if k in args.case}
    runs = 1 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="roolog-bench-") as tmp:
        rows = []
        for name, spec in ({} if args.storage else cases).items():
            rows += run_case(tmp, name, spec, runs)
            print(f"done: {name}", file=sys.stderr, flush=True)
        if rows:
            print(f"Synthetic logs, {CORES} cores, median of {runs} run(s) per tool, each a whole process:\n")
            print(markdown(("case", "tool", "wall s", "peak RSS MB", "CPU s", "output MB", "x floor",
                            "x best peer"), rows))
        if args.no_storage:
            return
        print("\nRepeat users (1,000 users x 28 requests, history 200, time-ordered), bytes on disk:\n")
        print(markdown(("file", "bytes", "flat / this", "flat sorted by user / this", "wall s"),
                       repeat_users(tmp, runs)))
        print("\nReal logs, bytes on disk (flat = the impression rows, pyarrow zstd-3):\n")
        print(markdown(("log", "flat", "roolog", "DuckDB", "Polars", "flat/roolog", "flat/DuckDB", "flat/Polars"),
                       real_logs(tmp)))


if __name__ == "__main__":
    main()
