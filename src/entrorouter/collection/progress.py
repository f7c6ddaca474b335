"""The live progress display: one bar for the run, one per backend with ok/error counts.

When the console is not a terminal (a log file, CI), a live display would print nothing
until the end; instead a plain line with the counts comes every
:data:`~entrorouter.progress.PLAIN_INTERVAL_S` seconds, so a long run is never silent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from entrorouter.progress import PLAIN_INTERVAL_S

ALL = "all models"


class ProgressDisplay:
    """A rich progress bar with ETA; use as a context manager around the run."""

    def __init__(self, totals: Mapping[str, int], console: Console) -> None:
        self._console = console
        self._live = console.is_terminal
        self._started = self._last_line = time.monotonic()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[errors]} errors[/]"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=5,  # the display shares the collector's CPU; 5 Hz reads smoothly
        )
        self._tasks: dict[str, TaskID] = {}
        self._counts: dict[str, list[int]] = {}
        for name, total in {ALL: sum(totals.values()), **totals}.items():
            self._tasks[name] = self._progress.add_task(name, total=total, ok=0, errors=0)
            self._counts[name] = [0, 0]

    def __enter__(self) -> ProgressDisplay:
        if self._live:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live:
            self._progress.stop()
        else:
            self._plain_line()

    def advance(self, backend: str, ok: bool) -> None:
        for name in (ALL, backend):
            counts = self._counts[name]
            counts[0 if ok else 1] += 1
            self._progress.update(self._tasks[name], advance=1, ok=counts[0], errors=counts[1])
        if not self._live and time.monotonic() - self._last_line >= PLAIN_INTERVAL_S:
            self._plain_line()

    def _plain_line(self) -> None:
        self._last_line = time.monotonic()
        task = self._progress.tasks[self._tasks[ALL]]
        ok, errors = self._counts[ALL]
        self._console.print(
            f"collect: {task.completed:.0f}/{task.total:.0f} pairs ({ok} ok, {errors} errors), "
            f"{self._last_line - self._started:.0f} s",
            highlight=False,
        )
