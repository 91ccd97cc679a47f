"""Run batches hash-partitioned by shard into Arrow IPC streams under OUT's temp folder.

Partition s holds the runs whose key hash is s mod N: exactly the requests of shard s. Runs arrive in
input order (by the position of their first row). A partition whose requests were scattered is folded
- in parts of bounded memory when it is large; a key's runs always fall in one part - and its parts are
merged back in input order when the shard is written, so the shard's bytes do not depend on how many
parts the memory limit asked for.

(Streams rather than IPC files: a stream may replace a column's dictionary from one batch to the next.
When a column moves to impression level mid-run the run schema changes and the partition starts a new
file; readers conform older files on the way out.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .grouper import HASH_COL, SEQ_COL, Grouping, merge_runs
from .keys import sortable_key
from .values import take_rows

# Uncompressed: lz4 halves the bytes but its compression was a fifth of the main thread's work on a wide
# contiguous log and a third of a shuffled one's (measured on 2 cores); the spill lives in the page cache.
_IPC = pa.ipc.IpcWriteOptions(compression=None)
MAX_PARTS = 32  # files open while a partition is split; a single key never splits anyway


class RunSpill:
    def __init__(self, folder: str, partitions: int):
        self.folder = folder
        self.partitions = partitions
        os.makedirs(folder, exist_ok=True)
        self._writers: dict[int, tuple[pa.Schema, pa.ipc.RecordBatchStreamWriter]] = {}
        self._files: dict[int, list[str]] = {p: [] for p in range(partitions)}
        self._sorted_streams: set[int] = set()  # folded partitions: files to merge by input order
        self._scattered: dict[int, tuple[np.ndarray, str]] = {}  # partitions folded in place: keys, their file
        self._bytes = np.zeros(partitions, dtype=np.int64)  # in-memory size of what each partition holds
        # 8 bytes per run, one file per partition, open for the spill's life (closed in close())
        self._hashes = [open(self._hash_path(p), "wb") for p in range(partitions)]  # noqa: SIM115
        self.bytes_written = 0
        self.most_parts = 1

    def write(self, runs: pa.RecordBatch) -> None:
        for p, piece in split_by_shard(runs, self.partitions):
            self._writer(p, runs.schema).write_batch(piece)
            self._hashes[p].write(piece.column(HASH_COL).to_numpy().tobytes())
            self._bytes[p] += piece.nbytes

    def _writer(self, p: int, schema: pa.Schema) -> pa.ipc.RecordBatchStreamWriter:
        current = self._writers.get(p)
        if current is not None and current[0].equals(schema):
            return current[1]
        if current is not None:
            current[1].close()
        path = os.path.join(self.folder, f"p{p:05d}-{len(self._files[p]):04d}.arrow")
        writer = pa.ipc.new_stream(path, schema, options=_IPC)
        self._writers[p] = (schema, writer)
        self._files[p].append(path)
        return writer

    def _hash_path(self, p: int) -> str:
        return os.path.join(self.folder, f"p{p:05d}.hashes")

    def close(self) -> None:
        for _, writer in self._writers.values():
            writer.close()
        self._writers.clear()
        for fh in self._hashes:
            fh.close()
        self.bytes_written = self._disk_bytes()

    def fold(self, p: int, grouping: Grouping, max_bytes: int) -> None:
        """Fold partition p's scattered requests into one run each, in parts of about `max_bytes` in memory."""
        if not self._files[p]:
            return
        hashes = np.fromfile(self._hash_path(p), dtype=np.uint64)
        unique, counts = np.unique(hashes, return_counts=True)
        if len(unique) == len(hashes):
            return  # every request came in one run: nothing to fold (the common, contiguous case)
        scattered_runs = int(counts[counts > 1].sum())
        if scattered_runs <= len(hashes) // 2 and scattered_runs * self._bytes[p] <= max_bytes * len(hashes):
            self._fold_in_place(p, grouping, unique[counts > 1])
            return
        k = min(MAX_PARTS, max(1, -(-int(self._bytes[p]) // max(1, max_bytes))))
        parts = [self._read_table(p, grouping)] if k == 1 else self._split(p, grouping, k)
        folded = []
        for j, part in enumerate(parts):
            merged = merge_runs(grouping, part, f"spill partition {p}")
            if merged is None and k == 1:
                return  # no scattered request here: keep the files as they are
            for i, table in enumerate([part] if merged is None else [pa.Table.from_batches([b]) for b in merged]):
                folded.append(self._write_table(f"p{p:05d}-folded{j:04d}-{i}.arrow", table))
        for old in self._files[p]:
            os.remove(old)
        self._files[p] = folded
        self._sorted_streams.add(p)
        self.most_parts = max(self.most_parts, k)

    def _fold_in_place(self, p: int, grouping: Grouping, keys: np.ndarray) -> None:
        """Few of the partition's requests came in pieces (say, cut by the end of a file piece): fold just
        those (their key hashes: `keys`) into a file of their own; the partition's files stay as they are,
        and reading merges the two by input order, the folded requests' pieces left out of the files."""
        batches = (b for path in self._files[p] for b in self._stream(path, grouping, mapped=True))
        pieces = [take_rows(b, rows) for b in batches
                  if len(rows := np.flatnonzero(np.isin(b.column(HASH_COL).to_numpy(), keys)))]
        table = pa.Table.from_batches(pieces, schema=grouping.run_schema()).combine_chunks()
        folded = grouping.conform(grouping.fold_runs(table.to_batches()[0], f"spill partition {p}"))
        self._scattered[p] = (keys, self._write_table(f"p{p:05d}-scattered.arrow", pa.Table.from_batches([folded])))

    def _write_table(self, name: str, table: pa.Table) -> str:
        path = os.path.join(self.folder, name)
        with pa.ipc.new_stream(path, table.schema, options=_IPC) as writer:
            writer.write_table(table)
        return path

    def _split(self, p: int, grouping: Grouping, k: int) -> Iterator[pa.Table]:
        """Stream partition p into k part files (by hash // N mod k), then yield each part as a table."""
        paths = [os.path.join(self.folder, f"p{p:05d}-part{j:04d}.arrow") for j in range(k)]
        schema = grouping.run_schema()
        writers = [pa.ipc.new_stream(path, schema, options=_IPC) for path in paths]
        for runs in self.read(p, grouping):
            hashes = runs.column(HASH_COL).to_numpy()
            part = ((hashes // np.uint64(self.partitions)) % np.uint64(k)).astype(np.int64)
            for j in np.unique(part):
                writers[j].write_batch(take_rows(runs, np.flatnonzero(part == j)))
        for writer in writers:
            writer.close()
        for path in paths:
            with pa.OSFile(path) as source:  # read, not mapped: mapped pages would count as resident
                table = pa.ipc.open_stream(source).read_all()
            os.remove(path)
            yield table

    def _stream(self, path: str, grouping: Grouping, mapped: bool = False) -> Iterator[pa.RecordBatch]:
        """The file's run batches, conformed. Read, not mapped: mapped pages would count as resident; but
        `mapped` for a scan that looks at the key hashes of every batch and takes the rows of a few."""
        with (pa.memory_map(path) if mapped else pa.OSFile(path)) as source:
            for batch in pa.ipc.open_stream(source):
                yield grouping.conform(batch)

    def read(self, p: int, grouping: Grouping) -> Iterator[pa.RecordBatch]:
        """Partition p's run batches in input order, conformed to the current levels."""
        streams = [self._stream(path, grouping) for path in self._files[p]]
        if p in self._scattered:
            keys, path = self._scattered[p]
            whole = (_without(b, keys) for stream in streams for b in stream)
            yield from merge_by_seq([whole, self._stream(path, grouping)])
        elif p in self._sorted_streams:
            yield from merge_by_seq(streams)
        else:
            for stream in streams:
                yield from stream

    def _read_table(self, p: int, grouping: Grouping) -> pa.Table:
        return pa.Table.from_batches(list(self.read(p, grouping)), schema=grouping.run_schema())

    def _disk_bytes(self) -> int:
        files = [f for fs in self._files.values() for f in fs] + [self._hash_path(p) for p in range(self.partitions)]
        files += [path for _, path in self._scattered.values()]
        return sum(os.path.getsize(f) for f in files)


def _without(runs: pa.RecordBatch, keys: np.ndarray) -> pa.RecordBatch:
    """The runs whose key hash is not among `keys` (the batch itself when none is: no copy)."""
    found = np.isin(runs.column(HASH_COL).to_numpy(), keys)
    return take_rows(runs, np.flatnonzero(~found)) if found.any() else runs


def split_by_shard(runs: pa.RecordBatch, shards: int, hashes: np.ndarray | None = None
                   ) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The runs of each shard (xxh64(key) mod N from the hash each run carries, or `hashes` mod N when
    given), in the order they came."""
    if runs.num_rows == 0:
        return
    hashes = runs.column(HASH_COL).to_numpy() if hashes is None else hashes
    shard = (hashes % np.uint64(shards)).astype(np.int64)
    counts = np.bincount(shard, minlength=shards)
    ordered = take_rows(runs, np.argsort(shard, kind="stable")) if shards > 1 else runs
    starts = np.cumsum(counts) - counts
    for s in np.flatnonzero(counts):
        yield int(s), ordered.slice(int(starts[s]), int(counts[s]))


def order_table(rows: pa.RecordBatch | pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """What runs are ordered by: `columns` (sortable forms: dictionaries decoded), then the input position."""
    arrays = [sortable_key(rows.column(c)) for c in columns] + [rows.column(SEQ_COL)]
    return pa.table(arrays, names=[*columns, SEQ_COL])


def sorted_rows(rows: pa.RecordBatch | pa.Table, columns: tuple[str, ...]) -> pa.RecordBatch:
    """The runs ordered by `columns` (nulls last: Arrow's default), then by input position: a total order."""
    if isinstance(rows, pa.Table):
        rows = rows.unify_dictionaries()
    order = order_table(rows, columns)
    return take_rows(rows, pc.sort_indices(order, [(c, "ascending") for c in order.column_names]))


def _rows_upto(order: pa.Table, bound: pa.Table) -> int:
    """How many of `order`'s rows (sorted, as order_table makes them) are at or before `bound`'s one row."""
    if order.num_columns == 1:  # input position alone: a sorted int64 column without nulls
        return int(np.searchsorted(order.column(0).to_numpy(), bound.column(0)[0].as_py(), side="right"))
    before = np.zeros(order.num_rows, dtype=bool)
    same = np.ones(order.num_rows, dtype=bool)
    for name in order.column_names:  # lexicographic: earlier columns equal and this one smaller
        col, b = order.column(name), bound.column(name)[0]
        if b.is_valid:  # nulls sort last: never before nor equal to a value
            less, equal = pc.fill_null(pc.less(col, b), False), pc.fill_null(pc.equal(col, b), False)
        else:
            less, equal = col.is_valid(), col.is_null()
        before |= same & less.to_numpy(zero_copy_only=False)
        same &= equal.to_numpy(zero_copy_only=False)
    return int((before | same).sum())


def merge_by_seq(streams: list[Iterator[pa.RecordBatch]], columns: tuple[str, ...] = ()
                 ) -> Iterator[pa.RecordBatch]:
    """Merge streams of runs, each sorted by `columns` then input position, into one sorted stream (one
    batch per stream in memory): repeatedly emit every run up to the smallest last run among the streams'
    heads."""
    heads: list[tuple[pa.RecordBatch, Iterator[pa.RecordBatch]]] = []
    for stream in streams:
        first = _next_rows(stream)
        if first is not None:
            heads.append((first, stream))
    while heads:
        lasts = pa.concat_tables([order_table(batch.slice(batch.num_rows - 1), columns) for batch, _ in heads])
        first = pc.sort_indices(lasts, [(c, "ascending") for c in lasts.column_names])
        bound = lasts.slice(first[0].as_py(), 1)
        pieces, rest = [], []
        for batch, stream in heads:
            cut = _rows_upto(order_table(batch, columns), bound)
            pieces.append(batch.slice(0, cut))
            batch = batch.slice(cut) if cut < batch.num_rows else _next_rows(stream)
            if batch is not None:
                rest.append((batch, stream))
        heads = rest
        pieces = [piece for piece in pieces if piece.num_rows]
        if len(pieces) == 1:  # no other stream has runs before the bound: already in order, no copy
            yield pieces[0]
            continue
        yield sorted_rows(pa.Table.from_batches(pieces), columns)


def _next_rows(stream: Iterator[pa.RecordBatch]) -> pa.RecordBatch | None:
    """The stream's next batch that has rows, or None at its end."""
    for batch in stream:
        if batch.num_rows:
            return batch
    return None
