"""Which columns of a converted output feed the model, and how (decided by level and Arrow type).

id        integers, strings, booleans, dates, dictionaries -> one hashed embedding bucket per value
dense     floats, timestamps, durations                     -> standardized floats
sequence  request-level lists of ids (a user history), or
          request-level strings of space-separated tokens   -> jagged ids for the history encoder

The key and the label are never features. Columns of other types (structs, lists of floats, impression-level
lists) are listed as skipped rather than guessed at.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from ..checks import check_shards
from ..errors import RoologError, UsageProblem
from ..keys import key_hashes, xxh64_u64
from ..manifest import UnitManifest

TEXT_SEQUENCE_MIN_TOKENS = 4.0  # a string column averaging this many space-separated tokens is a sequence


@dataclass
class FeatureSpec:
    key: list[str]
    label: str
    request_ids: list[str] = field(default_factory=list)
    request_dense: list[str] = field(default_factory=list)
    sequences: list[str] = field(default_factory=list)
    text_sequences: list[str] = field(default_factory=list)  # the sequences stored as token strings
    impression_ids: list[str] = field(default_factory=list)
    impression_dense: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dense_stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # column -> (mean, std)
    buckets: int = 1 << 18
    positive_threshold: float | None = None  # graded labels: values >= this are positives

    @property
    def columns(self) -> list[str]:
        return [*self.key, self.label, *self.request_ids, *self.request_dense, *self.sequences,
                *self.impression_ids, *self.impression_dense]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        doc = json.loads(text)
        doc["dense_stats"] = {k: tuple(v) for k, v in doc["dense_stats"].items()}
        return cls(**doc)


def shard_files(out: str) -> tuple[UnitManifest, list[str]]:
    """The first unit's manifest and every shard path of the output (all partitions)."""
    if not os.path.isdir(out):
        raise UsageProblem(f"{out}: no such folder (give the OUT folder of `roolog convert`)")
    manifests = check_shards(out)  # every shard's size and xxh64 against its manifest, before training
    if not manifests:
        raise RoologError(f"{out}: the output has no partitions")
    paths = [os.path.join(folder, s.file) for folder, m in manifests for s in m.shards]
    return manifests[0][1], paths


def _is_id(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_id(t.value_type)
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_boolean(t)
            or pa.types.is_date(t))


def _is_dense(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_timestamp(t) or pa.types.is_duration(t) \
        or pa.types.is_decimal(t) or pa.types.is_time(t)


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _mean_tokens(arr: pa.ChunkedArray) -> float:
    if len(arr) == 0 or arr.null_count == len(arr):
        return 0.0
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    return float(pc.mean(pc.list_value_length(pc.utf8_split_whitespace(pc.utf8_trim_whitespace(arr)))).as_py() or 0)


def build_spec(out: str, label: str | None = None, exclude: tuple[str, ...] = (), buckets: int = 1 << 18,
               positive_threshold: float | None = None, eval_percent: int = 10,
               stats_requests: int | None = None, shards: tuple[UnitManifest, list[str]] | None = None) -> FeatureSpec:
    """Features from the manifest's levels and the shards' types (kinds judged on the first row group);
    dense statistics over all training requests, labels checked over all of them. `shards`: what
    shard_files(out) gave, when the caller has it already (each shard is hashed once)."""
    manifest, paths = shards or shard_files(out)
    schema = manifest.schema
    key, impression = list(schema.key), set(schema.impression)
    label = label or next(iter(schema.labels), None)
    if not label:
        raise UsageProblem("no label: the schema lists no `labels`; name one with --label COLUMN")
    if label not in impression:
        where = "a request-level column" if label in schema.request else "not a column of this output"
        raise UsageProblem(f"label {label!r} is {where}; it must be impression-level (one value per impression)")
    unknown = sorted(set(exclude) - set(schema.request) - impression - set(key))
    if unknown:
        raise UsageProblem(f"--exclude names unknown column(s): {', '.join(unknown)}")
    if not paths:
        raise RoologError(f"{out}: the output holds no shards (no requests)")
    files = [pq.ParquetFile(p) for p in paths]
    file = next((f for f in files if f.metadata.num_rows), files[0])  # column kinds judged on real rows
    sample = file.read_row_group(0) if file.num_row_groups else file.schema_arrow.empty_table()
    spec = FeatureSpec(key=key, label=label, buckets=buckets, positive_threshold=positive_threshold)
    for f in sample.schema:
        name, t = f.name, f.type
        if name in key or name == label or name in exclude or name.startswith("__roolog_"):
            continue
        if name in impression:
            inner = t.value_type
            target = spec.impression_ids if _is_id(inner) else spec.impression_dense if _is_dense(inner) else None
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            target = spec.sequences if _is_id(t.value_type) else None
        elif _is_text(t) and _mean_tokens(sample.column(name)) >= TEXT_SEQUENCE_MIN_TOKENS:
            target = spec.sequences
            spec.text_sequences.append(name)
        else:
            target = spec.request_ids if _is_id(t) else spec.request_dense if _is_dense(t) else None
        (spec.skipped if target is None else target).append(name)
    order_by = schema.order_by
    if order_by in spec.impression_ids:  # a rank is ordinal as well: its value is a dense feature too
        spec.impression_dense.append(order_by)
    _fit_dense_stats(spec, paths, impression, eval_percent, stats_requests)
    return spec


def in_eval_split(table: pa.Table, key: list[str], eval_percent: int) -> np.ndarray:
    """A request's split is fixed by the hash of its key: the same on every run, shard layout and worker."""
    h = key_hashes([table.column(k).combine_chunks() for k in key])
    return (h % np.uint64(100)) < np.uint64(eval_percent)


def _fit_dense_stats(spec: FeatureSpec, paths: list[str], impression: set[str], eval_percent: int,
                     max_requests: int | None) -> None:
    """Mean and std of each dense feature over the training requests (the first `max_requests` when
    given), in one pass reading only the key, the label and the dense columns (labels checked on the way)."""
    dense = spec.request_dense + spec.impression_dense
    moments = {name: (0, 0.0, 0.0) for name in dense}  # count, mean, sum of squared deviations
    columns = list(dict.fromkeys([*spec.key, spec.label, *dense]))
    batches = (b for path in paths for b in pq.ParquetFile(path).iter_batches(columns=columns))
    read = 0
    for batch in batches:
        if max_requests is not None and read >= max_requests:
            break
        read += batch.num_rows
        table = pa.Table.from_batches([batch])
        check_labels(label_values(table.column(spec.label), spec), spec.label)
        table = table.filter(pa.array(~in_eval_split(table, spec.key, eval_percent)))
        for name in dense:
            values = dense_values(table.column(name), name in impression)
            moments[name] = _merge_moments(moments[name], values[np.isfinite(values)])
    for name, (n, mean, squares) in moments.items():
        std = math.sqrt(squares / n) if n else 0.0
        spec.dense_stats[name] = (mean, std if std > 0 else 1.0)


def _merge_moments(acc: tuple[int, float, float], values: np.ndarray) -> tuple[int, float, float]:
    """Chan et al.'s pairwise update: stable for large values such as epoch milliseconds."""
    n, mean, squares = acc
    if not len(values):
        return acc
    m = float(values.mean())
    total = n + len(values)
    delta = m - mean
    return (total, mean + delta * len(values) / total,
            squares + float(np.square(values - m).sum()) + delta * delta * n * len(values) / total)


def dense_values(arr: pa.ChunkedArray | pa.Array, flatten: bool) -> np.ndarray:
    """float64 values (null -> NaN); timestamps and durations as their integer count."""
    if flatten:
        arr = pc.list_flatten(arr)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time(t):
        arr = arr.view(pa.int32() if t.bit_width == 32 else pa.int64())  # their integer storage
    return arr.cast(pa.float64()).to_numpy(zero_copy_only=False)


def label_values(arr: pa.ChunkedArray | pa.Array, spec: FeatureSpec) -> np.ndarray:
    """Per impression: 0.0, 1.0, or NaN where the label is null (left out of loss and metrics)."""
    if not (pa.types.is_integer(arr.type.value_type) or pa.types.is_floating(arr.type.value_type)
            or pa.types.is_boolean(arr.type.value_type)):
        raise UsageProblem(f"label {spec.label!r} has type {arr.type.value_type}; it must be 0/1 (or boolean)")
    values = pc.list_flatten(arr).cast(pa.float64()).to_numpy(zero_copy_only=False)
    if spec.positive_threshold is not None:
        return np.where(np.isnan(values), np.nan, (values >= spec.positive_threshold).astype(np.float64))
    return values


def check_labels(values: np.ndarray, label: str) -> None:
    seen = np.unique(values[~np.isnan(values)])
    bad = seen[(seen != 0) & (seen != 1)]
    if len(bad):
        raise UsageProblem(f"label {label!r} holds {bad[0]:g}, not 0/1; for graded labels give "
                           f"--positive-threshold T (values >= T count as positives)")


def salt(column: str) -> int:
    """A feature's hash seed, from its name: adding or excluding columns leaves the others' ids alone."""
    return xxhash.xxh64_intdigest(column.encode())


def hash_ids(arr: pa.Array | pa.ChunkedArray, feature: int, buckets: int) -> np.ndarray:
    """Bucket ids 1..buckets-1 per value (0 = null), salted by feature. Strings are hashed once per
    distinct value Arrow finds (dictionary_encode), integers fully vectorized."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_date(t):
        if pa.types.is_date(t):  # their integer storage
            arr = arr.view(pa.int32() if t.bit_width == 32 else pa.int64())
        ints = arr if pa.types.is_uint64(t) else arr.cast(pa.int64())  # uint64 as is: no overflow
        words = ints.fill_null(0).to_numpy().view(np.uint64)
        hashed = xxh64_u64(words ^ np.uint64(feature))
    else:
        encoded = arr.dictionary_encode()  # strings and bytes: one digest per distinct value
        raw = [v if isinstance(v, bytes) else v.encode() for v in encoded.dictionary.to_pylist()]
        salted = np.array([xxhash.xxh64_intdigest(v, seed=feature) for v in raw], dtype=np.uint64)
        hashed = salted[encoded.indices.fill_null(0).to_numpy()] if len(salted) else np.zeros(len(arr), np.uint64)
    ids = (hashed % np.uint64(buckets - 1)).astype(np.int64) + 1
    if arr.null_count:
        ids[~arr.is_valid().to_numpy(zero_copy_only=False)] = 0
    return ids
