"""`convert --engine spark`: the local engine's conversion run by Spark tasks, with the same output.

Spark distributes the work, moves the data and orders it; roolog's own code reads, groups and writes it.
Nothing is grouped by Spark SQL (no collect_list, whose order Spark does not guarantee after a shuffle).
The local engine's pipeline is cut at its spill: the streaming half runs per input piece, the fold per shard.

  1. read     one task per piece of an input file (a text file, or about 128 MB of a Parquet file's row
              groups: sources.Piece): roolog's reader and StreamGrouper (the local engine's batches, runs
              and checks, so the same errors at the same places); the runs (one per contiguous request)
              cut by shard = xxh64(key) mod N into Arrow IPC, keyed (unit, shard, input position)
  2. shuffle  repartitionAndSortWithinPartitions: one Spark partition per shard, its pieces in input order
  3. group    per shard, the local engine's RunSpill and fold (requests scattered in a file or over files
              become one run): the shard's requests, in input order, to an Arrow IPC file in OUT's temp folder
  4. driver   the unit's levels (a column that varied inside any request is impression-level) and the
              Parquet encodings, chosen on the first requests exactly as the local engine chooses them
  5. write    one task per shard: its requests, conformed to the final levels, through ShardWriter
  6. driver   the units made (roolog.write.finish.UnitResult), which finish turns into report and manifest

A task writes each file under a task-attempt name in a folder of its own and commits it by rename, so a
retried or speculative attempt never leaves a partial or duplicate file where the next step reads. Bad data
(an unreadable file, a null key, a declared request-level column that varies) comes back as a record, not
an exception: the driver raises the one the local engine would have met first.

Input files, OUT and its temp folder must be at the same path on the driver and on every executor (a
shared file system); local mode is local[*] on this machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pyarrow as pa

from .. import errors
from ..errors import RoologError
from ..group.figures import LengthHistogram, add_column_bytes
from ..group.grouper import SEQ_COL, Grouping, StreamGrouper, null_keys_dropped
from ..group.ordering import RequestSorter, in_order, read_runs, shard_runs
from ..group.schema import Levels
from ..group.spill import RunSpill, split_by_shard
from ..read.inputs import InputFile, fingerprint
from ..read.sources import Source
from ..read.stores import object_xxh64
from ..write.finish import UnitResult
from ..write.layout import (
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
from ..write.shards import RowGroupSize, ShardWriter
from .engine import JobResult
from .options import OutputOptions, RunOptions
from .plan import MAX_PARTITIONS, Job, UnitSettings, too_many_partitions, unit_settings

_IPC = pa.ipc.IpcWriteOptions(compression="lz4")  # the grouped requests between the group and write steps
_META = -1  # the shard of a record that is not rows: a file's statistics or an error
_FOLD = 1 << 62  # the position of what a shard finds after the last row (folding scattered requests)
_FILE_BITS = 40  # input position = file index << 40 | row in the file
_JVM_NOISE = ("WARNING: Using incubator modules",)  # printed by every Spark 4 JVM at start
_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark: %p %c{1}: %m%n%ex{short}
"""
# Spark prints 'Setting default log level to "WARN"' unless the logger it starts with has a level of its own
_QUIET_LOGGERS = ("org.apache.spark.repl.Main", "org.apache.spark.deploy.SparkSubmit",
                  "org.apache.spark.api.python.PythonGatewayServer", "org.apache.spark.SparkContext")


# ---- the session ---------------------------------------------------------------------------------------

def spark_session(master: str | None = None):
    """The SparkSession to convert with: the one already running (spark-submit, a notebook, the tests), else
    a new one on `master` (default local[*]), quiet: errors only, no UI, no progress bar."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is not None or os.environ.get("PYSPARK_GATEWAY_PORT"):
        return SparkSession.builder.getOrCreate()  # its master and settings were chosen by whoever started it
    master = master or "local[*]"
    folder = tempfile.mkdtemp(prefix="roolog-spark-")
    try:
        log_config = os.path.join(folder, "log4j2.properties")
        with open(log_config, "w") as fh:
            fh.write(_LOG4J2 + "".join(f"logger.q{i}.name = {name}\nlogger.q{i}.level = error\n"
                                       for i, name in enumerate(_QUIET_LOGGERS)))
        conf = (SparkConf().setMaster(master).setAppName("roolog convert")
                .set("spark.ui.showConsoleProgress", "false")
                .set("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log_config}"))
        if master.startswith("local"):
            conf.set("spark.ui.enabled", "false")
        # the executors' Python: this one (where roolog is installed) unless PYSPARK_PYTHON names another, as it
        # must on a cluster whose machines keep roolog's Python elsewhere
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        sc = SparkContext(conf=conf, gateway=_quiet_gateway(conf))
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # read once, when the JVM starts
    sc.setLogLevel("ERROR")
    return SparkSession(sc)


def _quiet_gateway(conf):
    """Start Spark's JVM with its stderr passed on line by line, without the lines every start prints."""
    from pyspark.java_gateway import launch_gateway

    gateway = launch_gateway(conf, popen_kwargs={"stderr": subprocess.PIPE})

    def relay(stream) -> None:
        for line in iter(stream.readline, b""):
            text = line.decode(errors="replace")
            if not text.startswith(_JVM_NOISE):
                sys.stderr.write(text)
                sys.stderr.flush()

    threading.Thread(target=relay, args=(gateway.proc.stderr,), daemon=True, name="roolog-spark-stderr").start()
    return gateway


def _run_job(job: Callable[[], list]) -> list:
    """Run a Spark action; a failed job (after Spark's retries) is one line, exit code 1."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    try:
        return job()
    except (PySparkException, Py4JError) as err:
        raise RoologError(f"the Spark job failed: {_cause(str(err))}") from None


def _cause(text: str) -> str:
    """The Python exception at the end of a task's traceback ("OSError: ..."), else the first line."""
    found = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*)$", text, re.MULTILINE)
    return found[-1].strip() if found else (text.strip().splitlines() or ["unknown error"])[0]


# ---- what the tasks are told, and what they tell back ---------------------------------------------------

@dataclass(frozen=True)
class _TaskPlan:
    """Everything a read or group task needs; shipped to the executors with the task."""

    source: Source  # the driver's: the input files, reading options and unified schema
    settings: UnitSettings  # key, order column, schema file, shard count
    drop_null_keys: bool
    route_by: str | None  # a column whose values are units, or None: every row to unit `name`
    name: str | None
    partitions: int
    memory_limit: int
    work: str  # OUT's temp folder/spark-...: the grouped requests and the attempts' files
    failpoint: str | None  # tests: ROOLOG_SPARK_FAILPOINT=group|write[:always] fails tasks while they write

    def grouping(self) -> Grouping:
        schema = self.source.schema
        return Grouping(schema, self.settings.key, self.settings.order_by, self.settings.initial_levels(schema))


Moved = list[tuple[str, list[int]]]  # (column, position): when a grouping moved it to impression level


@dataclass(frozen=True)
class _BadData:
    """Bad data a task met (sent back as a record, not raised: the driver raises the earliest)."""

    message: str
    error_class: str  # a class of roolog.errors
    position: tuple[int, ...]  # (0, file, piece) while reading, (1, shard) while folding: the local order


@dataclass(frozen=True)
class _PieceRead:
    """What a read task found in its piece of a file, by unit."""

    file: int
    piece: int
    input_bytes: dict[str, dict[str, int]]
    first: dict[str, list[int]]  # where each unit's first row is (file, row, place in batch)
    moved: dict[str, Moved]
    dropped: int


@dataclass(frozen=True)
class _ShardGrouped:
    """What a group task did with one shard of one unit."""

    unit: str
    shard: int
    requests: int
    moved: Moved
    error: _BadData | None
    spill: SpillFigures


@dataclass(frozen=True)
class _ShardWritten:
    unit: str
    shard: int
    info: ShardRecord
    lengths: list[int]  # requests per impression count
    output_bytes: dict[str, int]


_Record = _BadData | _PieceRead | _ShardGrouped  # what the group job collects


def _unit_id(name: str | None) -> str:
    return name or ""  # sortable: "" (the one unit of an unpartitioned OUT) next to partition names


def _runs_path(work: str, unit: str, shard: int) -> str:
    return os.path.join(work, "runs", unit or "_flat", f"runs-{shard:05d}.arrow")


def _cluster_path(work: str, unit: str) -> str:
    return os.path.join(work, "cluster", unit or "_flat")


def _attempt_path(work: str, final: str) -> str:
    """Where a task attempt writes `final` before it commits it by rename: a folder of its own, so what a
    failed or duplicate attempt leaves is never mistaken for a finished file (it goes with the temp folder)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    attempt = f"{context.taskAttemptId()}" if context else f"driver-{os.getpid()}"
    return os.path.join(work, "attempts", f"{attempt}-{os.path.basename(final)}")


def _maybe_fail(plan_failpoint: str | None, step: str) -> None:
    """Tests: fail this task attempt halfway through writing (the first attempt only, unless :always)."""
    if not plan_failpoint or plan_failpoint.split(":")[0] != step:
        return
    from pyspark import TaskContext

    context = TaskContext.get()
    if plan_failpoint.endswith(":always") or (context is not None and context.attemptNumber() == 0):
        raise RuntimeError(f"roolog failpoint {plan_failpoint} (a task attempt dies while writing)")


def _local_dir() -> str | None:
    """The executor's scratch space (Spark tells its Python workers in SPARK_LOCAL_DIRS)."""
    dirs = [d for d in os.environ.get("SPARK_LOCAL_DIRS", "").split(",") if d]
    return dirs[0] if dirs else None


def _bad_data(err: RoologError, position: tuple[int, ...]) -> _BadData:
    return _BadData(str(err), type(err).__name__, position)


# ---- 1. read: one input file -> its requests (runs), in pieces by shard --------------------------------

class _Moves:
    """The columns a grouping moved to impression level (they varied inside a request), in the order it
    moved them: position (file and piece, or _FOLD, then a count) lets the driver replay the local order."""

    def __init__(self, levels: Levels, first: list[int]):
        self.levels, self.first, self.known = levels, first, len(levels.impression)
        self.moved: Moved = []

    def note(self) -> None:
        for col in self.levels.impression[self.known:]:
            self.moved.append((col, [*self.first, len(self.moved)]))
        self.known = len(self.levels.impression)


class _PieceGrouper:
    """The local engine's streaming step over one piece of one file (one per unit the rows go to): the same
    batches, the same runs and the same checks, so the same error at the same place."""

    def __init__(self, plan: _TaskPlan, index: int, piece: int):
        self.plan, self.index, self.piece = plan, index, piece
        self.streams: dict[str, tuple[StreamGrouper, _Moves]] = {}
        self.input_bytes: dict[str, dict[str, int]] = {}
        self.first: dict[str, list[int]] = {}

    def stream(self, unit: str) -> tuple[StreamGrouper, _Moves]:
        if unit not in self.streams:
            grouping = self.plan.grouping()
            streamer = StreamGrouper.within(grouping, self.plan.memory_limit)  # as local
            first_row = self.plan.source.pieces[self.plan.source.files[self.index].path][self.piece].first_row
            streamer.rows_seen = self.index << _FILE_BITS | first_row  # input positions of all files in one int64
            self.streams[unit] = (streamer, _Moves(grouping.levels, [self.index, self.piece]))
        return self.streams[unit]

    def feed(self, sb, batch: pa.RecordBatch, where: str) -> Iterator[tuple[str, pa.RecordBatch]]:
        for j, (name, part) in enumerate(route_rows(batch, self.plan.route_by, self.plan.name)):
            unit = _unit_id(name)
            self.first.setdefault(unit, [self.index, sb.first_row, j])
            add_column_bytes(self.input_bytes.setdefault(unit, dict.fromkeys(part.schema.names, 0)), part)
            streamer, moves = self.stream(unit)
            for runs in streamer.feed(part, where):
                yield unit, runs
            moves.note()

    def flush(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        for unit, (streamer, moves) in self.streams.items():
            for runs in streamer.flush():
                yield unit, runs
            moves.note()


def _read_piece(plan: _TaskPlan, task: tuple[int, int]) -> Iterator[tuple[tuple, bytes | _Record]]:
    """One piece of one input file (sources.Piece) -> its runs cut by shard ((unit, shard, input position of
    the first run), Arrow IPC bytes) in input order, then a record of what the piece held, after the error that
    stopped it if one did (the local engine would have stopped there too)."""
    index, piece = task
    grouper = _PieceGrouper(plan, index, piece)
    dropped = 0
    try:
        for sb in plan.source.batches(only=task):
            batch, n_null = null_keys_dropped(sb, plan.settings.key, plan.drop_null_keys)
            dropped += n_null
            for unit, runs in grouper.feed(sb, batch, sb.where):
                yield from _cut_by_shard(plan, unit, runs)
        for unit, runs in grouper.flush():
            yield from _cut_by_shard(plan, unit, runs)
    except RoologError as err:
        yield ("", _META, index), _bad_data(err, (0, index, piece))
    moved = {unit: moves.moved for unit, (_, moves) in grouper.streams.items()}
    yield ("", _META, index), _PieceRead(index, piece, grouper.input_bytes, grouper.first, moved, dropped)


def _cut_by_shard(plan: _TaskPlan, unit: str, runs: pa.RecordBatch) -> Iterator[tuple[tuple, bytes]]:
    """Run batches split by shard = xxh64(key) mod N (the key hash each run carries), as the local
    engine's spill splits them; each piece keyed by the input position of its first run."""
    for s, piece in split_by_shard(runs, plan.settings.n_shards):
        yield (unit, s, int(piece.column(SEQ_COL)[0].as_py())), _to_ipc(piece)


def _to_ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:  # uncompressed: Spark compresses the shuffle
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.RecordBatch:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_next_batch()


def _partition_of(plan: _TaskPlan, key: tuple) -> int:
    """The Spark partition of a piece: its shard when the run has one unit (a partition per shard), else a
    stable hash of (unit, shard). Records that are not rows all go to partition 0."""
    unit, shard = key[0], key[1]
    if shard == _META:
        return 0
    if plan.route_by is None:
        return shard
    return zlib.crc32(f"{unit}\0{shard}".encode()) % plan.partitions


# ---- 3. group: one shard's runs, in input order -> its requests ----------------------------------------

class _ShardGrouper:
    """One shard's runs, in input order, through the local engine's spill and fold: requests whose rows
    were scattered (in a file, or over files) become one run each."""

    def __init__(self, plan: _TaskPlan, unit: str, shard: int):
        self.plan, self.unit, self.shard = plan, unit, shard
        self.scratch = tempfile.mkdtemp(prefix="roolog-spark-spill-", dir=_local_dir())
        self.grouping = plan.grouping()
        self.spill = RunSpill(self.scratch, 1)

    def feed(self, data: bytes) -> None:
        runs = _from_ipc(data)
        for col in list(self.grouping.levels.request):  # moved to impression level while its file was read
            if self.grouping.is_list_form(runs.schema, col):
                self.grouping.levels.demote(col)
        self.spill.write(self.grouping.conform(runs))  # one schema, so the spill does not start a file per flip

    def finish(self) -> _ShardGrouped:
        """Fold scattered requests and write the shard's requests (committed by rename); its record."""
        try:
            self.spill.close()
            moves, error, requests = _Moves(self.grouping.levels, [_FOLD]), None, 0
            try:
                self.spill.fold(0, self.grouping, max_bytes=self.plan.memory_limit // 6)
            except RoologError as err:  # (the local engine's spill partition of this shard is the shard)
                err.args = (str(err).replace("(spill partition 0)", f"(spill partition {self.shard})"),)
                error = _bad_data(err, (1, self.shard))
            moves.note()
            if error is None:
                requests = self._write_requests()
            return _ShardGrouped(self.unit, self.shard, requests,
                                 [(col, [_FOLD, self.shard, i]) for i, (col, _) in enumerate(moves.moved)], error,
                                 SpillFigures(self.spill.bytes_written, self.spill.most_parts))
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _write_requests(self) -> int:
        if self.plan.settings.cluster_by:
            return self._write_clustered()
        final = _runs_path(self.plan.work, self.unit, self.shard)
        attempt = _attempt_path(self.plan.work, final)
        requests = 0
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            with pa.OSFile(attempt, "wb") as sink, \
                    pa.ipc.new_stream(sink, self.grouping.run_schema(), options=_IPC) as writer:
                for runs in self.spill.read(0, self.grouping):
                    writer.write_batch(runs)
                    requests += runs.num_rows
                    _maybe_fail(self.plan.failpoint, "group")
            os.replace(attempt, final)
        except BaseException:
            _remove(attempt)
            raise
        return requests


    def _write_clustered(self) -> int:
        """The shard's requests to the shards of their cluster values, as sorted runs (roolog.group.ordering),
        written in a folder of the attempt's own, then each committed by rename (a retried attempt writes the
        same runs under the same names)."""
        settings = self.plan.settings
        attempt = _attempt_path(self.plan.work, f"cluster-{self.unit or '_flat'}-{self.shard:05d}")
        sort = RequestSorter(attempt, settings.n_shards, settings.cluster_by, self.plan.memory_limit // 6,
                             name=f"g{self.shard:05d}", route=settings.cluster_by)
        try:
            for runs in self.spill.read(0, self.grouping):
                sort.add(runs)
                _maybe_fail(self.plan.failpoint, "group")
            sort.close(keep=False)  # (written: the write tasks read them)
            final = _cluster_path(self.plan.work, self.unit)
            os.makedirs(final, exist_ok=True)
            for s in range(settings.n_shards):
                for path in sort.files(s):
                    os.replace(path, os.path.join(final, os.path.basename(path)))
        finally:
            shutil.rmtree(attempt, ignore_errors=True)
        return sort.requests


def _group_partition(plan: _TaskPlan, pieces: Iterable[tuple[tuple, bytes | _Record]]) -> Iterator[_Record]:
    """A sorted Spark partition -> a record per shard it holds (records of the read step pass through)."""
    current: _ShardGrouper | None = None
    for (unit, shard, _), value in pieces:
        if not isinstance(value, bytes):  # a file's statistics or an error, not rows
            yield value
            continue
        if current is None or (current.unit, current.shard) != (unit, shard):
            if current is not None:
                yield current.finish()
            current = _ShardGrouper(plan, unit, shard)
        current.feed(value)
    if current is not None:
        yield current.finish()


# ---- 5. write: one shard's requests -> its Parquet file ------------------------------------------------

@dataclass(frozen=True)
class _UnitWrite:
    """What the write step needs of a unit: its final levels and encodings, and where its shards go."""

    grouping: Grouping
    encodings: dict
    folder: str
    partition: str | None  # the partition column (it lives in the folder's name, not in the shards)
    partition_value: str | None  # its one value (layout.partition_value)


def _shard_requests(work: str, unit: str, shard: int, grouping: Grouping) -> Iterator[pa.RecordBatch]:
    """A shard's requests as the group step wrote them, conformed to the unit's final levels (clustered: the
    runs every group task wrote for it, merged in order)."""
    if grouping.levels.cluster:
        return read_runs(shard_runs(_cluster_path(work, unit), shard), grouping.levels.cluster, grouping.conform)
    return _requests(_runs_path(work, unit, shard), grouping)


def _requests(path: str, grouping: Grouping) -> Iterator[pa.RecordBatch]:
    if not os.path.exists(path):
        return  # no rows fell in this shard
    with pa.OSFile(path) as source:
        for batch in pa.ipc.open_stream(source):
            yield grouping.conform(batch)


def _write_task(units: dict[str, _UnitWrite], work: str, compression_level: int, row_groups: RowGroupSize,
                failpoint: str | None, memory_limit: int, task: tuple[str, int]) -> _ShardWritten:
    unit, shard = task
    u = units[unit]
    schema, output = output_layout(u.grouping, u.partition)
    final = os.path.join(u.folder, shard_file(shard))
    attempt = _attempt_path(work, final)
    lengths, output_bytes = LengthHistogram(), dict.fromkeys(schema.names, 0)

    def runs() -> Iterator[pa.RecordBatch]:
        requests = _shard_requests(work, unit, shard, u.grouping)
        order = request_order(u.encodings)
        if order:  # the order chosen with the encodings, sorted on the executor's local disk
            scratch = tempfile.mkdtemp(prefix="roolog-spark-order-", dir=_local_dir())  # (in_order removes it)
            requests = in_order(requests, order, scratch, memory_limit // 6, u.grouping.conform)
        for batch in requests:
            yield batch
            _maybe_fail(failpoint, "write")

    try:
        writer = ShardWriter(attempt, schema, compression_level, row_groups, u.encodings)
        info = write_shard(writer, runs(), output, lengths, output_bytes)
        os.replace(attempt, final)
    except BaseException:
        _remove(attempt)
        raise
    return _ShardWritten(unit, shard, replace(info, file=os.path.basename(final)), lengths.counts.tolist(),
                         output_bytes)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


# ---- the driver ----------------------------------------------------------------------------------------

class SparkEngine:
    """Makes a job's units with Spark tasks (roolog.run.engine.Engine): the local engine's bytes."""

    def __init__(self, folder: OutputFolder, output: OutputOptions, run: RunOptions):
        self.folder, self.output, self.run = folder, output, run

    def convert(self, job: Job) -> JobResult:
        # executors get absolute paths only: they run in other processes, on other machines, in other folders
        work = os.path.abspath(tempfile.mkdtemp(prefix="spark-", dir=self.folder.tmp))  # grouped requests, attempts
        os.makedirs(os.path.join(work, "attempts"))
        try:
            return self._convert(job, work)
        except RoologError as err:
            raise _as_given(err, job.files) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _convert(self, job: Job, work: str) -> JobResult:
        files = [f if f.is_object else replace(f, path=os.path.abspath(f.path)) for f in job.files]
        output = self.output
        with Source(files, output.read, os.path.abspath(self.folder.read_scratch())) as source:
            settings = unit_settings(output, source, job.route_by, one_of_many=job.name is not None)
            sc = spark_session(self.run.spark_master).sparkContext
            if self.run.spark_master and sc.master != self.run.spark_master:
                self.run.log("warning", message=f"Spark is already running on {sc.master}; --spark-master is ignored")
            n_shards = settings.n_shards
            partitions = n_shards if job.route_by is None else max(n_shards, 2 * sc.defaultParallelism)
            plan = _TaskPlan(source, settings, output.drop_null_keys, job.route_by, job.name, partitions,
                             self.run.memory_limit, work, os.environ.get("ROOLOG_SPARK_FAILPOINT"))
            pieces = [(i, p) for i, f in enumerate(files) for p in range(len(source.pieces[f.path]))]
            records = _run_job(lambda: _group_job(sc, plan, pieces))
            _raise_earliest_error(records)
            reads = [r for r in records if isinstance(r, _PieceRead)]
            grouped = [r for r in records if isinstance(r, _ShardGrouped)]
            units = _units(reads, job.name, job.route_by)
            writes = {unit: self._plan_unit(plan, unit, job.partition_column if unit else None,
                                            [m for r in reads for m in r.moved.get(unit, [])]
                                            + [m for r in grouped if r.unit == unit for m in r.moved])
                      for unit in units}
            tasks = [(unit, s) for unit in units for s in range(n_shards)]
            write = partial(_write_task, writes, work, output.compression_level, output.row_groups,
                            plan.failpoint, self.run.memory_limit)
            written = _run_job(lambda: sc.parallelize(tasks, len(tasks)).map(write).collect())
            inputs = fingerprint(_hashed(sc, files))
            dropped = sum(r.dropped for r in reads)
            made = [_unit_result(unit, writes[unit], settings, source.schema, reads,
                                 [r for r in grouped if r.unit == unit],
                                 sorted((w for w in written if w.unit == unit), key=lambda w: w.shard),
                                 dropped if len(units) == 1 else 0, EngineInfo("spark", sc.master, len(pieces)))
                    for unit in units]
            return JobResult(made, inputs, dropped)

    def _plan_unit(self, plan: _TaskPlan, unit: str, partition: str | None, moved: Moved) -> _UnitWrite:
        """Step 4 for one unit: its final levels, and the encodings chosen on its first requests."""
        grouping = plan.grouping()
        # a column that varied inside a request anywhere is impression-level; demoted in the order the local
        # engine would have met them (file after file, then shard after shard): the order the report lists
        for _, col in sorted((position, col) for col, position in moved):
            if col in grouping.levels.request:
                grouping.levels.demote(col)
        out_schema, output = output_layout(grouping, partition)
        shards = range(plan.settings.n_shards)
        requests = (_shard_requests(plan.work, unit, s, grouping) for s in shards)
        encodings = choose_settings(grouping, out_schema, sample_requests(requests, output, out_schema),
                                    self.output.compression_level, plan.source.total_bytes)
        value = partition_value((_shard_requests(plan.work, unit, s, grouping) for s in shards), partition)
        folder = os.path.abspath(self.folder.unit_path(unit or "_flat"))
        os.makedirs(folder)
        return _UnitWrite(grouping, encodings, folder, partition, value)


def _as_given(err: RoologError, files: Iterable[InputFile]) -> RoologError:
    """The error with each input named as the user named it (the tasks were given absolute paths), so that
    it reads as the local engine's."""
    text = str(err)
    for f in sorted(files, key=lambda f: -len(os.path.abspath(f.path))):
        text = text.replace(os.path.abspath(f.path), f.path)
    err.args = (text,)
    return err


def _hashed(sc, files: list[InputFile]) -> list[InputFile]:
    """The files with each object's xxh64 taken by a Spark task, which reads the object from its store itself
    (nothing passes through the driver) and checks it against the listing."""
    objects = [f for f in files if f.is_object]
    if not objects:
        return files
    digests = dict(_run_job(lambda: sc.parallelize(objects, len(objects)).map(_object_digest).collect()))
    failed = next((got for got in digests.values() if isinstance(got, RoologError)), None)
    if failed:
        raise failed
    return [replace(f, xxh64=digests[f.path]) if f.is_object else f for f in files]


def _object_digest(f: InputFile) -> tuple[str, str | RoologError]:
    """(the object's URI, its xxh64), or (URI, the error) for the driver to raise as it is (its class, so its
    exit code, kept)."""
    try:
        return f.path, object_xxh64(f.stored(), f.storage)
    except RoologError as err:
        return f.path, err


def _group_job(sc, plan: _TaskPlan, reads: list[tuple[int, int]]) -> list[_Record]:
    """Steps 1 to 3 as one Spark job; returns the records of the read and group tasks."""
    pieces = sc.parallelize(reads, len(reads)).flatMap(partial(_read_piece, plan))
    by_shard = pieces.repartitionAndSortWithinPartitions(plan.partitions, partial(_partition_of, plan))
    return by_shard.mapPartitions(partial(_group_partition, plan)).collect()


def _raise_earliest_error(records: list[_Record]) -> None:
    """Bad data found by the tasks: the error the local engine would have met first."""
    found = [r for r in records if isinstance(r, _BadData)]
    found += [r.error for r in records if isinstance(r, _ShardGrouped) and r.error]
    if found:
        first = min(found, key=lambda r: r.position)
        raise getattr(errors, first.error_class, RoologError)(first.message)


def _units(reads: list[_PieceRead], name: str | None, route_by: str | None) -> list[str]:
    """The units the rows went to, in the order of their first rows (the local engine's order)."""
    first: dict[str, list[int]] = {}
    for r in reads:
        for unit, position in r.first.items():
            first[unit] = min(first.get(unit, position), position)
    if route_by is None or not first:
        return [_unit_id(name)]
    if len(first) > MAX_PARTITIONS:
        raise too_many_partitions(route_by)
    return sorted(first, key=lambda u: first[u])


def _unit_result(unit: str, write: _UnitWrite, settings: UnitSettings, schema: pa.Schema, reads: list[_PieceRead],
                 grouped: list[_ShardGrouped], written: list[_ShardWritten], null_key_rows: int,
                 engine: EngineInfo) -> UnitResult:
    """Step 6: what the tasks measured of one unit, summed."""
    lengths = LengthHistogram()
    for w in written:
        lengths.add_counts(np.asarray(w.lengths, dtype=np.int64))
    output_bytes = _sum_counts(w.output_bytes for w in written)
    input_bytes = dict.fromkeys(schema.names, 0) | _sum_counts(r.input_bytes.get(unit, {}) for r in reads)
    spill = SpillFigures(sum(r.spill.bytes for r in grouped), max([r.spill.most_parts for r in grouped] or [1]))
    return UnitResult(unit or None, write.folder, schema, write.grouping, settings.declared, write.encodings,
                      [w.info for w in written], lengths, input_bytes, output_bytes, spill, write.partition,
                      write.partition_value, null_key_rows, engine)


def _sum_counts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, n in d.items():
            total[k] = total.get(k, 0) + n
    return total
