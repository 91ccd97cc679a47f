"""`roolog.data`: request batches from a `roolog convert` output, for your own PyTorch (or TorchRec) trainer.

`RequestDataset(out)` is a `torch.utils.data.IterableDataset` of `RequestBatch`es. A batch of R requests
and I impressions holds every request-level feature once per request and every impression-level feature
and label flat, with the impressions of request r at `offsets[r]:offsets[r + 1]`. Example: two requests,
the first showing 3 items and the second 2, with a user id, a history and an item id::

    lengths                 = [3, 2]                       offsets = [0, 3, 5]
    request_ids["user_id"]  = Jagged(values=[7, 9],           lengths=[1, 1])      one id per request
    request_ids["history"]  = Jagged(values=[101, 102, 103, 104], lengths=[3, 1])  a list per request
    request_dense["age"]    = [31.0, nan]                                          NaN: null
    impression_ids["item"]  = Jagged(values=[11, 12, 13, 21, 22], lengths=[1, 1, 1, 1, 1])
    impression_dense["price"] = [1.5, 2.0, 0.5, 9.9, 1.0]
    labels["click"]         = [0., 1., 0., 0., 1.]                                 NaN: null

    to_kjt("request"):    keys   ["user_id", "history", "item"]
                          values [7, 9 | 101, 102, 103, 104 | 11, 12, 13, 21, 22]
                          lengths [1, 1 | 3, 1 | 1, 1, 1, 1, 1]
                          stride_per_key_per_rank [[2], [2], [5]]
                          inverse_indices (keys, [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 1, 2, 3, 4]])
    to_kjt("impression"): the same keys with 5 rows each: user_id [7, 7, 7, 9, 9], the history
                          repeated per impression (lengths [3, 3, 3, 1, 1]), item as above.

    to_kjt("request", dedup=True): each request feature's distinct rows in the batch, once (rows
    compared exactly: same length, same values; in sorted order), so a user's requests in one batch
    store their history once. Two requests of user 7 with the same history [101, 102] and one of user 9:
                          keys   ["user_id", "history", "item"]
                          values [7, 9 | 101, 102 | ...]      lengths [1, 1 | 2 | ...]
                          stride_per_key_per_rank [[2], [1], [I]]
                          inverse_indices: user_id and history map each impression to its distinct row

The request layout is RecD's inverse KJT: TorchRec's `EmbeddingBagCollection` pools each request feature
once per request and expands the pooled rows to impressions by `inverse_indices`, giving the same output
as the impression layout. `pooled(ebc, kjt)` gives the same output (and gradients) with an expansion whose
backward is one `index_add_`, not TorchRec's loop per impression on the CPU.

Columns and their kinds (from the shards' Arrow types and the manifest's levels):

    ids     integers, booleans, dates (days, or ms for date64), strings and binaries, decimals of scale 0
            (the integers too big for uint64 that text logs hold), dictionaries of these;
            request-level lists of them (a user history, cut to its last `max_list_length` items), and
            string columns named in `tokenize` (split on whitespace into a list of tokens)  -> Jagged int64
    dense   floats, decimals with a scale, timestamps, durations, times (their integer count) -> float tensor
    labels  the manifest's `labels` (or `labels=`), impression-level numbers or booleans -> float32

A null id is an empty list (length 0); a null item inside a list is left out; a null dense value or label
is NaN. Id values: integers as they are (uint64 reinterpreted as int64, booleans 0/1), strings and
binaries as xxh64 of their bytes (seed 0) with the top bit cleared (scale-0 decimals: of their text, as
Arrow prints it), so distinct ids stay distinct past 2^53 and the same string gets the same id in
every column. With `id_buckets=B`, every id value (integers too) is hashed into 0..B-1 instead, salted by
its column's name (salt = xxh64 of the name; an integer: xxh64 of the 8 bytes of value XOR salt, seed 0;
a string: xxh64 of its bytes seeded by the salt; then mod B), so one shared table of B rows serves all.
The key is not a feature unless listed in `columns`; columns of other types (structs, lists of floats) are
left out and listed in `RequestDataset.skipped` (naming them in `columns` is an error).

Work is split by (rank, DataLoader worker): the output's requests, in shard and row-group order (row
groups permuted by `seed` and epoch when `shuffle`), are cut into `world_size x num_workers` contiguous
runs of equal size (to one request), so every request is read by exactly one of them per epoch, however
few row groups there are (`roolog convert --row-group-requests N` makes row groups small, so that each
worker reads only its own). With `shuffle`, the requests each (rank, worker) reads of a row group are also
permuted. Call `set_epoch(e)` before each epoch, as with `DistributedSampler` (DataLoader workers made with
`persistent_workers=True` keep the epoch they started with). With world_size > 1 every rank yields the same
number of batches (`batches_per_rank`): each worker stops at the fewest batches its counterpart has on any
rank, so the remainder - at most one batch per worker per rank, more with a train/eval split or
`batch_impressions`, whose counts differ by rank - is left out that epoch, like `DistributedSampler(
drop_last=True)`; a DDP step then never waits on a rank that ran out. A rank with no batch is an error.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import xxhash
from torch.utils.data import IterableDataset, get_worker_info

from .errors import RoologError, UsageProblem
from .group.keys import key_hashes, xxh64_u64
from .group.values import adjacent_differs, offsets_from_lengths
from .read.arrow_types import conform, unify
from .write.checks import check_shards, units
from .write.manifest import UnitManifest, UnitSchema

DEFAULT_BATCH_REQUESTS = 256  # when neither batch_requests nor batch_impressions is given
TORCHREC_INSTALL = "bash scripts/install-torchrec.sh (see README, 'Training your own model')"
Layout = Literal["request", "impression"]


# -- batches -----------------------------------------------------------------------------------------------

@dataclass
class Jagged:
    """Rows of variable length, flat: row i is values[offsets[i]:offsets[i + 1]] (TorchRec's JaggedTensor)."""

    values: torch.Tensor  # [sum(lengths)] int64
    lengths: torch.Tensor  # [rows] int64

    @property
    def offsets(self) -> torch.Tensor:
        return _offsets(self.lengths)

    def gather(self, rows: torch.Tensor) -> Jagged:
        """These rows, in this order (a row may repeat): how request features are copied to impressions."""
        values, lengths = gather_ranges(self.values, self.offsets[:-1][rows], self.lengths[rows])
        return Jagged(values, lengths)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Jagged:
        return Jagged(fn(self.values), fn(self.lengths))


@dataclass
class RequestBatch:
    """R requests and their I impressions; see the module docstring for the layout."""

    lengths: torch.Tensor  # [R] impressions per request
    request_ids: dict[str, Jagged] = field(default_factory=dict)  # R rows each
    request_dense: dict[str, torch.Tensor] = field(default_factory=dict)  # [R] each
    impression_ids: dict[str, Jagged] = field(default_factory=dict)  # I rows each
    impression_dense: dict[str, torch.Tensor] = field(default_factory=dict)  # [I] each
    labels: dict[str, torch.Tensor] = field(default_factory=dict)  # [I] each, float32, NaN = null

    @property
    def requests(self) -> int:
        return len(self.lengths)

    @property
    def impressions(self) -> int:
        return int(self.lengths.sum())

    @property
    def offsets(self) -> torch.Tensor:
        """[R + 1]: request r owns impressions offsets[r]:offsets[r + 1]."""
        return _offsets(self.lengths)

    def request_index(self) -> torch.Tensor:
        """[I]: each impression's request row; `request_vectors[batch.request_index()]` broadcasts."""
        return torch.repeat_interleave(torch.arange(self.requests, device=self.lengths.device), self.lengths)

    def exploded(self) -> RequestBatch:
        """The classic sample-level layout of the same data: one request per impression, each carrying its
        own copy of the request features (histories included)."""
        rows = self.request_index()
        return replace(self, lengths=torch.ones(len(rows), dtype=self.lengths.dtype, device=rows.device),
                       request_ids={k: j.gather(rows) for k, j in self.request_ids.items()},
                       request_dense={k: t[rows] for k, t in self.request_dense.items()})

    def to_kjt(self, layout: Layout = "request", keys: Sequence[str] | None = None, dedup: bool = False):
        """The id features as a `torchrec.KeyedJaggedTensor` (request features first, then impression ones).

        ``"request"``: request features hold R rows (each value once per request), impression features I;
        `stride_per_key_per_rank` says so and `inverse_indices` maps each of the I impressions to its row,
        as TorchRec's variable-batch KJT wants it. ``"impression"``: every feature I rows (request features
        copied to each impression). `keys` picks and orders features (default: all). `dedup` (request
        layout only): each request feature holds its distinct rows of the batch once (RecD's IKJT), which
        pays where a user's requests share a batch (an output made with --cluster-by).
        """
        try:
            from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
        except ImportError as err:
            raise UsageProblem(f"to_kjt needs TorchRec: {TORCHREC_INSTALL}") from err
        if layout not in ("request", "impression"):
            raise UsageProblem(f"layout must be 'request' or 'impression', not {layout!r}")
        if dedup and layout != "request":
            raise UsageProblem("to_kjt(dedup=True) stores distinct request rows: it needs layout='request'")
        features = {**self.request_ids, **self.impression_ids}
        names = list(keys) if keys is not None else list(features)
        unknown = [k for k in names if k not in features]
        if unknown:
            raise UsageProblem(f"to_kjt: no id feature {unknown[0]!r} (the batch has {', '.join(features)})")
        rows = self.request_index()
        if layout == "impression":
            chosen = [self.request_ids[k].gather(rows) if k in self.request_ids else features[k] for k in names]
            return KeyedJaggedTensor(keys=names, values=_cat([j.values for j in chosen], self.lengths),
                                     lengths=_cat([j.lengths for j in chosen], self.lengths))
        identity = torch.arange(len(rows), device=rows.device)
        chosen, index = [], []
        for k in names:
            if k not in self.request_ids:
                chosen.append(features[k])
                index.append(identity)
            elif dedup:
                distinct, row_of = distinct_rows(features[k])
                chosen.append(distinct)
                index.append(row_of[rows])
            else:
                chosen.append(features[k])
                index.append(rows)
        inverse = torch.stack(index) if names else torch.empty((0, len(rows)), dtype=torch.int64, device=rows.device)
        return KeyedJaggedTensor(keys=names, values=_cat([j.values for j in chosen], self.lengths),
                                 lengths=_cat([j.lengths for j in chosen], self.lengths),
                                 stride_per_key_per_rank=[[len(j.lengths)] for j in chosen],
                                 inverse_indices=(names, inverse))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> RequestBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> RequestBatch:  # called by DataLoader(pin_memory=True)
        return self._map(lambda t: t.pin_memory())

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> RequestBatch:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = fn(value) if isinstance(value, torch.Tensor) else \
                {k: v._map(fn) if isinstance(v, Jagged) else fn(v) for k, v in value.items()}
        return RequestBatch(**out)


def pooled(ebc, kjt):
    """``ebc(kjt)`` for a TorchRec `EmbeddingBagCollection` (unweighted) and a KJT from `to_kjt`: the same
    `KeyedTensor` (keys, values and gradients), each feature's rows pooled by the EBC's own bags, then
    expanded to the I impressions by `torch.index_select` on its `inverse_indices`.

    TorchRec expands with fbgemm's `group_index_select_dim0`, whose backward on the CPU is a `select` and an
    `add_` per impression and feature; `index_select`'s is one `index_add_`. On the CPU that is most of a
    step on a request or dedup KJT (scripts/bench_train.py, BENCHMARKS.md). A KJT without inverse_indices
    (`to_kjt("impression")`) is passed to ``ebc`` as it is.
    """
    from torchrec.modules.embedding_modules import get_embedding_names_by_table
    from torchrec.sparse.jagged_tensor import KeyedTensor

    if ebc.is_weighted():
        raise UsageProblem("pooled: a weighted EmbeddingBagCollection needs weights, which to_kjt does not give")
    inverse = kjt.inverse_indices_or_none()
    if inverse is None:
        return ebc(kjt)
    index = dict(zip(inverse[0], inverse[1], strict=True))
    features = kjt.to_dict()
    configs = ebc.embedding_bag_configs()
    keys, dims, parts = [], [], []
    for config, names, bag in zip(configs, get_embedding_names_by_table(configs), ebc.embedding_bags.values(),
                                  strict=True):
        for feature, name in zip(config.feature_names, names, strict=True):
            f = features[feature]
            rows = bag(input=f.values(), offsets=f.offsets()).float()
            parts.append(torch.index_select(rows, 0, index[feature]))
            keys.append(name)
            dims.append(config.embedding_dim)
    return KeyedTensor(keys=keys, length_per_key=dims, values=torch.cat(parts, dim=1))


def distinct_rows(rows: Jagged) -> tuple[Jagged, torch.Tensor]:
    """The distinct rows (exactly: same length, same values), sorted, and for each row its distinct row."""
    n = len(rows.lengths)
    width = int(rows.lengths.max()) if n else 0
    padded = torch.zeros((n, width + 1), dtype=torch.int64, device=rows.values.device)
    padded[:, 0] = rows.lengths  # the length first: [1] and [1, 0] stay apart
    row = torch.repeat_interleave(torch.arange(n, device=rows.values.device), rows.lengths)
    padded[row, torch.arange(len(rows.values), device=row.device) - rows.offsets[:-1][row] + 1] = rows.values
    unique, inverse = torch.unique(padded, dim=0, return_inverse=True)
    lengths = unique[:, 0]
    kept = torch.arange(width, device=row.device)[None, :] < lengths[:, None]
    return Jagged(unique[:, 1:][kept], lengths), inverse


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, 0, out=offsets[1:])
    return offsets


def _cat(parts: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64, device=like.device)


def gather_ranges(values: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """values[starts[i]:starts[i] + lengths[i]] for every i, concatenated, and those lengths."""
    offsets = _offsets(lengths)
    within = torch.arange(int(offsets[-1]), device=values.device) - torch.repeat_interleave(offsets[:-1], lengths)
    return values[torch.repeat_interleave(starts, lengths) + within], lengths


# -- columns -> tensors ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Features:
    """Which columns a dataset reads, and as what (decided once, from the manifest and the shards' types)."""

    key: tuple[str, ...]
    lengths_from: str  # an impression-level (list) column, or the count column: each request's impressions
    request_ids: tuple[str, ...] = ()
    request_dense: tuple[str, ...] = ()
    impression_ids: tuple[str, ...] = ()
    impression_dense: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    tokenize: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        """What to read from the shards."""
        names = [*self.request_ids, *self.request_dense, *self.impression_ids, *self.impression_dense,
                 *self.labels, self.lengths_from]
        return list(dict.fromkeys(names))


def _unwrap(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def is_id_type(t: pa.DataType) -> bool:
    t = _unwrap(t)
    return (pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_date(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or (pa.types.is_decimal(t) and t.scale == 0))


def is_dense_type(t: pa.DataType) -> bool:
    t = _unwrap(t)
    return (pa.types.is_floating(t) or (pa.types.is_decimal(t) and t.scale > 0) or pa.types.is_timestamp(t)
            or pa.types.is_duration(t) or pa.types.is_time(t))


def is_text_type(t: pa.DataType) -> bool:
    t = _unwrap(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _kind(t: pa.DataType, tokenized: bool) -> str | None:
    """"ids", "dense" or None (not a feature) for one value of a row (a request, or an impression)."""
    if tokenized:
        return "ids" if is_text_type(t) else None
    if _is_list(t):
        return "ids" if is_id_type(t.value_type) else None
    return "ids" if is_id_type(t) else "dense" if is_dense_type(t) else None


def choose_features(schema: UnitSchema, arrow: pa.Schema, columns: Sequence[str] | None,
                    labels: Sequence[str] | None, tokenize: Sequence[str] = (),
                    also_dense: Sequence[str] = ()) -> Features:
    """Features from an output's schema (levels) and its shards' Arrow schema (types)."""
    impression, request = set(schema.impression), set(schema.request)
    label_names = tuple(schema.labels if labels is None else labels)
    for name in label_names:
        if name not in impression:
            where = "request-level" if name in request else "not a column of this output"
            raise UsageProblem(f"label {name!r} is {where}; a label must be impression-level")
        inner = arrow.field(name).type.value_type
        if not (pa.types.is_integer(inner) or pa.types.is_floating(inner) or pa.types.is_boolean(inner)):
            raise UsageProblem(f"label {name!r} has type {inner}; a label must be a number or a boolean")
    known = [f.name for f in arrow if not f.name.startswith("__roolog_")]
    for name in [*(columns or ()), *tokenize, *also_dense]:
        if name not in known:
            raise UsageProblem(f"no column {name!r} in this output (it has {', '.join(known)})")
    if columns is None:
        wanted = [n for n in known if n not in schema.key and n not in label_names]
    else:
        wanted = [n for n in columns if n not in label_names]
    kinds: dict[str, list[str]] = {"request_ids": [], "request_dense": [], "impression_ids": [],
                                   "impression_dense": []}
    skipped = []
    for name in wanted:
        t = arrow.field(name).type
        level = "impression" if name in impression else "request"
        if level == "impression":
            t = t.value_type  # one list per request: the value of one impression inside
        elif name in tokenize and not is_text_type(t):
            raise UsageProblem(f"tokenize: {name!r} is a {t} column; only request-level strings are split")
        kind = _kind(t, name in tokenize)
        if kind is None:
            if columns is not None:
                raise UsageProblem(f"column {name!r} ({arrow.field(name).type}) cannot be a feature: ids are "
                                   "integers, strings, booleans or dates (or lists of them), dense values numbers "
                                   "or times")
            skipped.append(name)
        else:
            kinds[f"{level}_{kind}"].append(name)
            if name in also_dense and (pa.types.is_integer(_unwrap(t)) or pa.types.is_boolean(_unwrap(t))):
                kinds[f"{level}_dense"].append(name)
    unused = [n for n in also_dense if not any(n in v for k, v in kinds.items() if k.endswith("_dense"))]
    if unused:
        raise UsageProblem(f"also_dense: {unused[0]!r} is not a numeric id column among the features")
    lengths_from = schema.impression[0] if schema.impression else schema.count_column
    assert lengths_from is not None  # a manifest names the count column when no column is impression-level
    return Features(key=tuple(schema.key), labels=label_names, tokenize=tuple(tokenize),
                    lengths_from=lengths_from, skipped=tuple(skipped), **{k: tuple(v) for k, v in kinds.items()})


def merged_schema(units: Sequence[tuple[str, UnitManifest]]) -> tuple[UnitSchema, pa.Schema]:
    """The levels and the shards' Arrow schema of all partitions as one: every column any partition has
    (a column added or dropped on some day reads as null where it is absent), types widened losslessly. A
    column request-level in one partition and impression-level in another is an error, as is an output
    with no impression-level column in every partition (what tells each request's impressions)."""
    shards = [(folder, pq.read_schema(os.path.join(folder, m.shards[0].file))) for folder, m in units]
    arrow = unify(shards, "convert the partitions with one --schema file", absent_ok=True)
    level: dict[str, tuple[str, str]] = {}
    for folder, m in units:
        named = [*((c, "request") for c in m.schema.request), *((c, "impression") for c in m.schema.impression)]
        for name, lv in named:
            seen = level.setdefault(name, (lv, folder))
            if seen[0] != lv:
                raise RoologError(f"{folder}: column {name!r} is {lv}-level here, {seen[0]}-level in {seen[1]}; "
                                  "convert the partitions with one --schema file")
    first = units[0][1].schema
    common = [c for c in first.impression if all(c in m.schema.impression for _, m in units)]
    counts = {m.schema.count_column for _, m in units}
    if not common and (len(counts) != 1 or None in counts):
        raise RoologError(f"{units[0][0]}: no impression-level column is in every partition, so the partitions do "
                          "not tell their requests' impressions the same way; convert them with one --schema file")
    impression = common + [c for c, (lv, _) in level.items() if lv == "impression" and c not in common]
    labels = list(dict.fromkeys(label for _, m in units for label in m.schema.labels))
    merged = replace(first, request=[c for c, (lv, _) in level.items() if lv == "request"], impression=impression,
                     labels=labels)
    return merged, arrow


def salt(column: str) -> int:
    """A column's hash seed, from its name: adding or leaving out columns changes no other column's ids."""
    return xxhash.xxh64_intdigest(column.encode())


def encode_ids(values: pa.Array, column: str, buckets: int | None) -> np.ndarray:
    """int64 ids of non-null values (see the module docstring): raw integers and hashed strings, or every
    value hashed into 0..buckets-1 salted by the column name."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_decimal(values.type):
        values = values.cast(pa.string())  # integers too big for uint64: their text, hashed
    t = values.type
    seed = salt(column) if buckets is not None else 0
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_date(t):
        if pa.types.is_date(t):  # their integer storage
            values = values.view(pa.int32() if t.bit_width == 32 else pa.int64())
        ints = values.view(pa.int64()) if pa.types.is_uint64(t) else values.cast(pa.int64())
        raw = np.array(ints.to_numpy(zero_copy_only=False), dtype=np.int64)  # a copy torch may write to
        if buckets is None:
            return raw
        hashed = xxh64_u64(raw.view(np.uint64) ^ np.uint64(seed))
    else:
        encoded = values.dictionary_encode()  # strings and bytes: one digest per distinct value
        distinct = [v if isinstance(v, bytes) else v.encode() for v in encoded.dictionary.to_pylist()]
        digests = np.array([xxhash.xxh64_intdigest(v, seed=seed) for v in distinct], dtype=np.uint64)
        hashed = digests[encoded.indices.to_numpy()] if len(digests) else np.zeros(0, np.uint64)
        if buckets is None:
            return (hashed & np.uint64((1 << 63) - 1)).astype(np.int64)
    return (hashed % np.uint64(buckets)).astype(np.int64)


def tokens(text: pa.Array) -> pa.Array:
    """Whitespace-separated tokens as a list per row; an empty or null string is an empty list."""
    if pa.types.is_dictionary(text.type):
        text = text.dictionary_decode()
    lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text))
    words = pc.list_flatten(lists)
    keep = pc.greater(pc.utf8_length(words), 0)  # "" splits into [""]
    rows = pc.list_parent_indices(lists).filter(keep).to_numpy()
    offsets = offsets_from_lengths(np.bincount(rows, minlength=len(text)))
    return pa.LargeListArray.from_arrays(pa.array(offsets), words.filter(keep))


def _jagged_ids(rows: pa.Array, column: str, buckets: int | None, tokenize: bool,
                max_list_length: int | None) -> Jagged:
    """One entry per row (a scalar id or a list of them) -> Jagged ids; nulls left out."""
    if tokenize:
        rows = tokens(rows)
    if _is_list(rows.type):
        items = pc.list_flatten(rows)  # a null list has no items
        parents = pc.list_parent_indices(rows)
        valid = items.is_valid()
        items, parents = items.filter(valid), parents.filter(valid).to_numpy()
        lengths = np.bincount(parents, minlength=len(rows)).astype(np.int64)
        values = torch.from_numpy(encode_ids(items, column, buckets))
        jagged = Jagged(values, torch.from_numpy(lengths))
        if max_list_length is not None and len(lengths) and lengths.max() > max_list_length:
            keep = jagged.lengths.clamp(max=max_list_length)  # the last items: a history is logged oldest first
            values, _ = gather_ranges(jagged.values, jagged.offsets[1:] - keep, keep)
            jagged = Jagged(values, keep)
        return jagged
    valid = rows.is_valid()
    lengths = valid.to_numpy(zero_copy_only=False).astype(np.int64)
    return Jagged(torch.from_numpy(encode_ids(rows.filter(valid), column, buckets)), torch.from_numpy(lengths))


def dense_values(rows: pa.Array, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Numbers (null -> NaN); timestamps, durations and times as their integer count."""
    t = _unwrap(rows.type)
    if pa.types.is_dictionary(rows.type):
        rows = rows.dictionary_decode()
    if pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time(t):
        rows = rows.view(pa.int32() if t.bit_width == 32 else pa.int64())
    values = np.array(rows.cast(pa.float64()).to_numpy(zero_copy_only=False))  # a copy torch may write to
    return torch.from_numpy(values).to(dtype)


def request_lengths(table: pa.Table, column: str) -> np.ndarray:
    """Impressions per request, from an impression-level list column (or the count column)."""
    col = table.column(column).combine_chunks()
    if _is_list(col.type):
        return pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return col.to_numpy(zero_copy_only=False).astype(np.int64)


def collate(table: pa.Table, features: Features, id_buckets: int | None = None,
            max_list_length: int | None = None, dense_dtype: torch.dtype = torch.float32) -> RequestBatch:
    """Request rows (as read from a shard) -> one RequestBatch, column by column."""

    def column(name: str, level: str) -> pa.Array:
        col = table.column(name).combine_chunks()
        return pc.list_flatten(col) if level == "impression" else col

    def ids(names: tuple[str, ...], level: str) -> dict[str, Jagged]:
        return {n: _jagged_ids(column(n, level), n, id_buckets, n in features.tokenize,
                               max_list_length if level == "request" else None) for n in names}

    return RequestBatch(
        lengths=torch.from_numpy(request_lengths(table, features.lengths_from)),
        request_ids=ids(features.request_ids, "request"),
        request_dense={n: dense_values(column(n, "request"), dense_dtype) for n in features.request_dense},
        impression_ids=ids(features.impression_ids, "impression"),
        impression_dense={n: dense_values(column(n, "impression"), dense_dtype) for n in features.impression_dense},
        labels={n: dense_values(column(n, "impression"), torch.float32) for n in features.labels})


def in_eval_split(table: pa.Table, key: Sequence[str], eval_percent: int) -> np.ndarray:
    """Whether each request is held out: fixed by the xxh64 of its key, so the same on every run, shard
    layout, rank and worker."""
    h = key_hashes([table.column(k).combine_chunks() for k in key])
    return (h % np.uint64(100)) < np.uint64(eval_percent)


# -- the dataset -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowGroup:
    """One row group of one shard, and what its file was when the dataset checked it."""

    path: str
    name: str  # the shard's path within the output: what the shuffle is seeded by
    index: int
    rows: int
    stat: tuple[int, int, int]  # (inode, size, mtime ns) of the shard


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of a row group: the unit one (rank, worker) reads."""

    group: RowGroup
    start: int
    stop: int


def split_runs(groups: Sequence[RowGroup], parts: int, part: int) -> list[Segment]:
    """Part `part` of `parts` contiguous runs of (about) equal numbers of requests over these row groups."""
    total = sum(g.rows for g in groups)
    begin, end = total * part // parts, total * (part + 1) // parts
    out, at = [], 0
    for g in groups:
        lo, hi = max(begin, at), min(end, at + g.rows)
        if lo < hi:
            out.append(Segment(g, lo - at, hi - at))
        at += g.rows
    return out


def _stat(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _default_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        dist = torch.distributed
        on = dist.is_available() and dist.is_initialized()
        rank = rank if rank is not None else dist.get_rank() if on else 0
        world_size = world_size if world_size is not None else dist.get_world_size() if on else 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageProblem(f"rank {rank} of world_size {world_size}: need 0 <= rank < world_size")
    return rank, world_size


class RequestDataset(IterableDataset):
    """`RequestBatch`es over a `roolog convert` output (see the module docstring).

    Parameters
    ----------
    out
        The output folder (partitioned or not). Every shard is checked against the manifest (size and
        xxh64) here, once; a shard replaced afterwards is an error when read.
    columns
        Feature columns (default: every column but the key and the labels that has a feature type).
    labels
        Label columns (default: the manifest's `labels`: the schema file's, or those convert found as
        ``infer-schema`` does).
    batch_requests, batch_impressions
        A batch closes at `batch_requests` requests, or before the request that would take it past
        `batch_impressions` impressions (at least one request), whichever comes first. Default: 256
        requests. Batches run across row groups; the last one of each (rank, worker) may be smaller.
    shuffle, seed
        Row groups, and the requests read of each, in a random order fixed by (seed, epoch) and the number
        of ranks and workers.
    keep_together
        Request-level columns the output is clustered by (`roolog convert --cluster-by`, its first columns):
        a shuffle then moves whole runs of requests with equal values (a user's requests) instead of single
        requests, so they stay next to each other and mostly in one batch, where ``to_kjt(dedup=True)`` stores
        their shared history once. Shuffling then means: row groups in a random order, and in each the users
        in a random order; a user's requests keep their order, and a batch may still split a user at its
        edges (and where a user's requests span row groups). Without `shuffle` a clustered output is read in
        order, a user's requests already together.
    rank, world_size
        This process's share (default: ``torch.distributed``'s when initialised, else 0 of 1).
    split, eval_percent
        ``"train"`` or ``"eval"`` keep only the requests whose xxh64(key) mod 100 is at or above, or below,
        `eval_percent`; ``"all"`` keeps every request.
    id_buckets, tokenize, max_list_length, also_dense, dense_dtype
        How ids are made (raw, or hashed into `id_buckets`), which request-level strings are split into
        token lists, how many of a list's last items are kept, which integer id columns are also given as
        dense values (a rank, a count), the dtype of dense features.
    exploded
        Yield the classic layout (`RequestBatch.exploded()`: one request per impression), made in the
        DataLoader's workers.
    verify
        Check every shard's bytes against the manifest first (default True).

    Examples
    --------
    >>> from torch.utils.data import DataLoader
    >>> from roolog.data import RequestDataset
    >>> data = RequestDataset("out", batch_requests=128, shuffle=True)
    >>> batch = next(iter(DataLoader(data, batch_size=None)))
    >>> batch.requests, batch.impressions, sorted(batch.labels)
    (128, 1298, ['click'])
    """

    def __init__(self, out: str, *, columns: Sequence[str] | None = None, labels: Sequence[str] | None = None,
                 batch_requests: int | None = None, batch_impressions: int | None = None, shuffle: bool = False,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 split: Literal["all", "train", "eval"] = "all", eval_percent: int = 10,
                 id_buckets: int | None = None, tokenize: Sequence[str] = (), max_list_length: int | None = None,
                 also_dense: Sequence[str] = (), dense_dtype: torch.dtype = torch.float32, exploded: bool = False,
                 verify: bool = True, keep_together: Sequence[str] = ()):
        super().__init__()
        if not os.path.isdir(out):
            raise UsageProblem(f"{out}: no such folder (give the OUT folder of `roolog convert`)")
        if batch_requests is None and batch_impressions is None:
            batch_requests = DEFAULT_BATCH_REQUESTS
        for name, value in (("batch_requests", batch_requests), ("batch_impressions", batch_impressions),
                            ("id_buckets", id_buckets), ("max_list_length", max_list_length)):
            if value is not None and value < 1:
                raise UsageProblem(f"{name} must be at least 1, not {value}")
        if split not in ("all", "train", "eval"):
            raise UsageProblem(f"split must be 'all', 'train' or 'eval', not {split!r}")
        if not 0 <= eval_percent <= 100:
            raise UsageProblem(f"eval_percent must be 0 to 100, not {eval_percent}")
        found = check_shards(out) if verify else units(out)
        if not found:
            raise RoologError(f"{out}: the output has no partitions")
        paths = [os.path.join(folder, s.file) for folder, m in found for s in m.shards]
        if not paths:
            raise RoologError(f"{out}: the output holds no shards (no requests)")
        with_shards = [(folder, m) for folder, m in found if m.shards]
        (_, self.manifest), self.out = with_shards[0], out
        labels = list(self.manifest.schema.labels) if labels is None else labels  # one list for all partitions
        levels, self.arrow = merged_schema(with_shards)
        self.features = choose_features(levels, self.arrow, columns, labels, tuple(tokenize), tuple(also_dense))
        self.skipped = list(self.features.skipped)
        self.row_groups = [RowGroup(p, os.path.relpath(p, out), g, f.metadata.row_group(g).num_rows, _stat(p))
                           for p in paths for f in [pq.ParquetFile(p)] for g in range(f.num_row_groups)]
        self.batch_requests, self.batch_impressions = batch_requests, batch_impressions
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = _default_rank(rank, world_size)
        self.split, self.eval_percent = split, eval_percent
        self.id_buckets, self.max_list_length, self.dense_dtype = id_buckets, max_list_length, dense_dtype
        self.exploded = exploded
        self.keep_together = list(keep_together)
        for folder, m in with_shards:
            clustered = list(m.options.get("cluster_by") or [])
            if self.keep_together and clustered[:len(self.keep_together)] != self.keep_together:
                raise UsageProblem(f"keep_together={self.keep_together} needs an output clustered by them first "
                                   f"({folder} is clustered by {clustered or 'nothing'}); convert with "
                                   + " ".join(f"--cluster-by {c}" for c in self.keep_together))

    @property
    def requests(self) -> int:
        """Requests in the output (before any split)."""
        return sum(g.rows for g in self.row_groups)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose shuffle to use (before iterating; call it in every rank)."""
        self.epoch = epoch

    def segments(self, worker: int = 0, workers: int = 1, rank: int | None = None) -> list[Segment]:
        """What (this rank, or `rank`; `worker` of `workers`) reads this epoch, in order."""
        groups = list(self.row_groups)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(groups))
            groups = [groups[i] for i in order]
        rank = self.rank if rank is None else rank
        return split_runs(groups, self.world_size * workers, rank * workers + worker)

    def __iter__(self) -> Iterator[RequestBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        cap = self.batches_per_rank(workers)[worker] if self.world_size > 1 else None
        tables = self._batches(self._tables(self.segments(worker, workers)))
        for table in itertools.islice(tables, cap):
            batch = collate(table, self.features, self.id_buckets, self.max_list_length, self.dense_dtype)
            yield batch.exploded() if self.exploded else batch

    def batches_per_rank(self, workers: int = 1) -> list[int]:
        """How many batches each DataLoader worker of every rank yields this epoch: the fewest that worker
        has on any rank, so all ranks yield the same number (a DDP step per batch never waits on a rank
        that ran out). Counted without the data when batches close by request count over all requests,
        else by reading the key and lengths columns through the same split, shuffle and cuts. A rank that
        would get no batch at all is an error."""
        counts = [[self._count(rank, worker, workers) for worker in range(workers)]
                  for rank in range(self.world_size)]
        empty = next((rank for rank, c in enumerate(counts) if not sum(c)), None)
        if empty is not None:
            raise UsageProblem(f"rank {empty} of world_size {self.world_size} gets no batch ({self.requests:,} "
                               f"requests in {self.out}); use fewer ranks or workers, or smaller batches")
        return [min(c[worker] for c in counts) for worker in range(workers)]

    def _count(self, rank: int, worker: int, workers: int) -> int:
        segments = self.segments(worker, workers, rank)
        if self.split == "all" and self.batch_impressions is None:
            assert self.batch_requests is not None
            return -(-sum(s.stop - s.start for s in segments) // self.batch_requests)
        light = [self.features.lengths_from]
        return sum(1 for _ in self._batches(self._tables(segments, light)))

    def _tables(self, segments: list[Segment], only: list[str] | None = None) -> Iterator[pa.Table]:
        files: dict[str, pq.ParquetFile] = {}
        key = list(self.features.key) if self.split != "all" else []  # the split is decided by the key
        together = self.keep_together if self.shuffle else []
        columns = list(dict.fromkeys([*key, *together, *(only if only is not None else self.features.columns)]))
        for s in segments:
            g = s.group
            if g.path not in files:
                if _stat(g.path) != g.stat:
                    raise RoologError(f"{g.path}: the shard changed after the dataset checked it (a new convert "
                                      "published into the output?); make the dataset again")
                files[g.path] = pq.ParquetFile(g.path)
            present = [c for c in columns if c in files[g.path].schema_arrow.names]  # a partition may lack some
            table = files[g.path].read_row_group(g.index, columns=present).slice(s.start, s.stop - s.start)
            if len(present) < len(columns):
                table = self._absent_as_null(table, columns)
            table = conform(table, pa.schema([self.arrow.field(c) for c in columns]))
            if self.shuffle:
                seed = [self.seed, self.epoch, xxhash.xxh32_intdigest(g.name.encode()), g.index, s.start]
                table = table.take(_shuffled(table, together, np.random.default_rng(seed)))
            if self.split != "all":
                held_out = in_eval_split(table, self.features.key, self.eval_percent)
                table = table.filter(pa.array(held_out if self.split == "eval" else ~held_out))
            yield table

    def _absent_as_null(self, table: pa.Table, columns: list[str]) -> pa.Table:
        """A partition's rows with the columns it lacks: a null per request, or a list of nulls as long as
        the request's impressions for an impression-level one."""
        lengths = request_lengths(table, self.features.lengths_from)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())
        impression = {*self.features.impression_ids, *self.features.impression_dense, *self.features.labels}
        for name in columns:
            if name not in table.column_names:
                t = self.arrow.field(name).type
                column = (pa.ListArray.from_arrays(offsets, pa.nulls(int(lengths.sum()), t.value_type), type=t)
                          if name in impression else pa.nulls(table.num_rows, t))
                table = table.append_column(self.arrow.field(name), column)
        return table

    def _batches(self, tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
        """Tables of whole batches (see batch_requests, batch_impressions); the rest carried to the next."""
        rest: pa.Table | None = None
        for table in tables:
            table = pa.concat_tables([rest, table]) if rest is not None and rest.num_rows else table
            cuts = batch_cuts(request_lengths(table, self.features.lengths_from), self.batch_requests,
                              self.batch_impressions)
            for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                yield table.slice(a, b - a)
            rest = table.slice(cuts[-1])
        if rest is not None and rest.num_rows:
            yield rest


def _shuffled(table: pa.Table, together: list[str], rng: np.random.Generator) -> np.ndarray:
    """A permutation of the table's rows; with `together`, of its runs of rows equal in those columns (each
    run kept whole and in order)."""
    if not together:
        return rng.permutation(table.num_rows)
    n = table.num_rows
    differs = np.zeros(max(n - 1, 0), dtype=bool)
    for name in together:
        differs |= adjacent_differs(table.column(name))
    starts = np.concatenate([[0], np.flatnonzero(differs) + 1]) if n else np.zeros(0, np.int64)
    lengths = np.diff(np.append(starts, n))
    order = rng.permutation(len(starts))
    return _ranges(starts[order], lengths[order])


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The row numbers of the ranges [start, start + length), one after the other."""
    offsets = offsets_from_lengths(lengths)
    return np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])


def batch_cuts(lengths: np.ndarray, batch_requests: int | None, batch_impressions: int | None) -> list[int]:
    """Starts of the batches that are complete within these requests, and where the incomplete rest begins:
    a batch is complete at `batch_requests` requests, or when the next request would take it past
    `batch_impressions` impressions."""
    ends = np.cumsum(lengths)
    cuts, start, n = [0], 0, len(lengths)
    while start < n:
        stop = start + batch_requests if batch_requests is not None else n + 1  # n + 1: not decided here
        if batch_impressions is not None:
            base = int(ends[start - 1]) if start else 0
            fits = int(np.searchsorted(ends, base + batch_impressions, side="right"))  # requests [start, fits)
            if fits < n:  # request `fits` would take the batch past batch_impressions
                stop = min(stop, max(fits, start + 1))
        if stop > n:
            break  # requests yet to come decide where this batch ends
        cuts.append(stop)
        start = stop
    return cuts
