"""Ctrl-C or a crash mid-run leaves no file that looks finished, and the same command then succeeds."""

import os
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest
from helpers import roolog_exe

from roolog.synthetic import generate_impressions


@pytest.fixture(scope="module")
def big_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "shuffled.parquet"
    pq.write_table(generate_impressions(60_000, 60, seed=3, shuffle=True), path, row_group_size=20_000)
    return path


def start(log, out):
    return subprocess.Popen([roolog_exe(), "convert", str(log), "-o", str(out), "--key", "request_id",
                             "--shards", "2", "-q"], stderr=subprocess.PIPE, text=True)


def wait_until_working(out, proc):
    """Until the run has created its temp folder (it is reading and spilling)."""
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(out) and any(n.startswith(".roolog-tmp") for n in os.listdir(out)):
            time.sleep(0.3)
            return
        time.sleep(0.02)
    pytest.fail("convert never started working")


def test_ctrl_c_leaves_nothing_finished(big_log, tmp_path):
    out = tmp_path / "out"
    proc = start(big_log, out)
    wait_until_working(out, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out)  # the run made the folder; it takes it away again
    assert "was not created" in err  # and says so (not "left unfinished")


def test_kill_9_then_the_same_command_completes(big_log, tmp_path):
    out = tmp_path / "out"
    proc = start(big_log, out)
    wait_until_working(out, proc)
    proc.kill()
    proc.wait(timeout=30)
    assert not os.path.exists(out / "_manifest.json")
    assert not any(n.startswith("part-") for n in os.listdir(out))
    again = start(big_log, out)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert os.path.exists(out / "_manifest.json")
    assert not any(n.startswith(".roolog-tmp") for n in os.listdir(out))  # the dead run's spill is gone


def test_ctrl_c_while_modules_import_is_one_line(tmp_path):
    proc = subprocess.run([roolog_exe(), "convert", "x.parquet", "-o", str(tmp_path / "out"), "--key", "k"],
                          capture_output=True, text=True, env=dict(os.environ, ROOLOG_FAILPOINT="import"))
    assert proc.returncode == 130 and proc.stderr.startswith("roolog: error: interrupted")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
