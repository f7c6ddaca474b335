"""Reading and writing outcome tables: round trips and every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entrorouter.data.io import read_table, write_table
from entrorouter.data.table import OutcomeTable
from entrorouter.errors import DataError


def small_table() -> OutcomeTable:
    return OutcomeTable.from_arrays(
        query_ids=["q1", "q2", "q3"],
        queries=["What is 2+2?", "Capital of France?", "Write a haiku, with a comma"],
        models=["small", "big"],
        scores=np.array([[1.0, 1.0], [0.0, np.nan], [0.5, 1.0]]),
        costs=np.array([[0.1, 1.0], [0.1, np.nan], [0.2, 2.0]]),
        tasks=["math", "geo", "writing"],
        splits=["train", "train", "test"],
        name="small",
    )


def assert_same(a: OutcomeTable, b: OutcomeTable) -> None:
    assert list(a.query_ids) == list(b.query_ids)
    assert list(a.queries) == list(b.queries)
    assert a.models == b.models
    np.testing.assert_allclose(a.scores, b.scores)
    np.testing.assert_allclose(a.costs, b.costs)
    assert list(a.tasks) == list(b.tasks)
    assert list(a.splits) == list(b.splits)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_long_round_trip_keeps_missing_outcomes(tmp_path: Path, suffix: str) -> None:
    table = small_table()
    path = write_table(table, tmp_path / f"t{suffix}")
    back = read_table(path)
    assert_same(table, back)
    assert np.isnan(back.scores[1, 1])  # missing stays missing, not 0


def test_wide_layout_is_detected(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "query_id": ["a", "b"],
            "query": ["x", "y"],
            "score:m/one": [1, 0],
            "cost:m/one": [0.5, 0.5],
            "score:m:two": [None, 1],
            "cost:m:two": [None, 3.0],
        }
    )
    frame.to_csv(tmp_path / "wide.csv", index=False)
    table = read_table(tmp_path / "wide.csv")
    assert table.models == ("m/one", "m:two")
    assert np.isnan(table.scores[0, 1]) and table.scores[1, 1] == 1.0


def test_boolean_scores_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("query_id,query,model,score,cost\nq,t,a,True,1\nq,t,b,false,2\n")
    assert read_table(tmp_path / "b.csv").scores.tolist() == [[1.0, 0.0]]


HEADER = "query_id,query,model,score,cost\n"
BAD_CSV = {
    "missing_column": (
        "query_id,query,model,score\nq,t,a,1\n",
        None,
        None,
        "missing column(s) 'cost'",
    ),
    "non_numeric_score": (
        HEADER + "q,t,a,1,1\nq,t,b,high,1\n",
        "row 2",
        "score",
        "expected a score in [0, 1], got 'high'",
    ),
    "score_out_of_range": (
        HEADER + "q,t,a,1.5,1\n",
        "row 1",
        "score",
        "expected a score in [0, 1], got 1.5",
    ),
    "negative_cost": (
        HEADER + "q,t,a,1,1\nr,u,a,0,-2\n",
        "row 2",
        "cost",
        "expected a cost >= 0 (US$), got -2",
    ),
    "cost_missing_for_score": (HEADER + "q,t,a,1,\n", "row 1", "cost", "empty cell"),
    "duplicate_pair": (HEADER + "q,t,a,1,1\nq,t,b,0,1\nq,t,a,0,1\n", "row 3", None, "first in row 1"),
    "query_without_outcomes": (
        HEADER + "q,t,a,1,1\nr,u,a,,\n",
        "row 2",
        "score",
        "query 'r' has no outcomes",
    ),
    "inconsistent_query_text": (
        HEADER + "q,t,a,1,1\nq,other,b,1,1\n",
        "row 2",
        "query",
        "different text",
    ),
    "empty_query_id": (HEADER + ",t,a,1,1\n", "row 1", "query_id", "non-empty"),
    "underscore_in_a_number": (HEADER + "q,t,a,1,1_000\n", "row 1", "cost", "got '1_000'"),
    "header_only": (HEADER, None, None, "no data rows"),
    # Every row one field longer: pandas took the first column as the index, shifting the rest.
    "rows_longer_than_header": (HEADER + "q,t,a,1,0.001,0.9\nr,u,a,0,0.001,0.9\n", "row 1", None, "more fields"),
    "duplicate_column": (
        "query_id,query,model,score,cost,score\nq,t,a,1,1,0\n",
        None,
        None,
        "duplicate column 'score'",
    ),
    "duplicate_column_but_spaces": ("query_id,query,model,score,cost, score\nq,t,a,1,1,0\n", None, None, "'score'"),
    "duplicate_wide_column": ("query_id,query,score:a,cost:a,score:a\nq,t,1,1,0\n", None, None, "'score:a'"),
    "wide_column_without_a_model": ("query_id,query,score:,cost:\nq,t,1,1\n", None, None, "names no model"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_is_located(tmp_path: Path, case: str) -> None:
    text, row, column, message = BAD_CSV[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_table(path)
    error = info.value
    assert Path(error.file) == path
    assert error.row == row
    assert error.column == column
    assert message in str(error)
    assert "\n" not in str(error)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="the file is empty"):
        read_table(tmp_path / "e.parquet")


def test_wrong_format(tmp_path: Path) -> None:
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'"):
        read_table(tmp_path / "t.xlsx")
    (tmp_path / "t.parquet").write_text("query_id,query\n")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table(tmp_path / "t.parquet")


def test_bad_jsonl_line(tmp_path: Path) -> None:
    good = json.dumps({"query_id": "q", "query": "t", "model": "a", "score": 1, "cost": 1})
    (tmp_path / "t.jsonl").write_text(good + "\n{not json\n")
    with pytest.raises(DataError) as info:
        read_table(tmp_path / "t.jsonl")
    assert info.value.row == "line 2"


def test_duplicate_parquet_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [pa.array(["q"]), pa.array(["t"]), pa.array(["a"]), pa.array([1.0]), pa.array([1.0]), pa.array([0.0])]
    pq.write_table(
        pa.table(columns, names=["query_id", "query", "model", "score", "cost", "score"]), tmp_path / "d.parquet"
    )
    with pytest.raises(DataError, match="duplicate column 'score'"):
        read_table(tmp_path / "d.parquet")


def test_jsonl_that_is_not_utf8_is_located_and_a_bom_is_accepted(tmp_path: Path) -> None:
    good = json.dumps({"query_id": "q", "query": "t", "model": "a", "score": 1, "cost": 1}).encode()
    (tmp_path / "latin1.jsonl").write_bytes(good + b"\n" + good.replace(b'"t"', b'"caf\xe9"') + b"\n")
    with pytest.raises(DataError, match="not valid UTF-8") as info:
        read_table(tmp_path / "latin1.jsonl")
    assert info.value.row == "line 2"
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + good + b"\n")
    assert read_table(tmp_path / "bom.jsonl").query_ids.tolist() == ["q"]


def test_wide_duplicate_query(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("query_id,query,score:a,cost:a\nq,t,1,1\nq,t,0,1\n")
    with pytest.raises(DataError) as info:
        read_table(tmp_path / "w.csv")
    assert info.value.row == "row 2" and info.value.column == "query_id"


def test_write_is_atomic_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous content")
    bad = small_table()
    bad.queries = np.array([object(), "b", "c"], dtype=object)  # pyarrow cannot write this
    with pytest.raises(Exception):  # noqa: B017 - any failure must leave the old file
        write_table(bad, target)
    assert target.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_cells_that_are_not_text_or_numbers_are_refused_and_numeric_ids_keep_no_dot_zero(tmp_path: Path) -> None:
    row = {"query": "t", "model": "a", "score": 1, "cost": 1}
    lines = [{"query_id": 7.0, **row}, {"query_id": "q", **row, "query": {"text": "t"}}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    # Before, the object became the query "{'text': 't'}" without a word.
    with pytest.raises(DataError, match="expected text, got dict") as info:
        read_table(tmp_path / "t.jsonl")
    assert info.value.row == "row 2" and info.value.column == "query"
    (tmp_path / "ok.jsonl").write_text(json.dumps(lines[0]) + "\n")
    assert read_table(tmp_path / "ok.jsonl").query_ids.tolist() == ["7"]


def test_a_folder_named_like_a_table_is_called_a_folder(tmp_path: Path) -> None:
    (tmp_path / "x.csv").mkdir()
    with pytest.raises(DataError, match="a folder, not a file"):  # it said "no such file"
        read_table(tmp_path / "x.csv")


def test_a_key_twice_in_one_jsonl_object_is_located(tmp_path: Path) -> None:
    good = '{"query_id": "q", "query": "t", "model": "a", "score": 1, "cost": 1}'
    (tmp_path / "t.jsonl").write_text(good + "\n" + good.replace('"score": 1', '"score": 1, "score": 0') + "\n")
    with pytest.raises(DataError, match="the key 'score' appears twice") as info:  # it kept the last, silently
        read_table(tmp_path / "t.jsonl")
    assert info.value.row == "line 2"
