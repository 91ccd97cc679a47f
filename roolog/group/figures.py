"""The storage-savings figures: what a run read, what it wrote, and where the bytes went.

Logical bytes are Arrow's in-memory sizes (what a trainer moves); on-disk bytes are read from the shards
themselves (what storage pays; where they go: roolog.write.anatomy). The two differ a lot, because Parquet's
dictionary/RLE encoding already absorbs much of the repetition on disk: the report keeps them apart on
purpose. (Their text: roolog.stats.report.)

They live in the group stage because counting starts there (the Arrow bytes of each batch as it is grouped);
write, run and stats add to them and read them, and none of these may be imported by grouping.
"""

from __future__ import annotations

import numpy as np


def add_column_bytes(totals: dict[str, int], batch) -> None:
    """Add each column's Arrow bytes in `batch` to `totals` (a running count per column name)."""
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        totals[name] = totals.get(name, 0) + col.nbytes


class LengthHistogram:
    """Exact impressions-per-request statistics from a count per length (bounded memory)."""

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, lengths: np.ndarray) -> None:
        if len(lengths):
            self.add_counts(np.bincount(lengths))

    def add_counts(self, counts: np.ndarray) -> None:
        """Merge another histogram's counts (requests per length)."""
        if len(counts) > len(self.counts):
            self.counts = np.pad(self.counts, (0, len(counts) - len(self.counts)))
        self.counts[: len(counts)] += counts

    def quantile(self, q: float) -> int:
        """Nearest-rank quantile: the smallest length with at least q of the requests at or below it."""
        cum = np.cumsum(self.counts)
        return int(np.searchsorted(cum, max(1, int(np.ceil(q * cum[-1])))))

    def summary(self) -> dict:
        total = int(self.counts.sum())
        if total == 0:
            return {"min": 0, "median": 0, "mean": 0.0, "p99": 0, "max": 0}
        nonzero = np.flatnonzero(self.counts)
        mean = float((np.arange(len(self.counts)) * self.counts).sum() / total)
        return {"min": int(nonzero[0]), "median": self.quantile(0.5), "mean": round(mean, 3),
                "p99": self.quantile(0.99), "max": int(nonzero[-1])}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None
