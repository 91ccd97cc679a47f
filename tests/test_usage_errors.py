"""Options that mean nothing, or two things at once, are usage errors: exit 2, a line naming the option (after
click's usage lines where click reads the option)."""

from __future__ import annotations

import os
import resource
import subprocess

import pytest
from helpers import SAMPLE, roolog_exe, run_cli

import roolog

SAMPLE_PARQUET = os.path.join(SAMPLE, "impressions.parquet")


@pytest.mark.parametrize("args,named", [
    (("--key", "request_id", "--key", "request_id"), "'request_id' more than once"),
    (("--key", "request_id", "--column-type", "user_id=int64", "--column-type", "user_id=string"),
     "two types"),
    (("--key", "request_id", "--delimiter", ""), "--delimiter must be one character"),
    (("--key", "request_id", "--memory-limit", "0"), "positive size"),
    (("--key", "request_id", "--partition-by", "request_id"), "is a key column"),
    (("--key", "request_id", "--column-type", "ghost=int64"), "['ghost'] that are in no input file"),
])
def test_meaningless_or_conflicting_options_are_one_line_exit_2(tmp_path, args, named):
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(tmp_path / "out"), "-q", *args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and named in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert not (tmp_path / "out").exists()


def test_more_shards_than_open_files_allowed_is_one_line(tmp_path):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.run([roolog_exe(), "convert", SAMPLE_PARQUET, "-o", str(tmp_path / "out"), "-q", "--key",
                           "request_id", "--shards", "5000"], capture_output=True, text=True, preexec_fn=low_limit)
    assert proc.returncode == 2 and "ulimit" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_schema_file_mistake_is_a_usage_error(tmp_path):
    schema = tmp_path / "s.toml"
    schema.write_text('key = ["request_id"]\nrequest = ["no_such_column"]\n')
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(tmp_path / "out"), "--schema", str(schema), "-q")
    assert proc.returncode == 2 and "no_such_column" in proc.stderr
    schema.write_text("key = [\n")
    proc = run_cli("convert", SAMPLE_PARQUET, "-o", str(tmp_path / "out"), "--schema", str(schema), "-q")
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr


def test_the_python_api_takes_one_path_and_one_key_as_strings(tmp_path):
    report = roolog.convert(SAMPLE_PARQUET, str(tmp_path / "out"), key="request_id", progress=False)
    assert report["totals"]["requests"] == 2000


def test_infer_schema_refuses_to_write_inside_an_output(tmp_path):
    out = tmp_path / "out"
    assert run_cli("convert", SAMPLE_PARQUET, "-o", str(out), "--key", "request_id", "-q").returncode == 0
    proc = run_cli("infer-schema", SAMPLE_PARQUET, "--key", "request_id", "-o", str(out / "schema.toml"))
    assert proc.returncode == 2 and "inside the roolog output" in proc.stderr
    assert not (out / "schema.toml").exists() and run_cli("verify", str(out)).returncode == 0


def test_a_full_disk_names_where_it_was_writing(tmp_path, monkeypatch):
    import errno

    from click.testing import CliRunner

    from roolog import cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "run_convert", full)
    result = CliRunner().invoke(cli.main, ["convert", SAMPLE_PARQUET, "-o", str(tmp_path / "out"), "--key",
                                           "request_id", "-q"])
    assert result.exit_code == 1
    assert f"no space left on the device that holds {tmp_path / 'out'}" in result.output


def test_a_full_disk_while_writing_shards_leaves_no_output_folder(tmp_path, monkeypatch):
    """The device fills while the first run writes its shards: the error names it, nothing is left."""
    import errno

    from click.testing import CliRunner

    from roolog import cli
    from roolog.write import shards

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.ShardWriter, "write", full)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.main, ["convert", SAMPLE_PARQUET, "-o", str(out), "--key", "request_id", "-q"])
    assert result.exit_code == 1 and f"no space left on the device that holds {out}" in result.output
    assert not out.exists()
