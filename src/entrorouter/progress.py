"""Progress output that suits where stderr goes.

On a terminal, tqdm redraws its bar in place. Into a log file or a CI console the same
redraws become one endless line of carriage returns (~1,200 of them for a quickstart), so
when stderr is not a terminal :func:`plain_progress_lines` turns redraws into plain lines:
the first of each bar, then at most one every :data:`PLAIN_INTERVAL_S` seconds. A long
phase still says what it is doing, rarely.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

PLAIN_INTERVAL_S = 20


class PlainLines(io.TextIOBase):
    """A text stream that turns carriage-return redraws into occasional plain lines.

    A redraw is written when it starts a new bar (its label, the text before the first
    ``:``, changed) or :data:`PLAIN_INTERVAL_S` after the last one written; blank redraws
    (a bar erasing itself) are dropped. Text without a carriage return passes unchanged.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._label: str | None = None
        self._written_at = 0.0

    def write(self, text: str) -> int:
        if "\r" not in text:
            self.stream.write(text)
            return len(text)
        now = time.monotonic()
        for line in text.replace("\r", "\n").split("\n"):
            line = line.rstrip()
            label = line.split(":", 1)[0]
            if line and (label != self._label or now - self._written_at >= PLAIN_INTERVAL_S):
                self.stream.write(line + "\n")
                self._label, self._written_at = label, now
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
    saved = sys.stderr
    sys.stderr = PlainLines(saved)
    try:
        yield
    finally:
        sys.stderr = saved
