"""What a run shows on stderr: events for people and schedulers (one line each, as text or as JSON), and
progress bars for people.

The library reports what happens through an `EventLog` (start, partition skipped or done, warnings,
summary); the CLI picks the form. `--log-format json` gives one JSON object per line, for a scheduler.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from tqdm import tqdm


class EventLog:
    def __init__(self, form: str = "text", quiet: bool = False, stream: TextIO | None = None):
        self.form = form
        self.quiet = quiet
        self.stream = stream or sys.stderr

    def __call__(self, event: str, **fields) -> None:
        if self.form == "json":
            record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields}
            self.stream.write(json.dumps(record, default=str) + "\n")
        elif not self.quiet and event != "summary":  # the CLI prints the summary table itself
            self.stream.write(f"roolog: {_text(event, fields)}\n")
        self.stream.flush()


def _text(event: str, fields: dict) -> str:
    where = fields.get("partition") or fields.get("output", "")
    if event == "start":
        return f"converting {fields['inputs']} input file(s) into {fields['output']}"
    if event == "skipped":
        return f"{where}: up to date (inputs unchanged), skipped"
    if event == "done":
        return f"{where}: {fields['requests']:,} requests, {fields['rows']:,} impressions"
    if event == "warning":
        return f"warning: {fields['message']}"
    return f"{event} {fields}"


def silent(event: str, **fields) -> None:
    """The log of a library call that did not ask for one."""


# tqdm bars on stderr, shown only to a person: off with --quiet or when stderr is not a terminal.
def bar(total: int | None, desc: str, unit: str, show: bool, **kw) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not (show and sys.stderr.isatty()),
                file=sys.stderr, leave=False, dynamic_ncols=True, **kw)
