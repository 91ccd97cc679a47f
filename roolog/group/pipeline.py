"""Rows in, requests out: the grouping pipeline that convert and stats share.

    batches of rows -> StreamGrouper -> run batches -> RunSpill (one partition per shard)
                    -> RunSpill.fold (scattered requests) -> request batches, shard by shard
                    [-> RequestSorter, with --cluster-by: shards by the cluster columns, requests ordered by them]

Memory stays bounded: a batch of rows at a time while reading; a spill part of about memory_limit / 6
while folding; a batch of requests at a time while reading the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa

from .figures import add_column_bytes
from .grouper import Grouping, StreamGrouper
from .ordering import RequestSorter
from .schema import Levels
from .spill import RunSpill


class RequestPipeline:
    def __init__(self, schema: pa.Schema, key: tuple[str, ...], order_by: str | None, levels: Levels,
                 spill_dir: str, shards: int, memory_limit: int, cluster_by: tuple[str, ...] = ()):
        self.schema = schema
        self.cluster_by = cluster_by
        self.clusters: RequestSorter | None = None
        self.grouping = Grouping(schema, key, order_by, levels)
        self.spill = RunSpill(spill_dir, shards)
        self.streamer = StreamGrouper.within(self.grouping, memory_limit)
        self.memory_limit = memory_limit
        self.input_bytes = dict.fromkeys(schema.names, 0)  # Arrow bytes of each column as read
        self._piece: tuple[str, int] | None = None  # the input piece the carried request is from

    @property
    def levels(self) -> Levels:
        return self.grouping.levels

    def feed(self, batch: pa.RecordBatch, where: str, piece: tuple[str, int]) -> None:
        """Rows of `piece` (input file, piece of it: sources.Piece). A request is never carried from one piece
        into the next: its rows in two pieces are folded like any scattered request, as the Spark engine (a
        task per piece) folds them, so both engines check and report it alike."""
        if piece != self._piece:
            self._flush()
            self._piece = piece
        add_column_bytes(self.input_bytes, batch)
        for runs in self.streamer.feed(batch, where):
            self.spill.write(runs)

    def _flush(self) -> None:
        for runs in self.streamer.flush():
            self.spill.write(runs)

    def finish_input(self) -> None:
        """No more rows: emit the carried request and fold every shard's scattered requests."""
        self._flush()
        self.spill.close()
        for s in range(self.spill.partitions):
            self.spill.fold(s, self.grouping, max_bytes=self.memory_limit // 6)
        if self.cluster_by:  # the requests, whole now, to the shards of their cluster values
            self.clusters = RequestSorter(os.path.join(self.spill.folder, "cluster"), self.spill.partitions,
                                          self.cluster_by, self.memory_limit // 6, route=self.cluster_by)
            for s in range(self.spill.partitions):
                for runs in self.spill.read(s, self.grouping):
                    self.clusters.add(runs)
            self.clusters.close()

    @property
    def shards(self) -> int:
        return self.spill.partitions

    def requests(self, shard: int) -> Iterator[pa.RecordBatch]:
        """The shard's requests in input order (with --cluster-by: ordered by the cluster columns, then input
        order), one row each, under the final levels (with the internal columns: impressions per request,
        input position, key hash)."""
        if self.clusters is not None:
            return self.clusters.read(shard, self.grouping.conform)
        return self.spill.read(shard, self.grouping)

    @staticmethod
    def spill_dir(tmp: str, name: str | None) -> str:
        return os.path.join(tmp, "spill", name or "_flat")
