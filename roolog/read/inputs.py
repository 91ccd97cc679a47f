"""What the inputs are: files, folders and globs expanded into `InputFile`s, and how to read them.

Each input is a file, a folder (searched recursively; hive `key=value` folders become columns; symlinked
folders followed) or a glob, on local disk or in an object store (an s3://, gs://, ... URI: see `stores`).
Formats are Parquet, CSV, TSV and JSON lines, each plain or .gz/.zst, detected from the name unless
`--input-format` says otherwise. Each file is read once, and never from the output folder of the run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import xxhash

from ..errors import RoologError, UsageProblem
from ..log import bar
from . import stores

FORMATS = ("parquet", "csv", "tsv", "jsonl")
_SUFFIX_FORMAT = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
                  ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_SUFFIX_COMPRESSION = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class ReadOptions:
    """How to read raw logs; the same options for convert, stats and infer-schema."""

    input_format: str = "auto"
    delimiter: str | None = None
    null_values: tuple[str, ...] = ()
    column_types: tuple[tuple[str, str], ...] = ()  # (column, Arrow type name) declared for text inputs
    newlines_in_values: bool = False  # quoted CSV values may hold line breaks anywhere (not only in block 1)
    batch_bytes: int = 32 << 20
    storage_options: stores.StorageOptions = ()  # --storage-option KEY=VALUE for object-store inputs

    def __post_init__(self) -> None:
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise UsageProblem(f"--delimiter must be one character, not {self.delimiter!r}")
        named: dict[str, str] = {}
        for name, text in self.column_types:
            if name in named and named[name] != text:
                raise UsageProblem(f"--column-type gives column {name!r} two types ({named[name]} and {text}); "
                                   "give one")
            named[name] = text
        if self.batch_bytes < 1:
            raise UsageProblem(f"the read block size must be positive, not {self.batch_bytes}")


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str
    compression: str | None
    partition: tuple[tuple[str, str | None], ...] = ()  # hive key=value pairs above the file
    size: int = 0
    mtime: float = 0.0
    mtime_ns: int = 0  # with `ino`: what tells, after reading, whether the file changed meanwhile
    ino: int = 0
    ctime_ns: int = 0  # set by the system on every change: what tells a rewrite whose mtime was put back
    etag: str = ""  # an object's ETag (or generation), as its store lists it
    storage: stores.StorageOptions = ()  # how to open an object (--storage-option)
    local: str | None = None  # an object's copy on local disk, read in its place (see `staged`)
    xxh64: str | None = None  # the hash of that copy's bytes, taken while it was downloaded

    @property
    def is_object(self) -> bool:
        """Whether the input is an object in a store (`path` is its URI)."""
        return stores.is_uri(self.path)

    @property
    def in_store(self) -> bool:
        """Whether readers open the object in its store (no local copy of it was made)."""
        return self.is_object and self.local is None

    @property
    def readable(self) -> str:
        """The path readers open: the local copy of an object, or the file itself."""
        return self.local or self.path

    @property
    def recorded_path(self) -> str:
        """How the manifest names the input: an object's URI, a file's absolute path."""
        return self.path if self.is_object else os.path.abspath(self.path)

    def stat(self) -> dict[str, Any]:
        """What tells, without reading it, that the input is the one read before."""
        if self.is_object:
            return {"mtime_ns": self.mtime_ns, "etag": self.etag}
        return {"mtime_ns": self.mtime_ns, "ctime_ns": self.ctime_ns, "ino": self.ino}

    def stored(self) -> stores.StoredObject:
        return stores.StoredObject(self.path, self.size, self.mtime_ns, self.etag)


def open_input(f: InputFile) -> pa.NativeFile:
    """A random-access file over the input's bytes: its local copy or file, else the object in its store."""
    if f.in_store:
        return stores.open_object(f.path, f.storage)
    return pa.OSFile(f.readable)


def _split_name(name: str) -> tuple[str | None, str | None]:
    """(format, compression) from a file name like events.csv.zst."""
    stem, suffix = os.path.splitext(name.lower())
    compression = _SUFFIX_COMPRESSION.get(suffix)
    if compression:
        suffix = os.path.splitext(stem)[1]
    return _SUFFIX_FORMAT.get(suffix), compression


def _hive_pairs(root: str, path: str) -> tuple[tuple[str, str | None], ...]:
    pairs = []
    for part in Path(os.path.relpath(path, root)).parts[:-1]:
        if "=" in part:
            k, v = part.split("=", 1)  # null as written, before decoding: %5F_HIVE_DEFAULT_PARTITION__ is text
            pairs.append((urllib.parse.unquote(k), None if v == HIVE_NULL else urllib.parse.unquote(v)))
    return tuple(pairs)


def _hive_spelling(folder: str) -> tuple[str, ...]:
    """The key=value parts of a folder path as written (before percent-decoding)."""
    return tuple(part for part in Path(folder).parts if "=" in part)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _walk(folder: str, skip: str | None) -> list[str]:
    """The files under `folder`, sorted; symlinked folders followed (each real folder once: a loop or a
    second link to a folder already read is refused); the real folder `skip` (the output) left out."""
    found: list[str] = []
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            raise UsageProblem(f"{dirpath} is the folder {seen[real]} again (a symlink loop or a second link); "
                               "name each input once")
        seen[real] = dirpath
        dirnames[:] = sorted(d for d in dirnames if (not d.startswith((".", "_")) or "=" in d)
                             and os.path.realpath(os.path.join(dirpath, d)) != skip)
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith((".", "_"))]
    return found


@dataclass(frozen=True)
class Inputs:
    files: list[InputFile]
    skipped: list[str]  # files in folders or globs that are not of the format asked for


_FORMAT_NAMES = {"parquet": "Parquet", "csv": "CSV", "tsv": "TSV", "jsonl": "JSON lines"}


def local_path(path: str, what: str) -> str:
    """`path` if it is a local path; an object-store or HDFS URI (s3://, gs://, hdfs://, file://) for OUT or
    explode's target is refused in one line rather than taken as a local folder named "s3:"."""
    if stores.is_uri(path):
        raise UsageProblem(f"{what} {path}: roolog writes only to a local or mounted file system, not to "
                           f"{stores.scheme(path)}:// URIs: it publishes shards and the manifest by atomic rename, "
                           "which object stores lack; write to a local folder, then copy it up")
    return path


def find_inputs(specs: list[str], input_format: str = "auto", output: str | None = None,
                storage: stores.StorageOptions = ()) -> Inputs:
    """Expand files, folders and globs, in the order given (folders and globs sorted).

    Each file is read once: the same file named twice (another spelling, a symlink, a hard link) is an
    error. With `output` (convert's OUT), an input that is OUT or lies inside it is refused, and OUT inside
    an input folder (or matched by a glob) is kept out of the inputs, so a rerun never reads its own output.

    A file named explicitly is read in `input_format` when one is given. In folders and globs the names
    decide: files of no known format (a README) are passed over; a folder holding several formats is an
    error unless `input_format` picks one, and then files named as another format are skipped (counted in
    `skipped`), while files with no suffix at all (Hadoop's part-00000) are read in that format.

    A URI names an object, every object under a prefix (hive folders as in a local folder) or a glob, listed
    with `storage` as the store's options; nothing is read from the store here but the listing. A file://
    URI is its local path.
    """
    specs = [urllib.parse.unquote(s[len("file://"):]) if s.lower().startswith("file://") else s for s in specs]
    if output is not None:
        local_path(output, "output")
    if input_format not in ("auto", *FORMATS):
        raise UsageProblem(f"unknown input format {input_format!r}; use auto or one of {', '.join(FORMATS)}")
    out = os.path.realpath(output) if output else None
    files: list[InputFile] = []
    skipped: list[str] = []
    seen: dict[tuple[int, int], str] = {}
    folders: dict[tuple, str] = {}  # the hive pairs -> the folder that spelled them first
    for spec in specs:
        if stores.is_uri(spec):
            files += _objects(spec, input_format, skipped, storage, files)
            continue
        if out and os.path.exists(spec) and _within(os.path.realpath(spec), out):
            raise UsageProblem(f"input {spec} is {'the' if os.path.realpath(spec) == out else 'inside the'} output "
                               f"folder {output}; convert into another folder")
        if os.path.isfile(spec):
            fmt, compression = _split_name(os.path.basename(spec))
            if input_format != "auto":
                fmt = input_format
            if fmt is None:
                raise UsageProblem(f"{spec}: cannot tell the format from the name; pass --input-format")
            found: list[tuple[str, str | None, str, str | None]] = [(spec, None, fmt, compression)]
        else:
            found = _in_folder_or_glob(spec, out, input_format, skipped)
        for path, root, fmt, compression in found:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:
                raise UsageProblem(f"{path} and {seen[st.st_dev, st.st_ino]} are the same file; name each input once")
            seen[st.st_dev, st.st_ino] = path
            partition = _hive_pairs(root, path) if root else ()
            if partition:
                folder = os.path.dirname(os.path.relpath(path, root))
                first = folders.setdefault(partition, folder)
                if first != folder and _hive_spelling(first) != _hive_spelling(folder):
                    raise UsageProblem(f"hive folders {first!r} and {folder!r} name the same partition "
                                       f"({', '.join(f'{k}={v!r}' for k, v in partition)}) spelled two ways "
                                       "(percent-encoded and not); merge them into one folder")
            files.append(InputFile(path, fmt, compression, partition, st.st_size, st.st_mtime, st.st_mtime_ns,
                                   st.st_ino, st.st_ctime_ns))
    if not files:
        raise UsageProblem(f"no input files found in {' '.join(specs)}"
                           + (f" ({len(skipped)} of other formats skipped)" if skipped else ""))
    return Inputs(files, skipped)


def _objects(spec: str, input_format: str, skipped: list[str], storage: stores.StorageOptions,
             before: list[InputFile]) -> list[InputFile]:
    """The InputFiles of a URI: one object (read in `input_format` when given), or those of a prefix or glob
    whose names are data files, as in a local folder."""
    root, objects = stores.list_objects(spec, storage)
    if root is None and len(objects) == 1 and not stores.has_magic(spec):
        fmt, compression = _split_name(os.path.basename(objects[0].uri))
        fmt = fmt if input_format == "auto" else input_format
        if fmt is None:
            raise UsageProblem(f"{spec}: cannot tell the format from the name; pass --input-format")
        found = [(objects[0], fmt, compression)]
    else:
        by_uri = {o.uri: o for o in objects}
        found = [(by_uri[p], fmt, c) for p, fmt, c in _formats(spec, list(by_uri), input_format, skipped)]
    named = {f.path for f in before}
    files = []
    for obj, fmt, compression in found:
        if obj.uri in named:
            raise UsageProblem(f"{obj.uri} is named twice; name each input once")
        named.add(obj.uri)
        partition = _hive_pairs(root, obj.uri) if root else ()
        files.append(InputFile(obj.uri, fmt, compression, partition, obj.size, obj.mtime_ns / 1e9, obj.mtime_ns,
                               etag=obj.etag, storage=storage))
    return files


def _in_folder_or_glob(spec: str, out: str | None, input_format: str,
                       skipped: list[str]) -> list[tuple[str, str | None, str, str | None]]:
    """(path, hive root, format, compression) of the data files a folder or a glob names."""
    if os.path.isdir(spec):
        paths, root = _walk(spec, out), spec
    elif glob.has_magic(spec):
        paths = [p for p in sorted(glob.glob(spec, recursive=True))
                 if os.path.isfile(p) and not (out and _within(os.path.realpath(p), out))]
        root = None
        if not paths:
            raise UsageProblem(f"no input files match {spec!r}")
    elif os.path.exists(spec):  # a FIFO, a socket, a device: no size to record, no second read
        raise UsageProblem(f"input {spec} is not a regular file (a pipe or a device); roolog reads files it can "
                           "read twice and hash: write the stream to a file first")
    else:
        raise UsageProblem(f"input not found: {spec}")
    return [(p, root, fmt, c) for p, fmt, c in _formats(spec, paths, input_format, skipped)]


def _formats(spec: str, paths: list[str], input_format: str,
             skipped: list[str]) -> list[tuple[str, str, str | None]]:
    """(path, format, compression) of the data files among a folder's or glob's `paths`, by their names."""
    named = [(p, *_split_name(os.path.basename(p))) for p in paths]
    if input_format == "auto":
        kinds: dict[str, list[str]] = {}
        for p, fmt, _ in named:
            if fmt:
                kinds.setdefault(fmt, []).append(p)
        if len(kinds) > 1:
            main = max(kinds, key=lambda k: len(kinds[k]))
            held = ", ".join(f"{len(ps):,} {_FORMAT_NAMES[k]} ({os.path.basename(ps[0])}"
                             f"{', ...' if len(ps) > 1 else ''})"
                             for k, ps in sorted(kinds.items(), key=lambda kv: -len(kv[1])))
            raise UsageProblem(f"{spec} holds files of several formats: {held}; pass --input-format {main} to read "
                               "only those (the others are skipped and counted)")
        return [(p, fmt, c) for p, fmt, c in named if fmt]
    found = []
    for p, fmt, c in named:
        if fmt == input_format or (fmt is None and "." not in os.path.basename(p)):
            found.append((p, input_format, c))
        else:
            skipped.append(p)
    return found


def resolve_inputs(specs: list[str], input_format: str = "auto", output: str | None = None,
                   storage: stores.StorageOptions = ()) -> list[InputFile]:
    """The input files of `specs` (find_inputs without the skipped ones)."""
    return find_inputs(specs, input_format, output, storage).files


@contextlib.contextmanager
def staged(files: list[InputFile], folder: str, progress: bool = False) -> Iterator[list[InputFile]]:
    """The files, each object among them downloaded once into `folder` (hashed on the way, checked against
    its listing after) and read from there; the copies are removed afterwards."""
    copies: list[str] = []
    size = sum(f.size for f in files if f.in_store)
    try:
        out = []
        with bar(size, "downloading", "B", progress and any(f.in_store for f in files), unit_scale=True) as shown:
            for i, f in enumerate(files):
                if f.in_store:
                    os.makedirs(folder, exist_ok=True)
                    copies.append(os.path.join(folder, f"object-{i:05d}"))  # (a key's name may be too long for a file)
                    digest = stores.download(f.stored(), copies[-1], f.storage, shown.update)
                    f = replace(f, local=copies[-1], xxh64=digest)
                out.append(f)
        yield out
    finally:
        for path in copies:
            with contextlib.suppress(OSError):
                os.remove(path)


@dataclass(frozen=True)
class InputRecord:
    """One input file as it was when read."""

    path: str  # absolute, or an object's URI
    bytes: int
    mtime: float
    xxh64: str
    stat: dict[str, Any] | None = None  # mtime_ns, ctime_ns, ino (a rewrite whose mtime was put back); an object's
    #                                     mtime_ns and etag


def file_xxh64(path: str) -> str:
    h = xxhash.xxh64()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(files: list[InputFile]) -> list[InputRecord]:
    """What the manifest records of the inputs, taken after they were read: a file whose size, mtime, ctime
    or inode is not what it was when the run listed it changed while it was read, and fails the run. The
    system sets the ctime on every write and no one can set it back, so when all four hold, the bytes
    hashed here are the bytes the run read (a rewrite with its mtime put back, as `rsync --inplace -t`
    does, is caught)."""
    inputs = []
    for f in files:
        if f.is_object:  # hashed as it was downloaded (or by a Spark task) and checked against its listing then
            if f.xxh64 is None:
                raise AssertionError(f"{f.path} was not hashed when it was read")
            inputs.append(InputRecord(f.path, f.size, f.mtime, f.xxh64, f.stat()))
            continue
        digest = file_xxh64(f.path)
        st = os.stat(f.path)
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) != (f.size, f.mtime_ns, f.ctime_ns, f.ino):
            raise RoologError(f"{f.path}: the file changed while roolog read it (its size, mtime, ctime or inode "
                              "is not what it was when the run began); run again once it is complete")
        inputs.append(InputRecord(os.path.abspath(f.path), f.size, f.mtime, digest, f.stat()))
    return inputs
