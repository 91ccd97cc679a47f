"""Inputs in object stores: s3://, gs://, abfs://, hdfs:// and any other fsspec protocol that is installed.

    a URI (object, prefix or glob) -> list_objects -> StoredObject (uri, size, mtime, ETag)
      local engine, stats, infer-schema: download() each object once into scratch space, hashing it
      Spark tasks: open_object() and read their own piece; object_xxh64() hashes an object where it runs

Credentials, region and endpoint come from each store's own environment and config files (for S3 through
botocore: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ~/.aws);
`--storage-option KEY=VALUE` passes anything else to the fsspec file system. fsspec is used (not pyarrow's
own file systems) because its listings carry the ETag that tells an unchanged object without reading it;
pyarrow reads an object through a `PythonFile` over fsspec's file.

Every call to the store is tried up to `len(RETRY_DELAYS) + 1` times, waiting between tries, and then fails
in one line; an object that is not what the listing said when it has been read fails the run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import xxhash

from ..errors import RoologError, UsageProblem

URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between tries of a failing call
sleep = time.sleep  # how they are waited (tests count the waits instead)
CHUNK = 8 << 20
StorageOptions = tuple[tuple[str, Any], ...]
T = TypeVar("T")


def is_uri(path: str) -> bool:
    return bool(URI.match(path))


def scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower()


@dataclass(frozen=True)
class StoredObject:
    """One object as its store lists it."""

    uri: str
    size: int
    mtime_ns: int
    etag: str  # the ETag, generation or content hash the store gives; "" when it gives none


SECRETS = frozenset({"key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key",
                     "aws_session_token", "account_key", "sas_token", "client_secret", "credentials"})


def parse_storage_options(pairs: Iterable[str]) -> StorageOptions:
    """KEY=VALUE texts as fsspec options: true/false/null and numbers are read as JSON, the rest as text.
    A credential is refused: a command line is seen by every user of the machine (`ps`) and kept in logs."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageProblem(f"--storage-option {pair!r} is not KEY=VALUE (for example requester_pays=true)")
        if key.lower() in SECRETS:
            raise UsageProblem(f"--storage-option {key}=...: credentials are not taken from the command line (any "
                               "user sees it); set them the store's usual way (for S3 AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials)")
        try:
            value = json.loads(text)
            if isinstance(value, list | dict):
                value = text  # kept as its JSON text (the options stay hashable); decoded in _filesystem
        except ValueError:
            value = text
        options[key] = value
    return tuple(sorted(options.items()))


def _decoded(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def _filesystem(uri: str, options: StorageOptions):
    """(fsspec file system, path inside it) for a URI; a fresh instance, so that a listing is never cached."""
    try:
        import fsspec
    except ImportError:
        raise UsageProblem(f"reading {scheme(uri)}:// inputs needs fsspec and the store's package: "
                           "pip install 'roolog[s3]' (s3fs), gcsfs, adlfs, ...") from None
    try:
        return fsspec.core.url_to_fs(uri, skip_instance_cache=True, **{k: _decoded(v) for k, v in options})
    except (ImportError, ValueError) as err:  # an unknown protocol, or one whose package is missing
        raise UsageProblem(f"{uri}: no file system for {scheme(uri)}:// ({_first_line(err)})") from None
    except OSError as err:  # the store's client could not start (HDFS without a JVM or libhdfs, ...)
        raise UsageProblem(f"{uri}: cannot open the {scheme(uri)}:// file system ({_first_line(err)})") from None
    except TypeError as err:
        raise UsageProblem(f"{uri}: a --storage-option is not one the {scheme(uri)}:// file system takes "
                           f"({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _chain(err: BaseException) -> Iterable[BaseException]:
    seen: BaseException | None = err
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


class _LocalFailure(Exception):
    """An error of the local side of a download (a full disk): not the store's, never retried."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _call(uri: str, what: str, fn: Callable[[], T]) -> T:
    """`fn()` (a call to the store about `uri`), retried on failures the store may get over; the ones it
    will not get over (no credentials, access denied, not found) say so at once."""
    for attempt in range(len(RETRY_DELAYS) + 1):
        try:
            return fn()
        except (FileNotFoundError, _LocalFailure):
            raise
        except Exception as err:
            names = {type(e).__name__ for e in _chain(err)}
            if "NoCredentialsError" in names or "Unable to locate credentials" in str(err):
                raise UsageProblem(f"{uri}: no credentials for {scheme(uri)}:// (set them the store's usual way: "
                                   "for S3 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
                                   "~/.aws/credentials)") from None
            if isinstance(err, PermissionError) or names & {"AccessDenied", "InvalidAccessKeyId",
                                                            "SignatureDoesNotMatch"}:
                raise UsageProblem(f"{uri}: access denied ({_first_line(err)}); check the credentials and "
                                   "their rights on it") from None
            if isinstance(err, TypeError):  # an option the file system does not take: no retry mends it
                raise UsageProblem(f"{uri}: a --storage-option is not one the {scheme(uri)}:// file system takes "
                                   f"({_first_line(err)})") from None
            if attempt == len(RETRY_DELAYS):
                raise RoologError(f"{uri}: the store failed {attempt + 1} times {what} ({type(err).__name__}: "
                                  f"{_first_line(err)}); try again later") from None
            sleep(RETRY_DELAYS[attempt])
    raise AssertionError("unreachable")


def _mtime_ns(info: dict) -> int:
    for name in ("LastModified", "mtime", "last_modified", "updated", "modified", "created"):
        value = info.get(name)
        if isinstance(value, dt.datetime):
            return int(value.timestamp()) * 10**9 + value.microsecond * 1000
        if isinstance(value, int | float):
            return int(value * 10**9)
        if isinstance(value, str) and value:
            return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 10**9)
    return 0


def _etag(info: dict) -> str:
    for name in ("ETag", "etag", "generation", "md5Hash", "content_settings"):
        value = info.get(name)
        if value not in (None, ""):
            return str(value).strip('"')
    return ""


def _object(fs, path: str, info: dict) -> StoredObject:
    return StoredObject(fs.unstrip_protocol(path), int(info.get("size") or 0), _mtime_ns(info), _etag(info))


def has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def list_objects(spec: str, options: StorageOptions) -> tuple[str | None, list[StoredObject]]:
    """(the hive root, or None for a glob or one object; the objects, sorted) that a URI names: one object,
    every object under a prefix (names starting with . or _ passed over, as in local folders), or a glob."""
    fs, path = _filesystem(spec, options)
    if has_magic(path):
        found = _call(spec, "listing", lambda: fs.glob(path, detail=True))
        objects = [_object(fs, p, i) for p, i in sorted(found.items()) if i.get("type") != "directory"]
        if not objects:
            raise UsageProblem(f"no input objects match {spec!r}")
        return None, objects
    try:
        info = _call(spec, "looking it up", lambda: fs.info(path))
    except FileNotFoundError:
        bucket = path.split("/", 1)[0]
        if "/" in path.strip("/") and not _call(spec, "looking it up", lambda: fs.exists(bucket)):
            raise UsageProblem(f"input not found: {spec} (there is no bucket {bucket!r})") from None
        raise UsageProblem(f"input not found: {spec}") from None
    if info.get("type") != "directory":
        return None, [_object(fs, path, info)]
    found = _call(spec, "listing", lambda: fs.find(path, detail=True))
    root = path.rstrip("/")
    objects = []
    for p, i in sorted(found.items()):
        parts = p[len(root):].strip("/").split("/")
        hidden = [q for q in parts[:-1] if q.startswith((".", "_")) and "=" not in q]
        if i.get("type") == "directory" or p.endswith("/") or hidden or parts[-1].startswith((".", "_")):
            continue
        objects.append(_object(fs, p, i))
    if not objects:
        raise UsageProblem(f"no input objects under {spec}")
    return fs.unstrip_protocol(root), objects


def check_unchanged(obj: StoredObject, options: StorageOptions) -> None:
    """Fails the run when the object is not what it was when the run listed it."""
    _check(obj, *_filesystem(obj.uri, options))


def _check(obj: StoredObject, fs, path: str) -> None:
    try:
        now = _object(fs, path, _call(obj.uri, "looking it up", lambda: fs.info(path)))
    except FileNotFoundError:
        now = None
    if now is None:
        raise RoologError(f"{obj.uri}: the object was deleted during the run; run again")
    if (now.size, now.mtime_ns // 10**9, now.etag) != (obj.size, obj.mtime_ns // 10**9, obj.etag):
        # (whole seconds: a HEAD's Last-Modified has no more, where MinIO's listings give milliseconds)
        raise RoologError(f"{obj.uri}: the object changed during the run (its size, time or ETag is not what the "
                          "listing said); run again once it is complete")


def _stream(obj: StoredObject, options: StorageOptions, sink: Callable[[], Callable[[bytes], Any]]) -> str:
    """Every byte of the object to a fresh `sink()` on each try, hashed; checked afterwards against the listing."""
    fs, path = _filesystem(obj.uri, options)

    def read() -> str:
        h, write = xxhash.xxh64(), sink()
        with fs.open(path, "rb", block_size=CHUNK) as src:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                write(chunk)
        return h.hexdigest()

    try:
        digest = _call(obj.uri, "reading it", read)
    except FileNotFoundError:
        raise RoologError(f"{obj.uri}: the object was deleted during the run; run again") from None
    except _LocalFailure as failure:
        raise failure.error from None
    _check(obj, fs, path)
    return digest


def download(obj: StoredObject, target: str, options: StorageOptions,
             advance: Callable[[int], Any] = lambda n: None) -> str:
    """The object copied to the local file `target` (`advance(bytes)` after each chunk, for a progress bar);
    returns the xxh64 of its bytes."""
    with open(target, "wb") as fh:

        def write(chunk: bytes) -> None:
            try:
                fh.write(chunk)
            except OSError as err:
                raise _LocalFailure(err) from None
            advance(len(chunk))

        def restart() -> Callable[[bytes], Any]:  # a failed try leaves nothing behind it in the copy
            try:
                if fh.tell():
                    fh.seek(0)
                    fh.truncate()
            except OSError as err:
                raise _LocalFailure(err) from None
            return write

        return _stream(obj, options, restart)


def object_xxh64(obj: StoredObject, options: StorageOptions) -> str:
    """The xxh64 of the object's bytes, read where this runs (a Spark task), checked against the listing."""
    return _stream(obj, options, lambda: lambda chunk: None)


def open_object(uri: str, options: StorageOptions) -> pa.NativeFile:
    """A random-access pyarrow file over the object (for Parquet footers and row groups, or a text stream)."""
    fs, path = _filesystem(uri, options)
    try:
        return _call(uri, "opening it", lambda: pa.PythonFile(fs.open(path, "rb", block_size=CHUNK), mode="r"))
    except FileNotFoundError:
        raise RoologError(f"{uri}: the object was deleted during the run; run again") from None
