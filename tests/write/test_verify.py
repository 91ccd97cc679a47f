"""Everything recorded is checked: a replaced, corrupted or deleted shard fails every reader naming it,
`roolog verify` exits 1, and the next convert repairs the output byte for byte; readers never see a mix
of two runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
from helpers import SAMPLE, roolog_exe, run_cli, shard_bytes

SAMPLE_PARQUET = os.path.join(SAMPLE, "impressions.parquet")
ARGS = ("--key", "request_id", "--order-by", "position", "--shards", "3")


def convert(out, *extra) -> subprocess.CompletedProcess:
    return run_cli("convert", SAMPLE_PARQUET, "-o", str(out), *ARGS, *extra)


def replace_with_another_shard(out) -> str:
    (out / "part-00001.parquet").write_bytes((out / "part-00000.parquet").read_bytes())
    return "part-00001.parquet"


def flip_a_byte(out) -> str:
    path = out / "part-00002.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return "part-00002.parquet"


def delete_a_shard(out) -> str:
    os.remove(out / "part-00000.parquet")
    return "part-00000.parquet"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "out"
    assert convert(out, "-q").returncode == 0
    return shard_bytes(out)


@pytest.mark.parametrize("damage", [replace_with_another_shard, flip_a_byte, delete_a_shard])
def test_a_damaged_shard_fails_readers_then_convert_repairs_it(tmp_path, clean, damage):
    out = tmp_path / "out"
    assert convert(out, "-q").returncode == 0
    assert run_cli("verify", str(out)).returncode == 0
    bad = damage(out)
    readers = {
        "explode": ("explode", str(out), "-o", str(tmp_path / "back.parquet")),
        "stats": ("stats", str(out)),
        "verify": ("verify", str(out)),
        "train": ("train", str(out), "--label", "click", "--smoke", "-q"),
    }
    for name, args in readers.items():
        proc = run_cli(*args)
        assert proc.returncode == 1, (name, proc.stderr)
        assert bad in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
    assert not (tmp_path / "back.parquet").exists()
    repair = convert(out)
    assert repair.returncode == 0 and bad in repair.stderr and "up to date" not in repair.stderr, repair.stderr
    assert shard_bytes(out) == clean
    verdict = run_cli("verify", str(out), "--json")
    assert verdict.returncode == 0 and json.loads(verdict.stdout) == {"output": str(out), "ok": True, "shards": 3,
                                                                      "problems": []}


def test_a_corrupted_byte_with_its_mtime_restored_is_caught_by_verify_and_convert_repairs(tmp_path, clean):
    """Bit rot keeps size, mtime, ctime and inode: convert hashes every shard every run, as verify does."""
    out = tmp_path / "out"
    assert convert(out, "-q").returncode == 0
    st = os.stat(out / "part-00002.parquet")
    with open(out / "part-00002.parquet", "r+b") as fh:  # in place: the same inode
        fh.seek(st.st_size // 2)
        byte = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(out / "part-00002.parquet", ns=(st.st_atime_ns, st.st_mtime_ns))
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1 and "part-00002.parquet" in proc.stderr and "xxh64" in proc.stderr
    assert convert(out, "-q").returncode == 0  # no --force: the damaged shard makes the output not up to date
    assert shard_bytes(out) == clean and run_cli("verify", str(out)).returncode == 0


def test_a_damaged_partition_is_redone_alone(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    hive = tmp_path / "h"
    for day in (1, 2):
        (hive / f"ds={day}").mkdir(parents=True)
        pq.write_table(pa.table({"k": [day, day, 9], "v": [1, 2, 3]}), hive / f"ds={day}" / "p.parquet")
    out = tmp_path / "out"
    assert run_cli("convert", str(hive), "-o", str(out), "--key", "k", "-q").returncode == 0
    untouched = (out / "ds=2" / "part-00000.parquet").stat().st_mtime_ns
    os.remove(out / "ds=1" / "part-00000.parquet")
    assert run_cli("verify", str(out)).returncode == 1
    proc = run_cli("convert", str(hive), "-o", str(out), "--key", "k", "--log-format", "json")
    assert proc.returncode == 0
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [e["partition"] for e in events if e["event"] == "redo"] == ["ds=1"]
    assert [e["partition"] for e in events if e["event"] == "skipped"] == ["ds=2"]
    assert (out / "ds=2" / "part-00000.parquet").stat().st_mtime_ns == untouched
    assert run_cli("verify", str(out)).returncode == 0


def test_verify_of_something_that_is_not_an_output(tmp_path):
    proc = run_cli("verify", str(tmp_path))
    assert proc.returncode == 1 and "not a finished roolog output" in proc.stderr
    assert run_cli("verify", str(tmp_path / "nope")).returncode == 2


def _waiting_for_flock(pid: int) -> bool:
    """Whether process `pid` is blocked waiting for a flock (the kernel lists waiters with '->')."""
    with open("/proc/locks") as fh:
        return any(re.match(rf"\s*\d+: -> FLOCK\s+ADVISORY\s+WRITE\s+{pid}\s", line) for line in fh)


def test_a_run_publishes_only_when_no_reader_is_reading(tmp_path):
    from roolog.write.outdir import reading

    out = tmp_path / "out"
    assert convert(out, "-q").returncode == 0
    before = shard_bytes(out)
    with reading(str(out)):  # a reader (explode, stats, train) is reading OUT
        run = subprocess.Popen([roolog_exe(), "convert", SAMPLE_PARQUET, "-o", str(out), *ARGS[:-1], "2",
                                "--force", "-q"], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120  # a bound on a hung test, not a verdict
        while not _waiting_for_flock(run.pid):
            assert run.poll() is None, f"convert published while a reader held the lock: {run.stderr.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert shard_bytes(out) == before  # built, waiting: the reader still sees the old output whole
    assert run.wait(timeout=120) == 0
    assert sorted(shard_bytes(out)) == ["part-00000.parquet", "part-00001.parquet"]
