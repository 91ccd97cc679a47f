"""What a unit's shards hold, and the steps from grouped requests to a shard that both engines share.

    rows --route_rows--> units;  requests (run batches) --output_layout--> shard rows --write_shard--> shard

The shards hold the input's columns (less the partition column, which lives in the folder's name), in the
input's order, impression-level ones as lists, plus COUNT_COLUMN when no column is impression-level. The
Parquet encodings, the footer and the order of requests in a shard are chosen on the first requests
(`choose_settings` on `sample_requests`), so both engines choose alike.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..group.figures import LengthHistogram, add_column_bytes
from ..group.grouper import N_COL, Grouping
from ..group.keys import sortable_key
from ..group.schema import label_like
from ..group.values import python_value, row_bytes
from ..read.inputs import HIVE_NULL
from ..version import __version__
from .encodings import (
    REQUEST_ORDER,
    SMALL_INPUT_BYTES,
    choose_encodings,
    choose_request_order,
    footer_settings,
)
from .manifest import COUNT_COLUMN, FOOTER_KEY, MANIFEST_FORMAT, ShardRecord
from .shards import ShardWriter

SAMPLE_REQUESTS, SAMPLE_BYTES = 20_000, 8 << 20  # the requests Parquet encodings are chosen on

RowsToShard = Callable[[pa.RecordBatch], pa.RecordBatch]


def shard_file(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def output_layout(grouping: Grouping, partition: str | None = None) -> tuple[pa.Schema, RowsToShard]:
    """The shards' schema under the final levels, and the function that turns run batches into shard rows
    (the input's columns, less the partition column that lives in the folder's name, plus the impressions
    per request when no column is impression-level). The schema's metadata is roolog's footer record."""
    names = [n for n in grouping.schema.names if n != partition]
    with_count = not grouping.levels.impression
    run_schema = grouping.run_schema()
    levels = grouping.levels
    footer = {"roolog_version": __version__, "manifest_format": MANIFEST_FORMAT, "key": list(grouping.key),
              "order_by": grouping.order_by, "request": [c for c in levels.request if c != partition],
              "impression": [c for c in names if c in levels.impression],
              "count_column": COUNT_COLUMN if with_count else None, "partition_column": partition}
    if levels.cluster:  # (only then: shards made without it keep their bytes)
        footer["cluster_by"] = list(levels.cluster)
    out_schema = pa.schema([run_schema.field(n) for n in names]
                           + ([pa.field(COUNT_COLUMN, pa.int64())] if with_count else []),
                           metadata={FOOTER_KEY: json.dumps(footer).encode()})

    def output(runs: pa.RecordBatch) -> pa.RecordBatch:
        batch = runs.select(names)
        return batch.append_column(COUNT_COLUMN, runs.column(N_COL)) if with_count else batch

    return out_schema, output


def sample_requests(shards: Iterable[Iterable[pa.RecordBatch]], output: RowsToShard, schema: pa.Schema) -> pa.Table:
    """The first requests of the output (the run batches of each shard, in shard order), up to
    SAMPLE_REQUESTS, or up to the request that brings them to SAMPLE_BYTES: what the Parquet encodings are
    chosen on. The cut depends on the requests alone, never on how they were batched."""
    batches, requests, size = [], 0, 0
    for runs_of_shard in shards:
        for runs in runs_of_shard:
            batch = output(runs.slice(0, SAMPLE_REQUESTS - requests))
            ends = size + np.cumsum(sum((row_bytes(col) for col in batch.columns), np.zeros(batch.num_rows)))
            full = int(np.searchsorted(ends, SAMPLE_BYTES, side="left")) + 1  # requests up to SAMPLE_BYTES
            batches.append(batch.slice(0, full))
            requests += batches[-1].num_rows
            size = int(ends[batches[-1].num_rows - 1]) if batches[-1].num_rows else size
            if requests >= SAMPLE_REQUESTS or size >= SAMPLE_BYTES:
                return pa.Table.from_batches(batches, schema=schema)
    return pa.Table.from_batches(batches, schema=schema)


IMPRESSIONS_ORDER = "impressions"  # the request order by number of impressions (else a timestamp column's name)


def choose_settings(grouping: Grouping, out_schema: pa.Schema, sample: pa.Table, compression_level: int,
                    input_bytes: int) -> dict:
    """The shards' writer settings chosen on the sample (roolog.write.encodings): each column's encoding and
    zstd level, the footer's statistics and schema, and (without --cluster-by, whose order is given) the
    order of requests inside a shard, under REQUEST_ORDER. `input_bytes`: the size of the inputs read."""
    settings = choose_encodings(sample, compression_level, small=input_bytes <= SMALL_INPUT_BYTES)
    settings |= footer_settings(sample, statistics_columns(grouping, out_schema))
    if not grouping.levels.cluster:
        settings[REQUEST_ORDER] = choose_request_order(sample, settings, compression_level,
                                                       order_candidates(grouping, sample))
    return settings


def statistics_columns(grouping: Grouping, out_schema: pa.Schema) -> list[str]:
    """The columns whose footer statistics readers use: the key and request-level scalars (filters), and
    0/1-typed impression lists named like a label (roolog reads their min and max to suggest labels)."""
    def scalar(t: pa.DataType) -> bool:
        return not (pa.types.is_nested(t) or pa.types.is_dictionary(t))

    impression = set(grouping.levels.impression)
    return [f.name for f in out_schema if (f.name not in impression and scalar(f.type))
            or (f.name in impression and label_like(f.name) and _zero_one_type(f.type.value_type))]


def _zero_one_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_boolean(t)


def order_candidates(grouping: Grouping, sample: pa.Table) -> dict[str, pa.Array]:
    """The request orders worth trying, each as a sort key per sampled request: by number of impressions,
    and by each request-level timestamp column."""
    names = sample.column_names
    lengths = next((pc.list_value_length(sample.column(c)) for c in names if c in grouping.levels.impression),
                   sample.column(COUNT_COLUMN) if COUNT_COLUMN in names else None)
    candidates = {} if lengths is None else {IMPRESSIONS_ORDER: lengths}
    for name in names:
        if name in grouping.levels.request and pa.types.is_timestamp(sample.schema.field(name).type):
            candidates[name] = sample.column(name)
    return candidates


def request_order(settings: dict) -> tuple[str, ...]:
    """The run-batch columns a shard's requests are ordered by (then input position); () for input order."""
    chosen = settings.get(REQUEST_ORDER)
    return () if chosen is None else ((N_COL,) if chosen == IMPRESSIONS_ORDER else (chosen,))


def partition_value(shards: Iterable[Iterable[pa.RecordBatch]], column: str | None) -> str | None:
    """A partition column's one value, exactly, as base64 Arrow IPC (manifest.PartitionValue.value), taken
    from the first request of the unit's shards; None when the unit is not a partition or holds no rows."""
    if column is None:
        return None
    for runs_of_shard in shards:
        for runs in runs_of_shard:
            if runs.num_rows:
                one = pa.record_batch([runs.column(column).slice(0, 1)], names=[column])
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, one.schema) as writer:
                    writer.write_batch(one)
                return base64.b64encode(sink.getvalue().to_pybytes()).decode()
    return None


def write_shard(writer: ShardWriter, runs: Iterable[pa.RecordBatch], output: RowsToShard, lengths: LengthHistogram,
                output_bytes: dict[str, int]) -> ShardRecord:
    """One shard from its run batches (in input order); adds to the lengths and per-column bytes."""
    for batch in runs:
        n = batch.column(N_COL).to_numpy()
        lengths.add(n)
        rows = output(batch)
        add_column_bytes(output_bytes, rows)
        writer.write(rows, int(n.sum()))
    return writer.close()


def partition_name(column: str, value) -> str:
    """The folder of a partition: col=value, both percent-encoded (null is Hive's __HIVE_DEFAULT_PARTITION__;
    the text "__HIVE_DEFAULT_PARTITION__" itself gets its first '_' encoded, so the two stay apart)."""
    text = HIVE_NULL if value is None else urllib.parse.quote(str(value), safe="")
    if value is not None and text == HIVE_NULL:
        text = "%5F" + text[1:]
    return f"{urllib.parse.quote(column, safe='')}={text}"


def route_rows(batch: pa.RecordBatch, column: str | None, name: str | None) -> Iterator[tuple[str | None,
                                                                                               pa.RecordBatch]]:
    """(unit name, rows) pairs: all rows to `name`, or rows split by the value of `column`."""
    if column is None:
        yield name, batch
        return
    values = batch.column(column)
    exact = sortable_key(values)  # bit-exact: NaN is one value, 0.0 and -0.0 are two
    for bits in pc.unique(exact):
        mask = exact.is_null() if not bits.is_valid else pc.fill_null(pc.equal(exact, bits), False)
        rows = batch.filter(mask)
        yield partition_name(column, python_value(rows.column(column)[0])), rows
