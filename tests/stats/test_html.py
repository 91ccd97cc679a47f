"""The stats page in a real headless browser (Debian's chromium): it loads, shows the chart, logs nothing."""

import os
import re
import shutil
import subprocess

import pytest
from helpers import REPO, SAMPLE, TRIVAGO, run_cli

pytestmark = pytest.mark.browser

ARTIFACTS = os.path.join(REPO, "test-artifacts")  # screenshots for a person to look at; ignored by git


def chromium(*args: str, tmp_path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_the_console_check_catches_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>undefined_fn()</script></body></html>")
    assert console_messages(chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path).stderr)


@pytest.mark.parametrize("source", ["raw", "output"])
def test_stats_page_loads_and_shows_the_chart(tmp_path, source):
    page = tmp_path / "stats.html"
    if source == "raw":
        args = [os.path.join(TRIVAGO, "clickout_impressions_exploded.csv"), "--key", "request_id"]
        columns = 17
    else:
        out = tmp_path / "out"
        assert run_cli("convert", os.path.join(SAMPLE, "impressions.parquet"), "-o", str(out), "--key",
                       "request_id", "-q").returncode == 0
        args, columns = [str(out)], 10
    assert run_cli("stats", *args, "--html", str(page), "-q").returncode == 0
    html = page.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "<script" not in html

    dom = chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    assert dom.stdout.count("<svg") == 1
    assert len(re.findall(r'<rect class="(?:before|after) bar"', dom.stdout)) == 2 * columns
    assert "<table" in dom.stdout

    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, f"stats-{source}.png")
    proc = chromium(f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri(), tmp_path=tmp_path)
    assert proc.returncode == 0 and console_messages(proc.stderr) == []
    assert os.path.getsize(shot) > 20_000  # a blank page is a few kB
