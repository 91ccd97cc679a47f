"""The report's figures against independent computations from the files: on-disk bytes from the Parquet
footers (compressed, not uncompressed), input bytes summed over every batch, the zstd level reaching the
shards."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from helpers import SAMPLE

import roolog
from roolog.read.sources import ReadOptions

SAMPLE_PARQUET = os.path.join(SAMPLE, "impressions.parquet")


def _convert(out, **options) -> dict:
    return roolog.convert([SAMPLE_PARQUET], str(out), key=("request_id",), order_by="position", shards=2,
                          progress=False, **options)


def test_on_disk_bytes_are_the_compressed_bytes_of_the_footers(tmp_path):
    report = _convert(tmp_path / "out")
    compressed: dict[str, int] = {}
    uncompressed: dict[str, int] = {}
    for shard in ("part-00000.parquet", "part-00001.parquet"):
        md = pq.ParquetFile(tmp_path / "out" / shard).metadata
        for rg in range(md.num_row_groups):
            for c in range(md.num_columns):
                chunk = md.row_group(rg).column(c)
                top = chunk.path_in_schema.split(".")[0]
                compressed[top] = compressed.get(top, 0) + chunk.total_compressed_size
                uncompressed[top] = uncompressed.get(top, 0) + chunk.total_uncompressed_size
    by_name = {c["name"]: c for c in report["columns"]}
    assert {n: c["on_disk_bytes"] for n, c in by_name.items()} == compressed
    assert compressed["user_history_item_ids"] < uncompressed["user_history_item_ids"]
    assert report["totals"]["output_bytes"] == sum(
        os.path.getsize(tmp_path / "out" / s) for s in ("part-00000.parquet", "part-00001.parquet"))


def test_input_bytes_are_summed_over_every_batch(tmp_path):
    table = pq.read_table(SAMPLE_PARQUET)
    report = _convert(tmp_path / "out", read=ReadOptions(batch_bytes=64 << 10))  # many batches
    by_name = {c["name"]: c for c in report["columns"]}
    for name in ("request_id", "position", "item_id", "price"):
        column = table.column(name)
        assert column.null_count == 0 and pa.types.is_primitive(column.type)
        width = np.dtype(column.type.to_pandas_dtype()).itemsize
        values = table.num_rows * width  # the data; Arrow may add a validity bitmap per batch (1 bit a row)
        assert values <= by_name[name]["logical_bytes_impression"] <= values + table.num_rows // 8 + 4096, name


def test_the_compression_level_reaches_the_shards(tmp_path):
    sizes = {}
    for level in (1, 19):
        out = tmp_path / f"level{level}"
        sizes[level] = _convert(out, compression_level=level)["totals"]["output_bytes"]
        md = pq.ParquetFile(out / "part-00000.parquet").metadata
        assert md.row_group(0).column(0).compression == "ZSTD"
    assert sizes[19] < sizes[1]
