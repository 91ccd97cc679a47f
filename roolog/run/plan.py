"""What a convert run will do, decided before a row is read: its units, the jobs that make them, what is
up to date, and the settings every engine reads the rows with.

    input files -> the partition column (hive folders, or --partition-by) -> a Plan:
      flat     one job: every file into OUT itself
      hive     one job per partition folder ds=.../, each with its own files (each skipped on its own)
      column   one job: every file read once, rows routed to one unit per value of the column

A unit (or, for `column`, the whole output) is up to date when its manifest records the same inputs
(path, size, and stat or content hash), the same output options, its manifest and report are sealed as
written, and every shard it lists has its size and xxh64 (hashed every run: what `verify` flags, the
next convert redoes).
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import pyarrow as pa

from ..errors import RoologError, UsageProblem
from ..group.ordering import CLUSTER_TYPE_HINT, is_cluster_type
from ..group.schema import Levels, LogSchema, check_declared, check_key_and_order, load_schema
from ..read.arrow_types import parse_type
from ..read.inputs import InputFile, InputRecord, ReadOptions, file_xxh64
from ..read.sources import Source
from ..write.layout import partition_name
from ..write.manifest import MANIFEST, PartitionedManifest, PartitionEntry, UnitManifest, read_report, recorded
from ..write.outdir import OutputFolder
from .options import OnConflict, OutputOptions

SHARD_TARGET_BYTES = 256 << 20  # default shard count: one shard per this much input
OPEN_FILES_BESIDE_SHARDS = 32  # inputs, spill partitions, pyarrow's own, the interpreter's
MAX_PARTITIONS = 1000  # rows routed to partitions in one run: each holds open files and a grouping pipeline

Log = Callable[..., None]


@dataclass(frozen=True)
class Job:
    """Input files read once into one unit (`name`; None is OUT itself), or into one unit per value of
    column `route_by`. Units with a name are partitions of column `partition_column`."""

    files: tuple[InputFile, ...]
    route_by: str | None
    name: str | None
    partition_column: str | None


@dataclass(frozen=True)
class Plan:
    layout: Literal["flat", "hive", "column"]
    column: str | None  # the partition column (None when flat)
    jobs: list[Job]  # the units to make
    skipped: list[str | None]  # the units that are up to date
    inputs: list[InputRecord]  # `column` layout skipped as a whole: the inputs its manifest records


@dataclass(frozen=True)
class UnitSettings:
    """How the rows of a job are grouped: the schema file, key, order column and shard count."""

    declared: LogSchema | None
    key: tuple[str, ...]
    order_by: str | None
    n_shards: int
    on_conflict: OnConflict
    cluster_by: tuple[str, ...] = ()

    def initial_levels(self, schema: pa.Schema) -> Levels:
        """The levels grouping starts from: the schema file's, else every column request-level until it
        first varies inside a request. Cluster columns are request-level come what may."""
        columns = [n for n in schema.names if n not in self.key]
        cluster = set(self.cluster_by)
        if self.declared is None:
            return Levels(request=columns, impression=[], fixed=cluster, cluster=self.cluster_by)
        request = [c for c in columns if c in self.declared.request]
        fixed = set(request) if self.on_conflict == "error" else set()
        return Levels(request=request, impression=[c for c in columns if c not in request], fixed=fixed | cluster,
                      declared=set(request), cluster=self.cluster_by)


def with_declared_types(read: ReadOptions, declared: LogSchema) -> ReadOptions:
    """The reading options with the schema file's [types] added to --column-type's (which must agree)."""
    given = dict(read.column_types)
    for name, t in declared.types:
        if name in given and parse_type(given[name]) != parse_type(t):
            raise UsageProblem(f"--column-type {name}={given[name]} disagrees with the schema file's {t}")
        given.setdefault(name, t)
    return replace(read, column_types=tuple(given.items()))


def unit_settings(opts: OutputOptions, source: Source, route_by: str | None, one_of_many: bool = False
                  ) -> UnitSettings:
    """The settings of the units read from `source`, checked against its schema. `one_of_many`: the source
    is one hive partition of several, which may lack columns the schema file names (a column added or
    dropped on some day)."""
    declared = load_schema(opts.schema_file) if opts.schema_file else None
    key, order_by = tuple(opts.key), opts.order_by
    if declared:
        if key and key != declared.key:
            raise UsageProblem(f"--key {list(key)} disagrees with the schema file's key {list(declared.key)}")
        if order_by and declared.order_by and order_by != declared.order_by:
            raise UsageProblem(f"--order-by {order_by} disagrees with the schema file's {declared.order_by}")
        key, order_by = declared.key, order_by or declared.order_by
    check_key_and_order(source.schema, key, order_by)
    if declared:
        check_declared(declared, source.schema, opts.schema_file or "the schema file", absent_ok=one_of_many)
    if route_by is not None and route_by not in source.schema.names:
        raise UsageProblem(f"--partition-by {route_by!r} is not a column or hive folder of the input")
    cluster_by = _cluster_columns(opts, declared, source.schema, key, order_by)
    n_shards = opts.shards or max(1, math.ceil(source.total_bytes / SHARD_TARGET_BYTES))
    _open_files_for(n_shards)
    return UnitSettings(declared, key, order_by, n_shards, opts.on_conflict, cluster_by)


def _cluster_columns(opts: OutputOptions, declared: LogSchema | None, schema: pa.Schema, key: tuple[str, ...],
                     order_by: str | None) -> tuple[str, ...]:
    """--cluster-by's columns (or the schema file's cluster_by), checked: request-level ids of the input."""
    cluster_by = tuple(opts.cluster_by)
    if declared and declared.cluster_by:
        if cluster_by and cluster_by != declared.cluster_by:
            raise UsageProblem(f"--cluster-by {list(cluster_by)} disagrees with the schema file's cluster_by "
                               f"{list(declared.cluster_by)}")
        cluster_by = declared.cluster_by
    for col in cluster_by:
        if col not in schema.names:
            raise UsageProblem(f"--cluster-by {col!r} is not a column of the input")
        if col in key or col == order_by:
            raise UsageProblem(f"--cluster-by {col!r} is {'a key' if col in key else 'the order'} column: cluster "
                               "by a request-level column that many requests share (a user or session id)")
        if declared and col not in declared.request:
            raise UsageProblem(f"--cluster-by {col!r} is an impression column in the schema file; cluster by a "
                               "request-level column")
        t = schema.field(col).type
        if not is_cluster_type(t):
            raise UsageProblem(f"--cluster-by {col!r} has type {t}; a cluster column must be {CLUSTER_TYPE_HINT}")
    return cluster_by


def _open_files_for(n_shards: int) -> None:
    """A unit writes its shards at once, one open file each: raise the process's limit on open files as far
    as the system allows, or refuse a shard count beyond it in one line (not "Too many open files" later)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = n_shards + OPEN_FILES_BESIDE_SHARDS
    if needed <= soft or soft == resource.RLIM_INFINITY:
        return
    if hard == resource.RLIM_INFINITY or needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else hard, hard))
        return
    raise UsageProblem(f"--shards {n_shards:,} needs about {needed:,} files open at once (one per shard) and this "
                       f"system allows {hard:,} (ulimit -Hn); give fewer shards, or raise the limit")


def too_many_partitions(route_by: str) -> UsageProblem:
    return UsageProblem(f"--partition-by {route_by}: more than {MAX_PARTITIONS:,} values; partition "
                        "by a coarser column (a day, not a request)")


# ---- the plan ------------------------------------------------------------------------------------------

def partition_column(files: list[InputFile], partition_by: str | None) -> str | None:
    if partition_by:
        return partition_by
    if files and all(f.partition for f in files) and len({f.partition[0][0] for f in files}) == 1:
        return files[0].partition[0][0]  # hive inputs: one output partition per top-level folder
    return None


def plan_run(folder: OutputFolder, files: list[InputFile], column: str | None, options: dict, force: bool,
             log: Log) -> Plan:
    """The jobs of a run into `folder` and the units that are up to date (all redone with `force`)."""
    if column is None:
        if not force and up_to_date(folder, "", files, options, log):
            return Plan("flat", None, [], [None], [])
        return Plan("flat", None, [Job(tuple(files), None, None, None)], [], [])
    if all(column in dict(f.partition) for f in files):  # hive folders: each partition has its own inputs
        groups: dict[str, list[InputFile]] = {}
        for f in files:
            groups.setdefault(partition_name(column, dict(f.partition)[column]), []).append(f)
        jobs, skipped = [], []
        for name, group in sorted(groups.items()):
            if not force and up_to_date(folder, name, group, options, log):
                skipped.append(name)
            else:
                jobs.append(Job(tuple(group), None, name, column))
        return Plan("hive", column, jobs, list(skipped), [])
    # a data column: every input may hold every partition; the inputs decide for all partitions at once
    top = recorded(os.path.join(folder.out, MANIFEST), PartitionedManifest)
    if not force and top is not None and top.options == options and unchanged(top.inputs, files) and all(
            _listed(folder, p) and intact(folder, p.name, recorded(os.path.join(folder.out, p.name, MANIFEST),
                                                                   UnitManifest), log)
            for p in top.partitions):
        return Plan("column", column, [], [p.name for p in top.partitions], top.inputs)
    return Plan("column", column, [Job(tuple(files), column, None, column)], [], [])


def _listed(folder: OutputFolder, p: PartitionEntry) -> bool:
    """Whether the partition's manifest is the one the top-level manifest lists."""
    path = os.path.join(folder.out, p.name, MANIFEST)
    return os.path.isfile(path) and file_xxh64(path) == p.manifest_xxh64


def unchanged(recorded_inputs: list[InputRecord], files: list[InputFile]) -> bool:
    """Same files, same sizes, and each with the same mtime, ctime and inode as when it was read, or else
    (touched, copied) the same content hash. The ctime tells a rewrite whose mtime was put back. An object
    is unchanged when its store lists the same size, mtime and ETag: it is not downloaded to tell (one whose
    store gives no ETag is read again each run)."""
    if [r.path for r in recorded_inputs] != [f.recorded_path for f in files]:
        return False
    return all(r.bytes == f.size and _same(r, f) for r, f in zip(recorded_inputs, files, strict=True))


def _same(r: InputRecord, f: InputFile) -> bool:
    if f.is_object:  # the listing alone decides; without an ETag nothing does, and the object is read again
        return bool(f.etag) and r.stat == f.stat()
    return r.stat == f.stat() or r.xxh64 == file_xxh64(f.path)


def up_to_date(folder: OutputFolder, rel: str, files: list[InputFile], options: dict, log: Log) -> bool:
    """Whether the unit at OUT/rel was made from these inputs with these options and is still intact (every
    shard it lists there, as written); says why when a damaged unit is redone."""
    manifest = recorded(os.path.join(folder.out, rel, MANIFEST), UnitManifest)
    if manifest is None or manifest.options != options or not unchanged(manifest.inputs, files):
        return False
    return intact(folder, rel, manifest, log)


def intact(folder: OutputFolder, rel: str, manifest: UnitManifest | None, log: Log) -> bool:
    """Whether the unit's report and every shard its manifest lists are at OUT/rel as written (each shard
    hashed: what `verify` checks, convert checks); says why when they are not."""
    if manifest is None:
        return False
    prefix = f"{rel}/" if rel else ""
    try:
        read_report(os.path.join(folder.out, rel) if rel else folder.out)
    except RoologError as err:
        log("redo", output=folder.out, partition=rel or None, reason=str(err))
        return False
    for shard in manifest.shards:
        problem = folder.intact(prefix + shard.file, shard.bytes, shard.xxh64)
        if problem:
            log("redo", output=folder.out, partition=rel or None, reason=problem)
            return False
    return True
