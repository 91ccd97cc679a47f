"""The order of requests inside a shard, in bounded memory: sorted runs on disk, merged on reading.

    requests (any order) -> RequestSorter.add -> per shard, sorted runs -> read_runs: merged in order

Two uses. `--cluster-by COL...` (a user's requests together): the shard of a request is xxh64 of its cluster
values mod N (roolog.group.keys.cluster_hashes), so a user's requests meet in one shard whatever the key, and
inside it they are ordered by the cluster columns (nulls last), then input position. This is where most of
RecD's on-disk saving comes from: a user's histories, nearly equal from one request to the next, sit side
by side and zstd stores the repeats once. And the request order chosen with the encodings (roolog.write.
encodings.choose_request_order): one shard's requests ordered by their number of impressions or by a time
column, then input position. Either order is total (the input position breaks every tie), so a shard's
bytes never depend on the batching, the memory limit or the engine.

Memory: requests are buffered up to `max_bytes`; then each shard's buffered requests are sorted and written
as a run (an Arrow IPC stream). Reading a shard merges its runs, one batch of each in memory; a sorter that
never filled its buffer keeps it in memory, sorted, and writes nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa

from .keys import cluster_hashes
from .spill import merge_by_seq, sorted_rows, split_by_shard
from .values import row_bytes

CLUSTER_TYPE_HINT = "integer, string, binary, boolean, date, time, timestamp or decimal (an id)"
RUN_BATCH_BYTES = 1 << 20  # a run is written in batches of at most this many bytes (and at most a 16th of
# the buffer): what a merge holds in memory per run
_IPC = pa.ipc.IpcWriteOptions(compression=None)


def is_cluster_type(t: pa.DataType) -> bool:
    """Whether a column can cluster requests: an id whose order and equality are exact (not a float)."""
    if pa.types.is_dictionary(t):
        return is_cluster_type(t.value_type)
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_boolean(t)
            or pa.types.is_temporal(t) or pa.types.is_decimal(t))


class RequestSorter:
    """Requests -> `shards` shards (by `route` columns' xxh64, else all in shard 0), each read back ordered by
    `order` then input position. `name` tells the runs of several sorters in one folder apart (the Spark
    engine: one per group task)."""

    def __init__(self, folder: str, shards: int, order: tuple[str, ...], max_bytes: int, name: str = "c",
                 route: tuple[str, ...] | None = None):
        self.folder, self.shards, self.order, self.max_bytes, self.name = folder, shards, order, max_bytes, name
        self.route = route
        self._buffers: list[list[pa.RecordBatch]] = [[] for _ in range(shards)]
        self._buffered = 0
        self._runs = 0  # runs written per shard so far
        self._kept: dict[int, pa.RecordBatch] | None = None  # closed without a run written: sorted, in memory
        self.requests = 0

    def add(self, requests: pa.RecordBatch) -> None:
        self.requests += requests.num_rows
        if self.route is None:
            self._buffers[0].append(requests)
        else:
            hashes = cluster_hashes([requests.column(c) for c in self.route])
            for s, piece in split_by_shard(requests, self.shards, hashes):
                self._buffers[s].append(piece)
        self._buffered += requests.nbytes
        if self._buffered >= self.max_bytes:
            self._write_runs()

    def close(self, keep: bool = True) -> None:
        """No more requests. `keep`: if no run was written yet, keep them in memory rather than write one."""
        if keep and self._runs == 0:
            self._kept = {s: sorted_rows(pa.Table.from_batches(pieces), self.order)
                          for s, pieces in enumerate(self._buffers) if pieces}
            self._buffers = [[] for _ in range(self.shards)]
            return
        self._write_runs()

    def _write_runs(self) -> None:
        """Each shard's buffered requests, sorted, as one more run of that shard."""
        os.makedirs(self.folder, exist_ok=True)
        for s, pieces in enumerate(self._buffers):
            if pieces:
                write_run(self.run_path(s, self._runs), sorted_rows(pa.Table.from_batches(pieces), self.order),
                          min(RUN_BATCH_BYTES, max(1, self.max_bytes // 16)))
        self._buffers = [[] for _ in range(self.shards)]
        self._buffered = 0
        self._runs += 1

    def run_path(self, shard: int, run: int) -> str:
        return os.path.join(self.folder, run_file(shard, self.name, run))

    def files(self, shard: int) -> list[str]:
        """The runs of `shard` written, in the order written."""
        return [p for p in (self.run_path(shard, r) for r in range(self._runs)) if os.path.exists(p)]

    def read(self, shard: int, conform: Callable[[pa.RecordBatch], pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The shard's requests in order (each conformed)."""
        if self._kept is not None:
            if shard in self._kept:
                yield conform(self._kept[shard])
            return
        yield from read_runs(self.files(shard), self.order, conform)


def in_order(requests: Iterable[pa.RecordBatch], order: tuple[str, ...], folder: str, max_bytes: int,
             conform: Callable[[pa.RecordBatch], pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """One shard's requests ordered by `order`, then input position (runs under `folder` when they exceed
    `max_bytes`; removed at the end)."""
    sorter = RequestSorter(folder, 1, order, max_bytes, name="o")
    try:
        for batch in requests:
            sorter.add(batch)
        sorter.close()
        yield from sorter.read(0, conform)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_file(shard: int, name: str, run: int) -> str:
    """A run's file name: runs of one shard sort together (shard first), whoever wrote them."""
    return f"s{shard:05d}-{name}-{run:04d}.arrow"


def shard_runs(folder: str, shard: int) -> list[str]:
    """Every run of `shard` in `folder` (of all its writers), in name order."""
    prefix = f"s{shard:05d}-"
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(".arrow"))


def write_run(path: str, rows: pa.RecordBatch, batch_bytes: int) -> None:
    """Sorted requests as an IPC stream of batches of about `batch_bytes` (written whole, then renamed)."""
    size = int(sum(row_bytes(c).sum() for c in rows.columns))
    per_batch = max(1, rows.num_rows * batch_bytes // max(1, size))
    tmp = path + ".tmp"
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, rows.schema, options=_IPC) as writer:
        writer.write_table(pa.Table.from_batches([rows]), max_chunksize=per_batch)
    os.replace(tmp, path)


def read_runs(paths: list[str], columns: tuple[str, ...],
              conform: Callable[[pa.RecordBatch], pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The requests of these runs merged: ordered by `columns`, then input position (each conformed)."""

    def stream(path: str) -> Iterator[pa.RecordBatch]:
        with pa.OSFile(path) as source:  # read, not mapped: mapped pages would count as resident
            for batch in pa.ipc.open_stream(source):
                yield conform(batch)

    streams = [stream(p) for p in paths]
    if len(streams) == 1:
        yield from streams[0]
        return
    yield from merge_by_seq(streams, columns)
