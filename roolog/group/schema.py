"""Which columns are the key, the order, request-level and impression-level: the schema file and checks."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pyarrow as pa

from ..errors import RoologError, UsageProblem
from ..read.arrow_types import parse_type
from .keys import KEY_TYPE_HINT, is_key_type

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


LABEL_WORDS = ("click", "label", "conversion", "convert", "booking", "book", "purchase", "target")


def label_like(name: str) -> bool:
    """Whether a column's name says it is a target (a label needs 0/1 values as well)."""
    return any(w in name.lower() for w in LABEL_WORDS)


@dataclass(frozen=True)
class LogSchema:
    """A schema file (DESIGN.md): key, optional order_by, request and impression columns, labels."""

    key: tuple[str, ...]
    order_by: str | None = None
    request: tuple[str, ...] = ()
    impression: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    types: tuple[tuple[str, str], ...] = ()  # [types]: column -> Arrow type name, for text inputs
    cluster_by: tuple[str, ...] = ()  # request-level columns whose requests sit together (a user id)

    def to_toml(self, comments: dict[str, str] | None = None) -> str:
        comments = comments or {}

        def names(xs) -> str:
            return "[" + ", ".join(toml_string(x) for x in xs) + "]"

        def column_list(name: str, cols) -> list[str]:
            if not any(c in comments for c in cols):
                line = f"{name} = {names(cols)}"
                if len(line) <= 100:
                    return [line]
                chunks = [f"    {names(cols[i:i + 10])[1:-1]}," for i in range(0, len(cols), 10)]
                return [f"{name} = [", *chunks, "]"]
            rows = [f"{name} = ["]
            rows += [f"    {toml_string(c)}," + (f"  # {_one_line(comments[c])}" if c in comments else "")
                     for c in cols]
            return rows + ["]"]

        lines = [f"key = {names(self.key)}"]
        if self.order_by:
            lines.append(f"order_by = {toml_string(self.order_by)}")
        lines += column_list("request", self.request)
        lines += column_list("impression", self.impression)
        if self.labels:
            lines.append(f"labels = {names(self.labels)}")
        if self.cluster_by:
            lines.append(f"cluster_by = {names(self.cluster_by)}")
        if self.types:
            lines += ["", "[types]  # what the columns are read as from CSV/TSV/JSONL (Arrow type names)"]
            lines += [f"{toml_string(name)} = {toml_string(t)}" for name, t in self.types]
        return "\n".join(lines) + "\n"


def toml_string(text: str) -> str:
    """`text` as a TOML basic string: quotes, backslashes and control characters escaped, the rest as is."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}.get(ch, f"\\u{ord(ch):04X}"))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _one_line(comment: str) -> str:
    return " ".join(comment.split())


def load_schema(path: str) -> LogSchema:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as err:
        raise UsageProblem(f"cannot read schema file {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageProblem(f"{path}: not valid TOML: {err}") from None
    unknown = set(doc) - {"key", "order_by", "request", "impression", "labels", "types", "cluster_by"}
    if unknown:
        raise UsageProblem(f"{path}: unknown setting(s) {sorted(unknown)}")

    def str_list(name: str) -> tuple[str, ...]:
        value = doc.get(name, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageProblem(f"{path}: {name} must be a list of column names")
        return tuple(value)

    key = str_list("key")
    if not key:
        raise UsageProblem(f"{path}: key is required")
    order_by = doc.get("order_by")
    if order_by is not None and not isinstance(order_by, str):
        raise UsageProblem(f"{path}: order_by must be a column name")
    types = doc.get("types", {})
    if not isinstance(types, dict) or not all(isinstance(t, str) for t in types.values()):
        raise UsageProblem(f"{path}: [types] must map column names to Arrow type names, like price = \"double\"")
    for name, t in types.items():
        try:
            parse_type(t)
        except UsageProblem as err:
            raise UsageProblem(f"{path}: [types] {name}: {err}") from None
    return LogSchema(key, order_by, str_list("request"), str_list("impression"), str_list("labels"),
                     tuple(types.items()), str_list("cluster_by"))


RESERVED_PREFIX = "__roolog_"


def check_columns(schema: pa.Schema) -> None:
    """Column names roolog can carry through: unique, not its own internal names, types it can regroup."""
    for f in schema:
        if f.name.startswith(RESERVED_PREFIX):
            raise RoologError(f"column {f.name!r}: names starting with {RESERVED_PREFIX} are reserved for roolog")
        try:
            pa.nulls(1, f.type).take(pa.array([0]))
        except pa.ArrowNotImplementedError:
            raise RoologError(f"column {f.name!r} has type {f.type}, which roolog cannot regroup; "
                              "cast it to a related type (for example string) first") from None


def check_key_and_order(schema: pa.Schema, key: tuple[str, ...], order_by: str | None) -> None:
    """Key and order columns exist and have usable types."""
    check_columns(schema)
    if not key:
        raise UsageProblem("give the request key with --key COL (or in --schema)")
    for col in key:
        if col not in schema.names:
            raise RoologError(f"key column {col!r} is not in the input (columns: {', '.join(schema.names)})")
        if pa.types.is_null(schema.field(col).type):
            raise RoologError(f"key column {col!r} has no value in the input (a header with no data rows, or "
                              "only empty values): nothing to convert")
        if not is_key_type(schema.field(col).type):
            raise RoologError(f"key column {col!r} has type {schema.field(col).type}; keys must be {KEY_TYPE_HINT}")
    if order_by is not None:
        if order_by not in schema.names:
            raise RoologError(f"order column {order_by!r} is not in the input")
        if order_by in key:
            raise UsageProblem(f"order column {order_by!r} is also a key column")


def check_declared(declared: LogSchema, schema: pa.Schema, where: str, absent_ok: bool = False) -> None:
    """The schema file names exactly the input's columns, each once (with `absent_ok`, one partition of
    several: its columns, and maybe others it lacks but the key)."""
    named = list(declared.key) + list(declared.request) + list(declared.impression)
    for col in named:
        if col not in schema.names and not (absent_ok and col not in declared.key):
            raise UsageProblem(f"{where}: column {col!r} is not in the input")
        if named.count(col) > 1:
            raise UsageProblem(f"{where}: column {col!r} is listed more than once")
    missing = [c for c in schema.names if c not in named]
    if missing:
        raise UsageProblem(f"{where}: input column(s) {missing} are in neither request nor impression")
    if declared.order_by and declared.order_by not in declared.impression:
        raise UsageProblem(f"{where}: order_by {declared.order_by!r} must be an impression column")
    for label in declared.labels:
        if label not in declared.impression:
            raise UsageProblem(f"{where}: label {label!r} must be an impression column")
    for col in declared.cluster_by:
        if col not in declared.request:
            raise UsageProblem(f"{where}: cluster_by {col!r} must be a request column")


@dataclass
class Levels:
    """The level of every non-key column while a run goes on.

    `fixed` columns were declared request-level (or cluster requests): a value varying inside a request is an
    error.
    Other request-level columns are provisional (inferred, or declared with --on-conflict demote) and move
    to impression level the first time they vary.
    """

    request: list[str]
    impression: list[str]
    fixed: set[str] = field(default_factory=set)  # declared request-level, --on-conflict error
    declared: set[str] = field(default_factory=set)  # declared request-level (a move is a reported demotion)
    demoted: list[str] = field(default_factory=list)
    cluster: tuple[str, ...] = ()  # --cluster-by columns: request-level, always fixed

    def demote(self, col: str) -> None:
        self.request.remove(col)
        self.impression.append(col)
        if col in self.declared:
            self.demoted.append(col)
