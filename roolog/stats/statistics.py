"""`roolog stats` and `roolog infer-schema`: how much duplication a log holds, before and after converting.

On raw logs, the rows go through the same grouping pipeline as `convert` (bounded memory, exact), but
nothing is written: each column's level, how many requests it varies in, its bytes at impression and at
request level, and an on-disk estimate from a sample of whole requests written both ways. On a converted
output, only the manifests and the Parquet footers are read.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import RoologError, UsageProblem
from ..group.figures import LengthHistogram, ratio
from ..group.grouper import N_COL, null_keys_dropped
from ..group.inverse import impression_rows
from ..group.ordering import is_cluster_type
from ..group.pipeline import RequestPipeline
from ..group.schema import Levels, LogSchema, check_key_and_order, label_like
from ..group.values import adjacent_differs
from ..log import bar
from ..read.arrow_types import parse_type
from ..read.inputs import staged
from ..read.sources import ReadOptions, Source, resolve_inputs
from ..version import __version__
from ..write.anatomy import written_bytes
from ..write.checks import check_shards
from ..write.encodings import choose_encodings, writer_settings
from ..write.manifest import LEDGER, MANIFEST, PartitionedManifest, UnitManifest, read_manifest, read_report
from ..write.outdir import reading

SAMPLE_REQUESTS = 10_000  # whole requests written both ways for the on-disk estimate


@dataclass
class _ColumnStats:
    varying: int = 0  # requests in which the column holds more than one value
    request_bytes: int = 0  # Arrow bytes at the level the column ends at
    position_base: set[int] = field(default_factory=lambda: {0, 1})  # bases it could be a position from
    binary: bool = True  # only 0 and 1 (or false and true) and nulls: a label candidate


def _varying_requests(lists: pa.Array) -> int:
    """How many rows of a list column hold more than one distinct value (exactly, null is a value)."""
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    offsets = offsets - offsets[0]
    differs = adjacent_differs(values)
    if len(differs):
        differs[offsets[1:-1] - 1] = False  # the first value of a request is compared with nothing before it
    row_of = np.searchsorted(offsets, np.flatnonzero(differs) + 1, side="right") - 1
    return len(np.unique(row_of))


def _position_bases(lists: pa.Array, bases: set[int]) -> set[int]:
    """The bases b for which every request's values are exactly b, b+1, ..., b+n-1 in some order."""
    if not bases or not pa.types.is_integer(lists.type.value_type) or lists.values.null_count:
        return set()
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    row = np.repeat(np.arange(len(lengths)), lengths)
    ordered = values[np.lexsort((values, row))]
    rank = np.arange(len(values)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    return {b for b in bases if np.array_equal(ordered, rank + b)}


def _only_zero_and_one(lists: pa.Array) -> bool:
    values = lists.flatten()
    t = values.type
    if pa.types.is_boolean(t) or values.null_count == len(values):
        return True
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return False
    return bool(pc.all(pc.is_in(values.drop_null(), pa.array([0, 1], t))).as_py())


def _histogram(hist: LengthHistogram) -> list[dict]:
    """Requests per power-of-two bucket of impressions per request: 1, 2-3, 4-7, ..."""
    counts = hist.counts
    out, lo = [], 1
    while lo < len(counts):
        hi = lo * 2 - 1
        out.append({"from": lo, "to": hi, "requests": int(counts[lo:hi + 1].sum())})
        lo *= 2
    return out


def stats_raw(inputs: list[str], key: tuple[str, ...], order_by: str | None = None,
              read: ReadOptions | None = None, memory_limit: int = 1 << 30, progress: bool = False,
              drop_null_keys: bool = False) -> dict:
    """Dedup statistics of raw impression logs; writes nothing but temporary spill files."""
    read = read or ReadOptions()
    listed = resolve_inputs(list(inputs), read.input_format, storage=read.storage_options)
    with tempfile.TemporaryDirectory(prefix="roolog-stats-") as tmp, \
            staged(listed, os.path.join(tmp, "objects"), progress) as files, Source(files, read, tmp) as source:
        check_key_and_order(source.schema, tuple(key), order_by)
        columns = [n for n in source.schema.names if n not in key]
        pipeline = RequestPipeline(source.schema, tuple(key), order_by, Levels(request=columns, impression=[]),
                                   RequestPipeline.spill_dir(tmp, None), 1, memory_limit)
        rows = dropped = 0
        with bar(source.total_bytes, "reading", "B", progress, unit_scale=True) as pbar:
            for sb in source.batches():
                batch, n_null = null_keys_dropped(sb, tuple(key), drop_null_keys)
                dropped += n_null
                rows += batch.num_rows
                pipeline.feed(batch, sb.where, (sb.path, sb.piece))
                pbar.update(max(0, sb.bytes_done - pbar.n))
        pipeline.finish_input()
        per_column = {n: _ColumnStats() for n in source.schema.names}
        lengths, sample = LengthHistogram(), []
        sampled = 0
        for runs in pipeline.requests(0):
            lengths.add(runs.column(N_COL).to_numpy())
            for name in source.schema.names:
                col, st = runs.column(name), per_column[name]
                st.request_bytes += col.nbytes
                if name in pipeline.levels.impression:
                    st.varying += _varying_requests(col)
                    st.position_base = _position_bases(col, st.position_base)
                    st.binary = st.binary and _only_zero_and_one(col)
                else:
                    st.position_base, st.binary = set(), False
            if sampled < SAMPLE_REQUESTS:
                sample.append(runs.slice(0, SAMPLE_REQUESTS - sampled).select([*source.schema.names, N_COL]))
                sampled += sample[-1].num_rows
        estimate = _on_disk_estimate(sample, source.schema, pipeline.levels)
    requests = int(lengths.counts.sum())
    report = _raw_report(files, source.schema, tuple(key), pipeline, per_column, lengths, requests, rows, dropped,
                         estimate)
    report["cluster_suggestion"] = _cluster_suggestion(sample, pipeline.levels)
    return report


def _on_disk_estimate(sample: list[pa.RecordBatch], schema: pa.Schema, levels: Levels) -> dict:
    """Write the sampled requests flat (one row per impression, pyarrow's defaults) and grouped (roolog's
    per-column encodings), zstd-3 both, and compare."""
    if not sample:
        return {"sample_requests": 0, "sample_impressions": 0, "flat_bytes": 0, "grouped_bytes": 0, "ratio": None,
                "compression": "zstd-3", "estimate": True}
    flat = pa.Table.from_batches([impression_rows(b, schema, set(levels.impression), N_COL) for b in sample])
    grouped = pa.Table.from_batches(sample)
    if levels.impression:  # the impression count is implied by the lists, as in convert's shards
        grouped = grouped.drop_columns([N_COL])
    sizes = {}
    settings = {"flat": None, "grouped": choose_encodings(grouped, 3)}  # the flat file as pyarrow writes it
    for name, table in (("flat", flat), ("grouped", grouped)):
        sink = io.BytesIO()
        pq.write_table(table, sink, **writer_settings(settings[name], 3))
        sizes[name] = sink.tell()
    return {"sample_requests": grouped.num_rows, "sample_impressions": flat.num_rows, "flat_bytes": sizes["flat"],
            "grouped_bytes": sizes["grouped"], "ratio": ratio(sizes["flat"], sizes["grouped"]),
            "compression": "zstd-3", "estimate": True}


CLUSTER_PAYS = 0.9  # a cluster column is suggested when it makes the sample's shards at most this share


def _cluster_suggestion(sample: list[pa.RecordBatch], levels: Levels) -> dict | None:
    """The request-level column that would pay most as --cluster-by: of the id-like ones whose values repeat
    across the sampled requests (a user or session id: at most half as many values as requests), the one
    whose sample, written as convert writes it but ordered by that column, is smallest; None when none
    makes it at least a tenth smaller."""
    if not sample:
        return None
    grouped = pa.Table.from_batches(sample)
    candidates = []
    for name in levels.request:
        col = grouped.column(name)
        if is_cluster_type(col.type) and 0 < (distinct := len(pc.unique(col))) <= grouped.num_rows // 2:
            candidates.append((distinct, name))
    if not candidates:
        return None
    table = grouped.drop_columns([N_COL]) if levels.impression else grouped
    settings = choose_encodings(table, 3)

    def size(t: pa.Table) -> int:
        sink = io.BytesIO()
        pq.write_table(t, sink, **writer_settings(settings, 3))
        return sink.tell()

    before = size(table)
    best = None
    for distinct, name in sorted(candidates)[:3]:  # the three with the fewest values (stable: ties by name)
        after = size(table.take(pc.sort_indices(table.column(name))))  # (a stable sort: input order within)
        if after <= CLUSTER_PAYS * before and (best is None or after < best["clustered_bytes"]):
            best = {"column": name, "distinct_in_sample": distinct, "sample_requests": table.num_rows,
                    "grouped_bytes": before, "clustered_bytes": after, "ratio": ratio(before, after),
                    "compression": "zstd-3", "estimate": True}
    return best


def _raw_report(files, schema, key, pipeline, per_column, lengths, requests, rows, dropped, estimate) -> dict:
    levels = pipeline.levels
    columns = []
    for index, f in enumerate(schema):
        st = per_column[f.name]
        level = "key" if f.name in key else ("request" if f.name in levels.request else "impression")
        before = pipeline.input_bytes[f.name]
        columns.append({
            "name": f.name, "index": index, "type": str(f.type), "level": level,
            "varying_requests": st.varying, "varying_share": round(st.varying / requests, 6) if requests else 0.0,
            "logical_bytes_impression": before, "logical_bytes_request": st.request_bytes,
            "dedup_ratio": ratio(before, st.request_bytes), "saved_bytes": before - st.request_bytes,
            "position_base": min(st.position_base) if st.position_base else None, "binary": st.binary,
        })
    columns.sort(key=lambda c: c["saved_bytes"], reverse=True)
    before = sum(c["logical_bytes_impression"] for c in columns)
    after = sum(c["logical_bytes_request"] for c in columns)
    summary = lengths.summary() | {"p90": lengths.quantile(0.9) if requests else 0}
    return {
        "kind": "raw",
        "roolog_version": __version__,
        "inputs": [{"path": f.recorded_path, "bytes": f.size} for f in files],
        "key": list(key),
        "rows": rows,
        "requests": requests,
        "null_key_rows_dropped": dropped,
        "impressions_per_request": {k: summary[k] for k in ("min", "median", "mean", "p90", "p99", "max")},
        "histogram": _histogram(lengths),
        "columns": columns,
        "totals": {"logical_bytes_impression": before, "logical_bytes_request": after,
                   "dedup_ratio": ratio(before, after), "saved_bytes": before - after,
                   "input_bytes": sum(f.size for f in files)},
        "on_disk_estimate": estimate,
    }


def stats_output(out: str) -> dict:
    """Statistics of a converted OUT from its manifests and Parquet footers, every shard checked first
    against its manifest (size and xxh64)."""
    with reading(out):
        return _output_stats(out, check_shards(out))


def _output_stats(out: str, found: list[tuple[str, UnitManifest]]) -> dict:
    units: list[dict] = []
    for folder, manifest in found:
        report = read_report(folder)
        disk = written_bytes(folder, [s.file for s in manifest.shards], manifest.encodings,
                             manifest.options["compression_level"])
        spec = manifest.schema
        level = {c: "request" for c in spec.request} | {c: "impression" for c in spec.impression}
        level |= {c: "key" for c in spec.key}
        input_bytes = sum(i.bytes for i in manifest.inputs)
        totals = manifest.totals
        units.append({
            "partition": None if folder == out else os.path.basename(folder),
            "requests": totals.requests, "impressions": totals.impressions, "shards": totals.shards,
            "bytes": totals.bytes, "input_bytes": input_bytes, "storage_ratio": ratio(input_bytes, totals.bytes),
            "columns": [{"name": n, "level": level.get(n, "count"), "compressed_bytes": b.compressed,
                         "uncompressed_bytes": b.uncompressed, "values_bytes": b.values, "levels_bytes": b.levels,
                         "page_header_bytes": b.page_headers, "footer_bytes": b.footer}
                        for n, b in disk.columns.items()],
            "file_footer_bytes": disk.file_footer, "other_bytes": disk.other,
            "report": report,
        })
    total = {k: sum(u[k] for u in units) for k in ("requests", "impressions", "shards", "bytes", "input_bytes")}
    top = read_manifest(out)
    partitioned = top if isinstance(top, PartitionedManifest) else None
    return {"kind": "output", "roolog_version": __version__, "output": out,
            "partition_by": partitioned.partition_by if partitioned else None,
            "partitions": units, "totals": total | {"storage_ratio": ratio(total["input_bytes"], total["bytes"])},
            "cross_partition_requests": partitioned.cross_partition_requests if partitioned else 0}


def stats(paths: list[str], key: tuple[str, ...] = (), **options) -> dict:
    """A converted output (one folder roolog wrote) or raw logs (anything else)."""
    if len(paths) == 1 and (os.path.isfile(os.path.join(paths[0], MANIFEST))
                            or os.path.isfile(os.path.join(paths[0], LEDGER))):
        return stats_output(paths[0])  # an unfinished output is an error there, never read as raw logs
    return stats_raw(paths, key, **options)


def infer_schema(report: dict) -> tuple[LogSchema, dict[str, str]]:
    """A schema from raw stats, with a comment per column, and order_by/labels suggestions."""
    if report["kind"] != "raw":
        raise RoologError("infer-schema reads raw logs; a converted output already has its schema in _manifest.json")
    by_name = {c["name"]: c for c in report["columns"]}
    order = [c["name"] for c in sorted(report["columns"], key=lambda c: c["index"])]  # input order
    requests = report["requests"]
    comments, request, impression = {}, [], []
    for name in order:
        c = by_name[name]
        if c["level"] == "request":
            request.append(name)
            comments[name] = "request-level"
        elif c["level"] == "impression":
            impression.append(name)
            share = c["varying_share"]
            comments[name] = (f"impression-level: varies in {c['varying_requests']:,} of {requests:,} requests"
                              + (" (nearly constant)" if share < 0.05 else ""))
    positions = [n for n in impression if by_name[n]["position_base"] is not None]
    order_by = next((n for n in positions if "pos" in n.lower() or "rank" in n.lower()), positions[0] if positions
                    else None)
    if order_by:
        comments[order_by] += f"; looks like a {by_name[order_by]['position_base']}-based position: order_by"
    labels = [n for n in impression if _looks_like_label(n, by_name[n])]
    types = tuple((n, by_name[n]["type"]) for n in order if _pins(by_name[n]["type"]))
    cluster = report.get("cluster_suggestion")
    if cluster:
        comments[cluster["column"]] += (f"; repeats across requests: cluster_by (the sample's shards "
                                        f"x{cluster['ratio']} smaller)")
    return LogSchema(tuple(report["key"]), order_by, tuple(request), tuple(impression), tuple(labels),
                     types, (cluster["column"],) if cluster else ()), comments


def _pins(type_text: str) -> bool:
    """Whether a type seen is worth pinning in [types]: one parse_type reads back (not null: no value seen)."""
    try:
        return type_text != "null" and str(parse_type(type_text)) == type_text
    except UsageProblem:
        return False


def _looks_like_label(name: str, column: dict) -> bool:
    return label_like(name) and column["binary"]
