"""The interface every router under benchmark implements, and its registry.

A benchmark router is fitted once on the training rows and then asked for decisions at
each value of its *knob* (the trade-off λ, or a threshold), which traces its cost–accuracy
curve. Every router gets the same :class:`RoutingContext`: the same training rows, the same
query features and the same *predicted* cost (routing never sees a call's realised cost).

A new router is one class::

    @register
    class MyRouter(BenchmarkRouter):
        name = "mine"
        description = "what it does, in one line"

        def fit(self, ctx): ...
        def prepare(self, features, texts): ...   # optional: work shared by all knob values
        def decide(self, prepared, knob): ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from entrorouter.data.cost import CostPredictor
from entrorouter.data.table import OutcomeTable
from entrorouter.router.calibration import lambda_grid
from entrorouter.router.capability import FoldPlan


@dataclass
class RoutingContext:
    """What every router is fitted with."""

    train: OutcomeTable
    features: np.ndarray  # (n, d) embeddings of train.queries
    cost_predictor: CostPredictor  # fitted on train
    cost_scale: float  # C: mean cost of the strongest model on train
    seed: int = 0
    fold_plan: FoldPlan | None = None  # the benchmark's cross-fitting folds of these rows, to share fits
    log_training: bool = True  # False: nobody reads this fit's training log (a cross-fitting fold)

    def predicted_cost(self, texts: Sequence[str]) -> np.ndarray:
        """(n, K) predicted cost / C."""
        return self.cost_predictor.predict(list(texts)) / self.cost_scale


@dataclass(frozen=True)
class Decisions:
    """Routing decisions for a batch: full rankings (best first) and, if any, π(k|q)."""

    rankings: np.ndarray  # (n, K) model indices
    probabilities: np.ndarray | None = None  # (n, K)


def rank(utility: np.ndarray) -> np.ndarray:
    """Rankings, best first, from a (n, K) utility; ties keep pool order."""
    return np.argsort(-utility, axis=1, kind="stable")


class BenchmarkRouter(ABC):
    """A router the benchmark fits once and sweeps along its knob."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: False: run only when named (``--routers``), e.g. because it is slow on a CPU.
    default: ClassVar[bool] = True
    #: False: measured with one fit (on 80% of train, point chosen on the other 20% by the old
    #: rule), as the ablations are, because the K + 1 fits of cross-fitting cost too much.
    cross_fit: ClassVar[bool] = True

    def applicable(self, ctx: RoutingContext) -> bool:
        """Whether this router makes sense for the pool (e.g. 2-model routers)."""
        return True

    @abstractmethod
    def fit(self, ctx: RoutingContext) -> None: ...

    def knobs(self) -> Sequence[float]:
        """Knob values tracing the curve, from the most expensive to the cheapest; the same
        whatever the fit (cross-fitting pools folds knob by knob). Default: the λ grid."""
        return lambda_grid().tolist()

    def prepare(self, features: np.ndarray, texts: Sequence[str]) -> Any:
        """Everything about a batch that does not depend on the knob (computed once per batch)."""
        return features, texts

    @abstractmethod
    def decide(self, prepared: Any, knob: float) -> Decisions:
        """Decisions at one knob value, from what :meth:`prepare` returned."""


REGISTRY: dict[str, type[BenchmarkRouter]] = {}


def register(cls: type[BenchmarkRouter]) -> type[BenchmarkRouter]:
    if cls.name in REGISTRY:
        raise ValueError(f"router name {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls
