"""Exact comparison and key hashing: the primitives losslessness rests on."""

import numpy as np
import pyarrow as pa
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from roolog.group.keys import key_hashes, xxh64_u64
from roolog.group.values import adjacent_differs, adjacent_differs_in, pairwise_differs, take, take_rows

CASES = [
    pa.array([0.0, -0.0, float("nan"), float("nan"), None, None, 1.0]),
    pa.array([[1, 2], [1, 2], [1, 3], None, None, [], [], [1], [1, 2]]),
    pa.array([[1, 2], [1, 2], [3, 4], [3, 4]]),  # equal lengths: the matrix path
    pa.array([[1, None], [1, None], [1, 2], None]),
    pa.array([{"a": 1, "b": "x"}, {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, None]),
    pa.array(["a", "a", None, "b", "b", ""]).dictionary_encode(),
    pa.array([[[1], [2]], [[1], [2]], [[1], [3]]]),
    pa.array([True, True, False, None, None]),
    pa.array([b"x", b"x", b"y"]),
    pa.array([[0.0], [-0.0], [float("nan")], [float("nan")]]),
]


def reference_adjacent(arr: pa.Array) -> list[bool]:
    """Slow but obviously right: compare Python values, floats by their bits."""
    def canon(v):
        if isinstance(v, float):
            return ("f", np.float64(v).view(np.uint64).item())
        if isinstance(v, list):
            return tuple(canon(x) for x in v)
        if isinstance(v, dict):
            return tuple((k, canon(x)) for k, x in v.items())
        return v

    values = [canon(v) for v in arr.to_pylist()]
    return [a != b for a, b in zip(values[:-1], values[1:], strict=True)]


@pytest.mark.parametrize("arr", CASES, ids=range(len(CASES)))
def test_adjacent_differs_is_exact(arr):
    assert adjacent_differs(arr).tolist() == reference_adjacent(arr)
    idx = np.arange(len(arr) - 1)
    assert pairwise_differs(arr, idx, idx + 1).tolist() == reference_adjacent(arr)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.integers(-2, 2), max_size=3)), min_size=2, max_size=12))
def test_list_paths_agree_with_reference(rows):
    arr = pa.array(rows, pa.list_(pa.int64()))
    assert adjacent_differs(arr).tolist() == reference_adjacent(arr)
    sliced = arr.slice(1)
    assert adjacent_differs(sliced).tolist() == reference_adjacent(sliced)


@pytest.mark.parametrize("arr", CASES, ids=range(len(CASES)))
def test_neighbours_in_another_order_compare_block_by_block_as_one(arr):
    """The grouper compares a request's rows in key order a few MB at a time: the blocks overlap by one row,
    so every pair is compared once, the pair across two blocks included (tiny blocks here: 1 byte)."""
    rng = np.random.default_rng(len(arr))
    for _ in range(5):
        perm = rng.permutation(len(arr))
        expected = reference_adjacent(arr.take(pa.array(perm)))
        assert adjacent_differs_in(arr, perm, block_bytes=1).tolist() == expected
        long = np.tile(perm, 700)  # past the 1,024-row floor of a block: several blocks
        expected = reference_adjacent(arr.take(pa.array(long)))
        assert adjacent_differs_in(arr, long, block_bytes=1).tolist() == expected


@pytest.mark.parametrize("arr", CASES + [
    pa.array([[1.5, 2.0], [], [3.0]], pa.large_list(pa.float64())),
    pa.array([[1, 2], [3], [], [4, 5, 6]], pa.list_(pa.int32())).slice(1),  # offset into offsets and values
    pa.array([[], [], []], pa.list_(pa.int64())),  # no values at all
    pa.chunked_array([pa.array([[1], [2, 3]]), pa.array([[4]])]),
], ids=range(len(CASES) + 4))
def test_take_equals_arrows_take(arr):
    """The byte-string fast path for lists gives exactly Arrow's result, for every shape."""
    indices = np.array([2, 0, 0, 1, 2, 1])[np.array([2, 0, 0, 1, 2, 1]) < len(arr)]
    expected = arr.take(pa.array(indices))
    if isinstance(expected, pa.ChunkedArray):
        expected = expected.combine_chunks()
    batch = pa.record_batch({"x": arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr})
    for got in (take(arr, indices), take_rows(batch, indices).column(0)):
        got.validate(full=True)
        assert got.type == expected.type
        both, n = pa.concat_arrays([got, expected]), len(expected)  # equal bit for bit (NaN included)
        assert not pairwise_differs(both, np.arange(n), np.arange(n) + n).any()


def test_vectorized_xxh64_matches_the_library():
    words = np.array([0, 1, 2**63, 2**64 - 1, 12345678901234], dtype=np.uint64)
    expected = [xxhash.xxh64_intdigest(int(w).to_bytes(8, "little")) for w in words]
    assert xxh64_u64(words).tolist() == expected


def test_key_hashes_are_canonical():
    as_int32 = key_hashes([pa.array([1, 2], pa.int32())])
    as_int64 = key_hashes([pa.array([1, 2], pa.int64())])
    assert as_int32.tolist() == as_int64.tolist()
    assert key_hashes([pa.array(["a"])]).tolist() == [xxhash.xxh64_intdigest(b"a")]
    composite = key_hashes([pa.array(["a"]), pa.array([1])])
    parts = np.array([xxhash.xxh64_intdigest(b"a"), xxhash.xxh64_intdigest((1).to_bytes(8, "little"))], "<u8")
    assert composite.tolist() == [xxhash.xxh64_intdigest(parts.tobytes())]
