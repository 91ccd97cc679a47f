"""`roolog.convert`: impression-level logs -> request-level shards, manifest and report.

source -> record batches -> StreamGrouper -> run batches -> RunSpill (hash partitions)
       -> RunSpill.fold (scattered requests) -> ShardWriter -> report, manifest (last)
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from . import __version__
from .errors import UsageProblem
from .group import N_COL, Grouping, StreamGrouper
from .progress import bar
from .report import LengthHistogram, on_disk_column_bytes, ratio
from .schema import Levels, LogSchema, check_declared, check_key_and_order, load_schema
from .shards import (COUNT_COLUMN, OutputFolder, ShardInfo, ShardWriter, schema_to_b64, shards_doc)
from .sources import ReadOptions, Source, resolve_inputs
from .spill import RunSpill

SHARD_TARGET_BYTES = 256 << 20  # default shard count: one shard per this much input


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
    overwrite: bool = False
    drop_null_keys: bool = False
    progress: bool = True


def _resolve_schema(opts: ConvertOptions, schema: pa.Schema) -> tuple[LogSchema | None, tuple[str, ...], str | None]:
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
        check_declared(declared, schema, opts.schema_file)
    return declared, key, order_by


def _initial_levels(declared: LogSchema | None, schema: pa.Schema, key, on_conflict: str) -> Levels:
    columns = [n for n in schema.names if n not in key]
    if declared is None:  # inferred: every column starts request-level and moves when it first varies
        return Levels(request=columns, impression=[])
    request = [c for c in columns if c in declared.request]
    fixed = set(request) if on_conflict == "error" else set()
    return Levels(request=request, impression=[c for c in columns if c not in request], fixed=fixed,
                  declared=set(request))


class _ColumnBytes:
    def __init__(self, names: list[str]):
        self.bytes = dict.fromkeys(names, 0)

    def add(self, batch: pa.RecordBatch) -> None:
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            if name in self.bytes:
                self.bytes[name] += col.nbytes


def _output_batch(runs: pa.RecordBatch, names: list[str], with_count: bool) -> pa.RecordBatch:
    batch = runs.select(names)
    if with_count:
        batch = batch.append_column(COUNT_COLUMN, runs.column(N_COL))
    return batch


def convert(inputs: list[str], out: str, **options) -> dict:
    """Convert impression-level logs to request-level shards in `out`; returns the run's report."""
    opts = ConvertOptions(**options)
    if opts.on_conflict not in ("error", "demote"):
        raise UsageProblem(f"--on-conflict must be error or demote, not {opts.on_conflict!r}")
    started = time.perf_counter()
    files = resolve_inputs(list(inputs), opts.read.input_format)
    with OutputFolder(out, opts.overwrite) as folder, Source(files, opts.read, folder.tmp) as source:
        declared, key, order_by = _resolve_schema(opts, source.schema)
        levels = _initial_levels(declared, source.schema, key, opts.on_conflict)
        grouping = Grouping(source.schema, key, order_by, levels)
        n_shards = opts.shards or max(1, math.ceil(source.total_bytes / SHARD_TARGET_BYTES))
        spill = RunSpill(os.path.join(folder.tmp, "spill"), n_shards)
        streamer = StreamGrouper(grouping, opts.drop_null_keys, carry_bytes=max(1 << 20, opts.memory_limit // 4))
        input_bytes = _ColumnBytes(source.schema.names)

        with bar(source.total_bytes, "reading", "B", opts.progress, unit_scale=True) as progress:
            for sb in source.batches():
                input_bytes.add(sb.batch)
                for runs in streamer.feed(sb):
                    spill.write(runs)
                progress.update(max(0, sb.bytes_done - progress.n))
            for runs in streamer.flush():
                spill.write(runs)
            spill.close()
            progress.update(source.total_bytes - progress.n)

        for p in range(spill.partitions):  # requests scattered over the input: fold their runs
            spill.fold(p, grouping, max_bytes=opts.memory_limit // 4)

        names = list(source.schema.names)
        with_count = not levels.impression
        run_schema = grouping.run_schema()
        out_schema = pa.schema([run_schema.field(n) for n in names]
                               + ([pa.field(COUNT_COLUMN, pa.int64())] if with_count else []))
        lengths = LengthHistogram()
        output_bytes = _ColumnBytes(out_schema.names)
        shards: list[ShardInfo] = []
        with bar(n_shards, "writing", "shard", opts.progress) as progress:
            for s in range(n_shards):
                writer = ShardWriter(folder.shard_path(s), out_schema, opts.compression_level)
                for runs in spill.read(s, grouping):
                    n = runs.column(N_COL).to_numpy()
                    lengths.add(n)
                    batch = _output_batch(runs, names, with_count)
                    output_bytes.add(batch)
                    writer.write(batch, int(n.sum()))
                shards.append(writer.close())
                progress.update(1)

        wall = time.perf_counter() - started
        disk = on_disk_column_bytes([folder.shard_path(s) for s in range(n_shards)])
        report = _report(out, files, source, grouping, streamer, shards, lengths, input_bytes, output_bytes,
                         disk, wall, spill)
        manifest = _manifest(files, opts, source.schema, grouping, declared, with_count, shards)
        folder.publish(shards, report, manifest)
    return report


def _report(out, files, source, grouping, streamer, shards, lengths, input_bytes, output_bytes, disk, wall,
            spill) -> dict:
    rows = sum(s.impressions for s in shards)
    columns = []
    for name in source.schema.names:
        level = "key" if name in grouping.key else ("request" if name in grouping.levels.request else "impression")
        before, after = input_bytes.bytes[name], output_bytes.bytes.get(name, 0)
        columns.append({"name": name, "level": level, "logical_bytes_impression": before,
                        "logical_bytes_request": after, "logical_ratio": ratio(before, after),
                        "on_disk_bytes": disk.get(name, {}).get("compressed", 0)})
    columns.sort(key=lambda c: c["logical_bytes_impression"] - c["logical_bytes_request"], reverse=True)
    in_bytes, out_bytes = sum(f.size for f in files), sum(s.bytes for s in shards)
    logical_in, logical_out = sum(input_bytes.bytes.values()), sum(output_bytes.bytes.values())
    return {
        "roolog_version": __version__,
        "output": out,
        "totals": {
            "rows": rows, "requests": sum(s.requests for s in shards), "shards": len(shards),
            "input_bytes": in_bytes, "output_bytes": out_bytes, "storage_ratio": ratio(in_bytes, out_bytes),
            "logical_bytes_impression": logical_in, "logical_bytes_request": logical_out,
            "logical_ratio": ratio(logical_in, logical_out),
        },
        "impressions_per_request": lengths.summary(),
        "columns": columns,
        "demoted": list(grouping.levels.demoted),
        "null_key_rows_dropped": streamer.null_key_rows,
        "spill": {"bytes": spill.bytes_written, "most_parts": spill.most_parts},
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(rows / wall, 1) if wall > 0 else None,
    }


def _manifest(files, opts: ConvertOptions, schema: pa.Schema, grouping: Grouping, declared, with_count, shards):
    levels = grouping.levels
    return {
        "format": "roolog/1",
        "roolog_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": [{"path": os.path.abspath(f.path), "bytes": f.size, "mtime": f.mtime} for f in files],
        "options": {"compression_level": opts.compression_level, "on_conflict": opts.on_conflict,
                    "drop_null_keys": opts.drop_null_keys, "read": asdict(opts.read)},
        "schema": {
            "key": list(grouping.key),
            "order_by": grouping.order_by,
            "request": list(levels.request),
            "impression": [c for c in schema.names if c in levels.impression],
            "labels": list(declared.labels) if declared else [],
            "demoted": list(levels.demoted),
            "count_column": COUNT_COLUMN if with_count else None,
            "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
            "arrow_schema": schema_to_b64(schema),
        },
        "shards": shards_doc(shards),
        "totals": {"shards": len(shards), "requests": sum(s.requests for s in shards),
                   "impressions": sum(s.impressions for s in shards), "bytes": sum(s.bytes for s in shards)},
    }
