"""Parquet encodings chosen per column, by trying them on a sample and keeping the smallest.

Grouped data is no longer in the order dictionary/RLE encoding likes best (a list of item ids is not a run
of repeats), so the default settings leave bytes on the table. For each column the writer tries dictionary
encoding, plain, and the delta or byte-stream-split encodings that fit its physical type, each with the
run's own zstd level, on the first requests of the output, and keeps the smallest. The choice is made once
per output from the same requests every time, so it is deterministic.

The zstd level is chosen per column too: the run's level (--compression-level) unless a higher one of
HIGHER_LEVELS makes the column's first 512 KB of the sample at least 5% smaller than the level kept so far,
and that saving, scaled to the whole column, is at least 0.5% of the sample's bytes (text such as a
user's history as a string pays; random ids do not). That is the write-time budget: a slower level is
only ever paid where it buys a twentieth of a column and a two-hundredth of the output; columns under
2% of the sample are not tried. Levels above SLOW_LEVEL are tried only for a small output (input up to
SMALL_INPUT_BYTES), which may also have every column still at the run's level raised together to one of
WHOLE_LEVELS, when that makes the whole sample at least WHOLE_PAYS smaller (a wide log of many small list
columns: each too small to try alone; tried on the sample's first MB). The budget, measured here on a
user's history as text (12 MB of it, one core): zstd 3 writes it in 0.25 s, 9 in 0.8 s, 12 in 1.7 s and 16
in 10 s (1.2 MB/s) for 3.4% fewer bytes than 9; so a larger output never pays a level above 9 (a 1M-row
CSV log took 11 s at 16 against 2.3 s for DuckDB), and on 8 MB of input 16 costs at most a few seconds.

Two more choices are made on the same sample. The footer (`footer_settings`): min/max statistics only where
readers filter (the key, request-level scalars; and 0/1 label lists, which `convert` reads back to suggest
labels), not on every impression list; and the Arrow schema (`ARROW:schema`, up to a third of a wide log's
footer) only when the Parquet types alone would not read back as the same Arrow types (a large_string, a
dictionary, a time zone name). roolog's own footer record is written either way. And the order of requests
inside a shard (`choose_request_order`): input order, or by number of impressions (the repetition levels of
every list column then repeat from one request to the next), or by a request-level timestamp, whichever
makes the sample smallest, kept only when it saves at least ORDER_PAYS of it.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..group.values import row_bytes

_CANDIDATES = {  # Parquet physical type -> encodings worth trying besides dictionary
    "INT32": ("PLAIN", "DELTA_BINARY_PACKED", "BYTE_STREAM_SPLIT"),
    "INT64": ("PLAIN", "DELTA_BINARY_PACKED", "BYTE_STREAM_SPLIT"),
    "FLOAT": ("PLAIN", "BYTE_STREAM_SPLIT"),
    "DOUBLE": ("PLAIN", "BYTE_STREAM_SPLIT"),
    "BYTE_ARRAY": ("PLAIN", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY"),
    "FIXED_LEN_BYTE_ARRAY": ("PLAIN", "BYTE_STREAM_SPLIT"),
}
DICTIONARY = "DICTIONARY"
HIGHER_LEVELS = (9, 16)  # zstd levels tried over the run's own, in turn
SLOW_LEVEL = 9  # levels above this are tried only for small outputs (see the write-time budget above)
LEVEL_GAIN = 0.95  # a higher level is kept when it leaves at most this share of the bytes of the one below
TRIALS = 2  # columns tried at once
LEVEL_SAMPLE_BYTES = 512 << 10  # the levels are tried on each column's first requests up to this many bytes
LEVEL_SHARE = 0.02  # ... of the columns that hold at least this share of the sample's bytes
LEVEL_PAYS = 0.005  # and a higher level is kept when it saves at least this share of the sample's bytes
SMALL_INPUT_BYTES = 8 << 20  # outputs whose inputs are at most this big may raise every column's level
WHOLE_LEVELS = (9, 16)  # ... to one of these (19 and 22 gained nothing more on the wide logs tried)
WHOLE_SAMPLE_BYTES = 1 << 20  # ... tried on the sample's first requests up to this many bytes
WHOLE_PAYS = 0.01  # ... when that makes the whole sample at least this share smaller
REQUEST_ORDER = "request_order"  # the settings' entry for the order chosen (None: input order; not a writer option)
ORDER_PAYS = 0.01  # a request order is kept when it makes the sample at least this share smaller
ORDER_SAMPLE_BYTES = 2 << 20  # ... tried on the sample's first requests up to this many bytes, at the run's level


def _written(table: pa.Table, compression_level: int, **settings) -> bytes:
    """`table` written with these settings."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", compression_level=compression_level, **settings)
    return sink.getvalue()


def _size(table: pa.Table, compression_level: int, **settings) -> int:
    return len(_written(table, compression_level, **settings))


def _reads_back(written: bytes) -> bool:
    """Whether pyarrow reads the file back (it cannot read every encoding into every Arrow type, e.g. a
    delta-encoded string column into a dictionary column)."""
    try:
        pq.read_table(io.BytesIO(written))
        return True
    except (pa.ArrowException, ValueError, OSError):
        return False


def _leaves(column: pa.Table) -> list[tuple[str, str]]:
    """(path, physical type) of each Parquet leaf column of a one-column table."""
    sink = io.BytesIO()
    pq.write_table(column.slice(0, 0), sink)
    schema = pq.ParquetFile(io.BytesIO(sink.getvalue())).schema
    return [(schema.column(i).path, schema.column(i).physical_type) for i in range(len(schema))]


def writer_settings(encodings: dict | None, compression_level: int) -> dict:
    """ParquetWriter keyword arguments: zstd at the run's level, with the chosen encodings (and levels per
    column, which win) on top."""
    settings = {k: v for k, v in (encodings or {}).items() if k != REQUEST_ORDER}
    return {"compression": "zstd", "compression_level": compression_level, **settings}


def _head(sample: pa.Table, size: int) -> pa.Table:
    """The sample's first requests, up to the one that brings them to `size` bytes (in memory)."""
    upto = np.cumsum(sum((row_bytes(c) for c in sample.columns), np.zeros(sample.num_rows)))
    return sample.slice(0, int(np.searchsorted(upto, size, side="left")) + 1)


def _written_size(table: pa.Table, settings: dict, compression_level: int) -> int:
    sink = io.BytesIO()
    pq.write_table(table, sink, **writer_settings(settings, compression_level))
    return sink.tell()


def footer_settings(sample: pa.Table, statistics: list[str]) -> dict:
    """ParquetWriter settings for the footer of shards like `sample`: statistics for the leaves of the
    columns in `statistics` only, and the Arrow schema stored only when the Parquet schema alone does not
    read back as the sample's."""
    empty = sample.slice(0, 0)
    sink = io.BytesIO()
    pq.write_table(empty, sink, store_schema=False)
    read = pq.read_schema(io.BytesIO(sink.getvalue()))
    leaves = [path for name in statistics for path, _ in _leaves(empty.select([name]))]
    # (Arrow's schema equality, which does not tell a list's item named "item" from one named "element": Parquet
    # names it "element", and every reader of a list reads its values the same)
    schema = empty.schema
    exact = read.equals(schema.remove_metadata()) and all(f.metadata is None for f in schema)
    return {"write_statistics": leaves, "store_schema": not exact}


def choose_request_order(sample: pa.Table, settings: dict, compression_level: int,
                         candidates: dict[str, pa.Array]) -> str | None:
    """The candidate order (name -> a sort key per sampled request; ties keep input order) that makes the
    sample smallest written with `settings`, if it saves at least ORDER_PAYS; None: input order."""
    if sample.num_rows < 2 or not candidates:
        return None
    head = _head(sample, ORDER_SAMPLE_BYTES)
    trial = {k: v for k, v in settings.items() if k != "compression_level"}  # (raised levels are slow to try)
    best, smallest = None, (1 - ORDER_PAYS) * _written_size(head, trial, compression_level)
    for name, key in candidates.items():
        order = pc.sort_indices(pa.table({"key": key.slice(0, head.num_rows)}), [("key", "ascending")])  # stable
        size = _written_size(head.take(order), trial, compression_level)
        if size <= smallest:
            best, smallest = name, size
    return best


def choose_encodings(sample: pa.Table, compression_level: int, small: bool = False) -> dict:
    """ParquetWriter settings (use_dictionary, column_encoding, compression_level per leaf column) that make
    `sample` smallest, per column (the trials of two columns at a time: pyarrow writes without the GIL);
    `small`: the output is small enough for levels above SLOW_LEVEL, and to raise every column's level
    together (see the module's docstring)."""
    columns = [sample.select([name]) for name in sample.column_names]
    tried = tuple(lv for lv in HIGHER_LEVELS if lv > compression_level and (small or lv <= SLOW_LEVEL))
    with ThreadPoolExecutor(max_workers=TRIALS, thread_name_prefix="roolog-encodings") as pool:
        choices = list(pool.map(lambda column: _encoding(column, compression_level), columns))
        total = sum(c.size for c in choices if c.best is not None)
        leveled = [c for c in choices if c.best is not None and c.size >= LEVEL_SHARE * total]
        higher = pool.map(lambda c: _level(c.column, compression_level, c.settings, LEVEL_PAYS * total / c.size,
                                           tried), leveled)
        levels = {path: compression_level for c in choices for path in c.paths}
        levels.update((c.paths[0], level) for c, level in zip(leveled, higher, strict=True))
    dictionary = [path for c in choices if c.best in (None, DICTIONARY) for path in c.paths]
    encoding = {c.paths[0]: c.best for c in choices if c.best not in (None, DICTIONARY)}
    settings = {"use_dictionary": dictionary, "column_encoding": encoding, "compression_level": levels}
    if small:
        settings["compression_level"] = _whole_level(sample, settings, compression_level)
    return settings


def _whole_level(sample: pa.Table, settings: dict, compression_level: int) -> dict[str, int]:
    """The per-column levels with every column still at the run's level raised to the WHOLE_LEVELS level
    that makes the sample smallest, if that saves at least WHOLE_PAYS of it."""
    levels = settings["compression_level"]
    head = _head(sample, WHOLE_SAMPLE_BYTES)
    best, smallest = levels, (1 - WHOLE_PAYS) * _written_size(head, settings, compression_level)
    for higher in (lv for lv in WHOLE_LEVELS if lv > compression_level):
        raised = {path: higher if level == compression_level else level for path, level in levels.items()}
        size = _written_size(head, settings | {"compression_level": raised}, compression_level)
        if size <= smallest:
            best, smallest = raised, size
    return best


@dataclass(frozen=True)
class _Choice:
    column: pa.Table  # one column
    paths: list[str]  # its Parquet leaf columns
    best: str | None  # the encoding that made it smallest (DICTIONARY or one of _CANDIDATES); None: untried
    size: int = 0  # its bytes with it

    @property
    def settings(self) -> dict:
        if self.best == DICTIONARY:
            return {"use_dictionary": True}
        return {"use_dictionary": False, "column_encoding": {self.paths[0]: self.best}}


def _encoding(column: pa.Table, compression_level: int) -> _Choice:
    leaves = _leaves(column)
    paths = [path for path, _ in leaves]
    if len(leaves) != 1 or leaves[0][1] not in _CANDIDATES:  # structs, booleans: the defaults
        return _Choice(column, paths, None)
    path, physical = leaves[0]
    written = {DICTIONARY: _written(column, compression_level, use_dictionary=True)}
    for enc in _CANDIDATES[physical]:
        try:
            written[enc] = _written(column, compression_level, use_dictionary=False, column_encoding={path: enc})
        except (pa.ArrowException, ValueError, OSError):  # an encoding this type or pyarrow version lacks
            continue
    # the smallest that reads back (ties keep the default); only the one kept is read, not every trial
    for best in sorted(written, key=lambda e: (len(written[e]), e != DICTIONARY)):
        if _reads_back(written[best]):
            return _Choice(column, paths, best, len(written[best]))
    return _Choice(column, paths, DICTIONARY, len(written[DICTIONARY]))


def _level(column: pa.Table, compression_level: int, settings: dict, pays: float, tried: tuple[int, ...]) -> int:
    """The zstd level for a one-column table written with `settings`: see the module's docstring (`pays`:
    the least share of the column's bytes a higher level must save to be worth it; `tried`: the higher
    levels, in turn)."""
    upto = np.cumsum(row_bytes(column.column(0)))  # bytes up to each row
    head = column.slice(0, int(np.searchsorted(upto, LEVEL_SAMPLE_BYTES, side="left")) + 1)
    level, size = compression_level, _size(head, compression_level, **settings)
    for higher in tried:
        smaller = _size(head, higher, **settings)
        if smaller <= min(LEVEL_GAIN, 1 - pays) * size:
            level, size = higher, smaller
    return level
