"""The benchmark: every router on the same features, folds and splits; curves and operating points.

Protocol (DESIGN §3.7, §4), for one dataset and every router alike:

1. **Cross-fitted calibration.** The training split is cut into K folds (stratified by
   task). For each fold the router is fitted on the other K − 1 folds and routes the
   held-out fold at every value of its knob (λ, or a threshold), ordered from most
   expensive to cheapest. Pooled, this is an out-of-fold cost–accuracy curve over *all*
   training queries, paired with the strongest model S on the same queries.
2. **Risk-controlled choice.** The operating point is the cheapest knob that the
   fixed-sequence rule of :mod:`entrorouter.router.calibration` certifies to keep
   ``target_retention`` of S with probability ≥ 1 − δ on a test set of this size.
3. **Final fit, measured once.** The router is refitted on the whole training split and
   routes the test split at every knob: the test curve gives AIQ and APGR. The headline
   point is the refit's knob that spends, on the training queries, what the fold routers
   spent out of fold at the certified knob (a refit's knob drifts; see the calibration
   module's "deployed at the certified spend").
4. **The old rule beside it** (for one release): the fold-0 fit is the old protocol's
   fit on 80% of train, with fold 0 as its validation split; its bootstrap-quantile choice
   (:func:`entrorouter.evaluation.selection.select_operating_point`) is measured on test too.

S is the strongest single model on the training split; its test accuracy and cost are the
reference for retention and cost reduction. Nothing here looks at test outcomes before the
operating point is fixed. Ablations use the old protocol (one fit on 80%, chosen on fold 0),
which is enough to show the collapse story at a sixth of the cost; so do routers too slow to
cross-fit (``cross_fit = False``: the fine-tuned backbone), reported beside the fold-0 fits of
the cross-fitted routers, which are the same protocol.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from entrorouter.baselines.base import REGISTRY, BenchmarkRouter, RoutingContext
from entrorouter.baselines.routers import EntroRouterBaseline, EntroRouterFineTuned
from entrorouter.data.cost import CostPredictor
from entrorouter.data.splits import stratified_folds
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
from entrorouter.router.calibration import Calibration, planned_spend, pool_folds
from entrorouter.router.capability import FoldPlan
from entrorouter.router.config import POOLINGS, TrainConfig

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
    """Share of the strongest model's accuracy an operating point must keep."""
    folds: int = 5
    """K of the cross-fitting over the training split (fold 0 is also the old rule's validation split)."""
    delta: float = 0.1
    """Risk level of the selection rule: the point misses the target with probability ≤ δ."""
    pooling: str = TrainConfig.calibration_pooling
    """How every router's fold routers' out-of-fold outcomes are pooled: at equal predicted
    spend ("spend") or at the same knob ("knob"); :mod:`entrorouter.router.calibration`. One
    rule for all routers, EntroRouter's default."""
    seed: int = 0
    routers: Sequence[str] | None = None
    """Registry names to run (None: every applicable one)."""
    ablations: bool = False
    """Also train the EntroRouter ablation variants."""
    training_logs: bool = True
    """Keep the training logs of the fits whose logs the report reads (fold 0 and the final fit).
    The resplit study reads none, and a log costs a validation pass per training step."""
    legacy_curves: bool = True
    """Measure the old rule's fit along its whole test curve (its AIQ, which the report's
    ablation table shows), one more sweep of the test split per router. The resplit study
    reads only the old rule's point, so it routes the test split at that knob alone."""
    encoder: str = "minilm"
    selection_quantile: float = 0.2
    """The old rule's bootstrap quantile of validation retention (reported beside the new rule)."""
    n_boot: int = 1000
    """Bootstrap resamples for the test confidence intervals."""
    train_config: dict[str, Any] = field(default_factory=dict)
    """TrainConfig overrides for EntroRouter, its ablations and its fine-tuned form."""
    finetune_encoder: str = "minilm-ft"
    """The encoder ``entrorouter_ft`` fine-tunes, with its options (``minilm-ft:max_seconds=600``:
    a 10-minute budget per fine-tune instead of 15)."""

    def __post_init__(self) -> None:
        # Checked here, not when the routers run: that is after minutes of embedding.
        unknown = [name for name in self.routers or () if name not in REGISTRY]
        if unknown:
            raise EntroRouterError(f"unknown router(s) {unknown}; available: {', '.join(REGISTRY)}")
        if self.pooling not in POOLINGS:
            raise EntroRouterError(f"unknown pooling {self.pooling!r}; expected one of {', '.join(POOLINGS)}")
        one_fit = [name for name in self.routers or () if not REGISTRY[name].cross_fit]
        if not self.legacy_curves and (self.ablations or one_fit):
            raise EntroRouterError(
                "legacy_curves = False leaves no old-rule test curves, which the ablations and "
                f"the one-fit routers {one_fit} are compared with; keep it on for them"
            )


@dataclass
class Split:
    """One evaluation set with its features and the strongest model's outcomes on it."""

    table: OutcomeTable
    features: np.ndarray
    strongest: Routed

    @property
    def texts(self) -> list[str]:
        return [str(q) for q in self.table.queries]

    def subset(self, rows: np.ndarray) -> Split:
        strongest = Routed(self.strongest.answered[rows], self.strongest.scores[rows], self.strongest.costs[rows])
        return Split(self.table.subset(rows), self.features[rows], strongest)


@dataclass
class Sweep:
    """Per-query outcomes of one fitted router along its knobs: (G, n) scores and costs."""

    knobs: list[float]
    answered: np.ndarray  # (G, n) the model that answered
    scores: np.ndarray
    costs: np.ndarray
    probabilities: list[np.ndarray | None]

    def routed(self, g: int) -> Routed:
        return Routed(self.answered[g], self.scores[g], self.costs[g])

    def curve(self) -> list[tuple[float, float]]:
        return sorted(zip(self.costs.mean(axis=1).tolist(), self.scores.mean(axis=1).tolist(), strict=True))


def bootstrap_ci(
    scores: np.ndarray, costs: np.ndarray, strong: Routed, *, n_boot: int, seed: int
) -> dict[str, list[float]]:
    """95% paired-bootstrap intervals of accuracy, cost, retained and cost reduction."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(scores), size=(n_boot, len(scores)))
    acc, cost = scores[idx].mean(1), costs[idx].mean(1)
    s_acc, s_cost = strong.scores[idx].mean(1), strong.costs[idx].mean(1)
    return {
        "accuracy": interval(acc),
        "cost": interval(cost),
        "retained": interval(acc / s_acc),
        "cost_reduction": interval(1 - cost / s_cost),
    }


def interval(values: np.ndarray) -> list[float]:
    """The central 95% of ``values``."""
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def aiq_difference_ci(a: Sweep, b: Sweep, ref: Reference, *, n_boot: int, seed: int) -> dict[str, Any]:
    """AIQ(a) − AIQ(b) on test with its 95% paired-bootstrap interval (same resampled queries for both)."""
    rng = np.random.default_rng(seed)
    n = a.scores.shape[1]

    def area(sweep: Sweep, idx: np.ndarray) -> float:
        return aiq(list(zip(sweep.costs[:, idx].mean(1), sweep.scores[:, idx].mean(1), strict=True)), ref)

    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        diffs.append(area(a, idx) - area(b, idx))
    return {"difference": aiq(a.curve(), ref) - aiq(b.curve(), ref), "ci": interval(np.asarray(diffs))}


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
        self.models = train.models
        test = test.select_models(self.models)
        if config.folds > train.n_queries:
            raise EntroRouterError(
                f"--folds {config.folds} is more than the {train.n_queries} training queries of {self.dataset!r}: "
                "every fold needs a query"
            )
        self.folds = stratified_folds(train, config.folds, config.seed)
        # Shared by every fit of this run, so nets trained on the same folds are trained once.
        self.fold_plan = FoldPlan(self.folds, config.folds)

        self.say(f"embedding queries with {config.encoder}")
        encoder = make_encoder(config.encoder).fit([str(q) for q in train.queries])
        cache = EmbeddingCache()

        def split(table: OutcomeTable) -> Split:
            features = cache.embed(encoder, [str(q) for q in table.queries])
            return Split(table, features, realize(table, single_model_rankings(table, s_index)))

        self.strongest = train.strongest_model()
        s_index = train.model_index(self.strongest)
        self.train, self.test = split(train), split(test)
        self.ref: Reference = reference(test, strongest=self.strongest)
        self.test_oracle_share = oracle_usage(test)
        self.test_sweeps: dict[str, Sweep] = {}  # kept for paired comparisons between routers
        self.legacy_results: dict[str, dict[str, Any]] = {}  # old-protocol results, reused by the ablations
        self.legacy_sweeps: dict[str, Sweep] = {}  # their test sweeps, for paired comparisons with one-fit routers
        self.cost_predictors: dict[bytes, CostPredictor] = {}  # per set of training rows: see cost_predictor

    # ------------------------------------------------------------ one router
    def context(self, rows: np.ndarray, *, log_training: bool = True) -> RoutingContext:
        """What a router is fitted with: the training rows ``rows`` (a boolean mask) only."""
        table = self.train.table.subset(rows)
        return RoutingContext(
            train=table,
            features=self.train.features[rows],
            cost_predictor=self.cost_predictor(rows),
            cost_scale=float(table.model_stats().loc[table.strongest_model(), "mean_cost"]) or 1.0,
            seed=self.config.seed,
            fold_plan=self.fold_plan.subset(rows),
            log_training=log_training and self.config.training_logs,
        )

    def sweep(self, router: BenchmarkRouter, split: Split, indices: Sequence[int] | None = None) -> Sweep:
        """Route ``split`` at every knob of a fitted router (or at the knobs ``indices`` only)."""
        knobs = list(router.knobs())
        if indices is not None:
            knobs = [knobs[g] for g in indices]
        prepared = router.prepare(split.features, split.texts)
        answered = np.empty((len(knobs), split.table.n_queries), dtype=np.int64)
        scores = np.empty(answered.shape)
        costs = np.empty(answered.shape)
        probabilities = []
        for g, knob in enumerate(knobs):
            decisions = router.decide(prepared, knob)
            routed = realize(split.table, decisions.rankings)
            answered[g], scores[g], costs[g] = routed.answered, routed.scores, routed.costs
            probabilities.append(decisions.probabilities)
        return Sweep(knobs, answered, scores, costs, probabilities)

    def one_fit(
        self, make: Callable[[], BenchmarkRouter], *, test_curve: bool = True
    ) -> tuple[dict[str, Any], Sweep, Sweep]:
        """The old protocol: one fit on every fold but 0, the old rule's point chosen on fold 0 and
        measured on test; returns its results and the fold-0 and test sweeps (the test sweep at the
        chosen knob alone, and no curve metrics, without ``test_curve``)."""
        started = time.perf_counter()
        router = make()
        held = self.folds == 0
        router.fit(self.context(~held))
        fit_seconds = time.perf_counter() - started
        val = self.train.subset(held)
        val_sweep = self.sweep(router, val)
        # The old rule: the bootstrap-quantile retention on one validation split (fold 0).
        point = select_operating_point(
            list(val_sweep.scores),
            list(val_sweep.costs),
            val.strongest.scores,
            target=self.config.target_retention,
            quantile=self.config.selection_quantile,
            seed=self.config.seed,
        )
        test_sweep = self.sweep(router, self.test, None if test_curve else [point.index])
        at = point.index if test_curve else 0
        result = self.point_metrics(test_sweep.routed(at), test_sweep.probabilities[at])
        result["knob"] = val_sweep.knobs[point.index]
        result["validation"] = {
            "retained": point.retained,
            "retained_lower": point.retained_lower,
            "accepted": point.accepted,
        }
        if test_curve:
            result.update(self.curve_metrics(test_sweep))
        result.update(training_log=getattr(router, "training_log", None), fit_seconds=fit_seconds)
        return result, val_sweep, test_sweep

    def evaluate_router(self, name: str) -> dict[str, Any]:
        """The protocol of the module doc for one router; its fold-0 fit is the old protocol's."""
        c = self.config
        make = functools.partial(self.make_router, name)
        legacy, val_sweep, test_sweep = self.one_fit(make, test_curve=c.legacy_curves)
        self.legacy_results[name] = legacy
        if c.legacy_curves:
            self.legacy_sweeps[name] = test_sweep
        fit_seconds = legacy["fit_seconds"]

        knobs = val_sweep.knobs
        folds = [(self.folds == 0, val_sweep)]
        for fold in range(1, c.folds):
            held = self.folds == fold
            started = time.perf_counter()
            router = make()
            router.fit(self.context(~held, log_training=False))  # only fold 0's log is read (ablations)
            fit_seconds += time.perf_counter() - started
            out = self.sweep(router, self.train.subset(held))
            if out.knobs != knobs:
                raise EntroRouterError(f"{router.name}: knobs differ between folds; they must not depend on the fit")
            folds.append((held, out))
        rows = [held for held, _ in folds]
        spend = np.stack([self.fold_spend(held, out) for held, out in folds]) if c.pooling == "spend" else None
        calibration = Calibration.from_outcomes(
            np.asarray(knobs),
            pool_folds([out.scores for _, out in folds], rows, spend),
            pool_folds([out.costs for _, out in folds], rows, spend),
            self.train.strongest.scores,
            self.train.strongest.costs,
            delta=c.delta,
            future_queries=self.test.table.n_queries,
        )
        certified = calibration.certified(c.target_retention)
        index = max(certified - 1, 0)

        started = time.perf_counter()
        final = make()
        final.fit(self.context(np.ones(self.train.table.n_queries, dtype=bool)))
        fit_seconds += time.perf_counter() - started
        started = time.perf_counter()
        sweep = self.sweep(final, self.test)
        route_seconds = time.perf_counter() - started
        self.test_sweeps[final.name] = sweep
        # Deployed at the certified spend (router/calibration.py): the refit's knob that spends
        # on the training queries what the fold routers spent there at the certified knob.
        prepared = final.prepare(self.train.features, self.train.texts)

        def train_spend(g: int) -> float:
            return float(realize(self.train.table, final.decide(prepared, knobs[g]).rankings).costs.mean())

        train_spend = functools.cache(train_spend)  # the certificates below ask for the same knobs again
        deployed = calibration.deployed_index(index, train_spend)
        result = self.point_metrics(sweep.routed(deployed), sweep.probabilities[deployed])
        result.update(
            self.curve_metrics(sweep),
            knob=knobs[deployed],
            certified_knob=knobs[index],
            calibration={
                "certified": certified > 0,
                "retained": float(calibration.retention[index]),
                "retained_lower": float(calibration.retention_lower()[index]),
                "cost_reduction": float(calibration.cost_reduction[index]),
                "n": calibration.n,
                "curve": np.stack([calibration.retention, calibration.cost_reduction], axis=1).tolist(),
            },
            legacy_rule={
                k: legacy[k] for k in ("knob", "retained", "cost_reduction", "accuracy", "cost", "aiq") if k in legacy
            },
            certificates=self.certificates(calibration, sweep, lambda g: calibration.deployed_index(g, train_spend)),
            training_log=getattr(final, "training_log", None),
            fit_seconds=fit_seconds,
            sweep_seconds=route_seconds,
        )
        return result

    def certificates(
        self, calibration: Calibration, sweep: Sweep, deployed_at: Callable[[int], int]
    ) -> dict[str, dict[str, Any] | None]:
        """What each statement about retention would choose on the out-of-fold curve, and what that
        point kept on test (deployed at its spend, as the chosen point is): the margin the chosen
        point's guarantee costs, split in two. None where the scan certifies no point.

        * ``estimate``: the out-of-fold estimate reaches the target (no margin, nothing promised);
        * ``expected``: expected retention on future traffic, with confidence 1 − δ (margin for the
          calibration's own sampling noise, n queries);
        * ``batch``: retention on a batch of the test set's size (m queries), with confidence 1 − δ:
          the chosen point (margin for the calibration's noise and the batch's).
        """
        target = self.config.target_retention
        counts = {
            "estimate": calibration.certified(target, delta=0.5),  # z = 0: the estimate alone
            "expected": replace(calibration, future_queries=None).certified(target),
            "batch": calibration.certified(target),
        }
        out: dict[str, dict[str, Any] | None] = {}
        for statement, count in counts.items():
            if count == 0:
                out[statement] = None
                continue
            deployed = deployed_at(count - 1)
            routed = sweep.routed(deployed)
            out[statement] = {
                "index": count - 1,  # the certified knob's place in scan order
                "oof_retained": float(calibration.retention[count - 1]),
                "oof_cost_reduction": float(calibration.cost_reduction[count - 1]),
                "knob": sweep.knobs[deployed],
                "retained": self.ref.retained(routed.accuracy),
                "cost_reduction": self.ref.cost_reduction(routed.cost),
            }
        return out

    def cost_predictor(self, rows: np.ndarray) -> CostPredictor:
        """The cost predictor fitted on the training rows ``rows`` (a boolean mask), fitted once per
        set of rows: every router fitted on a fold's rows, and the pooling, price with the same one."""
        key = rows.tobytes()
        if key not in self.cost_predictors:
            texts = [t for t, keep in zip(self.train.texts, rows, strict=True) if keep]
            self.cost_predictors[key] = CostPredictor().fit(texts, self.train.table.costs[rows])
        return self.cost_predictors[key]

    def fold_spend(self, held: np.ndarray, sweep: Sweep) -> np.ndarray:
        """(G,) a fold router's :func:`planned_spend` on its held-out rows ``held``, priced by the cost
        predictor of the other rows (the fold router's own): what aligns the folds at equal spend."""
        held_texts = [t for t, h in zip(self.train.texts, held, strict=True) if h]
        return planned_spend(self.cost_predictor(~held).predict(held_texts), sweep.answered)

    def curve_metrics(self, sweep: Sweep) -> dict[str, Any]:
        curve = sweep.curve()
        return {"aiq": aiq(curve, self.ref), "apgr": apgr(curve, self.ref), "curve": [[c, a] for c, a in curve]}

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
        return list(self.config.routers) if self.config.routers else [n for n, r in REGISTRY.items() if r.default]

    def make_router(self, name: str, **overrides: Any) -> BenchmarkRouter:
        c = self.config
        if name == "entrorouter":
            return EntroRouterBaseline(encoder=c.encoder, **{**c.train_config, **overrides})
        if name == "entrorouter_ft":
            return EntroRouterFineTuned(**{**c.train_config, "encoder": c.finetune_encoder})
        return REGISTRY[name]()

    def applicable_routers(self, *, cross_fit: bool) -> list[str]:
        """The named (or default) routers that suit this pool and are (not) cross-fitted."""
        probe = self.context(np.ones(self.train.table.n_queries, dtype=bool))
        names = []
        for name in self.router_names():
            if REGISTRY[name].cross_fit != cross_fit:
                continue
            if not self.make_router(name).applicable(probe):
                self.say(f"{name}: not applicable to a {len(self.models)}-model pool, skipped")
                continue
            names.append(name)
        return names

    def run_routers(self) -> dict[str, dict[str, Any]]:
        """Every applicable cross-fitted router through the full protocol."""
        out = {}
        for name in self.applicable_routers(cross_fit=True):
            self.say(f"{name}: cross-fitting ({self.config.folds} folds), final fit and sweep")
            out[name] = self.evaluate_router(name)
        return out

    def run_one_fit_routers(self) -> dict[str, dict[str, Any]]:
        """The routers too slow to cross-fit, with one fit each (:meth:`one_fit`), and their AIQ
        minus that of the same protocol's EntroRouter and best baseline (95% paired-bootstrap CI)."""
        out = {}
        for name in self.applicable_routers(cross_fit=False):
            self.say(f"{name}: one fit (too slow to cross-fit), old rule's point, sweep")
            result, _, sweep = self.one_fit(functools.partial(self.make_router, name))
            result.pop("training_log", None)
            baselines = [n for n in self.legacy_results if n != "entrorouter"]
            compared = {"entrorouter": "entrorouter"} if "entrorouter" in self.legacy_results else {}
            if baselines:
                compared["best_baseline"] = max(baselines, key=lambda n: self.legacy_results[n]["aiq"])
            result["aiq_minus"] = {
                role: {
                    "router": other,
                    **aiq_difference_ci(sweep, self.legacy_sweeps[other], self.ref, n_boot=200, seed=self.config.seed),
                }
                for role, other in compared.items()
            }
            out[name] = result
        return out

    def run(self) -> dict[str, Any]:
        results: dict[str, Any] = {
            "dataset": self.dataset,
            "n_train": self.train.table.n_queries,
            "n_test": self.test.table.n_queries,
            "folds": self.config.folds,
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
        for name, result in self.run_routers().items():
            log = result.pop("training_log", None)
            if log is not None:
                result["training_curve"] = training_curve(log)
            results["routers"][name] = result
        results["aiq_vs_best_baseline"] = self.aiq_comparison(results["routers"])
        one_fit = self.run_one_fit_routers()
        if one_fit:
            results["one_fit"] = one_fit
        if self.config.ablations:
            results["ablations"] = self.run_ablations()
        return results

    def aiq_comparison(self, routers: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        """EntroRouter's test AIQ minus the best baseline's, with a paired-bootstrap 95% CI."""
        baselines = [n for n in self.test_sweeps if n != "entrorouter"]
        if "entrorouter" not in self.test_sweeps or not baselines:
            return None
        best = max(baselines, key=lambda n: routers[n]["aiq"])
        ci = aiq_difference_ci(
            self.test_sweeps["entrorouter"], self.test_sweeps[best], self.ref, n_boot=200, seed=self.config.seed
        )
        return {"baseline": best, **ci}

    def run_ablations(self) -> dict[str, dict[str, Any]]:
        """Every ablation under the old protocol (one fit on 80% of train, chosen on fold 0)."""
        out = {}
        for name, overrides in ABLATIONS.items():
            if name == "entrorouter" and "entrorouter" in self.legacy_results:
                result = dict(self.legacy_results["entrorouter"])  # the full method's fold-0 fit: already run
            else:
                self.say(f"ablation {name}: fitting and sweeping")
                result, _, _ = self.one_fit(functools.partial(self.make_router, "entrorouter", **overrides))
            result["training_curve"] = training_curve(result.pop("training_log") or [])
            result["label"] = ABLATION_LABELS[name]
            out[name] = result
        return out


def training_curve(log: list[dict[str, Any]], max_points: int = 400) -> list[dict[str, Any]]:
    """The per-step diagnostics worth plotting, thinned to at most ``max_points`` steps."""
    steps = [r for r in log if "event" not in r]
    stride = max(1, len(steps) // max_points)
    return [
        {"step": r["step"], "stage": r["stage"], **{k: r[k] for k in LOG_FIELDS if k in r}} for r in steps[::stride]
    ]
