"""Reading a finished OUT as its manifests describe it: every shard checked before a row of it is used.

`units` finds what an output holds (its unit folders and their manifests, each checked to be the one
recorded); `open_shard` hands out a shard only after its size and xxh64 match the manifest (the bytes
hashed are the bytes then decoded: one memory map); `verify` checks a whole output for cron (`roolog
verify OUT`, exit 0 or 1), including files no manifest lists, which roolog's readers never read.
"""

from __future__ import annotations

import os

import pyarrow as pa
import xxhash

from ..errors import RoologError, UsageProblem
from ..read.inputs import file_xxh64
from .manifest import (
    LEDGER,
    MANIFEST,
    REPORT,
    Manifest,
    PartitionedManifest,
    ShardRecord,
    UnitManifest,
    read_manifest,
    read_report,
)
from .outdir import TMP_PREFIX, Ledger

REPAIR = "run roolog convert again to repair the output"


def units(out: str) -> list[tuple[str, UnitManifest]]:
    """(folder, manifest) of every unit of a finished output: OUT itself, or each partition OUT/col=value/,
    each manifest and report sealed as roolog wrote them and each partition's manifest the one the top-level
    manifest lists (by xxh64): the one view of OUT that every reader and verify share."""
    _, found, problems = _units(out)
    if problems:
        raise RoologError(problems[0])
    return found


def _units(out: str) -> tuple[Manifest, list[tuple[str, UnitManifest]], list[str]]:
    """The top manifest of `out`, its units that are what the manifests record, and what is wrong with the
    others."""
    top = read_manifest(out)  # unreadable, edited or foreign: an error (nothing of OUT can be trusted)
    problems = _report_problem(out)
    if isinstance(top, UnitManifest):
        return top, [(out, top)], problems
    found = []
    for p in top.partitions:
        folder = os.path.join(out, p.name)
        if not os.path.isdir(folder):
            problems.append(f"{folder}: partition listed in the top-level manifest is missing; {REPAIR}")
            continue
        try:
            manifest = read_manifest(folder)
        except RoologError as err:
            problems.append(str(err))
            continue
        if not isinstance(manifest, UnitManifest):
            problems.append(f"{folder}: a partition's manifest lists partitions of its own")
        elif file_xxh64(os.path.join(folder, MANIFEST)) != p.manifest_xxh64:
            problems.append(f"{folder}: not the partition the top-level manifest lists (its manifest differs: "
                            "replaced, or copied from another partition); move that folder away (roolog never "
                            "deletes files it did not write) and run roolog convert again")
        else:
            found.append((folder, manifest))
            problems += _report_problem(folder)
    return top, found, problems


def _report_problem(folder: str) -> list[str]:
    try:
        read_report(folder)
    except RoologError as err:
        return [str(err)]
    return []


def unlisted(out: str, top: Manifest, found: list[tuple[str, UnitManifest]]) -> list[str]:
    """The paths in OUT (files, or folders as a whole) that no manifest lists and that are not roolog's own
    bookkeeping (its ledger, locks and a running convert's temp folder, as the ledger lists them): a reader
    that globs OUT (pyarrow, DuckDB, Spark) would read them; roolog's readers never do."""
    ledger = Ledger.load(out) if os.path.isfile(os.path.join(out, LEDGER)) else None
    own = {LEDGER} | ({p for p, e in ledger.entries.items() if e == "lock" or p.startswith(TMP_PREFIX)}
                      if ledger else set())
    listed = {MANIFEST, REPORT} | own
    for folder, manifest in found:
        prefix = "" if folder == out else os.path.relpath(folder, out) + "/"
        listed |= {prefix + MANIFEST, prefix + REPORT} | {prefix + s.file for s in manifest.shards}
        if prefix:
            listed.add(prefix[:-1])
    skipped = set()
    if isinstance(top, PartitionedManifest):
        skipped = {p.name for p in top.partitions} - {os.path.relpath(folder, out) for folder, _ in found}
        listed |= skipped  # a missing or replaced partition is reported on its own, not file by file
    extra = []

    def walk(rel: str) -> None:
        for name in sorted(os.listdir(os.path.join(out, rel) if rel else out)):
            path = f"{rel}/{name}" if rel else name
            if path in own:
                continue
            if path not in listed:
                extra.append(path)
            elif os.path.isdir(os.path.join(out, path)) and path not in skipped:
                walk(path)

    walk("")
    return extra


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
        raise RoologError(f"{path}: {problem}; {REPAIR}")
    return data


def check_shards(out: str) -> list[tuple[str, UnitManifest]]:
    """Every unit of `out`, each shard checked against its manifest; the first bad one is an error."""
    found = units(out)
    for folder, manifest in found:
        for shard in manifest.shards:
            open_shard(folder, shard)
    return found


def verify(out: str) -> dict:
    """Everything `out` holds against its manifests: {"ok": bool, "shards": n, "problems": [...]}: each
    manifest and report as written, each partition the one listed, each shard's size and xxh64, and no
    file or folder that no manifest lists."""
    try:
        top, found, problems = _units(out)
    except RoologError as err:
        if isinstance(err, UsageProblem):
            raise
        return {"output": out, "ok": False, "shards": 0, "problems": [str(err)]}
    checked = 0
    for folder, manifest in found:
        for shard in manifest.shards:
            checked += 1
            path = os.path.join(folder, shard.file)
            _, problem = _checked(path, shard)
            if problem:
                problems.append(f"{path}: {problem}")
    for rel in unlisted(out, top, found):
        problems.append(f"{os.path.join(out, rel)}: not listed in any manifest (roolog did not write it, or no "
                        "longer lists it): roolog's readers skip it, but a reader that globs OUT would read it; "
                        "move it out")
    return {"output": out, "ok": not problems, "shards": checked, "problems": problems}
