"""Request batches -> Parquet/zstd shards, and the JSON files (manifest, report) written beside them.

Shards are written in OUT's temp folder and moved in at the end (roolog.outdir); `_manifest.json`
(atomically renamed into place, last) is what makes OUT a finished output.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from .values import row_bytes

MANIFEST, REPORT = "_manifest.json", "_report.json"
MANIFEST_FORMAT = "roolog/2"  # 2: hive partition columns live in the path only; footers carry FOOTER_KEY
FOOTER_KEY = b"roolog"  # the shards' Arrow schema metadata: key, order, request and impression columns
COUNT_COLUMN = "__roolog_impressions"  # only when no column is impression-level: the rows per request


@dataclass
class ShardInfo:
    file: str
    requests: int
    impressions: int
    bytes: int
    xxh64: str


def file_xxh64(path: str) -> str:
    h = xxhash.xxh64()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


class ShardWriter:
    """One Parquet shard; request batches are buffered into row groups of about `row_group_bytes`."""

    def __init__(self, path: str, schema: pa.Schema, compression_level: int, row_group_bytes: int = 64 << 20,
                 encodings: dict | None = None):
        self.path = path
        self.schema = schema
        self.row_group_bytes = row_group_bytes
        self._writer = pq.ParquetWriter(path, schema, compression="zstd", compression_level=compression_level,
                                        **(encodings or {}))
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._pending: Future | None = None  # the row group being encoded while the next one fills
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roolog-encode")
        self.requests = 0
        self.impressions = 0

    def write(self, batch: pa.RecordBatch, impressions: int) -> None:
        """Buffer requests; a row group closes after the request that brings it to `row_group_bytes`.

        The cut depends only on the requests' own sizes, never on how they were batched, so the same
        requests always give the same row groups (and the same bytes).
        """
        self.requests += batch.num_rows
        self.impressions += impressions
        sizes = np.cumsum(sum(row_bytes(col) for col in batch.columns))
        start = 0
        while start < batch.num_rows:
            need = self.row_group_bytes - self._buffered
            base = sizes[start - 1] if start else 0
            cut = int(np.searchsorted(sizes, base + need, side="left"))
            if cut >= batch.num_rows:  # the row group is not full yet
                self._buffer.append(batch.slice(start))
                self._buffered += int(sizes[-1] - base)
                return
            self._buffer.append(batch.slice(start, cut + 1 - start))
            self._flush()
            start = cut + 1

    def _flush(self) -> None:
        """Hand the row group to the encoder thread (pyarrow encodes without the GIL); at most one row group
        is being encoded while the next one fills, so memory stays at two row groups."""
        if self._buffer:
            table = pa.Table.from_batches(self._buffer, schema=self.schema)
            self._wait()
            self._pending = self._encoder.submit(self._encode, table)
        self._buffer, self._buffered = [], 0

    def _encode(self, table: pa.Table) -> None:
        # one chunk: Parquet pages would otherwise break where the batches happened to break
        self._writer.write_table(table.combine_chunks(), row_group_size=max(1, table.num_rows))

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()  # an encoding error surfaces here
            self._pending = None

    def close(self) -> ShardInfo:
        self._flush()
        self._wait()
        self._encoder.shutdown()
        self._writer.close()
        name = os.path.basename(self.path)
        return ShardInfo(name, self.requests, self.impressions, os.path.getsize(self.path), file_xxh64(self.path))


def schema_to_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def write_json_atomic(path: str, doc: dict) -> None:
    """Write `doc` beside `path` and rename it into place: a reader sees the old file or the new, whole."""
    text = json.dumps(doc, indent=2, default=str) + "\n"
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text[: len(text) // 2])
        if os.path.basename(path) == MANIFEST:
            fh.flush()
            failpoint("manifest")  # tests: killed halfway through a manifest's bytes
        fh.write(text[len(text) // 2:])
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> dict:
    """A JSON object from a file, or {} when it is missing or unreadable (then it is simply redone)."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def failpoint(name: str) -> None:
    """Crash tests: ROOLOG_FAILPOINT=name kills the process here, as a power cut or kill -9 would."""
    if os.environ.get("ROOLOG_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def shards_doc(shards: list[ShardInfo]) -> list[dict]:
    return [asdict(s) for s in shards]
