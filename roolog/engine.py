"""The contract between the driver (roolog.driver) and an engine that makes units.

An engine takes a Job (roolog.plan) and returns a JobResult: each unit's shards written in its folder in
OUT's temp folder, with the figures the report needs. The driver then writes each unit's report and
manifest (roolog.finish) and publishes it (roolog.outdir). Two engines give the same bytes:

    LocalEngine (roolog.local)   this process: read -> StreamGrouper -> RunSpill -> fold -> ShardWriter
    SparkEngine (roolog.spark)   the same steps in Spark tasks, cut at the spill
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from .figures import LengthHistogram
from .group import Grouping
from .manifest import EngineInfo, InputRecord, ShardRecord, SpillFigures
from .plan import Job
from .schema import LogSchema


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


@dataclass
class JobResult:
    units: list[UnitResult]  # in the order of their first rows
    inputs: list[InputRecord]  # the job's files, fingerprinted after they were read
    null_key_rows: int  # dropped over all units (--drop-null-keys)


class Engine(Protocol):
    def convert(self, job: Job) -> JobResult:
        """Read the job's files once and write every unit's shards; bad data raises the RoologError the
        local engine meets first."""
        ...
