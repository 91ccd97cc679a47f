"""A big Parquet file spreads over Spark read tasks: its row groups are cut into pieces (sources.Piece) that
both engines cut alike and carry no request across, so however a file is cut the output is the same bytes
and bad data the same message."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, assert_same_rows, shard_bytes

import roolog
from roolog.errors import RoologError
from roolog.read import sources
from roolog.synthetic import generate_impressions

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module", autouse=True)
def spark():
    from roolog.run.spark import spark_session

    session = spark_session("local[2,2]")
    yield session
    session.stop()


def test_pieces_are_cut_from_the_footer_at_piece_bytes(tmp_path, monkeypatch):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"a": list(range(1000))}), path, row_group_size=100)
    md = pq.ParquetFile(path).metadata
    assert sources.parquet_pieces(md) == [sources.Piece(0, 10, 0)]  # 8 KB: one piece
    monkeypatch.setattr(sources, "PIECE_BYTES", 2 * md.row_group(0).total_byte_size)
    pieces = sources.parquet_pieces(md)
    assert pieces == [sources.Piece(2 * i, 2 * i + 2, 200 * i) for i in range(5)]
    empty = pq.ParquetFile(_empty(tmp_path)).metadata
    assert sources.parquet_pieces(empty) == [sources.Piece(0, empty.num_row_groups, 0)]


def _empty(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), path)
    return path


@pytest.mark.parametrize("layout", ["contiguous", "shuffled"])
def test_one_file_cut_into_pieces_gives_the_bytes_of_one_uncut_file(tmp_path, monkeypatch, layout):
    table = generate_impressions(2000, 12, seed=5, shuffle=layout == "shuffled")
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=1500)  # requests run across row groups and pieces
    options = dict(key=("request_id",), order_by="position", shards=3, progress=False)
    whole = roolog.convert([str(path)], str(tmp_path / "whole"), **options)
    assert whole["engine"]["read_tasks"] is None
    monkeypatch.setattr(sources, "PIECE_BYTES", 1)  # every row group a piece of its own
    local = roolog.convert([str(path)], str(tmp_path / "local"), **options)
    spark = roolog.convert([str(path)], str(tmp_path / "spark"), engine="spark", **options)
    groups = pq.ParquetFile(path).metadata.num_row_groups
    assert groups > 10 and spark["engine"]["read_tasks"] == groups
    assert shard_bytes(tmp_path / "whole") == shard_bytes(tmp_path / "local") == shard_bytes(tmp_path / "spark")
    assert local["demoted"] == spark["demoted"] == whole["demoted"]


def test_bad_data_across_a_piece_boundary_reads_alike(tmp_path, monkeypatch):
    """Request 4's rows run from one row group (one piece) into the next, its declared request-level `user`
    changing only there: both engines fold the two sides and say so in the same words; a null key in a later
    piece is met first by both (the fold comes after every row is read)."""
    schema = tmp_path / "schema.toml"
    schema.write_text('key = ["rid"]\nrequest = ["user"]\nimpression = ["item"]\n')
    rid = [1, 1, 4, 4, 4, 4, 5, 5]
    user = ["a", "a", "x", "x", "y", "y", "b", "b"]
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"rid": rid, "user": user, "item": list(range(8))}), path, row_group_size=4)
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"rid": [1, None, 3], "user": ["q"] * 3, "item": [0, 1, 2]}), nulls, row_group_size=2)
    monkeypatch.setattr(sources, "PIECE_BYTES", 1)
    for inputs, needle in (([path], "column 'user' is declared request-level but varies inside request rid=4"),
                           ([nulls, path], "nulls.parquet, row 2: key column 'rid' is null")):
        seen = []
        for engine in ("local", "spark"):
            with pytest.raises(RoologError) as err:
                roolog.convert([str(p) for p in inputs], str(tmp_path / f"out-{engine}"), schema_file=str(schema),
                               shards=2, progress=False, engine=engine)
            seen.append(str(err.value))
        assert seen[0] == seen[1] and needle in seen[0], seen


def test_the_sample_in_pieces_round_trips(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PIECE_BYTES", 64 << 10)
    src = tmp_path / "sample.parquet"
    pq.write_table(pq.read_table(f"{SAMPLE}/impressions.parquet"), src, row_group_size=1000)
    report = roolog.convert([str(src)], str(tmp_path / "out"), key=("request_id",), engine="spark", shards=2,
                            progress=False)
    assert report["engine"]["read_tasks"] > 1
    roolog.explode(str(tmp_path / "out"), str(tmp_path / "back.parquet"))
    assert_same_rows(pq.read_table(src), pq.read_table(tmp_path / "back.parquet"))
