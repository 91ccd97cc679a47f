"""Run batches hash-partitioned by key into compressed Arrow IPC files, so each partition fits in memory.

Partition p holds the runs whose key hash is p mod P. P is a multiple of the shard count N, so every
partition belongs to exactly one shard (hash mod N). When a column moves to impression level mid-run the
run schema changes; the partition then starts a new file, and readers conform older files on the way out.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from .group import HASH_COL, Grouping

_IPC = pa.ipc.IpcWriteOptions(compression="lz4")


class RunSpill:
    def __init__(self, folder: str, partitions: int):
        self.folder = folder
        self.partitions = partitions
        os.makedirs(folder, exist_ok=True)
        self._writers: dict[int, tuple[pa.Schema, pa.ipc.RecordBatchFileWriter]] = {}
        self._files: dict[int, list[str]] = {p: [] for p in range(partitions)}
        self.runs_written = 0

    def write(self, runs: pa.RecordBatch) -> None:
        if runs.num_rows == 0:
            return
        part = (runs.column(HASH_COL).to_numpy() % np.uint64(self.partitions)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        counts = np.bincount(part, minlength=self.partitions)
        ordered = runs.take(pa.array(order)) if self.partitions > 1 else runs
        start = 0
        for p in np.flatnonzero(counts):
            self._writer(int(p), runs.schema).write_batch(ordered.slice(start, int(counts[p])))
            start += int(counts[p])
        self.runs_written += runs.num_rows

    def _writer(self, p: int, schema: pa.Schema) -> pa.ipc.RecordBatchFileWriter:
        current = self._writers.get(p)
        if current is not None and current[0].equals(schema):
            return current[1]
        if current is not None:
            current[1].close()
        path = os.path.join(self.folder, f"p{p:05d}-{len(self._files[p]):04d}.arrow")
        writer = pa.ipc.new_file(path, schema, options=_IPC)
        self._writers[p] = (schema, writer)
        self._files[p].append(path)
        return writer

    def close(self) -> None:
        for _, writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def files(self, p: int) -> list[str]:
        return self._files[p]

    def replace(self, p: int, batch: pa.RecordBatch) -> None:
        """Swap partition p's files for one file holding `batch` (its merged runs)."""
        path = os.path.join(self.folder, f"p{p:05d}-merged.arrow")
        with pa.ipc.new_file(path, batch.schema, options=_IPC) as writer:
            writer.write_batch(batch)
        for old in self._files[p]:
            os.remove(old)
        self._files[p] = [path]

    def read(self, p: int, grouping: Grouping):
        """Partition p's run batches, one at a time, conformed to the current levels."""
        for path in self._files[p]:
            with pa.memory_map(path) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    yield grouping.conform(reader.get_batch(i))

    def read_table(self, p: int, grouping: Grouping) -> pa.Table:
        return pa.Table.from_batches(list(self.read(p, grouping)), schema=grouping.run_schema())

    def bytes(self) -> int:
        return sum(os.path.getsize(f) for files in self._files.values() for f in files)
