"""The local engine: a job's rows read, grouped and written in this process, in bounded memory.

    source -> record batches -> route_rows -> one RequestPipeline per unit:
      StreamGrouper -> run batches -> RunSpill (one partition per shard) -> fold (scattered requests)
    -> request batches, shard by shard -> ShardWriter
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

import pyarrow as pa

from ..errors import RoologError
from ..group.figures import LengthHistogram
from ..group.grouper import null_keys_dropped
from ..group.ordering import in_order
from ..group.pipeline import RequestPipeline
from ..log import bar
from ..read.inputs import fingerprint, staged
from ..read.prefetch import prefetch
from ..read.sources import Source
from ..write.failpoint import failpoint
from ..write.finish import UnitResult
from ..write.layout import (
    RowsToShard,
    choose_settings,
    output_layout,
    partition_value,
    request_order,
    route_rows,
    sample_requests,
    shard_file,
    write_shard,
)
from ..write.manifest import EngineInfo, ShardRecord, SpillFigures
from ..write.outdir import OutputFolder
from ..write.shards import ShardWriter
from .engine import JobResult
from .options import OutputOptions, RunOptions
from .plan import MAX_PARTITIONS, Job, UnitSettings, too_many_partitions, unit_settings


class _Unit:
    """One unit while its rows stream in, then the shards it becomes."""

    def __init__(self, name: str | None, folder: OutputFolder, schema: pa.Schema, settings: UnitSettings,
                 memory_limit: int, partition: str | None, input_bytes: int):
        self.name, self.partition, self.settings, self.schema = name, partition, settings, schema
        self.input_bytes = input_bytes  # of the files the unit is read from
        self.dir = folder.unit_path(name or "_flat")
        os.makedirs(self.dir)
        self.pipeline = RequestPipeline(schema, settings.key, settings.order_by, settings.initial_levels(schema),
                                        RequestPipeline.spill_dir(folder.tmp, name), settings.n_shards, memory_limit,
                                        settings.cluster_by)

    def write(self, output: OutputOptions, progress: bool, null_key_rows: int) -> UnitResult:
        """Fold, choose the encodings on the first requests, and write every shard."""
        pipeline = self.pipeline
        pipeline.finish_input()
        failpoint("spill")
        grouping = pipeline.grouping
        out_schema, rows_of = output_layout(grouping, self.partition)
        requests = (pipeline.requests(s) for s in range(pipeline.shards))
        encodings = choose_settings(grouping, out_schema, sample_requests(requests, rows_of, out_schema),
                                    output.compression_level, self.input_bytes)
        value = partition_value((pipeline.requests(s) for s in range(pipeline.shards)), self.partition)
        written = self._write_shards(output, progress, out_schema, rows_of, encodings)
        lengths, output_bytes = LengthHistogram(), dict.fromkeys(out_schema.names, 0)
        for _, shard_lengths, shard_bytes in written:
            lengths.add_counts(shard_lengths.counts)
            for col, n in shard_bytes.items():
                output_bytes[col] += n
        shards = [record for record, _, _ in written]
        spill = SpillFigures(pipeline.spill.bytes_written, pipeline.spill.most_parts)
        return UnitResult(self.name, self.dir, self.schema, grouping, self.settings.declared, encodings, shards,
                          lengths, pipeline.input_bytes, output_bytes, spill, self.partition, value, null_key_rows,
                          EngineInfo("local"))

    def _write_shards(self, output: OutputOptions, progress: bool, out_schema: pa.Schema, rows_of: RowsToShard,
                      encodings: dict) -> list[tuple[ShardRecord, LengthHistogram, dict[str, int]]]:
        """Every shard, several at a time (a shard's Parquet encoding is one thread): as many as there are
        cores and as the memory limit holds at 6 row groups each (two being encoded, the buffer, reads);
        each shard's figures on their own, in shard order. A failure stops the others at their next batch."""
        pipeline, stop = self.pipeline, threading.Event()
        writers = max(1, min(os.cpu_count() or 1, pipeline.memory_limit // (6 * output.row_groups.bytes)))
        order = request_order(encodings)

        def requests(s: int) -> Iterator[pa.RecordBatch]:
            if not order:
                return pipeline.requests(s)
            return in_order(pipeline.requests(s), order, os.path.join(pipeline.spill.folder, f"order-{s:05d}"),
                            pipeline.memory_limit // (6 * writers), pipeline.grouping.conform)

        def write(s: int) -> tuple[ShardRecord, LengthHistogram, dict[str, int]]:
            lengths, output_bytes = LengthHistogram(), dict.fromkeys(out_schema.names, 0)
            writer = ShardWriter(os.path.join(self.dir, shard_file(s)), out_schema, output.compression_level,
                                 output.row_groups, encodings)
            record = write_shard(writer, _until(stop, prefetch(requests(s))), rows_of, lengths,
                                 output_bytes)
            failpoint("write")
            return record, lengths, output_bytes

        with bar(pipeline.shards, f"writing {self.name or ''}".strip(), "shard", progress) as shown, \
                ThreadPoolExecutor(max_workers=writers, thread_name_prefix="roolog-shard") as pool:
            futures = [pool.submit(write, s) for s in range(pipeline.shards)]
            try:
                for future in as_completed(futures):
                    future.result()  # the first failure is raised here
                    shown.update(1)
                return [future.result() for future in futures]
            finally:
                stop.set()  # on a failure (or Ctrl-C) the other shards stop at their next batch
                for future in futures:
                    future.cancel()


def _until(stop: threading.Event, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if stop.is_set():
            raise RoologError("stopped: another shard failed")
        yield batch


class LocalEngine:
    """Makes a job's units in this process (roolog.run.engine.Engine)."""

    def __init__(self, folder: OutputFolder, output: OutputOptions, run: RunOptions):
        self.folder, self.output, self.run = folder, output, run

    def convert(self, job: Job) -> JobResult:
        scratch = self.folder.read_scratch()
        with staged(list(job.files), scratch, self.run.progress) as files, \
                Source(files, self.output.read, scratch) as source:
            settings = unit_settings(self.output, source, job.route_by, one_of_many=job.name is not None)
            units: dict[str | None, _Unit] = {}

            def unit(name: str | None) -> _Unit:
                if name not in units:
                    if len(units) >= MAX_PARTITIONS:
                        raise too_many_partitions(job.route_by or "")
                    units[name] = _Unit(name, self.folder, source.schema, settings, self.run.memory_limit,
                                        job.partition_column if name else None, source.total_bytes)
                return units[name]

            dropped = 0
            with bar(source.total_bytes, f"reading {job.name or ''}".strip(), "B", self.run.progress,
                     unit_scale=True) as progress:
                for sb in prefetch(source.batches()):
                    batch, n_null = null_keys_dropped(sb, settings.key, self.output.drop_null_keys)
                    dropped += n_null
                    for name, part in route_rows(batch, job.route_by, job.name):
                        unit(name).pipeline.feed(part, sb.where, (sb.path, sb.piece))
                    progress.update(max(0, sb.bytes_done - progress.n))
                    failpoint("read")
            if not units:
                unit(job.name)  # no rows at all: still an output, with empty shards
            inputs = fingerprint(files)
            made = [u.write(self.output, self.run.progress, dropped if len(units) == 1 else 0)
                    for u in units.values()]
            return JobResult(made, inputs, dropped)
