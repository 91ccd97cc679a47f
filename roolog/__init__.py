"""roolog: impression-level recommendation logs -> request-level Parquet, losslessly, in bounded memory."""

import os
import signal

__version__ = "0.2.0"

if os.environ.get("ROOLOG_FAILPOINT") == "import":  # tests: Ctrl-C while the heavy modules import
    os.kill(os.getpid(), signal.SIGINT)

from .convert import convert  # noqa: E402
from .explode import explode  # noqa: E402

__all__ = ["__version__", "convert", "explode"]
