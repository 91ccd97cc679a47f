"""`roolog.convert`: impression-level logs -> request-level shards, manifests and reports.

source -> record batches -> StreamGrouper -> run batches -> RunSpill (one partition per shard)
       -> RunSpill.fold (scattered requests) -> ShardWriter -> report, manifest (last)

An output is one *unit* (OUT itself) or, when the inputs are partitioned (hive folders like ds=.../, or
--partition-by COLUMN), one unit per partition (OUT/ds=.../). A unit whose manifest records the same
inputs (path, size, mtime or content hash) and the same options is up to date and skipped.

With engine="spark" a unit's rows are read, grouped and written by Spark tasks running the same steps
(roolog.spark); everything around them (locking, skipping, publishing, manifests) is the code below.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__
from .arrow_types import parse_type
from .encodings import choose_encodings
from .errors import RoologError, UsageProblem
from .group import N_COL, Grouping, null_keys_dropped
from .log import silent
from .outdir import OutputFolder
from .pipeline import RequestPipeline
from .prefetch import prefetch
from .progress import bar
from .report import LengthHistogram, add_column_bytes, on_disk_column_bytes, ratio
from .schema import Levels, LogSchema, check_declared, check_key_and_order, load_schema
from .shards import (
    COUNT_COLUMN,
    FOOTER_KEY,
    MANIFEST,
    MANIFEST_FORMAT,
    REPORT,
    ShardInfo,
    ShardWriter,
    failpoint,
    file_xxh64,
    read_json,
    schema_to_b64,
    shards_doc,
    write_json_atomic,
)
from .sources import HIVE_NULL, InputFile, ReadOptions, Source, find_inputs
from .values import key_hashes, python_value, sortable_key

SHARD_TARGET_BYTES = 256 << 20  # default shard count: one shard per this much input
MAX_PARTITIONS = 1000  # rows routed to partitions in one run: each holds open files and a grouping pipeline
SAMPLE_REQUESTS, SAMPLE_BYTES = 20_000, 8 << 20  # the requests Parquet encodings are chosen on


@dataclass(frozen=True)
class ConvertOptions:
    key: tuple[str, ...] = ()
    order_by: str | None = None
    schema_file: str | None = None
    read: ReadOptions = field(default_factory=ReadOptions)
    shards: int | None = None
    compression_level: int = 3
    on_conflict: str = "error"  # or "demote"
    memory_limit: int = 1 << 30
    partition_by: str | None = None  # default: the top-level hive key of partitioned inputs
    overwrite: bool = False  # write into a folder that holds files roolog did not write
    force: bool = False  # redo units that are up to date
    drop_null_keys: bool = False
    progress: bool = True
    row_group_bytes: int = 64 << 20  # in-memory bytes per Parquet row group
    log: Callable[..., None] = silent
    engine: str = "local"  # or "spark": the same output, grouped on a Spark cluster (roolog.spark)
    spark_master: str | None = None  # default local[*], or the master of a session that already runs


def _output_options(opts: ConvertOptions, schema_hash: str | None) -> dict:
    """Everything that decides an output's content: a unit made with other options is redone."""
    read = asdict(opts.read)
    read.pop("batch_bytes")
    options = {"key": opts.key, "order_by": opts.order_by, "schema_xxh64": schema_hash, "read": read,
               "shards": opts.shards, "compression_level": opts.compression_level, "on_conflict": opts.on_conflict,
               "drop_null_keys": opts.drop_null_keys, "partition_by": opts.partition_by}
    return json.loads(json.dumps(options))  # as the manifest will hold them (tuples become lists)


def with_declared_types(read: ReadOptions, declared: LogSchema) -> ReadOptions:
    """The reading options with the schema file's [types] added to --column-type's (which must agree)."""
    given = dict(read.column_types)
    for name, t in declared.types:
        if name in given and parse_type(given[name]) != parse_type(t):
            raise UsageProblem(f"--column-type {name}={given[name]} disagrees with the schema file's {t}")
        given.setdefault(name, t)
    return replace(read, column_types=tuple(given.items()))


def resolve_schema(opts: ConvertOptions, schema: pa.Schema) -> tuple[LogSchema | None, tuple[str, ...], str | None]:
    declared = load_schema(opts.schema_file) if opts.schema_file else None
    key, order_by = tuple(opts.key), opts.order_by
    if declared:
        if key and key != declared.key:
            raise UsageProblem(f"--key {list(key)} disagrees with the schema file's key {list(declared.key)}")
        if order_by and declared.order_by and order_by != declared.order_by:
            raise UsageProblem(f"--order-by {order_by} disagrees with the schema file's {declared.order_by}")
        key, order_by = declared.key, order_by or declared.order_by
    check_key_and_order(schema, key, order_by)
    if declared:
        check_declared(declared, schema, opts.schema_file or "the schema file")
    return declared, key, order_by


def unit_settings(opts: ConvertOptions, source: Source,
                  route_by: str | None) -> tuple[LogSchema | None, tuple[str, ...], str | None, int]:
    """The schema file, key, order column and shard count of the units read from `source`."""
    declared, key, order_by = resolve_schema(opts, source.schema)
    if route_by is not None and route_by not in source.schema.names:
        raise UsageProblem(f"--partition-by {route_by!r} is not a column or hive folder of the input")
    return declared, key, order_by, opts.shards or max(1, math.ceil(source.total_bytes / SHARD_TARGET_BYTES))


def initial_levels(declared: LogSchema | None, schema: pa.Schema, key, on_conflict: str) -> Levels:
    columns = [n for n in schema.names if n not in key]
    if declared is None:  # inferred: every column starts request-level and moves when it first varies
        return Levels(request=columns, impression=[])
    request = [c for c in columns if c in declared.request]
    fixed = set(request) if on_conflict == "error" else set()
    return Levels(request=request, impression=[c for c in columns if c not in request], fixed=fixed,
                  declared=set(request))


# ---- inputs and units ----------------------------------------------------------------------------------

def fingerprint(files: list[InputFile]) -> list[dict]:
    """What the manifest records of the inputs, taken after they were read: a file whose size, mtime or
    inode is not what it was when the run listed it changed while it was read, and fails the run."""
    inputs = []
    for f in files:
        digest = file_xxh64(f.path)
        st = os.stat(f.path)
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (f.size, f.mtime_ns, f.ino):
            raise RoologError(f"{f.path}: the file changed while roolog read it (it was {f.size:,} bytes, now "
                              f"{st.st_size:,}); run again once it is complete")
        inputs.append({"path": os.path.abspath(f.path), "bytes": f.size, "mtime": f.mtime, "xxh64": digest,
                       "stat": _stat(f)})
    return inputs


def _stat(f: InputFile) -> dict[str, int]:
    return {"mtime_ns": f.mtime_ns, "ctime_ns": f.ctime_ns, "ino": f.ino}


def _unchanged(recorded: list[dict], files: list[InputFile]) -> bool:
    """Same files, same sizes, and each with the same mtime, ctime and inode as when it was read, or else
    (touched, copied) the same content hash. The ctime tells a rewrite whose mtime was put back."""
    if [r.get("path") for r in recorded] != [os.path.abspath(f.path) for f in files]:
        return False
    return all(r.get("bytes") == f.size and (r.get("stat") == _stat(f) or r.get("xxh64") == file_xxh64(f.path))
               for r, f in zip(recorded, files, strict=True))


def _up_to_date(folder: OutputFolder, rel: str, files: list[InputFile], options: dict, log) -> bool:
    """Whether the unit at OUT/rel was made from these inputs with these options and is still intact (every
    shard it lists there, as written); says why when a damaged unit is redone."""
    manifest = read_json(os.path.join(folder.out, rel, MANIFEST))
    if not manifest or manifest.get("options") != options or not _unchanged(manifest.get("inputs", []), files):
        return False
    return _intact(folder, rel, manifest, log)


def _intact(folder: OutputFolder, rel: str, manifest: dict, log) -> bool:
    """Whether every shard the unit's manifest lists is at OUT/rel as written; says why when it is not."""
    if not manifest:
        return False
    prefix = f"{rel}/" if rel else ""
    for shard in manifest.get("shards", []):
        problem = folder.intact(prefix + shard["file"], shard["bytes"], shard["xxh64"])
        if problem:
            log("redo", output=folder.out, partition=rel or None, reason=problem)
            return False
    return True


def partition_name(column: str, value) -> str:
    text = HIVE_NULL if value is None else urllib.parse.quote(str(value), safe="")
    return f"{urllib.parse.quote(column, safe='')}={text}"


def _partition_column(files: list[InputFile], opts: ConvertOptions) -> str | None:
    if opts.partition_by:
        return opts.partition_by
    if files and all(f.partition for f in files) and len({f.partition[0][0] for f in files}) == 1:
        return files[0].partition[0][0]  # hive inputs: one output partition per top-level folder
    return None


# ---- one unit ------------------------------------------------------------------------------------------

class _Unit:
    """One output unit while its rows stream in, and the shards, report and manifest it becomes."""

    def __init__(self, name: str | None, folder: OutputFolder, schema: pa.Schema, declared: LogSchema | None,
                 key: tuple[str, ...], order_by: str | None, opts: ConvertOptions, n_shards: int,
                 partition: str | None):
        self.name, self.partition = name, partition
        self.opts = opts
        self.dir = folder.unit_path(name or "_flat")
        os.makedirs(self.dir)
        self.schema, self.declared = schema, declared
        self.pipeline = RequestPipeline(schema, key, order_by, initial_levels(declared, schema, key, opts.on_conflict),
                                        RequestPipeline.spill_dir(folder.tmp, name), n_shards, opts.memory_limit)
        self.grouping = self.pipeline.grouping
        self.null_key_rows = 0

    def feed(self, batch: pa.RecordBatch, where: str) -> None:
        self.pipeline.feed(batch, where)

    def finish(self, files: list[InputFile], inputs: list[dict], options: dict, started: float) -> dict:
        """Fold, write the shards, report and manifest into the unit's folder; returns the report."""
        self.pipeline.finish_input()
        failpoint("spill")
        opts, pipeline = self.opts, self.pipeline
        out_schema, output = output_layout(self.grouping, self.partition)
        requests = (pipeline.requests(s) for s in range(pipeline.shards))
        encodings = choose_encodings(sample_requests(requests, output, out_schema), opts.compression_level)
        value = partition_value((pipeline.requests(s) for s in range(pipeline.shards)), self.partition)
        lengths, output_bytes, shards = LengthHistogram(), dict.fromkeys(out_schema.names, 0), []
        with bar(pipeline.shards, f"writing {self.name or ''}".strip(), "shard", opts.progress) as progress:
            for s in range(pipeline.shards):
                writer = ShardWriter(os.path.join(self.dir, shard_file(s)), out_schema, opts.compression_level,
                                     opts.row_group_bytes, encodings)
                shards.append(write_shard(writer, prefetch(pipeline.requests(s)), output, lengths, output_bytes))
                progress.update(1)
                failpoint("write")
        spill = {"bytes": pipeline.spill.bytes_written, "most_parts": pipeline.spill.most_parts}
        report = unit_report(self.name, self.schema, self.grouping, pipeline.input_bytes, spill, self.null_key_rows,
                             files, shards, lengths, output_bytes, self.dir, time.perf_counter() - started,
                             self.partition)
        write_json_atomic(os.path.join(self.dir, REPORT), report)
        manifest = unit_manifest(self.schema, self.grouping, self.declared, encodings, inputs, options, shards,
                                 value)
        write_json_atomic(os.path.join(self.dir, MANIFEST), manifest)
        return report


# ---- the steps of finishing a unit, shared with the spark engine (roolog.spark) --------------------------

def shard_file(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


RowsToShard = Callable[[pa.RecordBatch], pa.RecordBatch]


def output_layout(grouping: Grouping, partition: str | None = None) -> tuple[pa.Schema, RowsToShard]:
    """The shards' schema under the final levels, and the function that turns run batches into shard rows
    (the input's columns, less the partition column that lives in the folder's name, plus the impressions
    per request when no column is impression-level). The schema's metadata is roolog's footer record."""
    names = [n for n in grouping.schema.names if n != partition]
    with_count = not grouping.levels.impression
    run_schema = grouping.run_schema()
    levels = grouping.levels
    footer = {"roolog_version": __version__, "manifest_format": MANIFEST_FORMAT, "key": list(grouping.key),
              "order_by": grouping.order_by, "request": [c for c in levels.request if c != partition],
              "impression": [c for c in names if c in levels.impression],
              "count_column": COUNT_COLUMN if with_count else None, "partition_column": partition}
    out_schema = pa.schema([run_schema.field(n) for n in names]
                           + ([pa.field(COUNT_COLUMN, pa.int64())] if with_count else []),
                           metadata={FOOTER_KEY: json.dumps(footer).encode()})

    def output(runs: pa.RecordBatch) -> pa.RecordBatch:
        batch = runs.select(names)
        return batch.append_column(COUNT_COLUMN, runs.column(N_COL)) if with_count else batch

    return out_schema, output


def sample_requests(shards: Iterable[Iterable[pa.RecordBatch]], output, schema: pa.Schema) -> pa.Table:
    """The first requests of the output (the run batches of each shard, in shard order), up to
    SAMPLE_REQUESTS or SAMPLE_BYTES: what the Parquet encodings are chosen on."""
    batches, requests, size = [], 0, 0
    for runs_of_shard in shards:
        for runs in runs_of_shard:
            batches.append(output(runs.slice(0, SAMPLE_REQUESTS - requests)))
            requests += batches[-1].num_rows
            size += batches[-1].nbytes
            if requests >= SAMPLE_REQUESTS or size >= SAMPLE_BYTES:
                return pa.Table.from_batches(batches, schema=schema)
    return pa.Table.from_batches(batches, schema=schema)


def partition_value(shards: Iterable[Iterable[pa.RecordBatch]], column: str | None) -> dict | None:
    """A partition's column and its value (one for all its rows) exactly, as base64 Arrow IPC: what explode
    puts back (the folder name is only its text)."""
    if column is None:
        return None
    for runs_of_shard in shards:
        for runs in runs_of_shard:
            if runs.num_rows:
                one = pa.record_batch([runs.column(column).slice(0, 1)], names=[column])
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, one.schema) as writer:
                    writer.write_batch(one)
                return {"column": column, "value": base64.b64encode(sink.getvalue().to_pybytes()).decode()}
    return None


def write_shard(writer: ShardWriter, runs: Iterable[pa.RecordBatch], output, lengths: LengthHistogram,
                output_bytes: dict[str, int]) -> ShardInfo:
    """One shard from its run batches (in input order); adds to the lengths and per-column bytes."""
    for batch in runs:
        n = batch.column(N_COL).to_numpy()
        lengths.add(n)
        rows = output(batch)
        add_column_bytes(output_bytes, rows)
        writer.write(rows, int(n.sum()))
    return writer.close()


def unit_report(name: str | None, schema: pa.Schema, grouping: Grouping, input_bytes: dict[str, int], spill: dict,
                null_key_rows: int, files: list[InputFile], shards: list[ShardInfo], lengths: LengthHistogram,
                output_bytes: dict[str, int], folder: str, wall: float, partition: str | None = None) -> dict:
    """A unit's _report.json: sizes before and after, per column and in total (on-disk bytes from the
    footers of the shards in `folder`); the partition column, which lives in the folder's name, is left out."""
    disk = on_disk_column_bytes([os.path.join(folder, s.file) for s in shards])
    rows = sum(s.impressions for s in shards)
    columns = []
    for col in (n for n in schema.names if n != partition):
        level = "key" if col in grouping.key else ("request" if col in grouping.levels.request else "impression")
        before, after = input_bytes[col], output_bytes.get(col, 0)
        columns.append({"name": col, "level": level, "logical_bytes_impression": before,
                        "logical_bytes_request": after, "logical_ratio": ratio(before, after),
                        "on_disk_bytes": disk.get(col, {}).get("compressed", 0)})
    columns.sort(key=lambda c: c["logical_bytes_impression"] - c["logical_bytes_request"], reverse=True)
    in_bytes, out_bytes = sum(f.size for f in files), sum(s.bytes for s in shards)
    logical_in = sum(b for c, b in input_bytes.items() if c != partition)
    logical_out = sum(output_bytes.values())
    return {
        "roolog_version": __version__,
        "partition": name,
        "totals": {
            "rows": rows, "requests": sum(s.requests for s in shards), "shards": len(shards),
            "input_bytes": in_bytes, "output_bytes": out_bytes, "storage_ratio": ratio(in_bytes, out_bytes),
            "logical_bytes_impression": logical_in, "logical_bytes_request": logical_out,
            "logical_ratio": ratio(logical_in, logical_out),
        },
        "impressions_per_request": lengths.summary(),
        "columns": columns,
        "demoted": list(grouping.levels.demoted),
        "null_key_rows_dropped": null_key_rows,
        "spill": spill,
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(rows / wall, 1) if wall > 0 else None,
    }


def unit_manifest(schema: pa.Schema, grouping: Grouping, declared: LogSchema | None, encodings: dict,
                  inputs: list[dict], options: dict, shards: list[ShardInfo], partition: dict | None = None) -> dict:
    """A unit's _manifest.json (written last: it is what makes the unit a finished output). `partition` is
    the record of the partition column (partition_value): the column is in `columns`, not in the shards."""
    levels = grouping.levels
    column = partition["column"] if partition else None
    return {
        "format": MANIFEST_FORMAT,
        "roolog_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": inputs,
        "options": options,
        "schema": {
            "key": list(grouping.key),
            "order_by": grouping.order_by,
            "request": [c for c in levels.request if c != column],
            "impression": [c for c in schema.names if c in levels.impression],
            "labels": list(declared.labels) if declared else [],
            "demoted": list(levels.demoted),
            "count_column": None if levels.impression else COUNT_COLUMN,
            "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
            "arrow_schema": schema_to_b64(schema),
            "partition": None if partition is None else {"column": column, "index": schema.names.index(column),
                                                         "value": partition["value"]},
        },
        "encodings": encodings,
        "shards": shards_doc(shards),
        "totals": {"shards": len(shards), "requests": sum(s.requests for s in shards),
                   "impressions": sum(s.impressions for s in shards), "bytes": sum(s.bytes for s in shards)},
    }


# ---- the run -------------------------------------------------------------------------------------------

class _Run:
    """One convert call: the locked output folder, the options, and the units converted so far."""

    def __init__(self, folder: OutputFolder, opts: ConvertOptions, options: dict, started: float,
                 partition_column: str | None):
        self.folder, self.opts, self.options, self.started = folder, opts, options, started
        self.partition_column = partition_column  # of every unit that is a partition (a named unit)
        self.reports: dict[str | None, dict] = {}
        self.skipped: list[str | None] = []
        self.inputs: list[dict] = []  # the fingerprint of the inputs read (for a partitioned OUT's manifest)
        self.null_key_rows = 0

    def convert(self, files: list[InputFile], route_by: str | None, name: str | None) -> list[str | None]:
        """Read `files` once into one unit (`name`), or one unit per value of column `route_by`."""
        if self.opts.engine == "spark":
            from .spark import convert_units  # pyspark is an optional extra: imported only when asked for

            return convert_units(self, files, route_by, name)
        opts = self.opts
        with Source(files, opts.read, read_scratch(self.folder)) as source:
            declared, key, order_by, n_shards = unit_settings(opts, source, route_by)
            units: dict[str | None, _Unit] = {}

            def unit(unit_name):
                if unit_name not in units and len(units) >= MAX_PARTITIONS:
                    raise too_many_partitions(route_by or "")
                if unit_name not in units:
                    units[unit_name] = _Unit(unit_name, self.folder, source.schema, declared, key, order_by, opts,
                                             n_shards, self.partition_column if unit_name else None)
                return units[unit_name]

            dropped = 0
            with bar(source.total_bytes, f"reading {name or ''}".strip(), "B", opts.progress,
                     unit_scale=True) as progress:
                for sb in prefetch(source.batches()):
                    batch, n_null = null_keys_dropped(sb, key, opts.drop_null_keys)
                    dropped += n_null
                    where = f"{sb.path}, rows {sb.first_row + 1}-{sb.first_row + sb.batch.num_rows}"
                    for unit_name, part in route_rows(batch, route_by, name):
                        unit(unit_name).feed(part, where)
                    progress.update(max(0, sb.bytes_done - progress.n))
                    failpoint("read")
            if not units:
                unit(name)  # no rows at all: still an output, with empty shards
            self.inputs = fingerprint(files)
            for u in units.values():
                u.null_key_rows = dropped if len(units) == 1 else 0
                self.unit_done(u.name, u.finish(files, self.inputs, self.options, self.started))
            self.rows_dropped(dropped)
            return list(units)

    def unit_done(self, name: str | None, report: dict) -> None:
        """A unit is finished in the temp folder (report and manifest written): record and announce it."""
        self.reports[name] = report
        self.opts.log("done", partition=name, output=self.folder.out, requests=report["totals"]["requests"],
                      rows=report["totals"]["rows"], shards=report["totals"]["shards"])
        for col in report["demoted"]:
            self.opts.log("warning", message=f"column {col!r} varied inside a request: stored as a list")

    def rows_dropped(self, dropped: int) -> None:
        self.null_key_rows += dropped
        if dropped:
            self.opts.log("warning", message=f"{dropped:,} rows with a null key were dropped")


def read_scratch(folder: OutputFolder) -> str:
    """Where the reader unpacks compressed Parquet inputs (it needs random access): OUT's temp folder."""
    scratch = os.path.join(folder.tmp, "read")
    os.makedirs(scratch, exist_ok=True)
    return scratch


def too_many_partitions(route_by: str) -> UsageProblem:
    return UsageProblem(f"--partition-by {route_by}: more than {MAX_PARTITIONS:,} values; partition "
                        "by a coarser column (a day, not a request)")


def route_rows(batch: pa.RecordBatch, column: str | None, name: str | None):
    """(unit name, rows) pairs: all rows to `name`, or rows split by the value of `column`."""
    if column is None:
        yield name, batch
        return
    values = batch.column(column)
    exact = sortable_key(values)  # bit-exact: NaN is one value, 0.0 and -0.0 are two
    for bits in pc.unique(exact):
        mask = exact.is_null() if not bits.is_valid else pc.fill_null(pc.equal(exact, bits), False)
        rows = batch.filter(mask)
        yield partition_name(column, python_value(rows.column(column)[0])), rows


def convert(inputs: list[str], out: str, **options) -> dict:
    """Convert impression-level logs to request-level shards in `out`; returns the run's report."""
    opts = ConvertOptions(**options)
    if opts.on_conflict not in ("error", "demote"):
        raise UsageProblem(f"--on-conflict must be error or demote, not {opts.on_conflict!r}")
    if opts.engine not in ("local", "spark"):
        raise UsageProblem(f"--engine must be local or spark, not {opts.engine!r}")
    if opts.engine == "spark" and importlib.util.find_spec("pyspark") is None:
        raise UsageProblem("--engine spark needs PySpark: pip install 'roolog[spark]' (and Java 17 or later)")
    started = time.perf_counter()
    if opts.schema_file:
        opts = replace(opts, read=with_declared_types(opts.read, load_schema(opts.schema_file)))
    found = find_inputs(list(inputs), opts.read.input_format, output=out)
    files = found.files
    if found.skipped:
        opts.log("warning", message=f"{len(found.skipped):,} file(s) not in --input-format {opts.read.input_format} "
                                    f"skipped ({found.skipped[0]}, ...)")
    schema_hash = file_xxh64(opts.schema_file) if opts.schema_file and os.path.isfile(opts.schema_file) else None
    column = _partition_column(files, opts)
    options = _output_options(opts, schema_hash) | {"partition_by": column}
    with OutputFolder(out, opts.overwrite) as folder:
        opts.log("start", output=out, inputs=len(files), partition_by=column)
        if folder.left:
            opts.log("warning", message=f"{out} holds {len(folder.left):,} file(s) roolog did not write "
                                        f"({folder.left[0]}, ...): left as they are")
        run = _Run(folder, opts, options, started, column)
        if column is None:
            _convert_flat(run, files)
            report = run.reports[None] | {"skipped": bool(run.skipped)}
        else:
            _convert_partitioned(run, files, column)
            report = _partitioned_report(run, column)
        report["left_untouched"] = folder.left
    report["wall_seconds"] = round(time.perf_counter() - started, 3)
    opts.log("summary", **{k: v for k, v in report.items() if k != "columns"})
    return report


def _convert_flat(run: _Run, files: list[InputFile]) -> None:
    folder, opts = run.folder, run.opts
    if not opts.force and _up_to_date(folder, "", files, run.options, opts.log):
        opts.log("skipped", output=folder.out)
        run.reports[None] = read_json(os.path.join(folder.out, REPORT))
        run.skipped.append(None)
        return
    run.convert(files, None, None)
    folder.publish("", folder.unit_path("_flat"))


def _convert_partitioned(run: _Run, files: list[InputFile], column: str) -> None:
    folder, opts = run.folder, run.opts
    if all(column in dict(f.partition) for f in files):  # hive folders: each partition has its own inputs
        groups: dict[str, list[InputFile]] = {}
        for f in files:
            groups.setdefault(partition_name(column, dict(f.partition)[column]), []).append(f)
        for name, group in sorted(groups.items()):
            if not opts.force and _up_to_date(folder, name, group, run.options, opts.log):
                opts.log("skipped", partition=name)
                run.skipped.append(name)
                continue
            for unit in run.convert(group, None, name):
                folder.unpublish_manifest()
                folder.publish(unit or "", folder.unit_path(unit or "_flat"))
        run.inputs = []  # each partition's manifest records its own inputs
        return
    # a data column: every input may hold every partition; the inputs decide for all partitions at once
    top = read_json(os.path.join(folder.out, MANIFEST))
    if not opts.force and top.get("options") == run.options and _unchanged(top.get("inputs", []), files) and all(
            _intact(folder, p["name"], read_json(os.path.join(folder.out, p["name"], MANIFEST)), opts.log)
            for p in top.get("partitions", [])):
        opts.log("skipped", output=folder.out)
        run.skipped.extend(p["name"] for p in top.get("partitions", []))
        run.inputs = top["inputs"]
        return
    made = [unit for unit in run.convert(files, column, None) if unit]
    folder.unpublish_manifest()
    for unit in made:
        folder.publish(unit, folder.unit_path(unit))
    for gone in _partitions_in(folder):
        if gone not in made:
            folder.remove_partition(gone)  # from inputs that no longer hold it


def _partitions_in(folder: OutputFolder) -> list[str]:
    """The partitions roolog has published in OUT: its own folders that hold its own manifest."""
    return sorted(rel for rel, entry in folder.ledger.entries.items()
                  if entry == "dir" and "/" not in rel and folder.ledger.owns(f"{rel}/{MANIFEST}"))


def _partitioned_report(run: _Run, column: str) -> dict:
    """The top-level manifest and report of a partitioned OUT: its partitions and their totals."""
    out = run.folder.out
    partitions, seen = [], []
    for name in _partitions_in(run.folder):
        manifest = read_json(os.path.join(out, name, MANIFEST))
        totals = manifest["totals"]
        partitions.append({"name": name, "requests": totals["requests"], "impressions": totals["impressions"],
                           "bytes": totals["bytes"], "skipped": name in run.skipped})
        key = manifest["schema"]["key"]
        for shard in manifest["shards"]:
            keys = pq.read_table(os.path.join(out, name, shard["file"]), columns=key)
            if keys.num_rows:
                seen.append(np.unique(key_hashes([keys.column(k).combine_chunks() for k in key])))
    hashes = np.concatenate(seen) if seen else np.zeros(0, np.uint64)
    _, counts = np.unique(hashes, return_counts=True)
    crossing = int((counts > 1).sum())
    if crossing:
        run.opts.log("warning", message=f"{crossing:,} requests have rows in more than one partition "
                                        "(kept apart, one row per partition)")
    totals = {k: sum(p[k] for p in partitions) for k in ("requests", "impressions", "bytes")}
    report = {"roolog_version": __version__, "output": out, "partition_by": column, "partitions": partitions,
              "totals": totals | {"partitions": len(partitions)}, "cross_partition_requests": crossing,
              "null_key_rows_dropped": run.null_key_rows,
              "converted": sorted(n for n in run.reports if n), "skipped": sorted(n for n in run.skipped if n)}
    manifest = {"format": MANIFEST_FORMAT, "roolog_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "options": run.options, "inputs": run.inputs,
                "partition_by": column, "partitions": partitions, "totals": report["totals"],
                "cross_partition_requests": crossing}
    run.folder.write_top(REPORT, report)
    run.folder.write_top(MANIFEST, manifest)
    return report


