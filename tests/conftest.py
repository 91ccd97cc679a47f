"""Shared helpers: paths to the real logs, a lossless-compare of row multisets, and a CLI runner."""

from __future__ import annotations

import collections
import json
import math
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("ROOLOG_SHARED", os.path.join(REPO, "..", "shared"))
DATASETS = os.path.join(SHARED, "datasets")
SAMPLE = os.path.join(REPO, "sample_data")
MIND = os.path.join(DATASETS, "mind_small_sample")
TRIVAGO = os.path.join(DATASETS, "trivago_recsys2019_sample")
LTR = os.path.join(DATASETS, "lightgbm_lambdarank_example")


def canon(value):
    """A hashable, bit-exact stand-in for a cell: -0.0 != 0.0, NaN == NaN, lists become tuples."""
    if isinstance(value, float):
        return ("float", value.hex()) if not math.isnan(value) else ("float", "nan")
    if isinstance(value, list):
        return tuple(canon(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, canon(v)) for k, v in value.items())
    return value


def row_multiset(table: pa.Table) -> collections.Counter:
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return collections.Counter(tuple(canon(c[r]) for c in columns) for r in range(table.num_rows))


def assert_same_rows(expected: pa.Table, actual: pa.Table) -> None:
    assert actual.schema.names == expected.schema.names
    for f in expected.schema:
        assert actual.schema.field(f.name).type.equals(f.type), f"{f.name}: {actual.schema.field(f.name).type}"
    assert actual.num_rows == expected.num_rows
    assert row_multiset(actual) == row_multiset(expected)


def roundtrip(inputs, out, **options) -> tuple[dict, pa.Table]:
    """convert then explode; returns the report and the exploded table."""
    import roolog

    options.setdefault("progress", False)
    report = roolog.convert([str(i) for i in inputs], str(out), **options)
    target = str(out) + ".exploded.parquet"
    roolog.explode(str(out), target)
    return report, pq.read_table(target)


def roolog_exe() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "roolog")
    return exe if os.path.exists(exe) else "roolog"


def run_cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The installed `roolog` entry point, as a real subprocess (`env`: extra environment variables)."""
    return subprocess.run([roolog_exe(), *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, **env) if env else None)


def levels(report: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"key": set(), "request": set(), "impression": set()}
    for c in report["columns"]:
        out[c["level"]].add(c["name"])
    return out


@pytest.fixture(scope="session")
def shared_datasets():
    if not os.path.isdir(DATASETS):
        pytest.fail(f"the shared datasets are missing at {DATASETS} (set ROOLOG_SHARED)")
    return DATASETS


def shard_bytes(out) -> dict[str, bytes]:
    """Every shard file of an output folder (a pathlib.Path), by name: for byte-identity checks."""
    return {f: (out / f).read_bytes() for f in sorted(os.listdir(out)) if f.startswith("part-")}


def manifest_without_timestamps(out) -> dict:
    manifest = json.loads((out / "_manifest.json").read_text())
    manifest.pop("created")
    return manifest
