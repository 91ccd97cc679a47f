"""The `roolog` console script. It lives outside the package so that Ctrl-C at any moment, even while
roolog's modules (pyarrow, polars, numpy) are still importing, is one line and exit code 130, not a
traceback (numpy even turns a KeyboardInterrupt inside its import into an ImportError)."""

import gc
import os
import signal


def _interrupted_while_starting(signum, frame) -> None:
    os.write(2, b"roolog: error: interrupted while starting; nothing was written\n")
    os._exit(130)  # nothing is open or written yet: leave at once


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    from roolog.cli import main as cli

    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is KeyboardInterrupt again
    try:
        cli()
    finally:
        # Arrow readers that are garbage go now, while Arrow is whole: their threads outliving it into the
        # interpreter's teardown can abort the process (apache/arrow#34314)
        gc.collect()
