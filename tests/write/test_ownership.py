"""OUT is roolog's only where roolog wrote it: foreign files are never deleted or replaced, inputs are never
read twice or from the output itself, and an input that changes while it is read fails the run."""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, assert_same_rows, run_cli

SAMPLE_PARQUET = os.path.join(SAMPLE, "impressions.parquet")


def snapshot(root) -> dict[str, str]:
    """Every file under `root` (symlinks not followed) -> sha256 of its bytes."""
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                with open(path, "rb") as fh:
                    found[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return found


def assert_kept(before: dict[str, str], root) -> None:
    """Every file that was there before is still there, byte for byte."""
    after = snapshot(root)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"files changed or gone: {changed}"


def small_log(path, keys=(1, 1, 2), values=(1, 2, 3)) -> None:
    pq.write_table(pa.table({"k": list(keys), "v": list(values)}), path)


def convert(*args, cwd=None) -> tuple[int, str]:
    proc = run_cli("convert", *map(str, args), "-q", cwd=cwd)
    assert "Traceback" not in proc.stderr
    return proc.returncode, proc.stderr


# ---- OUT and the inputs ---------------------------------------------------------------------------------

def test_out_as_the_hive_input_root_is_refused_and_nothing_changes(tmp_path):
    hive = tmp_path / "h"
    (hive / "ds=1").mkdir(parents=True)
    small_log(hive / "ds=1" / "p.parquet")
    before = snapshot(tmp_path)
    code, err = convert(hive, "-o", hive, "--key", "k")
    assert code == 2 and "output folder" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before  # not even a lock file was written


def test_an_input_inside_out_is_refused(tmp_path):
    out = tmp_path / "out"
    assert convert(SAMPLE_PARQUET, "-o", out, "--key", "request_id")[0] == 0
    before = snapshot(tmp_path)
    code, err = convert(out / "part-00000.parquet", "-o", out, "--key", "request_id", "--force")
    assert code == 2 and "inside the output" in err
    assert snapshot(tmp_path) == before


def test_out_inside_an_input_folder_is_kept_out_of_the_inputs(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    small_log(logs / "a.parquet")
    before = snapshot(logs)
    assert convert(logs, "-o", logs / "out", "--key", "k")[0] == 0
    proc = run_cli("convert", str(logs), "-o", str(logs / "out"), "--key", "k")  # the rerun does not read out/
    assert proc.returncode == 0 and "up to date" in proc.stderr
    manifest = json.loads((logs / "out" / "_manifest.json").read_text())
    assert [os.path.basename(i["path"]) for i in manifest["inputs"]] == ["a.parquet"]
    glob_run = run_cli("convert", str(logs / "**" / "*.parquet"), "-o", str(logs / "out"), "--key", "k", "--force")
    assert glob_run.returncode == 0, glob_run.stderr
    manifest = json.loads((logs / "out" / "_manifest.json").read_text())
    assert [os.path.basename(i["path"]) for i in manifest["inputs"]] == ["a.parquet"]
    assert_kept(before, logs)


def test_the_same_file_named_twice_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    small_log(tmp_path / "a.parquet")
    os.symlink(tmp_path / "a.parquet", tmp_path / "link.parquet")
    os.link(tmp_path / "a.parquet", tmp_path / "hard.parquet")
    for other in ("x/../a.parquet", "./a.parquet", "link.parquet", "hard.parquet"):
        code, err = convert("a.parquet", other, "-o", "out", "--key", "k", cwd=tmp_path)
        assert code == 2 and "same file" in err, (other, err)
    assert not (tmp_path / "out").exists()


def test_symlinked_partition_folders_are_followed_and_loops_refused(tmp_path):
    elsewhere = tmp_path / "archive" / "day2"
    elsewhere.mkdir(parents=True)
    small_log(elsewhere / "p.parquet", keys=(7, 7), values=(5, 6))
    hive = tmp_path / "h"
    (hive / "ds=1").mkdir(parents=True)
    small_log(hive / "ds=1" / "p.parquet")
    os.symlink(elsewhere, hive / "ds=2")
    assert convert(hive, "-o", tmp_path / "out", "--key", "k")[0] == 0
    assert sorted(json.loads((tmp_path / "out" / "_manifest.json").read_text())["partitions"][i]["name"]
                  for i in range(2)) == ["ds=1", "ds=2"]
    os.symlink(hive, hive / "ds=1" / "loop")
    code, err = convert(hive, "-o", tmp_path / "out2", "--key", "k")
    assert code == 2 and "again" in err


def test_an_input_that_changes_while_it_is_read_fails_the_run(tmp_path, monkeypatch):
    import roolog
    from roolog.errors import RoologError
    from roolog.read import sources

    log = tmp_path / "log.csv"
    log.write_text("k,v\n" + "".join(f"{i // 3},{i}\n" for i in range(3000)))
    real_batches = sources.Source.batches

    def batches_then_append(self):
        for i, batch in enumerate(real_batches(self)):
            yield batch
            if i == 0:
                with open(log, "a") as fh:
                    fh.write("9999,1\n")  # a writer still appending to the log

    monkeypatch.setattr(sources.Source, "batches", batches_then_append)
    with pytest.raises(RoologError, match="changed while roolog read it"):
        roolog.convert([str(log)], str(tmp_path / "out"), key=("k",), progress=False)
    assert not (tmp_path / "out" / "_manifest.json").exists()


# ---- folders written by other tools ------------------------------------------------------------------------

def write_dataset_folder(path) -> None:
    pads.write_dataset(pa.table({"x": [1, 2, 3]}), str(path), format="parquet")  # part-0.parquet


def spark_table_folder(path) -> None:
    """A table laid out the way Spark writes one: uuid part files, _SUCCESS, key=value/ folders."""
    run = uuid.UUID(int=7)
    (path / "ds=1").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), path / f"part-00000-{run}.c000.snappy.parquet", compression="snappy")
    pq.write_table(pa.table({"x": [2]}), path / "ds=1" / f"part-00000-{run}.c000.snappy.parquet")
    (path / "_SUCCESS").write_bytes(b"")
    (path / ".part-00000.crc").write_bytes(b"crc")


@pytest.mark.parametrize("make", [write_dataset_folder, spark_table_folder], ids=["write_dataset", "spark"])
def test_another_tools_folder_is_refused_then_shared_with_overwrite(tmp_path, make):
    other = tmp_path / "other"
    make(other)
    before = snapshot(tmp_path)
    code, err = convert(SAMPLE_PARQUET, "-o", other, "--key", "request_id")
    assert code == 2 and "--overwrite" in err
    assert snapshot(tmp_path) == before
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(other), "--key", "request_id", "--overwrite", "--json")
    assert proc.returncode == 0, proc.stderr
    left = json.loads(proc.stdout)["left_untouched"]
    assert left and all(p in snapshot(other) or os.path.isdir(other / p) for p in left)
    assert_kept(before, tmp_path)
    assert run_cli("convert", SAMPLE_PARQUET, "-o", str(other), "--key", "request_id", "--overwrite", "--force",
                   "--shards", "2", "-q").returncode == 0
    assert_kept(before, tmp_path)
    assert run_cli("explode", str(other), "-o", str(tmp_path / "back.parquet")).returncode == 0
    assert_same_rows(pq.read_table(SAMPLE_PARQUET), pq.read_table(tmp_path / "back.parquet"))


def test_a_foreign_file_with_a_shard_name_is_never_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    small_log(out / "part-00000.parquet")  # the user's own file, named as roolog names shards
    before = snapshot(tmp_path)
    code, err = convert(SAMPLE_PARQUET, "-o", out, "--key", "request_id", "--overwrite")
    assert code == 2 and "part-00000.parquet" in err and "not roolog's" in err
    assert_kept(before, tmp_path)
    assert not (out / "_manifest.json").exists()


def test_a_foreign_partition_folder_is_never_replaced(tmp_path):
    hive = tmp_path / "h"
    (hive / "ds=1").mkdir(parents=True)
    small_log(hive / "ds=1" / "p.parquet")
    out = tmp_path / "out"
    spark_table_folder(out)  # holds a foreign ds=1/
    before = snapshot(tmp_path)
    code, err = convert(hive, "-o", out, "--key", "k", "--overwrite")
    assert code == 2 and "ds=1" in err
    assert_kept(before, tmp_path)


def test_a_folder_named_like_roologs_temp_folder_is_not_taken_for_one(tmp_path):
    out = tmp_path / "out"
    (out / ".roolog-tmp-12345").mkdir(parents=True)
    (out / ".roolog-tmp-12345" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert convert(SAMPLE_PARQUET, "-o", out, "--key", "request_id")[0] == 2
    assert convert(SAMPLE_PARQUET, "-o", out, "--key", "request_id", "--overwrite")[0] == 0
    assert_kept(before, tmp_path)


def test_files_the_user_adds_inside_roologs_partitions_survive_redo_and_removal(tmp_path):
    hive = tmp_path / "h"
    for day in (1, 2):
        (hive / f"ds={day}").mkdir(parents=True)
        small_log(hive / f"ds={day}" / "p.parquet", keys=(day, day), values=(1, 2))
    out = tmp_path / "out"
    assert convert(hive, "-o", out, "--key", "k")[0] == 0
    (out / "ds=1" / "NOTES.md").write_text("checked by hand")
    (out / "ds=2" / "NOTES.md").write_text("also")
    (out / "mine.txt").write_text("top")
    before = snapshot(out)
    assert convert(hive, "-o", out, "--key", "k", "--force")[0] == 2  # foreign files now: refused
    small_log(hive / "ds=1" / "p.parquet", keys=(1, 1, 1), values=(1, 2, 3))
    assert convert(hive, "-o", out, "--key", "k", "--overwrite")[0] == 0  # ds=1 redone beside NOTES.md
    assert (out / "ds=1" / "NOTES.md").read_text() == "checked by hand"
    assert json.loads((out / "ds=1" / "_manifest.json").read_text())["totals"]["impressions"] == 3
    for name in ("mine.txt", "ds=1/NOTES.md", "ds=2/NOTES.md"):
        assert snapshot(out)[name] == before[name]


def test_explode_refuses_a_target_inside_out(tmp_path):
    out = tmp_path / "out"
    assert convert(SAMPLE_PARQUET, "-o", out, "--key", "request_id")[0] == 0
    before = snapshot(out)
    for target in ("part-00000.parquet", "new.parquet"):
        proc = run_cli("explode", str(out), "-o", str(out / target))
        assert proc.returncode == 2 and "inside the output" in proc.stderr
    assert snapshot(out) == before


def test_a_failed_first_run_leaves_no_folder(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("k,v\n1,2\n1,3,4\n")
    assert convert(bad, "-o", tmp_path / "out", "--key", "k")[0] == 1
    assert not (tmp_path / "out").exists()


def test_a_failed_first_run_keeps_what_the_user_put_in_out_meanwhile(tmp_path, monkeypatch):
    import roolog
    from roolog.errors import RoologError
    from roolog.read import sources

    out = tmp_path / "out"
    real_batches = sources.Source.batches

    def user_writes_then_bad_data(self):
        for batch in real_batches(self):
            (out / "notes.txt").write_text("written by the user while roolog ran")
            yield batch
            raise RoologError("bad data further on")

    monkeypatch.setattr(sources.Source, "batches", user_writes_then_bad_data)
    with pytest.raises(RoologError, match="bad data further on"):
        roolog.convert([SAMPLE_PARQUET], str(out), key=("request_id",), progress=False)
    assert sorted(os.listdir(out)) == ["notes.txt"]  # roolog's own files gone, the user's kept
    assert (out / "notes.txt").read_text() == "written by the user while roolog ran"


def test_an_output_of_an_older_roolog_without_a_ledger_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    assert convert(SAMPLE_PARQUET, "-o", out, "--key", "request_id")[0] == 0
    os.remove(out / ".roolog.json")  # as roolog 0.1 left its outputs
    before = snapshot(tmp_path)
    for extra in ((), ("--overwrite",)):
        code, err = convert(SAMPLE_PARQUET, "-o", out, "--key", "request_id", *extra)
        assert code == 2 and "before 0.2" in err
    assert snapshot(tmp_path) == before
