"""scripts/roolog-cron.sh: silent on success, JSON log lines, locked is not a failure, errors reach cron mail."""

import fcntl
import json
import os
import subprocess

from helpers import REPO, SAMPLE, roolog_exe

WRAPPER = os.path.join(REPO, "scripts", "roolog-cron.sh")
SAMPLE_PARQUET = os.path.join(SAMPLE, "impressions.parquet")


def run(*args, env_extra=None):
    env = dict(os.environ, ROOLOG_BIN=roolog_exe(), **(env_extra or {}))
    return subprocess.run(["bash", WRAPPER, *map(str, args)], capture_output=True, text=True, env=env)


def test_success_is_silent_and_logged(tmp_path):
    log = tmp_path / "roolog.jsonl"
    proc = run(SAMPLE_PARQUET, tmp_path / "out", "request_id", env_extra={"ROOLOG_LOG": str(log)})
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events == ["start", "done", "summary"]
    again = run(SAMPLE_PARQUET, tmp_path / "out", "request_id", env_extra={"ROOLOG_LOG": str(log)})
    assert again.returncode == 0 and json.loads(log.read_text().splitlines()[-2])["event"] == "skipped"


def test_locked_is_not_a_failure_unless_asked(tmp_path):
    out, log = tmp_path / "out", tmp_path / "roolog.jsonl"
    out.mkdir()
    with open(out / ".roolog.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        assert run(SAMPLE_PARQUET, out, "request_id", env_extra={"ROOLOG_LOG": str(log)}).returncode == 0
        strict = run(SAMPLE_PARQUET, out, "request_id", env_extra={"ROOLOG_LOG": str(log), "ROOLOG_LOCKED_EXIT": "75"})
        assert strict.returncode == 75
    assert json.loads(log.read_text().splitlines()[-1])["event"] == "locked"


def test_failure_reaches_cron_mail(tmp_path):
    log = tmp_path / "roolog.jsonl"
    proc = run(SAMPLE_PARQUET, tmp_path / "out", "no_such_column", env_extra={"ROOLOG_LOG": str(log)})
    assert proc.returncode == 1
    assert "failed with exit code 1" in proc.stderr and "no_such_column" in proc.stderr
