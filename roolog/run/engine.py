"""The contract between the driver (roolog.run.driver) and an engine that makes units.

An engine takes a Job (roolog.run.plan) and returns a JobResult: each unit's shards written in its folder in
OUT's temp folder, with the figures the report needs (a UnitResult, the record roolog.write.finish turns into
the unit's report and manifest). The driver then finishes each unit and publishes it (roolog.write.outdir).
Two engines give the same bytes:

    LocalEngine (roolog.run.local)   this process: read -> StreamGrouper -> RunSpill -> fold -> ShardWriter
    SparkEngine (roolog.run.spark)   the same steps in Spark tasks, cut at the spill
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..read.inputs import InputRecord
from ..write.finish import UnitResult
from .plan import Job


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
