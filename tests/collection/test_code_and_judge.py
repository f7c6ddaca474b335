"""The code grader (a real sandboxed subprocess) and the LLM judge (a real fake backend)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from entrorouter.collection.graders import (
    CodeTests,
    GradingError,
    Judge,
    extract_code,
    make_graders,
    parse_judge_score,
)
from entrorouter.collection.queries import Query
from entrorouter.testing.fake_backend import FakeBackend

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nHope it helps."


def code_query(tests: str = TESTS) -> Query:
    return Query(id="c", messages=({"role": "user", "content": "add"},), text="add", grader="code", tests=tests)


def grade(grader: CodeTests, answer: str, tests: str = TESTS) -> float:
    return asyncio.run(grader.grade(answer, code_query(tests)))


# ------------------------------------------------------------------ code
def test_extract_code_prefers_a_python_block_that_defines_something() -> None:
    answer = "```\nprint('usage')\n```\n```python\nx = 1\n```\n```python\ndef f():\n    return 1\n```"
    assert extract_code(answer) == "def f():\n    return 1\n"
    assert extract_code("```\nprint(1)\n```") == "print(1)\n"
    assert extract_code("def f():\n    return 2") == "def f():\n    return 2"  # bare code
    assert extract_code("I don't know how to do that.") is None  # prose is not code
    assert extract_code("-" * 100_000 + "1") is None  # too deep to parse: not a crash


def test_passing_and_failing_code() -> None:
    grader = CodeTests(timeout_s=10)
    assert grade(grader, GOOD) == 1.0
    assert grade(grader, GOOD.replace("a + b", "a - b")) == 0.0
    assert grade(grader, "I refuse.") == 0.0
    assert grade(grader, "```python\ndef add(a, b) return\n```") == 0.0  # syntax error


def test_time_limit_kills_an_endless_loop() -> None:
    start = time.monotonic()
    assert grade(CodeTests(timeout_s=1), "```python\ndef add(a, b):\n    while True:\n        pass\n```") == 0.0
    assert time.monotonic() - start < 5


def test_wall_clock_limit_kills_a_sleeping_program() -> None:
    start = time.monotonic()
    assert grade(CodeTests(timeout_s=1), "```python\nimport time\ntime.sleep(30)\n```") == 0.0
    assert time.monotonic() - start < 5


def test_memory_limit() -> None:
    hog = "```python\ndef add(a, b):\n    blob = bytearray(2 * 1024**3)\n    return a + b\n```"
    assert grade(CodeTests(memory_mb=256), hog) == 0.0


def test_no_network() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (
            "```python\nimport socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "def add(a, b):\n    return a + b\n```"
        )
        assert grade(CodeTests(), code) == 0.0


def test_no_subprocesses_and_no_secrets() -> None:
    spawn = "```python\nimport subprocess\nsubprocess.run(['true'])\ndef add(a, b):\n    return a + b\n```"
    assert grade(CodeTests(), spawn) == 0.0
    forks = "```python\nimport os\nos.fork()\ndef add(a, b):\n    return a + b\n```"
    assert grade(CodeTests(), forks) == 0.0
    env = "```python\nimport os\nassert 'PATH' in os.environ and len(os.environ) <= 2, dict(os.environ)\n" + GOOD[22:]
    assert grade(CodeTests(), env) == 1.0  # API keys in our environment never reach the child


def test_unittest_style_tests() -> None:
    tests = (
        "import unittest\nclass T(unittest.TestCase):\n    def test_add(self):\n"
        "        self.assertEqual(add(1, 2), 3)\nunittest.main()"
    )
    assert grade(CodeTests(), GOOD, tests) == 1.0
    assert grade(CodeTests(), GOOD.replace("a + b", "a * b"), tests) == 0.0


# ------------------------------------------------------------------ judge
@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Looks right.\nScore: 8", 0.8),
        ("**Score:** 10", 1.0),
        ("score = 3/4", 0.75),
        ("Score: 7\n...on reflection\nScore: 2", 0.2),
        ("Score: 15", 1.0),  # clipped
        ("I would give it full marks.", None),
    ],
)
def test_parse_judge_score(reply: str, score: float | None) -> None:
    got = parse_judge_score(reply, 10)
    assert got == (None if score is None else pytest.approx(score))


def judge_for(fake: FakeBackend) -> Judge:
    options = {"backend": {"name": "judge", "base_url": fake.base_url, "max_retries": 0}, "rubric": "Be strict."}
    grader = make_graders(["judge"], {"judge": options}, "pool.yaml")["judge"]
    assert isinstance(grader, Judge)
    return grader


def test_judge_scores_through_the_judge_backend() -> None:
    seen: list[str] = []

    def judge_answer(model: str, prompt: str) -> str:
        seen.append(prompt)
        return (
            "The answer matches the reference.\nScore: 9"
            if "Paris" in prompt.split("Answer to grade:")[1]
            else "Score: 1"
        )

    query = Query(id="j", messages=(), text="Capital of France?", grader="judge", references=("Paris",))
    with FakeBackend({"judge": 1.0}, answer_fn=judge_answer) as fake:
        grader = judge_for(fake)

        async def run() -> list[float]:
            try:
                return [await grader.grade("It is Paris.", query), await grader.grade("Lyon", query)]
            finally:
                await grader.aclose()

        assert asyncio.run(run()) == [pytest.approx(0.9), pytest.approx(0.1)]
    assert "Be strict." in seen[0] and "Capital of France?" in seen[0] and "Reference answer:\nParis" in seen[0]


def test_judge_failures_are_grading_errors() -> None:
    query = Query(id="j", messages=(), text="?", grader="judge")
    with FakeBackend({"judge": 1.0}, answer_fn=lambda model, prompt: "No score here") as fake:
        grader = judge_for(fake)

        async def run(answer: str) -> float:
            try:
                return await grader.grade(answer, query)
            finally:
                await grader.aclose()

        with pytest.raises(GradingError, match="no 'Score: N' line"):
            asyncio.run(run("x"))
        fake.fail(503)
        with pytest.raises(GradingError, match="HTTP 503"):
            asyncio.run(run("x"))
