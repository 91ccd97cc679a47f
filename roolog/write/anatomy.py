"""Where a shard's bytes go: each column's values, repetition/definition levels, page headers and share of the
footer, read from the Parquet file itself.

A Parquet file is laid out as::

    PAR1 | column chunk | column chunk | ... | footer (Thrift compact FileMetaData) | footer length | PAR1
            page header + page, page header + page, ...

Each page of a column chunk starts with a Thrift PageHeader. A data page holds the column's repetition levels
(where each list starts), its definition levels (null or not) and then the values. In a v2 data page the levels
are stored before the compressed values, uncompressed, and their sizes are in the header: exact. In a v1 page
(what pyarrow writes by default) levels and values are compressed together, so the levels' share is measured
by compressing them on their own with the page's codec at the column's level (zstandard reads only the levels
off the front of the page), at most their uncompressed size: an estimate, and the values are the rest of the
page. The footer is split by what it describes: a column's schema elements and its column chunks' metadata
(statistics, offsets, encodings) in every row group are that column's share; the rest (key-value metadata such
as `ARROW:schema` and roolog's own record, the row groups' own fields) is the file's.

The parts add up to the file's size exactly: values + levels + page headers + column footers + file footer +
`other` (the magic numbers, the footer's length and any page index).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

# Thrift compact protocol type ids
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)
_DATA_PAGE, _INDEX_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = range(4)


@dataclass
class Struct:
    """A decoded Thrift struct: its fields by id and the span [start, end) of its bytes."""

    fields: dict[int, object]
    start: int
    end: int


class _Compact:
    """A reader of the Thrift compact protocol (what Parquet's footer and page headers are written in)."""

    def __init__(self, buf, pos: int = 0):
        self.buf, self.pos = buf, pos

    def _varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.buf[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def _zigzag(self) -> int:
        n = self._varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int):
        if kind in (_TRUE, _FALSE):  # (a field's boolean is in its header; one in a list is a byte)
            return kind == _TRUE
        if kind == _BYTE:
            self.pos += 1
            return self.buf[self.pos - 1]
        if kind in (_I16, _I32, _I64):
            return self._zigzag()
        if kind == _DOUBLE:
            self.pos += 8
            return struct.unpack_from("<d", self.buf, self.pos - 8)[0]
        if kind == _BINARY:
            size = self._varint()
            self.pos += size
            return bytes(self.buf[self.pos - size:self.pos])
        if kind in (_LIST, _SET):
            header = self.buf[self.pos]
            self.pos += 1
            size, item = header >> 4, header & 0x0F
            if size == 15:
                size = self._varint()
            if item in (_TRUE, _FALSE):
                self.pos += size
                return [bool(b) for b in self.buf[self.pos - size:self.pos]]
            return [self.value(item) for _ in range(size)]
        if kind == _MAP:
            size = self._varint()
            if not size:
                return {}
            types = self.buf[self.pos]
            self.pos += 1
            return {self.value(types >> 4): self.value(types & 0x0F) for _ in range(size)}
        if kind == _STRUCT:
            return self.struct()
        raise ValueError(f"not a Thrift compact type: {kind}")

    def struct(self) -> Struct:
        start, last = self.pos, 0
        fields: dict[int, object] = {}
        while True:
            header = self.buf[self.pos]
            self.pos += 1
            kind = header & 0x0F
            if kind == _STOP:
                return Struct(fields, start, self.pos)
            delta = header >> 4
            last = last + delta if delta else self._zigzag()
            fields[last] = kind == _TRUE if kind in (_TRUE, _FALSE) else self.value(kind)


@dataclass
class ColumnBytes:
    """One top-level column's bytes on disk, summed over shards and row groups (compressed = the column chunks:
    values + levels + page headers)."""

    compressed: int = 0
    uncompressed: int = 0
    values: int = 0
    levels: int = 0  # repetition and definition levels (v1 pages: an estimate, see the module's docstring)
    page_headers: int = 0
    footer: int = 0  # its share of the footers


@dataclass
class ShardBytes:
    """Where the bytes of some shards go; `total` is their size on disk."""

    columns: dict[str, ColumnBytes] = field(default_factory=dict)
    file_footer: int = 0  # the footers' bytes that are no column's (key-value metadata, row groups' own fields)
    other: int = 0  # magic numbers, footer lengths, page indexes

    @property
    def total(self) -> int:
        return (sum(c.compressed + c.footer for c in self.columns.values()) + self.file_footer + self.other)


def shard_bytes(paths: Iterable[str], levels: dict[str, int] | None = None, default_level: int = 3) -> ShardBytes:
    """Where the bytes of the Parquet files at `paths` go, per top-level column. `levels`: the zstd level of each
    leaf column (by its dotted path) the files were written with, else `default_level` (used only to measure
    the levels of v1 pages)."""
    found = ShardBytes()
    for path in paths:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            _add_file(found, buf, pq.ParquetFile(path), levels or {}, default_level)
    return found


def _add_file(found: ShardBytes, buf, parquet: pq.ParquetFile, levels: dict[str, int], default_level: int) -> None:
    schema, metadata = parquet.schema, parquet.metadata
    leaves = [schema.column(i) for i in range(len(schema))]
    tops = [leaf.path.split(".")[0] for leaf in leaves]
    for name in tops:
        found.columns.setdefault(name, ColumnBytes())
    chunks = 0  # the column chunks' bytes in this file
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for j, leaf in enumerate(leaves):
            chunk, column = group.column(j), found.columns[tops[j]]
            chunks += chunk.total_compressed_size
            column.compressed += chunk.total_compressed_size
            column.uncompressed += chunk.total_uncompressed_size
            level = levels.get(leaf.path, default_level)
            _add_pages(column, buf, chunk, leaf.max_repetition_level, leaf.max_definition_level, level)
    footer_length = struct.unpack_from("<I", buf, len(buf) - 8)[0]
    footer_start = len(buf) - 8 - footer_length
    columns_footer = _footer_shares(buf, footer_start, tops)
    for name, size in columns_footer.items():
        found.columns[name].footer += size
    found.file_footer += footer_length - sum(columns_footer.values())
    found.other += len(buf) - chunks - footer_length


def _add_pages(column: ColumnBytes, buf, chunk, max_repetition: int, max_definition: int, level: int) -> None:
    """Split one column chunk into page headers, levels and values."""
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and chunk.dictionary_page_offset is not None:
        start = min(start, chunk.dictionary_page_offset)
    end, pos = start + chunk.total_compressed_size, start
    codec = chunk.compression
    while pos < end:
        reader = _Compact(buf, pos)
        header = reader.struct()
        size = header.fields[3]  # compressed_page_size
        assert isinstance(size, int)
        column.page_headers += reader.pos - pos
        payload = reader.pos
        kind = header.fields[1]
        page_levels = 0
        if kind == _DATA_PAGE_V2:
            v2 = header.fields[8]
            assert isinstance(v2, Struct)
            page_levels = int(v2.fields[5]) + int(v2.fields[6])  # type: ignore[call-overload]
        elif kind == _DATA_PAGE and (max_repetition or max_definition):
            uncompressed = header.fields[2]
            assert isinstance(uncompressed, int)
            page_levels = _v1_levels(buf[payload:payload + size], uncompressed, codec, level,
                                     (max_repetition > 0) + (max_definition > 0))
        column.levels += page_levels
        column.values += size - page_levels
        pos = payload + size


def _v1_levels(page: bytes, uncompressed: int, codec: str, level: int, parts: int) -> int:
    """The bytes of a v1 data page's levels (`parts` runs, each a 4-byte length and RLE data), compressed on
    their own as the page is."""
    if codec == "UNCOMPRESSED":
        plain = page
    elif codec == "ZSTD":
        plain = zstandard.ZstdDecompressor().stream_reader(page).read(uncompressed)  # (stops at need)
    else:
        plain = pa.Codec(codec.lower()).decompress(page, decompressed_size=uncompressed).to_pybytes()
    length = 0
    for _ in range(parts):
        length += 4 + struct.unpack_from("<I", plain, length)[0]
    if codec == "UNCOMPRESSED":
        return length
    if codec == "ZSTD":
        alone = len(zstandard.ZstdCompressor(level=level).compress(plain[:length]))
    else:
        alone = pa.Codec(codec.lower()).compress(plain[:length]).size
    return min(alone, length)  # (a codec's frame may outweigh a few bytes of levels)


def _footer_shares(buf, start: int, tops: list[str]) -> dict[str, int]:
    """Each top-level column's bytes in the footer: its schema elements, its leaves' column chunks in every
    row group and their column orders."""
    meta = _Compact(buf, start).struct()
    shares: dict[str, int] = defaultdict(int)
    elements = meta.fields[2]
    assert isinstance(elements, list)
    # the schema is a depth-first list: the root, then each top-level column followed by its descendants
    index = 1
    for _ in range(int(elements[0].fields.get(5, 0))):
        first, pending = index, 1
        while pending:
            pending += int(elements[index].fields.get(5, 0)) - 1
            index += 1
        name = elements[first].fields[4]
        assert isinstance(name, bytes)
        shares[name.decode()] += elements[index - 1].end - elements[first].start
    for group in meta.fields.get(4, []):  # type: ignore[attr-defined]
        for j, chunk in enumerate(group.fields[1]):
            shares[tops[j]] += chunk.end - chunk.start
    orders: list[Struct] = meta.fields.get(7, [])  # type: ignore[assignment]
    for j, order in enumerate(orders):
        shares[tops[j]] += order.end - order.start
    return dict(shares)


def written_bytes(folder: str, files: Iterable[str], encodings: dict, run_level: int) -> ShardBytes:
    """`shard_bytes` of shards in `folder` written with `encodings` (a manifest's: their per-column zstd levels)
    at the run's `run_level`."""
    levels = encodings.get("compression_level")
    return shard_bytes([os.path.join(folder, f) for f in files], levels if isinstance(levels, dict) else None,
                       levels if isinstance(levels, int) else run_level)
