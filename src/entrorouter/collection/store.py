"""The progress store: one SQLite row per finished (query, model) pair, beside the output.

Each pair is committed as soon as it is finished, so an interrupted run (Ctrl-C, a kill,
a crash) loses at most the calls that were in flight, and the next run sends only what
is missing. Rows hold everything the table needs plus the answer text, so a changed
grader re-grades stored answers without calling the model again.

``status`` is ``graded`` (a score), ``ungraded`` (an answer whose grading failed) or
``error`` (the call failed). ``request_hash`` identifies what was sent (messages, request
fields, model id) and ``grade_hash`` how it was graded; a pair whose hash no longer
matches the current query file and pool.yaml is sent (or graded) again.

One run at a time: the store is locked while a run uses it.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TextIO

from entrorouter.errors import ConfigError

SCHEMA_VERSION = 1
GRADED, UNGRADED, ERROR = "graded", "ungraded", "error"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    query_id TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('graded', 'ungraded', 'error')),
    request_hash TEXT NOT NULL,
    grade_hash TEXT,
    response TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    usage_estimated INTEGER,
    latency_s REAL,
    cost REAL,
    score REAL,
    error TEXT,
    attempts INTEGER,
    finished_at REAL NOT NULL,
    PRIMARY KEY (query_id, model)
) WITHOUT ROWID
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished (query, model) pair, as stored."""

    query_id: str
    model: str
    status: str
    request_hash: str
    grade_hash: str | None = None
    response: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_estimated: bool | None = None
    latency_s: float | None = None
    cost: float | None = None
    score: float | None = None
    error: str | None = None
    attempts: int | None = None
    finished_at: float = 0.0  # set by ProgressStore.record


OUTCOME_COLUMNS = tuple(f.name for f in fields(Outcome))
_INSERT = (
    f"INSERT OR REPLACE INTO outcomes ({', '.join(OUTCOME_COLUMNS)}) VALUES ({', '.join('?' for _ in OUTCOME_COLUMNS)})"
)


@dataclass(frozen=True, slots=True)
class PairState:
    """What the planner needs to know about a stored pair."""

    status: str
    request_hash: str
    grade_hash: str | None


def store_path_for(out: str | os.PathLike[str]) -> Path:
    """The store beside an output table: ``TABLE.parquet`` -> ``TABLE.parquet.progress.sqlite``."""
    out = Path(out)
    return out.with_name(out.name + ".progress.sqlite")


class ProgressStore:
    """The SQLite file of one output table; use as a context manager."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per pair.
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill
            self._check_version()
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._lock.close()
            raise ConfigError(f"{self.path}: not a usable progress store ({exc}); move it away to start over") from None

    def _acquire_lock(self) -> TextIO:
        lock = self.path.with_name(self.path.name + ".lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ConfigError(f"{self.path}: another `entrorouter collect` is using this progress store") from None
        return lock

    def _check_version(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = self._db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'outcomes'").fetchone()[0]
        if tables and version != SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path}: progress store format {version}, this version reads {SCHEMA_VERSION}; "
                "move it away to start over"
            )
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def __enter__(self) -> ProgressStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self._lock.close()

    # ------------------------------------------------------------- reading
    def state(self, query_id: str, model: str) -> PairState | None:
        """What the planner needs to know about one stored pair (None: never stored)."""
        row = self._db.execute(
            "SELECT status, request_hash, grade_hash FROM outcomes WHERE query_id = ? AND model = ?",
            (query_id, model),
        ).fetchone()
        return None if row is None else PairState(*row)

    def get(self, query_id: str, model: str) -> Outcome | None:
        row = self._db.execute(
            f"SELECT {', '.join(OUTCOME_COLUMNS)} FROM outcomes WHERE query_id = ? AND model = ?",
            (query_id, model),
        ).fetchone()
        return None if row is None else _outcome(row)

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM outcomes").fetchone()[0]

    def ordered(
        self, query_ids: Sequence[str], models: Sequence[str], chunk: int = 10_000
    ) -> Iterator[tuple[int, Outcome]]:
        """``(query position, outcome)`` for the given queries x models, in query then
        model order, streamed (the output may be larger than memory allows at once)."""
        db = self._db
        db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_q (pos INTEGER PRIMARY KEY, query_id TEXT UNIQUE)")
        db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_m (pos INTEGER PRIMARY KEY, model TEXT UNIQUE)")
        db.execute("BEGIN")
        db.execute("DELETE FROM wanted_q")
        db.execute("DELETE FROM wanted_m")
        db.executemany("INSERT INTO wanted_q VALUES (?, ?)", enumerate(query_ids))
        db.executemany("INSERT INTO wanted_m VALUES (?, ?)", enumerate(models))
        db.execute("COMMIT")
        columns = ", ".join(f"o.{c}" for c in OUTCOME_COLUMNS)
        cursor = db.execute(
            f"SELECT q.pos, {columns} FROM wanted_q q "
            "JOIN outcomes o ON o.query_id = q.query_id JOIN wanted_m m ON m.model = o.model "
            "ORDER BY q.pos, m.pos"
        )
        while rows := cursor.fetchmany(chunk):
            for row in rows:
                yield row[0], _outcome(row[1:])

    # ------------------------------------------------------------- writing
    def record(self, outcome: Outcome) -> None:
        """Store (or replace) one pair, stamped now; autocommit makes it durable at once."""
        outcome = replace(outcome, finished_at=time.time())
        self._db.execute(_INSERT, [getattr(outcome, column) for column in OUTCOME_COLUMNS])


def _outcome(row: Sequence[object]) -> Outcome:
    values = dict(zip(OUTCOME_COLUMNS, row, strict=True))
    if values["usage_estimated"] is not None:
        values["usage_estimated"] = bool(values["usage_estimated"])
    return Outcome(**values)  # type: ignore[arg-type]
