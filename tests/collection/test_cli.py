"""The `entrorouter collect` command: bad input, kill-and-resume, and training on the result."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from entrorouter.cli import main
from entrorouter.collection.store import store_path_for
from entrorouter.data.io import read_table
from entrorouter.testing.fake_backend import FakeBackend

from .conftest import POOL, arithmetic_rows, cli_command, write_jsonl, write_pool


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["collect", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------ bad input
BAD_INPUTS = {
    "missing column": ([{"id": "a", "reference": "1"}], "", r"q.jsonl: missing column 'prompt'"),
    "duplicate ids": (
        [{"id": "a", "prompt": "1+1", "reference": "2"}, {"id": "a", "prompt": "1+2", "reference": "3"}],
        "",
        r"q.jsonl, row 2, column 'id': duplicate id 'a'",
    ),
    "unknown grader in a row": (
        [{"id": "a", "prompt": "1+1", "reference": "2", "grader": "vibes"}],
        "",
        r"q.jsonl, row 1, column 'grader': unknown grader 'vibes'; known graders: choice, code",
    ),
    "unknown --grader": (
        [{"id": "a", "prompt": "1+1", "reference": "2"}],
        "--grader=vibes",
        r"--grader: unknown grader",
    ),
    "bad --concurrency": ([{"id": "a", "prompt": "1+1", "reference": "2"}], "--concurrency=0", r"--concurrency"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    case: str, tmp_path: Path, fake: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, flag, message = BAD_INPUTS[case]
    queries = write_jsonl(tmp_path / "q.jsonl", rows)
    pool = write_pool(tmp_path / "pool.yaml", fake.base_url)
    out = tmp_path / "out" / "t.parquet"
    args = ["--queries", queries, "--config", pool, "--out", out] + ([flag] if flag else [])
    code, _, stderr = run_cli(capsys, *args)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("entrorouter: error: ")
    assert re.search(message, stderr), stderr
    assert not out.parent.exists()
    assert sum(fake.counts().values()) == 0


def test_unreachable_backend_and_bad_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(2))
    pool = write_pool(tmp_path / "pool.yaml", "http://127.0.0.1:9/v1", ("strong",))
    code, _, stderr = run_cli(capsys, "--queries", queries, "--config", pool, "--out", tmp_path / "t.parquet")
    assert code == 2 and "backend 'strong' at http://127.0.0.1:9/v1 is unreachable" in stderr
    code, _, stderr = run_cli(capsys, "--queries", queries, "--config", pool, "--out", tmp_path / "t.xlsx")
    assert code == 2 and "unsupported file type '.xlsx'" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.yaml", "q.jsonl"]


def test_rejected_api_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(1))
    monkeypatch.setenv("TEST_COLLECT_KEY", "wrong-key-value")
    with FakeBackend({"strong": 1.0}, api_key="right-key") as keyed:
        pool = write_pool(
            tmp_path / "pool.yaml", keyed.base_url, ("strong",), backend_extra="api_key_env: TEST_COLLECT_KEY"
        )
        code, _, stderr = run_cli(capsys, "--queries", queries, "--config", pool, "--out", tmp_path / "t.parquet")
    assert code == 2 and "rejected the API key from $TEST_COLLECT_KEY (HTTP 401)" in stderr
    assert "wrong-key-value" not in stderr  # secrets are never printed


def test_summary_and_exit_codes(tmp_path: Path, fake: FakeBackend, capsys: pytest.CaptureFixture[str]) -> None:
    queries = write_jsonl(tmp_path / "q.jsonl", arithmetic_rows(5))
    pool = write_pool(tmp_path / "pool.yaml", fake.base_url)
    out = tmp_path / "t.parquet"
    fake.fail(500, model="weak")
    code, stdout, _ = run_cli(capsys, "--queries", queries, "--config", pool, "--out", out)
    assert code == 1  # written, but some pairs have no score
    assert "collect summary" in stdout and "accuracy" in stdout and "5 pairs have no score" in stdout
    fake.answer()
    code, stdout, _ = run_cli(capsys, "--queries", queries, "--config", pool, "--out", out)
    assert code == 0 and "10 of 15 pairs were already done" in stdout


# ------------------------------------------------------------------ kill and resume
def graded_pairs(store: Path) -> set[tuple[str, str]]:
    if not store.exists():
        return set()
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        try:
            return set(db.execute("SELECT query_id, model FROM outcomes WHERE status = 'graded'"))
        except sqlite3.OperationalError:  # the run has not created its table yet
            return set()


def default_signals() -> None:
    """Start the child as a shell would: SIGINT and SIGTERM at their defaults and unblocked
    (an earlier test in this process, e.g. one running Ray, may have changed what children inherit)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "term", "kill-9"])
def test_killed_run_resumes_and_sends_only_what_is_missing(
    stop: signal.Signals, tmp_path: Path, fake: FakeBackend
) -> None:
    rows = arithmetic_rows(40)
    prompt_ids = {row["prompt"]: row["id"] for row in rows}
    queries = write_jsonl(tmp_path / "q.jsonl", rows)
    pool = write_pool(tmp_path / "pool.yaml", fake.base_url, backend_extra="max_concurrency: 2")
    out = tmp_path / "t.parquet"
    store = store_path_for(out)
    fake.stall(0.2)  # 120 pairs / 6 workers x 200 ms: about four seconds to stop it in, even on a busy machine
    process = subprocess.Popen(
        cli_command("--queries", queries, "--config", pool, "--out", out),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    deadline = time.monotonic() + 30
    while len(graded_pairs(store)) < 20:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.02)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=30)
    if stop != signal.SIGKILL:
        assert process.returncode == 130 and "run the same command again to continue" in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    assert not out.exists()  # no half-written table
    done = graded_pairs(store)
    assert 20 <= len(done) < 120

    fake.reset()
    finish = subprocess.run(cli_command("--queries", queries, "--config", pool, "--out", out), capture_output=True)
    assert finish.returncode == 0, finish.stderr
    resent = [(prompt_ids[prompt], model) for model, prompt in fake.requests()]
    assert len(resent) == len(set(resent))  # no pair twice
    assert set(resent) == {(row["id"], model) for row in rows for model in POOL} - done
    assert read_table(out).observed.all()


# ------------------------------------------------------------------ the table trains a router
def test_the_collected_table_trains_a_router(tmp_path: Path, fake: FakeBackend) -> None:
    help_text = subprocess.run([sys.executable, "-m", "entrorouter.cli", "--help"], capture_output=True, text=True)
    if " train " not in help_text.stdout:
        pytest.skip("`entrorouter train` is not built yet (not in `entrorouter --help`)")
    rows = arithmetic_rows(150)
    queries = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "t.parquet"
    done = subprocess.run(
        cli_command("--queries", queries, "--config", write_pool(tmp_path / "pool.yaml", fake.base_url), "--out", out),
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"encoder": "hashed-tfidf"}))
    router_dir = tmp_path / "router"
    train = subprocess.run(
        [sys.executable, "-m", "entrorouter.cli", "train", "--data", out, "--out", router_dir, "--config", config],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 0, train.stderr
    from entrorouter.router import Router

    router = Router.load(router_dir)
    assert tuple(router.models) == tuple(POOL)
