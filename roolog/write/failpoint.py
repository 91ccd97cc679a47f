"""Crash tests: ROOLOG_FAILPOINT=name kills the process at the named point, as a power cut or kill -9 would.

Points: import (SIGINT while the heavy modules import), read, spill, write, manifest (halfway through a
manifest's bytes), publish. Spark tasks have their own (ROOLOG_SPARK_FAILPOINT, roolog.run.spark).
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("ROOLOG_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
