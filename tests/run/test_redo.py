"""What makes a rerun redo its output: every option that decides the bytes, a changed schema file, and an
input rewritten in place even when its size and mtime were put back; and what does not (a touch)."""

from __future__ import annotations

import dataclasses
import json
import os

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, run_cli

from roolog.read.inputs import ReadOptions

OPTIONS_THAT_DECIDE_THE_OUTPUT = [
    ("--order-by", "position"), ("--shards", "3"), ("--compression-level", "9"), ("--on-conflict", "demote"),
    ("--drop-null-keys",), ("--column-type", "item_id=string"), ("--null-value", "NA"), ("--newlines-in-values",),
    ("--partition-by", "country"),
]


@pytest.fixture()
def log(tmp_path):
    table = pq.read_table(os.path.join(SAMPLE, "impressions.parquet")).drop_columns(["user_history_item_ids"])
    path = tmp_path / "log.csv"
    pcsv.write_csv(table, path)
    return path


def convert(log, out, *extra) -> dict:
    proc = run_cli("convert", str(log), "-o", str(out), "--key", "request_id", "--shards", "2", "--json", "-q",
                   *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def redone(report: dict) -> bool:
    return not report["skipped"] if isinstance(report["skipped"], bool) else bool(report["converted"])


@pytest.mark.parametrize("option", OPTIONS_THAT_DECIDE_THE_OUTPUT, ids=lambda o: o[0])
def test_every_option_that_decides_the_output_forces_a_redo(tmp_path, log, option):
    out = tmp_path / "out"
    assert redone(convert(log, out))
    assert not redone(convert(log, out))  # the control: the same command is up to date
    assert redone(convert(log, out, *option))
    assert not redone(convert(log, out, *option))
    assert redone(convert(log, out))  # and back


def test_a_changed_schema_file_forces_a_redo(tmp_path, log):
    out, schema = tmp_path / "out", tmp_path / "s.toml"
    names = pcsv.read_csv(log).schema.names
    levels = 'key = ["request_id"]\nrequest = ["user_id", "country", "device", "request_time"]\n'
    schema.write_text(levels + f"impression = {json.dumps(names[5:])}\n")
    assert redone(convert(log, out, "--schema", str(schema)))
    assert not redone(convert(log, out, "--schema", str(schema)))
    schema.write_text(levels + f"impression = {json.dumps(names[5:])}\nlabels = [\"click\"]\n")
    assert redone(convert(log, out, "--schema", str(schema)))


def test_an_input_rewritten_in_place_with_its_size_and_mtime_put_back_forces_a_redo(tmp_path, log):
    out = tmp_path / "out"
    assert redone(convert(log, out))
    st = os.stat(log)
    data = bytearray(log.read_bytes())
    at = data.index(b",", len(data) // 2) + 1  # a digit of some field, replaced by another digit
    while not chr(data[at]).isdigit():
        at += 1
    data[at] = ord("1") if data[at] != ord("1") else ord("2")
    log.write_bytes(bytes(data))
    os.utime(log, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(log).st_size == st.st_size and os.stat(log).st_mtime_ns == st.st_mtime_ns
    assert redone(convert(log, out))


def test_a_touched_input_with_the_same_bytes_is_up_to_date(tmp_path, log):
    out = tmp_path / "out"
    assert redone(convert(log, out))
    os.utime(log, ns=(1_000_000_000, 1_000_000_000))
    assert not redone(convert(log, out))


CHANGED_OUTPUT_OPTION = {  # per field of OutputOptions: a value that changes the output
    "key": ("request_id", "user_id"), "order_by": "position", "shards": 3, "compression_level": 9,
    "on_conflict": "demote", "drop_null_keys": True, "partition_by": "country", "row_group_bytes": 1 << 16,
    "row_group_requests": 7, "cluster_by": ("user_id",),
    "read": ReadOptions(null_values=("NA",)),
    "schema_file": None,  # test_a_changed_schema_file_forces_a_redo: a schema file's content decides, not its name
}
UNCHANGED_RUN_OPTION = {"memory_limit": 64 << 20, "overwrite": True, "log": lambda *a, **k: None,
                        "read": ReadOptions(batch_bytes=1 << 16)}  # how much is read at a time: not what


def test_every_output_option_is_recorded_and_no_run_option_is(tmp_path, log):
    """Through the Python API, field by field: a new OutputOptions field must be listed above (and so be
    shown to force a redo); the run options (and the read batch size) must leave the output up to date."""
    import roolog
    from roolog.run.options import OutputOptions, RunOptions

    assert set(CHANGED_OUTPUT_OPTION) == {f.name for f in dataclasses.fields(OutputOptions)}
    assert set(UNCHANGED_RUN_OPTION) - {"read"} <= {f.name for f in dataclasses.fields(RunOptions)}
    out = str(tmp_path / "out")
    base = {"key": ("request_id",), "shards": 2, "progress": False}
    assert not roolog.convert([str(log)], out, **base)["skipped"]
    for name, value in UNCHANGED_RUN_OPTION.items():
        assert roolog.convert([str(log)], out, **base | {name: value})["skipped"] is True, name
    for name, value in CHANGED_OUTPUT_OPTION.items():
        if value is None:
            continue
        assert redone(roolog.convert([str(log)], out, **base | {name: value})), name
        assert redone(roolog.convert([str(log)], out, **base)), name  # and back
