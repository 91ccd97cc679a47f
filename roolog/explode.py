"""`roolog.explode`: the exact inverse of convert, request rows -> impression rows."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import RoologError, UsageProblem
from .shards import read_manifest, schema_from_b64, unit_folders
from .values import repeat_indices, take


def impression_rows(batch: pa.RecordBatch, schema: pa.Schema, impression: set[str],
                    count_column: str | None = None) -> pa.RecordBatch:
    """Request rows back to impression rows: lists flattened, request values repeated per impression."""
    if count_column:
        lengths = batch.column(count_column).to_numpy()
    else:
        first = next(c for c in schema.names if c in impression)
        lengths = pc.list_value_length(batch.column(first)).to_numpy()
    rep = repeat_indices(lengths)
    arrays = [batch.column(f.name).flatten() if f.name in impression else take(batch.column(f.name), rep)
              for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _unit_batches(out: str, manifest: dict) -> Iterator[pa.RecordBatch]:
    spec = manifest["schema"]
    schema = schema_from_b64(spec["arrow_schema"])
    for shard in manifest["shards"]:
        path = os.path.join(out, shard["file"])
        if not os.path.exists(path):
            raise RoologError(f"{path}: shard listed in the manifest is missing")
        for batch in pq.ParquetFile(path).iter_batches():
            yield impression_rows(batch, schema, set(spec["impression"]), spec.get("count_column"))


def impression_batches(out: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The original impression schema and a stream of impression-level batches: partition by partition,
    shard by shard."""
    units = [(folder, read_manifest(folder)) for folder in unit_folders(out)]
    if not units:
        raise RoologError(f"{out}: the output has no partitions")
    schema = schema_from_b64(units[0][1]["schema"]["arrow_schema"])

    def batches() -> Iterator[pa.RecordBatch]:
        for folder, manifest in units:
            for batch in _unit_batches(folder, manifest):
                yield batch if batch.schema.equals(schema) else batch.cast(schema)

    return schema, batches()


def explode(out: str, target: str, compression_level: int = 3) -> dict:
    """Write the impression rows of converted output `out` to one Parquet file `target`."""
    schema, batches = impression_batches(out)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise UsageProblem(f"folder {folder} does not exist")
    tmp = f"{target}.tmp-{os.getpid()}"
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd", compression_level=compression_level) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"output": target, "rows": rows, "bytes": os.path.getsize(target)}
