"""The package's layout: no import cycle, no module reaching into another's private names, the Spark
engine independent of the local one, and the public API's docstring examples as written."""

from __future__ import annotations

import ast
import doctest
import graphlib
import os
import subprocess
import sys

import pytest
from helpers import REPO, SAMPLE

PACKAGE = os.path.join(REPO, "roolog")


def _modules() -> dict[str, str]:
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


def _imports(module: str, path: str) -> list[tuple[str, list[str]]]:
    """(imported roolog module, names taken from it) for every import in the file, lazy ones included."""
    with open(path) as fh:
        tree = ast.parse(fh.read())
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target == "roolog" or target.startswith("roolog."):
                found.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("roolog.")]
    return found


def test_the_import_graph_has_no_cycle_and_no_private_names_cross_modules():
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for module, path in modules.items():
        for target, names in _imports(module, path):
            if target == "roolog" and names == ["__version__"]:
                continue  # the version, defined in the package's __init__ before anything is imported
            for name in names:  # `from . import x` imports module roolog.x
                if f"{target}.{name}" in modules:
                    graph[module].add(f"{target}.{name}")
                elif name.startswith("_"):
                    private.append(f"{module} imports {target}.{name}")
            if target in modules and not all(f"{target}.{n}" in modules for n in names):
                graph[module].add(target)
    for module in graph:  # a module imports its package's __init__ too: leave that edge out (it is lazy)
        graph[module].discard("roolog")
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the circle
    assert private == []


def test_importing_the_spark_engine_does_not_import_the_local_one():
    code = "import sys, roolog.spark; print(' '.join(sorted(m for m in sys.modules if m.startswith('roolog'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "roolog.spark" in loaded
    assert "roolog.local" not in loaded and "roolog.driver" not in loaded
    assert "pyspark" not in loaded  # PySpark itself is imported only when a session starts


def test_import_roolog_is_light_and_the_public_api_is_all_there():
    code = ("import sys, roolog; light = sorted(m for m in sys.modules if m.startswith(('roolog.', 'pyarrow')));"
            "print(' '.join(light)); print(' '.join(n for n in roolog.__all__ if getattr(roolog, n, None) is None))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy, missing = (out.split("\n") + [""])[:2]
    assert heavy.split() == []
    assert missing.split() == []
    import roolog

    assert callable(roolog.convert) and callable(roolog.explode) and callable(roolog.verify)
    with pytest.raises(AttributeError):
        roolog.no_such_name  # noqa: B018


def test_the_docstring_examples_run_as_written(tmp_path, monkeypatch):
    """roolog.convert's, then roolog.data.RequestDataset's (which reads the output convert's made)."""
    import roolog
    import roolog.data
    import roolog.driver

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
    tests = [t for t in [*finder.find(roolog.driver.convert, "convert", globs={"roolog": roolog}),
                         *finder.find(roolog.data.RequestDataset, "RequestDataset", globs={})] if t.examples]
    assert [t.name for t in tests] == ["convert", "RequestDataset"]
    for test in tests:
        runner.run(test, out=lambda _: None)
    assert failures == []
