"""Training configuration: one typed dataclass, every field documented, validated up front."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from entrorouter.errors import ConfigError, EntroRouterError

INITS = ("soft", "hard", "none")
POOLINGS = ("knob", "spend")
POLICY_INPUTS = ("embedding", "estimates", "embedding+estimates")
ESTIMATORS = ("exact", "grpo", "rloo")
CAPABILITY_PARTS = ("knn", "mlp", "logistic")
#: The largest λ a router accepts. Costs are scaled to about 1 and scores lie in [0, 1], so far
#: below this every router already routes to the cheapest model; far above it the policy's
#: float32 logits overflow and its probabilities turn to NaN.
LAM_CEILING = 1e6


#: Per annotation: what a value must be, and whether ``value`` is that.
_TYPES: dict[str, Any] = {
    "int": lambda v: ("an integer", isinstance(v, int) and not isinstance(v, bool)),
    "float": lambda v: ("a number", isinstance(v, int | float) and not isinstance(v, bool)),
    "str": lambda v: ("text", isinstance(v, str)),
    "bool": lambda v: ("true or false", isinstance(v, bool)),
}


def check_lam(lam: float | Sequence[float]) -> None:
    """Refuse a λ (or any of several) outside [0, LAM_CEILING]; NaN too."""
    values = np.asarray(lam, dtype=np.float64)
    if not ((values >= 0) & (values <= LAM_CEILING)).all():  # NaN fails both
        raise EntroRouterError(f"λ must be a number in [0, {LAM_CEILING:g}], got {lam!r}")


@dataclass
class TrainConfig:
    """Everything that shapes a trained router. Defaults are the recommended settings."""

    # --- features
    encoder: str = "minilm"
    """Query encoder: "minilm" (128 tokens, int8), "minilm-full" (the unmodified model),
    "minilm-onnx" (ONNX Runtime), "minilm-static" (a distilled token table: fastest, opt-in),
    "hashed-tfidf" or "st:<folder of a sentence-transformers model>"."""

    # --- trade-off
    lam: float | None = None
    """Default accuracy-cost trade-off λ used when a request does not set one (reward is
    score − λ·cost/C, C the strongest model's mean cost on the training data). None: the
    cheapest λ certified to keep ``target_retention`` (see :mod:`entrorouter.router.calibration`)."""
    target_retention: float = 0.983
    """With ``lam`` None: share of the strongest model's accuracy the default λ must keep."""
    calibration_folds: int = 5
    """K of the K-fold cross-fitting that measures the calibration curve (λ → out-of-fold
    retention and cost) on every training query; costs K more fits. 0: no curve (then
    ``lam`` must be given, and routing by target retention is unavailable)."""
    calibration_points: int = 160
    """Log-spaced λ of the calibration grid (besides λ = 0): the fineness of the knob."""
    calibration_pooling: str = "spend"
    """How the K fold routers' outcomes make one curve: "spend" (at equal predicted spend,
    which a fold router's drifting trade-off does not blur; see
    :mod:`entrorouter.router.calibration`) or "knob" (at the same λ). Alone, "spend" lifted the
    baselines' chosen points as much as EntroRouter's on validation
    (``benchmarks/results/fold_pooling.md``); with three policies it widened EntroRouter's lead
    on every dataset (``benchmarks/results/policy_seeds_spend*.md``), so both are the default."""
    risk_delta: float = 0.1
    """δ of the risk-control rule: the chosen λ keeps the target with probability ≥ 1 − δ."""
    future_queries: int | None = None
    """Size of the future query batch the guarantee speaks about; None: the expected
    retention on future traffic (see :mod:`entrorouter.router.calibration`)."""
    lam_max: float = 2.0
    """The policy is λ-conditioned: it trains on λ drawn from [0, lam_max] (log-uniform
    above lam_min, plus λ = 0), so one router serves every trade-off in that range."""
    lam_min: float = 1e-3
    """Smallest non-zero λ drawn in training; also the offset of the λ input feature."""

    # --- capability estimates and Soft Anchor
    capability: str = "knn+mlp+logistic"
    """Offline estimate of P(model solves query): "knn" (neighbours, Beta prior towards the
    model's accuracy on the query's cluster), "mlp" or "logistic" (per-model success
    predictors, cross-fitted and bagged), or several joined by "+" (their mean). Without the
    logistic part the chosen point on validation moved by +1.6 and +0.3 points (RouterBench,
    MMLU-Pro), no more than retraining moves it (``benchmarks/results/capability_knn_mlp.md``)."""
    knn_k: int = 32
    """Neighbours used by the kNN estimate."""
    prior_strength: float = 4.0
    """Pseudo-count of the Beta prior that pulls kNN estimates towards the cluster accuracy."""
    n_clusters: int = 16
    """k-means clusters of the training queries that give the kNN estimate its prior."""
    capability_folds: int = 5
    """Cross-fitting folds of the success predictors (a training query's estimate never uses
    its own outcome) when there is no calibration; with one, its folds are used instead."""
    anchor_temperature: float = 0.1
    """T_A in π_A(k|q) ∝ exp((â − λ·ĉ)/T_A). Lower is sharper. 0.05 and 0.2 were level in AIQ
    on validation and their chosen points saved no more (less on MMLU-Pro):
    ``benchmarks/results/anchor_temperature.md``."""
    anchor_temperature_end: float | None = None
    """A schedule for the anchor that RL's KL term holds the policy to: its temperature moves
    geometrically from ``anchor_temperature`` to this over the RL iterations (None: constant).
    Only the KL target moves; the residual base of the policy's logits keeps
    ``anchor_temperature``, which is what routing computes. Sharpening to 0.03 or softening to
    0.3 saved no more at the chosen point on validation (within 0.7 points on every dataset):
    ``benchmarks/results/anchor_temperature_schedule.md``."""

    # --- policy network
    hidden: int = 256
    """Width of the policy MLP."""
    n_layers: int = 2
    """Hidden layers of the policy MLP."""
    dropout: float = 0.1
    policy_input: str = "embedding+estimates"
    """What f_θ reads besides λ: "embedding", "estimates" (â and ĉ only: a low-variance
    correction of the anchor), or "embedding+estimates"."""
    anchor_residual: bool = True
    """Parameterise the policy around the anchor: logits = anchor logits + f_θ(q, λ), so
    training starts at the anchor and learns corrections."""
    policy_seeds: int = 3
    """Policies trained, from seeds seed, seed + 1000, seed + 2000, …, each with its own
    early-stopping split; routing averages their logits, which damps the seed-to-seed drift
    of a policy's trade-off, at that many times the policy's training time. Alone a small,
    mixed gain on validation (``benchmarks/results/policy_seeds.md``); with
    ``calibration_pooling = "spend"`` the chosen point's lead over the best baseline widened
    on all three public datasets (``benchmarks/results/policy_seeds_spend*.md``). Two saved less
    at the chosen point, five no more (``policy_seeds_two.md``, ``policy_seeds_five.md``)."""

    # --- stage 1: supervision
    init: str = "soft"
    """Stage-1 initialisation: "soft" (Soft Supervision), "hard" (one-hot cheapest correct
    model, for comparison) or "none" (RL from scratch)."""
    tau: float = 1.0
    """A model is suitable for a query when its score >= tau."""
    soft_temperature: float = 0.25
    """T_s: soft target ∝ 1[suitable]·exp(−cost/C / T_s); higher keeps more entropy."""
    soft_target_lam: bool = True
    """Temper the soft target's cost term by the λ the policy is trained for:
    ∝ 1[suitable]·exp(−λ·cost/C / T_s), the Boltzmann policy of the hindsight reward, so a
    λ-conditioned policy is supervised towards each λ's trade-off."""
    smoothing: float = 0.05
    """ε: share of the target spread uniformly over all models."""
    sft_epochs: int = 8
    sft_lr: float = 1e-3

    # --- stage 2: RL with the Soft Anchor
    estimator: str = "exact"
    """"exact" (sum over the K models, no sampling variance), "grpo" or "rloo" (G samples per
    query, group-relative advantages)."""
    rl_iterations: int = 30
    """Policy-improvement iterations; each snapshots π_old and runs update_epochs over the data."""
    update_epochs: int = 2
    """Passes over the data per iteration (stopped early by the trust region)."""
    group_size: int = 8
    """G: samples per query for the sampled estimators."""
    clip_low: float = 0.2
    """ε_low of the PPO clip range [1 − ε_low, 1 + ε_high]."""
    clip_high: float = 0.28
    """ε_high; larger than ε_low ("clip-higher") so rare experts can still gain mass."""
    target_kl: float = 0.03
    """Trust region: stop an iteration's updates once approx-KL(π_old ‖ π_θ) exceeds this."""
    beta_start: float = 0.2
    """Anchor weight β_t at the start of RL (KL(π_θ ‖ π_A) penalty)."""
    beta_end: float = 0.02
    """Anchor weight at the end; β_t decays geometrically in between, or linearly when this is
    0. Both 0 leave the anchor out of RL (the ``soft_sft_rl_no_anchor`` ablation)."""
    entropy_start: float | None = 0.6
    """Target entropy at the start of RL as a fraction of log K; None disables the
    SAC-style entropy multiplier."""
    entropy_floor: float = 0.15
    """Target entropy at the end, as a fraction of log K (linear decay in between). In the
    public data's fixed-split fits the policy's entropy in RL never fell below 0.3·log K, so
    the floor rarely binds: 0.05 and 0.3 routed alike on validation
    (``benchmarks/results/entropy_floor.md``)."""
    alpha_lr: float = 0.05
    """Step size of the entropy multiplier α (updated in log space)."""
    rl_lr: float = 3e-4
    batch_size: int | None = None
    """Rows per optimiser step; None: n/16 clipped to [64, 512], so small tables still get
    enough steps per epoch."""
    weight_decay: float = 1e-4

    # --- validation
    val_fraction: float = 0.2
    """Share of the training table held out for early stopping and diagnostics."""
    patience: int = 6
    """RL iterations without validation improvement before stopping."""
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self._check_types()

        def need(ok: bool, field: str, expected: str) -> None:
            if not ok:
                raise ConfigError(f"config field {field!r}: expected {expected}, got {getattr(self, field)!r}")

        need(self.init in INITS, "init", f"one of {INITS}")
        need(self.policy_input in POLICY_INPUTS, "policy_input", f"one of {POLICY_INPUTS}")
        need(self.estimator in ESTIMATORS, "estimator", f"one of {ESTIMATORS}")
        parts = self.capability.split("+")
        need(
            bool(parts) and set(parts) <= set(CAPABILITY_PARTS) and len(set(parts)) == len(parts),
            "capability",
            f"one or more of {CAPABILITY_PARTS} joined by '+'",
        )
        need(self.lam is None or 0 <= self.lam <= LAM_CEILING, "lam", f"None or a number in [0, {LAM_CEILING:g}]")
        need(0 < self.target_retention <= 1.5, "target_retention", "a fraction such as 0.983")
        need(self.calibration_folds == 0 or self.calibration_folds >= 2, "calibration_folds", "0 or an integer >= 2")
        need(self.calibration_folds or self.lam is not None, "calibration_folds", "> 0 when lam is None")
        need(0 < self.risk_delta < 1, "risk_delta", "a number in (0, 1)")
        need(self.calibration_pooling in POOLINGS, "calibration_pooling", f"one of {POOLINGS}")
        need(self.future_queries is None or self.future_queries >= 1, "future_queries", "None or an integer >= 1")
        need(
            0 < self.lam_min < self.lam_max <= LAM_CEILING,
            "lam_max",
            f"a number above lam_min, at most {LAM_CEILING:g}",
        )
        for name in (
            "anchor_temperature",
            "soft_temperature",
            "sft_lr",
            "rl_lr",
            "prior_strength",
            "target_kl",
        ):
            need(getattr(self, name) > 0, name, "a number > 0")
        need(
            self.anchor_temperature_end is None or self.anchor_temperature_end > 0,
            "anchor_temperature_end",
            "None or a number > 0",
        )
        need(self.batch_size is None or self.batch_size >= 1, "batch_size", "None or an integer >= 1")
        for name in ("knn_k", "hidden", "n_layers", "group_size", "n_clusters", "calibration_points", "policy_seeds"):
            need(int(getattr(self, name)) >= 1, name, "an integer >= 1")
        need(self.capability_folds >= 2, "capability_folds", "an integer >= 2")
        need(0 <= self.smoothing < 1, "smoothing", "a number in [0, 1)")
        need(0 <= self.dropout < 1, "dropout", "a number in [0, 1)")
        need(0 < self.val_fraction < 1, "val_fraction", "a number in (0, 1)")
        need(
            0 < self.clip_low < 1 and self.clip_high > 0,
            "clip_low",
            "0 < clip_low < 1 and clip_high > 0",
        )
        need(
            self.estimator == "exact" or self.group_size >= 2,
            "group_size",
            f"an integer >= 2 with estimator {self.estimator!r} (its advantages compare a query's samples)",
        )
        need(self.beta_start >= 0 and self.beta_end >= 0, "beta_start", "non-negative anchor weights")
        need(
            self.beta_start > 0 or self.beta_end == 0,
            "beta_end",
            "0 when beta_start is 0 (β_t decays from beta_start; set both to 0 to leave the anchor out)",
        )
        need(
            self.entropy_start is None or 0 < self.entropy_start <= 1,
            "entropy_start",
            "None or a fraction in (0, 1]",
        )
        need(0 <= self.entropy_floor <= 1, "entropy_floor", "a fraction in [0, 1]")
        for name in ("sft_epochs", "rl_iterations", "update_epochs", "patience"):
            need(int(getattr(self, name)) >= 0, name, "an integer >= 0")

    def _check_types(self) -> None:
        """Each field's value against its annotation ("int", "float | None", ...): a float field
        takes an int, and no number field takes true/false."""
        for field in fields(self):
            value = getattr(self, field.name)
            kind, _, optional = str(field.type).partition(" | ")
            if value is None and optional == "None":
                continue
            expected, ok = _TYPES[kind](value)
            if not ok:
                expected += " or null" if optional == "None" else ""
                raise ConfigError(f"config field {field.name!r}: expected {expected}, got {value!r}")

    # --- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> TrainConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}; see TrainConfig for the valid ones")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """From a JSON or YAML file of field: value pairs."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: {'a folder, not a config file' if path.is_dir() else 'no such file'}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the file ({exc})") from None
        if path.suffix.lower() in {".yaml", ".yml"}:
            from entrorouter.backends import load_yaml

            raw = load_yaml(path)
        else:
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected an object of TrainConfig fields")
        return cls.from_dict(raw, source=str(path))
