"""The benchmark: every router on the same features and splits, curves, operating points.

Protocol (DESIGN §4), for one dataset:

1. the training table is split once (seeded) into a *fit* part and a *validation* part
   (``val_fraction``); every router is fitted on the fit part only;
2. each router is swept along its knob (λ or a threshold); at every knob value it routes
   the validation and the test queries;
3. the operating point is chosen **on validation** (:mod:`entrorouter.evaluation.selection`:
   cheapest point whose bootstrap-lower retention of the strongest model S reaches the
   target) and then measured once on test; the test curve gives AIQ and APGR;
4. S is the strongest single model on the fit part; its test accuracy and cost are the
   reference for retention and cost reduction. Oracle, random and every single model are
   reported as reference points.

Nothing here looks at test outcomes before the operating point is fixed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from entrorouter.baselines.base import REGISTRY, BenchmarkRouter, RoutingContext
from entrorouter.baselines.routers import EntroRouterBaseline
from entrorouter.data.cost import CostPredictor
from entrorouter.data.table import OutcomeTable
from entrorouter.errors import EntroRouterError
from entrorouter.evaluation.metrics import (
    Reference,
    Routed,
    aiq,
    apgr,
    entropy,
    expert_suppression,
    oracle_rankings,
    oracle_usage,
    realize,
    reference,
    single_model_rankings,
)
from entrorouter.evaluation.selection import select_operating_point
from entrorouter.features.cache import EmbeddingCache
from entrorouter.features.encoders import make_encoder

# The collapse story, in the paper's form: the policy starts from scratch (uniform) and
# reads only the query embedding, so the Soft Anchor acts only through the KL term. Each
# variant changes one component of "soft_sft_rl_anchor"; "entrorouter" is the shipped
# method, which in addition parameterises the policy around the anchor.
PAPER_FORM = {"anchor_residual": False, "policy_input": "embedding"}
ABLATIONS: dict[str, dict[str, Any]] = {
    "hard_sft_only": {**PAPER_FORM, "init": "hard", "rl_iterations": 0},
    "soft_sft_only": {**PAPER_FORM, "init": "soft", "rl_iterations": 0},
    "rl_from_scratch": {**PAPER_FORM, "init": "none"},
    "hard_sft_rl": {**PAPER_FORM, "init": "hard"},
    "soft_sft_rl_no_anchor": {**PAPER_FORM, "beta_start": 0.0, "beta_end": 0.0},
    "soft_sft_rl_anchor": PAPER_FORM,
    "entrorouter": {},
}
ABLATION_LABELS = {
    "hard_sft_only": "hard-label SFT only",
    "soft_sft_only": "soft SFT only",
    "rl_from_scratch": "RL from scratch (no SFT)",
    "hard_sft_rl": "hard SFT + RL",
    "soft_sft_rl_no_anchor": "soft SFT + RL, no anchor",
    "soft_sft_rl_anchor": "soft SFT + RL + Soft Anchor (paper form)",
    "entrorouter": "EntroRouter as shipped (policy around the anchor)",
}
LOG_FIELDS = ("entropy", "usage_entropy", "kl_anchor", "suppression", "val_entropy")


@dataclass
class BenchmarkConfig:
    """How a benchmark run is set up; recorded in results.json."""

    target_retention: float = 0.983
    """Share of the strongest model's accuracy an operating point must keep (on validation)."""
    val_fraction: float = 0.2
    """Share of the training table held out for operating-point selection."""
    seed: int = 0
    routers: Sequence[str] | None = None
    """Registry names to run (None: every applicable one)."""
    ablations: bool = False
    """Also train the EntroRouter ablation variants."""
    encoder: str = "minilm"
    selection_quantile: float = 0.2
    """Bootstrap quantile of validation retention used by the selection rule."""
    n_boot: int = 1000
    """Bootstrap resamples for the test confidence intervals."""
    train_config: dict[str, Any] = field(default_factory=dict)
    """TrainConfig overrides for EntroRouter and its ablations."""


@dataclass
class Split:
    """One evaluation set with its features and the strongest model's outcomes on it."""

    table: OutcomeTable
    features: np.ndarray
    strongest: Routed

    @property
    def texts(self) -> list[str]:
        return [str(q) for q in self.table.queries]


def bootstrap_ci(
    scores: np.ndarray, costs: np.ndarray, strong: Routed, *, n_boot: int, seed: int
) -> dict[str, list[float]]:
    """95% paired-bootstrap intervals of accuracy, cost, retained and cost reduction."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(scores), size=(n_boot, len(scores)))
    acc, cost = scores[idx].mean(1), costs[idx].mean(1)
    s_acc, s_cost = strong.scores[idx].mean(1), strong.costs[idx].mean(1)

    def interval(values: np.ndarray) -> list[float]:
        return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]

    return {
        "accuracy": interval(acc),
        "cost": interval(cost),
        "retained": interval(acc / s_acc),
        "cost_reduction": interval(1 - cost / s_cost),
    }


class Benchmark:
    """Runs one dataset; ``run()`` returns the results.json content."""

    def __init__(
        self,
        train: OutcomeTable,
        test: OutcomeTable,
        config: BenchmarkConfig,
        *,
        dataset: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config, self.dataset = config, dataset or train.name
        self.say = progress or (lambda message: None)
        rng = np.random.default_rng(config.seed)
        n_val = max(1, round(config.val_fraction * train.n_queries))
        val_mask = np.zeros(train.n_queries, dtype=bool)
        val_mask[rng.permutation(train.n_queries)[:n_val]] = True
        self.fit_table, val_table = train.subset(~val_mask), train.subset(val_mask)
        self.models = train.models
        test = test.select_models(self.models)

        self.say(f"embedding queries with {config.encoder}")
        encoder = make_encoder(config.encoder).fit([str(q) for q in self.fit_table.queries])
        cache = EmbeddingCache()

        def embed(table: OutcomeTable) -> np.ndarray:
            return cache.embed(encoder, [str(q) for q in table.queries])

        fit_stats = self.fit_table.model_stats()
        self.strongest = self.fit_table.strongest_model()
        s_index = self.fit_table.model_index(self.strongest)
        self.ctx = RoutingContext(
            train=self.fit_table,
            features=embed(self.fit_table),
            cost_predictor=CostPredictor().fit(list(self.fit_table.queries), self.fit_table.costs),
            cost_scale=float(fit_stats.loc[self.strongest, "mean_cost"]) or 1.0,
            seed=config.seed,
        )
        self.val = Split(val_table, embed(val_table), realize(val_table, single_model_rankings(val_table, s_index)))
        self.test = Split(test, embed(test), realize(test, single_model_rankings(test, s_index)))
        self.ref: Reference = reference(test, strongest=self.strongest)
        self.test_oracle_share = oracle_usage(test)

    # ------------------------------------------------------------ one router
    def evaluate_router(self, router: BenchmarkRouter) -> dict[str, Any]:
        """Fit, sweep, select on validation, measure on test."""
        started = time.perf_counter()
        router.fit(self.ctx)
        fit_seconds = time.perf_counter() - started
        knobs = list(router.knobs())
        val_prepared = router.prepare(self.val.features, self.val.texts)
        started = time.perf_counter()
        test_prepared = router.prepare(self.test.features, self.test.texts)
        route_seconds = time.perf_counter() - started
        val_routed, test_routed, test_probs = [], [], []
        for knob in knobs:
            val_routed.append(realize(self.val.table, router.decide(val_prepared, knob).rankings))
            started = time.perf_counter()
            decisions = router.decide(test_prepared, knob)
            route_seconds += time.perf_counter() - started
            test_routed.append(realize(self.test.table, decisions.rankings))
            test_probs.append(decisions.probabilities)
        point = select_operating_point(
            [r.scores for r in val_routed],
            [r.costs for r in val_routed],
            self.val.strongest.scores,
            target=self.config.target_retention,
            quantile=self.config.selection_quantile,
            seed=self.config.seed,
        )
        plain = select_operating_point(
            [r.scores for r in val_routed],
            [r.costs for r in val_routed],
            self.val.strongest.scores,
            target=self.config.target_retention,
            quantile=None,
        )
        chosen, probs = test_routed[point.index], test_probs[point.index]
        result = self.point_metrics(chosen, probs)
        plain_test = test_routed[plain.index]
        curve = sorted((r.cost, r.accuracy) for r in test_routed)
        result.update(
            aiq=aiq(curve, self.ref),
            apgr=apgr(curve, self.ref),
            curve=[[c, a] for c, a in curve],
            knob=knobs[point.index],
            validation={
                "accuracy": point.accuracy,
                "cost": point.cost,
                "retained": point.retained,
                "retained_lower": point.retained_lower,
                "accepted": point.accepted,
            },
            plain_rule={
                "knob": knobs[plain.index],
                "accuracy": plain_test.accuracy,
                "cost": plain_test.cost,
                "retained": self.ref.retained(plain_test.accuracy),
                "cost_reduction": self.ref.cost_reduction(plain_test.cost),
            },
            fit_seconds=fit_seconds,
            sweep_seconds=route_seconds,
        )
        return result

    def point_metrics(self, routed: Routed, probs: np.ndarray | None) -> dict[str, Any]:
        usage = routed.usage(len(self.models))
        suppression, suppressed = expert_suppression(self.test_oracle_share, usage)
        return {
            "accuracy": routed.accuracy,
            "cost": routed.cost,
            "retained": self.ref.retained(routed.accuracy),
            "cost_reduction": self.ref.cost_reduction(routed.cost),
            "gap_to_oracle": self.ref.oracle_accuracy - routed.accuracy,
            "entropy": float(entropy(probs, axis=1).mean()) if probs is not None else 0.0,
            "usage_entropy": float(entropy(usage)),
            "usage": {m: float(u) for m, u in zip(self.models, usage, strict=True)},
            "expert_suppression": suppression,
            "suppressed_models": [self.models[k] for k in suppressed],
            "ci": bootstrap_ci(
                routed.scores, routed.costs, self.test.strongest, n_boot=self.config.n_boot, seed=self.config.seed
            ),
        }

    def reference_routers(self) -> dict[str, dict[str, Any]]:
        """Oracle and random: single points, no knob."""
        table = self.test.table
        oracle = realize(table, oracle_rankings(table))
        out = {"oracle": self.point_metrics(oracle, None)}
        n_obs = table.observed.sum(axis=1, keepdims=True)
        uniform = np.where(table.observed, 1.0 / n_obs, 0.0)
        random_usage = uniform.mean(axis=0)
        acc, cost = self.ref.random_accuracy, self.ref.random_cost
        suppression, suppressed = expert_suppression(self.test_oracle_share, random_usage)
        out["random"] = {
            "accuracy": acc,
            "cost": cost,
            "retained": self.ref.retained(acc),
            "cost_reduction": self.ref.cost_reduction(cost),
            "gap_to_oracle": self.ref.oracle_accuracy - acc,
            "entropy": float(entropy(uniform, axis=1).mean()),
            "usage_entropy": float(entropy(random_usage)),
            "usage": {m: float(u) for m, u in zip(self.models, random_usage, strict=True)},
            "expert_suppression": suppression,
            "suppressed_models": [self.models[k] for k in suppressed],
            "note": "expected value of a uniform choice among the models with an outcome",
        }
        for name in ("oracle", "random"):
            point = [[out[name]["cost"], out[name]["accuracy"]]]
            out[name].update(curve=point, aiq=aiq(point, self.ref), apgr=apgr(point, self.ref))
        return out

    def single_models(self) -> dict[str, dict[str, float]]:
        out = {}
        for k, model in enumerate(self.models):
            routed = realize(self.test.table, single_model_rankings(self.test.table, k))
            out[model] = {
                "accuracy": routed.accuracy,
                "cost": routed.cost,
                "coverage": float(self.test.table.observed[:, k].mean()),
            }
        return out

    # ------------------------------------------------------------------- run
    def router_names(self) -> list[str]:
        names = list(self.config.routers) if self.config.routers else [n for n, r in REGISTRY.items() if r.default]
        unknown = [n for n in names if n not in REGISTRY]
        if unknown:
            raise EntroRouterError(f"unknown router(s) {unknown}; available: {', '.join(REGISTRY)}")
        return names

    def make_router(self, name: str) -> BenchmarkRouter:
        if name == "entrorouter":
            return EntroRouterBaseline(encoder=self.config.encoder, **self.config.train_config)
        return REGISTRY[name]()

    def run(self) -> dict[str, Any]:
        results: dict[str, Any] = {
            "dataset": self.dataset,
            "n_train": self.fit_table.n_queries + self.val.table.n_queries,
            "n_fit": self.fit_table.n_queries,
            "n_val": self.val.table.n_queries,
            "n_test": self.test.table.n_queries,
            "models": list(self.models),
            "strongest_model": self.strongest,
            "strongest_accuracy": self.ref.strongest_accuracy,
            "strongest_cost": self.ref.strongest_cost,
            "cheapest_model": self.ref.cheapest,
            "oracle_accuracy": self.ref.oracle_accuracy,
            "oracle_cost": self.ref.oracle_cost,
            "config": {**self.config.__dict__, "routers": self.router_names()},
            "single_models": self.single_models(),
            "routers": self.reference_routers(),
        }
        for name in self.router_names():
            router = self.make_router(name)
            if not router.applicable(self.ctx):
                self.say(f"{name}: not applicable to a {len(self.models)}-model pool, skipped")
                continue
            self.say(f"{name}: fitting and sweeping")
            results["routers"][name] = self.evaluate_router(router)
            if isinstance(router, EntroRouterBaseline):
                results["routers"][name]["training_curve"] = training_curve(router.router.training_log)
        if self.config.ablations:
            results["ablations"] = self.run_ablations(results["routers"].get("entrorouter"))
        return results

    def run_ablations(self, full: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
        out = {}
        for name, overrides in ABLATIONS.items():
            if name == "entrorouter" and full is not None:
                out[name] = full  # the full method is already trained above
                continue
            self.say(f"ablation {name}: fitting and sweeping")
            router = EntroRouterBaseline(encoder=self.config.encoder, **{**self.config.train_config, **overrides})
            out[name] = self.evaluate_router(router)
            out[name]["training_curve"] = training_curve(router.router.training_log)
        for name in out:
            out[name]["label"] = ABLATION_LABELS[name]
        return out


def training_curve(log: list[dict[str, Any]], max_points: int = 400) -> list[dict[str, Any]]:
    """The per-step diagnostics worth plotting, thinned to at most ``max_points`` steps."""
    steps = [r for r in log if "event" not in r]
    stride = max(1, len(steps) // max_points)
    return [
        {"step": r["step"], "stage": r["stage"], **{k: r[k] for k in LOG_FIELDS if k in r}} for r in steps[::stride]
    ]
