"""Property tests over text inputs: convert -> explode equals what an independent reader (polars, given the
same declared types) reads from the file; and no input whatever makes the CLI print a traceback."""

from __future__ import annotations

import io
import json
import os
import tempfile

import hypothesis.strategies as st
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner
from helpers import assert_same_rows
from hypothesis import HealthCheck, given, settings

import roolog
from roolog.cli import main
from roolog.read.sources import ReadOptions

TEXT = st.text(alphabet=st.sampled_from(list('ab,"\n\r\t ;éü💡0')), max_size=8)
IDS = st.sampled_from(["0", "00", "01", "1", "001", "10", "0123", "123", "00123", "+1", " 1"])
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def logs(draw):
    """Impression rows: a text key (ids that differ only by zeros, signs, spaces), a request-level text
    value, an impression-level text with quotes, commas, line breaks and unicode (empty vs null), an int."""
    n_requests = draw(st.integers(1, 6))
    rows = {"id": [], "user": [], "note": [], "n": []}
    for _ in range(n_requests):
        request, user = draw(IDS), draw(st.one_of(st.none(), TEXT))
        for _ in range(draw(st.integers(1, 4))):
            rows["id"].append(request)
            rows["user"].append(user)
            rows["note"].append(draw(st.one_of(st.none(), TEXT)))
            rows["n"].append(draw(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1))))
    return pl.DataFrame(rows, schema={"id": pl.String, "user": pl.String, "note": pl.String, "n": pl.Int64})


DECLARED = (("id", "string"), ("user", "string"), ("note", "string"), ("n", "int64"))
ARROW = pa.schema([("id", pa.string()), ("user", pa.string()), ("note", pa.string()), ("n", pa.int64())])


def _round_trip(path: str, fmt: str, frame: pl.DataFrame, declare_key: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        declared = DECLARED if declare_key else DECLARED[1:]
        read = ReadOptions(column_types=declared, null_values=("",) if fmt != "jsonl" else ())
        roolog.convert([path], out, key=("id",), read=read, progress=False)
        roolog.explode(out, os.path.join(tmp, "back.parquet"))
        back = pq.read_table(os.path.join(tmp, "back.parquet"))
    if not declare_key:  # inferred: an integer type only if every id is written as that integer prints
        assert back.schema.field("id").type in (pa.string(), pa.int64())
        back = back.cast(ARROW)
    assert_same_rows(frame.to_arrow().cast(ARROW), back)


@SETTINGS
@given(frame=logs(), fmt=st.sampled_from(["csv", "tsv", "jsonl"]), declare_key=st.booleans())
def test_text_inputs_round_trip_as_an_independent_reader_reads_them(tmp_path, frame, fmt, declare_key):
    path = str(tmp_path / f"log.{fmt}")
    if fmt == "jsonl":
        frame.write_ndjson(path)
        independent = pl.read_ndjson(path, schema=frame.schema)
    else:
        frame.write_csv(path, separator="\t" if fmt == "tsv" else ",")
        independent = pl.read_csv(path, separator="\t" if fmt == "tsv" else ",", schema=frame.schema)
    assert independent.equals(frame, null_equal=True)  # the file says what the frame says
    _round_trip(path, fmt, independent, declare_key)


# ---- no input makes a traceback -------------------------------------------------------------------------

ARROW_TYPES = [pa.int8(), pa.int64(), pa.uint64(), pa.float32(), pa.float64(), pa.bool_(), pa.string(),
               pa.large_string(), pa.binary(), pa.date32(), pa.timestamp("ns"), pa.timestamp("ms", "UTC"),
               pa.decimal128(20, 2), pa.list_(pa.int32()), pa.struct([("a", pa.int8())]), pa.null(),
               pa.dictionary(pa.int8(), pa.string()), pa.duration("s"), pa.time64("us")]


@st.composite
def parquet_bytes(draw):
    types = draw(st.lists(st.sampled_from(ARROW_TYPES), min_size=1, max_size=4))
    rows = draw(st.integers(0, 5))
    columns = {}
    for i, t in enumerate(types):
        try:
            values = pa.array([None] * rows, t) if draw(st.booleans()) else \
                pa.array(list(range(rows)), pa.int64()).cast(t, safe=False)
        except (pa.ArrowException, TypeError):
            values = pa.nulls(rows, t)
        columns["k" if i == 0 else f"c{i}"] = values
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


CSV_TEXT = st.text(alphabet=st.sampled_from(list('k,v\n"\t01x-.é ') + ["\r"]), max_size=80)
JSONL_TEXT = st.lists(st.one_of(
    st.dictionaries(st.sampled_from(["k", "v", "w"]),
                    st.one_of(st.none(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=3),
                              st.lists(st.integers(0, 2), max_size=2)), max_size=3).map(json.dumps),
    st.text(max_size=10)), max_size=6).map("\n".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=64).map(lambda b: ("bin.parquet", b)),
                      CSV_TEXT.map(lambda t: ("log.csv", ("k,v\n" + t).encode())),
                      CSV_TEXT.map(lambda t: ("log.tsv", ("k\tv\n" + t).encode())),
                      JSONL_TEXT.map(lambda t: ("log.jsonl", t.encode())),
                      parquet_bytes().map(lambda b: ("log.parquet", b))),
       extra=st.sampled_from([[], ["--order-by", "v"], ["--column-type", "v=int64"], ["--partition-by", "v"],
                              ["--drop-null-keys"], ["--column-type", "k=string"]]))
def test_no_input_makes_a_traceback(tmp_path, data, extra):
    name, content = data
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as fh:
            fh.write(content)
        for args in (["convert", path, "-o", os.path.join(tmp, "out"), "--key", "k", "-q", *extra],
                     ["stats", path, "--key", "k", "-q"], ["infer-schema", path, "--key", "k", "-q"]):
            result = CliRunner().invoke(main, args)
            assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output, result.exception)
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                args, repr(result.exception), result.output)
            assert "Traceback" not in result.output
