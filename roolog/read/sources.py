"""Input files -> one stream of Arrow record batches with one unified schema.

The files (roolog.read.inputs) are read in order with pyarrow's own streaming readers, a bounded batch at a
time: Parquet as its schema says, CSV/TSV/JSON lines as roolog.read.textread types them. Columns of several
files are unified losslessly (roolog.read.arrow_types); hive folder keys become columns.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import RoologError, UsageProblem
from .arrow_types import unify, widened
from .inputs import FORMATS, HIVE_NULL, InputFile, Inputs, ReadOptions, find_inputs, open_input, resolve_inputs
from .textread import (
    InvalidRows,
    TextPlan,
    csv_batches,
    declared_types,
    describe_csv_error,
    describe_json_error,
    json_batches,
    open_stream,
    plan_text,
    row_too_long,
)

__all__ = ["FORMATS", "HIVE_NULL", "InputFile", "Inputs", "ReadOptions", "Source", "SourceBatch", "find_inputs",
           "open_source", "resolve_inputs"]
_INT = re.compile(r"-?(0|[1-9][0-9]*)\Z")  # a hive folder value that is an integer

@dataclass
class SourceBatch:
    batch: pa.RecordBatch
    path: str
    first_row: int  # 0-based index of the batch's first data row within its file
    bytes_done: int  # input bytes consumed so far over all files (for progress)
    piece: int = 0  # which piece of its file (Piece): no request is carried from one piece into the next

    @property
    def where(self) -> str:
        """Where the batch's rows are, for messages."""
        return f"{self.path}, rows {self.first_row + 1}-{self.first_row + self.batch.num_rows}"


_WHERE = re.compile(r"(?P<path>.*), rows (?P<first>\d+)-(?P<last>\d+)", re.S)


def where_through(first: str, last: str) -> str:
    """From the start of `first` to the end of `last` (two SourceBatch.where of one file), for a message
    about rows carried from one batch into the next; `last` when they are not of one file."""
    a, b = _WHERE.fullmatch(first), _WHERE.fullmatch(last)
    if a and b and a["path"] == b["path"]:
        return f"{a['path']}, rows {a['first']}-{b['last']}"
    return last


PIECE_BYTES = 128 << 20  # a Parquet file is read in pieces of row groups holding about this many bytes


@dataclass(frozen=True)
class Piece:
    """A run of a Parquet file's row groups [start, stop), its first row: what one Spark task reads. A text
    file is one piece. Both engines cut a file alike (from its footer only) and carry no request across a cut,
    so where Spark splits a file changes nothing of the output or of the errors."""

    start: int
    stop: int
    first_row: int


def parquet_pieces(md: pq.FileMetaData) -> list[Piece]:
    """The file's row groups cut into pieces of at least PIECE_BYTES (uncompressed, from the footer)."""
    pieces, start, first, size, rows = [], 0, 0, 0, 0
    for rg in range(md.num_row_groups):
        group = md.row_group(rg)
        size, rows = size + group.total_byte_size, rows + group.num_rows
        if size >= PIECE_BYTES:
            pieces.append(Piece(start, rg + 1, first))
            start, first, size = rg + 1, rows, 0
    if start < md.num_row_groups or not pieces:
        pieces.append(Piece(start, md.num_row_groups, first))
    return pieces


def _reader(f: InputFile, opts: ReadOptions, plan: TextPlan, schema: pa.Schema, scratch: str,
            invalid: InvalidRows, pieces: list[tuple[int, Piece]]
            ) -> tuple[Iterator[tuple[int, pa.RecordBatch]], Callable[[], float]]:
    """A streaming reader over one file's own columns (no hive columns), in the unified types for text
    files: (piece, batch) pairs of the given pieces of a Parquet file (a text file is piece 0), and how far
    into the file it is (a fraction, for progress)."""
    if f.format == "parquet":
        source = _local_parquet(f, scratch)
        pf = pq.ParquetFile(source)
        done = [0]

        def batches() -> Iterator[tuple[int, pa.RecordBatch]]:
            try:
                for number, piece in pieces:
                    for batch in _parquet_batches(pf, opts.batch_bytes, piece):
                        done[0] += batch.num_rows
                        yield number, batch
            finally:
                pf.close()
                _close(source)

        return batches(), lambda: done[0] / max(1, pf.metadata.num_rows)
    raw = open_input(f)
    stream = pa.CompressedInputStream(raw, f.compression) if f.compression else raw

    def position() -> float:  # the reader reads ahead and closes the file at its end
        return 1.0 if raw.closed else raw.tell() / max(1, f.size)

    own = pa.schema([schema.field(n) for n in plan.schema.names])  # the file's columns, the unified types
    if f.format in ("csv", "tsv"):
        return ((0, b) for b in csv_batches(f, opts, plan, own, stream, invalid)), position
    return ((0, b) for b in json_batches(f, opts, plan, own, stream)), position


def _parquet_batches(pf: pq.ParquetFile, batch_bytes: int, piece: Piece) -> Iterator[pa.RecordBatch]:
    """A piece's row groups, one by one, in batches whose rows are sized from the bytes per row seen so far
    in the piece (so a piece gives the same batches whether it is read alone or after the pieces before)."""
    md = pf.metadata
    groups = [rg for rg in range(piece.start, piece.stop) if md.row_group(rg).num_rows]
    if not groups:
        return
    first = md.row_group(groups[0]).num_rows
    probe = next(pf.iter_batches(batch_size=min(1024, first), row_groups=[groups[0]]))  # decoded size per row
    bytes_per_row = max(1.0, probe.nbytes / max(1, probe.num_rows))
    for rg in groups:
        rows = max(1, int(batch_bytes / bytes_per_row))
        for batch in pf.iter_batches(batch_size=rows, row_groups=[rg], use_threads=True):
            bytes_per_row = max(bytes_per_row, batch.nbytes / max(1, batch.num_rows))
            yield batch


def _local_parquet(f: InputFile, scratch: str) -> str | pa.NativeFile:
    """Parquet needs random access: a compressed Parquet file is unpacked to scratch space first; an object
    not copied to local disk is read in its store (a Spark task reads only its row groups)."""
    if f.compression is None:
        return open_input(f) if f.in_store else f.readable
    target = os.path.join(scratch, f"unpacked-{abs(hash(f.path))}.parquet")
    if not os.path.exists(target):
        with open_stream(f) as src, open(target + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        os.replace(target + ".tmp", target)
    return target


@contextlib.contextmanager
def _parquet_source(f: InputFile, scratch: str) -> Iterator[str | pa.NativeFile]:
    """`_local_parquet`, closed afterwards when it is an open object."""
    source = _local_parquet(f, scratch)
    try:
        yield source
    finally:
        _close(source)


def _close(source: str | pa.NativeFile) -> None:
    if not isinstance(source, str):
        source.close()  # (ParquetFile and read_schema leave a file they were handed open)


def _file_error(f: InputFile, err: Exception, opts: ReadOptions, plan: TextPlan | None = None,
                schema: pa.Schema | None = None, invalid: InvalidRows | None = None) -> RoologError:
    """One line for what went wrong reading `f`: the place and the fix where roolog can find them."""
    message = str(err).strip()
    if isinstance(err, RoologError):
        return err
    if "straddl" in message:  # pyarrow: "straddling object straddles two block boundaries"
        return RoologError(row_too_long(f, opts))
    detail = invalid.describe(f, opts, plan.newlines if plan else True) if invalid else ""
    if not detail and plan is not None and schema is not None and f.format in ("csv", "tsv"):
        detail = describe_csv_error(f, opts, plan, pa.schema([schema.field(n) for n in plan.schema.names]),
                                    message) or ""
        if detail:
            return RoologError(detail)
    if not detail and schema is not None and f.format == "jsonl":
        detail = describe_json_error(f, schema, message) or ""
        if detail:
            return RoologError(detail)
    msg = detail or (message.splitlines()[0] if message else type(err).__name__)
    if f.format == "parquet" and "magic" in msg.lower():
        msg = f"not a valid Parquet file, or truncated ({msg})"
    return RoologError(f"{f.path}: {msg}")


def _plan(f: InputFile, opts: ReadOptions, scratch: str, keep_head: bool = False) -> TextPlan:
    """The file's columns and types (and, for text files, how it is read), from its footer or first block
    (`keep_head`: with a CSV/TSV file's first block parsed, for its read)."""
    if f.size == 0:
        raise RoologError(f"{f.path}: file is empty")
    invalid = InvalidRows()
    try:
        if f.format == "parquet":
            with _parquet_source(f, scratch) as source:
                return TextPlan(pq.read_schema(source))
        return plan_text(f, opts, invalid, keep_head)
    except (pa.ArrowException, OSError, EOFError) as err:
        raise _file_error(f, err, opts, invalid=invalid) from None


def _text_types_agree(files: list[InputFile], plans: list[TextPlan], declared: set[str]) -> list[TextPlan]:
    """CSV/TSV files whose inferred types of a column differ (int64 in one, string in another): all of them
    read it as string, their texts exactly; only integers of different widths are widened instead."""
    text = [i for i, f in enumerate(files) if f.format in ("csv", "tsv")]
    as_string: set[str] = set()
    for name in {n for i in text for n in plans[i].schema.names} - declared:
        types = {str(plans[i].schema.field(name).type) for i in text if name in plans[i].schema.names}
        kinds = [plans[i].schema.field(name).type for i in text if name in plans[i].schema.names]
        if len(types) > 1 and not all(pa.types.is_integer(t) or pa.types.is_null(t) for t in kinds):
            as_string.add(name)
    if not as_string:
        return plans
    out = list(plans)
    for i in text:
        plan = plans[i]
        fields = [pa.field(f.name, pa.string()) if f.name in as_string else f for f in plan.schema]
        out[i] = replace(plan, schema=pa.schema(fields), checked=plan.checked - as_string)
    return out


def _with_declared(schema: pa.Schema, declared: dict[str, pa.DataType], files: list[InputFile]) -> pa.Schema:
    """Declared types over the unified ones: Parquet columns are cast to them only where that loses nothing."""
    fields = []
    for field in schema:
        want = declared.get(field.name)
        if want is not None and not field.type.equals(want):
            if not (widened(field.type, want) or pa.null()).equals(want):
                parquet = next((f.path for f in files if f.format == "parquet"), files[0].path)
                raise RoologError(f"column {field.name!r} is declared {want} but {parquet} holds {field.type}, "
                                  f"which does not convert to it losslessly; declare {field.type} or leave it out")
            field = field.with_type(want)
        fields.append(field)
    return pa.schema(fields, metadata=schema.metadata)


def _partition_fields(files: list[InputFile]) -> list[pa.Field]:
    keys: dict[str, list[str | None]] = {}
    for f in files:
        for k, v in f.partition:
            keys.setdefault(k, []).append(v)
    return [pa.field(k, pa.int64() if all(v is None or _INT.match(v) for v in vs) else pa.string())
            for k, vs in keys.items()]


def _unify(files: list[InputFile], schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for all files: a column's types are widened only where every value survives (widen.py)."""
    return unify([(f.path, s) for f, s in zip(files, schemas, strict=True)],
                 "for CSV/TSV/JSONL files declare one with --column-type {column}=TYPE (string keeps every text); "
                 "otherwise convert the files separately")


class Source:
    """Many input files read in order as one stream of batches with one schema."""

    def __init__(self, files: list[InputFile], options: ReadOptions, scratch: str | None = None):
        self.files = files
        self.options = options
        self._own_scratch = scratch is None
        self.scratch = scratch or tempfile.mkdtemp(prefix="roolog-read-")
        self.partition_fields = _partition_fields(files)
        declared = declared_types(options)
        # the first file's first block is kept parsed: it is read first, so at most one block is held
        self._plans = {f.path: _plan(f, options, self.scratch, keep_head=i == 0) for i, f in enumerate(files)}
        unknown = sorted(set(declared) - {n for p in self._plans.values() for n in p.schema.names})
        if unknown:
            raise UsageProblem(f"--column-type names column(s) {unknown} that are in no input file")
        plans = _text_types_agree(files, [self._plans[f.path] for f in files], set(declared))
        self._plans = {f.path: p for f, p in zip(files, plans, strict=True)}
        self.file_schema = _with_declared(_unify(files, [p.schema for p in plans]), declared, files)
        self.pieces = {f.path: self._pieces(f) for f in files}
        self.schema = pa.schema(list(self.file_schema) + self.partition_fields)
        dup = [n for n in self.schema.names if self.schema.names.count(n) > 1]
        if dup:
            raise RoologError(f"column {dup[0]!r} is both in the files and a hive folder name")

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def _pieces(self, f: InputFile) -> list[Piece]:
        if f.format != "parquet":
            return [Piece(0, 0, 0)]  # a text file is read as one stream
        with _parquet_source(f, self.scratch) as source:
            return parquet_pieces(pq.ParquetFile(source).metadata)

    def batches(self, only: tuple[int, int] | None = None) -> Iterator[SourceBatch]:
        """Every file's batches in order, or only piece `only[1]` of file `only[0]` (a Spark read task)."""
        done = 0
        for i, f in enumerate(self.files):
            if only is not None and only[0] != i:
                continue
            pieces = list(enumerate(self.pieces[f.path]))
            if only is not None:
                pieces = [pieces[only[1]]]
            for piece, row, batch, fraction in self._file_batches(f, pieces):
                yield SourceBatch(batch, f.path, row, done + int(min(1.0, fraction) * f.size), piece)
            done += f.size

    def _file_batches(self, f: InputFile, pieces: list[tuple[int, Piece]]
                      ) -> Iterator[tuple[int, int, pa.RecordBatch, float]]:
        """(piece, first row in the file, batch, fraction read) for the given pieces of `f`."""
        invalid = InvalidRows()
        plan = self._plans[f.path]
        if plan.head is not None:
            self._plans[f.path] = replace(plan, head=None)  # read once; a second read parses it again
        rows = {number: piece.first_row for number, piece in pieces}
        try:
            reader, position = _reader(f, self.options, plan, self.file_schema, self.scratch, invalid, pieces)
            for number, batch in reader:
                if batch.num_rows:
                    rows[number] += batch.num_rows
                    yield number, rows[number] - batch.num_rows, self._conform(batch, f), position()
        except (pa.ArrowException, OSError, EOFError, RoologError) as err:
            raise _file_error(f, err, self.options, plan, self.file_schema, invalid) from None

    def _conform(self, batch: pa.RecordBatch, f: InputFile) -> pa.RecordBatch:
        """Put the batch in the unified column order and types, and add hive partition columns."""
        if batch.schema.names != self.file_schema.names:
            batch = batch.select(self.file_schema.names)
        if not batch.schema.equals(self.file_schema):
            batch = batch.cast(self.file_schema)
        if not self.partition_fields:
            return batch
        values = dict(f.partition)
        columns = list(batch.columns) + [
            pa.array([values.get(p.name)] * batch.num_rows).cast(p.type) for p in self.partition_fields]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def __getstate__(self) -> dict:
        """A Source sent to Spark's tasks goes without any parsed first block (a task parses its own)."""
        state = dict(self.__dict__)
        state["_plans"] = {path: replace(plan, head=None) for path, plan in self._plans.items()}
        return state

    def close(self) -> None:
        if self._own_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_source(inputs: list[str], options: ReadOptions, scratch: str | None = None) -> Source:
    return Source(resolve_inputs(inputs, options.input_format, storage=options.storage_options), options, scratch)
