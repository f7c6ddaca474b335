"""The code grader: run the answer's Python against the query's unit tests."""

from __future__ import annotations

import ast
import asyncio
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from entrorouter.collection.graders.base import Grader, GradingError, InvalidQuery
from entrorouter.collection.sandbox import run_python

if TYPE_CHECKING:
    from entrorouter.collection.queries import Query

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"python", "python3", "py"}


def extract_code(answer: str) -> str | None:
    """The Python program in an answer, or None when it holds none.

    Fenced blocks tagged python (else untagged ones) are candidates; the first that parses
    and defines a function or class wins, else the first candidate. An answer without
    fences counts as code when it parses as Python.
    """
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(answer)]
    candidates = [body for tag, body in blocks if tag in _PYTHON_TAGS] or [body for tag, body in blocks if not tag]
    for body in candidates:
        if _defines_something(body):
            return body
    if candidates:
        return candidates[0]
    return answer if not blocks and _module(answer) is not None else None


def _module(code: str) -> ast.Module | None:
    """The parsed code, or None when it is not Python (or too deeply nested to parse)."""
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _defines_something(code: str) -> bool:
    module = _module(code)
    return module is not None and any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) for node in module.body
    )


@dataclass
class CodeTests(Grader):
    """1 when the answer's code passes every test of the query (a 'tests' column: Python
    asserts, or a unittest module), in a subprocess with time and memory limits and no
    network; 0 otherwise (no code, a failing test, a timeout)."""

    name: ClassVar[str] = "code"
    timeout_s: float = 10.0
    memory_mb: int = 512
    max_parallel: int = 0  # programs running at once; 0: one per CPU core
    _slots: asyncio.Semaphore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.memory_mb < 16 or self.max_parallel < 0:
            raise ValueError("expected timeout_s > 0, memory_mb >= 16 and max_parallel >= 0")
        self._slots = asyncio.Semaphore(self.max_parallel or os.cpu_count() or 1)

    @classmethod
    def check_query(cls, query: Query) -> None:
        if not query.tests:
            raise InvalidQuery("tests", "grader 'code' needs unit tests (Python asserts)")

    async def grade(self, answer: str, query: Query) -> float:
        code = extract_code(answer)
        if code is None:
            return 0.0
        program = f"{code}\n\n# ---- tests ----\n{query.tests}\n"
        async with self._slots:
            try:
                result = await run_python(program, timeout_s=self.timeout_s, memory_mb=self.memory_mb)
            except OSError as exc:  # could not start the interpreter: not the answer's fault
                raise GradingError(f"could not run the tests: {exc}") from exc
        return 1.0 if result.passed else 0.0
