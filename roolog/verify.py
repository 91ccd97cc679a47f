"""Reading a finished OUT as its manifests describe it: every shard checked before a row of it is used.

`read_manifest` and `unit_folders` find what an output holds; `open_shard` hands out a shard only after
its size and xxh64 match the manifest (the bytes hashed are the bytes then decoded: one memory map);
`verify` checks a whole output for cron (`roolog verify OUT`, exit 0 or 1).
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import xxhash

from .errors import RoologError, UsageProblem
from .outdir import LEDGER
from .shards import MANIFEST, MANIFEST_FORMAT, REPORT, read_json


def read_manifest(out: str) -> dict:
    path = os.path.join(out, MANIFEST)
    if not os.path.isdir(out):
        raise UsageProblem(f"{out} is not a folder")
    if not os.path.exists(path):
        what = "an unfinished roolog output" if os.path.exists(os.path.join(out, LEDGER)) or os.path.exists(
            os.path.join(os.path.dirname(os.path.abspath(out)), LEDGER)) else "not a finished roolog output"
        raise RoologError(f"{out} is {what} (no {MANIFEST}); run roolog convert again")
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RoologError(f"{path}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict):
        raise RoologError(f"{path}: not a roolog manifest")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise RoologError(f"{path}: manifest format {manifest.get('format')!r}, this roolog reads {MANIFEST_FORMAT!r}"
                          "; convert the logs again with this version")
    schema = manifest.get("schema")
    if "partitions" in manifest:
        return manifest
    if not isinstance(schema, dict) or not isinstance(manifest.get("shards"), list) or any(
            field not in schema for field in ("key", "request", "impression", "arrow_schema")):
        raise RoologError(f"{path}: not a roolog manifest (missing schema or shards)")
    return manifest


def unit_folders(out: str) -> list[str]:
    """The folders that hold shards: OUT itself, or each partition OUT/col=value/ of a partitioned OUT."""
    top = read_manifest(out)
    if "partitions" in top:
        return [os.path.join(out, p["name"]) for p in top["partitions"]]
    return [out]


def units(out: str) -> list[tuple[str, dict]]:
    """(folder, manifest) of every unit of a finished output."""
    return [(folder, read_manifest(folder)) for folder in unit_folders(out)]


def _checked(path: str, shard: dict) -> tuple[pa.Buffer | None, str | None]:
    """The shard's bytes (one memory map) and what is wrong with them against its manifest record
    (missing, size, xxh64), or None: the bytes hashed are the bytes handed out."""
    if not os.path.isfile(path):
        return None, "shard listed in the manifest is missing"
    size = os.path.getsize(path)
    if size != shard["bytes"]:
        return None, f"shard has {size:,} bytes, the manifest records {shard['bytes']:,}"
    with pa.memory_map(path) as mm:
        data = mm.read_buffer()
    if xxhash.xxh64(memoryview(data)).hexdigest() != shard["xxh64"]:
        return None, "shard does not match the xxh64 in the manifest (changed or corrupted)"
    return data, None


def open_shard(folder: str, shard: dict) -> pa.Buffer:
    """The bytes of a shard listed in `folder`'s manifest, after checking its size and xxh64."""
    path = os.path.join(folder, shard["file"])
    data, problem = _checked(path, shard)
    if data is None:
        raise RoologError(f"{path}: {problem}; run roolog convert again to repair the output")
    return data


def check_shards(out: str) -> list[tuple[str, dict]]:
    """Every unit of `out`, each shard checked against its manifest; the first bad one is an error."""
    found = units(out)
    for folder, manifest in found:
        for shard in manifest["shards"]:
            open_shard(folder, shard)
    return found


def verify(out: str) -> dict:
    """Every shard of `out` against its manifest: {"ok": bool, "shards": n, "problems": [...]}."""
    problems, checked = [], 0
    try:
        found = units(out)
    except RoologError as err:
        if isinstance(err, UsageProblem):
            raise
        return {"output": out, "ok": False, "shards": 0, "problems": [str(err)]}
    for folder, manifest in found:
        if not os.path.isfile(os.path.join(folder, REPORT)):
            problems.append(f"{os.path.join(folder, REPORT)}: missing")
        for shard in manifest["shards"]:
            checked += 1
            path = os.path.join(folder, shard["file"])
            _, problem = _checked(path, shard)
            if problem:
                problems.append(f"{path}: {problem}")
    top = read_json(os.path.join(out, MANIFEST))
    if "partitions" in top:
        for p, (folder, manifest) in zip(top["partitions"], found, strict=True):
            if manifest["totals"]["requests"] != p["requests"]:
                problems.append(f"{folder}: {manifest['totals']['requests']:,} requests, the top-level manifest "
                                f"records {p['requests']:,}")
    return {"output": out, "ok": not problems, "shards": checked, "problems": problems}
