"""Request batches -> one Parquet/zstd shard, in row groups whose cut depends only on the requests.

Shards are written in OUT's temp folder and moved in at the end (roolog.write.outdir); what is recorded of each
(ShardRecord) is in roolog.write.manifest.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..group.values import row_bytes
from ..read.inputs import file_xxh64
from .encodings import writer_settings
from .manifest import ShardRecord


@dataclass(frozen=True)
class RowGroupSize:
    """Where a row group closes: after the request that brings it to `bytes` (in memory), or at `requests`
    requests when given, whichever comes first. Small row groups let data loaders split a shard finely."""

    bytes: int = 64 << 20
    requests: int | None = None


class ShardWriter:
    """One Parquet shard; request batches are buffered into row groups cut as `row_groups` says."""

    def __init__(self, path: str, schema: pa.Schema, compression_level: int,
                 row_groups: RowGroupSize = RowGroupSize(), encodings: dict | None = None):
        self.path = path
        self.schema = schema
        self.row_groups = row_groups
        settings = writer_settings(encodings, compression_level)
        self._writer = pq.ParquetWriter(path, schema, **settings)
        # without the Arrow schema in the footer, its metadata (roolog's footer record) is written on its own
        self._metadata = None if settings.get("store_schema", True) else schema.metadata
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0  # bytes
        self._buffered_requests = 0
        self._pending: Future | None = None  # the row group being encoded while the next one fills
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roolog-encode")
        self.requests = 0
        self.impressions = 0

    def write(self, batch: pa.RecordBatch, impressions: int) -> None:
        """Buffer requests; a row group closes after the request that brings it to `row_groups.bytes`, or
        at `row_groups.requests` requests.

        The cut depends only on the requests' own sizes, never on how they were batched, so the same
        requests always give the same row groups (and the same bytes).
        """
        self.requests += batch.num_rows
        self.impressions += impressions
        sizes = np.cumsum(sum(row_bytes(col) for col in batch.columns))
        start = 0
        while start < batch.num_rows:
            need = self.row_groups.bytes - self._buffered
            base = sizes[start - 1] if start else 0
            cut = int(np.searchsorted(sizes, base + need, side="left"))  # the last request of the row group
            if self.row_groups.requests is not None:
                cut = min(cut, start + self.row_groups.requests - self._buffered_requests - 1)
            if cut >= batch.num_rows:  # the row group is not full yet
                self._buffer.append(batch.slice(start))
                self._buffered += int(sizes[-1] - base)
                self._buffered_requests += batch.num_rows - start
                return
            self._buffer.append(batch.slice(start, cut + 1 - start))
            self._flush()
            start = cut + 1

    def _flush(self) -> None:
        """Hand the row group to the encoder thread (pyarrow encodes without the GIL); at most one row group
        is being encoded while the next one fills, so memory stays at two row groups."""
        if self._buffer:
            table = pa.Table.from_batches(self._buffer, schema=self.schema)
            self._wait()
            self._pending = self._encoder.submit(self._encode, table)
        self._buffer, self._buffered, self._buffered_requests = [], 0, 0

    def _encode(self, table: pa.Table) -> None:
        # one chunk: Parquet pages would otherwise break where the batches happened to break
        self._writer.write_table(table.combine_chunks(), row_group_size=max(1, table.num_rows))

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()  # an encoding error surfaces here
            self._pending = None

    def close(self) -> ShardRecord:
        self._flush()
        self._wait()
        self._encoder.shutdown()
        if self._metadata:
            self._writer.add_key_value_metadata({k.decode(): v.decode() for k, v in self._metadata.items()})
        self._writer.close()
        name = os.path.basename(self.path)
        return ShardRecord(name, self.requests, self.impressions, os.path.getsize(self.path), file_xxh64(self.path))
