"""The package's layout: one folder per stage, no import from a stage to a later one, no cycle, no module
reaching into another's private names, the README's tree as the folders are, the Spark engine independent of
the local one, and the public API's docstring examples as written."""

from __future__ import annotations

import doctest
import graphlib
import os
import subprocess
import sys

import pytest
from helpers import REPO, SAMPLE

sys.path.insert(0, os.path.join(REPO, "scripts"))
import import_graph  # noqa: E402  (scripts/import_graph.py: the graph by stage, also drawn by hand)


def test_the_import_graph_has_no_cycle_and_no_private_names_cross_modules():
    edges, private = import_graph.graph()
    graphlib.TopologicalSorter(edges).prepare()  # raises CycleError naming the circle
    assert private == []


def test_no_stage_imports_a_later_one():
    """read < group < write < run < stats, data < train < cli, the leaves below all, the package's __init__
    imported by none (the version lives in roolog/version.py)."""
    edges, _ = import_graph.graph()
    assert import_graph.backward(edges) == []
    assert {import_graph.stage(m) for m in edges} == set(import_graph.STAGES) | {None}


def test_the_stage_check_sees_a_backward_import():
    """The check itself: a group module importing the write stage, or a module importing the package's
    __init__ (as `from . import __version__` did), is reported."""
    edges, _ = import_graph.graph()
    edges["roolog.group.keys"] = edges["roolog.group.keys"] | {"roolog.write.manifest"}
    edges["roolog.read.sources"] = edges["roolog.read.sources"] | {"roolog"}
    edges["roolog.stats.report"] = edges["roolog.stats.report"] | {"roolog.data"}
    assert import_graph.backward(edges) == [
        "roolog.group.keys (group) imports roolog.write.manifest (write)",
        "roolog.read.sources imports the package roolog itself (take the name from its module)",
        "roolog.stats.report (stats) imports roolog.data (data)",
    ]


def test_the_top_level_holds_only_the_public_faces_and_small_leaves():
    top = sorted(n for n in os.listdir(os.path.join(REPO, "roolog")) if n.endswith(".py"))
    assert len(top) <= 8, top
    folders = sorted(n for n in os.listdir(os.path.join(REPO, "roolog"))
                     if os.path.isfile(os.path.join(REPO, "roolog", n, "__init__.py")))
    assert folders == ["group", "read", "run", "stats", "train", "write"]


def test_the_readme_tree_lists_every_module_in_its_folder():
    """README "How it works": a block per folder (`read/`, ...) naming each of its modules; the top-level ones
    beside it. A module added, moved or removed without the README fails here."""
    with open(os.path.join(REPO, "README.md")) as fh:
        text = fh.read()
    section = text[text.index("## How it works"):]
    tree = section[section.index("```") + 3:]
    tree = tree[:tree.index("```")]
    listed: dict[str, set[str]] = {}
    folder = ""
    for line in tree.splitlines():
        head = line.split()[0] if line.strip() and not line.startswith(" ") else None
        if head:
            folder = "" if head == "roolog/" else head.rstrip("/")
        for word in line.split():
            if word.endswith(".py"):
                listed.setdefault(folder, set()).add(word)
    on_disk: dict[str, set[str]] = {}
    for path in import_graph.modules().values():
        name = os.path.basename(path)
        if name != "__init__.py" and name != "__main__.py":
            rel = os.path.relpath(os.path.dirname(path), os.path.join(REPO, "roolog"))
            on_disk.setdefault("" if rel == "." else rel, set()).add(name)
    assert listed == on_disk


def test_importing_the_spark_engine_does_not_import_the_local_one():
    code = ("import sys, roolog.run.spark; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('roolog'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "roolog.run.spark" in loaded
    assert "roolog.run.local" not in loaded and "roolog.run.driver" not in loaded
    assert "pyspark" not in loaded  # PySpark itself is imported only when a session starts


def test_import_roolog_is_light_and_the_public_api_is_all_there():
    code = ("import sys, roolog; light = sorted(m for m in sys.modules if m.startswith(('roolog.', 'pyarrow')));"
            "print(' '.join(light)); print(' '.join(n for n in roolog.__all__ if getattr(roolog, n, None) is None))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy, missing = (out.split("\n") + [""])[:2]
    assert heavy.split() == ["roolog.version"]  # one line, no imports of its own
    assert missing.split() == []
    import roolog

    assert callable(roolog.convert) and callable(roolog.explode) and callable(roolog.verify)
    with pytest.raises(AttributeError):
        roolog.no_such_name  # noqa: B018


def test_public_functions_stay_callable_once_their_stage_folders_are_imported():
    """`roolog.stats` names a stage folder and a function: importing roolog.stats.report (the CLI does) binds the
    name to the folder, which must then still work as the function."""
    code = ("import roolog.stats.report, roolog.write.checks, roolog.run.explode, roolog; "
            "r = roolog.stats(['sample_data/impressions.parquet'], ('request_id',)); "
            "from roolog import stats; print(r['requests'], stats(['sample_data/impressions.parquet'], "
            "('request_id',))['requests'], callable(roolog.verify), callable(roolog.explode))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.split() == ["2000", "2000", "True", "True"]


def test_the_docstring_examples_run_as_written(tmp_path, monkeypatch):
    """roolog.convert's, then roolog.data.RequestDataset's (which reads the output convert's made)."""
    import roolog
    import roolog.data
    import roolog.run.driver

    monkeypatch.chdir(tmp_path)
    os.symlink(SAMPLE, tmp_path / "sample_data")
    failures = []

    class Collect(doctest.DocTestRunner):
        def report_failure(self, out, test, example, got):
            failures.append(f"{example.source.strip()} -> {got.strip()} (expected {example.want.strip()})")

        def report_unexpected_exception(self, out, test, example, exc_info):
            failures.append(f"{example.source.strip()} raised {exc_info[1]!r}")

    finder = doctest.DocTestFinder()
    runner = Collect(verbose=False)
    tests = [t for t in [*finder.find(roolog.run.driver.convert, "convert", globs={"roolog": roolog}),
                         *finder.find(roolog.data.RequestDataset, "RequestDataset", globs={})] if t.examples]
    assert [t.name for t in tests] == ["convert", "RequestDataset"]
    for test in tests:
        runner.run(test, out=lambda _: None)
    assert failures == []
