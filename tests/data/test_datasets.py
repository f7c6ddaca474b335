"""Importers on the real public datasets (ENTROROUTER_DATA_DIR)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from entrorouter.data.datasets import load_source, routerbench_question
from entrorouter.data.demo import make_demo_table
from entrorouter.errors import EntroRouterError


def test_mmlu_pro(data_dir: Path) -> None:
    table = load_source("mmlu_pro", data_dir_path=data_dir)
    assert table.n_queries == 12032 and table.n_models == 29
    ids = table.query_ids.astype(int)
    assert set(table.splits[ids % 5 == 0]) == {"test"} and set(table.splits[ids % 5 != 0]) == {"train"}
    stats = table.model_stats()
    assert stats["accuracy"].idxmax() == "gemini-1.5-pro-002"
    assert stats.loc["DeepSeek-Coder-V2", "coverage"] == pytest.approx(10351 / 12032)
    # Missing outcomes stay missing (DeepSeek covers 10,351 questions).
    assert np.isnan(table.scores[:, table.model_index("DeepSeek-Coder-V2")]).sum() == 12032 - 10351
    # Cost = price card x token estimate: a flat-priced open model pays the same per token in and out.
    llama = table.model_index("Llama-2-7b-hf")
    assert np.nanmin(table.costs[:, llama]) > 1500 * 0.20 / 1e6
    assert "\nA. " in table.queries[0]


def test_routerbench_subset(data_dir: Path) -> None:
    table = load_source("routerbench", data_dir_path=data_dir)
    assert table.n_models == 11
    assert (table.splits == "test").sum() == 953 and (table.splits == "train").sum() == 2225
    assert len(set(table.query_ids)) == table.n_queries
    assert table.strongest_model() == "gpt-4-1106-preview"
    # The few-shot exemplars are stripped: the query is the last question only.
    assert all("Answer:\nA\n" not in q for q in table.queries)


def test_routellm_2model(data_dir: Path) -> None:
    table = load_source("routellm", data_dir_path=data_dir)
    assert table.models == ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")
    assert table.n_queries == 14042 + 1319 - 17  # RouteLLM's contaminated prompts are dropped
    assert (table.splits[::5] == "test").all() and (table.splits[1::5] == "train").all()
    ratio = table.costs[:, 1] / table.costs[:, 0]
    assert np.allclose(ratio[table.tasks != "gsm8k"], 20.0 / 0.9)  # same tokens, price ratio


def test_routerbench_question_extraction() -> None:
    prompt = repr(["Q1?\nA) x\nAnswer:\nA\n\nQ2?\nA) y\nAnswer:"])
    assert routerbench_question(prompt) == "Q2?\nA) y\nAnswer:"
    assert routerbench_question("not a list") == "not a list"


def test_demo_is_deterministic_and_labelled() -> None:
    a, b = make_demo_table(300, seed=3), make_demo_table(300, seed=3)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.meta["simulated"] is True
    assert a.strongest_model() == "frontier-api"


def test_unknown_source_and_missing_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(EntroRouterError, match="neither a file nor a dataset name"):
        load_source("no-such-thing")
    monkeypatch.delenv("ENTROROUTER_DATA_DIR", raising=False)
    with pytest.raises(EntroRouterError, match="ENTROROUTER_DATA_DIR"):
        load_source("mmlu_pro")
    with pytest.raises(EntroRouterError, match="does not exist"):
        load_source("mmlu_pro", data_dir_path=tmp_path / "nope")
