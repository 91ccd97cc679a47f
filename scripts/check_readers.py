"""Open a roolog output with the heavy readers CI does not install: HuggingFace datasets, Ray Data, Daft.

    pip install datasets "ray[data]" daft          # in any environment with pyarrow
    python scripts/check_readers.py [--roolog PATH_TO_roolog]

It converts sample_data/ twice with the `roolog` command (a flat OUT, and a partitioned OUT of two hive
days ds=1/ ds=2/, each with the temp folder of a killed run left in it), then opens both with each reader
exactly as README's "Reading the output" says, and checks one row per request and every impression. The
light readers (pyarrow, polars, DuckDB, Spark) are tested in tests/write/test_readers.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "sample_data", "impressions.parquet")


def convert(roolog: str, inputs: str, out: str) -> None:
    args = [roolog, "convert", inputs, "-o", out, "--key", "request_id", "--order-by", "position", "--shards", "2",
            "-q"]
    subprocess.run(args, check=True)
    killed = subprocess.run([*args, "--force"], env=dict(os.environ, ROOLOG_FAILPOINT="write"))
    assert killed.returncode == -9, "the killed run was meant to leave its temp folder"


def hf_datasets(flat: str, partitioned: str) -> tuple[pa.Table, pa.Table]:
    import datasets

    one = datasets.load_dataset("parquet", data_files=f"{flat}/*.parquet", split="train")
    two = datasets.load_dataset("parquet", data_files=f"{partitioned}/*=*/*.parquet", split="train")
    return one.data.table, two.data.table


def ray_data(flat: str, partitioned: str) -> tuple[pa.Table, pa.Table]:
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        one = ray.data.read_parquet(flat).to_arrow_refs()
        two = ray.data.read_parquet(partitioned).to_arrow_refs()  # hive folders become columns by default
        return pa.concat_tables(ray.get(one)), pa.concat_tables(ray.get(two))
    finally:
        ray.shutdown()


def daft_frames(flat: str, partitioned: str) -> tuple[pa.Table, pa.Table]:
    import daft

    one = daft.read_parquet(f"{flat}/*.parquet").to_arrow()
    two = daft.read_parquet(f"{partitioned}/*=*/*.parquet", hive_partitioning=True).to_arrow()
    return one, two


def check(table: pa.Table, sample: pa.Table, partitioned: bool) -> str:
    """'ok: ...' or what is wrong; `partitioned`: the ds column must come from the folder names."""
    requests = len(set(sample.column("request_id").to_pylist()))
    impressions = sum(len(v) for v in table.column("item_id").to_pylist())
    problems = []
    if table.num_rows != requests:
        problems.append(f"{table.num_rows:,} rows, expected {requests:,} requests")
    if impressions != sample.num_rows:
        problems.append(f"{impressions:,} impressions, expected {sample.num_rows:,}")
    # the partition column's type is each reader's own guess from the folder names (Ray: string)
    days = {str(v) for v in table.column("ds").to_pylist()} if "ds" in table.column_names else set()
    if partitioned and days != {"1", "2"}:
        problems.append("no ds column with days 1 and 2 from the folder names")
    return "; ".join(problems) or f"ok: {table.num_rows:,} requests, {impressions:,} impressions"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roolog", default=shutil.which("roolog") or "roolog", help="the roolog command")
    args = parser.parse_args()
    sample = pq.read_table(SAMPLE)
    work = tempfile.mkdtemp(prefix="roolog-readers-")
    failed = False
    try:
        flat, logs, partitioned = (os.path.join(work, n) for n in ("flat", "logs", "partitioned"))
        convert(args.roolog, SAMPLE, flat)
        for day in (1, 2):
            os.makedirs(os.path.join(logs, f"ds={day}"))
            rows = sample.filter(pc.equal(pc.bit_wise_and(sample.column("request_id"), 1), day - 1))
            pq.write_table(rows, os.path.join(logs, f"ds={day}", "p.parquet"))
        convert(args.roolog, logs, partitioned)
        # HuggingFace datasets reads no hive columns: its partitioned rows come without ds (README says so)
        readers = (("HuggingFace datasets", hf_datasets, False), ("Ray Data", ray_data, True),
                   ("Daft", daft_frames, True))
        for name, read, hive in readers:
            try:
                one, two = read(flat, partitioned)
                verdicts = [check(one, sample, False), check(two, sample, hive)]
                failed |= not all(v.startswith("ok") for v in verdicts)
                verdicts = f"flat: {verdicts[0]} | partitioned: {verdicts[1]}" + ("" if hive else " (no ds column)")
            except Exception as err:  # a reader that cannot open OUT is the finding, not a crash of the script
                verdicts = f"FAILED: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                traceback.print_exc(file=sys.stderr)
                failed = True
            print(f"{name:22} {verdicts}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
