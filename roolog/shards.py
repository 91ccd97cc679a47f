"""Request batches -> Parquet/zstd shards, the output folder's lock, and the manifest written last.

Nothing in OUT looks finished before it is: shards are written in OUT's temp folder and moved in at the
end, and `_manifest.json` (atomically renamed into place) is what makes OUT a finished output.
"""

from __future__ import annotations

import base64
import fcntl
import fnmatch
import glob
import json
import os
import shutil
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from .errors import OutputLocked, RoologError, UsageProblem
from .values import row_bytes

MANIFEST, REPORT, LOCK = "_manifest.json", "_report.json", ".roolog.lock"
TMP_PREFIX = ".roolog-tmp"
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
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=2, default=str)
        fh.write("\n")
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


def unit_folders(out: str) -> list[str]:
    """The folders that hold shards: OUT itself, or each partition OUT/col=value/ of a partitioned OUT."""
    top = read_json(os.path.join(out, MANIFEST))
    if "partitions" in top:
        return [os.path.join(out, p["name"]) for p in top["partitions"]]
    return [out]


class OutputFolder:
    """OUT while a run writes it: locked, with a temp folder for spill and for outputs not yet published.

    A unit (all of OUT, or one partition `col=value/`) is built in the temp folder, manifest included,
    and published at the end: a partition folder by rename, the shards of an unpartitioned OUT by moving
    them in after removing the old manifest, the new manifest last.
    """

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
            for stale in glob.glob(os.path.join(self.out, TMP_PREFIX + "-*")):
                shutil.rmtree(stale, ignore_errors=True)  # a dead run's leftovers; we hold the lock
            foreign = [n for n in sorted(os.listdir(self.out)) if not self._is_ours(n)]
            if foreign and not self.overwrite:
                raise UsageProblem(f"output folder {self.out} holds files roolog did not write ({foreign[0]}); "
                                   "pass --overwrite to write there anyway (those files are kept)")
            os.makedirs(self.tmp)
        except BaseException:
            self._unlock()
            raise
        return self

    def _is_ours(self, name: str) -> bool:
        if name in (MANIFEST, REPORT, LOCK) or name.startswith(TMP_PREFIX):
            return True
        if fnmatch.fnmatch(name, "part-*.parquet"):
            return True
        return "=" in name and os.path.isdir(os.path.join(self.out, name))  # a partition col=value/

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

    def unit_path(self, name: str) -> str:
        """Where a unit is built before it is published."""
        return os.path.join(self.tmp, "units", name)

    def publish_flat(self, unit: str) -> None:
        """Move a finished unit's shards into OUT itself, old manifest out first, new manifest last."""
        for name in (MANIFEST, REPORT):
            if os.path.exists(os.path.join(self.out, name)):
                os.remove(os.path.join(self.out, name))
        for old in glob.glob(os.path.join(self.out, "part-*.parquet")):
            os.remove(old)
        failpoint("publish")
        for name in sorted(os.listdir(unit)):
            if name != MANIFEST:
                os.replace(os.path.join(unit, name), os.path.join(self.out, name))
        os.replace(os.path.join(unit, MANIFEST), os.path.join(self.out, MANIFEST))

    def publish_partition(self, name: str, unit: str) -> None:
        """Put a finished partition folder in place of the old one (two renames; never a partial folder).
        The top-level manifest goes first: until it is written again, OUT as a whole is not finished."""
        top = os.path.join(self.out, MANIFEST)
        if os.path.exists(top):
            os.remove(top)
        target = os.path.join(self.out, name)
        if os.path.exists(target):
            os.replace(target, os.path.join(self.tmp, "replaced"))
            failpoint("publish")
        os.replace(unit, target)
        shutil.rmtree(os.path.join(self.tmp, "replaced"), ignore_errors=True)

    def remove_partition(self, name: str) -> None:
        if os.path.exists(os.path.join(self.out, MANIFEST)):
            os.remove(os.path.join(self.out, MANIFEST))
        os.replace(os.path.join(self.out, name), os.path.join(self.tmp, "removed"))
        shutil.rmtree(os.path.join(self.tmp, "removed"), ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._unlock()
        if exc_type is not None and self._created:
            shutil.rmtree(self.out, ignore_errors=True)  # a failed first run leaves no folder behind


def failpoint(name: str) -> None:
    """Crash tests: ROOLOG_FAILPOINT=name kills the process here, as a power cut or kill -9 would."""
    if os.environ.get("ROOLOG_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def shards_doc(shards: list[ShardInfo]) -> list[dict]:
    return [asdict(s) for s in shards]
