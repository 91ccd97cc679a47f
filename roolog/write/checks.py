"""Reading a finished OUT as its manifests describe it: every shard checked before a row of it is used.

`units` finds what an output holds (its unit folders and their manifests); `open_shard` hands out a
shard only after its size and xxh64 match the manifest (the bytes hashed are the bytes then decoded: one
memory map); `verify` checks a whole output for cron (`roolog verify OUT`, exit 0 or 1).
"""

from __future__ import annotations

import os

import pyarrow as pa
import xxhash

from ..errors import RoologError, UsageProblem
from .manifest import REPORT, PartitionedManifest, ShardRecord, UnitManifest, read_manifest


def units(out: str) -> list[tuple[str, UnitManifest]]:
    """(folder, manifest) of every unit of a finished output: OUT itself, or each partition OUT/col=value/."""
    top = read_manifest(out)
    if isinstance(top, UnitManifest):
        return [(out, top)]
    found = []
    for p in top.partitions:
        folder = os.path.join(out, p.name)
        manifest = read_manifest(folder)
        if not isinstance(manifest, UnitManifest):
            raise RoologError(f"{folder}: a partition's manifest lists partitions of its own")
        found.append((folder, manifest))
    return found


def _checked(path: str, shard: ShardRecord) -> tuple[pa.Buffer | None, str | None]:
    """The shard's bytes (one memory map) and what is wrong with them against its manifest record
    (missing, size, xxh64), or None: the bytes hashed are the bytes handed out."""
    if not os.path.isfile(path):
        return None, "shard listed in the manifest is missing"
    size = os.path.getsize(path)
    if size != shard.bytes:
        return None, f"shard has {size:,} bytes, the manifest records {shard.bytes:,}"
    with pa.memory_map(path) as mm:
        data = mm.read_buffer()
    if xxhash.xxh64(memoryview(data)).hexdigest() != shard.xxh64:
        return None, "shard does not match the xxh64 in the manifest (changed or corrupted)"
    return data, None


def open_shard(folder: str, shard: ShardRecord) -> pa.Buffer:
    """The bytes of a shard listed in `folder`'s manifest, after checking its size and xxh64."""
    path = os.path.join(folder, shard.file)
    data, problem = _checked(path, shard)
    if data is None:
        raise RoologError(f"{path}: {problem}; run roolog convert again to repair the output")
    return data


def check_shards(out: str) -> list[tuple[str, UnitManifest]]:
    """Every unit of `out`, each shard checked against its manifest; the first bad one is an error."""
    found = units(out)
    for folder, manifest in found:
        for shard in manifest.shards:
            open_shard(folder, shard)
    return found


def verify(out: str) -> dict:
    """Every shard of `out` against its manifest: {"ok": bool, "shards": n, "problems": [...]}."""
    problems, checked = [], 0
    try:
        found = units(out)
        top = read_manifest(out)
    except RoologError as err:
        if isinstance(err, UsageProblem):
            raise
        return {"output": out, "ok": False, "shards": 0, "problems": [str(err)]}
    for folder, manifest in found:
        if not os.path.isfile(os.path.join(folder, REPORT)):
            problems.append(f"{os.path.join(folder, REPORT)}: missing")
        for shard in manifest.shards:
            checked += 1
            path = os.path.join(folder, shard.file)
            _, problem = _checked(path, shard)
            if problem:
                problems.append(f"{path}: {problem}")
    if isinstance(top, PartitionedManifest):
        for p, (folder, manifest) in zip(top.partitions, found, strict=True):
            if manifest.totals.requests != p.requests:
                problems.append(f"{folder}: {manifest.totals.requests:,} requests, the top-level manifest "
                                f"records {p.requests:,}")
    return {"output": out, "ok": not problems, "shards": checked, "problems": problems}
