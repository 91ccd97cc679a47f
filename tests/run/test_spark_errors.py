"""`convert --engine spark` with several bad input files: the same error, word for word, and the same exit code
as the local engine, which stops at the first error it meets: files are opened (schemas) before any row is
read, rows are read file after file, and scattered requests are folded after the last row. Spark reads the
files in parallel tasks and folds per shard, so the error it reports must be chosen, not met first."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# no skipping: without the spark extra or Java these tests fail, as the feature would (as in test_spark.py)
import pyspark  # noqa: F401
import pytest
from helpers import run_cli

import roolog
from roolog.errors import RoologError
from roolog.read.sources import ReadOptions

pytestmark = pytest.mark.spark

SCHEMA = 'key = ["rid"]\nrequest = ["user"]\nimpression = ["item"]\n'
NULL_KEY = "key column 'rid' is null (use --drop-null-keys to skip such rows; they are counted in the report)"


@pytest.fixture(scope="module", autouse=True)
def spark():
    """One Spark session for the module: 2 threads, so two files are read at once."""
    from roolog.run.spark import spark_session

    session = spark_session("local[2,2]")
    yield session
    session.stop()


def log(path, rid, user=None, row_group_size=None, **extra) -> str:
    """A Parquet log: key rid (None: a null key), request-level user (default: one per request), item."""
    user = user if user is not None else [f"u{r}" for r in rid]
    columns = {"rid": pa.array(rid, pa.int64()), "user": pa.array(user, pa.string()),
               "item": pa.array(np.arange(len(rid)), pa.int64())}
    pq.write_table(pa.table(columns | extra), path, row_group_size=row_group_size)
    return str(path)


def same_error(tmp_path, files, **options) -> str:
    """Convert with each engine; both must fail with the same error class, exit code and message, and leave
    no output folder behind (a failed first run). Returns the message."""
    seen = []
    for engine in ("local", "spark"):
        out = tmp_path / f"out-{engine}"
        with pytest.raises(RoologError) as err:
            roolog.convert([str(f) for f in files], str(out), progress=False, engine=engine, **options)
        seen.append((type(err.value).__name__, err.value.exit_code, str(err.value)))
        assert not out.exists(), engine
    assert seen[1] == seen[0]
    assert seen[0][1] == 1
    return seen[0][2]


@pytest.fixture
def schema(tmp_path) -> str:
    path = tmp_path / "schema.toml"
    path.write_text(SCHEMA)
    return str(path)


@pytest.fixture
def three_bad(tmp_path):
    """A good file; a null key (row 3) in the second; user varying inside request 8 in the third."""
    good = log(tmp_path / "a.parquet", [1, 1, 2, 2])
    null = log(tmp_path / "b.parquet", [3, 3, None, 4])
    varies = log(tmp_path / "c.parquet", [7, 8, 8, 9], ["u7", "x", "y", "u9"])
    return good, null, varies


def test_the_first_bad_file_in_input_order_wins(tmp_path, schema, three_bad):
    good, null, varies = three_bad
    msg = same_error(tmp_path / "1", [good, null, varies], schema_file=schema, shards=3)
    assert msg == f"{null}, row 3: {NULL_KEY}"
    msg = same_error(tmp_path / "2", [good, varies, null], schema_file=schema, shards=3)
    assert msg.startswith(f"column 'user' is declared request-level but varies inside request rid=8: 'x' vs 'y' "
                          f"({varies}, rows 1-4)")


def test_the_cli_prints_the_same_line_with_the_same_exit_code(tmp_path, schema, three_bad):
    results = []
    for engine in ("local", "spark"):
        out = tmp_path / engine
        proc = run_cli("convert", *three_bad, "-o", str(out), "--schema", schema, "--shards", "2", "--engine", engine,
                       *(["--spark-master", "local[2]"] if engine == "spark" else []), "-q")
        results.append((proc.returncode, proc.stdout, proc.stderr))
        assert not out.exists()
    assert results[1] == results[0]
    assert results[0] == (1, "", f"roolog: error: {three_bad[1]}, row 3: {NULL_KEY}\n")


def test_the_earliest_error_is_in_the_task_that_finishes_last(tmp_path):
    # the first file is large and bad at its very last row; the second is tiny and bad at its first: Spark
    # meets the second file's error first, the local engine the first file's
    rid = np.repeat(np.arange(100_000), 3).astype(object)
    rid[-1] = None
    big = log(tmp_path / "big.parquet", list(rid), [f"u{r}" for r in range(len(rid))])
    small = log(tmp_path / "small.parquet", [None, 5])
    msg = same_error(tmp_path, [big, small], key=("rid",), shards=2)
    assert msg == f"{big}, row 300000: {NULL_KEY}"


def test_a_fold_time_error_comes_after_a_read_error_in_a_later_file(tmp_path, schema):
    # request 5 is scattered over two files, its user differing between the pieces: each file alone is
    # fine, the conflict shows when the shard's pieces are folded - after every file is read
    first = log(tmp_path / "a.parquet", [5, 1, 1], ["x", "u1", "u1"])
    second = log(tmp_path / "b.parquet", [2, 5], ["u2", "y"])
    null = log(tmp_path / "c.parquet", [7, None])
    msg = same_error(tmp_path / "fold", [first, second], schema_file=schema, shards=2)
    assert msg.startswith("column 'user' is declared request-level but varies inside request rid=5: 'x' vs 'y' "
                          "(spill partition ")
    msg = same_error(tmp_path / "read", [first, second, null], schema_file=schema, shards=2)
    assert msg == f"{null}, row 2: {NULL_KEY}"


def test_a_corrupt_page_is_read_before_a_later_null_key(tmp_path):
    noise = {"noise": pa.array(np.random.default_rng(0).integers(0, 2**62, 100_000))}
    corrupt = log(tmp_path / "corrupt.parquet", list(np.repeat(np.arange(20_000), 5)), row_group_size=20_000,
                  **noise)
    offset = pq.ParquetFile(corrupt).metadata.row_group(3).column(3).data_page_offset
    with open(corrupt, "rb") as fh:
        data = bytearray(fh.read())
    for i in range(offset + 40, offset + 400):  # a page header garbled: the footer (the schema) still reads
        data[i] ^= 0x5A
    with open(corrupt, "wb") as fh:
        fh.write(data)
    good = log(tmp_path / "a.parquet", [1, 1], noise=pa.array([1, 2]))
    null = log(tmp_path / "c.parquet", [9, None], noise=pa.array([1, 2]))
    msg = same_error(tmp_path, [good, corrupt, null], key=("rid",), shards=2)
    assert msg.startswith(f"{corrupt}: ") and NULL_KEY not in msg


def test_an_unreadable_later_file_is_found_before_any_row_is_read(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not a parquet file" * 10)
    null = log(tmp_path / "b.parquet", [3, None])
    msg = same_error(tmp_path, [log(tmp_path / "a.parquet", [1]), null, junk], key=("rid",))
    assert msg.startswith(f"{junk}: not a valid Parquet file")


def test_a_malformed_csv_line_deep_in_a_file_then_a_null_key(tmp_path):
    good, deep, null = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    good.write_text("rid,user,item\n1,a,1\n")
    deep.write_text("rid,user,item\n" + "".join(f"{i // 3},u{i // 3},{i}\n" for i in range(30_000)) + "7,x,1,extra\n")
    null.write_text("rid,user,item\n,a,1\n")
    # small read blocks: the bad line is met while a task reads the file, not when the driver opens it
    msg = same_error(tmp_path, [good, deep, null], key=("rid",), shards=2, read=ReadOptions(batch_bytes=64 << 10))
    assert msg.startswith(f"{deep}: line 30002 has 4 fields, expected 3")


def test_a_request_across_a_file_boundary(tmp_path, schema):
    """A request that runs on from one file into the next is two pieces folded per shard in both engines (the
    local stream is not carried across files): the same conflict, met at the same step, the same message."""
    first = log(tmp_path / "a.parquet", [1, 1, 5, 5], ["u1", "u1", "x", "x"])
    second = log(tmp_path / "b.parquet", [5, 6], ["y", "u6"])
    null = log(tmp_path / "c.parquet", [7, None])
    same_error(tmp_path / "two", [first, second], schema_file=schema, shards=2)
    same_error(tmp_path / "three", [first, second, null], schema_file=schema, shards=2)


def test_columns_demoted_across_a_file_boundary_are_listed_in_the_same_order(tmp_path):
    """--on-conflict demote: `user` varies only between the pieces of request 5 in two files, `dev` inside
    request 6 in the second file. Both engines fold request 5's pieces after reading, so both meet `dev` first."""
    schema = tmp_path / "schema.toml"
    schema.write_text('key = ["rid"]\nrequest = ["user", "dev"]\nimpression = ["item"]\n')
    first = log(tmp_path / "a.parquet", [2, 2, 5, 5], ["u2", "u2", "x", "x"], dev=pa.array(["p", "p", "d", "d"]))
    second = log(tmp_path / "b.parquet", [5, 6, 6], ["y", "u6", "u6"], dev=pa.array(["d", "e", "f"]))
    demoted = []
    for engine in ("local", "spark"):
        report = roolog.convert([first, second], str(tmp_path / engine), schema_file=str(schema), shards=2,
                                on_conflict="demote", progress=False, engine=engine)
        demoted.append(report["demoted"])
        manifest = roolog.read_manifest(str(tmp_path / engine))
        assert manifest.schema.demoted == report["demoted"]
    assert demoted[0] == demoted[1] == ["dev", "user"]
