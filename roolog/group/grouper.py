"""Rows of one request -> one request row.

A *run batch* holds one row per run of rows sharing a key: the key columns, every request-level column
once (its input type), every impression-level column as list<type> cut zero-copy from the rows, and three
internal columns: the number of impressions, the input position of the run's first row (for a stable
order) and the xxh64 of the key (for shards and spill partitions).

Contiguous input gives one run per request. A request whose rows are scattered gives several runs; the
spill hash-partitions runs by key, and `merge_runs` folds each such request into one run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import RoologError, shown
from ..read.sources import SourceBatch, where_through
from .keys import key_hashes, sortable_key
from .schema import Levels
from .values import (
    adjacent_differs,
    adjacent_differs_in,
    as_list,
    differs_at,
    offsets_from_lengths,
    python_value,
    repeat_indices,
    take,
    take_rows,
)

N_COL, SEQ_COL, HASH_COL = "__roolog_n", "__roolog_seq", "__roolog_hash"


def describe_key(key: tuple[str, ...], values: list) -> str:
    return ", ".join(f"{k}={shown(v)}" for k, v in zip(key, values, strict=True))


class Grouping:
    """What every grouping step needs: the input schema, the key, the order column and the live levels.

    Its one operation, `fold`, takes *pieces* - input rows (one impression each) or run batches (several)
    - and folds the pieces sharing a key into one run, pieces in input order, impressions then ordered by
    the order column. Heavy request-level values (a user history) are compared in place and copied once
    per request, never once per impression.
    """

    def __init__(self, schema: pa.Schema, key: tuple[str, ...], order_by: str | None, levels: Levels):
        self.schema = schema
        self.key = key
        self.order_by = order_by
        self.levels = levels

    def key_changes(self, batch: pa.RecordBatch | pa.Table, perm: np.ndarray | None = None) -> np.ndarray:
        """Whether piece i+1 has another key than piece i (in `perm` order when given: all or some pieces)."""
        changes = np.zeros(max(0, (batch.num_rows if perm is None else len(perm)) - 1), dtype=bool)
        for k in self.key:
            changes |= adjacent_differs_in(batch.column(k), perm)
        return changes

    def fold(self, pieces: pa.RecordBatch, n: np.ndarray, seq: np.ndarray, where: str,
             complete: bool = True, subset: np.ndarray | None = None) -> pa.RecordBatch:
        """One run per distinct key among `pieces` (with `n` impressions and input position `seq` each).

        With complete=False (while streaming) keys that come back non-adjacently are only brought together
        when that at least halves the runs; otherwise the runs stay as they are and the spill's fold, which
        has to see them anyway, does it once. `subset`: fold only these pieces (their indices), as if they
        had been taken out first, without the copy.
        """
        perm = None
        if subset is None:
            changes = self.key_changes(pieces)
            starts = np.r_[0, np.flatnonzero(changes) + 1]
            hashes = key_hashes([pieces.column(k).take(pa.array(starts)) for k in self.key])
            distinct = len(np.unique(hashes))
            out_of_order = (np.diff(seq) < 0) & ~changes
        if subset is not None or (distinct < len(starts) and (complete or 2 * distinct <= len(starts))) \
                or out_of_order.any():
            rows = np.arange(pieces.num_rows) if subset is None else subset
            keys = [sortable_key(pieces.column(k).take(pa.array(rows))) for k in self.key]
            table = pa.table([*keys, pa.array(seq[rows])], names=[*self.key, SEQ_COL])
            perm = rows[pc.sort_indices(table, sort_keys=[(c, "ascending") for c in table.column_names]).to_numpy()]
            changes = self.key_changes(pieces, perm)
            starts = np.r_[0, np.flatnonzero(changes) + 1]
            perm, starts, changes = _requests_by_first_seq(perm, starts, seq)
            hashes = key_hashes([pieces.column(k).take(pa.array(perm[starts])) for k in self.key])
        order = np.arange(pieces.num_rows) if perm is None else perm
        self._check_levels(pieces, perm, changes, order[starts], where)
        lengths = np.add.reduceat(n[order], starts)
        offsets = offsets_from_lengths(lengths)
        flat = {f.name: self._flat_values(pieces, f.name, n, perm) for f in self.schema
                if f.name in self.levels.impression}
        reorder = self.impression_order(flat.get(self.order_by), offsets)
        arrays = []
        every_piece = perm is None and len(starts) == pieces.num_rows  # one run per piece, in place
        for f in self.schema:
            if f.name in flat:
                values = flat[f.name] if reorder is None else take(flat[f.name], reorder)
                arrays.append(as_list(values, offsets))
            else:
                arrays.append(pieces.column(f.name) if every_piece else take(pieces.column(f.name), order[starts]))
        arrays += [pa.array(lengths, pa.int64()), pa.array(seq[order[starts]], pa.int64()), pa.array(hashes)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.run_schema())

    def _flat_values(self, pieces: pa.RecordBatch, col: str, n: np.ndarray, perm: np.ndarray | None) -> pa.Array:
        """The column's impressions, piece after piece in `perm` order (zero-copy when nothing moves)."""
        c = pieces.column(col)
        if self.is_list_form(pieces.schema, col):
            return (c if perm is None else take(c, perm)).flatten()
        if perm is None and (n == 1).all():
            return c
        order = np.arange(len(n)) if perm is None else perm
        return take(c, np.repeat(order, n[order]))

    def impression_order(self, values: pa.Array | None, offsets: np.ndarray) -> pa.Array | None:
        """Stable sort of impressions by the order column within each run; None when already in order."""
        if values is None or len(values) < 2:
            return None
        prev, nxt = values.slice(0, len(values) - 1), values.slice(1)
        backwards = pc.less(nxt, prev).fill_null(False).to_numpy(zero_copy_only=False)
        backwards |= pc.and_(prev.is_null(), nxt.is_valid()).to_numpy(zero_copy_only=False)
        if pa.types.is_floating(values.type):  # the sort puts NaN after every number (and before nulls)
            nan_first = pc.and_(pc.is_nan(prev), pc.invert(pc.is_nan(nxt)))
            backwards |= nan_first.fill_null(False).to_numpy(zero_copy_only=False)
        backwards[offsets[1:-1] - 1] = False  # a new run may start lower
        if not backwards.any():
            return None
        run_id = pa.array(np.repeat(np.arange(len(offsets) - 1), np.diff(offsets)))
        table = pa.table({"run": run_id, "order": values})
        return pc.sort_indices(table, sort_keys=[("run", "ascending"), ("order", "ascending")])  # nulls last

    def _check_levels(self, pieces, perm, changes, first_piece, where: str) -> None:
        """Move request-level columns that vary inside a request to impression level (or fail if declared)."""
        for col in list(self.levels.request):
            c = pieces.column(col)
            varies = np.flatnonzero(adjacent_differs_in(c, perm) & ~changes)
            if len(varies) == 0:
                continue
            if col in self.levels.fixed:
                i = int(varies[0])
                a, b = (i, i + 1) if perm is None else (int(perm[i]), int(perm[i + 1]))
                raise self.conflict(col, [pieces.column(k)[a] for k in self.key], c[a], c[b], where)
            self.levels.demote(col)

    def conflict(self, col: str, key: list[pa.Scalar], a: pa.Scalar, b: pa.Scalar, where: str) -> RoologError:
        """The error for a fixed request-level column `col` that holds `a` and `b` inside the request `key`."""
        request = describe_key(self.key, [python_value(k) for k in key])
        values = f"{shown(python_value(a))} vs {shown(python_value(b))} ({where})"
        if col in self.levels.cluster:
            return RoologError(f"--cluster-by column {col!r} varies inside request {request}: {values}; "
                               "cluster by a column that holds one value per request (a user or session id)")
        return RoologError(f"column {col!r} is declared request-level but varies inside request {request}: "
                           f"{values}; use --on-conflict demote to keep it as a list")

    # ---- run batches under changing levels ---------------------------------------------------------

    def is_list_form(self, run_schema: pa.Schema, col: str) -> bool:
        return not run_schema.field(col).type.equals(self.schema.field(col).type)

    def run_schema(self) -> pa.Schema:
        """The schema of a run batch under the current levels."""
        fields = [f if f.name in self.key or f.name in self.levels.request else pa.field(f.name, pa.list_(f.type))
                  for f in self.schema]
        return pa.schema(fields + [pa.field(N_COL, pa.int64()), pa.field(SEQ_COL, pa.int64()),
                                   pa.field(HASH_COL, pa.uint64())])

    def conform(self, runs: pa.RecordBatch) -> pa.RecordBatch:
        """Expand columns stored once per run that have since moved to impression level."""
        target = self.run_schema()
        if runs.schema.equals(target):
            return runs
        lengths = runs.column(N_COL).to_numpy()
        offsets, rep = offsets_from_lengths(lengths), repeat_indices(lengths)
        arrays = []
        for f in target:
            col = runs.column(f.name)
            arrays.append(col if col.type.equals(f.type) else as_list(take(col, rep), offsets))
        return pa.RecordBatch.from_arrays(arrays, schema=target)

    def fold_runs(self, runs: pa.RecordBatch, where: str) -> pa.RecordBatch:
        return self.fold(runs, runs.column(N_COL).to_numpy(), runs.column(SEQ_COL).to_numpy(), where)

    def fold_rows(self, rows: pa.RecordBatch | pa.Table, seq: np.ndarray, where: str) -> pa.RecordBatch:
        """Rows as they stream in, into runs (a key may still have other runs elsewhere)."""
        if isinstance(rows, pa.Table):
            rows = rows.combine_chunks().to_batches()[0]
        return self.fold(rows, np.ones(rows.num_rows, dtype=np.int64), seq, where, complete=False)


def _requests_by_first_seq(perm: np.ndarray, starts: np.ndarray, seq: np.ndarray):
    """Reorder key-sorted groups of pieces so requests come out in input order (by their first row)."""
    lengths = np.diff(np.r_[starts, len(perm)])
    order = np.argsort(seq[perm[starts]], kind="stable")
    new_lengths = lengths[order]
    new_starts = np.r_[0, np.cumsum(new_lengths)[:-1]]
    moved = perm[np.repeat(starts[order] - new_starts, new_lengths) + np.arange(len(perm))]
    changes = np.zeros(max(0, len(perm) - 1), dtype=bool)
    changes[new_starts[1:] - 1] = True
    return moved, new_starts, changes


def merge_runs(grouping: Grouping, runs: pa.Table, where: str) -> list[pa.RecordBatch] | None:
    """Fold runs that share a key into one run each: the runs that were whole already and the folded ones,
    each in input order. None when every key has one run already."""
    hashes = runs.column(HASH_COL).to_numpy()
    unique, counts = np.unique(hashes, return_counts=True)
    if (counts == 1).all():
        return None
    batch = runs.combine_chunks().to_batches()[0]
    split = np.isin(hashes, unique[counts > 1])
    if split.mean() > 0.5:  # mostly scattered: folding everything beats copying the runs apart first
        return [grouping.conform(grouping.fold_runs(batch, where))]
    merged = grouping.fold_runs(take_rows(batch, np.flatnonzero(split)), where)
    whole = take_rows(batch, np.flatnonzero(~split))
    return [grouping.conform(whole), grouping.conform(merged)]  # folding may have moved columns


def null_keys_dropped(sb: SourceBatch, key: tuple[str, ...], drop: bool) -> tuple[pa.RecordBatch, int]:
    """The batch without rows whose key is null; such a row is an error naming file and row unless `drop`."""
    null = None
    for k in key:
        col = sb.batch.column(k)
        if col.null_count:
            mask = col.is_null().to_numpy(zero_copy_only=False)
            null = mask if null is None else null | mask
    if null is None:
        return sb.batch, 0
    if not drop:
        col = next(k for k in key if sb.batch.column(k).null_count)
        row = sb.first_row + int(np.flatnonzero(null)[0]) + 1
        raise RoologError(f"{sb.path}, row {row}: key column {col!r} is null "
                          f"(use --drop-null-keys to skip such rows; they are counted in the report)")
    return sb.batch.filter(pa.array(~null)), int(null.sum())


class RequestTable:
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

    def __init__(self, grouping: Grouping):
        self.g = grouping
        self._sorted_hashes = np.empty(0, dtype=np.uint64)  # every slot's key hash, sorted
        self._sorted_slots = np.empty(0, dtype=np.int64)  # the slot of each
        self._stored: list[pa.RecordBatch] = []  # key and request-level columns, a row per slot, chunk by chunk
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
        chunks = list(self._stored)
        opened = None
        if len(new):
            unique, first, inverse = np.unique(hashes[new], return_index=True, return_inverse=True)
            rank = np.empty(len(unique), dtype=np.int64)
            rank[np.argsort(first)] = np.arange(len(unique))  # new slots in the order of their first rows
            slot[new] = self.slots + rank[inverse.ravel()]
            opened = new[np.sort(first)]  # the rows whose values the new slots store
            chunks.append(take_rows(rows.select(self._stored_names()), opened))
        starts = np.cumsum([0, *(b.num_rows for b in chunks[:-1])])  # each chunk's first slot
        chunk_of = np.searchsorted(starts, slot, side="right") - 1
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
            else:  # the slots' values, copied once (not at all when they are one chunk)
                chunks = [b.column(f.name) for b in self._stored]
                arrays.append(chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks))
        arrays += [pa.array(lengths, pa.int64()), pa.array(seq[order[offsets[:-1]]], pa.int64()),
                   pa.array(np.concatenate(self._slot_hashes))]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


class StreamGrouper:
    """Streams batches of rows into run batches, carrying requests that may go on into the next batch.

    Contiguous input: the last request of a batch is carried (it may continue). Interleaved input (a log
    merged from many servers: each request's rows spread over a window of concurrent ones): the batch's
    tail that holds every row of the requests still open is carried, so that they are folded whole in
    memory with the next batch's rows instead of going to the spill as scattered pieces. The cut is where
    no request has rows on both sides; the requests before it are emitted in input order, before every
    carried one, so the output is the same as if everything had gone through the spill. When the open
    requests reach back too far (a shuffled log), rows are pooled in a RequestTable (RequestTable: each
    request's request-level values once, every row's impression columns) up to `pool_bytes`: each request
    in the pool leaves as one run; a request with rows in several pools is folded by the spill.
    """

    def __init__(self, grouping: Grouping, carry_bytes: int = 256 << 20, pool_bytes: int | None = None):
        self.g = grouping
        self.carry_bytes = carry_bytes
        self.pool_bytes = carry_bytes if pool_bytes is None else pool_bytes
        self.rows_seen = 0
        self._carry: list[tuple[pa.RecordBatch, np.ndarray]] = []
        self._carry_where = ""
        self._carry_runs = 0  # runs in the carry: 1 while it is one request
        self._wheres: list[tuple[int, str]] = []  # (first input position, where) of recent batches
        self._pool: RequestTable | None = None  # a shuffled stretch's requests, one row each

    @classmethod
    def within(cls, grouping: Grouping, memory_limit: int) -> StreamGrouper:
        """A quarter of the memory limit for carried rows (at least 1 MB: a request rarely exceeds it) and
        for a shuffled stretch's pool (no floor: a tiny limit leaves the folding to the spill)."""
        return cls(grouping, carry_bytes=max(1 << 20, memory_limit // 4), pool_bytes=memory_limit // 4)

    @property
    def carried_rows(self) -> int:
        """Rows held back for the next batch."""
        return sum(b.num_rows for b, _ in self._carry) + (self._pool.rows if self._pool else 0)

    @property
    def pooled_bytes(self) -> int:
        """What the pool of a shuffled stretch holds (its requests once each, its rows' impression columns)."""
        return self._pool.nbytes if self._pool else 0

    def feed(self, batch: pa.RecordBatch, where: str) -> Iterator[pa.RecordBatch]:
        n = batch.num_rows
        if n == 0:
            return
        seq = np.arange(self.rows_seen, self.rows_seen + n, dtype=np.int64)
        self._wheres.append((self.rows_seen, where))
        self.rows_seen += n
        if self._pool is not None:
            yield from self._add_to_pool(batch, seq, where)
            return
        bounds = np.flatnonzero(self.g.key_changes(batch)) + 1
        if self._carry_runs > 1 or (len(bounds) and self._repeats(batch, np.r_[0, bounds])):
            # interleaved: fold with the carried open requests (a copy: folding these moves every row anyway)
            if self._carry_runs == 1:  # one request (a shuffled log's last run): on its own, no copy
                yield from self.flush()
            if self._carry:
                batch = pa.Table.from_batches([*(b for b, _ in self._carry), batch]).combine_chunks().to_batches()[0]
                seq = np.concatenate([*(s for _, s in self._carry), seq])
                where = where_through(self._carry_where, where)
                bounds = np.flatnonzero(self.g.key_changes(batch)) + 1
            self._carry, self._carry_runs = [], 0
            yield from self._interleaved(batch, seq, where, np.r_[0, bounds])
            return
        first_end = int(bounds[0]) if len(bounds) else n
        body_start = 0
        if self._carry and self._continues_carry(batch):
            if first_end == n:
                yield from self._add_to_carry(batch, seq, where)
                return
            self._carry.append((batch.slice(0, first_end), seq[:first_end]))
            body_start = first_end
        last_start = int(bounds[-1]) if len(bounds) else 0
        yield from self.flush()
        if last_start > body_start:
            yield self.g.fold_rows(batch.slice(body_start, last_start - body_start), seq[body_start:last_start],
                                   where)
        self._carry, self._carry_runs = [(batch.slice(last_start), seq[last_start:])], 1
        self._carry_where, self._wheres = where, self._wheres[-1:]

    def _repeats(self, batch: pa.RecordBatch, starts: np.ndarray) -> bool:
        """Whether a key has more than one run among these (interleaved rows)."""
        hashes = key_hashes([batch.column(k).take(pa.array(starts)) for k in self.g.key])
        return len(np.unique(hashes)) < len(hashes)

    def _interleaved(self, rows: pa.RecordBatch, seq: np.ndarray, where: str,
                     starts: np.ndarray) -> Iterator[pa.RecordBatch]:
        """Fold the requests that started before the first still open one; carry the rest."""
        carried = self._carried_runs(rows, starts)
        if carried is None:  # open requests reach back too far (shuffled): pooled, then folded together
            self._carry_where = where  # (from the first carried row's batch on)
            yield from self._add_to_pool(rows, seq, where)
            return
        keep = np.repeat(carried, np.diff(np.r_[starts, rows.num_rows]))
        done = np.flatnonzero(~keep)
        if len(done):
            yield self.g.fold(rows, np.ones(rows.num_rows, np.int64), seq, where, subset=done)
        held = np.flatnonzero(keep)
        self._hold(take_rows(rows, held), seq[held], int(carried.sum()), where)

    def _hold(self, rows: pa.RecordBatch, seq: np.ndarray, runs: int, where: str) -> None:
        """Carry these rows; their span for messages runs from the batch the earliest of them came in."""
        self._carry, self._carry_runs, self._carry_where = ([(rows, seq)] if rows.num_rows else []), runs, where
        if rows.num_rows:
            i = max(j for j, (start, _) in enumerate(self._wheres) if start <= seq[0])
            self._wheres = self._wheres[i:]
            self._carry_where = where_through(self._wheres[0][1], where)

    def _carried_runs(self, rows: pa.RecordBatch, starts: np.ndarray) -> np.ndarray | None:
        """Which runs to carry: those of the requests that started at or after the first row of the earliest
        request still open (one with a run in the tail that covers twice the longest reach seen, from a
        request's first run to its last). The others are closed and all start before every carried one, so
        emitting them first keeps requests in input order. None when the carry would be over half the rows
        or `carry_bytes`."""
        n = rows.num_rows
        hashes = key_hashes([rows.column(k).take(pa.array(starts)) for k in self.g.key])
        _, first_index, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        first = first_index[inverse.ravel()]  # each run's request's first run
        reach = int((starts - starts[first]).max())
        tail = max(0, int(np.searchsorted(starts, n - 2 * reach - 1, side="right")) - 1)
        carried = first >= int(first[tail:].min())
        held = int(np.diff(np.r_[starts, n])[carried].sum())
        if held > n // 2 or held * (rows.nbytes / n) > self.carry_bytes:
            return None
        return carried

    def _add_to_pool(self, rows: pa.RecordBatch, seq: np.ndarray, where: str) -> Iterator[pa.RecordBatch]:
        """Pool a shuffled stretch's rows (RequestTable: each request once); at `pool_bytes` emit its requests
        as runs (the next batch starts afresh)."""
        self._carry_where = where_through(self._carry_where, where)
        if self._pool is None:
            self._pool = RequestTable(self.g)
        if not self._pool.add(rows, seq, self._carry_where):  # (two keys of one hash: folded by value)
            yield from self.flush()
            yield self.g.fold_rows(rows, seq, where)
        elif self._pool.nbytes >= self.pool_bytes:
            yield from self.flush()

    def flush(self) -> Iterator[pa.RecordBatch]:
        """Emit the carried requests (at the end of the input, or when the next rows start another)."""
        if self._pool is not None:
            pool, self._pool, self._wheres = self._pool, None, self._wheres[-1:]
            yield pool.runs()
            return
        if not self._carry:
            return
        rows = pa.Table.from_batches([b for b, _ in self._carry])
        seq = np.concatenate([s for _, s in self._carry])
        self._carry, self._carry_runs = [], 0
        yield self.g.fold_rows(rows, seq, self._carry_where)

    def _add_to_carry(self, batch, seq, where) -> Iterator[pa.RecordBatch]:
        self._carry.append((batch, seq))
        if sum(b.nbytes for b, _ in self._carry) > self.carry_bytes:
            yield from self.flush()  # a huge request is emitted in pieces and merged like scattered ones
        self._carry_where = where

    def _continues_carry(self, batch: pa.RecordBatch) -> bool:
        last = self._carry[-1][0]
        for k in self.g.key:
            pair = pa.concat_arrays([last.column(k).slice(last.num_rows - 1), batch.column(k).slice(0, 1)])
            if adjacent_differs(pair)[0]:
                return False
        return True
