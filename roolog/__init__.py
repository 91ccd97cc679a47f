"""roolog: impression-level recommendation logs -> request-level Parquet, losslessly, in bounded memory.

The public API (each name is imported when first used, so `import roolog` stays light):

    convert(inputs, out, *, key, ...)      logs -> request-level shards in OUT, with manifest and report
    explode(out, target)                   the exact inverse: OUT -> one Parquet file of impression rows
    verify(out)                            every shard of OUT against its manifest (size and xxh64)
    stats(paths, key)                      how much duplication raw logs or a converted OUT hold
    read_manifest(out)                     an output's manifest as a typed record (UnitManifest, ...)
    ReadOptions, OutputOptions, RunOptions the options of convert, as records
    RoologError, UsageProblem              bad data (exit 1) and bad usage (exit 2)
    data                                   RequestDataset and RequestBatch for your own trainer (needs torch)
"""

from __future__ import annotations

import importlib
import os
import signal
from typing import TYPE_CHECKING, Any

from .version import __version__

if os.environ.get("ROOLOG_FAILPOINT") == "import":  # tests: Ctrl-C while the heavy modules import
    os.kill(os.getpid(), signal.SIGINT)

_PUBLIC = {
    "convert": "roolog.run.driver", "explode": "roolog.run.explode", "verify": "roolog.write.checks",
    "stats": "roolog.stats.statistics", "read_manifest": "roolog.write.manifest",
    "UnitManifest": "roolog.write.manifest", "PartitionedManifest": "roolog.write.manifest",
    "ReadOptions": "roolog.read.inputs", "OutputOptions": "roolog.run.options", "RunOptions": "roolog.run.options",
    "RoologError": "roolog.errors", "UsageProblem": "roolog.errors",
}
__all__ = ["__version__", "convert", "explode", "verify", "stats", "read_manifest", "UnitManifest",
           "PartitionedManifest", "ReadOptions", "OutputOptions", "RunOptions", "RoologError", "UsageProblem", "data"]

if TYPE_CHECKING:
    from .errors import RoologError, UsageProblem
    from .read.inputs import ReadOptions
    from .run.driver import convert
    from .run.explode import explode
    from .run.options import OutputOptions, RunOptions
    from .stats.statistics import stats
    from .write.checks import verify
    from .write.manifest import PartitionedManifest, UnitManifest, read_manifest


def __getattr__(name: str) -> Any:
    if name == "data":  # the submodule roolog.data (torch), imported when first used
        return importlib.import_module("roolog.data")
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'roolog' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC) | {"data"})
