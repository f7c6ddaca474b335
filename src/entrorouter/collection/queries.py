"""The query file: what `collect` sends to every model, and how each answer is graded.

JSONL, CSV or Parquet, one query per row:

* ``id`` (required, unique) — becomes the table's ``query_id``;
* ``prompt`` — the user message, or ``messages`` — an OpenAI message list (in CSV: as JSON);
  each row needs one of the two. The table's ``query`` text is the prompt, or the text of
  the last user message;
* ``reference`` — the expected answer (a list of accepted answers in JSONL/Parquet);
* ``grader`` — the grader for this row (else ``--grader`` / pool.yaml ``grader``);
* ``choices`` — the options of a multiple-choice question, in order A, B, C, ... (a list,
  or a JSON list in CSV). They inform the grader; they are not added to the prompt;
* ``tests`` — Python unit tests for the ``code`` grader (text, or a list of lines);
* ``task`` — an optional category, copied to the table.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from entrorouter.collection.graders import InvalidQuery, grader_class, grader_names
from entrorouter.data.io import read_frame, row_label, text_column
from entrorouter.errors import DataError
from entrorouter.messages import message_text

OPTIONAL_COLUMNS = ("prompt", "messages", "reference", "grader", "choices", "tests", "task")
MESSAGE_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
Fail = Callable[[str, str], DataError]  # (message, column) -> the located error for this row


@dataclass(frozen=True, slots=True)
class Query:
    """One validated row of the query file."""

    id: str
    messages: tuple[dict[str, Any], ...]
    text: str
    grader: str
    references: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    tests: str | None = None
    task: str | None = None


def load_queries(path: str | os.PathLike[str], default_grader: str | None = None) -> list[Query]:
    """Read and validate a query file; the first problem raises a located :class:`DataError`."""
    path = Path(path)
    frame = read_frame(path)
    if "id" not in frame.columns:
        raise DataError("missing column 'id'; a query file needs id and prompt (or messages)", file=path)
    if "prompt" not in frame.columns and "messages" not in frame.columns:
        raise DataError("missing column 'prompt' (or 'messages'); a query file needs id and prompt", file=path)
    ids = text_column(frame, "id", path, required=True)
    _check_unique(ids, path)
    columns = {c: frame[c].to_numpy(dtype=object) for c in OPTIONAL_COLUMNS if c in frame.columns}
    present = frozenset(frame.columns)
    return [
        _query(i, ids[i], {c: values[i] for c, values in columns.items()}, path, default_grader, present)
        for i in range(len(frame))
    ]


def _check_unique(ids: np.ndarray, path: Path) -> None:
    duplicated = pd.Series(ids).duplicated(keep="first").to_numpy()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero(ids == ids[i])[0])
        raise DataError(
            f"duplicate id {ids[i]!r} (also in {row_label(first)}); each query needs its own id",
            file=path,
            row=row_label(i),
            column="id",
        )


def _query(
    i: int, query_id: str, cells: dict[str, Any], path: Path, default_grader: str | None, present: frozenset[str]
) -> Query:
    def fail(message: str, column: str) -> DataError:
        return DataError(message, file=path, row=row_label(i), column=column)

    messages, text = _messages(cells, fail)
    grader = _optional_text(cells.get("grader")) or default_grader
    if grader is None:
        raise fail(f"no grader: add a 'grader' column or pass --grader (one of {', '.join(grader_names())})", "grader")
    try:
        grader_type = grader_class(grader)
    except KeyError as exc:
        raise fail(exc.args[0], "grader") from None
    query = Query(
        id=query_id,
        messages=messages,
        text=text,
        grader=grader,
        references=_texts(cells.get("reference"), fail, "reference"),
        choices=_texts(_json_list(cells.get("choices"), fail, "choices"), fail, "choices"),
        tests=_tests(cells.get("tests"), fail),
        task=_optional_text(cells.get("task")),
    )
    try:
        grader_type.check_query(query)
    except InvalidQuery as exc:
        if exc.column not in present:
            raise DataError(f"missing column {exc.column!r}: {exc}", file=path) from None
        raise fail(str(exc), exc.column) from None
    return query


# ------------------------------------------------------------------ cells
def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | np.ndarray):
        return len(value) == 0
    return False


def _as_list(value: Any) -> list[Any] | None:
    """A list cell (JSONL list, Parquet array) as a Python list; None for a scalar."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return list(value)
    return None


def _scalar_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # JSONL 18 read as 18.0 when the column has blanks
    return str(value)


def _optional_text(value: Any) -> str | None:
    return None if _blank(value) else _scalar_text(value).strip()


def _texts(value: Any, fail: Fail, column: str) -> tuple[str, ...]:
    if _blank(value):
        return ()
    items = _as_list(value)
    if items is None:
        return (_scalar_text(value),)
    if any(isinstance(item, dict | list) for item in items):
        raise fail("expected text or a list of texts", column)
    return tuple(_scalar_text(item) for item in items if not _blank(item))


def _json_list(value: Any, fail: Fail, column: str) -> Any:
    """CSV cells hold lists as JSON text; other formats hold real lists."""
    if isinstance(value, str) and not _blank(value):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise fail('expected a JSON list, e.g. ["first option", "second option"]', column) from None
        if not isinstance(value, list):
            raise fail('expected a JSON list, e.g. ["first option", "second option"]', column)
    return value


def _tests(value: Any, fail: Fail) -> str | None:
    if _blank(value):
        return None
    items = _as_list(value)
    if items is None:
        return str(value)
    if not all(isinstance(item, str) for item in items):
        raise fail("expected Python test code, or a list of lines of it", "tests")
    return "\n".join(items)


def _messages(cells: dict[str, Any], fail: Fail) -> tuple[tuple[dict[str, Any], ...], str]:
    prompt, raw = cells.get("prompt"), cells.get("messages")
    if not _blank(prompt) and not _blank(raw):
        raise fail("give either 'prompt' or 'messages', not both", "messages")
    if not _blank(prompt):
        text = str(prompt)
        return ({"role": "user", "content": text},), text
    if _blank(raw):
        raise fail("expected a prompt (or messages)", "prompt" if "prompt" in cells else "messages")
    items = _as_list(_json_list(raw, fail, "messages"))
    if items is None:
        raise fail("expected a list of {role, content} messages", "messages")
    messages = tuple(_message(item, j, fail) for j, item in enumerate(items))
    users = [message_text(m) for m in messages if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise fail("the messages need a user message with text", "messages")
    return messages, users[-1]


def _message(item: Any, j: int, fail: Fail) -> dict[str, Any]:
    if not isinstance(item, dict) or item.get("role") not in MESSAGE_ROLES:
        raise fail(f"message {j}: expected {{role, content}} with role one of {sorted(MESSAGE_ROLES)}", "messages")
    content = item.get("content")
    parts = _as_list(content)
    if parts is not None and all(isinstance(p, dict) for p in parts):
        content = parts
    elif not isinstance(content, str):
        raise fail(f"message {j}: expected the content as text or a list of parts", "messages")
    message = {"role": item["role"], "content": content}
    if isinstance(item.get("name"), str):
        message["name"] = item["name"]
    return message
