"""Fitting a :class:`~entrorouter.router.Router`: its parts, then its calibration curve.

``fit_router`` trains, on every training row, the parts a router routes with (cost
predictor, capability estimators, policy: :func:`fit_parts`), and then measures what each
λ keeps of the strongest model by **K-fold cross-fitting** (:func:`cross_fit_calibration`):
the parts are refitted on K − 1 folds, the held-out fold is routed along a fine λ grid,
and the out-of-fold outcomes of all training queries are pooled into one calibration
curve. The default λ is then the cheapest λ that the risk-control rule of
:mod:`entrorouter.router.calibration` certifies for ``target_retention``, deployed as the
refitted router's λ that spends what the fold routers spent there.

Why cross-fitting rather than one validation split: a 20% split of a few thousand queries
measures retention to about ±1 point, the size of the effect being chosen; pooling K
held-out folds measures every training query once, out of fold, at K + 1 times the fit
time.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import torch

from entrorouter.data.cost import CostPredictor
from entrorouter.data.splits import stratified_folds
from entrorouter.data.table import OutcomeTable
from entrorouter.errors import EntroRouterError
from entrorouter.evaluation.metrics import oracle_usage, realize, single_model_rankings
from entrorouter.features.cache import EmbeddingCache, text_key
from entrorouter.features.encoders import make_encoder
from entrorouter.policy.mlp import RoutingPolicy
from entrorouter.policy.weights import PolicyEnsemble, policy_input_dim
from entrorouter.router import Router
from entrorouter.router.calibration import Calibration, lambda_grid, planned_spend, pool_folds
from entrorouter.router.capability import FoldPlan
from entrorouter.router.config import TrainConfig
from entrorouter.router.model import capability_for
from entrorouter.training.backbone import finetune_encoder
from entrorouter.training.nets import as_float_tensor
from entrorouter.training.trainer import LogFn, RoutingData, Trainer


def say(progress: bool, message: str) -> None:
    """A phase of training, on stderr (so a long fit is never silent)."""
    if progress:
        print(f"training: {message}", file=sys.stderr, flush=True)


def check_trainable(table: OutcomeTable, config: TrainConfig) -> None:
    """A clear error for a table no router can be trained on, before any work (embedding can take minutes)."""
    if table.n_queries < 20:
        raise EntroRouterError(f"table {table.name!r} has {table.n_queries} queries; training needs at least 20")
    if table.n_models < 2:
        raise EntroRouterError(f"table {table.name!r} has {table.n_models} model; routing needs at least 2")
    unseen = table.unobserved_models()
    if unseen:
        raise EntroRouterError(
            f"table {table.name!r} has no outcome at all for model(s) {unseen}: nothing to learn about them; "
            "collect some outcomes or leave the model(s) out"
        )
    observed = table.scores[table.observed]
    if observed.min() == observed.max():  # routing learns from differences between outcomes
        raise EntroRouterError(
            f"table {table.name!r}: every outcome has the score {observed[0]:g}, so no model answers better "
            "than another; check the score column"
        )
    if config.calibration_folds > table.n_queries:
        raise EntroRouterError(
            f"calibration_folds = {config.calibration_folds} is more than the {table.n_queries} queries of table "
            f"{table.name!r}: every fold needs a query; lower calibration_folds (default 5)"
        )


def fit_router(
    router: Router,
    table: OutcomeTable,
    *,
    features: np.ndarray | None = None,
    progress: bool = False,
    cache: EmbeddingCache | None = None,
    fold_plan: FoldPlan | None = None,
    log_training: bool = True,
) -> Router:
    """Train ``router`` on every row of ``table``; see the module doc.

    ``fold_plan``: cross-fitting folds of a caller that fits this table's subsets several
    times (the benchmark), so capability nets are shared between those fits; by default
    the calibration's own folds, or the estimators' own when there is no calibration.
    ``log_training=False`` leaves ``router.training_log`` empty and skips the policy's
    per-step validation diagnostics (the same weights, in less time).
    """
    c = router.config
    check_trainable(table, c)
    router.cache = cache or router.cache or EmbeddingCache()
    texts = [str(q) for q in table.queries]
    router.encoder = make_encoder(c.encoder)
    router.encoder.fit(texts)
    router.training_log = []
    log = router.training_log.append if log_training else None
    if getattr(router.encoder, "trainable", False):  # minilm-ft: fine-tuned end to end first
        if features is not None:
            raise EntroRouterError(f"fit fine-tunes the encoder {c.encoder}, so it embeds the queries itself")
        say(progress, f"fine-tuning the encoder {c.encoder}")
        # Only on the policy's training rows: its validation rows stay unseen, as without fine-tuning.
        policy_rows = ~validation_mask(table.n_queries, c)
        finetune_encoder(router.encoder, table.subset(policy_rows), c, log=log)
    if features is None:
        features = router.embed(texts, progress=progress)
    elif features.shape[0] != table.n_queries:
        raise ValueError(f"features has {features.shape[0]} rows for {table.n_queries} queries")

    started = time.perf_counter()
    if c.calibration_folds and fold_plan is None:
        fold_plan = FoldPlan(stratified_folds(table, c.calibration_folds, c.seed), c.calibration_folds)
    fit_parts(router, table, features, fold_plan, progress=progress, log=log)
    router.trained_query_keys = frozenset(text_key(t) for t in texts)
    router.trained_on = {
        "table": table.name,
        "n_queries": table.n_queries,
        "strongest_model": table.strongest_model(),
        "cost_unit": "USD",
    }
    if c.calibration_folds:
        router.calibration = cross_fit_calibration(router, table, features, fold_plan, progress=progress)
    router.default_lam = c.lam if c.lam is not None else default_lam(router)
    router.trained_on["train_seconds"] = round(time.perf_counter() - started, 3)
    return router


def default_lam(router: Router) -> float:
    """The cheapest λ certified for ``target_retention``; the most accurate λ when none is (recorded)."""
    target = router.config.target_retention
    calibration = router.calibration
    if calibration is None:
        return 0.0
    certified = calibration.certified(target)
    router.trained_on["target_retention"] = target
    router.trained_on["target_reached"] = certified > 0
    return calibration.deployed_lam(max(certified - 1, 0))


def validation_mask(n_queries: int, config: TrainConfig) -> np.ndarray:
    """The rows held out from the policy's training for early stopping (seeded, ``val_fraction``)."""
    rng = np.random.default_rng(config.seed)
    mask = np.zeros(n_queries, dtype=bool)
    mask[rng.permutation(n_queries)[: max(1, round(config.val_fraction * n_queries))]] = True
    return mask


def fit_parts(
    router: Router,
    table: OutcomeTable,
    features: np.ndarray,
    fold_plan: FoldPlan | None = None,
    *,
    progress: bool = False,
    log: LogFn | None = None,
) -> None:
    """Fit the cost predictor, the capability estimators and the policy of ``router`` (encoder already set).

    ``log`` receives the policy's training log (none: not logged, and its per-step
    validation diagnostics are skipped).

    A validation share of the rows (``val_fraction``) is held out from each policy's
    training for early stopping (another share for each of ``policy_seeds``); the capability
    estimators learn from every row, and their out-of-fold estimates (along ``fold_plan``'s
    folds when given) keep those rows honest.
    """
    c = router.config
    router.models = table.models
    texts = [str(q) for q in table.queries]

    # C: mean cost of the strongest model normalises every cost.
    router.cost_scale = float(table.model_stats().loc[table.strongest_model(), "mean_cost"]) or 1.0
    router.cost_predictor = CostPredictor().fit(texts, table.costs)
    router.capability = capability_for(c)
    say(progress, f"capability estimates ({c.capability}) on {table.n_queries} queries")
    oof = router.capability.fit(features, table.scores, fold_plan)
    cost_pred = router.cost_predictor.predict(texts) / router.cost_scale

    def routing_data(rows: np.ndarray) -> RoutingData:
        return RoutingData(
            features=as_float_tensor(features[rows]),
            scores=as_float_tensor(table.scores[rows]),
            cost=as_float_tensor(table.costs[rows] / router.cost_scale),
            capability=as_float_tensor(oof[rows]),
            cost_pred=as_float_tensor(cost_pred[rows]),
        )

    in_dim = policy_input_dim(features.shape[1], table.n_models, c.policy_input)
    members = []
    for member in range(c.policy_seeds):  # member 0 is the lone policy of policy_seeds = 1
        member_config = dataclasses.replace(c, seed=c.seed + 1000 * member)
        val_mask = validation_mask(table.n_queries, member_config)
        fit_rows, val_rows = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
        policy = policy_for(member_config, in_dim, table.n_models)
        which = f" {member + 1}/{c.policy_seeds}" if c.policy_seeds > 1 else ""
        say(progress, f"policy{which}: Soft Supervision, then RL with the Soft Anchor")
        Trainer(
            policy,
            member_config,
            routing_data(fit_rows),
            routing_data(val_rows),
            model_names=router.models,
            default_lam=c.lam if c.lam is not None else 0.1,
            val_oracle_share=oracle_usage(table.subset(val_rows)),
            log=log if member == 0 else None,  # one policy's log tells the story; the others' cost time
            progress=progress,
        ).fit()
        members.append(policy.weights())
    router.policy = PolicyEnsemble(tuple(members))


def policy_for(config: TrainConfig, in_dim: int, n_models: int) -> RoutingPolicy:
    """The (untrained) routing policy that ``config`` describes, its initial weights drawn from
    ``config.seed``: not from whatever the process drew before, so one seed is one router."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return RoutingPolicy(
            in_dim,
            n_models,
            hidden=config.hidden,
            n_layers=config.n_layers,
            dropout=config.dropout,
            lam_min=config.lam_min,
            lam_max=config.lam_max,
        )


def cross_fit_calibration(
    router: Router, table: OutcomeTable, features: np.ndarray, fold_plan: FoldPlan, *, progress: bool = False
) -> Calibration:
    """Out-of-fold routing of every training query along the λ grid, pooled into a calibration curve."""
    c = router.config
    grid = lambda_grid(c.lam_min, c.lam_max, c.calibration_points)
    answered = pooled_choices(fold_choices(router, table, features, grid, fold_plan, progress=progress), c)
    rows = np.arange(table.n_queries)
    strong = realize(table, single_model_rankings(table, table.model_index(table.strongest_model())))
    calibration = Calibration.from_outcomes(
        grid,
        table.scores[rows, answered],
        table.costs[rows, answered],
        strong.scores,
        strong.costs,
        delta=c.risk_delta,
        future_queries=c.future_queries,
    )
    return calibration.with_deployed_spend(spend_along(router, table, features, grid))


def spend_along(router: Router, table: OutcomeTable, features: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(G,) the fitted router's mean cost on ``table``'s queries at each λ of ``grid``."""
    inputs = router.inputs(features, [str(q) for q in table.queries])
    return np.array([realize(table, router.rank(inputs, float(lam))[1]).costs.mean() for lam in grid])


@dataclasses.dataclass
class FoldChoices:
    """One fold router's routing of its held-out rows along the λ grid."""

    rows: np.ndarray  # (n,) bool: the fold's rows of the table
    answered: np.ndarray  # (G, n_fold) the model that answers each of them at each λ
    planned_spend: np.ndarray  # (G,) mean predicted cost (US$) of those choices


def fold_choices(
    router: Router,
    table: OutcomeTable,
    features: np.ndarray,
    grid: np.ndarray,
    fold_plan: FoldPlan,
    *,
    progress: bool = False,
) -> list[FoldChoices]:
    """Each fold routed along ``grid`` by parts fitted on the other folds only (capability
    estimators, cost predictor and policy alike), so no query's own outcome reaches its decision."""
    texts = [str(q) for q in table.queries]
    folds = []
    for fold in range(fold_plan.n_folds):
        say(progress, f"calibration curve: fold {fold + 1}/{fold_plan.n_folds} (parts refitted without it)")
        held = fold_plan.labels == fold
        fold_router = Router(router.config)
        fold_router.encoder = router.encoder
        fit_parts(fold_router, table.subset(~held), features[~held], fold_plan.subset(~held))
        held_table = table.subset(held)
        inputs = fold_router.inputs(features[held], [t for t, h in zip(texts, held, strict=True) if h])
        answered = np.stack([realize(held_table, fold_router.rank(inputs, float(lam))[1]).answered for lam in grid])
        predicted_cost = inputs.cost * fold_router.cost_scale  # US$: each fold router has its own C
        folds.append(FoldChoices(held, answered, planned_spend(predicted_cost, answered)))
    return folds


def pooled_choices(folds: list[FoldChoices], config: TrainConfig) -> np.ndarray:
    """(G, n): the model that answers each training query at each λ, decided out of fold, the
    folds pooled as ``config.calibration_pooling`` says (:func:`pool_folds`)."""
    spend = np.stack([fold.planned_spend for fold in folds]) if config.calibration_pooling == "spend" else None
    return pool_folds([fold.answered for fold in folds], [fold.rows for fold in folds], spend)
