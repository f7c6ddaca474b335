"""The baselines of DESIGN §4 (same features, same splits), and EntroRouter itself.

Success-predictor routers estimate ``p̂[q, k] = P(model k solves q)`` and rank by
``p̂ − λ·ĉ`` (ĉ: predicted cost / C), sweeping λ. The oracle, random and single-model
reference points are computed by the benchmark from the test outcomes directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from entrorouter.baselines.base import BenchmarkRouter, Decisions, RoutingContext, rank, register
from entrorouter.policy.mlp import Dropout, adamw
from entrorouter.router.calibration import lambda_grid
from entrorouter.router.capability import KnnCapability, MlpCapability

KNOB_POINTS = 161  # as many as the λ grid: every router gets an equally fine knob


class SuccessPredictorRouter(BenchmarkRouter):
    """Route by ``p̂ − λ·ĉ``; subclasses say how p̂ is predicted."""

    def fit(self, ctx: RoutingContext) -> None:
        self.ctx = ctx
        self.fit_predictor(ctx)

    def fit_predictor(self, ctx: RoutingContext) -> None:
        raise NotImplementedError

    def predict_success(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, features: np.ndarray, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_success(features), self.ctx.predicted_cost(texts)

    def decide(self, prepared: tuple[np.ndarray, np.ndarray], knob: float) -> Decisions:
        success, cost = prepared
        return Decisions(rank(success - knob * cost))


@register
class KnnRouter(SuccessPredictorRouter):
    name = "knn"
    description = "kNN success predictor (32 cosine neighbours, Beta prior towards cluster accuracy)"

    def fit_predictor(self, ctx: RoutingContext) -> None:
        self.knn = KnnCapability(k=32, prior_strength=4.0, n_clusters=16, seed=ctx.seed)
        self.knn.fit_final(ctx.features, ctx.train.scores)

    def predict_success(self, features: np.ndarray) -> np.ndarray:
        return self.knn.predict(features)


class _NetRouter(SuccessPredictorRouter):
    """A success predictor trained with masked BCE (MlpCapability's training loop)."""

    predictor_args: ClassVar[dict[str, Any]]

    def make_predictor(self, seed: int) -> MlpCapability:
        return MlpCapability(seed=seed, **self.predictor_args)

    def fit_predictor(self, ctx: RoutingContext) -> None:
        self.predictor = self.make_predictor(ctx.seed).fit_final(ctx.features, ctx.train.scores, ctx.fold_plan)

    def predict_success(self, features: np.ndarray) -> np.ndarray:
        return self.predictor.predict(features)


@register
class LogisticRouter(_NetRouter):
    name = "logistic"
    description = "per-model logistic regression on the embedding"
    predictor_args: ClassVar[dict[str, Any]] = {"hidden": 0, "dropout": 0.0, "epochs": 40, "lr": 3e-3}


@register
class MlpRouter(_NetRouter):
    name = "mlp"
    description = "MLP score-vector predictor (one sigmoid output per model)"
    predictor_args: ClassVar[dict[str, Any]] = {"hidden": 256, "dropout": 0.2, "epochs": 25}


class _Bilinear(nn.Module):
    """logit[q, k] = <P e(q), v_k> + b_k: query and model embeddings in a rank-r space."""

    def __init__(self, in_dim: int, n_models: int, rank_dim: int = 32) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, rank_dim)
        self.models = nn.Parameter(torch.randn(n_models, rank_dim) * 0.1)
        self.bias = nn.Parameter(torch.zeros(n_models))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x) @ self.models.T + self.bias


class _BilinearPredictor(MlpCapability):
    def make_net(self, in_dim: int, n_models: int) -> nn.Module:
        return _Bilinear(in_dim, n_models)


@register
class MatrixFactorizationRouter(_NetRouter):
    name = "mf"
    description = "matrix factorisation over (query, model), RouteLLM-style bilinear scores"
    predictor_args: ClassVar[dict[str, Any]] = {"epochs": 40, "lr": 3e-3}

    def make_predictor(self, seed: int) -> MlpCapability:
        return _BilinearPredictor(seed=seed, **self.predictor_args)


@register
class HardLabelRouter(BenchmarkRouter):
    """Softmax classifier on the cheapest correct model (none correct: the cheapest)."""

    name = "hard_label"
    description = "hard-label classifier on the cheapest correct model, ranked by p(k|q) − λ·ĉ"

    def fit(self, ctx: RoutingContext) -> None:
        from entrorouter.training.trainer import RoutingData, hard_targets

        self.ctx = ctx
        scores = torch.from_numpy(ctx.train.scores.astype(np.float32))
        data = RoutingData(
            features=torch.from_numpy(ctx.features.astype(np.float32)),
            scores=scores,
            cost=torch.from_numpy((ctx.train.costs / ctx.cost_scale).astype(np.float32)),
            capability=torch.zeros_like(scores),
            cost_pred=torch.zeros_like(scores),
        )
        labels = hard_targets(data, tau=1.0).argmax(dim=1)
        torch.manual_seed(ctx.seed)
        generator = torch.Generator().manual_seed(ctx.seed)
        self.net = nn.Sequential(
            nn.Linear(ctx.features.shape[1], 256), nn.GELU(), Dropout(0.2), nn.Linear(256, ctx.train.n_models)
        )
        optimizer = adamw(self.net.parameters(), lr=1e-3, weight_decay=1e-4)
        self.net.train()
        for _ in range(25):
            for batch in torch.randperm(len(labels), generator=generator).split(256):
                loss = nn.functional.cross_entropy(self.net(data.features[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.net.eval()

    def prepare(self, features: np.ndarray, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            probs = torch.softmax(self.net(torch.from_numpy(features.astype(np.float32))), dim=1).numpy()
        return probs, self.ctx.predicted_cost(texts)

    def decide(self, prepared: tuple[np.ndarray, np.ndarray], knob: float) -> Decisions:
        probs, cost = prepared
        return Decisions(rank(probs - knob * cost), probs)


@register
class ThresholdRouter(BenchmarkRouter):
    """RouteLLM-style binary router: strong model when its predicted advantage ≥ t."""

    name = "threshold"
    description = "2-model threshold router: call the strong model when p̂_strong − p̂_weak ≥ t (MLP p̂)"

    def applicable(self, ctx: RoutingContext) -> bool:
        return ctx.train.n_models == 2

    def fit(self, ctx: RoutingContext) -> None:
        stats = ctx.train.model_stats()
        self.strong = int(np.argmax(stats["accuracy"].to_numpy()))
        self.weak = 1 - self.strong
        self.predictor = MlpCapability(seed=ctx.seed, **MlpRouter.predictor_args).fit_final(
            ctx.features, ctx.train.scores, ctx.fold_plan
        )
        self.train_margin = np.sort(self.margin(ctx.features))

    def margin(self, features: np.ndarray) -> np.ndarray:
        p = self.predictor.predict(features)
        return p[:, self.strong] - p[:, self.weak]

    def knobs(self) -> Sequence[float]:
        """Share of (training) queries sent to the strong model, from all to none: a knob that
        means the same for every fit, unlike a raw margin threshold."""
        return np.linspace(1.0, 0.0, KNOB_POINTS).tolist()

    def prepare(self, features: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        return self.margin(features)

    def decide(self, prepared: np.ndarray, knob: float) -> Decisions:
        if knob >= 1.0:
            strong = np.ones(len(prepared), dtype=bool)
        else:
            # The threshold that sends a share `knob` of the training queries to the strong model.
            strong = prepared > np.quantile(self.train_margin, 1.0 - knob)
        first = np.where(strong, self.strong, self.weak)
        return Decisions(np.stack([first, 1 - first], axis=1))


@register
class CascadeRouter(BenchmarkRouter):
    """Cheap first, escalate while the predicted success is low.

    Models on the training cost–accuracy Pareto chain, cheapest first; at threshold t the
    query goes to the first model whose predicted success (MLP p̂) reaches t, else to the
    last (strongest). The escalation is decided from predictions before any call, so only
    the chosen model is paid for: an offline table has no answer to verify.
    """

    name = "cascade"
    description = "cascade along the Pareto chain: first model with predicted success ≥ t (MLP p̂)"

    def fit(self, ctx: RoutingContext) -> None:
        stats = ctx.train.model_stats()
        order = np.lexsort((-stats["accuracy"].to_numpy(), stats["mean_cost"].to_numpy()))
        chain, best = [], -np.inf
        for k in order:
            if stats["accuracy"].iloc[k] > best:
                chain.append(int(k))
                best = stats["accuracy"].iloc[k]
        self.chain = np.array(chain)
        self.predictor = MlpCapability(seed=ctx.seed, **MlpRouter.predictor_args).fit_final(
            ctx.features, ctx.train.scores, ctx.fold_plan
        )

    def knobs(self) -> Sequence[float]:
        """Success threshold t from 1 (escalate to the end: most expensive) to 0 (cheapest)."""
        return np.linspace(1.0, 0.0, KNOB_POINTS).tolist()

    def prepare(self, features: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        return self.predictor.predict(features)

    def decide(self, prepared: np.ndarray, knob: float) -> Decisions:
        on_chain = prepared[:, self.chain] >= knob
        on_chain[:, -1] = True  # the last model always accepts
        first = self.chain[on_chain.argmax(axis=1)]
        # The chosen model first, then the others by predicted success (the fallback order).
        utility = prepared.copy()
        utility[np.arange(len(first)), first] = np.inf
        return Decisions(rank(utility))


@register
class EntroRouterBaseline(BenchmarkRouter):
    """EntroRouter (this project), swept along its λ knob."""

    name = "entrorouter"
    description = "EntroRouter: Soft Supervision + RL with the Soft Anchor, λ-conditioned"

    def __init__(self, **config_overrides: Any) -> None:
        self.config_overrides = config_overrides

    def fit(self, ctx: RoutingContext) -> None:
        from entrorouter.router import Router
        from entrorouter.router.config import TrainConfig

        # The benchmark cross-fits every router itself, so the router's own calibration is
        # off; λ = 0.1 only sets where training logs its usage diagnostics.
        config = TrainConfig(**{"seed": ctx.seed, "lam": 0.1, **self.config_overrides, "calibration_folds": 0})
        self.router = Router(config).fit(
            ctx.train, features=ctx.features, fold_plan=ctx.fold_plan, log_training=ctx.log_training
        )

    @property
    def training_log(self) -> list[dict[str, Any]]:
        return self.router.training_log

    def knobs(self) -> Sequence[float]:
        c = self.router.config
        return lambda_grid(c.lam_min, c.lam_max, KNOB_POINTS - 1).tolist()

    def prepare(self, features: np.ndarray, texts: Sequence[str]) -> Any:
        return self.router.inputs(features, texts)

    def decide(self, prepared: Any, knob: float) -> Decisions:
        probs, rankings = self.router.rank(prepared, knob)
        return Decisions(rankings, probs)


@register
class EntroRouterFineTuned(EntroRouterBaseline):
    """EntroRouter on its own fine-tuned encoder: it embeds every query itself (the shared
    features are the frozen encoder's). A fit is a fine-tune of up to 15 minutes on a CPU, so
    it runs only when named, and with one fit instead of cross-fitting's K + 1 (six fine-tunes
    would be 90 minutes per dataset on 2 cores)."""

    name = "entrorouter_ft"
    description = "EntroRouter with the MiniLM encoder fine-tuned end to end (LoRA, encoder minilm-ft)"
    default = False
    cross_fit = False

    def __init__(self, encoder: str = "minilm-ft", **config_overrides: Any) -> None:
        super().__init__(**config_overrides, encoder=encoder)

    def fit(self, ctx: RoutingContext) -> None:
        from entrorouter.router import Router
        from entrorouter.router.config import TrainConfig

        # As for EntroRouterBaseline: the benchmark cross-fits, so no calibration of its own.
        config = TrainConfig(**{"seed": ctx.seed, "lam": 0.1, **self.config_overrides, "calibration_folds": 0})
        self.router = Router(config).fit(ctx.train)

    def prepare(self, features: np.ndarray, texts: Sequence[str]) -> Any:
        return self.router.inputs(self.router.embed(texts), texts)
