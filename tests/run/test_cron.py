"""Cron-grade runs: incremental partitions, skip and redo, crash at any point, the lock, JSON event lines."""

import json
import os
import subprocess
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import assert_same_rows, roolog_exe, run_cli

import roolog
from roolog.synthetic import generate_impressions


def day_table(day: int, requests: int = 200) -> pa.Table:
    t = generate_impressions(requests, 6, seed=day)
    return t.set_column(0, "request_id", pa.array([f"d{day}-{r}" for r in t.column(0).to_pylist()]))


def write_day(root, day: int, table=None) -> str:
    folder = root / f"ds=2026-11-{day:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "events.parquet"
    pq.write_table(day_table(day) if table is None else table, path)
    return str(path)


def convert(root, out, *extra, key="request_id"):
    proc = run_cli("convert", str(root), "-o", str(out), "--key", key, "--json", "-q", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_hive_partitions_convert_one_output_partition_each_and_skip_when_unchanged(tmp_path):
    root, out = tmp_path / "logs", tmp_path / "out"
    for day in (20, 21):
        write_day(root, day)
    first = convert(root, out)
    assert first["converted"] == ["ds=2026-11-20", "ds=2026-11-21"] and first["skipped"] == []
    assert first["totals"]["requests"] == 400
    for day in (20, 21):
        assert (out / f"ds=2026-11-{day}" / "_manifest.json").exists()
    assert json.loads((out / "_manifest.json").read_text())["partition_by"] == "ds"

    again = convert(root, out)
    assert again["converted"] == [] and again["skipped"] == ["ds=2026-11-20", "ds=2026-11-21"]

    write_day(root, 22)  # a new day arrives: only it is converted
    third = convert(root, out)
    assert third["converted"] == ["ds=2026-11-22"] and len(third["skipped"]) == 2

    stamp = os.stat(out / "ds=2026-11-20" / "part-00000.parquet").st_mtime_ns
    os.utime(root / "ds=2026-11-20" / "events.parquet")  # touched, same bytes: still up to date
    assert convert(root, out)["converted"] == []
    assert os.stat(out / "ds=2026-11-20" / "part-00000.parquet").st_mtime_ns == stamp

    late = day_table(21).slice(0, 50)  # day 21 is rewritten with other content: it alone is redone
    write_day(root, 21, late)
    fourth = convert(root, out)
    assert fourth["converted"] == ["ds=2026-11-21"]
    assert fourth["partitions"][1]["requests"] == len(set(late.column("request_id").to_pylist()))

    assert sorted(convert(root, out, "--force")["converted"]) == ["ds=2026-11-20", "ds=2026-11-21",
                                                                    "ds=2026-11-22"]
    roolog.explode(str(out), str(tmp_path / "all.parquet"))
    days = [pq.read_table(root / f"ds=2026-11-{d}" / "events.parquet") for d in (20, 21, 22)]
    expected = pa.concat_tables([t.append_column("ds", pa.array([f"2026-11-{d}"] * t.num_rows))
                                 for d, t in zip((20, 21, 22), days, strict=True)])
    assert_same_rows(expected, pq.read_table(tmp_path / "all.parquet"))


def test_requests_in_two_partitions_are_counted_not_merged(tmp_path):
    root, out = tmp_path / "logs", tmp_path / "out"
    t = day_table(20)
    ids = t.column("request_id").to_pylist()
    cut = next(i for i in range(1000, len(ids)) if ids[i] == ids[i - 1])  # inside a request
    write_day(root, 20, t.slice(0, cut))
    write_day(root, 21, t.slice(cut))  # that request lands in both days
    crossing = len(set(ids[:cut]) & set(ids[cut:]))
    report = convert(root, out)
    assert crossing == 1 and report["cross_partition_requests"] == crossing
    assert report["totals"]["requests"] == len(set(t.column("request_id").to_pylist())) + crossing


def test_partition_by_a_data_column(tmp_path):
    t = generate_impressions(300, 4, seed=4)
    t = t.append_column("day", pa.array([f"2026-11-{20 + (r % 3)}" for r in t.column("request_id").to_pylist()]))
    pq.write_table(t, tmp_path / "flat.parquet")
    out = tmp_path / "out"
    report = convert(tmp_path / "flat.parquet", out, "--partition-by", "day")
    assert [p["name"] for p in report["partitions"]] == ["day=2026-11-20", "day=2026-11-21", "day=2026-11-22"]
    assert report["totals"]["requests"] == 300 and report["cross_partition_requests"] == 0
    assert convert(tmp_path / "flat.parquet", out, "--partition-by", "day")["converted"] == []
    roolog.explode(str(out), str(tmp_path / "back.parquet"))
    assert_same_rows(t, pq.read_table(tmp_path / "back.parquet"))


@pytest.mark.parametrize("point", ["read", "spill", "write", "publish"])
def test_kill_9_at_any_point_then_rerun_gives_the_clean_result(tmp_path, point):
    log = tmp_path / "log.parquet"
    pq.write_table(generate_impressions(1500, 5, seed=6, shuffle=True), log, row_group_size=2000)
    clean, out = tmp_path / "clean", tmp_path / "out"
    args = ["convert", str(log), "--key", "request_id", "--order-by", "position", "--shards", "2", "-q"]
    assert run_cli(*args, "-o", str(clean)).returncode == 0
    if point == "publish":  # the crash replaces an earlier, different output
        assert run_cli(*args[:-3], "--shards", "3", "-q", "-o", str(out)).returncode == 0
    crashed = subprocess.run([roolog_exe(), *args, "-o", str(out)], env=dict(os.environ, ROOLOG_FAILPOINT=point))
    assert crashed.returncode == -9
    assert not (out / "_manifest.json").exists()
    rerun = run_cli(*args, "-o", str(out))
    assert rerun.returncode == 0, rerun.stderr
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(clean))
    for name in names:
        if name.startswith("part-"):
            assert (out / name).read_bytes() == (clean / name).read_bytes()
    manifests = [json.loads((d / "_manifest.json").read_text()) for d in (clean, out)]
    for m in manifests:
        m.pop("created"), m.pop("checksum")  # the checksum seals the timestamp too
    assert manifests[0] == manifests[1]


def test_two_runs_at_once_one_gets_75(tmp_path):
    log = tmp_path / "log.parquet"
    pq.write_table(generate_impressions(40_000, 40, seed=2, shuffle=True), log)
    out = tmp_path / "out"
    first = subprocess.Popen([roolog_exe(), "convert", str(log), "-o", str(out), "--key", "request_id", "-q"],
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / ".roolog.lock").exists():
        time.sleep(0.02)
    while time.time() < deadline and not (out / ".roolog.lock").read_text():
        time.sleep(0.02)
    second = run_cli("convert", str(log), "-o", str(out), "--key", "request_id", "-q")
    assert first.wait(timeout=300) == 0
    assert second.returncode == 75
    assert f"pid {first.pid}" in second.stderr and "started" in second.stderr


def test_json_log_lines_parse(tmp_path):
    root = tmp_path / "logs"
    write_day(root, 20)
    write_day(root, 21)
    args = ("convert", str(root), "-o", str(tmp_path / "out"), "--key", "request_id", "--log-format", "json")
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [e["event"] for e in events] == ["start", "done", "done", "summary"]
    assert events[1]["partition"] == "ds=2026-11-20" and events[1]["requests"] == 200
    assert events[-1]["totals"]["requests"] == 400 and all("ts" in e for e in events)
    again = [json.loads(line) for line in run_cli(*args).stderr.splitlines()]
    assert [e["event"] for e in again] == ["start", "skipped", "skipped", "summary"]


def test_partition_by_a_float_column_is_bit_exact_and_counts_dropped_keys(tmp_path):
    t = pa.table({"rid": [1, 2, 3, 4, None], "p": [1.0, float("nan"), 0.0, -0.0, 1.0], "v": [10, 20, 30, 40, 50]})
    pq.write_table(t, tmp_path / "t.parquet")
    report = convert(tmp_path / "t.parquet", tmp_path / "out", "--partition-by", "p", "--drop-null-keys", key="rid")
    assert sorted(p["name"] for p in report["partitions"]) == ["p=-0.0", "p=0.0", "p=1.0", "p=nan"]
    assert report["null_key_rows_dropped"] == 1
    roolog.explode(str(tmp_path / "out"), str(tmp_path / "back.parquet"))
    assert_same_rows(t.slice(0, 4), pq.read_table(tmp_path / "back.parquet"))


def test_kill_9_while_partitions_are_replaced_leaves_no_finished_output(tmp_path):
    src, out = tmp_path / "t.parquet", tmp_path / "out"
    pq.write_table(pa.table({"rid": [1, 1, 2, 3], "country": ["a", "a", "b", "c"], "v": [1, 2, 3, 4]}), src)
    convert(src, out, "--partition-by", "country", key="rid")
    pq.write_table(pa.table({"rid": [1, 1, 2, 3], "country": ["a", "a", "b", "c"], "v": [5, 6, 7, 8]}), src)
    crashed = subprocess.run([roolog_exe(), "convert", str(src), "-o", str(out), "--key", "rid", "--partition-by",
                              "country", "-q"], env=dict(os.environ, ROOLOG_FAILPOINT="publish"))
    assert crashed.returncode == -9
    assert run_cli("explode", str(out), "-o", str(tmp_path / "x.parquet")).returncode == 1  # not finished
    proc = run_cli("convert", str(src), "-o", str(out), "--key", "rid", "--partition-by", "country", "-q")
    assert proc.returncode == 0, proc.stderr
    roolog.explode(str(out), str(tmp_path / "back.parquet"))
    assert sorted(pq.read_table(tmp_path / "back.parquet").column("v").to_pylist()) == [5, 6, 7, 8]


def test_partitioning_by_a_column_with_too_many_values_is_refused(tmp_path):
    pq.write_table(pa.table({"rid": list(range(1100)), "v": list(range(1100))}), tmp_path / "t.parquet")
    proc = run_cli("convert", str(tmp_path / "t.parquet"), "-o", str(tmp_path / "out"), "--key", "rid",
                   "--partition-by", "v", "-q")
    assert proc.returncode == 2 and "more than 1,000 values" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
