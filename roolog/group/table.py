"""A shuffled stretch's requests, one row each, while their impressions arrive (the StreamGrouper's pool).

In a shuffled log a request's rows are spread over the whole file: any window of rows holds a piece of
almost every request. Pooling the rows and sorting them by key (Grouping.fold) copies every row's
request-level values (say, an 800-byte history) along with it, and each pool leaves a piece of nearly
every request for the spill to fold again. The table instead keeps each request's key and request-level
values once, from its first row (a *slot*, slots in input order), compares every later row's values with
them exactly, and keeps only the impression-level columns of each row:

    rows in:    [k=7 h=A i=1]  [k=3 h=B i=2]  [k=7 h=A i=3]          h: request-level, i: impression-level
    slots:      0: k=7 h=A     1: k=3 h=B                             stored once, in order of first row
    rows kept:  (slot 0, i=1)  (slot 1, i=2)  (slot 0, i=3)           h of the third row compared with slot 0's
    runs():     k=7 h=A i=[1, 3]    k=3 h=B i=[2]                     one run per slot, as Grouping.fold gives

A request-level column that varies is demoted (its stored values move back to every row) or, declared,
is the same error Grouping.fold gives. Keys are looked up by hash and confirmed by value: a row whose key
is not its slot's (an xxh64 collision) makes `add` refuse the rows, changing nothing, and the caller folds
them the usual way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .keys import key_hashes
from .values import as_list, differs_at, offsets_from_lengths, take, take_rows

if TYPE_CHECKING:  # (the grouper holds a table: a run-time import would be a cycle)
    from .grouper import Grouping


class RequestTable:
    def __init__(self, grouping: Grouping):
        self.g = grouping
        self._sorted_hashes = np.empty(0, dtype=np.uint64)  # every slot's key hash, sorted
        self._sorted_slots = np.empty(0, dtype=np.int64)  # the slot of each
        self._stored: list[pa.RecordBatch] = []  # key and request-level columns, a row per slot, chunk by chunk
        self._chunk_starts: list[int] = []  # the first slot of each chunk
        self._slot_hashes: list[np.ndarray] = []
        self._kept: list[pa.RecordBatch] = []  # the impression-level columns of every row added
        self._row_slots: list[np.ndarray] = []
        self._row_seq: list[np.ndarray] = []
        self.slots = 0
        self.rows = 0
        self.nbytes = 0

    def _stored_names(self) -> list[str]:
        return [*self.g.key, *(f.name for f in self.g.schema if f.name in self.g.levels.request)]

    def _kept_names(self) -> list[str]:
        return [f.name for f in self.g.schema if f.name in self.g.levels.impression]

    def add(self, rows: pa.RecordBatch, seq: np.ndarray, where: str) -> bool:
        """Add input rows (one impression each, input positions `seq`); False, with nothing changed, when a
        key's hash is another key's (the caller folds these rows the usual way)."""
        n = rows.num_rows
        hashes = key_hashes([rows.column(k) for k in self.g.key])
        pos = np.minimum(np.searchsorted(self._sorted_hashes, hashes), max(0, len(self._sorted_hashes) - 1))
        found = self._sorted_hashes[pos] == hashes if len(self._sorted_hashes) else np.zeros(n, dtype=bool)
        slot = np.empty(n, dtype=np.int64)
        slot[found] = self._sorted_slots[pos[found]]
        new = np.flatnonzero(~found)
        chunks, starts = list(self._stored), list(self._chunk_starts)
        opened = None
        if len(new):
            unique, first, inverse = np.unique(hashes[new], return_index=True, return_inverse=True)
            rank = np.empty(len(unique), dtype=np.int64)
            rank[np.argsort(first)] = np.arange(len(unique))  # new slots in the order of their first rows
            slot[new] = self.slots + rank[inverse.ravel()]
            opened = new[np.sort(first)]  # the rows whose values the new slots store
            chunks.append(take_rows(rows.select(self._stored_names()), opened))
            starts.append(self.slots)
        chunk_of = np.searchsorted(np.asarray(starts), slot, side="right") - 1
        by_chunk = [(c, np.flatnonzero(chunk_of == c)) for c in range(len(chunks))]
        by_chunk = [(c, r) for c, r in by_chunk if len(r)]

        def differing(col: str) -> np.ndarray:
            """The rows whose value of `col` is not their slot's."""
            found_rows = [r[differs_at(chunks[c].column(col), slot[r] - starts[c], rows.column(col), r)]
                          for c, r in by_chunk]
            return np.sort(np.concatenate(found_rows)) if found_rows else np.zeros(0, dtype=np.int64)

        if any(len(differing(k)) for k in self.g.key):
            return False  # a hash collision: two keys, one hash
        for col in list(self.g.levels.request):
            varies = differing(col)
            if not len(varies):
                continue
            i = int(varies[0])
            c = int(chunk_of[i])
            if col in self.g.levels.fixed:
                raise self.g.conflict(col, [rows.column(k)[i] for k in self.g.key],
                                      chunks[c].column(col)[int(slot[i]) - starts[c]], rows.column(col)[i], where)
            self._demote(col)
            chunks = [b.drop_columns([col]) for b in chunks]
        if opened is not None:
            self._stored.append(chunks[-1])
            self._chunk_starts.append(self.slots)
            self._slot_hashes.append(hashes[opened])
            self.slots += len(opened)
            merged = np.concatenate([self._sorted_hashes, hashes[opened]])
            order = np.argsort(merged, kind="stable")
            self._sorted_hashes = merged[order]
            self._sorted_slots = np.concatenate([self._sorted_slots, slot[opened]])[order]
            self.nbytes += chunks[-1].nbytes + 16 * len(opened)
        kept = rows.select(self._kept_names())
        self._kept.append(kept)
        self._row_slots.append(slot)
        self._row_seq.append(seq)
        self.rows += n
        self.nbytes += kept.nbytes + 16 * n
        return True

    def _demote(self, col: str) -> None:
        """`col` varies: each row added so far gets its slot's value (which it held) as its own."""
        stored = pa.chunked_array([b.column(col) for b in self._stored], type=self.g.schema.field(col).type)
        self.g.levels.demote(col)
        if self._kept:
            slots = np.concatenate(self._row_slots)
            values = take(stored, slots)
            bounds = np.cumsum([0, *(b.num_rows for b in self._kept)])
            names = self._kept_names()
            self._kept = [pa.RecordBatch.from_arrays(
                [values.slice(bounds[j], b.num_rows) if name == col else b.column(name) for name in names],
                names=names) for j, b in enumerate(self._kept)]
            self.nbytes += values.nbytes
        self._stored = [b.drop_columns([col]) for b in self._stored]

    def runs(self) -> pa.RecordBatch:
        """One run per slot, in slot order: the run batch Grouping.fold gives for the same rows."""
        schema = self.g.run_schema()
        stored = pa.Table.from_batches(self._stored).combine_chunks()
        kept = pa.Table.from_batches(self._kept).combine_chunks()
        slots, seq = np.concatenate(self._row_slots), np.concatenate(self._row_seq)
        order = np.argsort(slots, kind="stable") if (np.diff(seq) > 0).all() else np.lexsort((seq, slots))
        lengths = np.bincount(slots, minlength=self.slots)
        offsets = offsets_from_lengths(lengths)
        flat = {name: take(kept.column(name), order) for name in kept.column_names}
        reorder = self.g.impression_order(flat.get(self.g.order_by), offsets)
        arrays = []
        for f in self.g.schema:
            if f.name in flat:
                arrays.append(as_list(flat[f.name] if reorder is None else take(flat[f.name], reorder), offsets))
            else:
                arrays.append(stored.column(f.name).combine_chunks())
        arrays += [pa.array(lengths, pa.int64()), pa.array(seq[order[offsets[:-1]]], pa.int64()),
                   pa.array(np.concatenate(self._slot_hashes))]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
