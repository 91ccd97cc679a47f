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

from .errors import RoologError
from .schema import Levels
from .sources import SourceBatch
from .values import adjacent_differs, as_list, key_hashes, offsets_from_lengths, repeat_indices

N_COL, SEQ_COL, HASH_COL = "__roolog_n", "__roolog_seq", "__roolog_hash"
INTERNAL = (N_COL, SEQ_COL, HASH_COL)


def describe_key(key: tuple[str, ...], values: list) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in zip(key, values, strict=True))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Grouping:
    """What every grouping step needs: the input schema, the key, the order column and the live levels."""

    def __init__(self, schema: pa.Schema, key: tuple[str, ...], order_by: str | None, levels: Levels):
        self.schema = schema
        self.key = key
        self.order_by = order_by
        self.levels = levels
        self.columns = [n for n in schema.names if n not in key]

    def key_changes(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        changes = np.zeros(max(0, batch.num_rows - 1), dtype=bool)
        for k in self.key:
            changes |= adjacent_differs(batch.column(k))
        return changes

    def group_rows(self, rows: pa.RecordBatch | pa.Table, row_seq: np.ndarray, where: str) -> pa.RecordBatch:
        """One run per distinct key among `rows` (stable), lists ordered by the order column."""
        if isinstance(rows, pa.Table):
            rows = rows.combine_chunks().to_batches()[0]
        changes = self.key_changes(rows)
        starts = np.concatenate([[0], np.flatnonzero(changes) + 1])
        hashes = key_hashes([rows.column(k).take(pa.array(starts)) for k in self.key])
        if len(np.unique(hashes)) < len(starts):  # a key comes back non-adjacently inside these rows
            order = pc.sort_indices(rows, sort_keys=[(k, "ascending") for k in self.key])
            rows, row_seq = rows.take(order), row_seq[order.to_numpy()]
            changes = self.key_changes(rows)
            starts = np.concatenate([[0], np.flatnonzero(changes) + 1])
            hashes = key_hashes([rows.column(k).take(pa.array(starts)) for k in self.key])
        lengths = np.diff(np.append(starts, rows.num_rows))
        seqs = np.minimum.reduceat(row_seq, starts)
        if self.order_by is not None:
            rows = self._order_within_runs(rows, changes, lengths)
            changes = self.key_changes(rows)
        self._check_levels(rows, changes, starts, where)
        return self._runs(rows, starts, lengths, seqs, hashes)

    def _order_within_runs(self, rows: pa.RecordBatch, changes: np.ndarray, lengths: np.ndarray):
        o = rows.column(self.order_by)
        if len(o) < 2:
            return rows
        prev, nxt = o.slice(0, len(o) - 1), o.slice(1)
        backwards = pc.less(nxt, prev).fill_null(False).to_numpy(zero_copy_only=False)
        backwards |= pc.and_(prev.is_null(), nxt.is_valid()).to_numpy(zero_copy_only=False)
        if not (backwards & ~changes).any():
            return rows
        run_id = pa.array(np.repeat(np.arange(len(lengths)), lengths))
        table = pa.table({"run": run_id, "order": o})
        order = pc.sort_indices(table, sort_keys=[("run", "ascending"), ("order", "ascending")])  # nulls last
        return rows.take(order)

    def _check_levels(self, rows: pa.RecordBatch, changes: np.ndarray, starts: np.ndarray, where: str) -> None:
        """Move request-level columns that vary inside a run to impression level (or fail if declared)."""
        for col in list(self.levels.request):
            varies = np.flatnonzero(adjacent_differs(rows.column(col)) & ~changes)
            if len(varies) == 0:
                continue
            if col in self.levels.fixed:
                i = int(varies[0])
                run = int(np.searchsorted(starts, i, side="right") - 1)
                key = describe_key(self.key, [rows.column(k)[int(starts[run])].as_py() for k in self.key])
                a, b = rows.column(col)[i].as_py(), rows.column(col)[i + 1].as_py()
                raise RoologError(
                    f"column {col!r} is declared request-level but varies inside request {key}: "
                    f"{_short(a)} vs {_short(b)} ({where}); use --on-conflict demote to keep it as a list")
            self.levels.demote(col)

    def _runs(self, rows, starts, lengths, seqs, hashes) -> pa.RecordBatch:
        offsets = offsets_from_lengths(lengths)
        first = pa.array(starts)
        arrays, fields = [], []
        for f in self.schema:
            col = rows.column(f.name)
            if f.name in self.key or f.name in self.levels.request:
                arrays.append(col.take(first))
                fields.append(f)
            else:
                arrays.append(as_list(col, offsets))
                fields.append(pa.field(f.name, pa.list_(f.type)))
        arrays += [pa.array(lengths, pa.int64()), pa.array(seqs, pa.int64()), pa.array(hashes, pa.uint64())]
        fields += [pa.field(N_COL, pa.int64()), pa.field(SEQ_COL, pa.int64()), pa.field(HASH_COL, pa.uint64())]
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    # ---- moving run batches between levels ---------------------------------------------------------

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
            arrays.append(col if col.type.equals(f.type) else as_list(col.take(rep), offsets))
        return pa.RecordBatch.from_arrays(arrays, schema=target)

    def explode_runs(self, runs: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray]:
        """Runs back to rows (in run order), with each row's run seq."""
        lengths = runs.column(N_COL).to_numpy()
        rep = repeat_indices(lengths)
        arrays = []
        for f in self.schema:
            col = runs.column(f.name)
            arrays.append(col.flatten() if self.is_list_form(runs.schema, f.name) else col.take(rep))
        rows = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        return rows, np.repeat(runs.column(SEQ_COL).to_numpy(), lengths)


def merge_runs(grouping: Grouping, runs: pa.Table, where: str) -> pa.RecordBatch | None:
    """Fold runs that share a key into one run each. Returns None when every key has one run already."""
    hashes = runs.column(HASH_COL).to_numpy()
    unique, counts = np.unique(hashes, return_counts=True)
    if (counts == 1).all():
        return None
    batch = runs.combine_chunks().to_batches()[0] if runs.num_rows else None
    if batch is None:
        return None
    split = np.isin(hashes, unique[counts > 1])
    by_seq = np.argsort(batch.column(SEQ_COL).to_numpy(), kind="stable")
    split_runs = batch.take(pa.array(by_seq[split[by_seq]]))
    rows, row_seq = grouping.explode_runs(split_runs)
    merged = grouping.group_rows(rows, row_seq, where)
    whole = grouping.conform(batch.filter(pa.array(~split)))
    merged = grouping.conform(merged)
    table = pa.Table.from_batches([whole, merged]).combine_chunks()
    table = table.take(pc.sort_indices(table, sort_keys=[(SEQ_COL, "ascending")]))
    return table.combine_chunks().to_batches()[0]


class StreamGrouper:
    """Streams source batches into run batches, carrying the last request across batch boundaries."""

    def __init__(self, grouping: Grouping, drop_null_keys: bool = False, carry_bytes: int = 256 << 20):
        self.g = grouping
        self.drop_null_keys = drop_null_keys
        self.carry_bytes = carry_bytes
        self.rows_seen = 0
        self.null_key_rows = 0
        self._carry: list[tuple[pa.RecordBatch, np.ndarray]] = []
        self._carry_where = ""

    def feed(self, sb: SourceBatch) -> Iterator[pa.RecordBatch]:
        batch, seq = self._without_null_keys(sb)
        self.rows_seen += sb.batch.num_rows
        n = batch.num_rows
        if n == 0:
            return
        where = f"{sb.path}, rows {sb.first_row + 1}-{sb.first_row + sb.batch.num_rows}"
        bounds = np.flatnonzero(self.g.key_changes(batch)) + 1
        first_end = int(bounds[0]) if len(bounds) else n
        last_start = int(bounds[-1]) if len(bounds) else 0
        body_start = 0
        if self._carry and self._continues_carry(batch):
            if first_end == n:
                yield from self._add_to_carry(batch, seq, where)
                return
            self._carry.append((batch.slice(0, first_end), seq[:first_end]))
            body_start = first_end
        yield from self.flush()
        if last_start > body_start:
            yield self.g.group_rows(batch.slice(body_start, last_start - body_start), seq[body_start:last_start],
                                    where)
        self._carry = [(batch.slice(last_start), seq[last_start:])]
        self._carry_where = where

    def flush(self) -> Iterator[pa.RecordBatch]:
        """Emit the carried request (at the end of the input, or when the next rows start another)."""
        if not self._carry:
            return
        rows = pa.Table.from_batches([b for b, _ in self._carry])
        seq = np.concatenate([s for _, s in self._carry])
        self._carry = []
        yield self.g.group_rows(rows, seq, self._carry_where)

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

    def _without_null_keys(self, sb: SourceBatch) -> tuple[pa.RecordBatch, np.ndarray]:
        batch = sb.batch
        seq = np.arange(self.rows_seen, self.rows_seen + batch.num_rows, dtype=np.int64)
        null = None
        for k in self.g.key:
            col = batch.column(k)
            if col.null_count:
                mask = col.is_null().to_numpy(zero_copy_only=False)
                null = mask if null is None else null | mask
        if null is None:
            return batch, seq
        if not self.drop_null_keys:
            col = next(k for k in self.g.key if batch.column(k).null_count)
            row = sb.first_row + int(np.flatnonzero(null)[0]) + 1
            raise RoologError(f"{sb.path}, row {row}: key column {col!r} is null "
                              f"(use --drop-null-keys to skip such rows; they are counted in the report)")
        self.null_key_rows += int(null.sum())
        return batch.filter(pa.array(~null)), seq[~null]
