"""prefetch: same items in the same order, errors raised in the consumer, no thread left behind."""

import threading

import pytest

from roolog.read.prefetch import prefetch


def test_same_items_in_order():
    assert list(prefetch(iter(range(1000)), depth=2)) == list(range(1000))


def test_an_error_in_the_producer_reaches_the_consumer():
    def items():
        yield 1
        raise ValueError("bad row 7")

    got = []
    with pytest.raises(ValueError, match="bad row 7"):
        for x in prefetch(items()):
            got.append(x)
    assert got == [1]


def test_stopping_early_stops_the_thread():
    def endless():
        n = 0
        while True:
            yield n
            n += 1

    gen = prefetch(endless(), depth=1)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert not any(t.name == "roolog-prefetch" and t.is_alive() for t in threading.enumerate())
