"""Arrow types by name (`--column-type COL=TYPE`, a schema file's [types]), and which types two sources of
one column may be unified to without losing a value.

Names are pyarrow's own spelling, as `str(type)` prints it: `int64`, `string`, `double` (or `float64`),
`bool`, `date32[day]` (or `date32`), `timestamp[ms]`, `timestamp[us, tz=UTC]`, `decimal128(20, 2)`,
`list<item: int64>` (or `list<int64>`), `large_string`, `binary`, `duration[s]`, `time64[us]`, `null`.

Widening keeps every value exactly: a narrower integer to a wider one of the same signedness (or an
unsigned one to a signed one twice its width; uint64 beside a signed one to decimal128(20, 0)), float32 to float64,
decimals to one with room for both (an integer beside a decimal counts as one of its digits), a timestamp
or duration to a finer unit (same time zone), string to large_string, binary to large_binary,
dictionary-encoded to plain values, null to anything, and the same within lists and structs. Never decimal
to float, never an integer to float, never a wider type to a narrower one.
"""

from __future__ import annotations

import re

import pyarrow as pa

from ..errors import RoologError, UsageProblem

_UNIT_RANK = {"s": 0, "ms": 1, "us": 2, "ns": 3}


_DECIMAL = re.compile(r"(decimal(?:128|256)?)\(\s*(\d+)\s*,\s*(-?\d+)\s*\)\Z")
_TIMESTAMP = re.compile(r"timestamp\[\s*(s|ms|us|ns)\s*(?:,\s*tz\s*=\s*([^\]]+?)\s*)?\]\Z")
_LIST = re.compile(r"(list|large_list)<\s*(?:item\s*:\s*)?(.+)>\Z")
TYPE_EXAMPLES = "string, int64, double, bool, date32, timestamp[ms], decimal128(20, 2), list<int64>"


def parse_type(text: str) -> pa.DataType:
    """The Arrow type a name stands for (the spelling `str(type)` prints); UsageProblem when there is none."""
    name = text.strip()
    m = _DECIMAL.match(name)
    if m:
        kind, precision, scale = m.group(1), int(m.group(2)), int(m.group(3))
        make = pa.decimal256 if kind == "decimal256" or (kind == "decimal" and precision > 38) else pa.decimal128
        try:
            return make(precision, scale)
        except (ValueError, pa.ArrowInvalid) as err:
            raise UsageProblem(f"type {text!r}: {err}") from None
    m = _TIMESTAMP.match(name)
    if m:
        return pa.timestamp(m.group(1), tz=m.group(2))
    m = _LIST.match(name)
    if m:
        item = parse_type(m.group(2))
        return pa.list_(item) if m.group(1) == "list" else pa.large_list(item)
    try:
        return pa.type_for_alias(name)
    except (ValueError, KeyError):
        raise UsageProblem(f"unknown type {text!r}; use an Arrow type name such as {TYPE_EXAMPLES}") from None


def type_name(t: pa.DataType) -> str | None:
    """The name parse_type reads back as `t`, or None for types that have none (structs, maps, ...)."""
    name = str(t)
    try:
        return name if parse_type(name).equals(t) else None
    except UsageProblem:
        return None


def _int_bits(t: pa.DataType) -> tuple[bool, int] | None:
    return (pa.types.is_signed_integer(t), t.bit_width) if pa.types.is_integer(t) else None


def widened(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The narrowest type holding every value of `a` and of `b` exactly, or None when there is none."""
    if a.equals(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_dictionary(a) or pa.types.is_dictionary(b):
        return _widened_dictionary(a, b)
    ia, ib = _int_bits(a), _int_bits(b)
    if ia and ib:
        (sa, wa), (sb, wb) = ia, ib
        if sa == sb:
            return a if wa >= wb else b
        signed, unsigned = (a, b) if sa else (b, a)
        if signed.bit_width > unsigned.bit_width:
            return signed
        if unsigned.bit_width < 64:
            return pa.int64() if unsigned.bit_width == 32 else pa.int32() if unsigned.bit_width == 16 else pa.int16()
        a, b = _as_decimal(a), _as_decimal(b)
    elif (ia and pa.types.is_decimal(b)) or (ib and pa.types.is_decimal(a)):
        a, b = _as_decimal(a), _as_decimal(b)
    if pa.types.is_decimal(a) and pa.types.is_decimal(b):
        scale = max(a.scale, b.scale)
        precision = max(a.precision - a.scale, b.precision - b.scale) + scale
        if precision <= 38:
            return pa.decimal128(precision, scale)
        return pa.decimal256(precision, scale) if precision <= 76 else None
    if pa.types.is_floating(a) and pa.types.is_floating(b):
        return a if a.bit_width >= b.bit_width else b
    for same_kind in (pa.types.is_timestamp, pa.types.is_duration):
        if same_kind(a) and same_kind(b):
            if getattr(a, "tz", None) != getattr(b, "tz", None):
                return None
            return a if _UNIT_RANK[a.unit] >= _UNIT_RANK[b.unit] else b
    for small, large in ((pa.string(), pa.large_string()), (pa.binary(), pa.large_binary())):
        if {str(a), str(b)} == {str(small), str(large)}:
            return large
    for is_list, make in ((pa.types.is_list, pa.list_), (pa.types.is_large_list, pa.large_list)):
        if is_list(a) and is_list(b):
            inner = widened(a.value_type, b.value_type)
            return None if inner is None else make(pa.field(a.value_field.name, inner))
    if pa.types.is_struct(a) and pa.types.is_struct(b) and [f.name for f in a] == [f.name for f in b]:
        fields = [widened(fa.type, fb.type) for fa, fb in zip(a, b, strict=True)]
        return None if None in fields else pa.struct([pa.field(f.name, t) for f, t in zip(a, fields, strict=True)])
    return None


def _as_decimal(t: pa.DataType) -> pa.DataType:
    """An integer type as the scale-0 decimal with as many digits as its largest value; others as they are."""
    if not pa.types.is_integer(t):
        return t
    return pa.decimal128(len(str(2 ** t.bit_width if not pa.types.is_signed_integer(t) else 2 ** (t.bit_width - 1))), 0)


def _widened_dictionary(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """Dictionary-encoded beside plain or otherwise encoded values: decoding loses nothing."""
    va = a.value_type if pa.types.is_dictionary(a) else a
    vb = b.value_type if pa.types.is_dictionary(b) else b
    value = widened(va, vb)
    if value is None or not (pa.types.is_dictionary(a) and pa.types.is_dictionary(b)):
        return value
    index = widened(a.index_type, b.index_type)
    return pa.dictionary(index, value) if index is not None else value


def unify(schemas: list[tuple[str, pa.Schema]], fix: str, absent_ok: bool = False) -> pa.Schema:
    """One schema for several (where, schema) sources with the same columns, widened losslessly; else a
    one-line error naming both places, both types and `fix` (what the user can do; {column} is filled in).
    With `absent_ok` the sources may differ in columns (a table whose columns were added or dropped over
    time): every column of any source, in the order they first appear, absent ones to be read as null."""
    (first_where, first), *rest = schemas
    fields = {f.name: (f, first_where) for f in first}
    for where, schema in rest:
        if absent_ok:
            for f in schema:
                fields.setdefault(f.name, (f, where))
        elif set(schema.names) != set(first.names):
            extra = sorted(set(schema.names) - set(first.names))
            missing = sorted(set(first.names) - set(schema.names))
            what = "; ".join(x for x in (f"extra columns {extra}" if extra else "",
                                         f"missing columns {missing}" if missing else "") if x)
            raise RoologError(f"{where}: columns differ from {first_where}: {what}")
        for f in schema:
            kept, kept_where = fields[f.name]
            if kept_where == where:
                continue
            t = widened(kept.type, f.type)
            if t is None:
                raise RoologError(f"column {f.name!r} is {kept.type} in {kept_where} but {f.type} in {where}: no type "
                                  f"holds both losslessly; {fix.format(column=f.name)}")
            fields[f.name] = (kept.with_type(t), kept_where)
    return pa.schema([f for f, _ in fields.values()], metadata=first.metadata)


def conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch | pa.Table:
    """`batch` in `schema`: its columns widened where their types differ, columns it lacks as nulls."""
    if batch.schema.equals(schema):
        return batch
    n = batch.num_rows
    arrays = [batch.column(f.name).cast(f.type) if f.name in batch.schema.names else pa.nulls(n, f.type)
              for f in schema]
    make = pa.Table.from_arrays if isinstance(batch, pa.Table) else pa.RecordBatch.from_arrays
    return make(arrays, schema=schema)
