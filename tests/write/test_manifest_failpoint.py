"""A run killed halfway through the bytes of a `_manifest.json` (ROOLOG_FAILPOINT=manifest, in
shards.write_json_atomic) never leaves a partial manifest where a reader looks: the previous output stays
whole, or OUT says it is unfinished; and the same command then converges to what a clean run writes. The
publish step never shows a manifest whose shards are not all in place (renames watched one by one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from helpers import assert_same_rows, run_cli

import roolog
from roolog.synthetic import generate_impressions

KEY = ["--key", "request_id", "--order-by", "position"]
TMP_PREFIX = ".roolog-tmp"
BOOKKEEPING = {".roolog.json", ".roolog.lock", ".roolog.readers.lock"}  # roolog's own, rewritten by every run


def snapshot(out) -> dict[str, bytes]:
    """Every file under OUT outside roolog's temp folders and bookkeeping files, by relative path."""
    found = {}
    for root, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if not d.startswith(TMP_PREFIX)]
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), out)
            if rel not in BOOKKEEPING:
                with open(os.path.join(root, name), "rb") as fh:
                    found[rel] = fh.read()
    return found


def visible_manifests(out) -> list[str]:
    """Files named like a manifest (or its temp file) outside roolog's temp folders."""
    return sorted(rel for rel in snapshot(out) if os.path.basename(rel).startswith("_manifest.json"))


def assert_only_old_files_and_temp(out, old: dict[str, bytes], rewritten: tuple[str, ...] = ()) -> None:
    """OUT holds the old output byte for byte (but the files named `rewritten`, which must still be whole JSON),
    roolog's bookkeeping, and at most a temp folder of the dead run."""
    now = snapshot(out)
    assert sorted(now) == sorted(old)
    for rel in rewritten:
        json.loads(now[rel])
    assert {r: b for r, b in now.items() if r not in rewritten} == {r: b for r, b in old.items() if r not in rewritten}
    extra = set(os.listdir(out)) - {rel.split(os.sep)[0] for rel in old} - BOOKKEEPING
    assert all(name.startswith(TMP_PREFIX) for name in extra), extra
    for rel in visible_manifests(out):
        json.loads(old[rel])  # each one whole


def one_line_error(*args: str) -> str:
    proc = run_cli(*args)
    assert proc.returncode != 0, (args, proc.stdout)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


def exploded(out, target) -> pa.Table:
    roolog.explode(str(out), str(target))
    return pq.read_table(target)


def converge(args: list[str], out, clean) -> None:
    """The command without failpoint succeeds on OUT; OUT then holds what a clean run into `clean` holds."""
    rerun = run_cli(*args, "-o", str(out))
    assert rerun.returncode == 0, rerun.stderr
    assert run_cli(*args, "-o", str(clean)).returncode == 0
    assert sorted(os.listdir(out)) == sorted(os.listdir(clean))  # no temp folder left either
    mine, theirs = snapshot(out), snapshot(clean)
    assert sorted(mine) == sorted(theirs)
    for rel in mine:
        if rel.endswith(".parquet"):
            assert mine[rel] == theirs[rel], rel
        elif os.path.basename(rel) == "_manifest.json":
            assert comparable(mine[rel]) == comparable(theirs[rel]), rel
    assert run_cli("verify", str(out)).returncode == 0


def comparable(manifest: bytes) -> dict:
    doc = json.loads(manifest)
    doc.pop("created"), doc.pop("checksum")  # the checksum seals the timestamp too
    for p in doc.get("partitions", []):
        p.pop("skipped")  # a rerun skips the partitions the killed run had finished
        p.pop("manifest_xxh64")  # of the partition's manifest, its timestamp included
    return doc


# ---- (a) a flat output ---------------------------------------------------------------------------------

@pytest.fixture
def flat(tmp_path):
    """A flat OUT converted once from log.parquet, then log.parquet changed: (args, OUT, old snapshot, old rows)."""
    log, out = tmp_path / "log.parquet", tmp_path / "out"
    old_rows = generate_impressions(600, 5, seed=1, shuffle=True)
    pq.write_table(old_rows, log, row_group_size=700)
    args = ["convert", str(log), *KEY, "--shards", "2", "-q"]
    assert run_cli(*args, "-o", str(out)).returncode == 0
    pq.write_table(generate_impressions(500, 4, seed=2, shuffle=True), log, row_group_size=700)
    return args, out, snapshot(out), old_rows


def test_flat_killed_writing_the_manifest_keeps_the_old_output(flat, tmp_path):
    args, out, old, old_rows = flat
    killed = run_cli(*args, "-o", str(out), env={"ROOLOG_FAILPOINT": "manifest"})
    assert killed.returncode == -9
    assert_only_old_files_and_temp(out, old)
    assert any(n.startswith(TMP_PREFIX) for n in os.listdir(out))  # the dead run's half manifest is in there
    assert run_cli("verify", str(out)).returncode == 0
    assert_same_rows(old_rows, exploded(out, tmp_path / "old.parquet"))
    converge(args, out, tmp_path / "clean")
    assert_same_rows(pq.read_table(args[1]), exploded(out, tmp_path / "new.parquet"))


def test_flat_killed_at_publish_after_a_manifest_kill_is_unfinished_then_converges(flat, tmp_path):
    args, out, old, _ = flat
    assert run_cli(*args, "-o", str(out), env={"ROOLOG_FAILPOINT": "manifest"}).returncode == -9
    # the next try dies while publishing: the old output is going, the new one not in yet
    assert run_cli(*args, "-o", str(out), env={"ROOLOG_FAILPOINT": "publish"}).returncode == -9
    assert visible_manifests(out) == []
    for command in ("verify", "stats"):
        assert "unfinished roolog output" in one_line_error(command, str(out))
    one_line_error("explode", str(out), "-o", str(tmp_path / "x.parquet"))
    converge(args, out, tmp_path / "clean")


def test_publish_never_shows_a_manifest_before_its_shards(flat, monkeypatch):
    """In-process: after every rename into OUT, a manifest there lists only shards that are there, whole."""
    args, out, _, _ = flat
    replace, problems = os.replace, []

    def watched(src, dst, *rest, **kw):
        replace(src, dst, *rest, **kw)
        manifest = os.path.join(out, "_manifest.json")
        if os.path.dirname(os.path.abspath(dst)) != str(out) or not os.path.exists(manifest):
            return
        with open(manifest) as fh:
            doc = json.load(fh)
        for shard in doc["shards"]:
            path = os.path.join(out, shard["file"])
            if not os.path.isfile(path):
                problems.append(f"after {os.path.basename(dst)}: {shard['file']} missing")
                continue
            with open(path, "rb") as fh:
                if xxhash.xxh64(fh.read()).hexdigest() != shard["xxh64"]:
                    problems.append(f"after {os.path.basename(dst)}: {shard['file']} is not the one listed")

    monkeypatch.setattr(os, "replace", watched)
    roolog.convert([args[1]], str(out), key=("request_id",), order_by="position", shards=3, progress=False)
    assert problems == []


# ---- (b) a partitioned output: the top-level manifest (outdir.write_top) -------------------------------

# Arms the failpoint only for the top-level manifest of a partitioned OUT, so that a run that converted
# partitions dies writing OUT/_manifest.json, not a partition's (the failpoint itself is roolog's)
KILL_AT_TOP = """
import os, sys
from roolog.write import outdir
write_top = outdir.OutputFolder.write_top
def armed(self, name, doc):
    if name == "_manifest.json":
        os.environ["ROOLOG_FAILPOINT"] = "manifest"
    return write_top(self, name, doc)
outdir.OutputFolder.write_top = armed
sys.argv[0] = "roolog"
from roolog.cli import main
main()
"""


@pytest.fixture
def hive(tmp_path):
    """in/ds=1/a.parquet and in/ds=2/b.parquet converted once into OUT: (args, OUT, old snapshot, the rows
    explode gave then)."""
    rows = generate_impressions(800, 4, seed=5)
    ids = rows.column("request_id").to_numpy()
    for ds, name, part in (("1", "a", rows.filter(pa.array(ids < 400))), ("2", "b", rows.filter(pa.array(ids >= 400)))):
        (tmp_path / "in" / f"ds={ds}").mkdir(parents=True)
        pq.write_table(part, tmp_path / "in" / f"ds={ds}" / f"{name}.parquet")
    out = tmp_path / "out"
    args = ["convert", str(tmp_path / "in"), *KEY, "--shards", "2", "-q"]
    assert run_cli(*args, "-o", str(out)).returncode == 0
    assert sorted(os.listdir(out)) == sorted(BOOKKEEPING | {"ds=1", "ds=2", "_manifest.json", "_report.json"})
    return args, out, snapshot(out), exploded(out, tmp_path / "first.parquet")


def assert_top_manifest_whole_or_absent(out) -> None:
    path = out / "_manifest.json"
    if path.exists():
        doc = json.loads(path.read_text())  # a whole document, never a partial one
        assert doc["partitions"] and doc["format"]
    assert [m for m in visible_manifests(out) if os.sep not in m] in ([], ["_manifest.json"])


def test_partitioned_killed_writing_the_top_manifest_when_nothing_changed(hive, tmp_path):
    args, out, old, old_rows = hive
    killed = run_cli(*args, "-o", str(out), env={"ROOLOG_FAILPOINT": "manifest"})  # partitions up to date
    assert killed.returncode == -9
    assert_top_manifest_whole_or_absent(out)
    # the top-level report is written just before the manifest, by the same atomic rename
    assert_only_old_files_and_temp(out, old, rewritten=("_report.json",))
    assert run_cli("verify", str(out)).returncode == 0
    assert_same_rows(old_rows, exploded(out, tmp_path / "old.parquet"))
    converge(args, out, tmp_path / "clean")


def test_partitioned_killed_writing_the_top_manifest_after_a_partition_changed(hive, tmp_path):
    args, out, _, _ = hive
    changed = tmp_path / "in" / "ds=2" / "b.parquet"
    new_rows = generate_impressions(300, 3, seed=9)
    pq.write_table(new_rows, changed)
    killed = subprocess.run([sys.executable, "-c", KILL_AT_TOP, *args, "-o", str(out)], capture_output=True,
                            text=True)
    assert killed.returncode == -9, killed.stderr
    assert_top_manifest_whole_or_absent(out)
    assert not (out / "_manifest.json").exists()  # ds=2 was replaced: the old top manifest was taken away first
    for command in ("verify", "stats"):
        assert "unfinished roolog output" in one_line_error(command, str(out))
    converge(args, out, tmp_path / "clean")
    back = exploded(out, tmp_path / "new.parquet")
    unchanged = pq.read_table(tmp_path / "in" / "ds=1" / "a.parquet")
    assert_same_rows(pa.concat_tables([unchanged, new_rows]), back.drop_columns(["ds"]))
