"""Importers for the public routing datasets, and the data-directory setting.

Each importer turns one dataset folder (see its ``PROVENANCE.md``) into an
:class:`OutcomeTable` with the project's fixed ``train``/``test`` split:

* ``mmlu_pro`` — 29 models x 12,032 MMLU-Pro questions. Cost from the price card
  (the folder's ``price_card.json``, else ``price_cards/mmlu_pro.json``) and token
  estimates: ``in_tok = 1500 + len(question + options) / 4`` (the 5-shot CoT prefix is
  ~1500 tokens), ``out_tok = output_chars / 4``. Test: ``question_id % 5 == 0``.
* ``routerbench_subset`` — 11 models on ARC-Challenge, MBPP and Winogrande with RouterBench's
  real per-call US$ cost; RouterDC's own ``*_train.csv`` / ``*_test.csv`` split.
* ``routellm_2model`` — Mixtral-8x7B vs GPT-4-1106 on MMLU and GSM8K (RouteLLM's eval
  responses) priced with ``price_cards/routellm_2model.json``. Test: row index ``% 5 == 0``.

``mmlu_pro_full`` and ``routerbench_full`` are the larger variants of the first two (all
5-shot MMLU-Pro models that have a price; all six RouterBench tasks RouterDC carries).

The folder holding these datasets comes from ``--data-dir``, the environment variable
``ENTROROUTER_DATA_DIR``, else the per-user folder ``entrorouter data download`` fills, so a
dataset is found by name with no setting; nothing from it is ever copied into the project.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from entrorouter.data.atomic import atomic_path
from entrorouter.data.cost import PriceCard, bundled_price_card, estimate_tokens
from entrorouter.data.io import read_table
from entrorouter.data.table import OutcomeTable
from entrorouter.errors import DataError, EntroRouterError

DATA_DIR_ENV = "ENTROROUTER_DATA_DIR"


def user_data_dir() -> Path:
    """Where ``entrorouter data download`` puts datasets.

    ``$XDG_DATA_HOME/entrorouter``, else ``~/.local/share/entrorouter``.
    """
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "entrorouter"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the public datasets: ``--data-dir``, ``$ENTROROUTER_DATA_DIR``, else the per-user folder."""
    value = explicit or os.environ.get(DATA_DIR_ENV)
    if not value:
        return user_data_dir()
    path = Path(value).expanduser()
    if not path.is_dir():
        raise EntroRouterError(f"dataset folder {path} does not exist (from --data-dir or {DATA_DIR_ENV})")
    return path


def dataset_folder(root: Path, name: str) -> Path:
    """``root/name``, or a one-line error that says how to get the dataset."""
    folder = root / name
    if not folder.is_dir():
        raise EntroRouterError(
            f"dataset {name!r} is not in {root}: run `entrorouter data download {name}` "
            f"(or point --data-dir / {DATA_DIR_ENV} at a folder that holds it)"
        )
    return folder


def _require(path: Path) -> Path:
    if not path.exists():
        raise DataError("expected this dataset file; is the dataset folder complete?", file=path)
    return path


# ------------------------------------------------------------------ MMLU-Pro
MMLU_PRO_FILES = ("mmlu_pro_questions.parquet", "mmlu_pro_outcomes_long.parquet")


def build_mmlu_pro(folder: Path) -> None:
    """Derive the two MMLU-Pro tables from the upstream ``raw_zips/model_outputs_<MODEL>_5shots.zip``.

    Each zip holds one JSON list with an element per question (non-objects are skipped:
    DeepSeek-Coder-V2's holds 43 stray strings). Questions keep their first-seen order over
    the zips sorted by name; ``correct = int(pred == answer)``, an unextracted ``pred``
    (null) counts as wrong; ``output_chars/words`` measure the generated text. This
    reproduces the shared copies' files exactly.
    """
    questions: dict[str, dict[str, str]] = {}
    outcomes: list[dict[str, object]] = []
    zips = sorted((folder / "raw_zips").glob("model_outputs_*.zip"))
    if not zips:
        raise DataError("no model_outputs_*.zip files", file=folder / "raw_zips")
    for path in zips:
        model = path.name.removeprefix("model_outputs_").removesuffix(".zip").removesuffix(".json")
        model = model.removesuffix("_5shots").removesuffix("_5-shots")
        try:
            with zipfile.ZipFile(path) as archive:
                rows = json.loads(archive.read(archive.namelist()[0]))
        except (zipfile.BadZipFile, IndexError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"expected a zip holding one JSON list ({exc})", file=path) from None
        if not isinstance(rows, list):
            raise DataError("expected a zip holding one JSON list", file=path)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                continue
            try:
                qid = str(row["question_id"])
                question = {
                    "question": row["question"],
                    "options": json.dumps(row["options"]),
                    "answer": row["answer"],
                    "answer_index": str(row["answer_index"]),
                    "category": row["category"],
                    "src": row["src"],
                }
            except KeyError as exc:
                raise DataError(f"element {i}: missing field {exc.args[0]!r}", file=path) from None
            questions.setdefault(qid, {"question_id": qid, **question})
            text = row.get("generated_text", row.get("model_outputs")) or ""
            pred = row.get("pred")
            outcomes.append(
                {
                    "question_id": qid,
                    "model": model,
                    "pred": pred,
                    "correct": int(pred is not None and pred == row["answer"]),
                    "output_chars": len(text),
                    "output_words": len(text.split()),
                }
            )
    frames = (pd.DataFrame(list(questions.values())), pd.DataFrame(outcomes))
    for name, frame in zip(MMLU_PRO_FILES, frames, strict=True):
        with atomic_path(folder / name) as tmp:
            frame.to_parquet(tmp, index=False)


def import_mmlu_pro(root: Path, name: str = "mmlu_pro") -> OutcomeTable:
    folder = dataset_folder(root, name)
    questions = pd.read_parquet(_require(folder / MMLU_PRO_FILES[0]))
    outcomes = pd.read_parquet(_require(folder / MMLU_PRO_FILES[1]))
    own_card = folder / "price_card.json"
    card = PriceCard.load(own_card) if own_card.exists() else bundled_price_card("mmlu_pro")

    questions = questions.assign(question_id=questions["question_id"].astype(str)).reset_index(drop=True)
    outcomes = outcomes.assign(question_id=outcomes["question_id"].astype(str))
    models = sorted(outcomes["model"].unique())
    if name != "mmlu_pro":  # a larger variant holds models the bundled card does not price
        unpriced = [m for m in models if m not in card.prices]
        if unpriced:
            print(f"warning: {name}: no price for {', '.join(unpriced)}; left out", file=sys.stderr)
        models = [m for m in models if m in card.prices]
        outcomes = outcomes[outcomes["model"].isin(models)]
    card.require(models)

    q_index = pd.Index(questions["question_id"])
    rows = q_index.get_indexer(outcomes["question_id"])
    if (rows < 0).any():
        bad = outcomes["question_id"][rows < 0].iloc[0]
        raise DataError(
            f"outcome for unknown question_id {bad!r}",
            file=folder / "mmlu_pro_outcomes_long.parquet",
        )
    cols = pd.Index(models).get_indexer(outcomes["model"])

    raw_len = (questions["question"].str.len() + questions["options"].str.len()).to_numpy()
    in_tokens = 1500.0 + estimate_tokens(raw_len)
    out_tokens = estimate_tokens(outcomes["output_chars"].to_numpy())
    prices = np.array([card.prices[m] for m in models])  # (K, 2)
    call_cost = (in_tokens[rows] * prices[cols, 0] + out_tokens * prices[cols, 1]) / 1e6

    n, k = len(questions), len(models)
    scores, costs = np.full((n, k), np.nan), np.full((n, k), np.nan)
    scores[rows, cols] = outcomes["correct"].to_numpy(dtype=np.float64)
    costs[rows, cols] = call_cost

    texts = [_mmlu_pro_text(q, o) for q, o in zip(questions["question"], questions["options"], strict=True)]
    ids = questions["question_id"].to_numpy()
    split = np.where(ids.astype(np.int64) % 5 == 0, "test", "train")
    return OutcomeTable.from_arrays(
        query_ids=ids,
        queries=texts,
        models=models,
        scores=scores,
        costs=costs,
        tasks=questions["category"].to_numpy(),
        splits=split,
        name=name,
        meta={"cost": "price card x token estimate", "price_card": card.about},
    )


def _mmlu_pro_text(question: str, options: str) -> str:
    try:
        choices = json.loads(options)
    except (TypeError, json.JSONDecodeError):
        return question
    letters = "ABCDEFGHIJKLMNOP"
    return question + "\n" + "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices[: len(letters)]))


# ------------------------------------------------------------ RouterBench subset
ROUTERBENCH_TASKS = ("arc_challenge", "mbpp", "winograde")
ROUTERBENCH_FULL_TASKS = ("arc_challenge", "gsm8k", "hellaswag", "mbpp", "mmlu", "winograde")
_ROUTERBENCH_META = {"Unnamed: 0", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}


def routerbench_question(prompt_repr: str) -> str:
    """The question being asked, without the few-shot exemplars in front of it.

    RouterBench stores each prompt as the repr of a Python list of strings; the 5-shot
    variants put four or five solved exemplars before the real question, separated by
    blank lines. Those exemplars are identical for every query of a task, so embedding
    them would drown the question; the router sees the last block only.
    """
    try:
        parts = ast.literal_eval(prompt_repr)
        text = parts[-1] if isinstance(parts, list) and parts else str(parts)
    except (ValueError, SyntaxError):
        text = prompt_repr
    blocks = [b for b in str(text).split("\n\n") if b.strip()]
    return blocks[-1].strip() if blocks else str(text).strip()


def import_routerbench_subset(
    root: Path, name: str = "routerbench_subset", tasks: tuple[str, ...] = ROUTERBENCH_TASKS
) -> OutcomeTable:
    folder = dataset_folder(root, name)
    frames = [
        pd.read_csv(_require(folder / f"{task}_{split}.csv")).assign(split=split)
        for task in tasks
        for split in ("train", "test")
    ]
    merged = pd.concat(frames, ignore_index=True)
    models = sorted(c for c in frames[0].columns if "|" not in c and c not in _ROUTERBENCH_META | {"split"})
    # sample_id is not unique (a few ids name two different prompts, even across the
    # train and test files); the pandas index column "Unnamed: 0" is, so it joins the id.
    query_ids = merged["sample_id"] + "#" + merged["Unnamed: 0"].astype(str)
    scores = merged[models].to_numpy(dtype=np.float64)
    costs = merged[[f"{m}|total_cost" for m in models]].to_numpy(dtype=np.float64)
    keep = ~np.isnan(scores).all(axis=1)
    return OutcomeTable.from_arrays(
        query_ids=query_ids[keep],
        queries=[routerbench_question(p) for p in merged["prompt"][keep]],
        models=models,
        scores=scores[keep],
        costs=np.where(np.isnan(scores), np.nan, costs)[keep],
        tasks=merged["eval_name"][keep],
        splits=merged["split"][keep],
        name=name,
        meta={"cost": "RouterBench per-call US$ (<model>|total_cost)"},
    )


# ----------------------------------------------------------- RouteLLM 2-model
ROUTELLM_MODELS = ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")
# RouteLLM's MMLU evaluation grades a single answer letter and publishes no responses.
MMLU_ANSWER_TOKENS = 1.0


def import_routellm_2model(root: Path) -> OutcomeTable:
    folder = dataset_folder(root, "routellm_2model")
    card = bundled_price_card("routellm_2model")
    card.require(ROUTELLM_MODELS)
    parts = []
    mmlu_files = sorted(_require(folder / "mmlu_responses").glob("mmlu_*.csv"))
    if not mmlu_files:
        raise DataError("no mmlu_*.csv files", file=folder / "mmlu_responses")
    for path in mmlu_files:
        frame = pd.read_csv(path)
        subject = path.stem.removeprefix("mmlu_")
        out_tok = {m: np.full(len(frame), MMLU_ANSWER_TOKENS) for m in ROUTELLM_MODELS}
        parts.append(
            _routellm_part(
                frame,
                f"mmlu/{subject}",
                out_tok,
                _contaminated(folder / "mmlu_contaminated_prompts.jsonl"),
            )
        )
    gsm = pd.read_csv(_require(folder / "gsm8k_responses.csv"))
    out_tok = {m: estimate_tokens(gsm[f"{m}_response"].fillna("").str.len().to_numpy()) for m in ROUTELLM_MODELS}
    parts.append(_routellm_part(gsm, "gsm8k", out_tok, _contaminated(folder / "gsm8k_contaminated_prompts.jsonl")))

    frame = pd.concat(parts, ignore_index=True)
    in_tok = estimate_tokens(frame["query"].str.len().to_numpy())
    costs = np.column_stack([card.cost(m, in_tok, frame[f"out_tok:{m}"].to_numpy()) for m in ROUTELLM_MODELS])
    row = np.arange(len(frame))
    return OutcomeTable.from_arrays(
        query_ids=frame["query_id"],
        queries=frame["query"],
        models=ROUTELLM_MODELS,
        scores=frame[list(ROUTELLM_MODELS)].to_numpy(dtype=np.float64),
        costs=costs,
        tasks=frame["task"],
        splits=np.where(row % 5 == 0, "test", "train"),
        name="routellm_2model",
        meta={"cost": "price card x token estimate", "price_card": card.about},
    )


def _contaminated(path: Path) -> set[str]:
    """Prompts RouteLLM excludes because they overlap its router's training data."""
    if not path.exists():
        return set()
    with path.open(encoding="utf-8") as handle:
        return {json.loads(line)["eval_prompt"] for line in handle if line.strip()}


def _routellm_part(frame: pd.DataFrame, task: str, out_tokens: dict[str, np.ndarray], drop: set[str]) -> pd.DataFrame:
    keep = ~frame["prompt"].isin(drop).to_numpy()
    part = pd.DataFrame(
        {
            "query_id": [f"{task}/{i}" for i in np.flatnonzero(keep)],
            "query": frame["prompt"][keep].to_numpy(),
            "task": task,
        }
    )
    for m in ROUTELLM_MODELS:
        part[m] = frame[m][keep].astype(float).to_numpy()
        part[f"out_tok:{m}"] = out_tokens[m][keep]
    return part


# ------------------------------------------------------------------ registry
DATASETS: dict[str, Callable[[Path], OutcomeTable]] = {
    "mmlu_pro": import_mmlu_pro,
    "routerbench_subset": import_routerbench_subset,
    "routellm_2model": import_routellm_2model,
    # The larger variants `entrorouter data download` can fetch (see sources.json).
    "mmlu_pro_full": lambda root: import_mmlu_pro(root, "mmlu_pro_full"),
    "routerbench_full": lambda root: import_routerbench_subset(root, "routerbench_full", ROUTERBENCH_FULL_TASKS),
}
# The datasets with a fixed train/test split that `benchmark --dataset all` reports on.
BENCHMARK_DATASETS = ("mmlu_pro", "routerbench_subset", "routellm_2model")
# Steps that turn a downloaded dataset's upstream files into what its importer reads.
BUILDERS: dict[str, Callable[[Path], None]] = {"mmlu_pro": build_mmlu_pro}
ALIASES = {
    "mmlu-pro": "mmlu_pro",
    "routerbench": "routerbench_subset",
    "routellm": "routellm_2model",
}


def dataset_name(source: str) -> str | None:
    """The canonical dataset name for ``source``, or None if it is not a dataset name."""
    name = ALIASES.get(source, source)
    return name if name in DATASETS or name == "demo" else None


def load_source(source: str, *, data_dir_path: str | os.PathLike[str] | None = None) -> OutcomeTable:
    """A dataset name (``mmlu_pro``, ``routerbench_subset``, ``routellm_2model``, ``demo``) or a table file."""
    name = dataset_name(source)
    if name == "demo":
        from entrorouter.data.demo import make_demo_table

        return make_demo_table()
    if name is not None:
        return DATASETS[name](data_dir(data_dir_path))
    path = Path(source)
    if not path.exists():
        raise EntroRouterError(
            f"{source!r} is neither a file nor a dataset name (datasets: {', '.join([*DATASETS, 'demo'])})"
        )
    return read_table(path)
