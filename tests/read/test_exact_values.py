"""Integers too big for int64 and files that end inside a quote: read as what the file says, or refused
naming the line - never rounded to a double, never rows swallowed into one value."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import xxhash
from helpers import run_cli

import roolog
from roolog.errors import RoologError
from roolog.read.inputs import ReadOptions

BIG = 12345678901234567890  # above int64, fits uint64


def convert(tmp_path, text: str | bytes, name: str, *args: str):
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    out = tmp_path / f"out-{name}"
    return run_cli("convert", str(path), "-o", str(out), "-q", *args), out


def exploded(out, tmp_path) -> pa.Table:
    target = tmp_path / f"{out.name}.parquet"
    proc = run_cli("explode", str(out), "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    return pq.read_table(target)


def one_line(proc, code=1) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_ids_above_int64_stay_apart_as_uint64(tmp_path, fmt):
    ids = [BIG, BIG + 1, BIG + 1, 5, 2**64 - 1]  # as doubles the first three are one number
    text = ("".join(json.dumps({"id": i, "v": n}) + "\n" for n, i in enumerate(ids)) if fmt == "jsonl"
            else "id,v\n" + "".join(f"{i},{n}\n" for n, i in enumerate(ids)))
    proc, out = convert(tmp_path, text, f"big.{fmt}", "--key", "id", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["requests"] == 4
    back = exploded(out, tmp_path)
    assert back.schema.field("id").type == pa.uint64()
    assert sorted(back.column("id").to_pylist()) == sorted(ids)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("values,kind", [([-BIG, BIG, 3], pa.decimal128(38, 0)),
                                         ([10**40 + 1, 10**40, 1], pa.decimal256(76, 0))])
def test_integers_beyond_uint64_are_decimals(tmp_path, fmt, values, kind):
    text = ("".join(json.dumps({"k": n, "x": v}) + "\n" for n, v in enumerate(values)) if fmt == "jsonl"
            else "k,x\n" + "".join(f"{n},{v}\n" for n, v in enumerate(values)))
    proc, out = convert(tmp_path, text, f"dec.{fmt}", "--key", "k")
    assert proc.returncode == 0, proc.stderr
    back = exploded(out, tmp_path).sort_by("k")
    assert back.schema.field("x").type == kind
    assert back.column("x").to_pylist() == [Decimal(v) for v in values]


def test_a_decimal_key_keeps_requests_apart_and_shards_by_its_text(tmp_path):
    ids = [-BIG, -BIG - 1, BIG * 10, BIG * 10 + 1]
    text = "".join(json.dumps({"id": i, "v": n}) + "\n" for n, i in enumerate(ids))
    proc, out = convert(tmp_path, text, "deckey.jsonl", "--key", "id", "--shards", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["requests"] == 4
    for shard in sorted(out.glob("part-*.parquet")):  # shard = xxh64(the text Arrow prints) mod 4
        number = int(shard.stem.split("-")[1])
        for v in pq.read_table(shard).column("id").to_pylist():
            assert xxhash.xxh64_intdigest(str(v).encode()) % 4 == number


def test_csv_big_integers_beside_fractions_or_zero_padded_keep_their_texts(tmp_path):
    proc, out = convert(tmp_path, f"k,a,b\n1,1.5,0{BIG}\n2,{BIG + 1},{BIG}\n", "mixed.csv", "--key", "k")
    assert proc.returncode == 0, proc.stderr
    back = exploded(out, tmp_path).sort_by("k")
    assert back.column("a").to_pylist() == ["1.5", str(BIG + 1)]
    assert back.column("b").to_pylist() == [f"0{BIG}", str(BIG)]


def test_jsonl_big_integers_beside_fractions_are_refused_with_the_fix(tmp_path):
    proc, _ = convert(tmp_path, f'{{"k": 1, "a": 1.5}}\n{{"k": 2, "a": {BIG}}}\n', "frac.jsonl", "--key", "k")
    msg = one_line(proc)
    assert "'a'" in msg and "--column-type a=decimal128(38,6)" in msg
    proc, out = convert(tmp_path, f'{{"k": 1, "a": 1.5}}\n{{"k": 2, "a": {BIG}}}\n', "frac2.jsonl", "--key", "k",
                        "--column-type", "a=decimal128(38,6)")
    assert proc.returncode == 0, proc.stderr
    assert exploded(out, tmp_path).sort_by("k").column("a").to_pylist() == [Decimal("1.5"), Decimal(BIG)]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_late_integer_too_big_names_line_column_and_the_type_that_holds_it(tmp_path, fmt):
    rows = [(i, i) for i in range(20_000)] + [(20_000, BIG)]
    path = tmp_path / f"late.{fmt}"
    path.write_text("".join(json.dumps({"k": k, "x": x}) + "\n" for k, x in rows) if fmt == "jsonl"
                    else "k,x\n" + "".join(f"{k},{x}\n" for k, x in rows))
    with pytest.raises(RoologError) as err:
        roolog.convert([str(path)], str(tmp_path / "o"), key=("k",), progress=False,
                       read=ReadOptions(batch_bytes=64 << 10))
    line = 20_001 if fmt == "jsonl" else 20_002
    assert f"line {line:,}, column 'x'" in str(err.value) and "--column-type x=uint64" in str(err.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_int64_and_uint64_files_meet_in_a_decimal(tmp_path, fmt):
    def write(name, values):
        path = tmp_path / f"{name}.{fmt}"
        path.write_text("".join(json.dumps({"k": n, "x": v}) + "\n" for n, v in values) if fmt == "jsonl"
                        else "k,x\n" + "".join(f"{n},{v}\n" for n, v in values))
        return str(path)

    a, b = write("a", [(1, BIG), (2, 2**64 - 1)]), write("b", [(3, -5), (4, 7)])
    proc = run_cli("convert", a, b, "-o", str(tmp_path / "out"), "--key", "k", "-q")
    assert proc.returncode == 0, proc.stderr
    back = exploded(tmp_path / "out", tmp_path).sort_by("k")
    assert back.schema.field("x").type == pa.decimal128(20, 0)
    assert back.column("x").to_pylist() == [Decimal(v) for v in (BIG, 2**64 - 1, -5, 7)]


def test_data_ids_of_keys_above_2_53_stay_distinct(tmp_path):
    from roolog.data import encode_ids

    big = [2**53, 2**53 + 1, BIG, BIG + 1]
    assert len(set(encode_ids(pa.array(big, pa.uint64()), "u", None).tolist())) == 4
    decimals = pa.array([Decimal(-BIG), Decimal(-BIG - 1), Decimal(10**30), Decimal(10**30 + 1)], pa.decimal128(38, 0))
    ids = encode_ids(decimals, "d", None)
    assert len(set(ids.tolist())) == 4
    expected = [xxhash.xxh64_intdigest(str(v).encode()) & (2**63 - 1) for v in decimals.to_pylist()]
    assert ids.tolist() == expected
    assert len(set(encode_ids(decimals, "d", 1 << 40).tolist())) == 4


# ---- the end of a CSV/TSV --------------------------------------------------------------------------

UNCLOSED = {  # (file, the line where the never-closed quote opens)
    "rest_swallowed": (b'id,v,name\n1,2,a\n2,3,"b\n3,4,c\n', 3),
    "no_final_newline": (b'id,v,name\n1,2,a\n2,3,"b\n3,4,c', 3),
    "crlf": (b'id,v,name\r\n1,2,a\r\n2,3,"b\r\n3,4,c\r\n', 3),
    "last_line": (b'id,v,name\n1,2,"x"\n2,3,"y', 3),
    "a_lone_quote": (b'id,v,name\n1,2,"\n', 2),
    "tsv": (b'id\tv\tname\n1\t2\ta\n2\t3\t"b\n3\t4\tc\n', 3),
}
CLOSED = {  # endings that look alike but close every quote
    "doubled_quote_at_the_end": (b'id,v,name\n1,2,"a"""\n', ['a"']),
    "empty_quoted": (b'id,v,name\n1,2,"x"\n2,3,""\n', ["x", ""]),
    "quoted_line_break": (b'id,v,name\n1,2,"x"\n2,3,"\n"\n', ["x", "\n"]),
    "quote_inside_a_bare_value": (b'id,v,name\n1,2,"x"\n2,3,y"', ["x", 'y"']),
    "only_quotes": (b'id,v,name\n1,2,x\n2,3,""""', ["x", '"']),
}


@pytest.mark.parametrize("case", sorted(UNCLOSED))
def test_a_file_that_ends_inside_a_quote_is_an_error_naming_the_line(tmp_path, case):
    text, line = UNCLOSED[case]
    name = "u.tsv" if case == "tsv" else "u.csv"
    proc, out = convert(tmp_path, text, name, "--key", "id")
    msg = one_line(proc)
    assert f"{name}, line {line}:" in msg and "never closed" in msg
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(CLOSED))
def test_endings_that_close_their_quotes_read_as_the_file_says(tmp_path, case):
    text, names = CLOSED[case]
    proc, out = convert(tmp_path, text, "c.csv", "--key", "id")
    assert proc.returncode == 0, proc.stderr
    assert exploded(out, tmp_path).sort_by("id").column("name").to_pylist() == names
    assert pcsv.read_csv(tmp_path / "c.csv", parse_options=pcsv.ParseOptions(newlines_in_values=True)
                         ).column("name").to_pylist() == names  # what pyarrow reads of the whole file


def test_a_quoted_line_break_cut_by_the_line_split_is_an_error_never_made_up_rows(tmp_path):
    """Without --newlines-in-values pyarrow splits blocks at line breaks; a split inside a quoted value whose
    rest looks like a row reads as two made-up rows. Over many block sizes: right rows or the error."""
    rows = [f"{i},{i},x{i}" for i in range(400)]
    rows += [f'{i},{i},"a\n{i + 100_000},{i},x"' if i % 3 == 0 else f"{i},{i},x{i}" for i in range(400, 600)]
    path = tmp_path / "cut.csv"
    path.write_text("id,v,name\n" + "\n".join(rows) + "\n")
    expected = sorted(pcsv.read_csv(path, parse_options=pcsv.ParseOptions(newlines_in_values=True))
                      .column("name").to_pylist())
    refused = 0
    for block in range(3000, 6000, 97):  # the first block holds no quoted line break
        out = tmp_path / "o"
        shutil.rmtree(out, ignore_errors=True)
        try:
            roolog.convert([str(path)], str(out), key=("v",), progress=False, read=ReadOptions(batch_bytes=block))
        except RoologError as err:
            assert "--newlines-in-values" in str(err)
            refused += 1
            continue
        assert sorted(pq.read_table(out).column("name").to_pylist()) == expected, block
    assert refused  # some block sizes do cut a value (pyarrow takes them silently)
    roolog.convert([str(path)], str(tmp_path / "nl"), key=("v",), progress=False,
                   read=ReadOptions(batch_bytes=3194, newlines_in_values=True))
    assert sorted(pq.read_table(tmp_path / "nl").column("name").to_pylist()) == expected


@pytest.mark.parametrize("text,quote_aware", [
    (b'id,name\n1,"a"\n2,"b,c"\n', False),  # quotes, but every line break outside them
    (b'id,name\n1,"a\nb"\n2,c\n', True),  # a line break inside quotes
    (b'id,name\n1,"a\rb"\n2,c\n', True),  # a bare carriage return inside quotes
    (b'id,name\n1,"say ""hi""\nthere"\n', True),  # doubled quotes keep the count
    (b'id,name\r\n1,"x"\r\n2,"y"\r\n', False),
])
def test_the_first_block_decides_quote_aware_splitting_by_the_breaks_inside_quotes(tmp_path, text, quote_aware):
    from roolog.read.inputs import find_inputs
    from roolog.read.textread import plan_text

    path = tmp_path / "q.csv"
    path.write_bytes(text)
    (f,) = find_inputs([str(path)], "auto").files
    assert plan_text(f, ReadOptions()).newlines is quote_aware
    out = tmp_path / "o"
    roolog.convert([str(path)], str(out), key=("id",), progress=False)
    expected = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(newlines_in_values=True))
    assert sorted(pq.read_table(out).column("name").to_pylist()) == sorted(expected.column("name").to_pylist())


def test_declared_types_win_and_are_compared_as_types_not_texts(tmp_path):
    log = tmp_path / "d.csv"
    log.write_text("session,v\n0123,1\n0123,2\n123,3\n")
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["session"]\nrequest = []\nimpression = ["v"]\n[types]\nsession = "int64"\n'
                      'v = "float64"\n')
    proc, out = convert(tmp_path, log.read_text(), "d2.csv", "--schema", str(schema), "--column-type", "v=double")
    assert proc.returncode == 0, proc.stderr  # double and float64 are one type
    back = exploded(out, tmp_path)
    assert back.schema.field("session").type == pa.int64()  # declared: no text check turns it into string
    assert back.schema.field("v").type == pa.float64()
    assert sorted(back.column("session").to_pylist()) == [123, 123, 123]
    proc, _ = convert(tmp_path, log.read_text(), "d3.csv", "--schema", str(schema), "--column-type", "v=int64")
    assert proc.returncode == 2 and "disagrees" in proc.stderr


@pytest.mark.parametrize("declared,ok", [("string", False), ("int8", False), ("decimal128(30,2)", True),
                                         ("int64", True)])
def test_a_declared_type_is_put_on_a_parquet_column_only_losslessly(tmp_path, declared, ok):
    pq.write_table(pa.table({"k": [1, 2], "x": [5, -6]}), tmp_path / "p.parquet")
    out = tmp_path / "out"
    proc = run_cli("convert", str(tmp_path / "p.parquet"), "-o", str(out), "--key", "k", "-q",
                   "--column-type", f"x={declared}")
    if not ok:
        assert one_line(proc) and "does not convert to it losslessly" in proc.stderr and not out.exists()
        return
    assert proc.returncode == 0, proc.stderr
    back = exploded(out, tmp_path).sort_by("k")
    assert [Decimal(v) for v in back.column("x").to_pylist()] == [Decimal(5), Decimal(-6)]


@pytest.mark.parametrize("texts", [["+5", "7", "-3"], ["7", "+5", "-3"], ["7", "-3", "+5"]])
def test_signed_integer_texts_that_pyarrow_reads_as_doubles_keep_their_texts(tmp_path, texts):
    """pyarrow's CSV inference makes '+5' a double (its integer parser refuses the '+'): 5.0 would print
    back as another text, so a column of integer texts read as doubles is read as its texts, wherever in
    the column the '+' is."""
    from roolog.read.sources import open_source

    path = tmp_path / "signed.csv"
    path.write_text("k,v\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)))
    assert pcsv.read_csv(path).schema.field("v").type == pa.float64()  # (the case this is about)
    with open_source([str(path)], ReadOptions()) as source:
        values = pa.Table.from_batches([sb.batch for sb in source.batches()], schema=source.schema).column("v")
    assert values.type == pa.string() and values.to_pylist() == texts


def test_number_columns_found_after_the_first_rows_are_checked_as_well(tmp_path):
    """The texts of the number columns are parsed early for the columns the first MB of rows shows as
    numbers; a column that is empty there and holds integers later in the block (one of them zero-padded),
    and one that holds integers there and a word later, still come back as their texts."""
    from roolog.read.sources import open_source

    rows = 60_000  # about 1.6 MB: the first MB of rows is not the whole block
    late = ["" if i < 50_000 else ("007" if i == 55_000 else str(i)) for i in range(rows)]
    early = [str(i) if i != 58_000 else "many" for i in range(rows)]
    path = tmp_path / "late.csv"
    path.write_text("k,pad,late,early\n" + "".join(f"{i},{'x' * 15},{a},{b}\n"
                                                for i, (a, b) in enumerate(zip(late, early, strict=True))))
    with open_source([str(path)], ReadOptions()) as source:
        table = pa.Table.from_batches([sb.batch for sb in source.batches()], schema=source.schema)
    assert table.schema.field("late").type == pa.string() and table.schema.field("early").type == pa.string()
    assert table.column("late").to_pylist() == late and table.column("early").to_pylist() == early
    assert table.schema.field("k").type == pa.int64()
