"""Request-level shards -> jagged training batches (the layout of TorchRec's KeyedJaggedTensor).

A batch holds R requests and I impressions. Request features are stored once per request; impression
features and labels are flat, cut into requests by `offsets` (length R+1); each sequence feature (a user
history) is flat values cut by its own offsets. `JaggedBatch.exploded()` turns it into the classic
sample-level layout: one "request" per impression, request features and histories copied to each.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..values import offsets_from_lengths
from .features import FeatureSpec, check_labels, dense_values, hash_ids, in_eval_split, label_values, salt


@dataclass
class JaggedBatch:
    request_ids: torch.Tensor  # [R, request id features] bucket ids
    request_dense: torch.Tensor  # [R, request dense features] standardized
    sequence_values: list[torch.Tensor]  # per sequence feature: [total length] bucket ids
    sequence_offsets: list[torch.Tensor]  # per sequence feature: [R + 1]
    impression_ids: torch.Tensor  # [I, impression id features]
    impression_dense: torch.Tensor  # [I, impression dense features]
    offsets: torch.Tensor  # [R + 1]: request r owns impressions offsets[r]:offsets[r+1]
    labels: torch.Tensor  # [I] 0/1, NaN where unknown
    source_requests: int = 0  # requests this batch came from (after exploded(), no longer its row count)

    @property
    def requests(self) -> int:
        return len(self.offsets) - 1

    @property
    def impressions(self) -> int:
        return len(self.labels)

    def request_index(self) -> torch.Tensor:
        """For each impression, the row of its request: what broadcasts request outputs to impressions."""
        lengths = self.offsets[1:] - self.offsets[:-1]
        return torch.repeat_interleave(torch.arange(self.requests, device=lengths.device), lengths)

    def exploded(self) -> JaggedBatch:
        """The sample-level layout of the same data: every impression carries its own copy of the request
        features and history, as a classic impression-per-row pipeline would feed them."""
        rows = self.request_index()
        values, offsets = [], []
        for v, o in zip(self.sequence_values, self.sequence_offsets, strict=True):
            starts, lengths = o[:-1][rows], (o[1:] - o[:-1])[rows]
            v2, o2 = gather_ranges(v, starts, lengths)
            values.append(v2)
            offsets.append(o2)
        return replace(self, request_ids=self.request_ids[rows], request_dense=self.request_dense[rows],
                       sequence_values=values, sequence_offsets=offsets,
                       offsets=torch.arange(self.impressions + 1, device=self.offsets.device))

    def to(self, device: torch.device, non_blocking: bool = False) -> JaggedBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> JaggedBatch:  # called by DataLoader(pin_memory=True)
        return self._map(lambda t: t.pin_memory())

    def _map(self, fn) -> JaggedBatch:
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = [fn(t) for t in value] if isinstance(value, list) else \
                fn(value) if isinstance(value, torch.Tensor) else value
        return JaggedBatch(**out)


def gather_ranges(values: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """values[starts[i]:starts[i]+lengths[i]] for every i, concatenated, and the new offsets."""
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, 0, out=offsets[1:])
    within = torch.arange(int(offsets[-1]), device=values.device) - torch.repeat_interleave(offsets[:-1], lengths)
    return values[torch.repeat_interleave(starts, lengths) + within], offsets


def _offsets(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return offsets_from_lengths(pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False))


def _last_items(values: np.ndarray, offsets: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Each list cut to its last `keep` items (the most recent, in a history logged oldest first)."""
    lengths = np.minimum(np.diff(offsets), keep)
    starts = offsets[1:] - lengths
    v, o = gather_ranges(torch.from_numpy(values), torch.from_numpy(starts), torch.from_numpy(lengths))
    return v.numpy(), o.numpy()


def _standardized(table: pa.Table, names: list[str], spec: FeatureSpec, flatten: bool, rows: int) -> np.ndarray:
    out = np.zeros((rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        mean, std = spec.dense_stats[name]
        out[:, j] = np.nan_to_num((dense_values(table.column(name), flatten) - mean) / std, nan=0.0,
                                  posinf=0.0, neginf=0.0)
    return out


def tokens(text: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Space-separated tokens as a list per row; an empty or null string is an empty list."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if pa.types.is_dictionary(text.type):
        text = text.dictionary_decode()
    lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text))
    words = pc.list_flatten(lists)
    keep = pc.greater(pc.utf8_length(words), 0)  # "" splits into [""]
    rows = pc.list_parent_indices(lists).filter(keep).to_numpy()
    offsets = offsets_from_lengths(np.bincount(rows, minlength=len(text)))
    return pa.LargeListArray.from_arrays(pa.array(offsets), words.filter(keep))


def collate(table: pa.Table, spec: FeatureSpec, max_history: int) -> JaggedBatch:
    """Request rows -> one JaggedBatch, vectorized column by column."""
    rows = table.num_rows
    label = table.column(spec.label)
    offsets = _offsets(label)

    def ids(names: list[str], flatten: bool, n: int) -> np.ndarray:
        out = np.zeros((n, len(names)), dtype=np.int64)
        for j, name in enumerate(names):
            col = table.column(name)
            out[:, j] = hash_ids(pc.list_flatten(col) if flatten else col, salt(name), spec.buckets)
        return out

    seq_values, seq_offsets = [], []
    for name in spec.sequences:
        col = table.column(name)
        if name in spec.text_sequences:
            col = tokens(col)
        values = hash_ids(pc.list_flatten(col), salt(name), spec.buckets)
        v, o = _last_items(values, _offsets(col), max_history)
        seq_values.append(torch.from_numpy(v))
        seq_offsets.append(torch.from_numpy(o))
    impressions = int(offsets[-1])
    labels = label_values(label, spec)
    check_labels(labels, spec.label)
    return JaggedBatch(
        request_ids=torch.from_numpy(ids(spec.request_ids, False, rows)),
        request_dense=torch.from_numpy(_standardized(table, spec.request_dense, spec, False, rows)),
        sequence_values=seq_values, sequence_offsets=seq_offsets,
        impression_ids=torch.from_numpy(ids(spec.impression_ids, True, impressions)),
        impression_dense=torch.from_numpy(_standardized(table, spec.impression_dense, spec, True, impressions)),
        offsets=torch.from_numpy(offsets),
        labels=torch.from_numpy(labels.astype(np.float32)), source_requests=rows)


class RequestDataset(IterableDataset):
    """Jagged batches of about `batch_impressions` impressions over the row groups of an output's shards.

    Row groups are the unit of work: worker w of W takes every W-th one, so each impression is yielded
    exactly once per epoch across DataLoader workers. With `shuffle`, row groups and the batches cut from
    each are visited in a seeded random order (a new one each epoch)."""

    def __init__(self, paths: list[str], spec: FeatureSpec, split: str = "all", eval_percent: int = 10,
                 batch_impressions: int = 1024, max_history: int = 200, shuffle: bool = False, seed: int = 0,
                 layout: str = "request"):
        super().__init__()
        self.spec, self.split, self.eval_percent = spec, split, eval_percent
        self.batch_impressions, self.max_history, self.layout = batch_impressions, max_history, layout
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.row_groups = [(p, g) for p in paths for g in range(pq.ParquetFile(p).num_row_groups)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _tables(self) -> Iterator[pa.Table]:
        info = get_worker_info()
        mine = self.row_groups[info.id::info.num_workers] if info else list(self.row_groups)
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            rng.shuffle(mine)
        columns = list(dict.fromkeys(self.spec.columns))
        for path, group in mine:
            table = pq.ParquetFile(path).read_row_group(group, columns=columns)
            if self.split != "all":
                keep = in_eval_split(table, self.spec.key, self.eval_percent)
                table = table.filter(pa.array(keep if self.split == "eval" else ~keep))
            cuts = self._cuts(_offsets(table.column(self.spec.label)))
            pieces = list(zip(cuts[:-1], cuts[1:], strict=True))
            if self.shuffle:
                rng.shuffle(pieces)
            for a, b in pieces:
                yield table.slice(a, b - a)

    def _cuts(self, offsets: np.ndarray) -> list[int]:
        """Request boundaries giving about batch_impressions impressions per batch (at least one request)."""
        batches = max(1, math.ceil(int(offsets[-1]) / self.batch_impressions))
        targets = np.arange(1, batches) * (int(offsets[-1]) / batches)
        cuts = np.unique(np.concatenate([[0], np.searchsorted(offsets, targets), [len(offsets) - 1]]))
        return [int(c) for c in cuts]

    def __iter__(self) -> Iterator[JaggedBatch]:
        for table in self._tables():
            if table.num_rows:
                batch = collate(table, self.spec, self.max_history)
                yield batch.exploded() if self.layout == "impression" else batch
