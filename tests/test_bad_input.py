"""Bad input: one line on stderr naming what and where, the right exit code, no finished-looking output."""

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli

import roolog
from roolog.errors import RoologError
from roolog.sources import ReadOptions
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
    msg = fails(tmp_path / "out", log, "--schema", schema)
    assert "'ghost'" in msg and "not in the input" in msg


def test_declared_request_column_that_varies(log, tmp_path):
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["request_id"]\norder_by = "position"\n'
                      'request = ["user_id", "country", "device", "request_time", "user_history_item_ids", "price"]\n'
                      'impression = ["position", "item_id", "click"]\n')
    msg = fails(tmp_path / "out", log, "--schema", schema)
    assert "'price'" in msg and "request_id=" in msg and " vs " in msg


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
