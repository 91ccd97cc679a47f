"""Inputs -> one stream of Arrow record batches with one unified schema.

Each input is a file, a folder (searched recursively; hive `key=value` folders become columns) or a glob.
Formats are Parquet, CSV, TSV and JSON lines, each plain or .gz/.zst, detected from the name unless
`--input-format` says otherwise. Reading uses pyarrow's own streaming readers, a bounded batch at a time.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from .errors import RoologError, UsageProblem
from .widen import unify

FORMATS = ("parquet", "csv", "tsv", "jsonl")
_SUFFIX_FORMAT = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
                  ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_SUFFIX_COMPRESSION = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_INT = re.compile(r"-?(0|[1-9][0-9]*)\Z")


@dataclass(frozen=True)
class ReadOptions:
    """How to read raw logs; the same options for convert, stats and infer-schema."""

    input_format: str = "auto"
    delimiter: str | None = None
    null_values: tuple[str, ...] = ()
    batch_bytes: int = 32 << 20


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str
    compression: str | None
    partition: tuple[tuple[str, str | None], ...] = ()  # hive key=value pairs above the file
    size: int = 0
    mtime: float = 0.0
    mtime_ns: int = 0  # with `ino`: what tells, after reading, whether the file changed meanwhile
    ino: int = 0


@dataclass
class SourceBatch:
    batch: pa.RecordBatch
    path: str
    first_row: int  # 0-based index of the batch's first data row within its file
    bytes_done: int  # input bytes consumed so far over all files (for progress)


def _split_name(name: str) -> tuple[str | None, str | None]:
    """(format, compression) from a file name like events.csv.zst."""
    stem, suffix = os.path.splitext(name.lower())
    compression = _SUFFIX_COMPRESSION.get(suffix)
    if compression:
        suffix = os.path.splitext(stem)[1]
    return _SUFFIX_FORMAT.get(suffix), compression


def _hive_pairs(root: str, path: str) -> tuple[tuple[str, str | None], ...]:
    pairs = []
    for part in Path(os.path.relpath(path, root)).parts[:-1]:
        if "=" in part:
            k, v = part.split("=", 1)
            v = urllib.parse.unquote(v)
            pairs.append((urllib.parse.unquote(k), None if v == HIVE_NULL else v))
    return tuple(pairs)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _walk(folder: str, skip: str | None) -> list[str]:
    """The files under `folder`, sorted; symlinked folders followed (each real folder once: a loop or a
    second link to a folder already read is refused); the real folder `skip` (the output) left out."""
    found: list[str] = []
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            raise UsageProblem(f"{dirpath} is the folder {seen[real]} again (a symlink loop or a second link); "
                               "name each input once")
        seen[real] = dirpath
        dirnames[:] = sorted(d for d in dirnames if (not d.startswith((".", "_")) or "=" in d)
                             and os.path.realpath(os.path.join(dirpath, d)) != skip)
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith((".", "_"))]
    return found


def resolve_inputs(specs: list[str], input_format: str = "auto", output: str | None = None) -> list[InputFile]:
    """Expand files, folders and globs, in the order given (folders and globs sorted).

    Each file is read once: the same file named twice (another spelling, a symlink, a hard link) is an
    error. With `output` (convert's OUT), an input that is OUT or lies inside it is refused, and OUT inside
    an input folder (or matched by a glob) is kept out of the inputs, so a rerun never reads its own output.
    """
    if input_format not in ("auto", *FORMATS):
        raise UsageProblem(f"unknown input format {input_format!r}; use auto or one of {', '.join(FORMATS)}")
    out = os.path.realpath(output) if output else None
    files: list[InputFile] = []
    seen: dict[tuple[int, int], str] = {}
    for spec in specs:
        if out and os.path.exists(spec) and _within(os.path.realpath(spec), out):
            raise UsageProblem(f"input {spec} is {'the' if os.path.realpath(spec) == out else 'inside the'} output "
                               f"folder {output}; convert into another folder")
        if os.path.isdir(spec):
            candidates = [(p, spec) for p in _walk(spec, out)]
            from_folder = True
        elif os.path.isfile(spec):
            candidates, from_folder = [(spec, None)], False
        elif glob.has_magic(spec):
            candidates = [(p, None) for p in sorted(glob.glob(spec, recursive=True)) if os.path.isfile(p)
                          and not (out and _within(os.path.realpath(p), out))]
            from_folder = True
            if not candidates:
                raise UsageProblem(f"no input files match {spec!r}")
        else:
            raise UsageProblem(f"input not found: {spec}")
        for path, root in candidates:
            fmt, compression = _split_name(os.path.basename(path))
            if input_format != "auto":
                fmt = input_format
            if fmt is None:
                if from_folder:
                    continue  # a README or checksum file next to the data
                raise UsageProblem(f"{path}: cannot tell the format from the name; pass --input-format")
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:
                raise UsageProblem(f"{path} and {seen[st.st_dev, st.st_ino]} are the same file; name each input once")
            seen[st.st_dev, st.st_ino] = path
            partition = _hive_pairs(root, path) if root else ()
            files.append(InputFile(path, fmt, compression, partition, st.st_size, st.st_mtime, st.st_mtime_ns,
                                   st.st_ino))
    if not files:
        raise UsageProblem(f"no input files found in {' '.join(specs)}")
    return files


def _open_stream(f: InputFile) -> pa.NativeFile:
    return pa.input_stream(f.path, compression=f.compression)


def _csv_options(f: InputFile, opts: ReadOptions, block_size: int, column_types=None, on_invalid=None):
    delimiter = opts.delimiter or ("\t" if f.format == "tsv" else ",")
    if len(delimiter) != 1:
        raise UsageProblem(f"--delimiter must be one character, not {delimiter!r}")
    read = pcsv.ReadOptions(block_size=block_size, use_threads=True)
    parse = pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid)
    convert_kw = {"column_types": column_types} if column_types is not None else {}
    if opts.null_values:
        convert_kw.update(null_values=list(opts.null_values), strings_can_be_null=True)
    return read, parse, pcsv.ConvertOptions(**convert_kw)


class _InvalidRows:
    """Remembers the first malformed CSV row so the error can name it."""

    def __init__(self) -> None:
        self.first: pcsv.InvalidRow | None = None

    def __call__(self, row: pcsv.InvalidRow) -> str:
        self.first = self.first or row
        return "error"

    def describe(self, f: InputFile, opts: ReadOptions) -> str:
        row = self.first
        if row is None:
            return ""
        if row.number is None:  # parallel parsing does not count lines; find it again serially
            serial = _InvalidRows()
            read, parse, convert = _csv_options(f, opts, opts.batch_bytes, on_invalid=serial)
            read.use_threads = False
            try:
                pcsv.open_csv(_open_stream(f), read, parse, convert).read_all()
            except pa.ArrowException:
                row = serial.first or row
        text = row.text if len(row.text) <= 60 else row.text[:57] + "..."
        where = f"line {row.number}" if row.number is not None else "a row"
        return f"{where} has {row.actual_columns} fields, expected {row.expected_columns}: {text!r}"


def _reader(f: InputFile, opts: ReadOptions, schema: pa.Schema | None, scratch: str,
            invalid: _InvalidRows) -> tuple[Iterator[pa.RecordBatch], Callable[[], float]]:
    """A streaming reader over one file's own columns (no hive columns), and how far into the file it is
    (a fraction, for progress)."""
    if f.format == "parquet":
        pf = pq.ParquetFile(_local_parquet(f, scratch))
        done = [0]

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in _parquet_batches(pf, opts.batch_bytes):
                done[0] += batch.num_rows
                yield batch

        return batches(), lambda: done[0] / max(1, pf.metadata.num_rows)
    raw = pa.OSFile(f.path)
    stream = pa.CompressedInputStream(raw, f.compression) if f.compression else raw

    def position() -> float:  # the reader reads ahead and closes the file at its end
        return 1.0 if raw.closed else raw.tell() / max(1, f.size)

    if f.format in ("csv", "tsv"):
        types = None if schema is None else {n: schema.field(n).type for n in schema.names}
        read, parse, convert = _csv_options(f, opts, opts.batch_bytes, types, invalid)
        return pcsv.open_csv(stream, read, parse, convert), position
    read = pjson.ReadOptions(block_size=opts.batch_bytes)
    parse = pjson.ParseOptions(explicit_schema=schema, newlines_in_values=False)
    return pjson.open_json(stream, read, parse), position


def _parquet_batches(pf: pq.ParquetFile, batch_bytes: int) -> Iterator[pa.RecordBatch]:
    """Row group by row group, in batches whose rows are sized from the bytes per row seen so far."""
    md = pf.metadata
    if md.num_rows == 0:
        return
    probe = next(pf.iter_batches(batch_size=min(1024, md.num_rows), row_groups=[0]))  # decoded size per row
    bytes_per_row = max(1.0, probe.nbytes / max(1, probe.num_rows))
    for rg in range(md.num_row_groups):
        rows = max(1, int(batch_bytes / bytes_per_row))
        for batch in pf.iter_batches(batch_size=rows, row_groups=[rg], use_threads=True):
            bytes_per_row = max(bytes_per_row, batch.nbytes / max(1, batch.num_rows))
            yield batch


def _local_parquet(f: InputFile, scratch: str) -> str:
    """Parquet needs random access: a compressed Parquet file is unpacked to scratch space first."""
    if f.compression is None:
        return f.path
    target = os.path.join(scratch, f"unpacked-{abs(hash(f.path))}.parquet")
    if not os.path.exists(target):
        with _open_stream(f) as src, open(target + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        os.replace(target + ".tmp", target)
    return target


def _file_error(f: InputFile, err: Exception, opts: ReadOptions, invalid: _InvalidRows | None = None) -> RoologError:
    detail = invalid.describe(f, opts) if invalid else ""
    msg = detail or str(err).strip().splitlines()[0]
    if f.format == "parquet" and "magic" in msg.lower():
        msg = f"not a valid Parquet file, or truncated ({msg})"
    return RoologError(f"{f.path}: {msg}")


def _peek_schema(f: InputFile, opts: ReadOptions, scratch: str) -> pa.Schema:
    if f.size == 0:
        raise RoologError(f"{f.path}: file is empty")
    invalid = _InvalidRows()
    try:
        if f.format == "parquet":
            return pq.read_schema(_local_parquet(f, scratch))
        if f.format in ("csv", "tsv"):
            # types are inferred from a generous first block (a column with no value there is null-typed)
            read, parse, convert = _csv_options(f, opts, opts.batch_bytes, on_invalid=invalid)
            with pcsv.open_csv(_open_stream(f), read, parse, convert) as r:
                schema = r.schema
        else:
            with pjson.open_json(_open_stream(f), pjson.ReadOptions(block_size=opts.batch_bytes)) as r:
                schema = r.schema
    except (pa.ArrowException, OSError, EOFError) as err:
        raise _file_error(f, err, opts, invalid) from None
    twice = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if twice:
        raise RoologError(f"{f.path}: column name(s) {twice} appear more than once in the header")
    return schema


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
                 "make the files agree on the column's type, or convert them separately")


class Source:
    """Many input files read in order as one stream of batches with one schema."""

    def __init__(self, files: list[InputFile], options: ReadOptions, scratch: str | None = None):
        self.files = files
        self.options = options
        self._own_scratch = scratch is None
        self.scratch = scratch or tempfile.mkdtemp(prefix="roolog-read-")
        self.partition_fields = _partition_fields(files)
        self.file_schema = _unify(files, [_peek_schema(f, options, self.scratch) for f in files])
        self.schema = pa.schema(list(self.file_schema) + self.partition_fields)
        dup = [n for n in self.schema.names if self.schema.names.count(n) > 1]
        if dup:
            raise RoologError(f"column {dup[0]!r} is both in the files and a hive folder name")

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def batches(self) -> Iterator[SourceBatch]:
        done = 0
        for f in self.files:
            rows = 0
            for batch, fraction in self._file_batches(f):
                rows += batch.num_rows
                yield SourceBatch(batch, f.path, rows - batch.num_rows, done + int(min(1.0, fraction) * f.size))
            done += f.size

    def _file_batches(self, f: InputFile) -> Iterator[tuple[pa.RecordBatch, float]]:
        invalid = _InvalidRows()
        try:
            reader, position = _reader(f, self.options, self.file_schema, self.scratch, invalid)
            for batch in reader:
                if batch.num_rows:
                    yield self._conform(batch, f), position()
        except (pa.ArrowException, OSError, EOFError) as err:
            raise _file_error(f, err, self.options, invalid) from None

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

    def close(self) -> None:
        if self._own_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_source(inputs: list[str], options: ReadOptions, scratch: str | None = None) -> Source:
    return Source(resolve_inputs(inputs, options.input_format), options, scratch)
