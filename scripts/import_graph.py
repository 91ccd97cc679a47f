#!/usr/bin/env python3
"""roolog's import graph, drawn by stage: which stage imports which, and any arrow that runs backwards.

Stages in the order data flows (a module may import its own stage and the ones before it, never a later one):

    leaves (errors, version, log, synthetic) < read < group < write < run < stats, data < train < cli

`roolog/__init__.py` is the public face: it names (lazily) what every stage offers, and nothing imports it.
Every import counts, the lazy ones inside functions too. tests/test_layout.py checks the graph with this
module; run it to see the graph:

    python scripts/import_graph.py          # stage -> stage arrows, how many module pairs each, as text
    python scripts/import_graph.py --dot    # the module graph as Graphviz DOT, one cluster per stage
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGE = os.path.join(REPO, "roolog")

LEAVES = {"roolog.errors", "roolog.version", "roolog.log", "roolog.synthetic"}
STAGES = ["leaves", "read", "group", "write", "run", "stats", "data", "train", "cli"]
RANK = {"leaves": 0, "read": 1, "group": 2, "write": 3, "run": 4, "stats": 5, "data": 5, "train": 6, "cli": 7}


def modules() -> dict[str, str]:
    """Every module of the package: dotted name -> file (a package is its __init__.py)."""
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


def imports(module: str, path: str) -> list[tuple[str, list[str]]]:
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


def stage(module: str) -> str | None:
    """The stage of a module; None for the public face (roolog/__init__.py)."""
    if module == "roolog":
        return None
    if module in LEAVES:
        return "leaves"
    part = module.split(".")[1]
    if part in ("cli", "__main__"):
        return "cli"
    if part in RANK:
        return part
    raise ValueError(f"{module}: in no stage; put it in the folder of its stage or list it in LEAVES")


def graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the roolog modules it imports; and the private names one module takes from another."""
    found = modules()
    edges: dict[str, set[str]] = {m: set() for m in found}
    private = []
    for module, path in found.items():
        for target, names in imports(module, path):
            for name in names:  # `from . import x` imports module roolog.x
                if f"{target}.{name}" in found:
                    edges[module].add(f"{target}.{name}")
                elif name.startswith("_") and not name.endswith("__"):  # a dunder (__version__) is public
                    private.append(f"{module} imports {target}.{name}")
            if target in found and not all(f"{target}.{n}" in found for n in names):
                edges[module].add(target)
    return edges, private


def backward(edges: dict[str, set[str]]) -> list[str]:
    """Every import that runs from a stage to a later one (or between stages of one rank), and every import
    of the package's __init__ (the public face imports the stages, never the other way round)."""
    wrong = []
    for module, targets in sorted(edges.items()):
        here = stage(module)
        if here is None:
            continue
        for target in sorted(targets):
            there = stage(target)
            if there is None:
                wrong.append(f"{module} imports the package roolog itself (take the name from its module)")
            elif RANK[there] > RANK[here] or (RANK[there] == RANK[here] and there != here):
                wrong.append(f"{module} ({here}) imports {target} ({there})")
    return wrong


def stage_arrows(edges: dict[str, set[str]]) -> dict[tuple[str, str], int]:
    arrows: dict[tuple[str, str], int] = {}
    for module, targets in edges.items():
        for target in targets:
            a, b = stage(module), stage(target)
            if a is not None and b is not None and a != b:
                arrows[(a, b)] = arrows.get((a, b), 0) + 1
    return arrows


def dot(edges: dict[str, set[str]]) -> str:
    lines = ["digraph roolog {", "  rankdir=LR; node [shape=box, fontsize=10];"]
    for s in STAGES:
        members = sorted(m for m in edges if stage(m) == s)
        lines.append(f'  subgraph "cluster_{s}" {{ label="{s}"; ' + " ".join(f'"{m}";' for m in members) + " }")
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if stage(module) is not None and stage(target) is not None:
                lines.append(f'  "{module}" -> "{target}";')
    lines.append("}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dot", action="store_true", help="print the module graph as Graphviz DOT")
    args = parser.parse_args()
    edges, private = graph()
    if args.dot:
        print(dot(edges))
    else:
        arrows = stage_arrows(edges)
        for (a, b), n in sorted(arrows.items(), key=lambda kv: (STAGES.index(kv[0][0]), STAGES.index(kv[0][1]))):
            print(f"{a:>7} -> {b:<7} {n:3d} module(s) importing")
    problems = backward(edges) + private
    for line in problems:
        print(f"wrong: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
