"""User-facing errors.

Anything a user can cause (a bad file, a wrong flag, a router trained for another pool)
raises an :class:`EntroRouterError`. The CLI prints its message as one line and exits
with code 2; no traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

from os import PathLike


class EntroRouterError(Exception):
    """An error caused by user input, reported as one line."""


class DataError(EntroRouterError):
    """Bad input data, located as precisely as we can: file, row, column."""

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike[str] | None = None,
        row: str | None = None,
        column: str | None = None,
    ) -> None:
        self.file, self.row, self.column, self.detail = file, row, column, message
        where = [str(part) for part in (file, row) if part is not None]
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(EntroRouterError):
    """A bad configuration value; the message names the file and field."""
