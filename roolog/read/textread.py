"""CSV, TSV and JSON-lines files read as what they say: declared types, no texts merged, errors that name
the place.

Types. A declared type (`--column-type COL=TYPE`, or the schema file's [types]) is read as declared.
Otherwise pyarrow infers one from the file's first block (`batch_bytes`), with two rules on top so that
distinct texts never become one value:
- an integer column is read as text and every value checked to be written the one way Arrow prints an
  integer (no leading zero, no '+', no space, no '-0'), then converted. If a text of the first block is not
  (`0123`), the column is read as string; if a later one is, the run fails naming column, file, line and
  value, with the `--column-type COL=string` fix;
- a column pyarrow would make double although every text is an integer (too big for int64) stays string.
JSON values keep their JSON types (a JSON string "0123" is a string).

Quoted line breaks. The first block is parsed quote-aware; when a quoted value there holds a line break
(or with `--newlines-in-values`), the whole file is split into blocks quote-aware too (pyarrow's
`newlines_in_values`: slower, so only then).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

from ..errors import RoologError, UsageProblem
from .arrow_types import parse_type
from .inputs import InputFile, ReadOptions

CANONICAL_INT = r"^(0|-?[1-9][0-9]*)$"  # how Arrow and Python print an integer
INTEGER_LOOKING = r"^\s*[+-]?[0-9]+\s*$"
_CSV_ERROR = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?(.*?): invalid value '(.*)'\s*$", re.S)
_JSON_TYPE_ERROR = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)")


@dataclass(frozen=True)
class TextPlan:
    """How one text file is read: its columns and types, which integer columns are checked text by text,
    and whether its blocks are split quote-aware."""

    schema: pa.Schema
    checked: frozenset[str] = frozenset()
    newlines: bool = False


def declared_types(opts: ReadOptions) -> dict[str, pa.DataType]:
    return {name: parse_type(text) for name, text in opts.column_types}


def open_stream(f: InputFile) -> pa.NativeFile:
    return pa.input_stream(f.path, compression=f.compression)


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
        text = row.text if len(row.text) <= 60 else row.text[:57] + "..."
        where = f"line {row.number}" if row.number is not None else "a row"
        hint = "" if newlines else " (if a quoted value holds a line break, pass --newlines-in-values)"
        return f"{where} has {row.actual_columns} fields, expected {row.expected_columns}: {text!r}{hint}"


# ---- planning: the first block ------------------------------------------------------------------------

def plan_text(f: InputFile, opts: ReadOptions, on_invalid=None) -> TextPlan:
    """The plan of a CSV, TSV or JSON-lines file, from its first block."""
    declared = declared_types(opts)
    if f.format == "jsonl":
        return TextPlan(_json_schema(f, opts, declared))
    newlines = opts.newlines_in_values or _quoted_line_break(f, opts.batch_bytes)
    # one thread: a threaded reader would parse blocks ahead that the peek never looks at
    read, parse, convert = csv_options(f, opts, declared, newlines, on_invalid, use_threads=False)
    with pcsv.open_csv(open_stream(f), read, parse, convert) as r:
        inferred = r.schema  # pyarrow's inference over the first block
    twice = sorted({n for n in inferred.names if inferred.names.count(n) > 1})
    if twice:
        raise RoologError(f"{f.path}: column name(s) {twice} appear more than once in the header")
    numbers = [fl.name for fl in inferred if fl.name not in declared
               and (pa.types.is_integer(fl.type) or pa.types.is_floating(fl.type))]
    texts = _first_block(f, opts, dict.fromkeys(numbers, pa.string()), on_invalid, newlines, numbers) if numbers \
        else None
    fields, checked = [], set()
    for field in inferred:
        t = field.type
        if field.name in numbers and texts is not None:
            values = texts.column(field.name)
            present = values.filter(pc.invert(pc.is_in(values, pa.array(null_texts(opts)))).fill_null(False))
            if pa.types.is_integer(t):
                if round_trips(present, pa.int64()):
                    checked.add(field.name)
                else:
                    t = pa.string()  # 0123 and 123 are two texts: kept apart
            elif len(present) and pc.all(pc.match_substring_regex(present, INTEGER_LOOKING)).as_py():
                t = pa.string()  # integers too big for int64 (or +5): their digits, not the nearest double
        fields.append(pa.field(field.name, t))
    return TextPlan(pa.schema(fields), frozenset(checked), bool(newlines))


def _quoted_line_break(f: InputFile, size: int) -> bool:
    """Whether a line break in the file's first `size` bytes lies inside quotes: after an odd number of
    quote characters (a doubled "" inside a value counts two, so the parity still holds)."""
    with open_stream(f) as stream:
        head = np.frombuffer(stream.read(size), dtype=np.uint8)
    quotes = np.flatnonzero(head == ord('"'))
    if not len(quotes):
        return False
    breaks = np.flatnonzero((head == ord("\n")) | (head == ord("\r")))
    return bool((np.searchsorted(quotes, breaks) % 2).any())  # quotes before each break: odd is inside


def _json_schema(f: InputFile, opts: ReadOptions, declared: dict[str, pa.DataType]) -> pa.Schema:
    """The fields of a JSON-lines file in the order they first appear, typed as declared or as pyarrow
    infers them from the first block (pyarrow puts declared fields first: the file's order is kept here)."""
    read = pjson.ReadOptions(block_size=opts.batch_bytes)
    with pjson.open_json(open_stream(f), read, pjson.ParseOptions(
            explicit_schema=pa.schema(declared.items()) if declared else None)) as r:
        typed = r.schema
    if not declared:
        return typed
    try:
        with pjson.open_json(open_stream(f), read) as r:
            order = r.schema.names
    except pa.ArrowInvalid:  # the undeclared reading fails (a declared field's values mix kinds)
        order = typed.names
    return pa.schema([typed.field(n) for n in order if n in typed.names]
                     + [typed.field(n) for n in typed.names if n not in order])


def _first_block(f: InputFile, opts: ReadOptions, types: dict[str, pa.DataType], on_invalid, newlines: bool,
                 columns: list[str] | None = None) -> pa.Table:
    """The file's first block (`columns` only, when given)."""
    read, parse, convert = csv_options(f, opts, types, newlines=newlines, on_invalid=on_invalid, use_threads=False)
    if columns is not None:
        convert.include_columns = columns
    with pcsv.open_csv(open_stream(f), read, parse, convert) as r:
        try:
            return pa.Table.from_batches([r.read_next_batch()])
        except StopIteration:
            return r.schema.empty_table()


def round_trips(texts: pa.Array, t: pa.DataType) -> bool:
    """Whether every text is an integer exactly as Arrow prints it back (no 0123, ' 5', -0, 0x10)."""
    try:
        pc.cast(texts, t)
    except pa.ArrowInvalid:
        return False
    return bool(printed_as_is(texts).all())


# ---- reading ------------------------------------------------------------------------------------------

def csv_batches(f: InputFile, opts: ReadOptions, plan: TextPlan, schema: pa.Schema, stream,
                on_invalid) -> Iterator[pa.RecordBatch]:
    """The file's batches in `schema`'s types (the unified ones); checked integer columns converted here."""
    types = {n: (pa.string() if n in plan.checked else schema.field(n).type) for n in schema.names}
    read, parse, convert = csv_options(f, opts, types, plan.newlines, on_invalid)
    nulls = pa.array(null_texts(opts))
    rows = 0
    for batch in pcsv.open_csv(stream, read, parse, convert):
        if plan.checked:
            batch = _convert_checked(batch, plan, schema, nulls, f, rows)
        rows += batch.num_rows
        yield batch


def _convert_checked(batch: pa.RecordBatch, plan: TextPlan, schema: pa.Schema, nulls: pa.Array, f: InputFile,
                     first_row: int) -> pa.RecordBatch:
    columns = []
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if name in plan.checked:
            try:  # the common case: no null texts, every text an integer
                values, ints = col, col.cast(pa.int64())
            except pa.ArrowInvalid:
                is_null = pc.or_kleene(col.is_null(), pc.is_in(col, nulls))
                values = pc.if_else(is_null, pa.scalar(None, pa.string()), col)
                try:
                    ints = values.cast(pa.int64())
                except pa.ArrowInvalid:
                    ints = None
            if ints is None:
                bad = pc.invert(pc.match_substring_regex(values, CANONICAL_INT)).fill_null(False)
            else:
                bad = pa.array(~printed_as_is(values))
            first_bad = pc.index(bad, True).as_py()
            if first_bad >= 0:
                text = col[first_bad].as_py()
                why = (f"is an integer written another way than {schema.field(name).type} prints it, so it would "
                       "become another text's number" if re.fullmatch(INTEGER_LOOKING[1:-1], text)
                       else f"is not {schema.field(name).type}")
                raise RoologError(_late_value(f, plan, name, text, first_row + first_bad, why))
            target = schema.field(name).type
            try:
                if ints is None:
                    raise pa.ArrowInvalid("an integer out of range")
                col = ints.cast(target)
            except pa.ArrowInvalid:
                row = _first_uncastable(values, target)
                raise RoologError(_late_value(f, plan, name, values[row].as_py(), first_row + row,
                                              f"does not fit {target}")) from None
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


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
            values.slice(i, 1).cast(pa.int64()).cast(t)
        except pa.ArrowInvalid:
            return i
    return 0


def _where(plan: TextPlan, row: int) -> str:
    """Line (1 = header) of 0-based data row `row`; a data row number when values hold line breaks."""
    return f"data row {row + 1:,}" if plan.newlines else f"line {row + 2:,}"


def _fix(name: str, t: str = "string") -> str:
    spelled = name if re.fullmatch(r"[A-Za-z0-9_.]+", name) else json.dumps(name)
    return f"declare its type with --column-type {spelled}={t} (or [types] in the schema file)"


def _late_value(f: InputFile, plan: TextPlan, name: str, value, row: int, why: str) -> str:
    return (f"{f.path}, {_where(plan, row)}, column {name!r}: value {value!r} {why} (the type was inferred from "
            f"the file's first block); {_fix(name)}")


# ---- errors: the place pyarrow did not name -------------------------------------------------------------

def describe_csv_error(f: InputFile, opts: ReadOptions, plan: TextPlan, schema: pa.Schema, message: str) -> str | None:
    """A conversion error of pyarrow's CSV reader ("column #1 ... invalid value 'x'") with the column's name,
    the line and the fix; None when the message is not one."""
    if "newlines_in_values" in message:  # pyarrow: "CSV parser got out of sync with chunker"
        return (f"{f.path}: a quoted value after the first block holds a line break; pass --newlines-in-values "
                "to split the file quote-aware")
    m = _CSV_ERROR.search(message)
    if not m:
        return None
    name, what, value = schema.names[int(m.group(1))], m.group(2), m.group(3)
    row = _find_text(f, opts, plan, schema.names, name, value)
    where = _where(plan, row) if row is not None else "a row"
    return (f"{f.path}, {where}, column {name!r}: value {value!r} is not {schema.field(name).type} ({what}; the "
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
                return (f"{f.path}, line {number:,}, column {name!r}: value {json.dumps(value)} is not "
                        f"{schema.field(name).type} (inferred from the first block); {_fix(name)}")
    return None


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
