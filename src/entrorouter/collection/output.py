"""Write the outcome table from the progress store, streamed and atomic, and summarise it.

The table is the long layout that :func:`entrorouter.data.io.read_table` reads
(``query_id, query, model, score, cost`` and ``task`` when the queries have one) plus
``grader, latency_s, prompt_tokens, completion_tokens, usage_estimated, attempts, error,
response``. A failed pair is a row with an empty score and its error: a missing outcome,
never a wrong answer. A query without any score is left out (a table cannot hold a query
without outcomes) and listed in the report, apart by why: no model answered, or answers
came but none could be graded.

Cost is priced here, from each pair's stored token counts and the pool's current price
card, so a price changed in pool.yaml applies to every row and the table never mixes
prices.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from entrorouter.backends import BackendConfig
from entrorouter.collection.queries import Query
from entrorouter.collection.store import ERROR, GRADED, Outcome, ProgressStore
from entrorouter.data.atomic import atomic_path
from entrorouter.data.io import table_format

BATCH_ROWS = 10_000
_INTEGER_FIELDS = ("prompt_tokens", "completion_tokens", "attempts")  # nullable: kept as integers
_OUTCOME_FIELDS = (
    "latency_s",
    "prompt_tokens",
    "completion_tokens",
    "usage_estimated",
    "attempts",
    "error",
    "response",
)


@dataclass
class ModelSummary:
    """Totals for one model over the table's pairs."""

    model: str
    graded: int = 0
    errors: int = 0
    score_sum: float = 0.0
    cost_sum: float = 0.0
    latency_sum: float = 0.0
    answered: int = 0  # calls that returned an answer (graded or not)

    def add(self, outcome: Outcome) -> None:
        if outcome.status == GRADED and outcome.score is not None:
            self.graded += 1
            self.score_sum += outcome.score
        else:
            self.errors += 1
        if outcome.status != ERROR:
            self.answered += 1
            self.cost_sum += outcome.cost or 0.0
            self.latency_sum += outcome.latency_s or 0.0

    @property
    def accuracy(self) -> float | None:
        return self.score_sum / self.graded if self.graded else None

    @property
    def mean_cost(self) -> float | None:
        return self.cost_sum / self.answered if self.answered else None

    @property
    def mean_latency_s(self) -> float | None:
        return self.latency_sum / self.answered if self.answered else None


@dataclass
class TableReport:
    """What was written: per-model totals, and the queries left out."""

    path: Path | None
    n_queries: int = 0
    n_rows: int = 0
    models: dict[str, ModelSummary] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)  # queries no model answered
    ungraded: list[str] = field(default_factory=list)  # queries answered, but no answer graded

    @property
    def errors(self) -> int:
        return sum(m.errors for m in self.models.values())


class NothingToWrite(Exception):
    """No query has any outcome; the output is left as it was."""


def remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files :func:`~entrorouter.data.io.atomic_path` leaves when killed mid-write."""
    for path in out.parent.glob(f".{out.name}.*.tmp"):
        path.unlink(missing_ok=True)


def write_outcome_table(
    store: ProgressStore,
    queries: Sequence[Query],
    backends: Sequence[BackendConfig],
    out: str | Path,
    meta: dict[str, Any] | None = None,
) -> TableReport:
    """Write ``queries`` x ``backends`` from ``store`` to ``out`` (Parquet, CSV or JSONL)."""
    out = Path(out)
    fmt = table_format(out)
    with_task = any(q.task is not None for q in queries)
    report = TableReport(path=out, models={b.name: ModelSummary(b.name) for b in backends})
    try:
        with atomic_path(out) as tmp:
            sink = _Sink(fmt, tmp, with_task, meta or {})
            try:
                for batch in _batches(_rows(store, queries, backends, report, with_task)):
                    sink.write(batch)
                    report.n_rows += len(batch["query_id"])
            finally:
                sink.close()
            if report.n_queries == 0:
                raise NothingToWrite  # atomic_path then removes the temporary file
    except NothingToWrite:
        report.path = None
    return report


def _rows(
    store: ProgressStore,
    queries: Sequence[Query],
    backends: Sequence[BackendConfig],
    report: TableReport,
    with_task: bool,
) -> Iterator[dict[str, Any]]:
    """Table rows, one query at a time (the store yields them grouped by query)."""
    by_name = {b.name: b for b in backends}
    group: list[Outcome] = []
    position = -1
    for pos, outcome in store.ordered([q.id for q in queries], list(by_name)):
        if pos != position and group:
            yield from _query_rows(queries[position], group, report, with_task)
            group = []
        position = pos
        outcome = replace(outcome, cost=_priced(outcome, by_name[outcome.model]))
        group.append(outcome)
        report.models[outcome.model].add(outcome)
    if group:
        yield from _query_rows(queries[position], group, report, with_task)


def _priced(outcome: Outcome, backend: BackendConfig) -> float | None:
    """The pair's cost at the backend's current price (None for a failed call)."""
    if outcome.status == ERROR or outcome.prompt_tokens is None or outcome.completion_tokens is None:
        return None
    return backend.cost(outcome.prompt_tokens, outcome.completion_tokens)


def _query_rows(query: Query, group: list[Outcome], report: TableReport, with_task: bool) -> Iterator[dict[str, Any]]:
    if all(o.score is None for o in group):
        answered = any(o.status != ERROR for o in group)
        (report.ungraded if answered else report.left_out).append(query.id)
        return
    report.n_queries += 1
    for o in group:
        row = {"query_id": query.id, "query": query.text, "model": o.model, "score": o.score, "cost": o.cost}
        if with_task:
            row["task"] = query.task
        row["grader"] = query.grader
        row.update({name: getattr(o, name) for name in _OUTCOME_FIELDS})
        if o.score is None:
            row["cost"] = None  # the table reader ignores the cost of a missing outcome anyway
        yield row


def _batches(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, list[Any]]]:
    batch: dict[str, list[Any]] = {}
    count = 0
    for row in rows:
        for key, value in row.items():
            batch.setdefault(key, []).append(value)
        count += 1
        if count == BATCH_ROWS:
            yield batch
            batch, count = {}, 0
    if count:
        yield batch


class _Sink:
    """Appends column batches to a Parquet, CSV or JSONL file."""

    def __init__(self, fmt: str, path: Path, with_task: bool, meta: dict[str, Any]) -> None:
        self._fmt, self._path, self._meta = fmt, path, meta
        self._columns = ["query_id", "query", "model", "score", "cost", *(["task"] if with_task else [])]
        self._columns += ["grader", *_OUTCOME_FIELDS]
        self._writer: Any = None
        self._handle: Any = None

    def write(self, batch: dict[str, list[Any]]) -> None:
        if self._fmt == "parquet":
            self._write_parquet(batch)
            return
        import pandas as pd

        frame = pd.DataFrame(batch, columns=self._columns).astype({c: "Int64" for c in _INTEGER_FIELDS})
        first = self._handle is None
        if first:
            self._handle = self._path.open("w", encoding="utf-8", newline="")
        if self._fmt == "csv":
            frame.to_csv(self._handle, index=False, header=first)
        else:
            frame.to_json(self._handle, orient="records", lines=True, force_ascii=False)

    def _write_parquet(self, batch: dict[str, list[Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(self._path, _arrow_schema(self._columns, self._meta))
        self._writer.write_table(pa.table(batch, schema=self._writer.schema))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._handle is not None:
            self._handle.close()


def _arrow_schema(columns: list[str], meta: dict[str, Any]) -> Any:
    import pyarrow as pa

    types = {
        "score": pa.float64(),
        "cost": pa.float64(),
        "latency_s": pa.float64(),
        "prompt_tokens": pa.int64(),
        "completion_tokens": pa.int64(),
        "attempts": pa.int64(),
        "usage_estimated": pa.bool_(),
    }
    fields = [(name, types.get(name, pa.string())) for name in columns]
    return pa.schema(fields, metadata={b"entrorouter": json.dumps(meta).encode()})
