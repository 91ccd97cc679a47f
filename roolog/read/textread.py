"""CSV, TSV and JSON-lines files read as what they say: declared types, no texts merged, errors that name
the place.

Types. A declared type (`--column-type COL=TYPE`, or the schema file's [types]) is read as declared.
Otherwise pyarrow infers one from the file's first block (`batch_bytes`), with two rules on top so that
distinct texts never become one value:
- an integer column is read as text and every value checked to be written the one way Arrow prints an
  integer (no leading zero, no '+', no space, no '-0'), then converted. If a text of the first block is not
  (`0123`), the column is read as string; if a later one is, the run fails naming column, file, line and
  value, with the `--column-type COL=string` fix;
- a column pyarrow would make double because an integer text is too big for int64 is read exactly:
  uint64 when every value fits it, else decimal128(38, 0) or decimal256(76, 0), else (or when the column
  also holds fractions, '+5' or ' 5') string - never the nearest double.
JSON values keep their JSON types (a JSON string "0123" is a string); JSON integers too big for int64 get the
same exact type (a column mixing them with fractions is an error naming the fix), and one that appears after
the first block in an int64 column fails naming line, column and the type that holds it.

The end of the file. A CSV/TSV whose last quoted value is never closed would hand the rest of the file to
that one value: the run fails naming the line where the quote opened.

Quoted line breaks. The first block is parsed quote-aware; when a quoted value there holds a line break
(or with `--newlines-in-values`), the whole file is split into blocks quote-aware too (pyarrow's
`newlines_in_values`: slower, so only then). Otherwise pyarrow splits at every line break, and a quoted
value with a line break after the first block is read right only when no split falls inside it: one that
does leaves a value ending in the line break (its rest may read as a whole row), so a value ending in a
line break is an error naming --newlines-in-values, never rows made up.

One parse of the first block. The plan reads the first block (`batch_bytes`) once, cuts it where pyarrow's
streaming reader would (after its last line break; outside quotes when splitting quote-aware) and parses it
as one chunk: pyarrow infers the types over exactly those rows, the number columns are parsed again as
texts for the checks above, and the file read first keeps both (`Head`), so its read starts after the
block with the header's names instead of parsing it a third time.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

from ..errors import RoologError, UsageProblem, cut, shown
from .arrow_types import parse_type
from .inputs import InputFile, ReadOptions, open_input

CANONICAL_INT = r"^(0|-?[1-9][0-9]*)$"  # how Arrow and Python print an integer
INTEGER_LOOKING = r"^\s*[+-]?[0-9]+\s*$"
LONG_INTEGER = r"^\s*[+-]?[0-9]{19,}\s*$"  # an integer text that may not fit int64
_JSON_LONG_INTEGER = re.compile(rb"[:\[,]\s*-?[0-9]{19,}\s*[,\]}]")  # a JSON number that may not fit int64
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")  # (19 digits in a row found by one search)
_JSON_NUMBER_ERROR = re.compile(r"Failed to convert JSON to ([^,:]+)(?:, couldn't parse)?:\s*(-?[0-9]+)\b")
_CSV_ERROR = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?(.*?): invalid value '(.*)'\s*$", re.S)
_JSON_TYPE_ERROR = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)")


@dataclass(frozen=True)
class Head:
    """A CSV/TSV file's first block as planning parsed it, kept so that the read does not parse it again:
    its rows (checked integer columns still their texts) and how many bytes of the (decompressed) stream it
    took, header included. The read goes on from there with the header's names."""

    table: pa.Table
    size: int


@dataclass(frozen=True)
class TextPlan:
    """How one text file is read: its columns and types, which integer columns are checked text by text,
    whether its blocks are split quote-aware, and (when asked for) its first block, parsed."""

    schema: pa.Schema
    checked: frozenset[str] = frozenset()
    newlines: bool = False
    head: Head | None = field(default=None, compare=False, repr=False)


def declared_types(opts: ReadOptions) -> dict[str, pa.DataType]:
    return {name: parse_type(text) for name, text in opts.column_types}


def open_stream(f: InputFile) -> pa.NativeFile:
    return pa.input_stream(open_input(f), compression=f.compression)


def null_texts(opts: ReadOptions) -> list[str]:
    """The texts that are null in a non-string column: --null-value's, or pyarrow's defaults."""
    return list(opts.null_values) or list(pcsv.ConvertOptions().null_values)


def csv_options(f: InputFile, opts: ReadOptions, types: dict[str, pa.DataType] | None = None,
                newlines: bool = False, on_invalid=None, use_threads: bool = True):
    delimiter = opts.delimiter or ("\t" if f.format == "tsv" else ",")
    if len(delimiter) != 1:
        raise UsageProblem(f"--delimiter must be one character, not {delimiter!r}")
    read = pcsv.ReadOptions(block_size=opts.batch_bytes, use_threads=use_threads)
    parse = pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=newlines)
    convert_kw: dict = {"column_types": types} if types else {}
    convert_kw["quoted_strings_can_be_null"] = False  # a quoted value is text, never null
    if opts.null_values:
        convert_kw.update(null_values=list(opts.null_values), strings_can_be_null=True)
    return read, parse, pcsv.ConvertOptions(**convert_kw)


class InvalidRows:
    """pyarrow's handler for malformed CSV rows: remembers the first, so the error can name it."""

    def __init__(self) -> None:
        self.first: pcsv.InvalidRow | None = None

    def __call__(self, row: pcsv.InvalidRow) -> str:
        self.first = self.first or row
        return "error"

    def describe(self, f: InputFile, opts: ReadOptions, newlines: bool) -> str:
        row = self.first
        if row is None:
            return ""
        if row.number is None:  # parallel parsing does not count lines; find it again serially
            serial = InvalidRows()
            read, parse, convert = csv_options(f, opts, newlines=newlines, on_invalid=serial, use_threads=False)
            try:
                pcsv.open_csv(open_stream(f), read, parse, convert).read_all()
            except pa.ArrowException:
                row = serial.first or row
        where = f"line {row.number}" if row.number is not None else "a row"
        hint = "" if newlines else " (if a quoted value holds a line break, pass --newlines-in-values)"
        return f"{where} has {row.actual_columns} fields, expected {row.expected_columns}: {shown(row.text)}{hint}"


def _quiet_undecodable_rows(hook):
    """pyarrow decodes a malformed row's text before it calls InvalidRows; bytes that are not UTF-8 make that
    fail outside any caller, and Python prints it as an ignored exception (a traceback on stderr). The row
    is still an error (pyarrow's one line names it); only that print is left out."""
    def quiet(unraisable) -> None:
        if isinstance(unraisable.object, InvalidRows) and isinstance(unraisable.exc_value, UnicodeDecodeError):
            return
        hook(unraisable)
    return quiet


sys.unraisablehook = _quiet_undecodable_rows(sys.unraisablehook)


# ---- planning: the first block ------------------------------------------------------------------------

def plan_text(f: InputFile, opts: ReadOptions, on_invalid=None, keep_head: bool = False) -> TextPlan:
    """The plan of a CSV, TSV or JSON-lines file, from its first block (`keep_head`: with that block parsed,
    for the read to start from)."""
    declared = declared_types(opts)
    data = _first_bytes(f, opts)
    if f.format == "jsonl":
        return _json_plan(f, opts, declared, data, keep_head)
    breaks, inside = _line_breaks(data)
    newlines = opts.newlines_in_values or bool(inside.any())
    cut = _block_end(data, breaks, inside, newlines, opts)
    if cut is None:
        raise RoologError(row_too_long(f, opts))
    # the block as pyarrow's streaming reader cuts it (at its last row end), parsed and inferred as one chunk
    block = pa.py_buffer(data)[:cut]
    # the number columns' texts parsed on the other core meanwhile, for the columns the block's first rows
    # say are numbers (any other the inference finds is parsed after it)
    guessed = _number_columns(block, _prefix_end(breaks, inside, newlines, cut), f, opts, declared, newlines)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="roolog-plan") as pool:
        early = pool.submit(_as_texts, block, f, opts, guessed, newlines, on_invalid) if guessed else None
        typed = _parse_block(block, f, opts, declared, newlines, on_invalid)
        ready = early.result() if early is not None else None

    def texts_of(numbers: list[str]) -> pa.Table:
        late = [n for n in numbers if n not in guessed]
        parsed = [t for t in (ready, _as_texts(block, f, opts, late, newlines, on_invalid) if late else None)
                  if t is not None]
        return pa.table({n: next(t.column(n) for t in parsed if n in t.column_names) for n in numbers})

    plan, texts = _typed_plan(f, opts, declared, typed.schema, newlines, texts_of)
    if not keep_head:
        return plan
    as_texts = plan.checked | {n for n in plan.schema.names  # (checked, or read as string after all)
                               if not plan.schema.field(n).type.equals(typed.schema.field(n).type)}
    columns = [texts.column(n) if texts is not None and n in as_texts else typed.column(n)
               for n in plan.schema.names]
    table = pa.Table.from_arrays(columns, names=plan.schema.names).combine_chunks()
    return replace(plan, head=Head(table, cut))


def row_too_long(f: InputFile, opts: ReadOptions) -> str:
    """The error for a row (or header) longer than the read block: pyarrow parses whole rows per block."""
    return (f"{f.path}: a row or the header is longer than {opts.batch_bytes:,} bytes (no line ends within "
            "them), the most a row may hold; is it a text log with one row per line?")


def _first_bytes(f: InputFile, opts: ReadOptions) -> bytes:
    """The file's first block of (decompressed) bytes, `batch_bytes` of them or the whole file."""
    with open_stream(f) as stream:
        return stream.read(opts.batch_bytes)


def _parse_block(block: pa.Buffer, f: InputFile, opts: ReadOptions, types: dict[str, pa.DataType],
                 newlines: bool, on_invalid=None, columns: list[str] | None = None) -> pa.Table:
    """`block` (whole rows, the header first) parsed as one chunk on this thread, as pyarrow's streaming
    reader parses a first block that size: the same rows, the same inference (`columns` only, when given)."""
    read, parse, convert = csv_options(f, opts, types, newlines, on_invalid, use_threads=False)
    read.block_size = len(block) + 1
    if columns is not None:
        convert.include_columns = columns
    return pcsv.read_csv(pa.BufferReader(block), read, parse, convert)


def _as_texts(block: pa.Buffer, f: InputFile, opts: ReadOptions, names: list[str], newlines: bool,
              on_invalid) -> pa.Table:
    """The columns `names` of the block, as texts."""
    return _parse_block(block, f, opts, dict.fromkeys(names, pa.string()), newlines, on_invalid, names)


PREFIX_BYTES = 1 << 20  # the first rows of the first block, whose types say which columns to parse as texts early


def _prefix_end(breaks: np.ndarray, inside: np.ndarray, newlines: bool, cut: int) -> int:
    """The end of the block's first rows up to about PREFIX_BYTES (a line break outside quotes)."""
    ends = breaks[~inside] if newlines else breaks
    ends = ends[ends < min(cut, PREFIX_BYTES)]
    return int(ends[-1]) + 1 if len(ends) else cut


def _number_columns(block: pa.Buffer, end: int, f: InputFile, opts: ReadOptions, declared: dict[str, pa.DataType],
                    newlines: bool) -> list[str]:
    """The undeclared columns pyarrow infers as numbers from the block's first `end` bytes (a guess: the
    whole block decides)."""
    try:
        schema = _parse_block(block[:end], f, opts, declared, newlines).schema
    except pa.ArrowException:
        return []  # (the block's own parse says what is wrong)
    return [fl.name for fl in schema if fl.name not in declared
            and (pa.types.is_integer(fl.type) or pa.types.is_floating(fl.type))]


def _line_breaks(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The offsets of the line breaks (\n or \r) in `data`, and per break whether it lies inside quotes,
    after an odd number of quote characters (a doubled "" inside a value counts two: the parity holds)."""
    head = np.frombuffer(data, dtype=np.uint8)
    ends = head == ord("\n")
    if b"\r" in data:
        ends |= head == ord("\r")
    breaks = np.flatnonzero(ends)
    if b'"' not in data:
        return breaks, np.zeros(len(breaks), bool)
    quotes = np.flatnonzero(head == ord('"'))
    return breaks, (np.searchsorted(quotes, breaks) % 2).astype(bool)  # quotes before each: odd is inside


def _block_end(data: bytes, breaks: np.ndarray, inside: np.ndarray, newlines: bool, opts: ReadOptions) -> int | None:
    """Where pyarrow's reader ends the first block, `data`: all of it when it is the whole file, else after
    its last line break (outside quotes, when splitting quote-aware); None when there is no such break."""
    if len(data) < opts.batch_bytes:
        return len(data)
    if newlines:
        breaks = breaks[~inside]
    return int(breaks[-1]) + 1 if len(breaks) else None


def _typed_plan(f: InputFile, opts: ReadOptions, declared: dict[str, pa.DataType], inferred: pa.Schema,
                newlines: bool, texts_of) -> tuple[TextPlan, pa.Table | None]:
    """The plan from pyarrow's inferred types: integer columns checked, too-big integers exact (see the
    module's docstring); texts_of(names) parses those columns of the first block as texts (returned too)."""
    twice = sorted({n for n in inferred.names if inferred.names.count(n) > 1})
    if twice:
        raise RoologError(f"{f.path}: column name(s) {twice} appear more than once in the header")
    undecodable = [fl.name for fl in inferred if fl.name not in declared and pa.types.is_binary(fl.type)]
    if undecodable:  # pyarrow would read the column as bytes, silently: say so, and how to keep them
        raise RoologError(_not_utf8(f, undecodable[0]))
    numbers = [fl.name for fl in inferred if fl.name not in declared
               and (pa.types.is_integer(fl.type) or pa.types.is_floating(fl.type))]
    texts = texts_of(numbers) if numbers else None
    fields, checked = [], set()
    for column in inferred:
        t = column.type
        if column.name in numbers and texts is not None:
            values = texts.column(column.name)
            if pa.types.is_integer(t) and round_trips(values, pa.int64()):  # the common case: no null texts
                checked.add(column.name)
                fields.append(pa.field(column.name, t))
                continue
            present = values.filter(pc.invert(pc.is_in(values, pa.array(null_texts(opts)))).fill_null(False))
            if pa.types.is_integer(t):
                if round_trips(present, pa.int64()):
                    checked.add(column.name)
                else:
                    t = pa.string()  # 0123 and 123 are two texts: kept apart
            elif len(present) and pc.max(pc.binary_length(present)).as_py() >= 19 \
                    and pc.any(pc.match_substring_regex(present, LONG_INTEGER)).as_py():
                exact = exact_integer_type(present)  # integers too big for int64: exactly, never a double
                if exact is not None:
                    t = exact
                    checked.add(column.name)
                else:
                    t = pa.string()  # their digits (with fractions, +5 or ' 5' beside them)
            elif len(present) and re.match(INTEGER_LOOKING, present[0].as_py()) \
                    and pc.all(pc.match_substring_regex(present, INTEGER_LOOKING)).as_py():
                t = pa.string()  # +5, ' 5': their texts
        fields.append(pa.field(column.name, t))
    return TextPlan(pa.schema(fields), frozenset(checked), bool(newlines)), texts


def _json_plan(f: InputFile, opts: ReadOptions, declared: dict[str, pa.DataType], data: bytes,
               keep_head: bool) -> TextPlan:
    """The fields of a JSON-lines file in the order they first appear, typed as declared or as pyarrow
    infers them from the first block, `data` up to its last line break, as pyarrow's streaming reader cuts
    it (pyarrow puts declared fields first: the file's order is kept here); `keep_head`: with that block."""
    cut = _json_block_end(data, opts)
    block = pa.py_buffer(data)[:cut] if cut else None  # None: no line ends in it (pyarrow's reader says why)
    head = data[:cut] if cut else data

    def first_block() -> pa.NativeFile:
        return pa.BufferReader(block) if block is not None else open_stream(f)

    read = pjson.ReadOptions(block_size=cut + 1 if block is not None else opts.batch_bytes, use_threads=False)
    with pjson.open_json(first_block(), read, pjson.ParseOptions(
            explicit_schema=pa.schema(declared.items()) if declared else None)) as r:
        typed = r.schema
        rows = r.read_all() if keep_head and block is not None else None
    typed = _json_exact_integers(f, head, typed, declared)
    if declared:
        try:
            with pjson.open_json(first_block(), read) as r:
                order = r.schema.names
        except pa.ArrowInvalid:  # the undeclared reading fails (a declared field's values mix kinds)
            order = typed.names
        typed = pa.schema([typed.field(n) for n in order if n in typed.names]
                          + [typed.field(n) for n in typed.names if n not in order])
    return TextPlan(typed, head=Head(rows.select(typed.names), cut) if rows is not None else None)


def _json_block_end(data: bytes, opts: ReadOptions) -> int:
    """Where pyarrow's JSON reader ends the first block, `data` (0: no line ends in it)."""
    return len(data) if len(data) < opts.batch_bytes else data.rfind(b"\n") + 1


def _json_exact_integers(f: InputFile, head: bytes, typed: pa.Schema, declared: dict[str, pa.DataType]) -> pa.Schema:
    """`typed` with each double column that pyarrow inferred for integers too big for int64 given their
    exact type (uint64, else decimal); only looked at when the first block, `head`, holds such a number."""
    doubles = [fl.name for fl in typed if pa.types.is_floating(fl.type) and fl.name not in declared]
    if not doubles:
        return typed
    if b"0" * 19 not in head.translate(_DIGITS_AS_ZERO) or not _JSON_LONG_INTEGER.search(head):
        return typed
    read = pjson.ReadOptions(block_size=len(head) + 1)
    for name in doubles:
        for wide in (pa.decimal128(38, 0), pa.decimal256(76, 0)):
            try:
                with pjson.open_json(pa.BufferReader(head), read, pjson.ParseOptions(
                        explicit_schema=pa.schema([(name, wide)]))) as r:
                    values = r.read_next_batch().column(name)
                break
            except (pa.ArrowInvalid, StopIteration):
                values = None
        if values is None:
            if _long_integer_in(head, name):
                raise RoologError(f"{f.path}: column {name!r} holds integers too big for int64 beside fractions, "
                                  f"which a double would round; {_fix(name, 'decimal128(38, 6)')}, with a scale "
                                  "that holds its fractions")
            continue
        texts = values.cast(pa.string())
        exact = exact_integer_type(texts.filter(texts.is_valid()))
        if exact is not None:
            typed = typed.set(typed.get_field_index(name), pa.field(name, exact))
    return typed


def _long_integer_in(head: bytes, name: str) -> bool:
    """Whether a line of `head` gives field `name` an integer that int64 cannot hold."""
    for line in head.split(b"\n"):
        if _JSON_LONG_INTEGER.search(line):
            try:
                value = json.loads(line).get(name)
            except (ValueError, AttributeError):
                continue
            if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
                return True
    return False


def round_trips(texts: pa.Array, t: pa.DataType) -> bool:
    """Whether every text is an integer exactly as Arrow prints it back (no 0123, ' 5', -0, 0x10)."""
    try:
        pc.cast(texts, t)
    except pa.ArrowInvalid:
        return False
    return bool(printed_as_is(texts).all())


def exact_integer_type(texts: pa.Array) -> pa.DataType | None:
    """The narrowest exact type of integer texts that int64 cannot hold, each written as Arrow prints an
    integer: uint64 when all fit it, else decimal128(38, 0), else decimal256(76, 0); None when a text is not
    such an integer (or has more than 76 digits)."""
    if not len(texts) or not pc.all(pc.match_substring_regex(texts, CANONICAL_INT)).as_py():
        return None
    digits = pc.max(pc.utf8_length(pc.utf8_ltrim(texts, "-"))).as_py()
    if not pc.any(pc.starts_with(texts, "-")).as_py():
        try:
            pc.cast(texts, pa.uint64())
            return pa.uint64()
        except pa.ArrowInvalid:
            pass
    return pa.decimal128(38, 0) if digits <= 38 else pa.decimal256(76, 0) if digits <= 76 else None


def integer_type_for(text: str) -> str:
    """The type to declare for an integer text that does not fit the column's inferred type."""
    exact = exact_integer_type(pa.array([text]))
    return str(exact) if exact is not None else "string"


# ---- reading ------------------------------------------------------------------------------------------

READ_BLOCK_BYTES = 2 << 20  # the blocks pyarrow parses after the first, several at once (32 MB ones: one by one)


def read_block_bytes(opts: ReadOptions) -> int:
    """The size of the blocks a text file is parsed in after its first: the types are all given by then,
    so this decides only how many of pyarrow's threads have work (measured on a 187 MB CSV, 2 cores:
    1.95 s in 32 MB blocks, 1.0 s in 1-2 MB ones)."""
    return min(opts.batch_bytes, READ_BLOCK_BYTES)


def csv_batches(f: InputFile, opts: ReadOptions, plan: TextPlan, schema: pa.Schema, stream,
                on_invalid) -> Iterator[pa.RecordBatch]:
    """The file's batches in `schema`'s types (the unified ones); checked integer columns converted here. The
    first block is the plan's, when it has it in these types: the read goes on after it."""
    types = {n: (pa.string() if n in plan.checked else schema.field(n).type) for n in schema.names}
    read, parse, convert = csv_options(f, opts, types, plan.newlines, on_invalid)
    read.block_size = read_block_bytes(opts)
    nulls = pa.array(null_texts(opts))
    rows, last = 0, None
    tail = _Tail(stream)

    def again() -> Iterator[pa.RecordBatch]:  # the whole file in first-block-sized blocks (a row over 2 MB)
        nonlocal tail
        tail = _Tail(open_stream(f))
        return pcsv.open_csv(tail, *csv_options(f, opts, types, plan.newlines, on_invalid))
    head = plan.head if plan.head is not None and plan.head.table.schema.equals(pa.schema(types.items())) \
        else _csv_head(f, opts, plan, types, on_invalid)
    if head is not None:
        _skip(tail, head.size)
        read.column_names = schema.names  # the header was in the head
        if on_invalid is not None:  # a line number pyarrow counts after the head is not the file's: found again
            parse.invalid_row_handler = lambda row: on_invalid(row._replace(number=None))
        blocks = itertools.chain(head.table.to_batches(),
                                 _rest(lambda: pcsv.open_csv(tail, read, parse, convert), "Empty CSV file"))
    else:
        blocks = pcsv.open_csv(tail, read, parse, convert)
    for batch in _read_again_if_a_row_is_long(blocks, again):
        if not plan.newlines:
            _not_cut(f, batch)
        if plan.checked:
            batch = _convert_checked(batch, plan, schema, nulls, f, rows)
        rows += batch.num_rows
        last = batch if batch.num_rows else last
        yield batch
    if last is not None:
        _closed_at_end(f, opts, parse.delimiter, last, tail)


def json_batches(f: InputFile, opts: ReadOptions, plan: TextPlan, schema: pa.Schema,
                 stream) -> Iterator[pa.RecordBatch]:
    """A JSON-lines file's batches in `schema`'s types (the unified ones), a field not in it an error. The
    first block is the plan's, when it has it in these types: the read goes on after it."""
    read = pjson.ReadOptions(block_size=read_block_bytes(opts))
    parse = pjson.ParseOptions(explicit_schema=schema, newlines_in_values=False, unexpected_field_behavior="error")
    head = plan.head if plan.head is not None and plan.head.table.schema.equals(schema) \
        else _json_head(f, opts, parse)
    if head is None:
        blocks: Iterator[pa.RecordBatch] = iter(pjson.open_json(stream, read, parse))
    else:
        _skip(stream, head.size)
        blocks = itertools.chain(head.table.to_batches(),
                                 _rest(lambda: pjson.open_json(stream, read, parse), "Empty JSON stream"))
    yield from _read_again_if_a_row_is_long(blocks, lambda: pjson.open_json(
        open_stream(f), pjson.ReadOptions(block_size=opts.batch_bytes), parse))


def _read_again_if_a_row_is_long(blocks: Iterator[pa.RecordBatch],
                                 again) -> Iterator[pa.RecordBatch]:
    """`blocks`; when one holds a row longer than the READ_BLOCK_BYTES blocks (pyarrow: "straddles two
    block boundaries"), the rest from again(), a read of the whole file in first-block-sized blocks, past
    the rows given already: a row as long as the first block allows reads wherever it is (rare: a slower
    second pass)."""
    given = 0
    try:
        for batch in blocks:
            given += batch.num_rows
            yield batch
        return
    except pa.ArrowInvalid as err:
        if "straddl" not in str(err):
            raise
    for batch in again():
        if given >= batch.num_rows:
            given -= batch.num_rows
            continue
        yield batch.slice(given)
        given = 0


def _csv_head(f: InputFile, opts: ReadOptions, plan: TextPlan, types: dict[str, pa.DataType],
              on_invalid) -> Head | None:
    """The first block parsed in these types, when the plan did not keep it (a file after the first, a Spark
    task): every read cuts a file alike, one first block and then READ_BLOCK_BYTES ones, on both engines."""
    data = _first_bytes(f, opts)
    cut = _block_end(data, *_line_breaks(data), plan.newlines, opts)
    if cut is None:
        return None
    block = pa.py_buffer(data)[:cut]
    return Head(_parse_block(block, f, opts, types, plan.newlines, on_invalid).combine_chunks(), cut)


def _json_head(f: InputFile, opts: ReadOptions, parse: pjson.ParseOptions) -> Head | None:
    """A JSON-lines file's first block parsed with the read's options (see _csv_head)."""
    data = _first_bytes(f, opts)
    cut = _json_block_end(data, opts)
    if not cut:
        return None
    read = pjson.ReadOptions(block_size=cut + 1, use_threads=False)
    return Head(pjson.read_json(pa.BufferReader(pa.py_buffer(data)[:cut]), read, parse).combine_chunks(), cut)


def _skip(stream, size: int) -> None:
    """Read past the first `size` bytes of `stream` (a first block parsed already)."""
    skipped = 0
    while skipped < size and (chunk := stream.read(min(8 << 20, size - skipped))):
        skipped += len(chunk)


def _rest(open_reader, empty: str) -> Iterator[pa.RecordBatch]:
    """The batches after the first block (none when nothing but line breaks follows it: pyarrow's reader
    refuses that with the message `empty`)."""
    try:
        reader = open_reader()
    except pa.ArrowInvalid as err:
        if str(err).startswith(empty):
            return
        raise
    yield from reader


class _Tail:
    """A stream that keeps the last bytes read through it (how the file ends) and counts them all."""

    KEEP = 1 << 20

    def __init__(self, stream) -> None:
        self.stream, self.end, self.read_bytes = stream, b"", 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.read_bytes += len(chunk)
        self.end = (self.end + chunk)[-self.KEEP:] if len(chunk) < self.KEEP else chunk[-self.KEEP:]
        return chunk

    @property
    def closed(self) -> bool:
        return self.stream.closed

    def close(self) -> None:
        self.stream.close()


def _not_cut(f: InputFile, batch: pa.RecordBatch) -> None:
    """Without --newlines-in-values pyarrow splits the file into blocks at line breaks; a quoted value that
    a split cut through ends, in its batch, with that line break (and the rest of it begins a row that may
    look whole). Such a value is an error, not rows merged or made up: quote-aware splitting reads it."""
    for col in batch.columns:
        if pa.types.is_string(col.type) and col.null_count < len(col):
            data = col.buffers()[2]
            text = data.to_pybytes() if data is not None else b""  # (a copy, then memchr: 10x numpy's compare)
            if b"\n" not in text and b"\r" not in text:
                continue  # the common case: no value holds a line break
            if pc.any(pc.match_substring_regex(col, "[\r\n]$")).as_py():
                raise RoologError(f"{f.path}: a quoted value after the first block holds a line break that the "
                                  "line-by-line split cut through; pass --newlines-in-values to split the file "
                                  "quote-aware")


def _closed_at_end(f: InputFile, opts: ReadOptions, delimiter: str, last: pa.RecordBatch, tail: _Tail) -> None:
    """Fail when the file ends inside a quoted value: pyarrow then hands everything after the opening quote to
    the last row's last value, so that value, quoted back, is what the file ends with, and the opening
    quote follows a delimiter (or starts the line, in a one-column file)."""
    col = last.column(last.num_columns - 1)
    value = col[len(col) - 1].as_py()
    if not isinstance(value, str):
        return
    opened = b'"' + value.replace('"', '""').encode()
    if len(opened) + 1 > len(tail.end) and len(tail.end) < tail.read_bytes:
        return  # a last value longer than the tail kept: pyarrow's own block limit refuses such files
    if not tail.end.endswith(opened):
        return
    before = tail.end[-len(opened) - 1:-len(opened)]
    starts_line = before in (b"", b"\n", b"\r")
    if not (before == delimiter.encode() if last.num_columns > 1 else starts_line):
        return
    if last.num_columns == 1 and not value.strip("\r\n"):
        return  # '"\n"' closed or a lone '"' opened at the end: the same bytes, told apart only from the start
    line = _line_at(f, tail.read_bytes - len(opened))
    raise RoologError(f"{f.path}, line {line:,}: a quoted value opened here is never closed (the file ends inside "
                      "it); close the quote, or fix the row that opens it")


def _line_at(f: InputFile, offset: int) -> int:
    """The line (1-based) that byte `offset` of the file's text is on."""
    breaks, seen = 0, 0
    with open_stream(f) as stream:
        while seen < offset and (chunk := stream.read(min(8 << 20, offset - seen))):
            breaks += chunk.count(b"\n")
            seen += len(chunk)
    return breaks + 1


def _convert_checked(batch: pa.RecordBatch, plan: TextPlan, schema: pa.Schema, nulls: pa.Array, f: InputFile,
                     first_row: int) -> pa.RecordBatch:
    columns = []
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if name in plan.checked:
            col = _checked_integers(col, schema.field(name).type, nulls, lambda text, row, why, fix, name=name:
                                    RoologError(_late_value(f, plan, name, text, first_row + row, why, fix)))
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _checked_integers(col: pa.Array, target: pa.DataType, nulls: pa.Array, error) -> pa.Array:
    """Integer texts as `target`, each checked to be written the one way Arrow prints it; error(text, row,
    why, fix type) makes the exception for the first that is not, or does not fit."""
    wide = not pa.types.is_signed_integer(target)  # uint64 or decimal: cast straight, the text checked whole
    via = target if wide else pa.int64()
    try:  # the common case: no null texts, every text an integer
        values, ints = col, col.cast(via)
    except pa.ArrowInvalid:
        is_null = pc.or_kleene(col.is_null(), pc.is_in(col, nulls))
        values = pc.if_else(is_null, pa.scalar(None, pa.string()), col)
        try:
            ints = values.cast(via)
        except pa.ArrowInvalid:
            ints = None
    if ints is None or wide:
        bad = pc.invert(pc.match_substring_regex(values, CANONICAL_INT)).fill_null(False)
    else:
        bad = pa.array(~printed_as_is(values))
    first_bad = pc.index(bad, True).as_py()
    if first_bad >= 0:
        text = col[first_bad].as_py()
        why = (f"is an integer written another way than {target} prints it, so it would become another "
               "text's number" if re.fullmatch(INTEGER_LOOKING[1:-1], text) else f"is not {target}")
        raise error(text, first_bad, why, "string")
    try:
        if ints is None:
            raise pa.ArrowInvalid("an integer out of range")
        return ints if wide else ints.cast(target)
    except pa.ArrowInvalid:
        row = _first_uncastable(values, target)
        text = values[row].as_py()
        raise error(text, row, f"does not fit {target}", integer_type_for(text)) from None


def printed_as_is(texts: pa.Array) -> np.ndarray:
    """Per row: whether a text that Arrow's cast read as an integer is exactly how that integer prints
    (nulls count as yes). The cast takes digits with an optional '-', leading zeros and a 0x prefix, so the
    texts it takes that print otherwise are those starting with '0' (but '0' itself) or '-0'."""
    zero_led = pc.and_(pc.starts_with(texts, "0"), pc.greater(pc.binary_length(texts), 1))
    other = pc.or_(zero_led, pc.starts_with(texts, "-0")).fill_null(False)
    return ~other.to_numpy(zero_copy_only=False)


def _first_uncastable(values: pa.Array, t: pa.DataType) -> int:
    """The first canonical integer text that does not fit `t` (only long texts can overflow)."""
    long_ones = pc.indices_nonzero(pc.greater(pc.utf8_length(values), 2).fill_null(False)).to_pylist()
    for i in long_ones:
        try:
            values.slice(i, 1).cast(t if not pa.types.is_signed_integer(t) else pa.int64()).cast(t)
        except pa.ArrowInvalid:
            return i
    return 0


def _where(plan: TextPlan, row: int) -> str:
    """Line (1 = header) of 0-based data row `row`; a data row number when values hold line breaks."""
    return f"data row {row + 1:,}" if plan.newlines else f"line {row + 2:,}"


def _fix(name: str, t: str = "string") -> str:
    spelled = name if re.fullmatch(r"[A-Za-z0-9_.]+", name) else json.dumps(name)
    return f"declare its type with --column-type {spelled}={t.replace(' ', '')} (or [types] in the schema file)"


def _late_value(f: InputFile, plan: TextPlan, name: str, value, row: int, why: str, fix: str = "string") -> str:
    return (f"{f.path}, {_where(plan, row)}, column {name!r}: value {shown(value)} {why} (the type was inferred from "
            f"the file's first block); {_fix(name, fix)}")


# ---- errors: the place pyarrow did not name -------------------------------------------------------------

def describe_csv_error(f: InputFile, opts: ReadOptions, plan: TextPlan, schema: pa.Schema, message: str) -> str | None:
    """A conversion error of pyarrow's CSV reader ("column #1 ... invalid value 'x'") with the column's name,
    the line and the fix; None when the message is not one."""
    utf8 = re.search(r"In CSV column #(\d+): CSV conversion error to string: invalid UTF8", message)
    if utf8:
        return _not_utf8(f, schema.names[int(utf8.group(1))])
    if "newlines_in_values" in message:  # pyarrow: "CSV parser got out of sync with chunker"
        return (f"{f.path}: a quoted value after the first block holds a line break; pass --newlines-in-values "
                "to split the file quote-aware")
    m = _CSV_ERROR.search(message)
    if not m:
        return None
    name, what, value = schema.names[int(m.group(1))], m.group(2), m.group(3)
    row = _find_text(f, opts, plan, schema.names, name, value)
    where = _where(plan, row) if row is not None else "a row"
    return (f"{f.path}, {where}, column {name!r}: value {shown(value)} is not {schema.field(name).type} ({what}; the "
            f"type was inferred from the file's first block); {_fix(name)}")


def _find_text(f: InputFile, opts: ReadOptions, plan: TextPlan, names: list[str], column: str,
               value: str) -> int | None:
    """The first data row whose `column` holds the text `value` (a serial re-read, on the error path only)."""
    read, parse, convert = csv_options(f, opts, dict.fromkeys(names, pa.string()), plan.newlines, use_threads=False)
    rows = 0
    try:
        for batch in pcsv.open_csv(open_stream(f), read, parse, convert):
            at = pc.index(batch.column(column), value).as_py()
            if at >= 0:
                return rows + at
            rows += batch.num_rows
    except pa.ArrowException:
        return None
    return None


def describe_json_error(f: InputFile, schema: pa.Schema, message: str) -> str | None:
    """pyarrow's JSON errors ("unexpected field", "Column(/v) changed from number to string") with the field
    and its line; None when the message is not one of them."""
    too_big = _JSON_NUMBER_ERROR.search(message)
    if too_big:
        return _json_number_error(f, schema, too_big.group(2))
    type_change = _JSON_TYPE_ERROR.search(message)
    if "unexpected field" not in message and not type_change:
        return None
    known = set(schema.names)
    for number, raw in enumerate(_lines(f), start=1):
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(row, dict):
            continue
        late = [k for k in row if k not in known]
        if late and not type_change:
            return (f"{f.path}, line {number:,}: field {late[0]!r} first appears here, after the first block "
                    f"the columns were taken from; {_fix(late[0], 'TYPE')} so it is a column from the start")
        if type_change and type_change.group(1) in row:
            name = type_change.group(1)
            value = row[name]
            if value is not None and not _json_fits(value, schema.field(name).type):
                return (f"{f.path}, line {number:,}, column {name!r}: value {cut(json.dumps(value))} is not "
                        f"{schema.field(name).type} (inferred from the first block); {_fix(name)}")
    return None


def _json_number_error(f: InputFile, schema: pa.Schema, text: str) -> str | None:
    """pyarrow's "Failed to convert JSON to int64, couldn't parse:N" with the line and column of N."""
    value = int(text)
    for number, raw in enumerate(_lines(f), start=1):
        if text not in raw:
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        for name, v in row.items() if isinstance(row, dict) else ():
            if v == value and type(v) is int and name in schema.names:
                return (f"{f.path}, line {number:,}, column {name!r}: value {cut(text)} does not fit "
                        f"{schema.field(name).type} (inferred from the first block); "
                        f"{_fix(name, integer_type_for(text))}")
    return None


def _not_utf8(f: InputFile, column: str) -> str:
    """A column with bytes that are not UTF-8 text: where the first such line is, and the fix."""
    line = None
    with open_stream(f) as stream:
        number, rest = 0, b""
        while line is None and (chunk := stream.read(8 << 20)):
            *whole, rest = (rest + chunk).split(b"\n")
            for raw in whole:
                number += 1
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = number
                    break
        if line is None and rest:
            try:
                rest.decode("utf-8")
            except UnicodeDecodeError:
                line = number + 1
    where = f", line {line:,}" if line is not None else ""
    return (f"{f.path}{where}, column {column!r}: bytes that are not UTF-8 text; {_fix(column, 'binary')} to keep "
            "them as bytes, or re-encode the file as UTF-8")


def _lines(f: InputFile) -> Iterator[str]:
    """The file's lines, read 8 MB at a time."""
    rest = b""
    with open_stream(f) as stream:
        while chunk := stream.read(8 << 20):
            *lines, rest = (rest + chunk).split(b"\n")
            yield from (line.decode("utf-8", errors="replace") for line in lines)
    if rest:
        yield rest.decode("utf-8", errors="replace")


def _json_fits(value, t: pa.DataType) -> bool:
    try:
        pa.array([value], t)
        return True
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return False
