"""Request batches -> Parquet/zstd shards, the output folder's lock, and the manifest written last.

Nothing in OUT looks finished before it is: shards are written in OUT's temp folder and moved in at the
end, and `_manifest.json` (atomically renamed into place) is what makes OUT a finished output.
"""

from __future__ import annotations

import base64
import fcntl
import glob
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from .errors import OutputLocked, RoologError, UsageProblem

MANIFEST, REPORT, LOCK = "_manifest.json", "_report.json", ".roolog.lock"
TMP_PREFIX = ".roolog-tmp"
COUNT_COLUMN = "__roolog_impressions"  # only when no column is impression-level: the rows per request


def shard_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


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

    def __init__(self, path: str, schema: pa.Schema, compression_level: int, row_group_bytes: int = 64 << 20):
        self.path = path
        self.schema = schema
        self.row_group_bytes = row_group_bytes
        self._writer = pq.ParquetWriter(path, schema, compression="zstd", compression_level=compression_level)
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self.requests = 0
        self.impressions = 0

    def write(self, batch: pa.RecordBatch, impressions: int) -> None:
        self._buffer.append(batch)
        self._buffered += batch.nbytes
        self.requests += batch.num_rows
        self.impressions += impressions
        if self._buffered >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            table = pa.Table.from_batches(self._buffer, schema=self.schema)
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._buffer, self._buffered = [], 0

    def close(self) -> ShardInfo:
        self._flush()
        self._writer.close()
        name = os.path.basename(self.path)
        return ShardInfo(name, self.requests, self.impressions, os.path.getsize(self.path), file_xxh64(self.path))


def schema_to_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def write_json_atomic(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=2, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(out: str) -> dict:
    path = os.path.join(out, MANIFEST)
    if not os.path.isdir(out):
        raise UsageProblem(f"{out} is not a folder")
    if not os.path.exists(path):
        raise RoologError(f"{out} is not a finished roolog output (no {MANIFEST}); run roolog convert again")
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RoologError(f"{path}: unreadable manifest ({err})") from None
    schema = manifest.get("schema") if isinstance(manifest, dict) else None
    if not isinstance(schema, dict) or not isinstance(manifest.get("shards"), list) or any(
            field not in schema for field in ("key", "request", "impression", "arrow_schema")):
        raise RoologError(f"{path}: not a roolog manifest (missing schema or shards)")
    return manifest


class OutputFolder:
    """OUT while a run writes it: locked, with a temp folder for spill and unfinished shards."""

    def __init__(self, out: str, overwrite: bool):
        self.out = out
        self.overwrite = overwrite
        self.tmp = os.path.join(out, f"{TMP_PREFIX}-{os.getpid()}")
        self._lock_fh = None
        self._created = False

    def __enter__(self) -> OutputFolder:
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise UsageProblem(f"output {self.out} exists and is not a folder")
        self._created = not os.path.exists(self.out)
        os.makedirs(self.out, exist_ok=True)
        self._lock()
        try:
            self._clear()
            os.makedirs(self.tmp)
        except BaseException:
            self._unlock()
            raise
        return self

    def _lock(self) -> None:
        fh = open(os.path.join(self.out, LOCK), "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise OutputLocked(f"{self.out} is locked by a running convert ({holder}); try again later") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        fh.flush()
        self._lock_fh = fh

    def _unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def _clear(self) -> None:
        for stale in glob.glob(os.path.join(self.out, TMP_PREFIX + "-*")):
            shutil.rmtree(stale, ignore_errors=True)  # a dead run's leftovers; we hold the lock
        ours = [os.path.join(self.out, n) for n in (MANIFEST, REPORT)] + sorted(
            glob.glob(os.path.join(self.out, "part-*.parquet")))
        present = [n for n in os.listdir(self.out) if n != LOCK]
        if present and not self.overwrite:
            raise UsageProblem(f"output folder {self.out} is not empty; pass --overwrite to replace it")
        for path in ours:  # the manifest goes first, so OUT never looks finished with old shards missing
            if os.path.exists(path):
                os.remove(path)

    def shard_path(self, i: int) -> str:
        return os.path.join(self.tmp, shard_name(i))

    def publish(self, shards: list[ShardInfo], report: dict, manifest: dict) -> None:
        for s in shards:
            os.replace(os.path.join(self.tmp, s.file), os.path.join(self.out, s.file))
        write_json_atomic(os.path.join(self.out, REPORT), report)
        write_json_atomic(os.path.join(self.out, MANIFEST), manifest)

    def __exit__(self, exc_type, exc, tb) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._unlock()
        if exc_type is not None and self._created:
            shutil.rmtree(self.out, ignore_errors=True)  # a failed first run leaves no folder behind


def shards_doc(shards: list[ShardInfo]) -> list[dict]:
    return [asdict(s) for s in shards]
