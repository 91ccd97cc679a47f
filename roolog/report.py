"""The storage-savings report: what the run read, what it wrote, and where the bytes went.

Logical bytes are Arrow's in-memory sizes (what a trainer moves); on-disk bytes come from the Parquet
footers (what storage pays). The two differ a lot, because Parquet's dictionary/RLE encoding already
absorbs much of the repetition on disk: the report keeps them apart on purpose.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq


class LengthHistogram:
    """Exact impressions-per-request statistics from a count per length (bounded memory)."""

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, lengths: np.ndarray) -> None:
        if len(lengths) == 0:
            return
        counts = np.bincount(lengths)
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


def on_disk_column_bytes(paths: list[str]) -> dict[str, dict[str, int]]:
    """Compressed and uncompressed bytes per top-level column, summed over every shard's row groups."""
    sizes: dict[str, dict[str, int]] = {}
    for path in paths:
        md = pq.ParquetFile(path).metadata
        for rg in range(md.num_row_groups):
            group = md.row_group(rg)
            for c in range(group.num_columns):
                chunk = group.column(c)
                name = chunk.path_in_schema.split(".")[0]
                entry = sizes.setdefault(name, {"compressed": 0, "uncompressed": 0})
                entry["compressed"] += chunk.total_compressed_size
                entry["uncompressed"] += chunk.total_uncompressed_size
    return sizes


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def format_table(rows: list[tuple[str, ...]], text_columns: int = 1) -> list[str]:
    """Aligned columns: the first `text_columns` left-aligned, the numbers after them right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def cell(i: int, value: str) -> str:
        return value.ljust(widths[i]) if i < text_columns else value.rjust(widths[i])

    return ["  ".join(cell(i, v) for i, v in enumerate(r)).rstrip() for r in rows]


def format_summary(report: dict) -> str:
    """A short human summary of a convert run, for stderr."""
    if "partitions" in report:
        return _partitioned_summary(report)
    if report.get("skipped"):
        return "roolog: the output is up to date (same inputs and options); nothing to do (--force redoes it)"
    t = report["totals"]
    ipr = report["impressions_per_request"]
    lines = [
        f"roolog: {t['rows']:,} impressions -> {t['requests']:,} requests in {t['shards']} shard(s), "
        f"{report['wall_seconds']:.1f} s ({report['rows_per_second']:,.0f} rows/s)",
        f"  impressions per request: min {ipr['min']}, median {ipr['median']}, mean {ipr['mean']}, "
        f"p99 {ipr['p99']}, max {ipr['max']}",
        f"  on disk: input {human_bytes(t['input_bytes'])} -> output {human_bytes(t['output_bytes'])} "
        f"(x{t['storage_ratio']}); in memory: {human_bytes(t['logical_bytes_impression'])} -> "
        f"{human_bytes(t['logical_bytes_request'])} (x{t['logical_ratio']})",
    ]
    rows = [("column", "level", "memory before", "memory after", "on disk")]
    for c in report["columns"]:
        rows.append((c["name"], c["level"], human_bytes(c["logical_bytes_impression"]),
                     human_bytes(c["logical_bytes_request"]), human_bytes(c["on_disk_bytes"])))
    lines += ["  " + line for line in format_table(rows, text_columns=2)]
    if report.get("demoted"):
        lines.append(f"  demoted to impression level (varied inside a request): {', '.join(report['demoted'])}")
    if report.get("null_key_rows_dropped"):
        lines.append(f"  rows dropped for a null key: {report['null_key_rows_dropped']:,}")
    return "\n".join(lines)


def _partitioned_summary(report: dict) -> str:
    t = report["totals"]
    lines = [f"roolog: {t['partitions']} partition(s) by {report['partition_by']}: "
             f"{len(report['converted'])} converted, {len(report['skipped'])} up to date; "
             f"{t['impressions']:,} impressions -> {t['requests']:,} requests, {human_bytes(t['bytes'])}"]
    rows = [("partition", "state", "requests", "impressions", "on disk")]
    for p in report["partitions"]:
        rows.append((p["name"], "up to date" if p["skipped"] else "converted", f"{p['requests']:,}",
                     f"{p['impressions']:,}", human_bytes(p["bytes"])))
    lines += ["  " + line for line in format_table(rows, text_columns=2)]
    if report["cross_partition_requests"]:
        lines.append(f"  requests with rows in more than one partition (kept apart): "
                     f"{report['cross_partition_requests']:,}")
    return "\n".join(lines)
