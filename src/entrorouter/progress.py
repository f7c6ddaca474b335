"""Progress output that suits where stderr goes.

On a terminal, tqdm redraws its bar in place. Into a log file or a CI console the same
redraws become one endless line of carriage returns (~1,200 of them for a quickstart), so
when stderr is not a terminal :func:`plain_progress_lines` makes each redraw a line of its
own and asks tqdm (through its ``TQDM_MININTERVAL`` setting) for one every
:data:`PLAIN_INTERVAL_S` seconds: a long phase still says what it is doing, rarely.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TextIO

PLAIN_INTERVAL_S = 20


class PlainLines(io.TextIOBase):
    """A text stream that turns carriage-return redraws into plain lines and drops blank ones."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if "\r" in text:
            lines = (line.rstrip() for line in text.replace("\r", "\n").split("\n"))
            self.stream.write("".join(f"{line}\n" for line in lines if line))
        else:
            self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.stream.fileno()


def plain_progress_lines() -> None:
    """When stderr is not a terminal, make progress bars occasional plain lines."""
    if sys.stderr.isatty() or isinstance(sys.stderr, PlainLines):
        return
    os.environ.setdefault("TQDM_MININTERVAL", str(PLAIN_INTERVAL_S))
    sys.stderr = PlainLines(sys.stderr)
