"""OUT while a run writes it: what is roolog's own there, the locks, the temp folder, and publishing.

Ownership comes from what roolog wrote, never from file names. `OUT/.roolog.json` (the *ledger*) lists
every path roolog placed in OUT (shards, manifests, reports, partition folders, its locks and temp
folder), each file with the size, mtime, inode and xxh64 it had when it was placed: a file counts as
roolog's only while it is that file (same size, mtime and inode, or same size and bytes), so a ledger
copied into a folder of other files owns none of them. An entry is added *before*
the file is moved in and dropped *after* it is removed, so even a run killed between the two leaves
nothing of roolog's that the next run does not recognise. Anything in OUT the ledger does not list is
the user's: a run refuses such a folder unless `--overwrite`, and then writes beside it, never deleting or
replacing it.

Locks: `.roolog.lock` (exclusive for a whole convert run; a second run gets exit code 75) and
`.roolog.readers.lock` (readers - explode, stats, train, verify - hold it shared while they read; a run
takes it exclusively only while it publishes, so a reader never sees a mix of two runs).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from ..errors import OutputLocked, UsageProblem
from ..read.inputs import file_xxh64
from .failpoint import failpoint
from .manifest import LEDGER, MANIFEST, REPORT, write_json_atomic

LOCK, READERS_LOCK = ".roolog.lock", ".roolog.readers.lock"
LEDGER_TMP = LEDGER + ".tmp"  # the ledger's own temp name: listed in the ledger from its first version
LEDGER_FORMAT = "roolog-ledger/1"
TMP_PREFIX = ".roolog-tmp"


@dataclass(frozen=True)
class Placed:
    """A file as roolog placed it: what later tells the file roolog wrote from another one at its name."""

    size: int
    mtime_ns: int
    ino: int
    xxh64: str | None = None  # of its bytes; with `dev`, absent in ledgers of roolog 0.2.0
    dev: int | None = None
    previous: Placed | None = None  # while a publish moves this file in over roolog's older one of its name

    @classmethod
    def load(cls, doc: dict) -> Placed:
        previous = doc.get("previous")
        return cls(**{**doc, "previous": cls.load(previous) if previous else None})

    def dump(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "previous"} | (
            {"previous": self.previous.dump()} if self.previous else {})

    @classmethod
    def of(cls, path: str, hashed: bool = False) -> Placed:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, file_xxh64(path) if hashed else None, st.st_dev)

    def matches(self, path: str) -> bool:
        """Whether the file at `path` is this one: the very file roolog made (its device and inode; changed
        in place - bit rot, a hand edit - it is still roolog's to repair), or, copied back or moved, one
        with the same size and bytes. A file put in its place, or named in a copied ledger, is not."""
        if self.previous is not None and self.previous.matches(path):
            return True  # a run stopped while it moved this file in: the older one is still there, and roolog's
        try:
            st = os.stat(path)
        except OSError:
            return False
        if self.dev is None:  # a 0.2.0 ledger: the size, mtime and inode recorded
            return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.ino)
        if (st.st_dev, st.st_ino) == (self.dev, self.ino):
            return True
        return self.xxh64 is not None and st.st_size == self.size and file_xxh64(path) == self.xxh64


class Ledger:
    """The paths (relative to OUT, '/'-separated) roolog wrote in OUT: path -> Placed (a file it placed),
    "dir" (a folder it made) or "lock" (a lock file it made)."""

    def __init__(self, out: str, entries: dict[str, Placed | str]):
        self.out, self.entries = out, entries

    @classmethod
    def load(cls, out: str) -> Ledger | None:
        """The ledger of OUT, or None when roolog never wrote one there."""
        path = os.path.join(out, LEDGER)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as fh:
                doc = json.load(fh)
            if doc.get("format") != LEDGER_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            entries = {p: e if e in ("dir", "lock") else Placed.load(e) for p, e in doc["entries"].items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            raise UsageProblem(f"{path} is not a ledger roolog can read ({err}); it lists what roolog wrote in "
                               f"{out}: restore it, or convert into a new folder") from None
        return cls(out, entries)

    def owns(self, rel: str) -> bool:
        """Whether OUT/rel is roolog's: listed, and for a file, the very file the ledger recorded (a ledger
        copied from another output, or a file put in place of roolog's, owns nothing)."""
        entry = self.entries.get(rel)
        if isinstance(entry, Placed):
            return entry.matches(os.path.join(self.out, rel))
        return entry is not None

    def add(self, entries: Mapping[str, Placed | str]) -> None:
        """Record paths roolog is about to place; a file that will replace roolog's own file of that name
        keeps the older one's record beside it until `settle`, so a run killed in between owns either."""
        for rel, entry in entries.items():
            old = self.entries.get(rel)
            if isinstance(entry, Placed) and isinstance(old, Placed) and self.owns(rel):
                entry = replace(entry, previous=replace(old, previous=None))
            self.entries[rel] = entry
        self.save()

    def settle(self, rels) -> None:
        """The files at `rels` are in place: their older records go."""
        for rel in rels:
            entry = self.entries.get(rel)
            if isinstance(entry, Placed) and entry.previous is not None:
                self.entries[rel] = replace(entry, previous=None)
        self.save()

    def drop(self, paths) -> None:
        for p in paths:
            self.entries.pop(p, None)
        self.save()

    def save(self) -> None:
        doc = {"format": LEDGER_FORMAT, "note": "the files roolog wrote in this folder; anything else is not its own",
               "entries": {p: e if isinstance(e, str) else e.dump() for p, e in sorted(self.entries.items())}}
        tmp = os.path.join(self.out, LEDGER_TMP)
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(self.out, LEDGER))

    def under(self, rel_dir: str) -> list[str]:
        prefix = rel_dir + "/"
        return [p for p in self.entries if p.startswith(prefix)]

    def foreign(self, rel_dir: str = "") -> list[str]:
        """What a folder of OUT (and roolog's folders inside it) holds that roolog did not write."""
        found = []
        top = os.path.join(self.out, rel_dir) if rel_dir else self.out
        for name in sorted(os.listdir(top)):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if rel in (LEDGER, LEDGER_TMP) and not rel_dir:
                continue
            if not self.owns(rel):
                found.append(rel)
            elif self.entries[rel] == "dir" and not rel.split("/")[-1].startswith(TMP_PREFIX):
                found += self.foreign(rel)
        return found


def _open_lock(path: str) -> tuple[int, bool]:
    """An fd of the lock file, and whether this call created it."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        try:
            return os.open(path, os.O_RDWR), False
        except PermissionError:
            return os.open(path, os.O_RDONLY), False


class OutputFolder:
    """OUT while a run writes it: locked, with a temp folder for spill and for units not yet published.

    A unit (all of OUT, or one partition `col=value/`) is built in the temp folder, manifest included,
    and published at the end: a new partition folder by one rename; an existing folder by moving the new
    files in over roolog's old ones (old manifest out first, new manifest last), leaving every file roolog
    did not write where it is.
    """

    def __init__(self, out: str, overwrite: bool):
        self.out = out
        self.overwrite = overwrite
        self.tmp = os.path.join(out, f"{TMP_PREFIX}-{os.getpid()}")
        self.left: list[str] = []  # files in OUT that are not roolog's (kept, with --overwrite)
        self.ledger = Ledger(out, {})
        self._lock_fd: int | None = None
        self._made_lock = False
        self._created = False

    # ---- start and end of a run --------------------------------------------------------------------------

    def __enter__(self) -> OutputFolder:
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise UsageProblem(f"output {self.out} exists and is not a folder")
        self._created = not os.path.exists(self.out)
        os.makedirs(self.out, exist_ok=True)
        fd, made_lock = _open_lock(os.path.join(self.out, LOCK))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputLocked(f"{self.out} is locked by a running convert ({holder}); try again later") from None
        self._lock_fd, self._made_lock = fd, made_lock
        try:
            self._claim(made_lock)
        except BaseException:
            self._end(failed=True)
            raise
        return self

    def _claim(self, made_lock: bool) -> None:
        ledger = Ledger.load(self.out)
        if ledger is None and os.path.exists(os.path.join(self.out, MANIFEST)):
            raise UsageProblem(f"{self.out} holds a {MANIFEST} but no {LEDGER} listing which files are roolog's "
                               "(another tool's output, or a roolog before 0.2): roolog will not write there; "
                               "convert into a new folder")
        if ledger is None and os.path.lexists(os.path.join(self.out, LEDGER_TMP)):
            raise UsageProblem(f"{os.path.join(self.out, LEDGER_TMP)} is not roolog's (there is no {LEDGER}); roolog "
                               "needs that name for its ledger: move it away, or convert into another folder")
        if ledger is None:  # roolog never wrote here: only what this run just made is its own
            ledger = Ledger(self.out, {LOCK: "lock"} if made_lock else {})
        self.ledger = ledger
        stale = [p for p in ledger.entries if "/" not in p and p.startswith(TMP_PREFIX)]
        for p in stale:  # a dead run's temp folder (we hold the lock, so its run is gone)
            shutil.rmtree(os.path.join(self.out, p), ignore_errors=True)
        if stale:
            ledger.drop(stale)
        foreign = ledger.foreign()
        replaced = [p for p in foreign if p in ledger.entries]
        if replaced:
            raise UsageProblem(f"{os.path.join(self.out, replaced[0])} is not the file roolog wrote there (another "
                               "file put in its place, or a ledger copied from another output); move it away "
                               "(roolog never deletes files it did not write) and run again")
        if foreign and not self.overwrite:
            raise UsageProblem(f"output folder {self.out} holds files roolog did not write ({foreign[0]}); "
                               "pass --overwrite to write there anyway (those files are kept)")
        self.left = foreign
        readers = os.path.join(self.out, READERS_LOCK)
        if os.path.lexists(readers) and not ledger.owns(READERS_LOCK):
            raise UsageProblem(f"{readers} is not roolog's; roolog needs that name for its readers' lock")
        ledger.add({READERS_LOCK: "lock", os.path.basename(self.tmp): "dir"})
        open(readers, "a").close()
        os.makedirs(self.tmp)
        if ledger.owns(LOCK) and self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode(), 0)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._end(failed=exc_type is not None)

    def _end(self, failed: bool) -> None:
        tmp = os.path.basename(self.tmp)
        if self.ledger.owns(tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.ledger.drop([tmp])
        if failed and self._created:
            self._remove_own_files()  # a failed first run leaves nothing of roolog's behind
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        if failed and self._made_lock and not os.path.exists(os.path.join(self.out, LEDGER)):
            with contextlib.suppress(OSError):  # refused before roolog wrote anything there: not even a lock
                os.remove(os.path.join(self.out, LOCK))
        if failed and self._created:
            with contextlib.suppress(OSError):
                for name in (LOCK, LEDGER):
                    if name == LEDGER or self.ledger.owns(name):
                        os.remove(os.path.join(self.out, name))
                os.rmdir(self.out)  # only if nothing else is in it

    def _remove_own_files(self) -> None:
        for rel in sorted(self.ledger.entries, key=lambda p: -p.count("/")):  # files and deep folders first
            if rel == LOCK:
                continue
            path = os.path.join(self.out, rel)
            with contextlib.suppress(OSError):
                if self.ledger.entries[rel] == "dir":
                    os.rmdir(path)
                else:
                    os.remove(path)

    # ---- building and publishing units -------------------------------------------------------------------

    def intact(self, rel: str, size: int, xxh64: str) -> str | None:
        """Why OUT/rel is not the file a manifest recorded (missing, other size, other bytes), or None.
        The content is hashed every time: bit rot keeps a file's size, mtime, ctime and inode."""
        path = os.path.join(self.out, rel)
        if not os.path.isfile(path):
            return f"{rel} is missing"
        if os.path.getsize(path) != size:
            return f"{rel} has {os.path.getsize(path):,} bytes, not the {size:,} recorded"
        if file_xxh64(path) != xxh64:
            return f"{rel} is not the file recorded (xxh64 differs)"
        return None

    def unit_path(self, name: str) -> str:
        """Where a unit is built before it is published."""
        return os.path.join(self.tmp, "units", name)

    @contextlib.contextmanager
    def _publishing(self) -> Iterator[None]:
        """The readers' lock, exclusively: readers that are reading finish first, new ones wait."""
        fd = os.open(os.path.join(self.out, READERS_LOCK), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def publish(self, rel: str, unit: str) -> None:
        """Put the finished unit built in `unit` at OUT/`rel` ("" for OUT itself)."""
        with self._publishing():
            target = os.path.join(self.out, rel) if rel else self.out
            new = sorted(os.listdir(unit))
            prefix = f"{rel}/" if rel else ""
            placed = {prefix + n: Placed.of(os.path.join(unit, n), hashed=True)  # rename keeps size, mtime, inode
                      for n in new}
            if not os.path.exists(target):
                self.ledger.add(placed | {rel: "dir"})
                os.replace(unit, target)
                return
            if rel and not self.ledger.owns(rel):
                raise UsageProblem(f"{target} is not roolog's; move it away to convert partition {rel}")
            clash = [p for p in placed if os.path.lexists(os.path.join(self.out, p)) and not self.ledger.owns(p)]
            if clash:
                raise UsageProblem(f"{os.path.join(self.out, clash[0])} is not roolog's and roolog must write a file "
                                   "of that name; move it away and run again")
            old = self.ledger.under(rel) if rel else self._top_files()
            if rel and not self.ledger.foreign(rel):  # only roolog's files: swap the whole folder by renames
                self.ledger.add(placed)
                aside = os.path.join(self.tmp, "replaced")
                os.replace(target, aside)
                failpoint("publish")
                os.replace(unit, target)
                shutil.rmtree(aside)
                self.ledger.settle(placed)
                self.ledger.drop(p for p in old if p not in placed)
                return
            self._remove(prefix + MANIFEST, prefix + REPORT)  # from here OUT (or the partition) is not finished
            self.ledger.add(placed)
            self._remove(*(p for p in old if p not in placed))
            failpoint("publish")
            for n in new:
                if n != MANIFEST:
                    os.replace(os.path.join(unit, n), os.path.join(target, n))
            os.replace(os.path.join(unit, MANIFEST), os.path.join(target, MANIFEST))
            self.ledger.settle(placed)

    def _top_files(self) -> list[str]:
        """roolog's published files directly in OUT (shards, manifest, report of a flat output)."""
        return [p for p, e in self.ledger.entries.items() if "/" not in p and isinstance(e, Placed)]

    def _remove(self, *rels: str) -> None:
        """Remove roolog's files at these paths; a listed path where the file is gone, or is now another
        file (not the one roolog placed), is only dropped from the ledger: that file is left alone."""
        gone = []
        for rel in rels:
            if rel not in self.ledger.entries:
                continue
            if self.ledger.owns(rel):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.out, rel))
            gone.append(rel)
        if gone:
            self.ledger.drop(gone)

    def unpublish_manifest(self) -> None:
        """Remove OUT's top-level manifest: until it is written again, OUT as a whole is not finished."""
        self._remove(MANIFEST)

    def remove_partition(self, rel: str) -> None:
        """A partition the inputs no longer hold: roolog's files go; the folder too, unless it holds others'."""
        with self._publishing():
            self._remove(MANIFEST, f"{rel}/{MANIFEST}")
            self._remove(*self.ledger.under(rel))
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(self.out, rel))
                self.ledger.drop([rel])

    def published_partitions(self) -> list[str]:
        """The partitions roolog has published in OUT: its own folders that hold its own manifest."""
        return sorted(rel for rel, entry in self.ledger.entries.items()
                      if entry == "dir" and "/" not in rel and self.ledger.owns(f"{rel}/{MANIFEST}"))

    def read_scratch(self) -> str:
        """Where readers unpack compressed Parquet inputs (they need random access): OUT's temp folder."""
        scratch = os.path.join(self.tmp, "read")
        os.makedirs(scratch, exist_ok=True)
        return scratch

    def write_top(self, name: str, doc: dict) -> None:
        """A top-level JSON file of a partitioned OUT (its report or manifest), atomically and in the ledger."""
        built = os.path.join(self.tmp, name)
        write_json_atomic(built, doc)
        target = os.path.join(self.out, name)
        if os.path.lexists(target) and not self.ledger.owns(name):
            raise UsageProblem(f"{target} is not roolog's and roolog must write a file of that name; move it away")
        self.ledger.add({name: Placed.of(built, hashed=True)})
        os.replace(built, target)
        self.ledger.settle([name])


# ---- readers -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def reading(out: str) -> Iterator[None]:
    """Hold OUT's readers' lock shared while reading it (or one partition of it): a run publishing into OUT
    waits for the readers, and a reader that starts while a run publishes waits for it to finish. Outputs
    without the lock file (read-only copies) are read as they are."""
    candidates = [os.path.join(out, READERS_LOCK), os.path.join(os.path.dirname(os.path.abspath(out)), READERS_LOCK)]
    path = next((p for p in candidates if os.path.isfile(p)), None)  # OUT, or OUT/ds=1/ of a partitioned OUT
    try:
        fd = os.open(path, os.O_RDONLY) if path else None
    except OSError:
        fd = None
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
