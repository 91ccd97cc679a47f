"""Exact, vectorized operations on Arrow arrays that the grouper and explode share.

"Exact" means bit-exact: 0.0 and -0.0 differ, NaN equals the same NaN, and null is a value of its own.
Dedup that compared floats by `==` would silently turn -0.0 into 0.0.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_UINT_BY_WIDTH = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _validity(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _fixed_width_bits(arr: pa.Array) -> np.ndarray:
    """The value bits of a fixed-width array as unsigned ints, shape (n,) or (n, k)."""
    width = arr.type.bit_width // 8
    data = arr.buffers()[1]
    if data is None:  # all null (or empty): readers may leave the value buffer out
        return np.zeros(len(arr) if width in _UINT_BY_WIDTH else (len(arr), width), dtype=np.uint64)
    if width in _UINT_BY_WIDTH:
        return np.frombuffer(data, dtype=_UINT_BY_WIDTH[width])[arr.offset : arr.offset + len(arr)]
    words = np.frombuffer(data, dtype=np.uint8)[arr.offset * width : (arr.offset + len(arr)) * width]
    return words.reshape(len(arr), width)


def _is_fixed_width(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_temporal(t)
        or pa.types.is_decimal(t)
        or pa.types.is_fixed_size_binary(t)
    ) and t.bit_width % 8 == 0


def _list_offsets(arr: pa.Array) -> np.ndarray:
    if pa.types.is_fixed_size_list(arr.type):
        size = arr.type.list_size
        return (np.arange(len(arr) + 1, dtype=np.int64) + arr.offset) * size
    return arr.offsets.to_numpy().astype(np.int64, copy=False)


def pairwise_differs(arr: pa.Array | pa.ChunkedArray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each j, whether arr[a[j]] and arr[b[j]] differ exactly (nulls are values; floats by bits)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(a) == 0:
        return np.zeros(0, dtype=bool)
    t = arr.type
    if pa.types.is_null(t):
        return np.zeros(len(a), dtype=bool)
    if pa.types.is_dictionary(t):
        return pairwise_differs(arr.dictionary_decode(), a, b)
    if isinstance(t, pa.BaseExtensionType):
        return pairwise_differs(arr.storage, a, b)
    valid = _validity(arr)
    va, vb = valid[a], valid[b]
    both = va & vb
    differs = va != vb
    if not both.any():
        return differs
    if _is_fixed_width(t):
        bits = _fixed_width_bits(arr)
        ne = bits[a] != bits[b]
        if ne.ndim == 2:
            ne = ne.any(axis=1)
        return differs | (both & ne)
    if pa.types.is_boolean(t):
        vals = arr.fill_null(False).to_numpy(zero_copy_only=False)
        return differs | (both & (vals[a] != vals[b]))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_map(t):
        view = _list_bytes_view(arr)
        if view is not None:
            ne = pc.not_equal(view.take(pa.array(a)), view.take(pa.array(b)))
            return differs | (both & ne.to_numpy(zero_copy_only=False))
        return differs | (both & _lists_differ(arr, a, b, both))
    if pa.types.is_struct(t):
        fields_differ = np.zeros(len(a), dtype=bool)
        for child in arr.flatten():
            fields_differ |= pairwise_differs(child, a, b)
        return differs | (both & fields_differ)
    # strings, binaries, views and anything else Arrow can compare for equality
    ai = pa.array(a)
    bi = pa.array(b)
    ne = pc.not_equal(arr.take(ai), arr.take(bi)).fill_null(False).to_numpy(zero_copy_only=False)
    return differs | (both & ne)


def _lists_differ(arr: pa.Array, a: np.ndarray, b: np.ndarray, both: np.ndarray) -> np.ndarray:
    offsets = _list_offsets(arr)
    lengths = np.diff(offsets)
    la, lb = lengths[a], lengths[b]
    result = la != lb
    check = np.flatnonzero(both & ~result & (la > 0))
    if len(check) == 0:
        return result
    n = la[check]
    pair_of_element = np.repeat(np.arange(len(check)), n)
    within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    ea = offsets[a[check]][pair_of_element] + within
    eb = offsets[b[check]][pair_of_element] + within
    element_differs = pairwise_differs(arr.values, ea, eb)
    any_differs = np.bincount(pair_of_element, weights=element_differs, minlength=len(check)) > 0
    result[check] = any_differs
    return result


def adjacent_differs(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Length n-1: whether row i+1 differs exactly from row i (the grouper's hot path)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n < 2:
        return np.zeros(0, dtype=bool)
    t = arr.type
    if pa.types.is_dictionary(t):
        return adjacent_differs(arr.dictionary_decode())
    if isinstance(t, pa.BaseExtensionType):
        return adjacent_differs(arr.storage)
    if _is_fixed_width(t):
        bits = _fixed_width_bits(arr)
        ne = bits[1:] != bits[:-1]
        values_differ = ne.any(axis=1) if ne.ndim == 2 else ne
    elif (view := _list_bytes_view(arr)) is not None:
        values_differ = pc.not_equal(view.slice(0, n - 1), view.slice(1)).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        values_differ = pc.not_equal(arr.slice(0, n - 1), arr.slice(1)).fill_null(False).to_numpy(zero_copy_only=False)
    else:
        idx = np.arange(n - 1)
        return pairwise_differs(arr, idx, idx + 1)
    if arr.null_count == 0:
        return values_differ
    valid = _validity(arr)
    va, vb = valid[:-1], valid[1:]
    return (va != vb) | (va & vb & values_differ)


def adjacent_differs_in(arr: pa.Array | pa.ChunkedArray, perm: np.ndarray | None,
                        block_bytes: int = 4 << 20) -> np.ndarray:
    """adjacent_differs(take(arr, perm)), the rows taken a few MB at a time: a user history per row taken
    whole for a 256 MB pool is hundreds of MB of fresh pages, touched once, where a block stays in cache."""
    if perm is None:
        return adjacent_differs(arr)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    rows = max(1024, int(block_bytes * len(arr) // max(1, arr.nbytes)))
    if len(perm) <= rows:
        return adjacent_differs(take(arr, perm))
    return np.concatenate([adjacent_differs(take(arr, perm[i:i + rows + 1])) for i in range(0, len(perm) - 1, rows)])


def rows_differ(x: pa.Array, y: pa.Array) -> np.ndarray:
    """For each i, whether x[i] and y[i] differ exactly (two arrays of one type and length)."""
    if pa.types.is_dictionary(x.type):  # (two batches' dictionaries may differ)
        x, y = x.dictionary_decode(), y.dictionary_decode()
    if isinstance(x.type, pa.BaseExtensionType):
        x, y = x.storage, y.storage
    if _is_fixed_width(x.type):
        ne = _fixed_width_bits(x) != _fixed_width_bits(y)
        values_differ = ne.any(axis=1) if ne.ndim == 2 else ne
    elif (vx := _list_bytes_view(x)) is not None and (vy := _list_bytes_view(y)) is not None:
        values_differ = pc.not_equal(vx, vy).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(x.type) or pa.types.is_large_string(x.type) or pa.types.is_binary(x.type) \
            or pa.types.is_large_binary(x.type):
        values_differ = pc.not_equal(x, y).fill_null(False).to_numpy(zero_copy_only=False)
    else:
        n = len(x)
        return pairwise_differs(pa.concat_arrays([x, y]), np.arange(n), np.arange(n, 2 * n))
    if x.null_count == 0 and y.null_count == 0:
        return values_differ
    vx, vy = _validity(x), _validity(y)
    return (vx != vy) | (vx & vy & values_differ)


def differs_at(a: pa.Array, ia: np.ndarray, b: pa.Array, ib: np.ndarray, block_bytes: int = 4 << 20) -> np.ndarray:
    """For each j, whether a[ia[j]] and b[ib[j]] differ exactly, the rows taken a few MB at a time (as in
    adjacent_differs_in)."""
    rows = max(1024, int(block_bytes * len(b) // max(1, b.nbytes)))
    parts = [rows_differ(take(a, ia[i:i + rows]), take(b, ib[i:i + rows])) for i in range(0, len(ia), rows)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _is_list_like(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _list_bytes_view(arr: pa.Array) -> pa.Array | None:
    """Lists of non-null fixed-width values seen zero-copy as one binary string per list, so that Arrow's
    memcmp-based string comparison compares whole lists bit for bit. None for other lists."""
    if not _is_list_like(arr.type):
        return None
    values = arr.values
    if not _is_fixed_width(values.type) or values.null_count:  # (list<null> has no value buffer at all)
        return None
    data = values.buffers()[1]
    if data is None or data.size == 0:
        return None  # (no values at all, e.g. only null lists: Arrow refuses a binary view of no data)
    width = values.type.bit_width // 8
    byte_offsets = (_list_offsets(arr) + values.offset) * width
    return pa.Array.from_buffers(pa.large_binary(), len(arr), [None, pa.py_buffer(byte_offsets), data])


def take(arr: pa.Array | pa.ChunkedArray, indices) -> pa.Array:
    """arr.take(indices), with lists of fixed-width values moved as whole byte strings: Arrow's list take
    goes value by value and is several times slower (a 1,000-item history per row makes that the cost)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    indices = indices if isinstance(indices, pa.Array) else pa.array(indices, pa.int64())
    view = _list_bytes_view(arr) if arr.null_count == 0 and not pa.types.is_fixed_size_list(arr.type) else None
    if view is None:
        return arr.take(indices)
    taken = view.take(indices)
    _, byte_offsets, data = taken.buffers()
    width = arr.type.value_type.bit_width // 8
    offsets = np.frombuffer(byte_offsets, dtype=np.int64, count=len(taken) + 1) // width
    if pa.types.is_list(arr.type):
        if offsets[-1] >= 2**31:
            return arr.take(indices)
        offsets = offsets.astype(np.int32)
    values = pa.Array.from_buffers(arr.type.value_type, int(offsets[-1]), [None, data])
    return pa.Array.from_buffers(arr.type, len(taken), [None, pa.py_buffer(offsets)], children=[values])


def take_rows(rows: pa.RecordBatch | pa.Table, indices) -> pa.RecordBatch:
    """rows.take(indices) column by column with `take`, as one record batch."""
    indices = indices if isinstance(indices, pa.Array) else pa.array(indices, pa.int64())
    return pa.RecordBatch.from_arrays([take(c, indices) for c in rows.columns], schema=rows.schema)

def repeat_indices(lengths: np.ndarray) -> pa.Array:
    """[0]*lengths[0] + [1]*lengths[1] + ...: take() with it broadcasts one value per request to its rows."""
    return pa.array(np.repeat(np.arange(len(lengths), dtype=np.int64), lengths))


def row_bytes(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Bytes each row holds in memory (values, not buffers' slack): a batching-independent size."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t, n = arr.type, len(arr)
    if pa.types.is_dictionary(t):
        return row_bytes(arr.indices)
    if isinstance(t, pa.BaseExtensionType):
        return row_bytes(arr.storage)
    if _is_fixed_width(t):
        return np.full(n, t.bit_width // 8, dtype=np.int64)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) + 4
    if _is_list_like(t) or pa.types.is_map(t):
        offsets, child_type = _list_offsets(arr), arr.values.type
        if _is_fixed_width(child_type):
            return np.diff(offsets) * (child_type.bit_width // 8) + 4
        child = np.r_[0, np.cumsum(row_bytes(arr.values))]
        return child[offsets[1:]] - child[offsets[:-1]] + 4
    if pa.types.is_struct(t):
        return sum((row_bytes(c) for c in arr.flatten()), np.zeros(n, dtype=np.int64))
    return np.ones(n, dtype=np.int64)  # booleans, nulls


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def as_list(values: pa.Array, offsets: np.ndarray) -> pa.Array:
    """Zero-copy list<T> view of values cut at offsets (batches are cut by bytes, well below 2**31)."""
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)



def python_value(scalar: pa.Scalar):
    """A scalar as Python shows it in messages and folder names; Arrow's own text where Python has no exact
    equivalent (nanosecond timestamps and durations, which as_py would need pandas for)."""
    try:
        return scalar.as_py()
    except (ValueError, TypeError, ImportError, pa.ArrowException):
        return pc.cast(scalar, pa.string()).as_py()
