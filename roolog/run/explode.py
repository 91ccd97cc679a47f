"""`roolog.explode`: the exact inverse of convert, OUT's request rows -> one Parquet file of impression rows."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import RoologError, UsageProblem
from ..group.inverse import impression_rows
from ..group.values import repeat_indices, take
from ..read.arrow_types import conform, unify
from ..read.inputs import local_path
from ..write.checks import open_shard, units
from ..write.manifest import UnitManifest
from ..write.outdir import reading


def _unit_batches(folder: str, manifest: UnitManifest) -> Iterator[pa.RecordBatch]:
    """A unit's impression rows, shard by shard, each shard checked against the manifest first."""
    spec = manifest.schema
    schema, partition = spec.arrow(), spec.partition
    stored = schema.remove(partition.index) if partition else schema  # the column lives in the folder's name
    value = partition.array() if partition else None
    for shard in manifest.shards:
        for batch in pq.ParquetFile(pa.BufferReader(open_shard(folder, shard))).iter_batches():
            rows = impression_rows(batch, stored, set(spec.impression), spec.count_column)
            if partition and value is not None:
                column = take(value, repeat_indices(np.array([rows.num_rows])))  # the one value, per row
                rows = pa.RecordBatch.from_arrays(
                    rows.columns[:partition.index] + [column] + rows.columns[partition.index:], schema=schema)
            yield rows


def impression_batches(out: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The original impression schema and a stream of impression-level batches: partition by partition,
    shard by shard. Partitions whose column types differ are widened losslessly to one schema; a column
    that some partitions lack (added or dropped over time) is null in their rows."""
    found = units(out)
    if not found:
        raise RoologError(f"{out}: the output has no partitions")
    schemas = [(folder, m.schema.arrow()) for folder, m in found]
    schema = unify(schemas, "explode the partitions one at a time (roolog explode OUT/col=value)", absent_ok=True)

    def batches() -> Iterator[pa.RecordBatch]:
        for folder, manifest in found:
            for batch in _unit_batches(folder, manifest):
                yield conform(batch, schema)

    return schema, batches()


def explode(out: str, target: str, compression_level: int = 3) -> dict:
    """Write the impression rows of converted output `out` to one Parquet file `target`."""
    local_path(out, "output"), local_path(target, "target")
    real_out, real_target = os.path.realpath(out), os.path.realpath(target)
    if real_target == real_out or real_target.startswith(real_out.rstrip(os.sep) + os.sep):
        raise UsageProblem(f"{target} is inside the output {out}; write the impressions somewhere else")
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(target):
        raise UsageProblem(f"{target} is a folder; give explode -o a file path (such as {target}/impressions.parquet)")
    if not os.path.isdir(folder):
        raise UsageProblem(f"folder {folder} does not exist")
    tmp = f"{target}.tmp-{os.getpid()}"
    rows = 0
    try:
        with reading(out):
            schema, batches = impression_batches(out)
            with pq.ParquetWriter(tmp, schema, compression="zstd", compression_level=compression_level) as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"output": target, "rows": rows, "bytes": os.path.getsize(target)}
