"""The outcome table: what every router trains and is evaluated on.

For each query ``q`` (id, text, optional task and split) and each model ``k`` of the pool
the table holds ``score[q, k]`` in [0, 1] (1 = correct) and ``cost[q, k]`` >= 0 (US$).

Missing outcomes
----------------
A pair that was never run is stored as NaN (score and cost). It means "unknown", never
"wrong" and never "right". What each part of the project does with it:

* statistics (per-model accuracy, mean cost) average over the observed outcomes only,
  and report each model's coverage;
* training leaves a missing pair out of the Soft Supervision targets and, in RL, replaces
  its unknown reward by the offline capability estimate (a prediction, like at routing);
* evaluation treats a missing outcome as an unavailable backend: the query is answered by
  the next model of the router's ranking that has an outcome, as the gateway's fallback
  would do. Every router is scored by that same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

LONG_COLUMNS = ("query_id", "query", "model", "score", "cost")
OPTIONAL_COLUMNS = ("task", "split")


@dataclass(eq=False)
class OutcomeTable:
    """Queries x models with scores and costs; NaN marks a missing outcome.

    Build one with :func:`entrorouter.data.io.read_table`, a dataset importer, or
    :meth:`from_long`. Arrays are not copied; treat a table as immutable.
    """

    query_ids: np.ndarray
    queries: np.ndarray
    models: tuple[str, ...]
    scores: np.ndarray
    costs: np.ndarray
    tasks: np.ndarray | None = None
    splits: np.ndarray | None = None
    name: str = "table"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.query_ids = np.asarray(self.query_ids, dtype=object)
        self.queries = np.asarray(self.queries, dtype=object)
        self.models = tuple(str(m) for m in self.models)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.costs = np.asarray(self.costs, dtype=np.float64)
        n, k = len(self.query_ids), len(self.models)
        if self.queries.shape != (n,):
            raise ValueError(f"queries has shape {self.queries.shape}, expected ({n},)")
        for label, arr in (("scores", self.scores), ("costs", self.costs)):
            if arr.shape != (n, k):
                raise ValueError(f"{label} has shape {arr.shape}, expected ({n}, {k})")
        for label in ("tasks", "splits"):
            arr = getattr(self, label)
            if arr is not None:
                arr = np.asarray(arr, dtype=object)
                if arr.shape != (n,):
                    raise ValueError(f"{label} has shape {arr.shape}, expected ({n},)")
                setattr(self, label, arr)
        if len(set(self.models)) != k:
            raise ValueError("model names must be unique")

    # ----------------------------------------------------------------- shape
    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def __len__(self) -> int:
        return self.n_queries

    def __repr__(self) -> str:
        return (
            f"OutcomeTable(name={self.name!r}, queries={self.n_queries}, "
            f"models={self.n_models}, observed={self.observed.mean():.1%})"
        )

    @property
    def observed(self) -> np.ndarray:
        """Boolean (n, K) mask of the outcomes that were recorded."""
        return ~np.isnan(self.scores)

    def model_index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise KeyError(f"model {model!r} is not in the pool {list(self.models)}") from None

    # ------------------------------------------------------------- selection
    def subset(self, rows: np.ndarray | Sequence[int] | Sequence[bool]) -> OutcomeTable:
        """The table restricted to some queries (index array or boolean mask)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return OutcomeTable(
            query_ids=self.query_ids[rows],
            queries=self.queries[rows],
            models=self.models,
            scores=self.scores[rows],
            costs=self.costs[rows],
            tasks=None if self.tasks is None else self.tasks[rows],
            splits=None if self.splits is None else self.splits[rows],
            name=self.name,
            meta=dict(self.meta),
        )

    def select_models(self, models: Sequence[str]) -> OutcomeTable:
        """Only ``models``, in that order; queries left without any outcome are dropped."""
        missing = [m for m in models if m not in self.models]
        if missing:
            from entrorouter.errors import EntroRouterError

            raise EntroRouterError(
                f"table {self.name!r} has no outcomes for model(s) {missing}; it has {list(self.models)}"
            )
        cols = [self.models.index(m) for m in models]
        view = OutcomeTable(
            self.query_ids,
            self.queries,
            tuple(models),
            self.scores[:, cols],
            self.costs[:, cols],
            self.tasks,
            self.splits,
            self.name,
            dict(self.meta),
        )
        return view.subset(view.observed.any(axis=1))

    def split(self, name: str) -> OutcomeTable:
        """The queries whose ``split`` column equals ``name`` (e.g. "train", "test")."""
        if self.splits is None:
            raise KeyError(f"table {self.name!r} has no split column")
        return self.subset(self.splits == name)

    # ------------------------------------------------------------ statistics
    def model_stats(self) -> pd.DataFrame:
        """Per model: accuracy and mean cost over observed outcomes, and coverage."""
        obs = self.observed
        with np.errstate(invalid="ignore"):
            return pd.DataFrame(
                {
                    "accuracy": np.nanmean(np.where(obs, self.scores, np.nan), axis=0),
                    "mean_cost": np.nanmean(np.where(obs, self.costs, np.nan), axis=0),
                    "coverage": obs.mean(axis=0),
                },
                index=pd.Index(self.models, name="model"),
            )

    def unobserved_models(self) -> list[str]:
        """The models without a single recorded outcome in this table."""
        return [m for m, seen in zip(self.models, self.observed.any(axis=0), strict=True) if not seen]

    def strongest_model(self) -> str:
        """Highest observed accuracy; ties go to the cheaper model."""
        stats = self.model_stats()
        order = np.lexsort((stats["mean_cost"].to_numpy(), -stats["accuracy"].to_numpy()))
        return self.models[int(order[0])]

    def cheapest_model(self) -> str:
        stats = self.model_stats()
        return self.models[int(np.nanargmin(stats["mean_cost"].to_numpy()))]

    # ----------------------------------------------------------- conversion
    def to_long(self) -> pd.DataFrame:
        """One row per observed (query, model) outcome, in the long file format."""
        qi, ki = np.nonzero(self.observed)
        frame = {
            "query_id": self.query_ids[qi],
            "query": self.queries[qi],
            "model": np.asarray(self.models, dtype=object)[ki],
            "score": self.scores[qi, ki],
            "cost": self.costs[qi, ki],
        }
        if self.tasks is not None:
            frame["task"] = self.tasks[qi]
        if self.splits is not None:
            frame["split"] = self.splits[qi]
        return pd.DataFrame(frame)

    @classmethod
    def from_arrays(
        cls,
        *,
        query_ids: Sequence[Any],
        queries: Sequence[str],
        models: Sequence[str],
        scores: np.ndarray,
        costs: np.ndarray,
        tasks: Sequence[Any] | None = None,
        splits: Sequence[Any] | None = None,
        name: str = "table",
        meta: dict[str, Any] | None = None,
    ) -> OutcomeTable:
        """Convenience constructor; ids are converted to strings."""
        return cls(
            query_ids=np.asarray([str(q) for q in query_ids], dtype=object),
            queries=np.asarray(list(queries), dtype=object),
            models=tuple(models),
            scores=np.asarray(scores, dtype=np.float64),
            costs=np.asarray(costs, dtype=np.float64),
            tasks=None if tasks is None else np.asarray(list(tasks), dtype=object),
            splits=None if splits is None else np.asarray(list(splits), dtype=object),
            name=name,
            meta=meta or {},
        )
