"""What the user's files say is what roolog stores: texts never merged by inference, declared types honoured,
quoted line breaks read across blocks, errors that name the column, file, line and value - all through the
CLI, as a user meets them."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from helpers import run_cli

pytestmark = pytest.mark.slow

BLOCK = 32 << 20  # the reader's first block: types are inferred from it


def one_line_error(proc, code=1) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


def explode(out, tmp_path) -> pa.Table:
    proc = run_cli("explode", str(out), "-o", str(tmp_path / "back.parquet"))
    assert proc.returncode == 0, proc.stderr
    return pq.read_table(tmp_path / "back.parquet")


def test_ids_with_leading_zeros_stay_apart(tmp_path):
    log = tmp_path / "z.csv"
    log.write_text("session,user,item\n0123,alice,1\n0123,alice,2\n123,bob,3\n00123,carol,4\n")
    proc = run_cli("convert", str(log), "-o", str(tmp_path / "zo"), "--key", "session", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["requests"] == 3
    back = explode(tmp_path / "zo", tmp_path)
    assert back.schema.field("session").type == pa.string()
    assert sorted(back.column("session").to_pylist()) == ["00123", "0123", "0123", "123"]


def test_a_declared_type_is_read_as_declared(tmp_path):
    log = tmp_path / "d.csv"
    log.write_text("k,price,when\n1,12345678901234567.89,2026-11-20 10:00:00.123\n1,0.10,2026-11-20 10:00:01\n")
    out = tmp_path / "out"
    proc = run_cli("convert", str(log), "-o", str(out), "--key", "k", "-q",
                   "--column-type", "price=decimal128(20, 2)", "--column-type", "when=timestamp[ms]")
    assert proc.returncode == 0, proc.stderr
    back = explode(out, tmp_path)
    assert back.schema.field("price").type == pa.decimal128(20, 2)
    assert back.column("price").to_pylist() == [Decimal("12345678901234567.89"), Decimal("0.10")]
    assert back.schema.field("when").type == pa.timestamp("ms")
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["k"]\nrequest = []\nimpression = ["price", "when"]\n[types]\nprice = "string"\n')
    both = run_cli("convert", str(log), "-o", str(tmp_path / "o2"), "--schema", str(schema), "-q",
                   "--column-type", "price=decimal128(20, 2)")
    assert "disagrees with the schema file" in one_line_error(both, 2)
    pinned = run_cli("convert", str(log), "-o", str(tmp_path / "o3"), "--schema", str(schema), "-q")
    assert pinned.returncode == 0, pinned.stderr
    assert explode(tmp_path / "o3", tmp_path).column("price").to_pylist() == ["12345678901234567.89", "0.10"]


def test_a_bad_type_name_is_a_usage_error(tmp_path):
    log = tmp_path / "d.csv"
    log.write_text("k,v\n1,2\n")
    proc = run_cli("convert", str(log), "-o", str(tmp_path / "out"), "--key", "k", "--column-type", "v=int65")
    assert proc.returncode == 2 and "COL=TYPE" in proc.stderr and "Traceback" not in proc.stderr


# ---- past the first block -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def body() -> str:
    """CSV rows k,v,text over more than one read block: k repeats in pairs, v an integer, text plain."""
    rows, size, i = [], 0, 0
    while size < BLOCK + (1 << 20):
        row = f"{i // 2},{i},plain text number {i} padded to be a little longer than it needs\n"
        rows.append(row)
        size += len(row)
        i += 1
    return "".join(rows)


def big_csv(tmp_path, body: str, tail: str = "", head: str = ""):
    path = tmp_path / "big.csv"
    with open(path, "w") as fh:
        fh.write("k,v,text\n" + head + body + tail)
    return path


def lines_before_tail(body: str, head: str = "") -> int:
    return 1 + head.count("\n") + body.count("\n")


def test_a_late_value_that_does_not_fit_names_column_line_value_and_fix(tmp_path, body):
    log = big_csv(tmp_path, body, tail="7,abc,x\n")
    msg = one_line_error(run_cli("convert", str(log), "-o", str(tmp_path / "out"), "--key", "k", "-q"))
    line = lines_before_tail(body) + 1
    assert f"line {line:,}" in msg and "column 'v'" in msg and "'abc'" in msg and "big.csv" in msg
    assert "--column-type v=string" in msg
    assert not (tmp_path / "out").exists()


def test_a_long_late_value_is_cut_in_the_error_line(tmp_path, body):
    long = "abc" * 2000  # a 6,000-character value: the line names it, it does not print it
    log = big_csv(tmp_path, body, tail=f"7,{long},x\n")
    msg = one_line_error(run_cli("convert", str(log), "-o", str(tmp_path / "out"), "--key", "k", "-q"))
    assert f"line {lines_before_tail(body) + 1:,}" in msg and "column 'v'" in msg and "'abcabc" in msg
    assert "..." in msg and len(msg) < 600 and "--column-type v=string" in msg


def test_a_late_integer_written_another_way_is_an_error_not_a_merge(tmp_path, body):
    log = big_csv(tmp_path, body, tail="7,0123,x\n")
    msg = one_line_error(run_cli("convert", str(log), "-o", str(tmp_path / "out"), "--key", "k", "-q"))
    assert f"line {lines_before_tail(body) + 1:,}" in msg and "'0123'" in msg and "--column-type v=string" in msg
    fixed = run_cli("convert", str(log), "-o", str(tmp_path / "out"), "--key", "k", "-q", "--column-type", "v=string")
    assert fixed.returncode == 0, fixed.stderr
    values = explode(tmp_path / "out", tmp_path).column("v").to_pylist()
    assert "0123" in values and "123" in values


def test_quoted_line_breaks_over_a_block_boundary_are_read_right(tmp_path):
    """Every row's text spans lines, so the reader's first block boundary (32 MB) falls inside quotes."""
    path = tmp_path / "multi.csv"
    rows = 0
    with open(path, "w") as fh:
        fh.write("k,v,text\n")
        size = 0
        while size < BLOCK + (1 << 20):
            row = f'{rows // 2},{rows},"first line {rows}\nsecond line, with a comma\nthird"\n'
            fh.write(row)
            size += len(row)
            rows += 1
    out = tmp_path / "out"
    proc = run_cli("convert", str(path), "-o", str(out), "--key", "k", "-q")
    assert proc.returncode == 0, proc.stderr
    back = explode(out, tmp_path)
    assert back.num_rows == rows
    assert set(back.column("text").to_pylist()[:3]) <= {f"first line {i}\nsecond line, with a comma\nthird"
                                                         for i in range(rows)}


def test_quoted_line_breaks_only_after_the_first_block_need_the_option(tmp_path):
    import roolog
    from roolog.errors import RoologError
    from roolog.read.sources import ReadOptions

    path = tmp_path / "late.csv"
    plain = "".join(f"{i // 2},{i},plain {i}\n" for i in range(20_000))
    broken = "".join(f'{i // 2},{i},"late\nbreak {i}"\n' for i in range(20_000, 40_000))
    path.write_text("k,v,text\n" + plain + broken)
    small = dict(batch_bytes=64 << 10)  # blocks of 64 KB: the breaks start far after the first
    with pytest.raises(RoologError, match="--newlines-in-values"):
        roolog.convert([str(path)], str(tmp_path / "out"), key=("k",), read=ReadOptions(**small), progress=False)
    roolog.convert([str(path)], str(tmp_path / "out"), key=("k",), progress=False,
                   read=ReadOptions(newlines_in_values=True, **small))
    assert explode(tmp_path / "out", tmp_path).num_rows == 40_000
    proc = run_cli("convert", str(path), "-o", str(tmp_path / "cli"), "--key", "k", "--newlines-in-values", "-q")
    assert proc.returncode == 0 and explode(tmp_path / "cli", tmp_path).num_rows == 40_000


def test_a_jsonl_field_that_first_appears_late_is_named_with_its_line(tmp_path):
    path = tmp_path / "late.jsonl"
    with open(path, "w") as fh:
        size = n = 0
        while size < BLOCK + (1 << 20):
            row = json.dumps({"k": n // 2, "v": n, "pad": "x" * 60}) + "\n"
            fh.write(row)
            size += len(row)
            n += 1
        fh.write(json.dumps({"k": 1, "v": 2, "pad": "", "coupon": "SAVE10"}) + "\n")
    msg = one_line_error(run_cli("convert", str(path), "-o", str(tmp_path / "out"), "--key", "k", "-q"))
    assert "'coupon'" in msg and f"line {n + 1:,}" in msg and "--column-type coupon=" in msg


# ---- infer-schema's TOML --------------------------------------------------------------------------------

ODD_NAMES = ['say "hi"', "back\\slash", "ünï cødé", "with space", "a=b", "#hash", "tab\there", "request_id"]


def test_infer_schema_writes_toml_that_round_trips_any_column_name(tmp_path):
    rows = {name: [1, 1, 2] if name == "request_id" else [f"{i}" for i in range(3)] for name in ODD_NAMES}
    rows["say \"hi\""] = ["same", "same", "other"]  # request-level
    pq.write_table(pa.table(rows), tmp_path / "odd.parquet")
    schema = tmp_path / "odd.toml"
    proc = run_cli("infer-schema", str(tmp_path / "odd.parquet"), "--key", "request_id", "-o", str(schema), "-q")
    assert proc.returncode == 0, proc.stderr
    doc = tomllib.loads(schema.read_text())
    assert doc["key"] + doc["request"] + doc["impression"] == ["request_id", 'say "hi"'] + ODD_NAMES[1:-1] \
        or sorted(doc["key"] + doc["request"] + doc["impression"]) == sorted(ODD_NAMES)
    assert doc["types"]["ünï cødé"] == "string"
    out = tmp_path / "out"
    assert run_cli("convert", str(tmp_path / "odd.parquet"), "-o", str(out), "--schema", str(schema),
                   "-q").returncode == 0
    assert explode(out, tmp_path).schema.names == ODD_NAMES


def test_infer_schema_pins_text_types_that_convert_then_honours(tmp_path):
    log = tmp_path / "z.csv"
    log.write_text("session,item,price\n0123,1,1.5\n0123,2,2.5\n123,3,3.5\n")
    schema = tmp_path / "z.toml"
    assert run_cli("infer-schema", str(log), "--key", "session", "-o", str(schema), "-q").returncode == 0
    assert tomllib.loads(schema.read_text())["types"] == {"session": "string", "item": "int64", "price": "double"}
    out = tmp_path / "out"
    assert run_cli("convert", str(log), "-o", str(out), "--schema", str(schema), "-q").returncode == 0
    assert json.loads((out / "_manifest.json").read_text())["options"]["read"]["column_types"] == \
        [["session", "string"], ["item", "int64"], ["price", "double"]]


# ---- no traceback ---------------------------------------------------------------------------------------

def test_partition_by_a_nanosecond_timestamp(tmp_path):
    stamps = pa.array([1_700_000_000_123_456_789, 1_700_000_000_123_456_789, 1_700_000_001_000_000_001],
                      pa.timestamp("ns"))
    pq.write_table(pa.table({"k": [1, 1, 2], "t": stamps, "v": [1, 2, 3]}), tmp_path / "ns.parquet")
    out = tmp_path / "out"
    proc = run_cli("convert", str(tmp_path / "ns.parquet"), "-o", str(out), "--key", "k", "--partition-by", "t", "-q")
    assert proc.returncode == 0, proc.stderr
    back = explode(out, tmp_path)
    assert back.schema.field("t").type == pa.timestamp("ns")
    assert sorted(back.column("t").cast(pa.int64()).to_pylist()) == sorted(stamps.cast(pa.int64()).to_pylist())


def test_a_declared_request_column_varying_in_nanoseconds_is_one_line(tmp_path):
    stamps = pa.array([1_700_000_000_123_456_789, 1_700_000_000_123_456_788], pa.timestamp("ns"))
    pq.write_table(pa.table({"k": [1, 1], "t": stamps, "v": [1, 2]}), tmp_path / "ns.parquet")
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["k"]\nrequest = ["t"]\nimpression = ["v"]\n')
    msg = one_line_error(run_cli("convert", str(tmp_path / "ns.parquet"), "-o", str(tmp_path / "out"), "--schema",
                                 str(schema), "-q"))
    assert "'t'" in msg and "123456789" in msg and "123456788" in msg


def test_a_folder_mixing_formats_says_which_and_how_to_pick_one(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(2):
        pq.write_table(pa.table({"k": [i, i], "v": [1, 2]}), logs / f"part-{i}.parquet")
    (logs / "metadata.json").write_text('{"source": "export job 7"}\n')
    (logs / "checksums.csv").write_text("file,sha\npart-0.parquet,abc\n")
    msg = one_line_error(run_cli("convert", str(logs), "-o", str(tmp_path / "out"), "--key", "k", "-q"), 2)
    assert "2 Parquet" in msg and "1 JSON lines" in msg and "1 CSV" in msg and "--input-format parquet" in msg
    proc = run_cli("convert", str(logs), "-o", str(tmp_path / "out"), "--key", "k", "--input-format", "parquet")
    assert proc.returncode == 0 and "2 file(s) not in --input-format parquet skipped" in proc.stderr, proc.stderr
    assert explode(tmp_path / "out", tmp_path).num_rows == 4
