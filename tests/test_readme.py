"""The README's commands work as written, in order, on a fresh folder holding only sample_data/: the quick
start's convert, the `roolog train` examples, then the "Training your own model" code (PyTorch, TorchRec)."""

import os
import re
import subprocess
import sys

import pytest
from helpers import REPO, SAMPLE

pytestmark = pytest.mark.slow

SECTIONS = ("## Quick start", "### `roolog train", "## Training your own model")


def _section(text: str, heading: str) -> str:
    start = text.index("\n", text.index("\n" + heading) + 1)  # the end of the heading's line
    end = re.search(r"^#{2,3} ", text[start:], re.M)
    return text[start: start + end.start()] if end else text[start:]


def readme_steps() -> list[tuple[str, str]]:
    """("bash", command) for each roolog command of the sections' bash blocks (a command chained with && in
    the quick start counts from its `roolog` part), ("python", code) for each python block, in order."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    steps = []
    for heading in SECTIONS:
        for lang, body in re.findall(r"```(bash|python)\n(.*?)```", _section(text, heading), re.S):
            if lang == "python":
                steps.append(("python", body))
                continue
            for line in body.splitlines():
                parts = [p.strip() for p in line.split("&&")]
                steps += [("bash", p) for p in parts if p.startswith("roolog ")]
    return steps


def test_the_readme_shows_what_this_test_runs():
    kinds = [k for k, _ in readme_steps()]
    commands = [c for k, c in readme_steps() if k == "bash"]
    assert commands[0].startswith("roolog convert sample_data/impressions.parquet -o out")
    assert sum(c.startswith("roolog train") for c in commands) == 2 and kinds.count("python") == 2


def test_the_readme_commands_run_in_order(tmp_path):
    os.symlink(SAMPLE, tmp_path / "sample_data")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    for kind, step in readme_steps():
        argv = ["bash", "-c", step] if kind == "bash" else [sys.executable, "-c", step]
        result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{step}\n{result.stderr[-3000:]}"
        if kind == "python":
            assert re.fullmatch(r"loss \d+\.\d{3}\n", result.stdout), result.stdout
    assert (tmp_path / "model" / "model.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()
