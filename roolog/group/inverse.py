"""The inverse of grouping: request rows -> impression rows (roolog.run.explode writes them to a file)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .values import repeat_indices, take


def impression_rows(batch: pa.RecordBatch, schema: pa.Schema, impression: set[str],
                    count_column: str | None = None) -> pa.RecordBatch:
    """Request rows back to impression rows: lists flattened, request values repeated per impression."""
    if count_column:
        lengths = batch.column(count_column).to_numpy()
    else:
        first = next(c for c in schema.names if c in impression)
        lengths = pc.list_value_length(batch.column(first)).to_numpy()
    rep = repeat_indices(lengths)
    arrays = [batch.column(f.name).flatten() if f.name in impression else take(batch.column(f.name), rep)
              for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
