"""Same inputs and options give byte-identical shards, whatever the batching, memory limit or threads."""

import os
import subprocess

import pyarrow.parquet as pq
import pytest
from helpers import manifest_without_timestamps, roolog_exe, shard_bytes

import roolog
from roolog.sources import ReadOptions
from roolog.synthetic import generate_impressions


@pytest.fixture(scope="module")
def scattered(tmp_path_factory):
    path = tmp_path_factory.mktemp("det") / "log.parquet"
    pq.write_table(generate_impressions(3000, 12, seed=8, shuffle=True), path, row_group_size=4000)
    return path


@pytest.mark.parametrize("batch_bytes,memory_limit", [(20_000, 48 << 10), (1 << 20, 1 << 30), (3_333, 1 << 20)])
def test_batching_and_memory_limit_do_not_change_a_byte(scattered, tmp_path, batch_bytes, memory_limit):
    options = dict(key=("request_id",), order_by="position", shards=3, progress=False, row_group_bytes=60_000)
    roolog.convert([str(scattered)], str(tmp_path / "ref"), **options)
    report = roolog.convert([str(scattered)], str(tmp_path / "run"), read=ReadOptions(batch_bytes=batch_bytes),
                            memory_limit=memory_limit, **options)
    ref, run = shard_bytes(tmp_path / "ref"), shard_bytes(tmp_path / "run")
    assert ref == run
    assert manifest_without_timestamps(tmp_path / "ref") == manifest_without_timestamps(tmp_path / "run")
    assert pq.ParquetFile(tmp_path / "run" / "part-00000.parquet").metadata.num_row_groups > 1
    if memory_limit < 1 << 20:
        assert report["spill"]["most_parts"] > 1


def test_thread_count_does_not_change_a_byte(scattered, tmp_path):
    outs = []
    for threads in ("1", "2"):
        out = tmp_path / f"t{threads}"
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        subprocess.run([roolog_exe(), "convert", str(scattered), "-o", str(out), "--key", "request_id",
                        "--shards", "2", "-q"], check=True, env=env)
        outs.append(out)
    assert shard_bytes(outs[0]) == shard_bytes(outs[1])
