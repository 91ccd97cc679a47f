"""Request batches -> one Parquet/zstd shard, in row groups whose cut depends only on the requests.

Shards are written in OUT's temp folder and moved in at the end (roolog.outdir); what is recorded of each
(ShardRecord) is in roolog.manifest.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .manifest import ShardRecord, file_xxh64
from .values import row_bytes


class ShardWriter:
    """One Parquet shard; request batches are buffered into row groups of about `row_group_bytes`."""

    def __init__(self, path: str, schema: pa.Schema, compression_level: int, row_group_bytes: int = 64 << 20,
                 encodings: dict | None = None):
        self.path = path
        self.schema = schema
        self.row_group_bytes = row_group_bytes
        self._writer = pq.ParquetWriter(path, schema, compression="zstd", compression_level=compression_level,
                                        **(encodings or {}))
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._pending: Future | None = None  # the row group being encoded while the next one fills
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roolog-encode")
        self.requests = 0
        self.impressions = 0

    def write(self, batch: pa.RecordBatch, impressions: int) -> None:
        """Buffer requests; a row group closes after the request that brings it to `row_group_bytes`.

        The cut depends only on the requests' own sizes, never on how they were batched, so the same
        requests always give the same row groups (and the same bytes).
        """
        self.requests += batch.num_rows
        self.impressions += impressions
        sizes = np.cumsum(sum(row_bytes(col) for col in batch.columns))
        start = 0
        while start < batch.num_rows:
            need = self.row_group_bytes - self._buffered
            base = sizes[start - 1] if start else 0
            cut = int(np.searchsorted(sizes, base + need, side="left"))
            if cut >= batch.num_rows:  # the row group is not full yet
                self._buffer.append(batch.slice(start))
                self._buffered += int(sizes[-1] - base)
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
        self._buffer, self._buffered = [], 0

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
        self._writer.close()
        name = os.path.basename(self.path)
        return ShardRecord(name, self.requests, self.impressions, os.path.getsize(self.path), file_xxh64(self.path))
