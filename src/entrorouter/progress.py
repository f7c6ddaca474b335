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
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def plain_progress_lines() -> Iterator[None]:
    """While it lasts, and when stderr is not a terminal, progress bars are occasional plain lines."""
    if sys.stderr.isatty() or isinstance(sys.stderr, PlainLines):
        yield
        return
    saved_stderr, saved_interval = sys.stderr, os.environ.get("TQDM_MININTERVAL")
    os.environ.setdefault("TQDM_MININTERVAL", str(PLAIN_INTERVAL_S))
    sys.stderr = PlainLines(saved_stderr)
    try:
        yield
    finally:
        sys.stderr = saved_stderr
        if saved_interval is None:
            os.environ.pop("TQDM_MININTERVAL", None)
