"""`entrorouter data validate` lists every problem of a table, in row order, with a count."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrorouter.cli import main
from entrorouter.data.io import table_problems

HEADER = "query_id,query,model,score,cost\n"


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["data", "validate", *args])
    return code, capsys.readouterr().err.splitlines()


def test_every_problem_is_listed_in_row_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    # Row 4's range problem is found by a later check than row 2's parse problem and row 1's blank
    # query; the report still lists them by row.
    bad.write_text(HEADER + ",t,a,1,1\nq,t,a,high,1\nq,t,b,0,-3\nr,u,a,7,1\n")
    code, lines = validate(capsys, str(bad))
    assert code == 2
    assert lines == [
        f"entrorouter: error: {bad}, row 1, column 'query_id': expected a non-empty value",
        f"entrorouter: error: {bad}, row 2, column 'score': expected a score in [0, 1], got 'high'",
        f"entrorouter: error: {bad}, row 3, column 'cost': expected a cost >= 0 (US$), got -3",
        f"entrorouter: error: {bad}, row 4, column 'score': expected a score in [0, 1], got 7",
        f"{bad}: 4 problem(s)",
    ]


def test_an_unreadable_cost_is_one_problem_not_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "q,t,a,1,x\nr,u,a,1,\n")
    code, lines = validate(capsys, str(bad))
    assert code == 2
    assert lines == [
        f"entrorouter: error: {bad}, row 1, column 'cost': expected a cost >= 0 (US$), got 'x'",
        f"entrorouter: error: {bad}, row 2, column 'cost': expected a cost >= 0 (US$) for an outcome that has a score,"
        " got an empty cell",
        f"{bad}: 2 problem(s)",
    ]


def test_problems_across_queries_are_all_found(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "q,t,a,1,1\nq,t,a,0,1\nq,other,b,1,1\nr,u,a,,\ns,v,a,1,1\ns,v,a,1,1\n")
    _, problems = table_problems(bad)
    found = [(problem.row, problem.detail.split(";")[0]) for problem in problems]
    assert found == [
        ("row 2", "duplicate outcome for query 'q' and model 'a' (first in row 1)"),
        ("row 3", "this query_id has a different text in row 1"),
        ("row 4", "query 'r' has no outcomes (every score is empty)"),
        ("row 6", "duplicate outcome for query 's' and model 'a' (first in row 5)"),
    ]


def test_the_list_is_capped_but_the_count_is_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "".join(f'{{"query_id": "q{i}", "query": "t", "model": "a", "score": 2, "cost": 1}}\n' for i in range(80))
    )
    code, lines = validate(capsys, str(bad), "--max-problems", "5")
    assert code == 2 and len(lines) == 6
    assert "row 1," in lines[0] and "row 5," in lines[4]
    assert lines[-1] == f"{bad}: 80 problem(s) (the first 5 listed)"


def test_a_good_table_is_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "q,t,a,1,0.1\nq,t,b,0,0.2\n")
    assert main(["data", "validate", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {good}: 1 queries x 2 models")


def test_a_model_without_any_outcome_is_ok_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text("query_id,query,score:a,cost:a,score:b,cost:b\nq,t,1,0.1,,\nr,u,0,0.1,,\n")
    assert main(["data", "validate", str(wide)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"OK {wide}: 2 queries x 2 models")
    assert captured.err == "warning: model(s) ['b'] have no outcome at all; train refuses such a table\n"
