"""`collect`: nothing lost, nothing overwritten, one price card per table (fake backends on loopback)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from entrorouter.cli import main
from entrorouter.collection.config import load_config
from entrorouter.collection.graders import make_graders
from entrorouter.collection.run import collect
from entrorouter.collection.store import store_path_for
from entrorouter.errors import ConfigError
from entrorouter.testing.fake_backend import FakeBackend, token_count

from .conftest import POOL, arithmetic_rows, write_jsonl, write_pool


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    code = main(["collect", *map(str, args)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["directory", "parent is a file", "unwritable"])
def test_bad_output_location_fails_before_any_call(
    case: str, tmp_path: Path, fake: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    if case == "unwritable" and os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(2))
    pool = write_pool(tmp_path / "pool.yaml", fake.base_url)
    if case == "directory":
        out = tmp_path / "table.parquet"
        out.mkdir()
        expected = "is a directory"
    elif case == "parent is a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub" / "t.parquet"
        expected = "is a file, not a folder"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "t.parquet"
        expected = "permission denied"
    code, stderr = run_cli(capsys, "--queries", queries, "--config", pool, "--out", out)
    assert code == 2 and stderr.count("\n") == 1 and expected in stderr, stderr
    assert sum(fake.counts().values()) == 0


def test_a_file_collect_did_not_write_is_refused_unless_forced(
    tmp_path: Path, fake: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(2))
    pool = write_pool(tmp_path / "pool.yaml", fake.base_url)
    out = tmp_path / "mine.csv"
    out.write_text("precious,data\n1,2\n")
    code, stderr = run_cli(capsys, "--queries", queries, "--config", pool, "--out", out)
    assert code == 2 and "--force" in stderr and stderr.count("\n") == 1
    assert out.read_text() == "precious,data\n1,2\n" and sum(fake.counts().values()) == 0

    code, _ = run_cli(capsys, "--queries", queries, "--config", pool, "--out", out, "--force")
    assert code == 0 and "query_id" in out.read_text()
    # Its own table (the progress store beside it) is updated on a rerun without --force.
    code, _ = run_cli(capsys, "--queries", queries, "--config", pool, "--out", out)
    assert code == 0


def test_a_changed_price_reprices_every_row(tmp_path: Path, fake: FakeBackend) -> None:
    rows = arithmetic_rows(3)
    queries = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "t.parquet"
    collect(queries, write_pool(tmp_path / "pool.yaml", fake.base_url, ("strong",)), out)
    sent = sum(fake.counts().values())
    pool = tmp_path / "pool.yaml"
    pool.write_text(pool.read_text().replace("input: 10.0, output: 30.0", "input: 1.0, output: 2.0"))
    result = collect(queries, pool, out)
    assert sum(fake.counts().values()) == sent  # nothing sent again: the price is not the call
    frame = pd.read_parquet(out)
    expected = (frame.prompt_tokens * 1.0 + frame.completion_tokens * 2.0) / 1e6
    assert frame.cost.tolist() == pytest.approx(expected.tolist())
    assert result.table.models["strong"].mean_cost == pytest.approx(expected.mean())
    assert all(n > 0 for n in frame.prompt_tokens) and frame.prompt_tokens[0] == token_count(rows[0]["prompt"])


def test_a_killed_table_write_leaves_no_temporary_behind(tmp_path: Path, fake: FakeBackend) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(2))
    out = tmp_path / "t.parquet"
    stale = tmp_path / ".t.parquet.k1ll3d.tmp"  # what atomic_path leaves when killed mid-write
    stale.write_bytes(b"half a table")
    collect(queries, write_pool(tmp_path / "pool.yaml", fake.base_url, ("weak",)), out)
    assert not stale.exists() and out.exists()


def test_unset_api_key_env_names_pool_yaml(
    tmp_path: Path, fake: FakeBackend, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENTROROUTER_TEST_NO_KEY", raising=False)
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(1))
    pool = write_pool(
        tmp_path / "pool.yaml", fake.base_url, ("strong",), backend_extra="api_key_env: ENTROROUTER_TEST_NO_KEY"
    )
    code, stderr = run_cli(capsys, "--queries", queries, "--config", pool, "--out", tmp_path / "t.parquet")
    assert code == 2
    assert (
        f"{pool}: backends[0] (strong).api_key_env: environment variable ENTROROUTER_TEST_NO_KEY is not set" in stderr
    )
    assert sum(fake.counts().values()) == 0


def test_missing_price_output_names_the_field_not_a_default(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text("backends:\n  - {name: a, base_url: 'http://127.0.0.1:9/v1', price: {input: 1}}\n")
    with pytest.raises(ConfigError, match=r"backends\[0\]\.price\.output: missing") as info:
        load_config(pool)
    assert "got -1" not in str(info.value)


def test_judge_retries_follow_pool_retry_settings(tmp_path: Path, fake: FakeBackend) -> None:
    rows = [{"id": "j0", "prompt": "What is 1 + 1?"}]
    queries = write_jsonl(tmp_path / "q.jsonl", rows)
    with FakeBackend({"judge-model": 1.0}, answer_fn=lambda model, prompt: "Score: 9") as judge:
        extra = (
            "retry: {max_retry_after_s: 0.05}\n"
            f"graders:\n  judge:\n    backend: {{name: judge, base_url: '{judge.base_url}', model: judge-model}}\n"
        )
        pool = write_pool(tmp_path / "pool.yaml", fake.base_url, ("strong",), extra=extra)
        graders = make_graders(["judge"], load_config(pool).grader_options, str(pool), retry=load_config(pool).retry)
        assert graders["judge"].retry.max_retry_after_s == 0.05
        judge.fail(503, model="judge-model", times=1, retry_after=30)  # the default policy would wait 30 s
        started = time.monotonic()
        result = collect(queries, pool, tmp_path / "t.parquet", grader="judge")
        assert time.monotonic() - started < 10
        assert judge.counts() == {"judge-model": 2}
    assert result.complete and pd.read_parquet(tmp_path / "t.parquet").score.tolist() == [0.9]


def test_a_failed_judge_is_not_reported_as_no_model_answering(
    tmp_path: Path, fake: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", [{"id": "j0", "prompt": "What is 1 + 1?"}])
    with FakeBackend({"judge-model": 1.0}, answer_fn=lambda model, prompt: "no verdict here") as judge:
        extra = f"graders:\n  judge:\n    backend: {{name: judge, base_url: '{judge.base_url}', model: judge-model}}\n"
        pool = write_pool(tmp_path / "pool.yaml", fake.base_url, tuple(POOL), extra=extra)
        args = ["--queries", str(queries), "--config", str(pool), "--out", str(tmp_path / "t.csv"), "--grader=judge"]
        code = main(["collect", *args])
    out = capsys.readouterr().out
    assert code == 1
    assert "answered, but no answer could be graded" in out and "no model answered" not in out
    assert store_path_for(tmp_path / "t.csv").exists()


def test_progress_in_a_log_is_plain_lines(
    tmp_path: Path, fake: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(3))
    pool = write_pool(tmp_path / "pool.yaml", fake.base_url)
    code, stderr = run_cli(capsys, "--queries", queries, "--config", pool, "--out", tmp_path / "t.parquet")
    assert code == 0 and "\r" not in stderr
    assert "collect: 9/9 pairs (9 ok, 0 errors)" in stderr
