"""Key hashing: which shard a request goes to, and the exact key forms the grouper sorts and routes by.

The shard of a request is xxh64(canonical key bytes) mod N. Canonical bytes: integers, booleans, dates,
times and timestamps as 8-byte little-endian int64 (uint64 as its own 8 bytes); floats as 8-byte IEEE
float64; strings as UTF-8; binaries as-is; decimals (the integers too big for uint64 that text and JSON
logs hold) as the UTF-8 of their text as Arrow prints it ("-12345678901234567890"). A composite key
hashes the concatenation of its columns' 8-byte LE hashes.

With `--cluster-by COL...` the shard is xxh64 of the cluster columns instead (`cluster_hashes`): the same
canonical bytes, a null value hashing as no bytes at all (xxh64 of b""), several columns combined as a
composite key is.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xxhash

_P1, _P2, _P3, _P4, _P5 = (
    np.uint64(11400714785074694791),
    np.uint64(14029467366897019727),
    np.uint64(1609587929392839161),
    np.uint64(9650029242287828579),
    np.uint64(2870177450012600261),
)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def xxh64_u64(words: np.ndarray) -> np.ndarray:
    """xxh64 (seed 0) of each uint64 taken as 8 little-endian bytes; equals xxhash.xxh64_intdigest."""
    with np.errstate(over="ignore"):
        k = words.astype(np.uint64, copy=False) * _P2
        k = _rotl(k, 31) * _P1
        h = np.full(len(words), _P5 + np.uint64(8), dtype=np.uint64) ^ k
        h = _rotl(h, 27) * _P1 + _P4
        h ^= h >> np.uint64(33)
        h *= _P2
        h ^= h >> np.uint64(29)
        h *= _P3
        h ^= h >> np.uint64(32)
    return h


KEY_TYPE_HINT = "integer, decimal, string, binary, boolean, date, time or timestamp"


def is_key_type(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_boolean(t)
        or pa.types.is_temporal(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or (pa.types.is_dictionary(t) and is_key_type(t.value_type))
    )


def _column_hash(arr: pa.Array) -> np.ndarray:
    t = arr.type
    if pa.types.is_dictionary(t):
        return _column_hash(arr.dictionary_decode())
    if pa.types.is_floating(t):
        return xxh64_u64(arr.cast(pa.float64()).to_numpy(zero_copy_only=False).view(np.uint64))
    if pa.types.is_decimal(t):
        return _column_hash(arr.cast(pa.string()))
    if pa.types.is_temporal(t):  # dates, times, timestamps, durations: their integer storage
        return _column_hash(arr.view(pa.int32() if t.bit_width == 32 else pa.int64()))
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        if pa.types.is_uint64(t):
            ints = arr.to_numpy(zero_copy_only=False).view(np.uint64)
        else:
            ints = arr.cast(pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
        return xxh64_u64(ints)
    digest = xxhash.xxh64_intdigest
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.fromiter((digest(v.encode()) for v in arr.to_pylist()), dtype=np.uint64, count=len(arr))
    return np.fromiter((digest(v) for v in arr.to_pylist()), dtype=np.uint64, count=len(arr))


def sortable_key(arr: pa.Array) -> pa.Array:
    """A key column in a form whose sort puts bit-identical keys next to each other (0.0 apart from -0.0)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return sortable_key(arr.dictionary_decode())
    if pa.types.is_floating(t):
        return arr.cast(pa.float64()).view(pa.int64())
    return arr


def key_hashes(columns: list[pa.Array]) -> np.ndarray:
    """xxh64 of each row's key (one or more non-null columns) as uint64."""
    return _combined([_column_hash(c) for c in columns])


NULL_HASH = np.uint64(xxhash.xxh64_intdigest(b""))


def _nullable_hash(arr: pa.Array) -> np.ndarray:
    """_column_hash, with NULL_HASH for null values."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not arr.null_count:
        return _column_hash(arr)
    valid = arr.drop_null()
    if not len(valid):
        return np.full(len(arr), NULL_HASH, dtype=np.uint64)
    hashes = _column_hash(arr.fill_null(valid[0]))
    hashes[arr.is_null().to_numpy(zero_copy_only=False)] = NULL_HASH
    return hashes


def cluster_hashes(columns: list[pa.Array]) -> np.ndarray:
    """xxh64 of each row's cluster value (one or more columns, nulls allowed) as uint64."""
    return _combined([_nullable_hash(c) for c in columns])


def _combined(hashes: list[np.ndarray]) -> np.ndarray:
    if len(hashes) == 1:
        return hashes[0]
    parts = np.stack(hashes, axis=1).astype("<u8")
    digest = xxhash.xxh64_intdigest
    return np.fromiter((digest(row.tobytes()) for row in parts), dtype=np.uint64, count=len(parts))
