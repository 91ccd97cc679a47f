"""Same inputs and options give byte-identical shards, whatever the batching, memory limit or threads."""

import os
import subprocess

import pyarrow.parquet as pq
import pytest
from helpers import manifest_without_timestamps, roolog_exe, shard_bytes

import roolog
from roolog.read.sources import ReadOptions
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


def test_the_encoding_sample_does_not_depend_on_batches(monkeypatch):
    """The requests the encodings are chosen on are cut by the requests' own sizes (SAMPLE_BYTES), whatever
    batches they come in; had the cut fallen at a batch's end, the chosen encodings (and the bytes) would
    depend on how the spill batched its reads."""
    import numpy as np
    import pyarrow as pa

    from roolog.write import layout

    monkeypatch.setattr(layout, "SAMPLE_BYTES", 50_000)
    table = pa.table({"k": np.arange(5000), "v": pa.array([list(range(i % 30)) for i in range(5000)])})
    samples = []
    for rows in (5000, 997, 64, 7):
        shards = [table.slice(0, 2000).to_batches(max_chunksize=rows), table.slice(2000).to_batches(max_chunksize=rows)]
        samples.append(layout.sample_requests(shards, lambda b: b, table.schema))
    assert all(s.equals(samples[0]) for s in samples) and 0 < samples[0].num_rows < 5000
