"""Overlap I/O with work: run an iterator one or two items ahead in a thread.

pyarrow releases the GIL while it decodes and encodes, so on 2 cores reading the next batch while the
current one is grouped (or writing a row group while the next requests are read) uses the second core.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """The same items in the same order, produced by a background thread up to `depth` ahead."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return  # the consumer went away
            put((_END, None))
        except BaseException as err:  # handed to the consumer, raised there
            put((_END, err))

    thread = threading.Thread(target=produce, daemon=True, name="roolog-prefetch")
    thread.start()
    try:
        while True:
            item, err = box.get()
            if item is _END:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
