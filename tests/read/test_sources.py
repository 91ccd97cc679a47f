"""Every input form convert reads: formats, compression, folders, globs, hive partitions, CSV options."""

import gzip
import json

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import zstandard
from helpers import assert_same_rows, roundtrip

from roolog.errors import RoologError, UsageProblem
from roolog.read.sources import ReadOptions, open_source, resolve_inputs
from roolog.synthetic import generate_impressions, history_as_text


@pytest.fixture(scope="module")
def table():
    return history_as_text(generate_impressions(120, 4, seed=21)).set_column(
        4, "request_time", pa.array([str(t) for t in generate_impressions(120, 4, seed=21).column(4).to_pylist()]))


def csv_bytes(table, delimiter=","):
    sink = pa.BufferOutputStream()
    pcsv.write_csv(table, sink, pcsv.WriteOptions(delimiter=delimiter))
    return sink.getvalue().to_pybytes()


def read_back(*paths, **options) -> pa.Table:
    with open_source([str(p) for p in paths], ReadOptions(**options)) as source:
        return pa.Table.from_batches([sb.batch for sb in source.batches()], schema=source.schema)


@pytest.mark.parametrize("name,pack", [
    ("log.csv", lambda b: b), ("log.csv.gz", gzip.compress), ("log.csv.zst", zstandard.compress)])
def test_csv_plain_and_compressed(table, tmp_path, name, pack):
    (tmp_path / name).write_bytes(pack(csv_bytes(table)))
    report, exploded = roundtrip([tmp_path / name], tmp_path / "out", key=("request_id",))
    assert report["totals"]["requests"] == 120
    assert_same_rows(read_back(tmp_path / name), exploded)
    assert exploded.column("item_id").to_pylist() != [] and exploded.schema.field("price").type == pa.float64()


def test_tsv_and_custom_delimiter(table, tmp_path):
    (tmp_path / "log.tsv").write_bytes(csv_bytes(table, "\t"))
    (tmp_path / "log.txt").write_bytes(csv_bytes(table, ";"))
    tsv = read_back(tmp_path / "log.tsv")
    semi = read_back(tmp_path / "log.txt", input_format="csv", delimiter=";")
    assert tsv.equals(semi)
    assert tsv.num_rows == table.num_rows


def test_quoting_and_null_values(tmp_path):
    (tmp_path / "q.csv").write_text('rid,city,note\n1,"Auckland, NZ",NA\n1,"Auckland, NZ","say ""hi"""\n2,x,-\n')
    t = read_back(tmp_path / "q.csv", null_values=("NA", "-"))
    assert t.column("city").to_pylist() == ["Auckland, NZ", "Auckland, NZ", "x"]
    assert t.column("note").to_pylist() == [None, 'say "hi"', None]


def test_jsonl_plain_and_gz(table, tmp_path):
    text = "".join(json.dumps(r) + "\n" for r in table.to_pylist())
    (tmp_path / "a.jsonl").write_text(text)
    (tmp_path / "b.ndjson.gz").write_bytes(gzip.compress(text.encode()))
    a, b = read_back(tmp_path / "a.jsonl"), read_back(tmp_path / "b.ndjson.gz")
    assert a.equals(b) and a.num_rows == table.num_rows
    report, exploded = roundtrip([tmp_path / "a.jsonl"], tmp_path / "out", key=("request_id",))
    assert_same_rows(a, exploded)


def test_parquet_folder_glob_and_compressed_parquet(tmp_path):
    t = generate_impressions(60, 3, seed=2)
    (tmp_path / "d").mkdir()
    pq.write_table(t.slice(0, 300), tmp_path / "d" / "a.parquet")
    pq.write_table(t.slice(300), tmp_path / "d" / "b.parquet")
    (tmp_path / "d" / "_SUCCESS").write_text("")
    (tmp_path / "d" / "README.md").write_text("not data")
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink)
    (tmp_path / "whole.parquet.zst").write_bytes(zstandard.compress(sink.getvalue().to_pybytes()))
    assert read_back(tmp_path / "d").equals(t)
    assert read_back(str(tmp_path / "d" / "*.parquet")).equals(t)
    assert read_back(tmp_path / "whole.parquet.zst").equals(t)
    report, exploded = roundtrip([tmp_path / "d"], tmp_path / "out", key=("request_id",))
    assert report["totals"]["requests"] == 60
    assert_same_rows(t, exploded)


def test_hive_partitions_become_columns(tmp_path):
    t = generate_impressions(40, 2, seed=9)
    for day, part in (("2026-11-20", t.slice(0, 200)), ("2026-11-21", t.slice(200))):
        folder = tmp_path / "logs" / f"ds={day}" / "hour=7"
        folder.mkdir(parents=True)
        pq.write_table(part, folder / "part.parquet")
    got = read_back(tmp_path / "logs")
    assert got.schema.names[-2:] == ["ds", "hour"]
    assert got.schema.field("hour").type == pa.int64()
    assert got.column("ds").to_pylist() == ["2026-11-20"] * 200 + ["2026-11-21"] * (t.num_rows - 200)


def test_input_format_overrides_the_name(table, tmp_path):
    (tmp_path / "export.dat").write_bytes(csv_bytes(table))
    with pytest.raises(UsageProblem, match="--input-format"):
        resolve_inputs([str(tmp_path / "export.dat")])
    assert read_back(tmp_path / "export.dat", input_format="csv").num_rows == table.num_rows


def test_many_inputs_are_read_in_order_with_unified_types(tmp_path):
    pq.write_table(pa.table({"rid": pa.array([1, 1], pa.int32()), "v": [1.5, 2.5]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"v": [3.5], "rid": pa.array([2], pa.int64())}), tmp_path / "b.parquet")
    t = read_back(tmp_path / "a.parquet", tmp_path / "b.parquet")
    assert t.schema.names == ["rid", "v"] and t.schema.field("rid").type == pa.int64()
    assert t.column("rid").to_pylist() == [1, 1, 2]


def test_batches_are_bounded(tmp_path):
    t = generate_impressions(3000, 20, seed=1)
    pq.write_table(t, tmp_path / "big.parquet")
    with open_source([str(tmp_path / "big.parquet")], ReadOptions(batch_bytes=256 << 10)) as source:
        sizes = [sb.batch.nbytes for sb in source.batches()]
    assert len(sizes) > 10 and max(sizes) < 2 * (256 << 10)


@pytest.mark.parametrize("a, b", [(pa.decimal128(20, 2), pa.float64()), (pa.int64(), pa.float64()),
                                  (pa.string(), pa.int64())])
def test_files_whose_types_no_type_holds_losslessly_are_one_line(tmp_path, a, b):
    from decimal import Decimal

    from helpers import run_cli

    value = {pa.decimal128(20, 2): Decimal("12345678901234567.89"), pa.int64(): 2**60 + 1, pa.uint64(): 2**63 + 1,
             pa.string(): "x"}
    pq.write_table(pa.table({"rid": [1], "v": pa.array([value[a]], a)}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"rid": [2], "v": pa.array([1.5 if b == pa.float64() else 7], b)}), tmp_path / "b.parquet")
    proc = run_cli("convert", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), "-o", str(tmp_path / "out"),
                   "--key", "rid", "-q")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert all(s in proc.stderr for s in ("'v'", "a.parquet", "b.parquet", str(a), str(b))), proc.stderr
    assert not (tmp_path / "out").exists()


def test_lossless_widening_keeps_every_value(tmp_path):
    from decimal import Decimal

    pq.write_table(pa.table({"rid": [1], "d": pa.array([Decimal("12345678.12")], pa.decimal128(10, 2)),
                             "t": pa.array([1_700_000_000_123], pa.timestamp("ms")),
                             "s": pa.array(["a"], pa.dictionary(pa.int8(), pa.string()))}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"rid": [2], "d": pa.array([Decimal("1.1234")], pa.decimal128(6, 4)),
                             "t": pa.array([1_700_000_000_123_456_789], pa.timestamp("ns")),
                             "s": pa.array(["b"], pa.string())}), tmp_path / "b.parquet")
    t = read_back(tmp_path / "a.parquet", tmp_path / "b.parquet")
    assert t.schema.field("d").type == pa.decimal128(12, 4) and t.schema.field("t").type == pa.timestamp("ns")
    assert t.column("d").to_pylist() == [Decimal("12345678.1200"), Decimal("1.1234")]
    assert t.column("t").cast(pa.int64()).to_pylist() == [1_700_000_000_123_000_000, 1_700_000_000_123_456_789]
    assert t.column("s").to_pylist() == ["a", "b"]


@pytest.mark.parametrize("a, b, both", [(pa.uint64(), pa.int64(), pa.decimal128(20, 0)),
                                        (pa.uint32(), pa.int32(), pa.int64()),
                                        (pa.int16(), pa.decimal128(5, 2), pa.decimal128(7, 2))])
def test_integers_of_both_signs_meet_in_a_type_that_holds_both(tmp_path, a, b, both):
    from decimal import Decimal

    biggest = {pa.uint64(): 2**64 - 1, pa.uint32(): 2**32 - 1, pa.int16(): -2**15}[a]
    other = Decimal("-999.99") if pa.types.is_decimal(b) else -2**(b.bit_width - 1)
    pq.write_table(pa.table({"rid": [1], "v": pa.array([biggest], a)}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"rid": [2], "v": pa.array([other], b)}), tmp_path / "b.parquet")
    t = read_back(tmp_path / "a.parquet", tmp_path / "b.parquet")
    assert t.schema.field("v").type == both
    assert [Decimal(v) for v in t.column("v").to_pylist()] == [Decimal(biggest), Decimal(other)]


def _rows_parsed_by_pyarrow(monkeypatch, module=pcsv, name="open_csv") -> list[int]:
    """Rows of every batch pyarrow's streaming CSV (or JSON) reader yields from here on (counted, not
    changed)."""
    counted, opened = [], getattr(module, name)

    class Counting:
        def __init__(self, reader):
            self.reader = reader

        def __iter__(self):
            for batch in self.reader:
                counted.append(batch.num_rows)
                yield batch

    monkeypatch.setattr(module, name, lambda *a, **k: Counting(opened(*a, **k)))
    return counted


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_the_first_block_is_parsed_once_and_the_read_goes_on_after_it(tmp_path, monkeypatch, ending):
    """The plan parses a CSV's first block; the read starts after it (its bytes skipped, the header's names
    given), wherever the block ends: for many block sizes, some ending between a \\r and its \\n, the rows
    are pyarrow's own read of the whole file, and pyarrow's reader parses only the rows after the block."""
    lines = ["id,n,word"] + [f'{i},{(i * 37) % 1000},"w{i % 7}"' for i in range(300)]
    path = tmp_path / "log.csv"
    path.write_bytes(ending.join(lines).encode() + ending.encode())
    expected = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={"word": pa.string()}))
    for block in range(200, 260):
        with open_source([str(path)], ReadOptions(batch_bytes=block)) as source:
            counted = _rows_parsed_by_pyarrow(monkeypatch)
            got = pa.Table.from_batches([sb.batch for sb in source.batches()], schema=source.schema)
            monkeypatch.undo()
        assert got.equals(expected), block
        head = path.read_bytes()[:block]
        head = head[:max(head.rfind(b"\n"), head.rfind(b"\r")) + 1].replace(b"\r\n", b"\n")
        first = head.count(b"\n") + head.count(b"\r") - 1  # data rows of the lines the first block ends
        assert sum(counted) == 300 - first, block


def test_a_json_lines_first_block_is_parsed_once_too(tmp_path, monkeypatch):
    """The same for JSON lines: for many block sizes the rows are pyarrow's read of the whole file, and its
    streaming reader parses only the lines after the first block (those up to its last line break)."""
    import pyarrow.json as pjson

    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"id": i, "n": (i * 37) % 1000, "word": f"w{i % 7}"}) + "\n"
                            for i in range(300)))
    expected = pjson.read_json(path)
    for block in range(200, 260):
        with open_source([str(path)], ReadOptions(batch_bytes=block)) as source:
            counted = _rows_parsed_by_pyarrow(monkeypatch, pjson, "open_json")
            got = pa.Table.from_batches([sb.batch for sb in source.batches()], schema=source.schema)
            monkeypatch.undo()
        assert got.equals(expected), block
        first = path.read_bytes()[:block].count(b"\n")  # lines the first block ends
        assert sum(counted) == 300 - first, block


@pytest.mark.parametrize("name", ["log.csv", "log.jsonl"])
def test_a_row_longer_than_the_read_blocks_is_read_all_the_same(tmp_path, monkeypatch, name):
    """After the first block the file is parsed in small blocks (READ_BLOCK_BYTES), which a long row
    straddles: the file is then read again in first-block-sized ones, past the rows given, and every row
    comes out once, as pyarrow's own read of the whole file has them, with the long row at either place."""
    import pyarrow.json as pjson

    from roolog.read import textread

    monkeypatch.setattr(textread, "READ_BLOCK_BYTES", 1 << 10)
    for at in (5000, 9999):  # (the first block ends near row 3,000)
        words = [f"w{i}" if i != at else "x" * 20_000 for i in range(10_000)]
        path = tmp_path / name
        if name.endswith(".csv"):
            path.write_text("id,word\n" + "".join(f"{i // 3},{w}\n" for i, w in enumerate(words)))
            expected = pcsv.read_csv(path)
        else:
            path.write_text("".join(json.dumps({"id": i // 3, "word": w}) + "\n" for i, w in enumerate(words)))
            expected = pjson.read_json(path)
        with open_source([str(path)], ReadOptions(batch_bytes=32 << 10)) as source:
            got = pa.Table.from_batches([sb.batch for sb in source.batches()], schema=source.schema)
        assert got.equals(expected), at


def test_a_header_longer_than_the_first_block_is_one_line(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"column_{i}" for i in range(2000)) + "\n" + ",".join("1" * 2000) + "\n")
    with pytest.raises(RoologError, match=r"wide.csv: a row or the header is longer than 4,096 bytes"), \
            open_source([str(path)], ReadOptions(batch_bytes=4096)):
        pass
