"""The EntroRouter estimator: ``fit`` on an outcome table, ``route`` queries, ``save``/``load``.

>>> router = Router(TrainConfig(encoder="hashed-tfidf")).fit(table)      # doctest: +SKIP
>>> router.route(["What is 2 + 2?"], lam=0.05)[0].model                  # doctest: +SKIP
>>> router.save("my-router"); Router.load("my-router")                   # doctest: +SKIP

A saved router is a directory: ``config.json`` (format version, model pool, cost scale,
encoder, λ, training config), ``weights.safetensors`` (policy, capability estimator,
cost predictor, encoder statistics) and ``training_log.jsonl``. Nothing is pickled, so
loading a router from someone else cannot run code.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from entrorouter import __version__
from entrorouter.data.cost import CostPredictor
from entrorouter.data.io import atomic_path, write_text_atomic
from entrorouter.data.table import OutcomeTable
from entrorouter.errors import EntroRouterError
from entrorouter.evaluation.metrics import (
    Reference,
    entropy,
    expert_suppression,
    oracle_usage,
    realize,
    reference,
    single_model_rankings,
)
from entrorouter.evaluation.selection import select_operating_point
from entrorouter.features.cache import EmbeddingCache
from entrorouter.features.encoders import Encoder, encoder_from_state, make_encoder
from entrorouter.policy.mlp import RoutingPolicy, anchor_logits, policy_input, policy_input_dim
from entrorouter.training.backbone import finetune_encoder
from entrorouter.training.capability import CapabilityEstimator, as_float_tensor, make_capability
from entrorouter.training.config import TrainConfig
from entrorouter.training.trainer import RoutingData, Trainer

FORMAT = "entrorouter-router"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, LOG_FILE = "config.json", "weights.safetensors", "training_log.jsonl"


@dataclass(frozen=True)
class RouteResult:
    """One routing decision: the model to call, the fallback order, the probabilities."""

    model: str
    ranking: tuple[str, ...]
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ranking": list(self.ranking),
            "probabilities": self.probabilities,
        }


@dataclass(frozen=True)
class RoutingInputs:
    """What the policy sees for a batch of queries, all known before any call is made:
    embeddings, capability estimates â and predicted cost ĉ / C (no realised outcome)."""

    features: np.ndarray
    capability: np.ndarray
    cost: np.ndarray


class Router:
    """Entropy-regulated single-round router (Soft Supervision + Soft-Anchor RL)."""

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config = config or TrainConfig()
        self.models: tuple[str, ...] = ()
        self.cost_scale = 1.0
        self.encoder: Encoder | None = None
        self.cost_predictor: CostPredictor | None = None
        self.capability: CapabilityEstimator | None = None
        self.policy: RoutingPolicy | None = None
        self.training_log: list[dict[str, Any]] = []
        self.trained_on: dict[str, Any] = {}
        self.default_lam: float = self.config.lam if self.config.lam is not None else 0.0
        #: Disk cache for embeddings; training sets one, a loaded router has none (so a
        #: serving router never writes request texts to disk) unless the caller assigns it.
        self.cache: EmbeddingCache | None = None

    # ------------------------------------------------------------- properties
    @property
    def lam(self) -> float:
        """The default trade-off λ used when a call does not pass one."""
        return self.default_lam

    def _check_fitted(self) -> None:
        if self.policy is None:
            raise EntroRouterError("this router is not trained yet: call fit() or Router.load()")

    # -------------------------------------------------------------- features
    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Query embeddings, through :attr:`cache` when one is set."""
        if self.cache is None:
            return self.encoder.encode(list(texts), progress=progress)
        return self.cache.embed(self.encoder, list(texts), progress=progress)

    def inputs(self, features: np.ndarray, texts: Sequence[str]) -> RoutingInputs:
        """Routing inputs for embedded queries (independent of λ: compute once, route at many λ)."""
        self._check_fitted()
        return RoutingInputs(
            features, self.capability.predict(features), self.cost_predictor.predict(list(texts)) / self.cost_scale
        )

    # ------------------------------------------------------------------- fit
    def fit(
        self,
        table: OutcomeTable,
        *,
        features: np.ndarray | None = None,
        progress: bool = False,
        cache: EmbeddingCache | None = None,
    ) -> Router:
        """Train on every row of ``table`` (a validation share is carved out internally).

        ``features`` may pass precomputed embeddings of ``table.queries`` (same encoder).
        """
        c = self.config
        if table.n_queries < 20:
            raise EntroRouterError(f"table {table.name!r} has {table.n_queries} queries; training needs at least 20")
        if table.n_models < 2:
            raise EntroRouterError(f"table {table.name!r} has {table.n_models} model; routing needs at least 2")
        unseen = [m for m, seen in zip(table.models, table.observed.any(axis=0), strict=True) if not seen]
        if unseen:
            raise EntroRouterError(
                f"table {table.name!r} has no outcome at all for model(s) {unseen}: nothing to learn about them; "
                "collect some outcomes or leave the model(s) out"
            )
        torch.manual_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        self.models = table.models
        self.cache = cache or self.cache or EmbeddingCache()
        texts = [str(q) for q in table.queries]

        self.encoder = make_encoder(c.encoder)
        self.encoder.fit(texts)
        val_mask = np.zeros(table.n_queries, dtype=bool)
        val_mask[rng.permutation(table.n_queries)[: max(1, round(c.val_fraction * table.n_queries))]] = True
        fit_rows, val_rows = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
        self.training_log = []
        if getattr(self.encoder, "trainable", False):  # minilm-ft: fine-tune it on the fit rows first
            if features is not None:
                raise EntroRouterError(f"fit fine-tunes the encoder {c.encoder}, so it embeds the queries itself")
            finetune_encoder(self.encoder, table.subset(fit_rows), c, log=self.training_log.append)
        if features is None:
            features = self.embed(texts, progress=progress)
        elif features.shape[0] != table.n_queries:
            raise ValueError(f"features has {features.shape[0]} rows for {table.n_queries} queries")

        # C: mean cost of the strongest model normalises every cost.
        strongest = table.strongest_model()
        self.cost_scale = float(table.model_stats().loc[strongest, "mean_cost"]) or 1.0
        self.cost_predictor = CostPredictor().fit(texts, table.costs)
        self.capability = capability_for(c)
        # Capability estimates use every row: out-of-fold estimates never see a row's own
        # outcome, so the validation rows' estimates stay honest while the estimators (and
        # the ensemble used for new queries) learn from all the data.
        oof = self.capability.fit(features, table.scores)
        cost_pred = self.cost_predictor.predict(texts) / self.cost_scale

        def routing_data(rows: np.ndarray, capability: np.ndarray) -> RoutingData:
            return RoutingData(
                features=as_float_tensor(features[rows]),
                scores=as_float_tensor(table.scores[rows]),
                cost=as_float_tensor(table.costs[rows] / self.cost_scale),
                capability=as_float_tensor(capability),
                cost_pred=as_float_tensor(cost_pred[rows]),
            )

        train_data = routing_data(fit_rows, oof[fit_rows])
        val_data = routing_data(val_rows, oof[val_rows])
        self.policy = policy_for(c, policy_input_dim(features.shape[1], table.n_models, c.policy_input), table.n_models)
        started = time.perf_counter()
        val_table = table.subset(val_rows)
        Trainer(
            self.policy,
            c,
            train_data,
            val_data,
            model_names=self.models,
            default_lam=c.lam if c.lam is not None else 0.1,
            val_oracle_share=oracle_usage(val_table),
            log=self.training_log.append,
            progress=progress,
        ).fit()
        self.default_lam = (
            c.lam
            if c.lam is not None
            else self._select_lam(
                val_table, RoutingInputs(features[val_rows], oof[val_rows], cost_pred[val_rows]), strongest
            )
        )
        self.trained_on = {
            "table": table.name,
            "n_queries": table.n_queries,
            "n_train": len(fit_rows),
            "n_val": len(val_rows),
            "strongest_model": strongest,
            "cost_unit": "USD",
            "train_seconds": round(time.perf_counter() - started, 3),
        }
        return self

    def _select_lam(self, val_table: OutcomeTable, inputs: RoutingInputs, strongest: str) -> float:
        """The cheapest λ whose validation retention of ``strongest`` holds (evaluation.selection)."""
        strong = realize(val_table, single_model_rankings(val_table, val_table.model_index(strongest)))
        candidates = [0.0, *np.geomspace(self.config.lam_min, self.config.lam_max, 40)]
        routed = [realize(val_table, self.rank(inputs, lam)[1]) for lam in candidates]
        point = select_operating_point(
            [r.scores for r in routed],
            [r.costs for r in routed],
            strong.scores,
            target=self.config.target_retention,
            quantile=self.config.selection_quantile,
            seed=self.config.seed,
        )
        return float(candidates[point.index])

    # ----------------------------------------------------------------- route
    @torch.no_grad()
    def probabilities(self, inputs: RoutingInputs, lam: float | Sequence[float] | None = None) -> np.ndarray:
        """(n, K) routing distribution π(k | q, λ); ``lam`` is one λ or one per query."""
        lam_values = np.broadcast_to(
            np.asarray(self.lam if lam is None else lam, dtype=np.float64), (len(inputs.features),)
        )
        if (lam_values < 0).any() or not np.isfinite(lam_values).all():
            raise EntroRouterError(f"λ must be a finite number >= 0, got {lam!r}")
        lam_t = torch.from_numpy(lam_values.astype(np.float32))
        anchor = (
            anchor_logits(
                as_float_tensor(inputs.capability), as_float_tensor(inputs.cost), lam_t, self.config.anchor_temperature
            )
            if self.config.anchor_residual
            else None
        )
        x = policy_input(
            as_float_tensor(inputs.features),
            as_float_tensor(inputs.capability),
            as_float_tensor(inputs.cost),
            self.config.policy_input,
        )
        return F.softmax(self.policy(x, lam_t, anchor), dim=1).numpy()

    def rank(
        self, inputs: RoutingInputs, lam: float | Sequence[float] | None = None, *, cost_weight: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, rankings best-first).

        Rankings order models by ``log π(k|q, λ) − cost_weight · ĉ(q, k)``: a request-time
        cost knob on top of λ (0 = the policy's own order).
        """
        probs = self.probabilities(inputs, lam)
        utility = np.log(np.maximum(probs, 1e-30))
        if cost_weight:
            utility = utility - cost_weight * inputs.cost
        return probs, np.argsort(-utility, axis=1, kind="stable")

    def route(
        self, queries: str | Sequence[str], lam: float | Sequence[float] | None = None, *, cost_weight: float = 0.0
    ) -> list[RouteResult]:
        """Route queries: chosen model, full ranking (fallback order) and probabilities.

        ``lam`` is the trade-off λ: one value, one per query, or None for the router's default.
        """
        self._check_fitted()
        texts = [queries] if isinstance(queries, str) else [str(q) for q in queries]
        if not texts:
            return []
        probs, rankings = self.rank(self.inputs(self.embed(texts), texts), lam, cost_weight=cost_weight)
        names = np.asarray(self.models, dtype=object)
        return [
            RouteResult(
                model=str(names[order[0]]),
                ranking=tuple(names[order]),
                probabilities={m: float(p) for m, p in zip(self.models, row, strict=True)},
            )
            for row, order in zip(probs, rankings, strict=True)
        ]

    # -------------------------------------------------------------- evaluate
    def evaluate(
        self,
        table: OutcomeTable,
        lam: float | None = None,
        *,
        features: np.ndarray | None = None,
        cost_weight: float = 0.0,
    ) -> dict[str, Any]:
        """Accuracy, cost, retention and usage on ``table`` (scored by :func:`realize`)."""
        self._check_fitted()
        table = table.select_models(self.models)
        texts = [str(q) for q in table.queries]
        if features is None:
            features = self.embed(texts)
        probs, rankings = self.rank(self.inputs(features, texts), lam, cost_weight=cost_weight)
        routed = realize(table, rankings)
        return evaluation_report(table, routed, probs, lam=self.lam if lam is None else float(lam))

    # ------------------------------------------------------------ save/load
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the router directory (each file atomically)."""
        from safetensors.numpy import save_file

        self._check_fitted()
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise EntroRouterError(f"{path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        tensors = self._tensors()
        encoder_config, _ = self.encoder.state()
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "entrorouter_version": __version__,
            "models": list(self.models),
            "cost_scale": self.cost_scale,
            "lam": self.lam,
            "encoder": encoder_config,
            "capability": self.capability.name,
            "policy": {"in_dim": self.policy.in_dim, "n_models": self.policy.n_models},
            "trained_on": self.trained_on,
            "train_config": self.config.to_dict(),
            "tensors": {name: list(t.shape) for name, t in tensors.items()},
        }
        with atomic_path(path / WEIGHTS_FILE) as tmp:
            save_file(
                tensors,
                str(tmp),
                metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)},
            )
        write_text_atomic(path / LOG_FILE, "".join(json.dumps(r) + "\n" for r in self.training_log))
        write_text_atomic(path / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        return path

    def _tensors(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        parts = {
            "policy": {k: v.detach().numpy() for k, v in self.policy.state_dict().items()},
            "capability": self.capability.tensors(),
            "cost": self.cost_predictor.tensors(),
            "encoder": self.encoder.state()[1],
        }
        for prefix, tensors in parts.items():
            for name, value in tensors.items():
                out[f"{prefix}.{name}"] = np.ascontiguousarray(value)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, expected_models: Sequence[str] | None = None) -> Router:
        """Load and validate a saved router; ``expected_models`` checks the pool."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_dir():
            raise EntroRouterError(f"{path}: no router directory here")
        config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EntroRouterError(f"{config_path}: missing; is {path} a saved router?") from None
        except json.JSONDecodeError as exc:
            raise EntroRouterError(f"{config_path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise EntroRouterError(f"{config_path}: not an EntroRouter router (format {config.get('format')!r})")
        version = config.get("format_version")
        if version != FORMAT_VERSION:
            raise EntroRouterError(
                f"{config_path}: router format version {version!r}; this entrorouter {__version__} reads version "
                f"{FORMAT_VERSION} (retrain the router or install a matching entrorouter)"
            )
        try:
            models = tuple(config["models"])
            train_config = TrainConfig.from_dict(config["train_config"], source=str(config_path))
            cost_scale = float(config["cost_scale"])
            expected_shapes = {k: tuple(v) for k, v in config["tensors"].items()}
            policy_meta = config["policy"]
        except (KeyError, TypeError, ValueError) as exc:
            raise EntroRouterError(f"{config_path}: missing or invalid field ({exc})") from None
        if len(models) < 2 or len(set(models)) != len(models) or not all(isinstance(m, str) for m in models):
            raise EntroRouterError(f"{config_path}: 'models' must list at least two distinct model names")
        if expected_models is not None and set(expected_models) != set(models):
            raise EntroRouterError(
                f"{path}: the router was trained for the pool {sorted(models)}, not {sorted(expected_models)}"
            )
        try:
            tensors = load_file(str(weights_path))
        except FileNotFoundError:
            raise EntroRouterError(f"{weights_path}: missing") from None
        except (SafetensorError, OSError, ValueError) as exc:
            raise EntroRouterError(f"{weights_path}: unreadable safetensors file ({exc})") from None
        if set(tensors) != set(expected_shapes):
            lacking = sorted(set(expected_shapes) - set(tensors))
            extra = sorted(set(tensors) - set(expected_shapes))
            raise EntroRouterError(
                f"{weights_path}: tensors do not match config.json (missing {lacking}, extra {extra})"
            )
        for name, shape in expected_shapes.items():
            if tensors[name].shape != shape:
                raise EntroRouterError(
                    f"{weights_path}: tensor {name!r} has shape {list(tensors[name].shape)}, "
                    f"config.json says {list(shape)}"
                )

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

        router = cls(train_config)
        router.models, router.cost_scale = models, cost_scale
        try:
            router.default_lam = float(config["lam"])
        except (KeyError, TypeError, ValueError):
            raise EntroRouterError(f"{config_path}: 'lam' must be a number") from None
        router.trained_on = dict(config.get("trained_on") or {})
        router.encoder = encoder_from_state(config["encoder"], part("encoder"))
        router.cost_predictor = CostPredictor.from_tensors(part("cost"))
        router.capability = capability_for(train_config)
        router.capability.load_tensors(part("capability"))
        policy = policy_for(train_config, int(policy_meta["in_dim"]), len(models))
        try:
            policy.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in part("policy").items()})
        except RuntimeError as exc:
            raise EntroRouterError(f"{weights_path}: policy weights do not fit the policy ({exc})") from None
        if policy.n_models != len(models) or router.cost_predictor.intercept.shape != (len(models),):
            raise EntroRouterError(f"{weights_path}: weights are for a pool of another size than {len(models)} models")
        router.policy = policy.eval()
        log_path = path / LOG_FILE
        if log_path.exists():
            router.training_log = [
                json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line
            ]
        return router


def evaluation_report(
    table: OutcomeTable,
    routed: Any,
    probs: np.ndarray | None,
    *,
    lam: float | None,
    ref: Reference | None = None,
) -> dict[str, Any]:
    """The `evaluate` JSON: router accuracy/cost next to the strongest model's."""
    ref = ref or reference(table)
    usage = routed.usage(table.n_models)
    suppression, suppressed = expert_suppression(oracle_usage(table), usage)
    return {
        "table": table.name,
        "n_queries": table.n_queries,
        "lam": lam,
        "accuracy": routed.accuracy,
        "cost": routed.cost,
        "strongest_model": ref.strongest,
        "strongest_accuracy": ref.strongest_accuracy,
        "strongest_cost": ref.strongest_cost,
        "retained": ref.retained(routed.accuracy),
        "cost_reduction": ref.cost_reduction(routed.cost),
        "cheapest_model": ref.cheapest,
        "cheapest_accuracy": ref.cheapest_accuracy,
        "cheapest_cost": ref.cheapest_cost,
        "oracle_accuracy": ref.oracle_accuracy,
        "oracle_cost": ref.oracle_cost,
        "random_accuracy": ref.random_accuracy,
        "random_cost": ref.random_cost,
        "entropy": float(entropy(probs, axis=1).mean()) if probs is not None else 0.0,
        "usage": {m: float(u) for m, u in zip(table.models, usage, strict=True)},
        "expert_suppression": suppression,
        "suppressed_models": [table.models[k] for k in suppressed],
    }


def capability_for(config: TrainConfig) -> CapabilityEstimator:
    """The (unfitted) capability estimator that ``config`` describes."""
    return make_capability(
        config.capability,
        knn_k=config.knn_k,
        prior_strength=config.prior_strength,
        n_clusters=config.n_clusters,
        folds=config.capability_folds,
        seed=config.seed,
    )


def policy_for(config: TrainConfig, in_dim: int, n_models: int) -> RoutingPolicy:
    """The (untrained) routing policy that ``config`` describes."""
    return RoutingPolicy(
        in_dim,
        n_models,
        hidden=config.hidden,
        n_layers=config.n_layers,
        dropout=config.dropout,
        lam_min=config.lam_min,
        lam_max=config.lam_max,
    )
