"""convert's options, in two kinds: what decides the output's bytes, and how a run goes about it.

`OutputOptions` is recorded in every manifest (`record`): a unit made with other output options is redone.
`RunOptions` never changes a byte of the output: the same inputs and output options give the same shards
whatever the memory limit, the engine or the progress bar.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from ..errors import UsageProblem
from ..log import silent
from ..read.inputs import ReadOptions
from ..write.shards import RowGroupSize

OnConflict = Literal["error", "demote"]  # a declared request-level column that varies: fail, or store a list
EngineName = Literal["local", "spark"]


@dataclass(frozen=True)
class OutputOptions:
    """What decides the output: the same inputs and these give the same bytes."""

    key: tuple[str, ...] = ()
    order_by: str | None = None
    schema_file: str | None = None
    read: ReadOptions = field(default_factory=ReadOptions)
    shards: int | None = None  # default: one per SHARD_TARGET_BYTES of input
    compression_level: int = 3
    on_conflict: OnConflict = "error"
    drop_null_keys: bool = False
    partition_by: str | None = None  # default: the top-level hive key of partitioned inputs
    row_group_bytes: int = 64 << 20  # in-memory bytes per Parquet row group
    row_group_requests: int | None = None  # at most this many requests per row group (for data loaders)
    cluster_by: tuple[str, ...] = ()  # request-level columns: shard by them, requests ordered by them (a user id)

    def __post_init__(self) -> None:
        _check_choice("--on-conflict", self.on_conflict, OnConflict)
        if not 1 <= self.compression_level <= 22:
            raise UsageProblem(f"--compression-level must be 1 to 22 (zstd), not {self.compression_level}")
        if self.shards is not None and self.shards < 1:
            raise UsageProblem(f"--shards must be at least 1, not {self.shards}")
        if len(set(self.key)) != len(self.key):
            twice = sorted({k for k in self.key if self.key.count(k) > 1})
            raise UsageProblem(f"--key names {twice[0]!r} more than once; name each key column once")
        if self.partition_by is not None and self.partition_by in self.key:
            raise UsageProblem(f"--partition-by {self.partition_by!r} is a key column: partition by a coarser "
                               "column (a day), not by the request key")
        for col in self.cluster_by:
            if self.cluster_by.count(col) > 1:
                raise UsageProblem(f"--cluster-by names {col!r} more than once; name each column once")
            if col in self.key:
                raise UsageProblem(f"--cluster-by {col!r} is a key column: cluster by a user or session id, "
                                   "which many requests share")
            if col in (self.order_by, self.partition_by):
                what = "the order column" if col == self.order_by else "the partition column"
                raise UsageProblem(f"--cluster-by {col!r} is {what}: cluster by a request-level column")
        if self.row_group_requests is not None and self.row_group_requests < 1:
            raise UsageProblem(f"--row-group-requests must be at least 1, not {self.row_group_requests}")

    @property
    def row_groups(self) -> RowGroupSize:
        return RowGroupSize(self.row_group_bytes, self.row_group_requests)

    def record(self, schema_xxh64: str | None, partition_by: str | None) -> dict[str, Any]:
        """These options as the manifest holds them (JSON types: tuples become lists), with the schema file's
        hash (its content decides, not its name) and the partition column the run settled on."""
        read = asdict(self.read)
        del read["batch_bytes"]  # how much is read at a time never changes what is written
        del read["storage_options"]  # nor how an object store is reached
        doc = {"key": self.key, "order_by": self.order_by, "schema_xxh64": schema_xxh64, "read": read,
               "shards": self.shards, "compression_level": self.compression_level, "on_conflict": self.on_conflict,
               "drop_null_keys": self.drop_null_keys, "partition_by": partition_by,
               "row_group_bytes": self.row_group_bytes, "row_group_requests": self.row_group_requests}
        if self.cluster_by:  # (left out when not given: outputs made before the option stay up to date)
            doc["cluster_by"] = self.cluster_by
        return json.loads(json.dumps(doc))


@dataclass(frozen=True)
class RunOptions:
    """How a run goes about it: none of these changes a byte of the output."""

    memory_limit: int = 1 << 30
    overwrite: bool = False  # write into a folder that holds files roolog did not write (never touching them)
    force: bool = False  # redo units that are up to date
    progress: bool = True
    log: Callable[..., None] = silent
    engine: EngineName = "local"  # or "spark": the same output, grouped on a Spark cluster (roolog.run.spark)
    spark_master: str | None = None  # default local[*], or the master of a session that already runs

    def __post_init__(self) -> None:
        _check_choice("--engine", self.engine, EngineName)
        if self.memory_limit < 1:
            raise UsageProblem(f"--memory-limit must be a positive size (such as 512MB), not {self.memory_limit}")


def _check_choice(option: str, value: str, choices: Any) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise UsageProblem(f"{option} must be {' or '.join(allowed)}, not {value!r}")
