"""The live progress display: one bar for the run, one per backend with ok/error counts."""

from __future__ import annotations

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

ALL = "all models"


class ProgressDisplay:
    """A rich progress bar with ETA; use as a context manager around the run."""

    def __init__(self, totals: Mapping[str, int], console: Console) -> None:
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
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, backend: str, ok: bool) -> None:
        for name in (ALL, backend):
            counts = self._counts[name]
            counts[0 if ok else 1] += 1
            self._progress.update(self._tasks[name], advance=1, ok=counts[0], errors=counts[1])
