"""tqdm bars on stderr, shown only to a person: off with --quiet or when stderr is not a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int | None, desc: str, unit: str, show: bool, **kw) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not (show and sys.stderr.isatty()),
                file=sys.stderr, leave=False, dynamic_ncols=True, **kw)
