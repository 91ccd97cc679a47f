"""A made unit -> its report and manifest, written beside its shards (manifest last); and the top-level
report and manifest of a partitioned OUT. The same code for every engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..group.figures import LengthHistogram, ratio
from ..group.grouper import Grouping
from ..group.keys import key_hashes
from ..group.schema import LogSchema, label_like
from ..read.inputs import InputFile, InputRecord, file_xxh64
from ..version import __version__
from .anatomy import ColumnBytes, written_bytes
from .manifest import (
    COUNT_COLUMN,
    MANIFEST,
    REPORT,
    ColumnFigures,
    EngineInfo,
    PartitionedManifest,
    PartitionedReport,
    PartitionEntry,
    PartitionValue,
    ReportTotals,
    ShardRecord,
    SpillFigures,
    UnitManifest,
    UnitReport,
    UnitSchema,
    UnitTotals,
    now,
    read_manifest,
    schema_to_b64,
    write_json_atomic,
)
from .outdir import OutputFolder


@dataclass
class UnitResult:
    """One unit an engine made: its shards in `folder`, and what its report and manifest record."""

    name: str | None  # None: OUT itself; else the partition's folder name
    folder: str  # where its shards are, in OUT's temp folder (report and manifest go beside them)
    schema: pa.Schema  # the input's schema (unified over the files)
    grouping: Grouping  # key, order and the final levels
    declared: LogSchema | None
    encodings: dict
    shards: list[ShardRecord]
    lengths: LengthHistogram  # impressions per request
    input_bytes: dict[str, int]  # Arrow bytes per column as read
    output_bytes: dict[str, int]  # Arrow bytes per column as written
    spill: SpillFigures
    partition: str | None  # the partition column (in the folder's name, not in the shards)
    partition_value: str | None  # its one value, base64 Arrow IPC (layout.partition_value)
    null_key_rows: int
    engine: EngineInfo


def finish_unit(unit: UnitResult, files: list[InputFile], inputs: list[InputRecord], options: dict,
                wall: float) -> UnitReport:
    """Write the unit's report, then its manifest (what makes it finished), into its folder."""
    report = unit_report(unit, files, wall, options["compression_level"])
    write_json_atomic(os.path.join(unit.folder, REPORT), report.to_json())
    write_json_atomic(os.path.join(unit.folder, MANIFEST), unit_manifest(unit, inputs, options).to_json())
    return report


def unit_report(unit: UnitResult, files: list[InputFile], wall: float, run_level: int) -> UnitReport:
    """Sizes before and after, per column and in total (on-disk bytes read from the unit's shards, split into
    values, levels, page headers and footer: roolog.write.anatomy); the partition column, which lives in the
    folder's name, is left out."""
    grouping, partition = unit.grouping, unit.partition
    disk = written_bytes(unit.folder, [s.file for s in unit.shards], unit.encodings, run_level)
    rows = sum(s.impressions for s in unit.shards)
    columns = []
    for col in (n for n in unit.schema.names if n != partition):
        level = "key" if col in grouping.key else ("request" if col in grouping.levels.request else "impression")
        before, after = unit.input_bytes[col], unit.output_bytes.get(col, 0)
        on_disk = disk.columns.get(col, ColumnBytes())
        columns.append(ColumnFigures(col, level, before, after, ratio(before, after), on_disk.compressed,
                                     on_disk.values, on_disk.levels, on_disk.page_headers, on_disk.footer))
    columns.sort(key=lambda c: c.logical_bytes_impression - c.logical_bytes_request, reverse=True)
    in_bytes, out_bytes = sum(f.size for f in files), sum(s.bytes for s in unit.shards)
    logical_in = sum(b for c, b in unit.input_bytes.items() if c != partition)
    logical_out = sum(unit.output_bytes.values())
    totals = ReportTotals(rows=rows, requests=sum(s.requests for s in unit.shards), shards=len(unit.shards),
                          input_bytes=in_bytes, output_bytes=out_bytes, storage_ratio=ratio(in_bytes, out_bytes),
                          logical_bytes_impression=logical_in, logical_bytes_request=logical_out,
                          logical_ratio=ratio(logical_in, logical_out), file_footer_bytes=disk.file_footer)
    return UnitReport(partition=unit.name, totals=totals, impressions_per_request=unit.lengths.summary(),
                      columns=columns, demoted=list(grouping.levels.demoted),
                      null_key_rows_dropped=unit.null_key_rows, spill=unit.spill, wall_seconds=round(wall, 3),
                      rows_per_second=round(rows / wall, 1) if wall > 0 else None, engine=unit.engine)


def unit_manifest(unit: UnitResult, inputs: list[InputRecord], options: dict) -> UnitManifest:
    """What the unit holds and what it was made from. The partition column is in `columns`, not in the
    shards; its exact value is recorded (PartitionValue)."""
    schema, levels, column = unit.schema, unit.grouping.levels, unit.partition
    partition = None
    if column is not None and unit.partition_value is not None:
        partition = PartitionValue(column, schema.names.index(column), unit.partition_value)
    spec = UnitSchema(
        key=list(unit.grouping.key), order_by=unit.grouping.order_by,
        request=[c for c in levels.request if c != column],
        impression=[c for c in schema.names if c in levels.impression],
        labels=list(unit.declared.labels) if unit.declared else guessed_labels(unit), demoted=list(levels.demoted),
        count_column=None if levels.impression else COUNT_COLUMN,
        columns=[{"name": f.name, "type": str(f.type)} for f in schema], arrow_schema=schema_to_b64(schema),
        partition=partition)
    shards = unit.shards
    totals = UnitTotals(shards=len(shards), requests=sum(s.requests for s in shards),
                        impressions=sum(s.impressions for s in shards), bytes=sum(s.bytes for s in shards))
    return UnitManifest(roolog_version=__version__, created=now(), inputs=inputs, options=options,
                        schema=spec, encodings=unit.encodings, shards=shards, totals=totals)


def guessed_labels(unit: UnitResult) -> list[str]:
    """Without a schema file, the labels `roolog infer-schema` would suggest: impression-level integer or
    boolean columns named like a target (click, label, ...) holding only 0 and 1 (and nulls), judged from
    the min and max in the shards' footers."""
    names = [c for c in unit.grouping.levels.impression if label_like(c)
             and c != unit.partition and _binary_type(unit.schema.field(c).type)]
    seen: dict[str, list] = {c: [] for c in names}
    for shard in unit.shards:
        metadata = pq.ParquetFile(os.path.join(unit.folder, shard.file)).metadata
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            for j in range(group.num_columns):
                chunk = group.column(j)
                name = chunk.path_in_schema.split(".")[0]
                if name in seen and chunk.statistics is not None and chunk.statistics.has_min_max:
                    seen[name] += [chunk.statistics.min, chunk.statistics.max]
    return [c for c in names if seen[c] and all(v in (0, 1) for v in seen[c])]


def _binary_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_boolean(t)


def finish_partitioned(folder: OutputFolder, column: str, options: dict, inputs: list[InputRecord],
                       converted: list[str], skipped: list[str], null_key_rows: int,
                       log) -> PartitionedReport:
    """The top-level report and manifest of a partitioned OUT, from the partitions published in it."""
    out = folder.out
    partitions, seen = [], []
    for name in folder.published_partitions():
        manifest = read_manifest(os.path.join(out, name))
        assert isinstance(manifest, UnitManifest)
        totals = manifest.totals
        partitions.append(PartitionEntry(name, totals.requests, totals.impressions, totals.bytes, name in skipped,
                                         file_xxh64(os.path.join(out, name, MANIFEST))))
        key = manifest.schema.key
        for shard in manifest.shards:
            keys = pq.read_table(os.path.join(out, name, shard.file), columns=key)
            if keys.num_rows:
                seen.append(np.unique(key_hashes([keys.column(k).combine_chunks() for k in key])))
    hashes = np.concatenate(seen) if seen else np.zeros(0, np.uint64)
    _, counts = np.unique(hashes, return_counts=True)
    crossing = int((counts > 1).sum())
    if crossing:
        log("warning", message=f"{crossing:,} requests have rows in more than one partition "
                               "(kept apart, one row per partition)")
    summed = {k: sum(getattr(p, k) for p in partitions) for k in ("requests", "impressions", "bytes")}
    summed["partitions"] = len(partitions)
    report = PartitionedReport(output=out, partition_by=column, partitions=partitions, totals=summed,
                               cross_partition_requests=crossing, null_key_rows_dropped=null_key_rows,
                               converted=sorted(converted), skipped=sorted(skipped))
    manifest = PartitionedManifest(roolog_version=__version__, created=now(), options=options,
                                   inputs=inputs, partition_by=column, partitions=partitions, totals=summed,
                                   cross_partition_requests=crossing)
    folder.write_top(REPORT, report.to_json())
    folder.write_top(MANIFEST, manifest.to_json())
    return report
