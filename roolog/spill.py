"""Run batches hash-partitioned by key into compressed Arrow IPC files, so each partition fits in memory.

Partition p holds the runs whose key hash is p mod P. P is a multiple of the shard count N, so every
partition belongs to exactly one shard (hash mod N). When a column moves to impression level mid-run the
run schema changes; the partition then starts a new file, and readers conform older files on the way out.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from .group import HASH_COL, Grouping, merge_runs

_IPC = pa.ipc.IpcWriteOptions(compression="lz4")


class RunSpill:
    def __init__(self, folder: str, partitions: int):
        self.folder = folder
        self.partitions = partitions
        os.makedirs(folder, exist_ok=True)
        self._writers: dict[int, tuple[pa.Schema, pa.ipc.RecordBatchFileWriter]] = {}
        self._files: dict[int, list[str]] = {p: [] for p in range(partitions)}
        self._bytes = np.zeros(partitions, dtype=np.int64)  # in-memory size of what each partition holds

    def write(self, runs: pa.RecordBatch) -> None:
        if runs.num_rows == 0:
            return
        part = (runs.column(HASH_COL).to_numpy() % np.uint64(self.partitions)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        counts = np.bincount(part, minlength=self.partitions)
        ordered = runs.take(pa.array(order)) if self.partitions > 1 else runs
        start = 0
        for p in np.flatnonzero(counts):
            piece = ordered.slice(start, int(counts[p]))
            self._writer(int(p), runs.schema).write_batch(piece)
            self._bytes[p] += piece.nbytes
            start += int(counts[p])

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

    def fold(self, p: int, grouping: Grouping, max_bytes: int) -> None:
        """Fold partition p's scattered requests into one run each, in parts of about `max_bytes` in memory.

        A part is the runs whose hash // P is the same mod k: a key's runs always fall in one part.
        """
        if not self._files[p]:
            return
        k = max(1, -(-int(self._bytes[p]) // max(1, max_bytes)))
        parts = [self.read_table(p, grouping)] if k == 1 else self._split(p, grouping, k)
        folded = []
        for j, part in enumerate(parts):
            merged = merge_runs(grouping, part, f"spill partition {p}")
            if merged is None and k == 1:
                return  # no scattered request here: keep the files as they are
            table = part if merged is None else pa.Table.from_batches([merged])
            folded.append(self._write_table(f"p{p:05d}-folded{j:04d}.arrow", table))
        for old in self._files[p]:
            os.remove(old)
        self._files[p] = folded

    def _write_table(self, name: str, table: pa.Table) -> str:
        path = os.path.join(self.folder, name)
        with pa.ipc.new_file(path, table.schema, options=_IPC) as writer:
            writer.write_table(table)
        return path

    def _split(self, p: int, grouping: Grouping, k: int):
        """Stream partition p into k part files, then yield each part as a table."""
        paths = [os.path.join(self.folder, f"p{p:05d}-part{j:04d}.arrow") for j in range(k)]
        schema = grouping.run_schema()
        writers = [pa.ipc.new_file(path, schema, options=_IPC) for path in paths]
        for runs in self.read(p, grouping):
            part = ((runs.column(HASH_COL).to_numpy() // np.uint64(self.partitions)) % np.uint64(k)).astype(np.int64)
            for j in np.unique(part):
                writers[j].write_batch(runs.filter(pa.array(part == j)))
        for writer in writers:
            writer.close()
        for path in paths:
            with pa.memory_map(path) as source:
                table = pa.ipc.open_file(source).read_all()
            os.remove(path)
            yield table

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
