"""Which columns of a converted output feed the model, and how: the dataset options of `roolog.data` that
the trainer uses, and the statistics it standardizes with.

id        integers, strings, booleans, dates -> one hashed embedding bucket per value (`id_buckets`)
dense     floats, timestamps, durations       -> standardized floats (the rank column is both)
sequence  request-level lists of ids (a user history), or
          request-level strings of space-separated tokens (`tokenize`) -> jagged ids for the history encoder

The key and the label are never features; columns of other types are listed as skipped.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ..data import RequestDataset, choose_features, is_text_type, merged_schema
from ..errors import RoologError, UsageProblem
from ..group.schema import label_like
from ..write.checks import check_shards
from ..write.manifest import UnitSchema

TEXT_SEQUENCE_MIN_TOKENS = 4.0  # a string column averaging this many space-separated tokens is a sequence
STATS_BATCH_REQUESTS = 8192


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
    buckets: int = 1 << 18  # embedding rows: bucket 0 is null, ids hash into 1..buckets-1
    positive_threshold: float | None = None  # graded labels: values >= this are positives

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys([*self.request_ids, *self.request_dense, *self.sequences, *self.impression_ids,
                                   *self.impression_dense]))

    def dataset(self, out: str, max_history: int, **options: Any) -> RequestDataset:
        """The `roolog.data` dataset that feeds these features (`options`: batching, split, shuffle, ...)."""
        both = [c for c in self.impression_dense if c in self.impression_ids]  # a rank: id and dense
        return RequestDataset(out, columns=self.columns, labels=[self.label], tokenize=self.text_sequences,
                              id_buckets=self.buckets - 1, max_list_length=max_history, also_dense=both,
                              dense_dtype=torch.float64, **options)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        doc = json.loads(text)
        doc["dense_stats"] = {k: tuple(v) for k, v in doc["dense_stats"].items()}
        return cls(**doc)


def shard_files(out: str) -> tuple[UnitSchema, pa.Schema, list[str]]:
    """The levels and shard schema of all partitions as one (roolog.data.merged_schema: a column some
    partitions lack is null there) and every shard path of the output."""
    if not os.path.isdir(out):
        raise UsageProblem(f"{out}: no such folder (give the OUT folder of `roolog convert`)")
    manifests = check_shards(out)  # every shard's size and xxh64 against its manifest, before training
    if not manifests:
        raise RoologError(f"{out}: the output has no partitions")
    paths = [os.path.join(folder, s.file) for folder, m in manifests for s in m.shards]
    with_shards = [(folder, m) for folder, m in manifests if m.shards]
    if not with_shards:
        return manifests[0][1].schema, pa.schema([]), paths
    schema, arrow = merged_schema(with_shards)
    return schema, arrow, paths


def _mean_tokens(arr: pa.ChunkedArray) -> float:
    if len(arr) == 0 or arr.null_count == len(arr):
        return 0.0
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    return float(pc.mean(pc.list_value_length(pc.utf8_split_whitespace(pc.utf8_trim_whitespace(arr)))).as_py() or 0)


def guess_label(schema) -> str | None:
    """The label when none is named: the manifest's first `labels` entry (a schema file's, or what convert
    guessed as `infer-schema` does), else the one impression-level column named like a target."""
    if schema.labels:
        return schema.labels[0]
    named = [c for c in schema.impression if label_like(c)]
    return named[0] if len(named) == 1 else None


def build_spec(out: str, label: str | None = None, exclude: tuple[str, ...] = (), buckets: int = 1 << 18,
               positive_threshold: float | None = None, eval_percent: int = 10,
               stats_requests: int | None = None, shards: tuple[UnitSchema, pa.Schema, list[str]] | None = None,
               max_history: int = 200) -> FeatureSpec:
    """Features from the manifest's levels and the shards' types (token strings judged on the first row
    group); dense statistics over the training requests (the first `stats_requests` when given), labels
    checked on the way. `shards`: what shard_files(out) gave, when the caller has it already."""
    schema, arrow, paths = shards or shard_files(out)
    label = label or guess_label(schema)
    if not label:
        raise UsageProblem("no label: the output records no `labels` (give convert a --schema listing them) "
                           "and no single column is named like one; name it with --label COLUMN")
    if label not in schema.impression:
        where = "a request-level column" if label in schema.request else "not a column of this output"
        raise UsageProblem(f"label {label!r} is {where}; it must be impression-level (one value per impression)")
    unknown = sorted(set(exclude) - set(schema.request) - set(schema.impression) - set(schema.key))
    if unknown:
        raise UsageProblem(f"--exclude names unknown column(s): {', '.join(unknown)}")
    if not paths:
        raise RoologError(f"{out}: the output holds no shards (no requests)")
    files = [pq.ParquetFile(p) for p in paths]
    file = next((f for f in files if f.metadata.num_rows), files[0])  # token strings judged on real rows
    sample = file.read_row_group(0) if file.num_row_groups else file.schema_arrow.empty_table()
    text = [f.name for f in arrow if f.name in schema.request and f.name not in exclude and is_text_type(f.type)
            and f.name in sample.column_names and _mean_tokens(sample.column(f.name)) >= TEXT_SEQUENCE_MIN_TOKENS]
    kinds = choose_features(schema, arrow, None, [label], tokenize=text)
    keep = [n for n in arrow.names if n not in exclude]

    def kept(names: tuple[str, ...]) -> list[str]:
        return [n for n in keep if n in names]

    def is_list(name: str) -> bool:
        return name in text or pa.types.is_list(arrow.field(name).type) or \
            pa.types.is_large_list(arrow.field(name).type)

    def lists_per_impression(name: str) -> bool:  # list<list<...>>: the model takes one id per impression
        inner = arrow.field(name).type.value_type
        return pa.types.is_list(inner) or pa.types.is_large_list(inner)

    spec = FeatureSpec(key=list(schema.key), label=label, buckets=buckets, positive_threshold=positive_threshold,
                       request_ids=[n for n in kept(kinds.request_ids) if not is_list(n)],
                       request_dense=kept(kinds.request_dense),
                       sequences=[n for n in kept(kinds.request_ids) if is_list(n)], text_sequences=text,
                       impression_ids=[n for n in kept(kinds.impression_ids) if not lists_per_impression(n)],
                       impression_dense=kept(kinds.impression_dense),
                       skipped=kept(kinds.skipped + tuple(n for n in kinds.impression_ids
                                                          if lists_per_impression(n))))
    if schema.order_by in spec.impression_ids:  # a rank is ordinal as well: its value is a dense feature too
        spec.impression_dense.append(schema.order_by)
    _fit_dense_stats(spec, out, eval_percent, stats_requests, max_history)
    return spec


def _fit_dense_stats(spec: FeatureSpec, out: str, eval_percent: int, max_requests: int | None,
                     max_history: int) -> None:
    """Mean and std of each dense feature over the training requests (the first `max_requests` when
    given), in one pass over the dense columns and the label (labels checked on the way)."""
    dense = spec.request_dense + spec.impression_dense
    moments = {name: (0, 0.0, 0.0) for name in dense}  # count, mean, sum of squared deviations
    reader = FeatureSpec(key=spec.key, label=spec.label, request_dense=spec.request_dense,
                         impression_ids=[c for c in spec.impression_dense if c in spec.impression_ids],
                         impression_dense=spec.impression_dense, buckets=spec.buckets)
    data = reader.dataset(out, max_history, batch_requests=STATS_BATCH_REQUESTS, split="train",
                          eval_percent=eval_percent, rank=0, world_size=1,  # every rank: the same statistics
                          verify=False)  # the caller checked every shard
    read = 0
    for batch in data:
        if max_requests is not None and read >= max_requests:
            break
        read += batch.requests
        label_values(batch.labels[spec.label], spec)
        for name in dense:
            values = (batch.request_dense if name in spec.request_dense else batch.impression_dense)[name].numpy()
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


def label_values(values: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Per impression 0.0 or 1.0, NaN where the label is null; graded labels cut at the threshold. Any other
    value is an error."""
    known = ~torch.isnan(values)
    if spec.positive_threshold is not None:
        return torch.where(known, (values >= spec.positive_threshold).to(values.dtype), values)
    bad = known & (values != 0) & (values != 1)
    if bool(bad.any()):
        raise UsageProblem(f"label {spec.label!r} holds {float(values[bad][0]):g}, not 0/1; for graded labels "
                           "give --positive-threshold T (values >= T count as positives)")
    return values
