"""The EntroRouter estimator: ``fit`` on an outcome table, ``route`` queries, ``save``/``load``.

>>> router = Router(TrainConfig(encoder="hashed-tfidf")).fit(table)      # doctest: +SKIP
>>> router.route(["What is 2 + 2?"], lam=0.05)[0].model                  # doctest: +SKIP
>>> router.save("my-router"); Router.load("my-router")                   # doctest: +SKIP

A saved router is a directory: ``config.json`` (format version, model pool, cost scale,
encoder, λ, calibration curve, training config), ``weights.safetensors`` (policy,
capability estimator, cost predictor, encoder statistics, hashes of the training queries)
and ``training_log.jsonl``. Nothing is pickled, so loading a router from someone else
cannot run code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entrorouter import __version__
from entrorouter.data.atomic import atomic_path, write_text_atomic
from entrorouter.data.cost import CostPredictor
from entrorouter.errors import EntroRouterError
from entrorouter.features.cache import EmbeddingCache, key_array, text_key
from entrorouter.features.encoders import Encoder, encoder_from_state
from entrorouter.numeric import softmax
from entrorouter.policy.weights import PolicyEnsemble, anchor_logits, policy_input
from entrorouter.router.calibration import Calibration
from entrorouter.router.capability import CapabilityEstimator, FoldPlan, make_capability
from entrorouter.router.config import TrainConfig, check_lam

if TYPE_CHECKING:
    from entrorouter.data.table import OutcomeTable

FORMAT = "entrorouter-router"
FORMAT_VERSION = 3  # 2: calibration curve and training-query hashes; 3: policy members (policy.<j>.…)
LONE_POLICY_VERSION = 2  # still read: its one policy (policy.…) is member 0
#: Settings whose default has changed: a saved train_config without one was trained with the old value.
FORMER_DEFAULTS = {"policy_seeds": 1, "calibration_pooling": "knob"}
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
    embeddings, capability estimates â and predicted cost ĉ / C (no realised outcome); and
    the part of the policy's first layer that reads them, which every λ shares
    (:meth:`PolicyEnsemble.first_layer`), so routing at many λ computes it once."""

    features: np.ndarray
    capability: np.ndarray
    cost: np.ndarray
    policy_first_layer: np.ndarray


class Router:
    """Entropy-regulated single-round router (Soft Supervision + Soft-Anchor RL)."""

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config = config or TrainConfig()
        self.models: tuple[str, ...] = ()
        self.cost_scale = 1.0
        self.encoder: Encoder | None = None
        self.cost_predictor: CostPredictor | None = None
        self.capability: CapabilityEstimator | None = None
        self.policy: PolicyEnsemble | None = None
        self.training_log: list[dict[str, Any]] = []
        self.trained_on: dict[str, Any] = {}
        self.default_lam: float = self.config.lam if self.config.lam is not None else 0.0
        #: λ → out-of-fold retention and cost (K-fold cross-fitting at training time), used to
        #: turn a retention target into a λ; None when trained without it.
        self.calibration: Calibration | None = None
        #: Hashes (features.cache.text_key) of the training queries' texts, so an evaluation
        #: on training rows can be recognised.
        self.trained_query_keys: frozenset[bytes] = frozenset()
        #: Disk cache for embeddings; training sets one, a loaded router has none (so a
        #: serving router never writes request texts to disk) unless the caller assigns it.
        self.cache: EmbeddingCache | None = None

    # ------------------------------------------------------------- properties
    @property
    def lam(self) -> float:
        """The default trade-off λ used when a call does not pass one."""
        return self.default_lam

    def check_fitted(self) -> None:
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
        self.check_fitted()
        capability = self.capability.predict(features)
        cost = self.cost_predictor.predict(list(texts)) / self.cost_scale
        x = policy_input(
            *(np.asarray(a, dtype=np.float32) for a in (features, capability, cost)), self.config.policy_input
        )
        return RoutingInputs(features, capability, cost, self.policy.first_layer(x))

    # ------------------------------------------------------------------- fit
    def fit(
        self,
        table: OutcomeTable,
        *,
        features: np.ndarray | None = None,
        progress: bool = False,
        cache: EmbeddingCache | None = None,
        fold_plan: FoldPlan | None = None,
        log_training: bool = True,
    ) -> Router:
        """Train on every row of ``table`` (see :func:`entrorouter.training.fit.fit_router`).

        ``features`` may pass precomputed embeddings of ``table.queries`` (same encoder).
        Training lives in :mod:`entrorouter.training`, imported here on first use only, so
        loading and routing never import it.
        """
        from entrorouter.training.fit import fit_router

        return fit_router(
            self,
            table,
            features=features,
            progress=progress,
            cache=cache,
            fold_plan=fold_plan,
            log_training=log_training,
        )

    # ----------------------------------------------------------------- route
    def probabilities(self, inputs: RoutingInputs, lam: float | Sequence[float] | None = None) -> np.ndarray:
        """(n, K) routing distribution π(k | q, λ); ``lam`` is one λ or one per query.

        Computed in NumPy (:mod:`entrorouter.numeric` says why)."""
        lam = self.lam if lam is None else lam
        check_lam(lam)
        lam_values = np.broadcast_to(np.asarray(lam, dtype=np.float64), (len(inputs.features),))
        lam32 = lam_values.astype(np.float32)
        anchor = (
            anchor_logits(
                np.asarray(inputs.capability, dtype=np.float32),
                np.asarray(inputs.cost, dtype=np.float32),
                lam32,
                self.config.anchor_temperature,
            )
            if self.config.anchor_residual
            else None
        )
        return softmax(self.policy.logits_from(inputs.policy_first_layer, lam32, anchor))

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

    def lam_for(self, lam: float | None = None, target_retention: float | None = None) -> float:
        """The λ a call asks for: ``target_retention`` through the calibration curve (the
        cheapest λ certified to keep that share of the strongest model's accuracy), else
        ``lam``, else the router's default. Asking for both is an error."""
        if target_retention is None:
            if lam is None:
                return self.lam
            check_lam(lam)
            return float(lam)
        if lam is not None:
            raise EntroRouterError("give either a λ or a target retention, not both")
        if self.calibration is None:
            raise EntroRouterError(
                "this router has no calibration curve (trained with calibration_folds = 0): route with a λ instead"
            )
        return self.calibration.lam_for(target_retention)

    def route(
        self,
        queries: str | Sequence[str],
        lam: float | Sequence[float] | None = None,
        *,
        target_retention: float | None = None,
        cost_weight: float = 0.0,
    ) -> list[RouteResult]:
        """Route queries: chosen model, full ranking (fallback order) and probabilities.

        ``lam`` is the trade-off λ: one value, one per query, or None for the router's default;
        ``target_retention`` (e.g. 0.98) asks for a share of the strongest model's accuracy instead.
        """
        self.check_fitted()
        if target_retention is not None:
            lam = self.lam_for(lam, target_retention)
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

    def evaluate(
        self,
        table: OutcomeTable,
        lam: float | None = None,
        *,
        target_retention: float | None = None,
        features: np.ndarray | None = None,
        cost_weight: float = 0.0,
    ) -> dict[str, Any]:
        """Accuracy, cost, retention and usage on ``table`` (see
        :func:`entrorouter.evaluation.evaluate.evaluate_router`, imported on first use)."""
        from entrorouter.evaluation.evaluate import evaluate_router

        return evaluate_router(
            self, table, self.lam_for(lam, target_retention), features=features, cost_weight=cost_weight
        ) | {"target_retention": target_retention}

    def trained_on_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) whether each text was a training query of this router (by hash of its text)."""
        keys = [text_key(str(t)) for t in texts]
        return np.array([k in self.trained_query_keys for k in keys], dtype=bool)

    # ------------------------------------------------------------ save/load
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the router directory (each file atomically)."""
        from safetensors.numpy import save_file

        self.check_fitted()
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
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
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
            "policy": self.policy.tensors(),
            "capability": self.capability.tensors(),
            "cost": self.cost_predictor.tensors(),
            "encoder": self.encoder.state()[1],
            "train": {"query_keys": key_array(sorted(self.trained_query_keys))},
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
        if version not in (LONE_POLICY_VERSION, FORMAT_VERSION):
            raise EntroRouterError(
                f"{config_path}: router format version {version!r}; this entrorouter {__version__} reads versions "
                f"{LONE_POLICY_VERSION} and {FORMAT_VERSION} (retrain the router or install a matching entrorouter)"
            )
        try:
            models = tuple(config["models"])
            train_config = TrainConfig.from_dict({**FORMER_DEFAULTS, **config["train_config"]}, source=str(config_path))
            cost_scale = float(config["cost_scale"])
            expected_shapes = {as_member_0(k, version): tuple(v) for k, v in config["tensors"].items()}
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
            tensors = {as_member_0(k, version): v for k, v in load_file(str(weights_path)).items()}
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
        if config.get("calibration") is not None:
            router.calibration = Calibration.from_dict(config["calibration"], source=str(config_path))
        router.trained_query_keys = frozenset(bytes(row) for row in part("train")["query_keys"])
        router.encoder = encoder_from_state(config["encoder"], part("encoder"))
        router.cost_predictor = CostPredictor.from_tensors(part("cost"))
        router.capability = capability_for(train_config)
        router.capability.load_tensors(part("capability"))
        try:
            policy = PolicyEnsemble.from_tensors(
                part("policy"), lam_min=train_config.lam_min, lam_max=train_config.lam_max
            )
        except ValueError as exc:
            raise EntroRouterError(f"{weights_path}: policy weights do not fit the policy ({exc})") from None
        widths = [w.shape[0] for w, _ in policy.members[0].layers]
        expected_widths = [train_config.hidden] * train_config.n_layers
        if (
            widths != expected_widths
            or policy.in_dim != policy_meta["in_dim"]
            or len(policy.members) != train_config.policy_seeds
        ):
            raise EntroRouterError(
                f"{weights_path}: policy weights do not fit the policy ({len(policy.members)} member(s) of hidden "
                f"widths {widths} reading {policy.in_dim} inputs; config.json says {train_config.policy_seeds} of "
                f"{expected_widths} reading {policy_meta['in_dim']})"
            )
        if policy.n_models != len(models) or router.cost_predictor.intercept.shape != (len(models),):
            raise EntroRouterError(f"{weights_path}: weights are for a pool of another size than {len(models)} models")
        router.policy = policy
        log_path = path / LOG_FILE
        if log_path.exists():
            router.training_log = [
                json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line
            ]
        return router


def as_member_0(tensor_name: str, version: int) -> str:
    """A tensor's name in the current format: version 2's lone policy becomes member 0."""
    if version == LONE_POLICY_VERSION and tensor_name.startswith("policy."):
        return "policy.0." + tensor_name.removeprefix("policy.")
    return tensor_name


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
