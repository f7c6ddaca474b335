"""Fixtures for the collector tests: fake OpenAI-compatible backends on loopback and helpers
that write query files and pool.yaml files.

The fake backends are real uvicorn servers on 127.0.0.1 ephemeral ports (threads of the
test process), stopped at the end and bounded by their own lifetime.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from entrorouter.testing.fake_backend import FakeBackend, is_correct, token_count, true_answer

# name -> (accuracy of the fake model, US$ per 1M input tokens, per 1M output tokens)
POOL = {"strong": (0.9, 10.0, 30.0), "medium": (0.6, 1.0, 2.0), "weak": (0.3, 0.1, 0.2)}


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[FakeBackend]:
    with FakeBackend({name: acc for name, (acc, _, _) in POOL.items()}) as fake:
        yield fake


def arithmetic_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Queries the fake models answer (some right, some wrong), graded numerically."""
    rows = []
    for i in range(start, start + n):
        prompt = f"What is {3 * i + 1} + {i % 7}?"
        rows.append({"id": f"q{i}", "prompt": prompt, "reference": str(true_answer(prompt)), "task": f"t{i % 2}"})
    return rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_pool(
    path: Path,
    base_url: str,
    models: Sequence[str] = tuple(POOL),
    *,
    extra: str = "",
    backend_extra: str = "max_retries: 1",
) -> Path:
    lines = ["backends:"]
    for name in models:
        _, price_in, price_out = POOL[name]
        lines.append(
            f"  - {{name: {name}, base_url: '{base_url}', {backend_extra}, "
            f"price: {{input: {price_in}, output: {price_out}}}}}"
        )
    path.write_text("\n".join(lines) + "\ngrader: numeric\n" + extra, encoding="utf-8")
    return path


def expected_score(model: str, prompt: str) -> float:
    return float(is_correct(model, prompt, POOL[model][0]))


def expected_cost(model: str, prompt: str, answer: str) -> float:
    _, price_in, price_out = POOL[model]
    return (token_count(prompt) * price_in + token_count(answer) * price_out) / 1e6


def cli_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "entrorouter.cli", "collect", *map(str, args)]
