"""One row per key whatever the input order, batch size, row groups, shard count and memory limit."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import check_convert, random_log, shard_rows, shuffled, write

from roolog.read.sources import ReadOptions

# ---- one row per key whatever the order, batch size, shards, memory limit -------------------------------

GROUPING_CONFIGS = [
    # (seed, batch_bytes, row_group_size, shards, memory_limit, composite)
    (0, 32 << 20, None, 1, 1 << 30, False),
    (1, 2000, 50, 3, 64 << 10, False),
    (2, 300, 17, 2, 4096, True),
    (3, 1, 5, 4, 16 << 10, False),
    (4, 700, 1000, 5, 1 << 20, True),
]


@pytest.mark.parametrize("seed,batch_bytes,row_group_size,shards,memory_limit,composite", GROUPING_CONFIGS)
@pytest.mark.parametrize("order_by", [None, "pos"])
def test_one_row_per_key_any_order(tmp_path, seed, batch_bytes, row_group_size, shards, memory_limit, composite,
                                   order_by):
    log = random_log(60 if batch_bytes == 1 else 120, seed, composite)
    table = shuffled(log, seed)
    key = ("k1", "k2") if composite else ("k1",)
    report = check_convert(tmp_path, table, key=key, row_group_size=row_group_size, order_by=order_by,
                           read=ReadOptions(batch_bytes=batch_bytes), shards=shards, memory_limit=memory_limit)
    assert report["totals"]["shards"] == shards
    rows = shard_rows(tmp_path / "out").to_pylist()
    # reference order: input order, or stable by `pos` with nulls last
    seq_of = collections.defaultdict(list)
    input_rows = table.to_pylist()
    for i, r in enumerate(input_rows):
        seq_of[tuple(r[c] for c in key)].append(i)
    for r in rows:
        idx = seq_of[tuple(r[c] for c in key)]
        if order_by:
            idx = sorted(idx, key=lambda i: (input_rows[i]["pos"] is None, input_rows[i]["pos"] or 0))
        assert r["seq"] == [input_rows[i]["seq"] for i in idx]
        n = len(r["seq"])
        for c in ("pos", "f", "s"):
            if isinstance(r[c], list):
                assert len(r[c]) == n


def test_shards_hold_disjoint_keys_and_every_shard_file_is_listed(tmp_path):
    table = shuffled(random_log(100, 9), 9)
    check_convert(tmp_path, table, key=("k1",), shards=7, read=ReadOptions(batch_bytes=500), memory_limit=4096)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert [s["file"] for s in manifest["shards"]] == [f"part-{i:05d}.parquet" for i in range(7)]
    seen = set()
    for s in manifest["shards"]:
        keys = set(pq.read_table(tmp_path / "out" / s["file"], columns=["k1"]).column(0).to_pylist())
        assert not keys & seen
        seen |= keys
        assert pq.ParquetFile(tmp_path / "out" / s["file"]).metadata.num_rows == s["requests"]


def test_one_huge_request_with_a_small_memory_limit_and_few_file_descriptors(tmp_path):
    n = 60_000
    path = write(pa.table({"k": np.zeros(n, dtype=np.int64), "item": np.arange(n)}), tmp_path / "one.parquet")
    out = tmp_path / "out"
    exe = os.path.join(os.path.dirname(sys.executable), "roolog")
    proc = subprocess.run(["bash", "-c", f"ulimit -n 64 && exec {exe} convert {path} -o {out} --key k "
                           "--memory-limit 8KB -q"], capture_output=True, text=True)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert shard_rows(out).num_rows == 1
