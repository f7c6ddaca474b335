"""`collect` end to end (Python API) against real fake backends on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from entrorouter.backends import BackendConfig, ChatResponse
from entrorouter.collection.engine import Job, _answered
from entrorouter.collection.queries import Query
from entrorouter.collection.run import collect
from entrorouter.collection.store import ProgressStore, store_path_for
from entrorouter.data.io import read_table
from entrorouter.errors import ConfigError
from entrorouter.testing.fake_backend import FakeBackend, default_answer

from .conftest import POOL, arithmetic_rows, expected_cost, expected_score, write_jsonl, write_pool


def test_table_is_graded_priced_and_readable(tmp_path: Path, fake: FakeBackend) -> None:
    rows = arithmetic_rows(40)
    queries = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "table.parquet"
    result = collect(queries, write_pool(tmp_path / "pool.yaml", fake.base_url), out)

    assert result.complete and result.counts.sent == 40 * 3 and result.counts.call_errors == 0
    assert fake.counts() == dict.fromkeys(POOL, 40)
    table = read_table(out)
    assert table.n_queries == 40 and table.models == tuple(POOL)
    assert list(table.tasks[:2]) == ["t0", "t1"]
    frame = pd.read_parquet(out)
    for row in frame.itertuples():
        prompt = next(r["prompt"] for r in rows if r["id"] == row.query_id)
        answer = default_answer(row.model, prompt, POOL[row.model][0])
        assert row.score == expected_score(row.model, prompt)
        assert row.cost == pytest.approx(expected_cost(row.model, prompt, answer))
        assert row.response == answer and not row.usage_estimated and row.attempts == 1 and row.latency_s > 0
    stats = table.model_stats()
    assert stats.loc["strong", "accuracy"] > stats.loc["weak", "accuracy"]  # some right, some wrong
    assert 0 < stats.loc["weak", "accuracy"] < 1
    assert table.meta["prices"]["strong"] == {"model": "strong", "input": 10.0, "output": 30.0}
    summary = result.table.models["medium"]
    assert summary.answered == 40 and summary.errors == 0
    assert summary.accuracy == pytest.approx(stats.loc["medium", "accuracy"])


def test_retries_honour_retry_after_and_dropped_connections(tmp_path: Path, fake: FakeBackend) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(1))
    pool = write_pool(tmp_path / "pool.yaml", fake.base_url)
    fake.fail(429, model="medium", times=1, retry_after=0.5)
    fake.drop(model="weak", times=1)
    start = time.monotonic()
    result = collect(queries, pool, tmp_path / "t.parquet")
    assert time.monotonic() - start >= 0.5
    assert result.complete
    assert fake.counts() == {"strong": 1, "medium": 2, "weak": 2}
    frame = pd.read_parquet(tmp_path / "t.parquet").set_index("model")
    assert frame.loc["medium", "attempts"] == 2 and frame.loc["weak", "attempts"] == 2


def test_failures_are_missing_outcomes_and_a_rerun_sends_only_them(tmp_path: Path, fake: FakeBackend) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(12))
    pool = write_pool(tmp_path / "pool.yaml", fake.base_url)
    out = tmp_path / "t.parquet"
    fake.fail(500, model="weak")
    first = collect(queries, pool, out)
    assert not first.complete and first.counts.call_errors == 12
    assert fake.counts() == {"strong": 12, "medium": 12, "weak": 24}  # max_retries: 1
    frame = pd.read_parquet(out)
    weak = frame[frame.model == "weak"]
    assert weak.score.isna().all() and weak.cost.isna().all()  # missing, never "wrong"
    assert weak.error.str.contains("HTTP 500").all()
    assert read_table(out).observed.sum() == 24

    fake.reset()
    second = collect(queries, pool, out)
    assert second.complete and second.already_done == 24
    assert fake.counts() == {"strong": 0, "medium": 0, "weak": 12}
    assert read_table(out).observed.all()


def test_changed_prompt_is_resent_and_a_query_nobody_answered_is_left_out(tmp_path: Path, fake: FakeBackend) -> None:
    rows = arithmetic_rows(3)
    queries = write_jsonl(tmp_path / "q.jsonl", rows)
    pool = write_pool(tmp_path / "pool.yaml", fake.base_url)
    out = tmp_path / "t.parquet"
    collect(queries, pool, out)

    rows[1]["prompt"] = "What is 100 + 1?"
    rows[1]["reference"] = "101"
    write_jsonl(queries, rows)
    fake.reset()
    fake.fail(503)
    result = collect(queries, pool, out)
    assert fake.counts() == dict.fromkeys(POOL, 2)  # only q1 was sent again (and failed twice)
    assert result.table.left_out == ["q1"]
    table = read_table(out)
    assert list(table.query_ids) == ["q0", "q2"]


def test_a_changed_grader_regrades_stored_answers_without_calling_again(tmp_path: Path, fake: FakeBackend) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(20))
    out = tmp_path / "t.parquet"
    first = collect(queries, write_pool(tmp_path / "pool.yaml", fake.base_url), out)
    assert first.table.models["weak"].accuracy < 1
    fake.reset()
    # Wrong answers are off by one: a tolerance of 1.5 makes every answer right.
    lenient = write_pool(tmp_path / "lenient.yaml", fake.base_url, extra="graders: {numeric: {abs_tol: 1.5}}\n")
    second = collect(queries, lenient, out)
    assert sum(fake.counts().values()) == 0
    assert second.counts.graded == 60
    assert all(m.accuracy == 1.0 for m in second.table.models.values())


def test_concurrency_is_bounded_per_backend_and_overall(tmp_path: Path, fake: FakeBackend) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(16))
    pool = write_pool(tmp_path / "pool.yaml", fake.base_url, backend_extra="max_concurrency: 2")
    fake.stall(0.1)
    collect(queries, pool, tmp_path / "t.parquet", concurrency=4)
    assert max(fake.peak_in_flight(m) for m in POOL) == 2
    assert fake.peak_in_flight() == 4


def test_judge_grader_end_to_end(tmp_path: Path, fake: FakeBackend) -> None:
    rows = [{"id": f"j{i}", "prompt": f"What is {i} + 1?"} for i in range(4)]
    queries = write_jsonl(tmp_path / "q.jsonl", rows)
    with FakeBackend({"judge-model": 1.0}, answer_fn=lambda model, prompt: "Fine.\nScore: 7") as judge:
        extra = (
            "graders:\n  judge:\n    rubric: Grade kindly.\n"
            f"    backend: {{name: judge, base_url: '{judge.base_url}', model: judge-model}}\n"
        )
        pool = write_pool(tmp_path / "pool.yaml", fake.base_url, ("strong",), extra=extra)
        result = collect(queries, pool, tmp_path / "t.parquet", grader="judge")
        assert judge.counts() == {"judge-model": 4}
    assert result.complete
    assert pd.read_parquet(tmp_path / "t.parquet").score.tolist() == [0.7] * 4


def test_unreachable_backend_fails_before_anything_is_written(tmp_path: Path, fake: FakeBackend) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(2))
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        f"backends:\n  - {{name: ok, base_url: '{fake.base_url}', model: strong, price: {{input: 1, output: 1}}}}\n"
        "  - {name: gone, base_url: 'http://127.0.0.1:9/v1', price: {input: 1, output: 1}, connect_timeout_s: 2}\n"
        "grader: numeric\n"
    )
    out = tmp_path / "t.parquet"
    with pytest.raises(ConfigError, match=r"backend 'gone' at http://127.0.0.1:9/v1 is unreachable \(ConnectError"):
        collect(queries, pool, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.yaml", "q.jsonl"]
    assert sum(fake.counts().values()) == 0


def test_missing_usage_is_estimated_and_flagged() -> None:
    backend = BackendConfig(name="b", base_url="http://x/v1", model="b", input_price=1.0, output_price=2.0)
    query = Query(id="q", messages=({"role": "user", "content": "x" * 40},), text="x" * 40, grader="exact")
    body = {"choices": [{"message": {"content": "y" * 20}}]}
    outcome = _answered(Job(query, backend, True, "h", "g"), ChatResponse(body, 200, 0.1, 1, {}))
    assert (outcome.prompt_tokens, outcome.completion_tokens, outcome.usage_estimated) == (10, 5, True)
    assert outcome.cost == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)
    empty = _answered(Job(query, backend, True, "h", "g"), ChatResponse({"choices": []}, 200, 0.1, 1, {}))
    assert empty.status == "error" and empty.error == "the response has no message content"


def test_one_run_at_a_time_per_store(tmp_path: Path) -> None:
    path = store_path_for(tmp_path / "t.parquet")
    with ProgressStore(path), pytest.raises(ConfigError, match="another `entrorouter collect` is using"):
        ProgressStore(path)
    with ProgressStore(path) as store:  # released on close
        assert len(store) == 0
