"""Where a shard's bytes go (roolog.write.anatomy) against what can be computed by hand or measured from the
file's size: levels of known runs, a footer grown by one column's statistics, parts that add up to the file."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, run_cli

import roolog
from roolog.write.anatomy import shard_bytes

N = 1000


def _table() -> pa.Table:
    """A nullable int64 with no nulls, and lists of one item each."""
    return pa.table({"a": pa.array(range(N), pa.int64()),
                     "l": pa.array([[i] for i in range(N)], pa.list_(pa.int64()))})


def _write(path, table: pa.Table, **options) -> str:
    pq.write_table(table, path, **options)
    return str(path)


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_levels_of_known_runs_by_hand(tmp_path, version):
    # one page per column; all levels one RLE run: a varint of (count << 1) (2000 -> 2 bytes) and one byte of
    # value (bit width 1 or 2). "a" has only definition levels; "l" repetition (all 0) and definition (all 3)
    # levels. A v1 page prefixes each run with its 4-byte length; a v2 page does not.
    path = _write(tmp_path / "t.parquet", _table(), compression="none", data_page_version=version)
    found = shard_bytes([path])
    run = 2 + 1 + (4 if version == "1.0" else 0)
    assert found.columns["a"].levels == run
    assert found.columns["l"].levels == 2 * run


def _check_parts(path: str, found) -> None:
    md = pq.ParquetFile(path).metadata
    chunks: dict[str, int] = {}
    for g in range(md.num_row_groups):
        for j in range(md.num_columns):
            chunk = md.row_group(g).column(j)
            name = chunk.path_in_schema.split(".")[0]
            chunks[name] = chunks.get(name, 0) + chunk.total_compressed_size
    assert {n: c.compressed for n, c in found.columns.items()} == chunks
    for c in found.columns.values():
        assert c.values + c.levels + c.page_headers == c.compressed
        assert min(c.values, c.page_headers, c.footer) > 0 and c.levels >= 0
    with open(path, "rb") as f:
        f.seek(-8, os.SEEK_END)
        footer = int.from_bytes(f.read(4), "little")
    assert sum(c.footer for c in found.columns.values()) + found.file_footer == footer
    assert found.other == 12  # PAR1, the footer's length, PAR1 (no page index)
    assert found.total == os.path.getsize(path)


@pytest.mark.parametrize("options", [{"compression": "zstd"}, {"compression": "none"},
                                     {"compression": "zstd", "data_page_version": "2.0"},
                                     {"compression": "snappy", "data_page_size": 1 << 10},
                                     {"compression": "zstd", "use_dictionary": False, "row_group_size": 300}])
def test_parts_add_up_to_the_file(tmp_path, options):
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 30, N)
    table = pa.table({
        "id": pa.array(range(N), pa.int64()),
        "items": pa.array([rng.integers(0, 10**6, n).tolist() for n in lengths], pa.list_(pa.int64())),
        "maybe": pa.array([None if i % 7 == 0 else str(i % 13) for i in range(N)]),
        "s": pa.array([{"x": i, "y": [i, i]} for i in range(N)]),
    })
    path = _write(tmp_path / "t.parquet", table, **options)
    _check_parts(path, shard_bytes([path]))


def test_a_columns_statistics_are_its_share_of_the_footer(tmp_path):
    table = _table()
    bare = shard_bytes([_write(tmp_path / "bare.parquet", table, write_statistics=False)])
    stats = shard_bytes([_write(tmp_path / "stats.parquet", table, write_statistics=["l.list.element"])])
    grown = os.path.getsize(tmp_path / "stats.parquet") - os.path.getsize(tmp_path / "bare.parquet")
    l0, l1 = bare.columns["l"], stats.columns["l"]
    assert grown > 0
    # the statistics go into l's column chunk metadata (the footer) and l's page header, nowhere else
    assert (l1.footer - l0.footer) + (l1.page_headers - l0.page_headers) == grown
    assert l1.footer > l0.footer
    assert stats.columns["a"] == bare.columns["a"] and stats.file_footer == bare.file_footer


def test_the_arrow_schema_is_the_files_share_of_the_footer(tmp_path):
    table = _table()
    without = shard_bytes([_write(tmp_path / "a.parquet", table, store_schema=False)])
    with_schema = shard_bytes([_write(tmp_path / "b.parquet", table)])
    grown = os.path.getsize(tmp_path / "b.parquet") - os.path.getsize(tmp_path / "a.parquet")
    assert grown > 0 and with_schema.file_footer - without.file_footer == grown
    assert with_schema.columns == without.columns


def test_v1_levels_are_their_bytes_compressed_alone(tmp_path):
    # the same levels as a v2 page holds them uncompressed (exact): compressed on their own they are no more,
    # and a list column's regular levels (every list 5 long) compress to a small share of that
    table = pa.table({"l": pa.array([list(range(i, i + 5)) for i in range(20 * N)], pa.list_(pa.int64()))})
    exact = shard_bytes([_write(tmp_path / "v2.parquet", table, compression="none", data_page_version="2.0")])
    estimate = shard_bytes([_write(tmp_path / "v1.parquet", table, compression="zstd", compression_level=3)],
                           default_level=3)
    levels_v2 = exact.columns["l"].levels
    assert 0 < estimate.columns["l"].levels < 0.2 * levels_v2


def test_the_report_and_stats_split_every_byte(tmp_path):
    out = tmp_path / "out"
    report = roolog.convert([os.path.join(SAMPLE, "impressions.parquet")], str(out), key=("request_id",),
                            order_by="position", shards=2, progress=False)
    files = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    assert len(files) == 2
    columns, totals = report["columns"], report["totals"]
    for c in columns:
        assert c["values_bytes"] + c["levels_bytes"] + c["page_header_bytes"] == c["on_disk_bytes"]
    on_disk = sum(c["on_disk_bytes"] + c["footer_bytes"] for c in columns) + totals["file_footer_bytes"]
    assert on_disk + 12 * len(files) == sum(os.path.getsize(out / f) for f in files) == totals["output_bytes"]
    # request-level columns have one definition level per request; impression lists pay repetition levels too
    by_name = {c["name"]: c for c in columns}
    assert by_name["item_id"]["levels_bytes"] > by_name["user_id"]["levels_bytes"]
    result = run_cli("stats", str(out), "--json")
    assert result.returncode == 0, result.stderr
    unit = json.loads(result.stdout)["partitions"][0]
    assert unit["file_footer_bytes"] == totals["file_footer_bytes"]
    assert {c["name"]: (c["values_bytes"], c["levels_bytes"], c["footer_bytes"]) for c in unit["columns"]} == {
        c["name"]: (c["values_bytes"], c["levels_bytes"], c["footer_bytes"]) for c in columns}
    text = run_cli("stats", str(out))
    assert "where the bytes go: values" in text.stdout and "levels" in text.stdout
