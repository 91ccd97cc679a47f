"""Parquet encodings chosen per column, by trying them on a sample and keeping the smallest.

Grouped data is no longer in the order dictionary/RLE encoding likes best (a list of item ids is not a run
of repeats), so the default settings leave bytes on the table. For each column the writer tries dictionary
encoding, plain, and the delta or byte-stream-split encodings that fit its physical type, each with the
run's own zstd level, on the first requests of the output, and keeps the smallest. The choice is made once
per output from the same requests every time, so it is deterministic.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

_CANDIDATES = {  # Parquet physical type -> encodings worth trying besides dictionary
    "INT32": ("PLAIN", "DELTA_BINARY_PACKED", "BYTE_STREAM_SPLIT"),
    "INT64": ("PLAIN", "DELTA_BINARY_PACKED", "BYTE_STREAM_SPLIT"),
    "FLOAT": ("PLAIN", "BYTE_STREAM_SPLIT"),
    "DOUBLE": ("PLAIN", "BYTE_STREAM_SPLIT"),
    "BYTE_ARRAY": ("PLAIN", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY"),
    "FIXED_LEN_BYTE_ARRAY": ("PLAIN", "BYTE_STREAM_SPLIT"),
}
DICTIONARY = "DICTIONARY"


def _size(table: pa.Table, compression_level: int, **settings) -> int:
    """Bytes of `table` written with these settings; it must read back (pyarrow cannot read every encoding
    into every Arrow type, e.g. a delta-encoded string column into a dictionary column)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", compression_level=compression_level, **settings)
    pq.read_table(io.BytesIO(sink.getvalue()))
    return sink.tell()


def _leaves(column: pa.Table) -> list[tuple[str, str]]:
    """(path, physical type) of each Parquet leaf column of a one-column table."""
    sink = io.BytesIO()
    pq.write_table(column.slice(0, 0), sink)
    schema = pq.ParquetFile(io.BytesIO(sink.getvalue())).schema
    return [(schema.column(i).path, schema.column(i).physical_type) for i in range(len(schema))]


def choose_encodings(sample: pa.Table, compression_level: int) -> dict:
    """ParquetWriter settings (use_dictionary, column_encoding) that make `sample` smallest, per column."""
    dictionary: list[str] = []
    encoding: dict[str, str] = {}
    for name in sample.column_names:
        column = sample.select([name])
        leaves = _leaves(column)
        if len(leaves) != 1 or leaves[0][1] not in _CANDIDATES:  # structs, booleans: the defaults
            dictionary += [path for path, _ in leaves]
            continue
        path, physical = leaves[0]
        sizes = {DICTIONARY: _size(column, compression_level, use_dictionary=True)}
        for enc in _CANDIDATES[physical]:
            try:
                sizes[enc] = _size(column, compression_level, use_dictionary=False, column_encoding={path: enc})
            except (pa.ArrowException, ValueError, OSError):  # an encoding this type or pyarrow version lacks
                continue
        best = min(sizes, key=lambda e: (sizes[e], e != DICTIONARY))  # ties keep the default
        if best == DICTIONARY:
            dictionary.append(path)
        else:
            encoding[path] = best
    return {"use_dictionary": dictionary, "column_encoding": encoding}
