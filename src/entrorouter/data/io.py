"""Reading and writing outcome tables (CSV, JSONL, Parquet; long and wide layouts).

Long layout (one row per outcome), the canonical one::

    query_id, query, model, score, cost [, task] [, split]

Wide layout (one row per query)::

    query_id, query [, task] [, split], score:<model>, cost:<model>, ...

An empty score cell is a missing outcome (see :mod:`entrorouter.data.table`). Every
problem is reported as a :class:`~entrorouter.errors.DataError` naming the file, the
data row (1-based, header excluded) and the column: reading stops at the first, while
:func:`table_problems` (``entrorouter data validate``) collects them all. Writes are atomic.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from entrorouter.data.atomic import atomic_path
from entrorouter.data.table import LONG_COLUMNS, OutcomeTable
from entrorouter.errors import DataError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_TRUE = {"true", "yes"}
_FALSE = {"false", "no"}


def table_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"unsupported file type {path.suffix or '(none)'!r}; expected one of {', '.join(sorted(FORMATS))}",
            file=path,
        )
    return fmt


def row_label(i: int) -> str:
    return f"row {i + 1}"


class Problems:
    """Where the table checks put what they find: raised at once, or collected for a report.

    Collected problems keep their data row, so a report can list them in row order. A cell
    gets one problem, the first found: a cost that could not be read is not reported again
    as missing by a later check.
    """

    def __init__(self, collect: bool = False) -> None:
        self.collect = collect
        self.found: list[tuple[int, DataError]] = []
        self._cells: set[tuple[int, str]] = set()

    def add(self, message: str, *, file: Path, row: int, column: str | None = None) -> None:
        """A problem in data row ``row`` (0-based) of ``file``."""
        error = DataError(message, file=file, row=row_label(row), column=column)
        if not self.collect:
            raise error
        if column is not None:
            if (row, column) in self._cells:
                return
            self._cells.add((row, column))
        self.found.append((row, error))

    def in_row_order(self) -> list[DataError]:
        return [error for _, error in sorted(self.found, key=lambda found: found[0])]


_RAISE = Problems()


# ------------------------------------------------------------------ reading
def read_frame(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV/JSONL/Parquet file into a DataFrame, with one-line errors."""
    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise DataError("a folder, not a file" if path.is_dir() else "no such file", file=path)
    if path.stat().st_size == 0:
        raise DataError("the file is empty", file=path)
    if fmt == "csv":
        with csv_errors(path):
            frame = pd.read_csv(path, **CSV_OPTIONS)
        check_unique_columns(csv_header(path), path)
    elif fmt == "jsonl":
        frame = pd.DataFrame(list(_jsonl_records(path)))
    else:
        check_unique_columns(parquet_columns(path), path)
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise DataError(f"not a readable Parquet file ({_first_line(exc)})", file=path) from None
    check_unique_columns(frame.columns, path)  # names that differ only in spaces around them
    if len(frame) == 0:
        raise DataError("the file has no data rows", file=path)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


#: How every CSV is read: all as text (an empty cell is "", so we can tell missing from
#: malformed), and never the first column as the index when the rows are longer than the header.
CSV_OPTIONS: dict[str, Any] = {"dtype": str, "keep_default_na": False, "index_col": False}


@contextmanager
def csv_errors(path: Path) -> Iterator[None]:
    """pandas' CSV problems, raised inside, as one-line DataErrors.

    With ``index_col=False`` pandas only warns when the first data row is longer than the
    header, and drops its last fields; that warning is an error here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            yield
        except pd.errors.ParserWarning:
            raise DataError(
                "more fields than the header has names (a trailing comma, or a column without a name?)",
                file=path,
                row=row_label(0),
            ) from None
        except pd.errors.EmptyDataError:
            raise DataError("the file is empty", file=path) from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"not a readable CSV file ({_first_line(exc)})", file=path) from None


def csv_header(path: Path) -> list[str]:
    """The names of a CSV's header row as written (pandas renames a repeated ``x`` to ``x.1``)."""
    with csv_errors(path):
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return [str(name) for name in header.iloc[0]]


def parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several unrelated types
        raise DataError(f"not a readable Parquet file ({_first_line(exc)})", file=path) from None


def check_unique_columns(names: Iterable[Any], path: Path) -> None:
    seen: set[str] = set()
    for name in (str(n).strip() for n in names):
        if name in seen:
            raise DataError(f"duplicate column {name!r}; each column name may appear once", file=path)
        seen.add(name)


def jsonl_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, text) of each non-blank line; the text is None for a line that is not
    UTF-8. A byte-order mark at the start is skipped, as for CSV."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                yield number, None
                continue
            if line.strip():
                yield number, line


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    for number, line in jsonl_lines(path):
        if line is None:
            raise DataError("not valid UTF-8 text; save the file as UTF-8", file=path, row=f"line {number}")
        try:
            yield json_object(line)
        except ValueError as exc:
            raise DataError(str(exc), file=path, row=f"line {number}") from None


def json_object(line: str) -> dict[str, Any]:
    """The JSON object on a JSONL line; ValueError saying why it is not one: not JSON, not an
    object, or a key twice (the parser alone would keep the last value without a word)."""
    try:
        record = json.loads(line, object_pairs_hook=_object_with_unique_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    return record


def _object_with_unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) < len(pairs):  # only then look for the key, in order
        keys = [key for key, _ in pairs]
        twice = next(key for i, key in enumerate(keys) if key in keys[:i])
        raise ValueError(f"the key {twice!r} appears twice in one object")
    return record


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def numeric_column(
    frame: pd.DataFrame,
    column: str,
    path: Path,
    *,
    expected: str,
    allow_bool: bool = False,
    problems: Problems = _RAISE,
) -> np.ndarray:
    """Column as float64; blank cells become NaN, anything else non-numeric is a problem (left NaN)."""
    values = frame[column].to_numpy(dtype=object)
    out = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if _is_blank(value):
            continue
        number = _number(value, allow_bool)
        if number is None or not np.isfinite(number):
            problems.add(f"expected {expected}, got {value!r}", file=path, row=i, column=column)
            continue
        out[i] = number
    return out


def _number(value: Any, allow_bool: bool) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value) if allow_bool else None
    if isinstance(value, str) and allow_bool and value.strip().lower() in _TRUE | _FALSE:
        return 1.0 if value.strip().lower() in _TRUE else 0.0
    if isinstance(value, str) and "_" in value:  # float() reads "1_000" as 1000; a table should not
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def text_column(
    frame: pd.DataFrame, column: str, path: Path, *, required: bool, problems: Problems = _RAISE
) -> np.ndarray:
    """Column as an object array of str; blanks are problems when ``required``, and so is a
    cell that is neither text nor a number (bytes, a list, an object, true/false)."""
    values = frame[column].to_numpy(dtype=object)
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if _is_blank(value):
            if required:
                problems.add("expected a non-empty value", file=path, row=i, column=column)
            out[i] = None
        elif (text := cell_text(value)) is None:
            problems.add(f"expected text, got {type(value).__name__} {value!r:.60}", file=path, row=i, column=column)
            out[i] = None
        else:
            out[i] = text
    return out


def cell_text(value: Any) -> str | None:
    """A cell as text: text as it is, a number written out (an integral float without its
    '.0', as JSON and Parquet store ids); None for anything else, which str() would turn
    into "b'…'" or "['…']" without a word."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], path: Path, layout: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(repr(c) for c in missing)}; the {layout} needs {', '.join(columns)}",
            file=path,
        )


def read_table(path: str | os.PathLike[str], *, name: str | None = None) -> OutcomeTable:
    """Read an outcome table in the long or wide layout; the layout is detected."""
    table = _read_table(Path(path), name, _RAISE)
    assert table is not None
    return table


def table_problems(path: str | os.PathLike[str]) -> tuple[OutcomeTable | None, list[DataError]]:
    """Every problem of a table file, in row order, and the table when there is none.

    A file that cannot be read at all, or lacks a required column, is one problem.
    """
    problems = Problems(collect=True)
    try:
        table = _read_table(Path(path), None, problems)
    except DataError as exc:
        return None, [exc]
    return (None, problems.in_row_order()) if problems.found else (table, [])


def _read_table(path: Path, name: str | None, problems: Problems) -> OutcomeTable | None:
    frame = read_frame(path)
    table_name = name or path.stem
    is_wide = any(c.startswith("score:") for c in frame.columns) and "model" not in frame.columns
    if is_wide:
        table = _table_from_wide(frame, path, table_name, problems)
    else:
        require_columns(frame, LONG_COLUMNS, path, "long layout (one row per outcome)")
        table = _table_from_long(frame, path, table_name, problems)
    if table is not None and table_format(path) == "parquet":
        table.meta.update(_parquet_meta(path))
    return table


def _table_from_long(frame: pd.DataFrame, path: Path, name: str, problems: Problems) -> OutcomeTable | None:
    query_ids = text_column(frame, "query_id", path, required=True, problems=problems)
    queries = text_column(frame, "query", path, required=True, problems=problems)
    models = text_column(frame, "model", path, required=True, problems=problems)
    scores = numeric_column(frame, "score", path, expected="a score in [0, 1]", allow_bool=True, problems=problems)
    costs = numeric_column(frame, "cost", path, expected="a cost >= 0 (US$)", problems=problems)
    _check_ranges(scores, costs, path, problems, score_col="score", cost_col="cost")
    if problems.found:
        return None  # blank ids or models: the per-query checks below would only repeat them

    q_codes, q_uniques = pd.factorize(pd.Series(query_ids), sort=False)
    m_codes, m_uniques = pd.factorize(pd.Series(models), sort=False)
    pair = q_codes.astype(np.int64) * len(m_uniques) + m_codes
    first_of_pair = pd.Series(np.arange(len(pair))).groupby(pair).transform("first").to_numpy()
    for i in np.flatnonzero(pd.Series(pair).duplicated(keep="first").to_numpy()):
        problems.add(
            f"duplicate outcome for query {query_ids[i]!r} and model {models[i]!r} "
            f"(first in {row_label(int(first_of_pair[i]))}); each (query_id, model) pair may appear once",
            file=path,
            row=int(i),
        )
    n, k = len(q_uniques), len(m_uniques)
    score_mat = np.full((n, k), np.nan)
    cost_mat = np.full((n, k), np.nan)
    score_mat[q_codes, m_codes] = scores
    cost_mat[q_codes, m_codes] = np.where(np.isnan(scores), np.nan, costs)

    first_row = pd.Series(np.arange(len(frame))).groupby(q_codes).first().to_numpy()
    per_query = {"query": queries}
    for column in ("task", "split"):
        if column in frame.columns:
            per_query[column] = text_column(frame, column, path, required=False, problems=problems)
    for column, values in per_query.items():
        _check_constant_per_query(values, q_codes, first_row, path, column, problems)
    _check_every_query_observed(score_mat, q_uniques.to_numpy(), first_row, path, problems)
    if problems.found:
        return None
    return OutcomeTable.from_arrays(
        query_ids=q_uniques.to_numpy(),
        queries=queries[first_row],
        models=[str(m) for m in m_uniques],
        scores=score_mat,
        costs=cost_mat,
        tasks=per_query["task"][first_row] if "task" in per_query else None,
        splits=per_query["split"][first_row] if "split" in per_query else None,
        name=name,
    )


def _table_from_wide(frame: pd.DataFrame, path: Path, name: str, problems: Problems) -> OutcomeTable | None:
    require_columns(frame, ("query_id", "query"), path, "wide layout (one row per query)")
    models = [c.removeprefix("score:") for c in frame.columns if c.startswith("score:")]
    for model in models:
        if not model.strip():
            raise DataError("column 'score:' names no model; name the columns 'score:<model>'", file=path)
        if f"cost:{model}" not in frame.columns:
            raise DataError(
                f"missing column 'cost:{model}'; each 'score:<model>' needs a 'cost:<model>'",
                file=path,
            )
    query_ids = text_column(frame, "query_id", path, required=True, problems=problems)
    queries = text_column(frame, "query", path, required=True, problems=problems)
    for i in np.flatnonzero(pd.Series(query_ids).duplicated(keep="first").to_numpy()):
        if query_ids[i] is not None:
            problems.add(
                f"duplicate query_id {query_ids[i]!r}; in the wide layout each query has one row",
                file=path,
                row=int(i),
                column="query_id",
            )
    scores = np.column_stack(
        [
            numeric_column(frame, f"score:{m}", path, expected="a score in [0, 1]", allow_bool=True, problems=problems)
            for m in models
        ]
    )
    costs = np.column_stack(
        [numeric_column(frame, f"cost:{m}", path, expected="a cost >= 0 (US$)", problems=problems) for m in models]
    )
    for j, model in enumerate(models):
        _check_ranges(scores[:, j], costs[:, j], path, problems, score_col=f"score:{model}", cost_col=f"cost:{model}")
    rows = np.arange(len(frame))
    _check_every_query_observed(scores, query_ids, rows, path, problems)
    optional = {c: text_column(frame, c, path, required=False) for c in ("task", "split") if c in frame.columns}
    if problems.found:
        return None
    return OutcomeTable.from_arrays(
        query_ids=query_ids,
        queries=queries,
        models=models,
        scores=scores,
        costs=np.where(np.isnan(scores), np.nan, costs),
        tasks=optional.get("task"),
        splits=optional.get("split"),
        name=name,
    )


def _check_ranges(
    scores: np.ndarray, costs: np.ndarray, path: Path, problems: Problems, *, score_col: str, cost_col: str
) -> None:
    for i in np.flatnonzero((scores < 0) | (scores > 1)):
        problems.add(f"expected a score in [0, 1], got {scores[i]:g}", file=path, row=int(i), column=score_col)
    for i in np.flatnonzero(costs < 0):
        problems.add(f"expected a cost >= 0 (US$), got {costs[i]:g}", file=path, row=int(i), column=cost_col)
    for i in np.flatnonzero(~np.isnan(scores) & np.isnan(costs)):
        problems.add(
            "expected a cost >= 0 (US$) for an outcome that has a score, got an empty cell",
            file=path,
            row=int(i),
            column=cost_col,
        )


def _check_constant_per_query(
    values: np.ndarray, q_codes: np.ndarray, first_row: np.ndarray, path: Path, column: str, problems: Problems
) -> None:
    reference = values[first_row][q_codes]
    differs = np.flatnonzero(np.array([a != b for a, b in zip(values, reference, strict=True)], dtype=bool))
    what = "text" if column == "query" else column
    for i in differs:
        problems.add(
            f"this query_id has a different {what} in {row_label(int(first_row[q_codes[i]]))}; "
            f"every row of one query_id must have the same {what}",
            file=path,
            row=int(i),
            column=column,
        )


def _check_every_query_observed(
    scores: np.ndarray, query_ids: np.ndarray, first_row: np.ndarray, path: Path, problems: Problems
) -> None:
    for q in np.flatnonzero(np.isnan(scores).all(axis=1)):
        problems.add(
            f"query {query_ids[q]!r} has no outcomes (every score is empty); "
            "give it at least one score or leave it out",
            file=path,
            row=int(first_row[q]),
            column="score",
        )


def _parquet_meta(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    blob = raw.get(b"entrorouter")
    return json.loads(blob) if blob else {}


# ------------------------------------------------------------------ writing
def check_output_location(path: Path, option: str, *, inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Fail now, before any work, when nothing can be written at ``path``.

    ``path`` must not be a folder, nor one of the command's ``inputs`` (it would be replaced),
    and the nearest existing folder above it must be a writable folder (a file there, or no
    permission, would only fail after the work is done).
    """
    if path.is_dir():
        raise DataError(f"{option} {path} is a folder; name a file")
    for source in inputs:
        if path.exists() and Path(source).exists() and path.samefile(source):
            raise DataError(f"{option} {path} is also the input file; write the output elsewhere")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"{option} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"{option} {path}: cannot write in {folder} (permission denied)")


def write_frame(frame: pd.DataFrame, path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None) -> None:
    """Write a DataFrame as CSV/JSONL/Parquet (by extension), atomically."""
    path = Path(path)
    fmt = table_format(path)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        elif fmt == "jsonl":
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrow = pa.Table.from_pandas(frame, preserve_index=False)
            if meta:
                merged = dict(arrow.schema.metadata or {})
                merged[b"entrorouter"] = json.dumps(meta).encode()
                arrow = arrow.replace_schema_metadata(merged)
            pq.write_table(arrow, tmp)


def write_table(table: OutcomeTable, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` in the long layout; the format follows the extension."""
    path = Path(path)
    write_frame(table.to_long(), path, meta={"name": table.name, **table.meta})
    return path
