"""`convert --engine spark`: the local engine's conversion run by Spark tasks, with the same output.

Spark distributes the work, moves the data and orders it; roolog's own code reads, groups and writes it.
Nothing is grouped by Spark SQL (no collect_list, whose order Spark does not guarantee after a shuffle).
The local engine's pipeline is cut at its spill: the streaming half runs per input file, the fold per shard.

  1. read     one task per input file: roolog's reader and StreamGrouper (the local engine's batches, runs
              and checks, so the same errors at the same places); the runs (one per contiguous request)
              cut by shard = xxh64(key) mod N into pieces of Arrow IPC, keyed (unit, shard, input position)
  2. shuffle  repartitionAndSortWithinPartitions: one Spark partition per shard, its pieces in input order
  3. group    per shard, the local engine's RunSpill and fold (requests scattered in a file or over files
              become one run): the shard's requests, in input order, to an Arrow IPC file in OUT's temp folder
  4. driver   the unit's levels (a column that varied inside any request is impression-level) and the
              Parquet encodings, chosen on the first requests exactly as the local engine chooses them
  5. write    one task per shard: its requests, conformed to the final levels, through ShardWriter
  6. driver   report and manifest (the local engine's functions); convert.py publishes them as usual

A task writes each file under a task-attempt name in a folder of its own and commits it by rename, so a
retried or speculative attempt never leaves a partial or duplicate file where the next step reads. Bad data
(an unreadable file, a null key, a declared request-level column that varies) comes back as a record, not
an exception: the driver raises the one the local engine would have met first.

Input files, OUT and its temp folder must be at the same path on the driver and on every executor (a
shared file system); local mode is local[*] on this machine.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, cast

import numpy as np
import pyarrow as pa

from . import errors
from .convert import (
    MAX_PARTITIONS,
    fingerprint,
    initial_levels,
    output_layout,
    partition_value,
    read_scratch,
    route_rows,
    sample_requests,
    shard_file,
    too_many_partitions,
    unit_manifest,
    unit_report,
    unit_settings,
    write_shard,
)
from .encodings import choose_encodings
from .errors import RoologError
from .group import SEQ_COL, Grouping, StreamGrouper, null_keys_dropped
from .report import LengthHistogram, add_column_bytes
from .schema import Levels, LogSchema
from .shards import MANIFEST, REPORT, ShardInfo, ShardWriter, write_json_atomic
from .sources import InputFile, Source
from .spill import RunSpill, split_by_shard

if TYPE_CHECKING:
    from .convert import _Run

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
        if master.startswith("local"):  # tasks run here, in this Python (where roolog is installed)
            conf.set("spark.ui.enabled", "false")
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


# ---- what the tasks are told ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    """Everything a read or group task needs; shipped to the executors with the task."""

    source: Source  # the driver's: the input files, reading options and unified schema
    key: tuple[str, ...]
    order_by: str | None
    declared: LogSchema | None
    on_conflict: str
    drop_null_keys: bool
    route_by: str | None  # a column whose values are units, or None: every row to unit `name`
    name: str | None
    n_shards: int
    partitions: int
    memory_limit: int
    work: str  # OUT's temp folder/spark: the grouped requests and the attempts' files
    failpoint: str | None  # tests: ROOLOG_SPARK_FAILPOINT=group|write[:always] fails tasks while they write


def _unit_id(name: str | None) -> str:
    return name or ""  # sortable: "" (the one unit of an unpartitioned OUT) next to partition names


def _runs_path(work: str, unit: str, shard: int) -> str:
    return os.path.join(work, "runs", unit or "_flat", f"runs-{shard:05d}.arrow")


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


def _error_record(err: RoologError, position: tuple[int, int]) -> dict:
    """Bad data as a record. Position: (0, file) while reading a file, (1, shard) while folding: the order
    in which the local engine meets them (file after file, then shard after shard)."""
    return {"kind": "error", "message": str(err), "class": type(err).__name__, "position": list(position)}


# ---- 1. read: one input file -> its requests (runs), in pieces by shard --------------------------------

class _Moves:
    """The columns a grouping moved to impression level (they varied inside a request), in the order it
    moved them: position (file or _FOLD, then a count) lets the driver replay the local engine's order."""

    def __init__(self, levels: Levels, first: int):
        self.levels, self.first, self.known = levels, first, len(levels.impression)
        self.moved: list[tuple[str, list[int]]] = []

    def note(self) -> None:
        for col in self.levels.impression[self.known:]:
            self.moved.append((col, [self.first, len(self.moved)]))
        self.known = len(self.levels.impression)


class _FileGrouper:
    """The local engine's streaming step over one file (one per unit the rows go to): the same batches, the
    same runs and the same checks, so the same error at the same place."""

    def __init__(self, plan: _Plan, index: int):
        self.plan, self.index = plan, index
        self.streams: dict[str, tuple[StreamGrouper, _Moves]] = {}
        self.input_bytes: dict[str, dict[str, int]] = {}
        self.first: dict[str, list[int]] = {}  # where each unit's first row is (file, row, place in batch)

    def stream(self, unit: str) -> tuple[StreamGrouper, _Moves]:
        if unit not in self.streams:
            plan = self.plan
            levels = initial_levels(plan.declared, plan.source.schema, plan.key, plan.on_conflict)
            streamer = StreamGrouper(Grouping(plan.source.schema, plan.key, plan.order_by, levels),
                                     carry_bytes=max(1 << 20, plan.memory_limit // 4))  # as RequestPipeline
            streamer.rows_seen = self.index << _FILE_BITS  # input positions of all files in one int64
            self.streams[unit] = (streamer, _Moves(levels, self.index))
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


def _read_file(plan: _Plan, index: int) -> Iterator[tuple[tuple, bytes | dict]]:
    """One input file -> its runs as pieces ((unit, shard, input position of the first run), Arrow IPC
    bytes) in input order, then a record (a dict) of what the file held, after the error that stopped it
    if one did (the local engine would have stopped there too)."""
    source = copy.copy(plan.source)
    source.files = [plan.source.files[index]]
    grouper = _FileGrouper(plan, index)
    dropped = 0
    try:
        for sb in source.batches():
            batch, n_null = null_keys_dropped(sb, plan.key, plan.drop_null_keys)
            dropped += n_null
            where = f"{sb.path}, rows {sb.first_row + 1}-{sb.first_row + sb.batch.num_rows}"
            for unit, runs in grouper.feed(sb, batch, where):
                yield from _pieces(plan, unit, runs)
        for unit, runs in grouper.flush():
            yield from _pieces(plan, unit, runs)
    except RoologError as err:
        yield ("", _META, index), _error_record(err, (0, index))
    moved = {unit: moves.moved for unit, (_, moves) in grouper.streams.items()}
    yield ("", _META, index), {"kind": "read", "file": index, "input_bytes": grouper.input_bytes,
                               "first": grouper.first, "moved": moved, "dropped": dropped}


def _pieces(plan: _Plan, unit: str, runs: pa.RecordBatch) -> Iterator[tuple[tuple, bytes]]:
    """Run batches split by shard = xxh64(key) mod N (the key hash each run carries), as the local
    engine's spill splits them; each piece keyed by the input position of its first run."""
    for s, piece in split_by_shard(runs, plan.n_shards):
        yield (unit, s, int(piece.column(SEQ_COL)[0].as_py())), _to_ipc(piece)


def _to_ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:  # uncompressed: Spark compresses the shuffle
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.RecordBatch:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_next_batch()


def _partition_of(plan: _Plan, key: tuple) -> int:
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

    def __init__(self, plan: _Plan, unit: str, shard: int):
        self.plan, self.unit, self.shard = plan, unit, shard
        self.scratch = tempfile.mkdtemp(prefix="roolog-spark-spill-", dir=_local_dir())
        schema = plan.source.schema
        self.grouping = Grouping(schema, plan.key, plan.order_by,
                                 initial_levels(plan.declared, schema, plan.key, plan.on_conflict))
        self.spill = RunSpill(self.scratch, 1)

    def feed(self, data: bytes) -> None:
        runs = _from_ipc(data)
        for col in list(self.grouping.levels.request):  # moved to impression level while its file was read
            if self.grouping.is_list_form(runs.schema, col):
                self.grouping.levels.demote(col)
        self.spill.write(self.grouping.conform(runs))  # one schema, so the spill does not start a file per flip

    def finish(self) -> dict:
        """Fold scattered requests and write the shard's requests (committed by rename); its record."""
        try:
            self.spill.close()
            moves, error, requests = _Moves(self.grouping.levels, _FOLD), None, 0
            try:
                self.spill.fold(0, self.grouping, max_bytes=self.plan.memory_limit // 6)
            except RoologError as err:  # (the local engine's spill partition of this shard is the shard)
                err.args = (str(err).replace("(spill partition 0)", f"(spill partition {self.shard})"),)
                error = _error_record(err, (1, self.shard))
            moves.note()
            if error is None:
                requests = self._write_requests()
            return {"kind": "shard", "unit": self.unit, "shard": self.shard, "requests": requests,
                    "moved": [(col, [_FOLD, self.shard, i]) for i, (col, _) in enumerate(moves.moved)],
                    "error": error, "spill": {"bytes": self.spill.bytes_written, "most_parts": self.spill.most_parts}}
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _write_requests(self) -> int:
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


def _group_partition(plan: _Plan, pieces: Iterable[tuple[tuple, bytes | dict]]) -> Iterator[dict]:
    """A sorted Spark partition -> a record per shard it holds (records of the read step pass through)."""
    current: _ShardGrouper | None = None
    for (unit, shard, _), value in pieces:
        if shard == _META:  # a file's statistics or an error, not rows
            yield cast(dict, value)
            continue
        if current is None or (current.unit, current.shard) != (unit, shard):
            if current is not None:
                yield current.finish()
            current = _ShardGrouper(plan, unit, shard)
        current.feed(cast(bytes, value))
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
    partition_value: dict | None  # its manifest record (convert.partition_value)


def _requests(path: str, grouping: Grouping) -> Iterator[pa.RecordBatch]:
    """A shard's requests as the group step wrote them, conformed to the unit's final levels."""
    if not os.path.exists(path):
        return  # no rows fell in this shard
    with pa.OSFile(path) as source:
        for batch in pa.ipc.open_stream(source):
            yield grouping.conform(batch)


def _write_task(units: dict[str, _UnitWrite], work: str, compression_level: int, row_group_bytes: int,
                failpoint: str | None, task: tuple[str, int]) -> dict:
    unit, shard = task
    u = units[unit]
    schema, output = output_layout(u.grouping, u.partition)
    final = os.path.join(u.folder, shard_file(shard))
    attempt = _attempt_path(work, final)
    lengths, output_bytes = LengthHistogram(), dict.fromkeys(schema.names, 0)

    def runs() -> Iterator[pa.RecordBatch]:
        for batch in _requests(_runs_path(work, unit, shard), u.grouping):
            yield batch
            _maybe_fail(failpoint, "write")

    try:
        writer = ShardWriter(attempt, schema, compression_level, row_group_bytes, u.encodings)
        info = write_shard(writer, runs(), output, lengths, output_bytes)
        os.replace(attempt, final)
    except BaseException:
        _remove(attempt)
        raise
    return {"unit": unit, "shard": shard, "info": replace(info, file=os.path.basename(final)),
            "lengths": lengths.counts.tolist(), "output_bytes": output_bytes}


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


# ---- the driver ----------------------------------------------------------------------------------------

def convert_units(run: _Run, files: list[InputFile], route_by: str | None, name: str | None) -> list[str | None]:
    """convert.py's _Run.convert on Spark: the units read from `files`, each finished in its folder in OUT's
    temp folder (shards, report, manifest last) for convert.py to publish; returns their names."""
    work = tempfile.mkdtemp(prefix="spark-", dir=run.folder.tmp)  # this call's grouped requests and attempts
    os.makedirs(os.path.join(work, "attempts"))
    try:
        return _convert_units(run, files, route_by, name, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _convert_units(run: _Run, files: list[InputFile], route_by: str | None, name: str | None,
                   work: str) -> list[str | None]:
    opts = run.opts
    with Source(files, opts.read, read_scratch(run.folder)) as source:
        declared, key, order_by, n_shards = unit_settings(opts, source, route_by)
        sc = spark_session(opts.spark_master).sparkContext
        if opts.spark_master and sc.master != opts.spark_master:
            opts.log("warning", message=f"Spark is already running on {sc.master}; --spark-master is ignored")
        partitions = n_shards if route_by is None else max(n_shards, 2 * sc.defaultParallelism)
        plan = _Plan(source, key, order_by, declared, opts.on_conflict, opts.drop_null_keys, route_by, name,
                     n_shards, partitions, opts.memory_limit, work, os.environ.get("ROOLOG_SPARK_FAILPOINT"))
        records = _run_job(lambda: _group_job(sc, plan, len(files)))
        _raise_earliest_error(records)
        reads = [r for r in records if r["kind"] == "read"]
        units = _units(reads, name, route_by)
        shards = [r for r in records if r["kind"] == "shard"]
        writes = {unit: _plan_unit(run, plan, unit, [m for r in reads for m in r["moved"].get(unit, [])]
                                   + [m for r in shards if r["unit"] == unit for m in r["moved"]])
                  for unit in units}
        tasks = [(unit, s) for unit in units for s in range(n_shards)]
        write = partial(_write_task, writes, work, opts.compression_level, opts.row_group_bytes, plan.failpoint)
        written = _run_job(lambda: sc.parallelize(tasks, len(tasks)).map(write).collect())
        run.inputs = fingerprint(files)
        dropped = sum(r["dropped"] for r in reads)
        for unit in units:
            grouped = [r for r in records if r["kind"] == "shard" and r["unit"] == unit]
            mine = sorted((w for w in written if w["unit"] == unit), key=lambda w: w["shard"])
            report = _finish_unit(run, unit, writes[unit], declared, files, reads, grouped, mine,
                                  dropped if len(units) == 1 else 0, sc.master)
            run.unit_done(unit or None, report)
        run.rows_dropped(dropped)
        return [unit or None for unit in units]


def _group_job(sc, plan: _Plan, n_files: int) -> list[dict]:
    """Steps 1 to 3 as one Spark job; returns the records of the read and group tasks."""
    pieces = sc.parallelize(range(n_files), n_files).flatMap(partial(_read_file, plan))
    by_shard = pieces.repartitionAndSortWithinPartitions(plan.partitions, partial(_partition_of, plan))
    return by_shard.mapPartitions(partial(_group_partition, plan)).collect()


def _raise_earliest_error(records: list[dict]) -> None:
    """Bad data found by the tasks: the error the local engine would have met first."""
    found = [r for r in records if r["kind"] == "error"]
    found += [r["error"] for r in records if r["kind"] == "shard" and r["error"]]
    if found:
        first = min(found, key=lambda r: r["position"])
        raise getattr(errors, first["class"], RoologError)(first["message"])


def _units(reads: list[dict], name: str | None, route_by: str | None) -> list[str]:
    """The units the rows went to, in the order of their first rows (the local engine's order)."""
    first: dict[str, list[int]] = {}
    for r in reads:
        for unit, position in r["first"].items():
            first[unit] = min(first.get(unit, position), position)
    if route_by is None or not first:
        return [_unit_id(name)]
    if len(first) > MAX_PARTITIONS:
        raise too_many_partitions(route_by)
    return sorted(first, key=lambda u: first[u])


def _plan_unit(run: _Run, plan: _Plan, unit: str, moved: list[tuple[str, list[int]]]) -> _UnitWrite:
    """Step 4 for one unit: its final levels, and the encodings chosen on its first requests."""
    schema = plan.source.schema
    levels = initial_levels(plan.declared, schema, plan.key, plan.on_conflict)
    # a column that varied inside a request anywhere is impression-level; demoted in the order the local
    # engine would have met them (file after file, then shard after shard): the order the report lists
    for _, col in sorted((position, col) for col, position in moved):
        if col in levels.request:
            levels.demote(col)
    grouping = Grouping(schema, plan.key, plan.order_by, levels)
    partition = run.partition_column if unit else None
    out_schema, output = output_layout(grouping, partition)
    requests = (_requests(_runs_path(plan.work, unit, s), grouping) for s in range(plan.n_shards))
    encodings = choose_encodings(sample_requests(requests, output, out_schema), run.opts.compression_level)
    value = partition_value((_requests(_runs_path(plan.work, unit, s), grouping) for s in range(plan.n_shards)),
                            partition)
    folder = run.folder.unit_path(unit or "_flat")
    os.makedirs(folder)
    return _UnitWrite(grouping, encodings, folder, partition, value)


def _finish_unit(run: _Run, unit: str, write: _UnitWrite, declared: LogSchema | None, files: list[InputFile],
                 reads: list[dict], grouped: list[dict], written: list[dict], null_key_rows: int,
                 master: str) -> dict:
    """Step 6: the unit's report and manifest, written into its folder (manifest last); returns the report."""
    grouping = write.grouping
    lengths = LengthHistogram()
    for w in written:
        lengths.add_counts(np.asarray(w["lengths"], dtype=np.int64))
    output_bytes = _sum_counts(w["output_bytes"] for w in written)
    input_bytes = dict.fromkeys(grouping.schema.names, 0) | _sum_counts(r["input_bytes"].get(unit, {}) for r in reads)
    spill = {"bytes": sum(r["spill"]["bytes"] for r in grouped),
             "most_parts": max([r["spill"]["most_parts"] for r in grouped] or [1])}
    shards: list[ShardInfo] = [w["info"] for w in written]
    report = unit_report(unit or None, grouping.schema, grouping, input_bytes, spill, null_key_rows, files, shards,
                         lengths, output_bytes, write.folder, time.perf_counter() - run.started, write.partition)
    report["engine"] = {"name": "spark", "master": master}
    write_json_atomic(os.path.join(write.folder, REPORT), report)
    manifest = unit_manifest(grouping.schema, grouping, declared, write.encodings, run.inputs, run.options, shards,
                             write.partition_value)
    write_json_atomic(os.path.join(write.folder, MANIFEST), manifest)
    return report


def _sum_counts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, n in d.items():
            total[k] = total.get(k, 0) + n
    return total
