"""A user's requests together (`--cluster-by COL...`): in one shard, next to each other, in bounded memory.

    folded requests (any order) -> ClusterSort.add -> per shard, sorted runs on disk
                                -> ClusterSort.read(s): the runs merged, ordered by (cluster columns, input position)

The shard of a request is xxh64 of its cluster values mod N (roolog.group.keys.cluster_hashes), so the
requests of a user (or a session) meet in one shard whatever the key; inside it they are ordered by the
cluster columns (nulls last), then by input position, as the shard would hold them without clustering. That
order is total, so a shard's bytes never depend on the batching, the memory limit or the engine. This is
where most of RecD's on-disk saving comes from: a user's histories, nearly equal from one request to the
next, sit side by side and zstd stores the repeats once.

Memory: requests are buffered up to `max_bytes`; then each shard's buffered requests are sorted and written
as a run (an Arrow IPC stream); reading a shard merges its runs with one batch of each in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

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


class ClusterSort:
    """Requests -> `shards` shards by their cluster values, each read back ordered by them.

    `name` tells the runs of several writers into one folder apart (the Spark engine: one per group task).
    """

    def __init__(self, folder: str, shards: int, columns: tuple[str, ...], max_bytes: int, name: str = "c"):
        self.folder, self.shards, self.columns, self.max_bytes, self.name = folder, shards, columns, max_bytes, name
        os.makedirs(folder, exist_ok=True)
        self._buffers: list[list[pa.RecordBatch]] = [[] for _ in range(shards)]
        self._buffered = 0
        self._runs = 0  # runs written per shard so far
        self.requests = 0

    def add(self, requests: pa.RecordBatch) -> None:
        self.requests += requests.num_rows
        hashes = cluster_hashes([requests.column(c) for c in self.columns])
        for s, piece in split_by_shard(requests, self.shards, hashes):
            self._buffers[s].append(piece)
        self._buffered += requests.nbytes
        if self._buffered >= self.max_bytes:
            self._write_runs()

    def close(self) -> None:
        self._write_runs()

    def _write_runs(self) -> None:
        """Each shard's buffered requests, sorted, as one more run of that shard."""
        for s, pieces in enumerate(self._buffers):
            if pieces:
                write_run(self.run_path(s, self._runs), sorted_rows(pa.Table.from_batches(pieces), self.columns),
                          min(RUN_BATCH_BYTES, max(1, self.max_bytes // 16)))
        self._buffers = [[] for _ in range(self.shards)]
        self._buffered = 0
        self._runs += 1

    def run_path(self, shard: int, run: int) -> str:
        return os.path.join(self.folder, run_file(shard, self.name, run))

    def files(self, shard: int) -> list[str]:
        """This writer's runs of `shard`, in the order written."""
        return [p for p in (self.run_path(shard, r) for r in range(self._runs)) if os.path.exists(p)]


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
