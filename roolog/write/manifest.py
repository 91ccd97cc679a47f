"""The files that describe an output, as typed records with one place that turns them into JSON and back.

A finished *unit* (OUT itself, or a partition OUT/col=value/) holds its shards, `_report.json` and, last,
`_manifest.json`; a partitioned OUT adds a top-level manifest and report that list the partitions.

    UnitManifest (format "roolog/2")           what a unit holds and what it was made from
      inputs    [InputRecord]                  path, bytes, mtime, xxh64 and stat of each input as read
      options   {...}                          OutputOptions.record(): what decided the output's bytes
      schema    UnitSchema                     key, order_by, request / impression columns, labels,
                                               demoted, count_column, the input's Arrow schema (base64
                                               IPC) and its partition column's exact value (PartitionValue)
      encodings {...}                          the Parquet encodings the shards were written with
      shards    [ShardRecord]                  file, requests, impressions, bytes, xxh64
      totals    UnitTotals
    PartitionedManifest                        partition_by, partitions [PartitionEntry], totals
    UnitReport, PartitionedReport              what a run measured (figures: roolog.group.figures)

Every JSON file roolog writes (manifests and reports) is *sealed*: its last field, "checksum", is the xxh64
of the rest (canonical JSON: sorted keys, no spaces), so a file edited by hand or damaged is caught by
every reader and redone by the next convert; a partitioned OUT's manifest also records the xxh64 of each
partition's manifest file, so a partition folder replaced by a copy of another is caught too.

Format history: "roolog/1" (0.1: partition columns also inside the shards, no ledger); "roolog/2" (0.2:
partition columns in the path only, footers carry FOOTER_KEY, inputs carry their stat). A reader meets
another format with a one-line "convert again" (`read_manifest`).
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import xxhash

from ..errors import RoologError, UsageProblem
from ..read.inputs import InputRecord
from ..version import __version__
from .failpoint import failpoint

MANIFEST, REPORT = "_manifest.json", "_report.json"
CHECKSUM = "checksum"  # the last field of every JSON file roolog writes
MANIFEST_FORMAT = "roolog/2"
FOOTER_KEY = b"roolog"  # the shards' Arrow schema metadata: key, order, request and impression columns
COUNT_COLUMN = "__roolog_impressions"  # only when no column is impression-level: the rows per request
LEDGER = ".roolog.json"  # roolog.write.outdir's record of what roolog placed in OUT (named here: readers look for it)


# ---- records -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardRecord:
    """One Parquet shard of a unit, as written: what readers check before they use it."""

    file: str  # the name inside the unit's folder
    requests: int
    impressions: int
    bytes: int
    xxh64: str


@dataclass(frozen=True)
class PartitionValue:
    """A partition's column: its position among the input's columns and its one value, exactly (base64 Arrow
    IPC of a one-row batch): what explode puts back (the folder's name is only its text)."""

    column: str
    index: int
    value: str

    def array(self) -> pa.Array:
        return pa.ipc.open_stream(pa.py_buffer(base64.b64decode(self.value))).read_next_batch().column(0)


@dataclass(frozen=True)
class UnitSchema:
    key: list[str]
    order_by: str | None
    request: list[str]  # request-level columns in the shards (the partition column is in the path)
    impression: list[str]  # impression-level columns: list columns in the shards
    labels: list[str]
    demoted: list[str]  # declared or assumed request-level, found to vary: stored as lists
    count_column: str | None  # COUNT_COLUMN when no column is impression-level
    columns: list[dict[str, str]]  # the input's columns in order: name, Arrow type text
    arrow_schema: str  # the input's Arrow schema, base64 IPC: the exact types explode restores
    partition: PartitionValue | None

    def arrow(self) -> pa.Schema:
        return schema_from_b64(self.arrow_schema)


@dataclass(frozen=True)
class UnitTotals:
    shards: int
    requests: int
    impressions: int
    bytes: int


@dataclass(frozen=True)
class UnitManifest:
    roolog_version: str
    created: str
    inputs: list[InputRecord]
    options: dict[str, Any]
    schema: UnitSchema
    encodings: dict[str, Any]
    shards: list[ShardRecord]
    totals: UnitTotals
    format: str = MANIFEST_FORMAT

    def to_json(self) -> dict:
        return _first(asdict(self), "format")

    @classmethod
    def from_json(cls, doc: dict) -> UnitManifest:
        schema = dict(doc["schema"])
        partition = schema.pop("partition", None)
        return cls(roolog_version=doc["roolog_version"], created=doc["created"],
                   inputs=[InputRecord(**i) for i in doc["inputs"]], options=doc["options"],
                   schema=UnitSchema(**schema, partition=PartitionValue(**partition) if partition else None),
                   encodings=doc["encodings"], shards=[ShardRecord(**s) for s in doc["shards"]],
                   totals=UnitTotals(**doc["totals"]), format=doc["format"])


@dataclass(frozen=True)
class PartitionEntry:
    name: str  # the folder: col=value
    requests: int
    impressions: int
    bytes: int
    skipped: bool  # up to date in the run that wrote this manifest
    manifest_xxh64: str  # of the partition's _manifest.json file: it is the one this manifest lists


@dataclass(frozen=True)
class PartitionedManifest:
    roolog_version: str
    created: str
    options: dict[str, Any]
    inputs: list[InputRecord]  # of a --partition-by run (every input may hold every partition); else []
    partition_by: str
    partitions: list[PartitionEntry]
    totals: dict[str, int]  # requests, impressions, bytes, partitions
    cross_partition_requests: int
    format: str = MANIFEST_FORMAT

    def to_json(self) -> dict:
        return _first(asdict(self), "format")

    @classmethod
    def from_json(cls, doc: dict) -> PartitionedManifest:
        return cls(roolog_version=doc["roolog_version"], created=doc["created"], options=doc["options"],
                   inputs=[InputRecord(**i) for i in doc["inputs"]], partition_by=doc["partition_by"],
                   partitions=[PartitionEntry(**p) for p in doc["partitions"]], totals=doc["totals"],
                   cross_partition_requests=doc["cross_partition_requests"], format=doc["format"])


Manifest = UnitManifest | PartitionedManifest


@dataclass(frozen=True)
class ColumnFigures:
    name: str
    level: str  # key, request or impression
    logical_bytes_impression: int  # Arrow bytes as read (one value per impression)
    logical_bytes_request: int  # Arrow bytes in the shards
    logical_ratio: float | None
    on_disk_bytes: int  # its column chunks' bytes in the shards (values + levels + page headers)
    values_bytes: int  # where those go (roolog.write.anatomy): the values,
    levels_bytes: int  # the repetition/definition levels (v1 pages: compressed on their own, an estimate),
    page_header_bytes: int  # and the pages' headers;
    footer_bytes: int  # and its share of the shards' footers (schema elements, column chunk metadata)


@dataclass(frozen=True)
class ReportTotals:
    rows: int
    requests: int
    shards: int
    input_bytes: int  # the input files' sizes
    output_bytes: int  # the shards' sizes
    storage_ratio: float | None
    logical_bytes_impression: int
    logical_bytes_request: int
    logical_ratio: float | None
    file_footer_bytes: int  # the footers' bytes that are no column's (key-value metadata such as ARROW:schema)


@dataclass(frozen=True)
class SpillFigures:
    bytes: int  # written to OUT's temp folder while grouping
    most_parts: int  # the most pieces one shard's spill was split into


@dataclass(frozen=True)
class EngineInfo:
    name: str  # local or spark
    master: str | None = None  # Spark's master URL
    read_tasks: int | None = None  # Spark: one per piece of an input file (sources.Piece)


@dataclass(frozen=True)
class UnitReport:
    partition: str | None
    totals: ReportTotals
    impressions_per_request: dict[str, float]  # min, median, mean, p99, max
    columns: list[ColumnFigures]
    demoted: list[str]
    null_key_rows_dropped: int
    spill: SpillFigures
    wall_seconds: float
    rows_per_second: float | None
    engine: EngineInfo
    roolog_version: str = __version__

    def to_json(self) -> dict:
        return _first(asdict(self), "roolog_version")


@dataclass(frozen=True)
class PartitionedReport:
    output: str
    partition_by: str
    partitions: list[PartitionEntry]
    totals: dict[str, int]
    cross_partition_requests: int
    null_key_rows_dropped: int
    converted: list[str]
    skipped: list[str]
    roolog_version: str = __version__

    def to_json(self) -> dict:
        return _first(asdict(self), "roolog_version")


def _first(doc: dict, name: str) -> dict:
    """The JSON form with `name` as its first field (what a person opening the file looks for first)."""
    return {name: doc.pop(name)} | doc


def now() -> str:
    """The `created` stamp of a manifest (local time with its offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---- reading and writing -------------------------------------------------------------------------------

def seal(doc: dict) -> dict:
    """`doc` with its checksum as the last field."""
    plain = json.loads(json.dumps(doc, default=str))
    plain.pop(CHECKSUM, None)
    return plain | {CHECKSUM: _digest(plain)}


def unsealed(doc: dict) -> dict | None:
    """`doc` without its checksum when the checksum matches the rest, else None (edited or damaged)."""
    rest = {k: v for k, v in doc.items() if k != CHECKSUM}
    return rest if doc.get(CHECKSUM) == _digest(rest) else None


def _digest(doc: dict) -> str:
    return xxhash.xxh64(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def edited(path: str) -> RoologError:
    return RoologError(f"{path}: changed since roolog wrote it (its checksum does not match: edited by hand, "
                       "or damaged); run roolog convert again to repair the output")


def read_manifest(out: str) -> Manifest:
    """The manifest of a finished output or partition folder; one line naming the problem otherwise."""
    path = os.path.join(out, MANIFEST)
    if not os.path.isdir(out):
        raise UsageProblem(f"{out} is not a folder")
    if not os.path.exists(path):
        unfinished = os.path.exists(os.path.join(out, LEDGER)) or os.path.exists(
            os.path.join(os.path.dirname(os.path.abspath(out)), LEDGER))
        what = "an unfinished roolog output" if unfinished else "not a finished roolog output"
        raise RoologError(f"{out} is {what} (no {MANIFEST}); run roolog convert again")
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RoologError(f"{path}: unreadable manifest ({err})") from None
    if not isinstance(doc, dict):
        raise RoologError(f"{path}: not a roolog manifest")
    if doc.get("format") != MANIFEST_FORMAT:
        raise RoologError(f"{path}: manifest format {doc.get('format')!r}, this roolog reads {MANIFEST_FORMAT!r}"
                          "; convert the logs again with this version")
    doc = unsealed(doc)
    if doc is None:
        raise edited(path)
    try:
        return PartitionedManifest.from_json(doc) if "partitions" in doc else UnitManifest.from_json(doc)
    except (KeyError, TypeError, AttributeError) as err:
        raise RoologError(f"{path}: not a roolog manifest (missing or malformed {err})") from None


def recorded(path: str, kind: type[UnitManifest] | type[PartitionedManifest]) -> Any:
    """The manifest at `path` if it is one of this format and kind, else None (then the unit is redone)."""
    doc = unsealed(read_json(path)) or {}
    if doc.get("format") != MANIFEST_FORMAT or ("partitions" in doc) != (kind is PartitionedManifest):
        return None
    try:
        return kind.from_json(doc)
    except (KeyError, TypeError, AttributeError):
        return None


def write_json_atomic(path: str, doc: dict) -> None:
    """Write `doc`, sealed, beside `path` and rename it into place: a reader sees the old file or the new,
    whole."""
    text = json.dumps(seal(doc), indent=2) + "\n"
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


def read_report(folder: str) -> dict:
    """The _report.json of a unit or of OUT, its checksum checked; a one-line error when it is missing,
    unreadable or edited."""
    path = os.path.join(folder, REPORT)
    if not os.path.isfile(path):
        raise RoologError(f"{path}: missing; run roolog convert again to repair the output")
    doc = unsealed(read_json(path))
    if doc is None:
        raise edited(path)
    return doc


def read_json(path: str) -> dict:
    """A JSON object from a file, or {} when it is missing or unreadable (then it is simply redone)."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def schema_to_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
