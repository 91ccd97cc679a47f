"""One view of OUT for every reader: exactly the partitions and shards the manifests list, each as recorded,
the manifests and reports sealed; what `verify` flags the next convert repairs (or, for files roolog did not
write, refuses in one line and leaves alone). Files count as roolog's only while they are the files it wrote."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, run_cli
from test_ownership import assert_kept, snapshot

import roolog
from roolog.errors import RoologError


@pytest.fixture(scope="module")
def hive_log(tmp_path_factory):
    """The sample log as two hive partitions ds=1 and ds=2."""
    root = tmp_path_factory.mktemp("hive") / "log"
    table = pq.read_table(os.path.join(SAMPLE, "impressions.parquet"))
    ids = sorted(set(table.column("request_id").to_pylist()))
    middle = ids[len(ids) // 2]
    halves = {"ds=1": pc.less(table["request_id"], middle), "ds=2": pc.greater_equal(table["request_id"], middle)}
    for name, rows in halves.items():
        (root / name).mkdir(parents=True)
        pq.write_table(table.filter(rows), root / name / "a.parquet")
    return root


def convert(log, out, *extra):
    proc = run_cli("convert", str(log), "-o", str(out), "--key", "request_id", "-q", *extra)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def verify(out):
    proc = run_cli("verify", str(out))
    assert "Traceback" not in proc.stderr
    return proc.returncode, proc.stderr


@pytest.fixture
def out(hive_log, tmp_path):
    target = tmp_path / "out"
    assert convert(hive_log, target).returncode == 0
    assert verify(target)[0] == 0
    return target


def readers_refuse(out, tmp_path, *names: str) -> None:
    """explode, stats and RequestDataset each fail in one line naming one of `names`."""
    for args in (("explode", str(out), "-o", str(tmp_path / "x.parquet")), ("stats", str(out))):
        proc = run_cli(*args)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        assert any(n in proc.stderr for n in names), proc.stderr
    from roolog.data import RequestDataset

    with pytest.raises(RoologError) as err:
        list(RequestDataset(str(out)))
    assert any(n in str(err.value) for n in names)


def test_a_shard_copied_into_out_is_flagged_never_read_and_never_replaced(out, hive_log, tmp_path):
    shutil.copy(out / "ds=1" / "part-00000.parquet", out / "ds=1" / "part-00009.parquet")
    code, err = verify(out)
    assert code == 1 and "ds=1/part-00009.parquet: not listed in any manifest" in err
    rows = roolog.explode(str(out), str(tmp_path / "x.parquet"))["rows"]
    assert rows == pq.read_metadata(os.path.join(SAMPLE, "impressions.parquet")).num_rows  # not read twice
    before = snapshot(out / "ds=1")
    proc = convert(hive_log, out)
    assert proc.returncode == 2 and "part-00009.parquet" in proc.stderr
    assert_kept(before, out / "ds=1")


def test_a_partition_folder_added_by_hand_is_flagged(out):
    shutil.copytree(out / "ds=1", out / "ds=3")
    code, err = verify(out)
    assert code == 1 and "ds=3: not listed in any manifest" in err
    assert err.count("not listed") == 1  # the folder, not each file in it


def test_a_partition_replaced_by_a_copy_of_another_is_refused_by_every_reader(out, hive_log, tmp_path):
    shutil.rmtree(out / "ds=2")
    shutil.copytree(out / "ds=1", out / "ds=2")  # every shard matches the (copied) manifest beside it
    code, err = verify(out)
    assert code == 1 and "ds=2: not the partition the top-level manifest lists" in err
    assert "not listed" not in err
    readers_refuse(out, tmp_path, "ds=2")
    before = snapshot(out / "ds=2")
    proc = convert(hive_log, out)  # not roolog's files: refused, left alone
    assert proc.returncode == 2 and "ds=2" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert_kept(before, out / "ds=2")
    shutil.rmtree(out / "ds=2")
    assert convert(hive_log, out).returncode == 0 and verify(out)[0] == 0


def test_a_missing_partition_is_a_verify_failure_and_convert_makes_it_again(out, hive_log):
    shutil.rmtree(out / "ds=2")
    code, err = verify(out)
    assert code == 1 and "ds=2: partition listed in the top-level manifest is missing" in err
    assert convert(hive_log, out).returncode == 0 and verify(out)[0] == 0


@pytest.mark.parametrize("path", ["_manifest.json", "ds=1/_manifest.json", "ds=2/_report.json", "_report.json"])
def test_a_manifest_or_report_edited_by_hand_is_caught_and_convert_repairs_it(out, hive_log, tmp_path, path):
    original = (out / path).read_bytes()
    doc = json.loads(original)
    doc["totals"]["requests"] += 5  # in place, as an editor saving over the file
    with open(out / path, "r+") as fh:
        fh.truncate(0)
        json.dump(doc, fh, indent=2)
    code, err = verify(out)
    assert code == 1 and f"{path}: changed since roolog wrote it" in err
    if path.endswith("_manifest.json"):
        readers_refuse(out, tmp_path, path)
    else:
        proc = run_cli("stats", str(out))
        assert proc.returncode == 1 and path in proc.stderr
    assert convert(hive_log, out).returncode == 0
    assert verify(out)[0] == 0 and json.loads((out / path).read_bytes())["totals"] == json.loads(original)["totals"]


def rot(shard) -> bytes:
    """Bytes of `shard` changed in place as bit rot leaves them (size, mtime, inode kept); its clean bytes."""
    clean = shard.read_bytes()
    st = os.stat(shard)
    with open(shard, "r+b") as fh:
        fh.seek(st.st_size // 3)
        fh.write(bytes(b ^ 0xFF for b in clean[st.st_size // 3:st.st_size // 3 + 3]))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    return clean


def test_a_damaged_shard_in_place_is_repaired_without_force(out, hive_log):
    shard = out / "ds=2" / "part-00000.parquet"
    clean = rot(shard)
    assert verify(out)[0] == 1
    assert convert(hive_log, out).returncode == 0
    assert shard.read_bytes() == clean and verify(out)[0] == 0


def test_a_ledger_copied_into_a_folder_of_user_files_owns_none_of_them(out, hive_log, tmp_path):
    mine = tmp_path / "mine"
    (mine / "ds=1").mkdir(parents=True)
    shutil.copy(out / ".roolog.json", mine / ".roolog.json")
    (mine / "_manifest.json").write_text('{"my": "notes"}')
    (mine / "ds=1" / "part-00000.parquet").write_bytes(b"my own bytes")
    before = snapshot(mine)
    for extra in ((), ("--overwrite",)):
        proc = convert(hive_log, mine, *extra)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "not the file roolog wrote there" in proc.stderr
        assert_kept(before, mine)


def test_a_foreign_ledger_temp_file_is_never_taken(hive_log, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / ".roolog.json.tmp").write_text("mine")
    (mine / "notes.txt").write_text("mine too")
    before = snapshot(mine)
    proc = convert(hive_log, mine, "--overwrite")
    assert proc.returncode == 2 and ".roolog.json.tmp" in proc.stderr
    assert_kept(before, mine)


def test_an_input_rewritten_in_place_with_its_mtime_put_back_fails_the_run(tmp_path, monkeypatch):
    """rsync --inplace -t: same size, same mtime, same inode, other bytes; only the ctime tells."""
    from roolog.read import sources

    log = tmp_path / "log.csv"
    log.write_text("k,v\n" + "".join(f"{i // 3},{i}\n" for i in range(3000)))
    st = os.stat(log)
    real_batches = sources.Source.batches

    def batches_then_rewrite(self, *args, **kwargs):
        for i, batch in enumerate(real_batches(self, *args, **kwargs)):
            yield batch
            if i == 0:
                with open(log, "r+b") as fh:
                    fh.seek(10)
                    fh.write(b"7")
                os.utime(log, ns=(st.st_atime_ns, st.st_mtime_ns))

    monkeypatch.setattr(sources.Source, "batches", batches_then_rewrite)
    with pytest.raises(RoologError, match="changed while roolog read it"):
        roolog.convert([str(log)], str(tmp_path / "out"), key=("k",), progress=False)
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_a_null_partition_and_the_text_hive_writes_for_null_stay_apart(tmp_path):
    import pyarrow as pa

    log = tmp_path / "log.parquet"
    pq.write_table(pa.table({"k": [1, 2, 3], "ds": [None, "__HIVE_DEFAULT_PARTITION__", "x"]}), log)
    out = tmp_path / "out"
    proc = run_cli("convert", str(log), "-o", str(out), "--key", "k", "--partition-by", "ds", "-q")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "ds=%5F_HIVE_DEFAULT_PARTITION__", "ds=__HIVE_DEFAULT_PARTITION__", "ds=x"]
    back = roolog.explode(str(out), str(tmp_path / "x.parquet"))
    assert back["rows"] == 3
    table = pq.read_table(tmp_path / "x.parquet").sort_by("k")
    assert table.column("ds").to_pylist() == [None, "__HIVE_DEFAULT_PARTITION__", "x"]
    again = tmp_path / "again"  # the output's folders read back as hive inputs keep the two apart too
    for k, d in enumerate(sorted(p.name for p in out.iterdir() if p.is_dir())):
        (again / d).mkdir(parents=True)
        pq.write_table(pa.table({"k": [k]}), again / d / "a.parquet")
    proc = run_cli("convert", str(again), "-o", str(tmp_path / "out2"), "--key", "k", "-q", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["partitions"] == 3


def test_hive_folders_spelling_one_value_two_ways_are_refused(tmp_path):
    import pyarrow as pa

    for name in ("ds=a b", "ds=a%20b"):
        (tmp_path / "log" / name).mkdir(parents=True)
        pq.write_table(pa.table({"k": [1], "v": [name]}), tmp_path / "log" / name / "p.parquet")
    proc = run_cli("convert", str(tmp_path / "log"), "-o", str(tmp_path / "out"), "--key", "k", "-q")
    assert proc.returncode == 2 and "spelled two ways" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_damaged_shard_under_partition_by_a_column_is_redone(tmp_path):
    log = os.path.join(SAMPLE, "impressions.parquet")
    out = tmp_path / "out"
    args = ("convert", log, "-o", str(out), "--key", "request_id", "--partition-by", "country", "-q")
    assert run_cli(*args).returncode == 0
    shard = sorted(out.glob("country=*/part-00000.parquet"))[0]
    clean = rot(shard)
    assert verify(out)[0] == 1
    assert run_cli(*args).returncode == 0
    assert shard.read_bytes() == clean and verify(out)[0] == 0


def test_a_file_the_user_puts_inside_a_partition_folder_is_seen_when_claiming_out(out, hive_log):
    (out / "ds=1" / "notes.txt").write_text("mine")
    proc = convert(hive_log, out)
    assert proc.returncode == 2 and "ds=1/notes.txt" in proc.stderr
    assert (out / "ds=1" / "notes.txt").read_text() == "mine"
    assert convert(hive_log, out, "--overwrite").returncode == 0
    assert (out / "ds=1" / "notes.txt").read_text() == "mine"
