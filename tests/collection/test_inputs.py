"""Reading query files and pool.yaml: every format, and one located error per mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from entrorouter.collection.config import load_config
from entrorouter.collection.graders import Judge, make_graders
from entrorouter.collection.queries import load_queries
from entrorouter.errors import ConfigError, DataError

from .conftest import write_jsonl


def test_jsonl_with_prompts_messages_lists_and_defaults(tmp_path: Path) -> None:
    rows = [
        {"id": 1, "prompt": "What is 2+2?", "reference": 4, "task": "math"},
        {
            "id": 2,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]},
            ],
            "reference": ["Paris", "paris, france"],
            "grader": "exact",
        },
        {"id": 3, "prompt": "Pick one", "reference": "B", "grader": "choice", "choices": ["x", "y", "z"]},
        {"id": 4, "prompt": "Write add", "grader": "code", "tests": ["assert add(1, 2) == 3"]},
    ]
    queries = load_queries(write_jsonl(tmp_path / "q.jsonl", rows), default_grader="numeric")
    assert [q.id for q in queries] == ["1", "2", "3", "4"]
    assert queries[0].grader == "numeric" and queries[0].references == ("4",) and queries[0].task == "math"
    assert queries[0].messages == ({"role": "user", "content": "What is 2+2?"},)
    assert queries[1].text == "Capital of France?" and queries[1].references == ("Paris", "paris, france")
    assert len(queries[1].messages) == 2
    assert queries[2].choices == ("x", "y", "z")
    assert queries[3].tests == "assert add(1, 2) == 3" and queries[3].references == ()


def test_csv_holds_lists_as_json(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    frame = pd.DataFrame(
        {
            "id": ["a", "b"],
            "messages": [json.dumps([{"role": "user", "content": "Hi?"}]), ""],
            "prompt": ["", "Which?"],
            "choices": ["", json.dumps(["left", "right"])],
            "reference": ["hello", "right"],
            "grader": ["exact", "choice"],
        }
    )
    frame.to_csv(path, index=False)
    queries = load_queries(path)
    assert queries[0].text == "Hi?" and queries[1].choices == ("left", "right")


def test_parquet_with_nested_lists(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    pd.DataFrame(
        {
            "id": ["a"],
            "messages": [[{"role": "user", "content": "Hi?"}]],
            "reference": [["hello", "hi"]],
        }
    ).to_parquet(path)
    (query,) = load_queries(path, default_grader="f1")
    assert query.text == "Hi?" and query.references == ("hello", "hi")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "x", "reference": "1"}], r"q.jsonl: missing column 'id'"),
        ([{"id": "a", "reference": "1"}], r"q.jsonl: missing column 'prompt' \(or 'messages'\)"),
        (
            [{"id": "a", "prompt": "x", "reference": "1"}, {"id": "a", "prompt": "y", "reference": "2"}],
            r"q.jsonl, row 2, column 'id': duplicate id 'a' \(also in row 1\)",
        ),
        (
            [{"id": "a", "prompt": "x", "reference": "1", "grader": "fuzzy"}],
            r"row 1, column 'grader': unknown grader 'fuzzy'",
        ),
        ([{"id": "a", "prompt": "x"}], r"q.jsonl: missing column 'reference': grader 'numeric' needs a reference"),
        (
            [{"id": "a", "prompt": "x", "reference": "1"}, {"id": "b", "prompt": "y", "reference": ""}],
            r"row 2, column 'reference': grader 'numeric' needs a reference",
        ),
        (
            [{"id": "a", "prompt": "x", "reference": "many"}],
            r"row 1, column 'reference': grader 'numeric' needs a number",
        ),
        ([{"id": "a", "prompt": "", "reference": "1"}], r"row 1, column 'prompt': expected a prompt"),
        (
            [{"id": "a", "prompt": "x", "messages": [{"role": "user", "content": "y"}], "reference": "1"}],
            r"row 1, column 'messages': give either 'prompt' or 'messages', not both",
        ),
        ([{"id": "a", "messages": [{"role": "robot", "content": "y"}], "reference": "1"}], r"message 0: expected"),
        ([{"id": "a", "messages": [{"role": "system", "content": "y"}], "reference": "1"}], r"need a user message"),
        ([{"id": "a", "prompt": "x", "grader": "code"}], r"missing column 'tests'"),
        (
            [{"id": "a", "prompt": "x", "grader": "choice", "reference": "E", "choices": ["p", "q"]}],
            r"grader 'choice' needs an option letter",
        ),
    ],
)
def test_bad_query_files(tmp_path: Path, rows: list[dict], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_queries(write_jsonl(tmp_path / "q.jsonl", rows), default_grader="numeric")


def test_no_grader_at_all(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"row 1, column 'grader': no grader: add a 'grader' column or pass --grader"):
        load_queries(write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "prompt": "x", "reference": "1"}]))


def test_the_example_pool_is_valid() -> None:
    cfg = load_config(Path(__file__).parents[2] / "examples" / "pool.yaml")
    assert [b.name for b in cfg.backends] == ["gpt-4o", "gpt-4o-mini", "llama-3.1-8b"]
    graders = make_graders(["numeric", "code", "judge"], cfg.grader_options, cfg.source)
    assert isinstance(graders["judge"], Judge) and graders["judge"].backend.model == "gpt-4o"


def test_pool_yaml(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(
        "backends:\n"
        "  - {name: a, base_url: 'http://127.0.0.1:9/v1', price: {input: 1, output: 2}, max_concurrency: 3}\n"
        "concurrency: 7\nrequest: {temperature: 0, max_tokens: 16}\ngrader: exact\nretry: {base_delay_s: 0.5}\n"
        "graders: {numeric: {rel_tol: 0.01}}\n"
    )
    cfg = load_config(path)
    assert cfg.backends[0].max_concurrency == 3 and cfg.backends[0].cost(1e6, 1e6) == 3.0
    assert cfg.concurrency == 7 and cfg.request == {"temperature": 0, "max_tokens": 16}
    assert cfg.grader == "exact" and cfg.grader_options == {"numeric": {"rel_tol": 0.01}}
    assert cfg.retry.base_delay_s == 0.5 and cfg.retry.max_delay_s == 8.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("backends: []\n", r"'backends' must be a non-empty list"),
        ("backends:\n  - {name: a, base_url: 'http://x/v1'}\n", r"backends\[0\] \(a\): collect needs a price"),
        ("backends:\n  - {name: a, base_url: 'ftp://x', price: {input: 1, output: 1}}\n", r"backends\[0\].base_url"),
        (
            "backends:\n  - {name: a, base_url: 'http://x/v1', price: {input: 1, output: 1}}\nconcurency: 3\n",
            "unknown key",
        ),
        (
            "backends:\n  - {name: a, base_url: 'http://x/v1', price: {input: 1, output: 1}}\nconcurrency: 0\n",
            "concurrency",
        ),
        (
            "backends:\n  - {name: a, base_url: 'http://x/v1', price: {input: 1, output: 1}}\nrequest: {model: x}\n",
            r"request: \['model'\] cannot be set here",
        ),
        ("backends: [\n", r"invalid YAML"),
        (
            "backends:\n  - {name: a, base_url: 'http://x/v1', price: {input: 1, output: 1}}\nretry: {delay: 1}\n",
            r"retry: expected a mapping with some of \['base_delay_s'",
        ),
    ],
)
def test_bad_pool_yaml(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
