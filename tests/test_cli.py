"""The installed `roolog` entry point, run as a real subprocess: help, --json, manifest, lock, overwrite."""

import fcntl
import json
import os

import pyarrow.parquet as pq
import xxhash
from helpers import SAMPLE, assert_same_rows, run_cli

SAMPLE_PARQUET = os.path.join(SAMPLE, "impressions.parquet")


def test_help_teaches_with_an_example():
    for command in ("convert", "explode", "stats", "infer-schema"):
        proc = run_cli(command, "--help")
        assert proc.returncode == 0
        assert "Example" in proc.stdout and f"roolog {command}" in proc.stdout
    top = run_cli("--help")
    assert "convert" in top.stdout and "explode" in top.stdout


def test_convert_json_and_manifest(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(out), "--key", "request_id", "--order-by", "position",
                   "--shards", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["totals"]["requests"] == 2000 and report["totals"]["shards"] == 3
    assert "requests in 3 shard(s)" in proc.stderr  # the human summary goes to stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["schema"]["key"] == ["request_id"] and manifest["schema"]["order_by"] == "position"
    assert manifest["schema"]["request"] == ["user_id", "country", "device", "request_time", "user_history_item_ids"]
    assert manifest["inputs"][0]["bytes"] == os.path.getsize(SAMPLE_PARQUET)
    assert manifest["totals"]["requests"] == 2000 and manifest["totals"]["impressions"] == report["totals"]["rows"]
    for shard in manifest["shards"]:
        path = out / shard["file"]
        assert shard["bytes"] == os.path.getsize(path)
        assert shard["xxh64"] == xxhash.xxh64(path.read_bytes()).hexdigest()
        assert shard["requests"] == pq.ParquetFile(path).metadata.num_rows
    assert json.loads((out / "_report.json").read_text())["totals"] == report["totals"]
    assert sorted(os.listdir(out)) == [".roolog.json", ".roolog.lock", ".roolog.readers.lock", "_manifest.json",
                                       "_report.json",
                                       "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]


def test_explode_cli_round_trip(tmp_path):
    out = tmp_path / "out"
    assert run_cli("convert", SAMPLE_PARQUET, "-o", str(out), "--key", "request_id", "-q").returncode == 0
    proc = run_cli("explode", str(out), "-o", str(tmp_path / "back.parquet"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == pq.ParquetFile(SAMPLE_PARQUET).metadata.num_rows
    assert_same_rows(pq.read_table(SAMPLE_PARQUET), pq.read_table(tmp_path / "back.parquet"))


def test_quiet_prints_nothing(tmp_path):
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(tmp_path / "out"), "--key", "request_id", "-q")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


def test_rerun_is_idempotent_and_redoes_only_what_changed(tmp_path):
    out = tmp_path / "out"
    base = ("convert", SAMPLE_PARQUET, "-o", str(out), "--key", "request_id")
    assert run_cli(*base, "--shards", "4", "-q").returncode == 0
    stamp = os.stat(out / "part-00000.parquet").st_mtime_ns
    again = run_cli(*base, "--shards", "4")
    assert again.returncode == 0 and "up to date" in again.stderr
    assert os.stat(out / "part-00000.parquet").st_mtime_ns == stamp  # nothing rewritten
    forced = run_cli(*base, "--shards", "4", "--force", "-q")
    assert forced.returncode == 0 and os.stat(out / "part-00000.parquet").st_mtime_ns != stamp
    other = run_cli(*base, "--shards", "2", "-q")  # other options: the output is redone
    assert other.returncode == 0, other.stderr
    assert sorted(f for f in os.listdir(out) if f.startswith("part-")) == ["part-00000.parquet", "part-00001.parquet"]
    assert json.loads((out / "_manifest.json").read_text())["totals"]["shards"] == 2


def test_overwrite_writes_next_to_foreign_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.txt").write_text("team notes")
    base = ("convert", SAMPLE_PARQUET, "-o", str(out), "--key", "request_id", "-q")
    assert run_cli(*base).returncode == 2
    assert run_cli(*base, "--overwrite").returncode == 0
    assert (out / "README.txt").read_text() == "team notes" and (out / "_manifest.json").exists()


def test_a_locked_output_exits_75(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".roolog.lock", "w") as fh:
        fh.write("pid 4242, started 2026-11-24T06:00:00\n")
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(out), "--key", "request_id", "-q")
    assert proc.returncode == 75
    assert "pid 4242" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_usage_errors_exit_2(tmp_path):
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(tmp_path / "o"), "--key", "request_id", "--shards", "0")
    assert proc.returncode == 2
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "--key" in proc.stderr
