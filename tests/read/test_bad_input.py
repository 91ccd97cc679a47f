"""Bad input: one line on stderr naming what and where, the right exit code, no finished-looking output."""

import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, fails_cleanly, run_cli, write

import roolog
from roolog.errors import RoologError
from roolog.read.sources import ReadOptions
from roolog.synthetic import generate_impressions


def fails(out, *args, code=1):
    """Run convert into `out` and check the failure contract; returns the one error line."""
    proc = run_cli("convert", *map(str, args), "-o", str(out), "-q")
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("roolog: error: ")
    assert not os.path.exists(os.path.join(out, "_manifest.json"))
    assert not any(n.startswith("part-") for n in (os.listdir(out) if os.path.isdir(out) else []))
    return lines[0]


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(generate_impressions(50, 3, seed=3), path)
    return path


def test_missing_key_column(log, tmp_path):
    msg = fails(tmp_path / "out", log, "--key", "nope")
    assert "'nope'" in msg and "not in the input" in msg
    assert not os.path.exists(tmp_path / "out")


@pytest.fixture
def null_key_csv(tmp_path):
    path = tmp_path / "nulls.csv"
    path.write_text("rid,item\n1,a\n1,b\n,c\n2,d\n")  # data row 3 has no key
    return path


def test_null_key_names_file_and_row(null_key_csv, tmp_path):
    msg = fails(tmp_path / "out", null_key_csv, "--key", "rid")
    assert str(null_key_csv) in msg and "row 3" in msg and "'rid'" in msg


def test_null_keys_dropped_on_request(null_key_csv, tmp_path):
    proc = run_cli("convert", str(null_key_csv), "-o", str(tmp_path / "out"), "--key", "rid", "--drop-null-keys",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"null_key_rows_dropped": 1' in proc.stdout


def test_malformed_csv_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("rid,item,price\n1,a,1.0\n1,b,2.0,extra\n2,c,3.0\n")
    msg = fails(tmp_path / "out", path, "--key", "rid")
    assert str(path) in msg and "line" in msg and "expected 3" in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    msg = fails(tmp_path / "out", path, "--key", "rid")
    assert str(path) in msg and "empty" in msg


def test_truncated_parquet(log, tmp_path):
    data = log.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    msg = fails(tmp_path / "out", cut, "--key", "request_id")
    assert str(cut) in msg and "Parquet" in msg


def test_inputs_whose_columns_differ(log, tmp_path):
    other = tmp_path / "other.parquet"
    pq.write_table(generate_impressions(5, 3, seed=4).drop_columns(["price"]), other)
    msg = fails(tmp_path / "out", log, other, "--key", "request_id")
    assert str(other) in msg and "price" in msg


def test_schema_column_absent(log, tmp_path):
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["request_id"]\nrequest = ["user_id", "ghost"]\nimpression = ["item_id"]\n')
    msg = fails(tmp_path / "out", log, "--schema", schema, code=2)  # the schema file is the mistake
    assert "'ghost'" in msg and "not in the input" in msg


def test_declared_request_column_that_varies(log, tmp_path):
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["request_id"]\norder_by = "position"\n'
                      'request = ["user_id", "country", "device", "request_time", "user_history_item_ids", "price"]\n'
                      'impression = ["position", "item_id", "click"]\n')
    msg = fails(tmp_path / "out", log, "--schema", schema)
    assert "'price'" in msg and "request_id=" in msg and " vs " in msg


def test_a_long_key_and_values_are_cut_in_the_error_line(tmp_path):
    key, user = "k" * 5000, ["u" * 3000, "v" * 3000]  # the request and its two values named, not printed whole
    log = write(pa.table({"rid": [key, key], "user": user, "item": [1, 2]}), tmp_path / "log.parquet")
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["rid"]\nrequest = ["user"]\nimpression = ["item"]\n')
    msg = fails(tmp_path / "out", log, "--schema", schema)
    assert "column 'user'" in msg and "rid='kkkk" in msg and "'uuuu" in msg and " vs 'vvvv" in msg
    assert msg.count("...") == 3 and len(msg) < 600  # (unbounded: 11,000)


def test_output_folder_not_empty(log, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    msg = fails(out, log, "--key", "request_id", code=2)
    assert "notes.txt" in msg and "--overwrite" in msg
    assert (out / "notes.txt").read_text() == "mine"


def test_missing_input_is_a_usage_error(tmp_path):
    msg = fails(tmp_path / "out", tmp_path / "nowhere.parquet", "--key", "request_id", code=2)
    assert "nowhere.parquet" in msg


def test_wrong_key_type(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"k": pa.array([[1], [2]]), "v": [1, 2]}), path)
    msg = fails(tmp_path / "out", path, "--key", "k")
    assert "'k'" in msg and "keys must be" in msg


def test_csv_value_that_does_not_fit_the_inferred_type(tmp_path):
    """Types come from the first block; a later value that does not fit is an error naming it."""
    path = tmp_path / "t.csv"
    lines = ["rid,amount"] + [f"{i // 3},{i}" for i in range(20_000)] + ["999999,not-a-number"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RoologError, match="not-a-number") as err:
        roolog.convert([str(path)], str(tmp_path / "out"), key=("rid",), progress=False,
                       read=ReadOptions(batch_bytes=64 << 10))
    assert str(path) in str(err.value)
    assert not os.path.exists(tmp_path / "out")


def test_explode_refuses_unfinished_output(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "part-00000.parquet").write_bytes(b"x")
    proc = run_cli("explode", str(tmp_path / "half"), "-o", str(tmp_path / "x.parquet"))
    assert proc.returncode == 1
    assert "_manifest.json" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "x.parquet")


# ---- bad input: exit 1 or 2, one line 'roolog: error: ', no traceback, no manifest ------------------------

def convert_cli(out, *args):
    return run_cli("convert", *map(str, args), "-o", str(out), "-q")


@pytest.fixture
def good_parquet(tmp_path):
    return write(pa.table({"rid": [1, 1, 2], "v": [1, 2, 3], "l": pa.array([[1], [2], [3]])}),
                 tmp_path / "good.parquet")


def _csv_bytes(n=3000) -> bytes:
    return b"rid,v\n" + b"".join(b"%d,%d\n" % (i // 3, i) for i in range(n))


BAD_FILES = {
    "garbage.parquet": lambda: np.random.default_rng(0).bytes(4096),
    "tiny.parquet": lambda: b"PAR1",
    "truncated.csv.gz": lambda: gzip.compress(_csv_bytes())[:200],
    "truncated_tail.csv.gz": lambda: gzip.compress(_csv_bytes())[:-5],
    "plain.csv.zst": _csv_bytes,
    "plain.parquet.zst": lambda: b"PAR1" + b"\x00" * 50 + b"PAR1",
    "notgzip.jsonl.gz": lambda: b'{"rid": 1}\n',
    "notjson.jsonl": lambda: b'{"rid": 1, "v": 2}\nthis is not json\n{"rid": 2, "v": 3}\n',
    "halfjson.jsonl": lambda: b'{"rid": 1, "v": 2}\n{"rid": 1, "v": \n',
    "header_only.csv": lambda: b"rid,v\n",
    "header_only_no_newline.csv": lambda: b"rid,v",
    "empty.jsonl": lambda: b"",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_input_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name]())
    out = tmp_path / "out"
    msg = fails_cleanly(convert_cli(out, path, "--key", "rid"), out)
    if name != "header_only.csv":  # a header-only CSV is reported by its (null-typed) key column
        assert str(path) in msg
    assert not os.path.exists(out)  # a failed first run leaves no folder behind


SCHEMAS = {
    "malformed": b'key = ["rid"\nrequest = \n',
    "listed_twice": b'key = ["rid"]\nrequest = ["v", "l"]\nimpression = ["v"]\n',
    "listed_twice_same_list": b'key = ["rid"]\nimpression = ["v", "l", "l"]\n',
    "key_also_request": b'key = ["rid"]\nrequest = ["rid", "l"]\nimpression = ["v"]\n',
    "duplicate_toml_key": b'key = ["rid"]\nkey = ["rid"]\nimpression = ["v", "l"]\n',
    "wrong_types": b'key = ["rid"]\nrequest = [1]\nimpression = ["v", "l"]\n',
    "unknown_setting": b'key = ["rid"]\nimpresion = ["v", "l"]\n',
    "missing_column": b'key = ["rid"]\nimpression = ["v"]\n',
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_bad_schema_files(tmp_path, good_parquet, name):
    schema = tmp_path / "s.toml"
    schema.write_bytes(SCHEMAS[name])
    out = tmp_path / "out"
    msg = fails_cleanly(convert_cli(out, good_parquet, "--schema", schema), out)
    assert str(schema) in msg


def test_schema_file_not_utf8(tmp_path, good_parquet):
    schema = tmp_path / "s.toml"
    schema.write_bytes(b'key = ["rid"]\nimpression = ["v", "l", "\xff"]\n')
    fails_cleanly(convert_cli(tmp_path / "out", good_parquet, "--schema", schema), tmp_path / "out")


@pytest.mark.parametrize("args,needle", [
    (("--key", "l"), "'l'"),
    (("--key", "nope"), "'nope'"),
    (("--key", "rid", "--order-by", "missing"), "'missing'"),
    (("--key", "rid", "--order-by", "rid"), "'rid'"),
    (("--key", "rid", "--order-by", "l"), "less"),  # a list cannot be ordered
    (("--key", "rid", "--on-conflict", "explode"), None),
])
def test_bad_options(tmp_path, good_parquet, args, needle):
    out = tmp_path / "out"
    proc = convert_cli(out, good_parquet, *args)
    if needle is None:  # Click's own usage errors: exit 2, no traceback, no output
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert not os.path.exists(out / "_manifest.json")
        return
    assert needle in fails_cleanly(proc, out)


def test_multi_character_delimiter(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(_csv_bytes(10))
    fails_cleanly(convert_cli(tmp_path / "out", path, "--key", "rid", "--delimiter", ";;"), tmp_path / "out")


def test_csv_with_duplicate_column_names(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"rid,v,v\n1,2,3\n1,4,5\n")
    fails_cleanly(convert_cli(tmp_path / "out", path, "--key", "rid"), tmp_path / "out")


@pytest.mark.parametrize("name", ["__roolog_n", "__roolog_impressions"])
def test_input_column_named_like_an_internal_column_is_refused(tmp_path, name):
    path = write(pa.table({"rid": [1, 1, 2], name: [5, 5, 7]}), tmp_path / "x.parquet")
    proc = convert_cli(tmp_path / "out", path, "--key", "rid")
    fails_cleanly(proc, tmp_path / "out")
    assert "reserved" in proc.stderr


def test_jsonl_field_first_seen_after_the_first_block_is_an_error_not_dropped(tmp_path):
    path = tmp_path / "x.jsonl"
    lines = [json.dumps({"rid": i // 3, "v": i}) for i in range(3000)] + [json.dumps({"rid": 9999, "v": 1, "x": 2})]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(roolog.errors.RoologError) as err:
        roolog.convert([str(path)], str(tmp_path / "out"), key=("rid",), progress=False,
                       read=ReadOptions(batch_bytes=4096))
    assert str(path) in str(err.value)
    assert not os.path.exists(tmp_path / "out")


def test_explode_with_a_manifest_missing_fields(tmp_path, good_parquet):
    out = tmp_path / "out"
    roolog.convert([str(good_parquet)], str(out), key=("rid",), progress=False)
    (out / "_manifest.json").write_text("{}")
    proc = run_cli("explode", str(out), "-o", str(tmp_path / "back.parquet"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("roolog: error: ")


def test_explode_with_a_corrupt_shard_fails_cleanly_and_writes_nothing(tmp_path, good_parquet):
    out = tmp_path / "out"
    roolog.convert([str(good_parquet)], str(out), key=("rid",), progress=False)
    (out / "part-00000.parquet").write_bytes(b"not parquet at all" * 10)
    target = tmp_path / "back.parquet"
    proc = run_cli("explode", str(out), "-o", str(target))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("roolog: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists(target) and not any(n.startswith("back.parquet.tmp") for n in os.listdir(tmp_path))


@pytest.mark.parametrize("args, why", [
    (("convert", "{sample}", "-o", "s3://bucket/out", "--key", "request_id"), "atomic rename"),
    (("explode", "{out}", "-o", "gs://bucket/impressions.parquet"), "atomic rename"),
    (("convert", "hdfs://namenode/logs/", "-o", "out", "--key", "request_id"), "cannot open the hdfs:// file system"),
    (("stats", "file:///no/such/logs/a.parquet", "--key", "request_id"), "input not found: /no/such/logs/a"),
])
def test_object_store_uris_are_refused_and_nothing_is_written(tmp_path, args, why):
    """s3://bucket/out must not become a local folder "s3:"; an input URI that cannot be read is one line
    (tests/read/test_object_stores.py reads real ones)."""
    out = tmp_path / "made"
    assert run_cli("convert", f"{SAMPLE}/impressions.parquet", "-o", str(out), "--key", "request_id",
                   "-q").returncode == 0
    work = tmp_path / "cwd"
    work.mkdir()
    proc = run_cli(*(a.format(sample=f"{SAMPLE}/impressions.parquet", out=out) for a in args), cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and why in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(work) == []


# ---- bytes that are not UTF-8, files that hold no rows, inputs and targets of the wrong kind ------------

def test_a_ragged_row_with_bytes_that_are_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "rag.csv"
    path.write_bytes(b"id,v,name\n1,2,a\n2,3,\xff\xfe,extra\n")
    msg = fails(tmp_path / "out", path, "--key", "id")
    assert "Expected 3 columns, got 4" in msg


def test_bytes_that_are_not_utf8_name_line_and_column_and_binary_keeps_them(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"id,v,name\n1,2,caf\xe9\n2,3,b\n")
    msg = fails(tmp_path / "out", path, "--key", "id")
    assert "line 2, column 'name'" in msg and "--column-type name=binary" in msg
    proc = run_cli("convert", str(path), "-o", str(tmp_path / "kept"), "--key", "id", "--column-type",
                   "name=binary", "-q")
    assert proc.returncode == 0, proc.stderr
    roolog.explode(str(tmp_path / "kept"), str(tmp_path / "x.parquet"))
    assert sorted(pq.read_table(tmp_path / "x.parquet").column("name").to_pylist()) == [b"b", b"caf\xe9"]


def test_late_bytes_that_are_not_utf8_name_their_line(tmp_path):
    path = tmp_path / "late.csv"
    path.write_bytes(("id,v,name\n" + "".join(f"{i},{i},x{i}\n" for i in range(20_000))).encode()
                     + b"20001,1,b\xff\n")
    with pytest.raises(RoologError, match=r"line 20,002, column 'name': bytes that are not UTF-8"):
        roolog.convert([str(path)], str(tmp_path / "out"), key=("id",), progress=False,
                       read=ReadOptions(batch_bytes=64 << 10))


def test_a_header_only_csv_says_it_has_no_rows(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("id,v,name\n")
    assert "no value in the input" in fails(tmp_path / "out", path, "--key", "id")


def test_a_fifo_input_is_a_usage_error_not_not_found(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    msg = fails(tmp_path / "out", fifo, "--key", "id", code=2)
    assert "not a regular file" in msg


def test_explode_into_a_folder_is_a_usage_error(tmp_path):
    out = tmp_path / "out"
    assert run_cli("convert", os.path.join(SAMPLE, "impressions.parquet"), "-o", str(out), "--key", "request_id",
                   "-q").returncode == 0
    (tmp_path / "target").mkdir()
    proc = run_cli("explode", str(out), "-o", str(tmp_path / "target"))
    assert fails_cleanly(proc, tmp_path / "nowhere", codes=(2,)) and "is a folder" in proc.stderr
    assert os.listdir(tmp_path / "target") == []
