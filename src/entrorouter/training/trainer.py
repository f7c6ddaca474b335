"""Stage 1 (Soft Supervision) and stage 2 (RL with the Soft Anchor) on prepared tensors.

Notation (DESIGN §3): reward r(q, k) = score − λ·c̃ with c̃ = cost / C; a missing outcome's
reward is the capability estimate â − λ·ĉ (a prediction, as at routing time). π_A is the
Soft Anchor, π_old the policy at the start of an RL iteration.

Stage 2 maximises, per iteration, the PPO surrogate with an asymmetric clip
``E_{k~π_old}[min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A)] − β_t·KL(π_θ‖π_A) + α·H(π_θ)``:

* ``exact``: the expectation over k is a sum over the K models, A = r − E_{π_old}[r];
* ``grpo`` / ``rloo``: G models sampled from π_old per query, group-relative advantages.

β_t decays geometrically (:func:`anchor_weight`; and, with ``anchor_temperature_end``, so
does the temperature of the π_A in the KL term); α is a SAC-style multiplier that keeps the
policy entropy near a target decaying from ``entropy_start·log K`` to ``entropy_floor·log K``,
so entropy contracts gradually. An iteration stops early once KL(π_old‖π_θ) > ``target_kl`` (the
trust region), and the weights kept are those with the best validation reward.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from entrorouter.evaluation.metrics import expert_suppression
from entrorouter.policy.mlp import RoutingPolicy, adamw
from entrorouter.policy.weights import anchor_logits, policy_input
from entrorouter.router.config import TrainConfig

LogFn = Callable[[dict[str, Any]], None]


@dataclass
class RoutingData:
    """The tensors describing a set of queries: features, outcomes and estimates."""

    features: torch.Tensor  # (n, d) query embeddings
    scores: torch.Tensor  # (n, K) realised scores, NaN = missing
    cost: torch.Tensor  # (n, K) realised cost / C, NaN = missing
    capability: torch.Tensor  # (n, K) â, out-of-fold for training rows
    cost_pred: torch.Tensor  # (n, K) predicted cost / C (what routing sees)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def observed(self) -> torch.Tensor:
        return ~torch.isnan(self.scores)

    def subset(self, rows: torch.Tensor) -> RoutingData:
        return RoutingData(*(t[rows] for t in (self.features, self.scores, self.cost, self.capability, self.cost_pred)))

    def rewards(self, lam: torch.Tensor) -> torch.Tensor:
        """(n, K) reward at per-row λ; missing outcomes use the capability estimate."""
        realised = self.scores - lam[:, None] * self.cost
        predicted = self.capability - lam[:, None] * self.cost_pred
        return torch.where(self.observed, realised, predicted)


# ------------------------------------------------------------------ targets
def soft_targets(
    data: RoutingData, *, tau: float, temperature: float, smoothing: float, lam: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft Supervision target p*(k|q) ∝ 1[score ≥ τ]·exp(−c̃/T_s), ε-smoothed.

    With per-row ``lam`` the cost term is λ·c̃ (the λ-tempered variant). A query nobody
    solves gets p* ∝ exp(−c̃/T_s) over its observed models: cheap models, since paying
    for a wrong answer is the worst outcome. Missing outcomes get only the ε share.
    """
    observed = data.observed
    cost = torch.nan_to_num(data.cost, nan=0.0)
    weight = torch.exp(-cost / temperature) * observed
    scaled = weight if lam is None else torch.exp(-lam[:, None] * cost / temperature) * observed
    suitable = observed & (torch.nan_to_num(data.scores, nan=-1.0) >= tau)
    solved = suitable.any(dim=1, keepdim=True)
    target = torch.where(solved, scaled * suitable, weight)
    target = target / target.sum(dim=1, keepdim=True)
    return (1 - smoothing) * target + smoothing / target.shape[1]


def hard_targets(data: RoutingData, *, tau: float) -> torch.Tensor:
    """One-hot on the cheapest suitable model (the cheapest observed one if none is)."""
    observed = data.observed
    suitable = observed & (torch.nan_to_num(data.scores, nan=-1.0) >= tau)
    candidates = torch.where(suitable.any(dim=1, keepdim=True), suitable, observed)
    cost = torch.where(candidates, torch.nan_to_num(data.cost, nan=0.0), torch.full_like(data.cost, math.inf))
    return F.one_hot(cost.argmin(dim=1), data.scores.shape[1]).float()


# ------------------------------------------------------------ diagnostics
def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Per-row entropy (nats) from log-probabilities."""
    return -(logp.exp() * logp).sum(dim=-1)


def kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Per-row KL(p ‖ q) from log-probabilities."""
    return (logp.exp() * (logp - logq)).sum(dim=-1)


def anchor_weight(config: TrainConfig, progress: float) -> float:
    """β_t, the weight of RL's KL term, at ``progress`` ∈ [0, 1] of the RL iterations:
    geometric from ``beta_start`` to ``beta_end``, or linear to 0 when ``beta_end`` is 0
    (a geometric schedule cannot reach 0); both 0 leave the anchor out of RL."""
    start, end = config.beta_start, config.beta_end
    return start * (1 - progress) if end == 0 else start * (end / start) ** progress


def kl_anchor_temperature(config: TrainConfig, progress: float) -> float:
    """T_A of the anchor in RL's KL term at ``progress`` ∈ [0, 1] of the RL iterations:
    geometric from ``anchor_temperature`` to ``anchor_temperature_end`` (constant if None)."""
    end = config.anchor_temperature_end
    start = config.anchor_temperature
    return start if end is None else start * (end / start) ** progress


def route_first_observed(logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Index of the best-ranked model that has an outcome (the evaluation's fallback rule)."""
    masked = torch.where(observed, logits, torch.full_like(logits, -math.inf))
    return masked.argmax(dim=1)


class Trainer:
    """Trains a :class:`RoutingPolicy`; every optimiser step is logged through ``log``.

    Without a ``log`` nothing is logged and the per-step validation diagnostics are not
    computed (a forward pass over the validation rows at every step: 40% of the policy's
    training time in a profile of one RouteLLM resplit); the trained weights are the same
    either way. The cross-fitting's fold routers train this way: nobody reads their logs.
    """

    def __init__(
        self,
        policy: RoutingPolicy,
        config: TrainConfig,
        train: RoutingData,
        val: RoutingData,
        *,
        model_names: Sequence[str],
        default_lam: float,
        val_oracle_share: np.ndarray,
        log: LogFn | None = None,
        progress: bool = False,
    ) -> None:
        self.policy, self.config, self.train, self.val = policy, config, train, val
        self.model_names = list(model_names)
        self.default_lam = default_lam  # the λ at which usage diagnostics are logged
        self.val_oracle_share = val_oracle_share
        self.log = log
        self.progress = progress
        self.generator = torch.Generator().manual_seed(config.seed)
        self.batch_size = config.batch_size or int(np.clip(len(train) // 16, 64, 512))
        self.step = 0
        self.val_lams = torch.tensor([0.0, *np.geomspace(3 * config.lam_min, config.lam_max, 10)], dtype=torch.float32)
        self.best_score = -math.inf
        self.best_state: dict[str, torch.Tensor] = copy.deepcopy(policy.state_dict())

    # ------------------------------------------------------------ helpers
    def sample_lams(self, n: int) -> torch.Tensor:
        """λ per row: 0 with probability 0.1, else log-uniform in [lam_min, lam_max]."""
        c = self.config
        u = torch.rand(n, generator=self.generator)
        log_lam = math.log(c.lam_min) + u * (math.log(c.lam_max) - math.log(c.lam_min))
        zero = torch.rand(n, generator=self.generator) < 0.1
        return torch.where(zero, torch.zeros(n), log_lam.exp())

    def anchor(self, data: RoutingData, lam: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """π_A's logits; ``temperature`` defaults to ``anchor_temperature`` (what routing uses)."""
        return anchor_logits(data.capability, data.cost_pred, lam, temperature or self.config.anchor_temperature)

    def logits(self, data: RoutingData, lam: torch.Tensor, first_layer: torch.Tensor | None = None) -> torch.Tensor:
        """The policy's logits; ``first_layer`` may pass :meth:`first_layer` of ``data``."""
        anchor = self.anchor(data, lam) if self.config.anchor_residual else None
        if first_layer is None:
            return self.policy(self.policy_input(data), lam, anchor)
        return self.policy.logits_from(first_layer, lam, anchor)

    def policy_input(self, data: RoutingData) -> torch.Tensor:
        return policy_input(data.features, data.capability, data.cost_pred, self.config.policy_input)

    def batches(self, n: int) -> list[torch.Tensor]:
        return list(torch.randperm(n, generator=self.generator).split(self.batch_size))

    @torch.no_grad()
    def val_reward(self) -> float:
        """Mean validation reward of greedy routing over a λ grid: the early-stopping score."""
        self.policy.eval()
        data, n = self.val, len(self.val)
        first_layer = self.policy.first_layer(self.policy_input(data))  # shared by every λ
        rewards = []
        for lam_value in self.val_lams:
            lam = torch.full((n,), float(lam_value))
            choice = route_first_observed(self.logits(data, lam, first_layer), data.observed)
            rewards.append(float(data.rewards(lam).gather(1, choice[:, None]).mean()))
        self.policy.train()
        return float(np.mean(rewards))

    @torch.no_grad()
    def diagnostics(self) -> dict[str, Any]:
        """Usage of the validation queries at ``default_lam``: shares, entropies, suppression."""
        self.policy.eval()
        n = len(self.val)
        logp = F.log_softmax(self.logits(self.val, torch.full((n,), self.default_lam)), dim=1)
        self.policy.train()
        choice = route_first_observed(logp, self.val.observed)
        usage = np.bincount(choice.numpy(), minlength=len(self.model_names)) / n
        marginal = logp.exp().mean(dim=0)
        share, suppressed = expert_suppression(self.val_oracle_share, usage)
        return {
            "val_entropy": float(entropy(logp).mean()),
            "usage_entropy": float(-(marginal * marginal.clamp_min(1e-12).log()).sum()),
            "usage": {m: round(float(u), 4) for m, u in zip(self.model_names, usage, strict=True)},
            "suppression": share,
            "suppressed": [self.model_names[k] for k in suppressed],
        }

    def record(self, stage: str, metrics: dict[str, Any]) -> None:
        self.step += 1
        if self.log is not None:
            self.log({"stage": stage, "step": self.step, **metrics, **self.diagnostics()})

    def keep_if_best(self, stage: str) -> bool:
        """Validate; keep the weights if they are the best so far (logged as an event)."""
        score = self.val_reward()
        improved = score > self.best_score + 1e-6
        if improved:
            self.best_score, self.best_state = score, copy.deepcopy(self.policy.state_dict())
        if self.log is not None:
            self.log({"stage": stage, "event": "validation", "step": self.step, "val_reward": score, "best": improved})
        self.bar.set_postfix(val_reward=f"{score:.4f}", best=f"{self.best_score:.4f}")
        return improved

    # ------------------------------------------------------------ training
    def fit(self) -> RoutingPolicy:
        c = self.config
        torch.manual_seed(c.seed)
        self.policy.train()
        steps_per_pass = math.ceil(len(self.train) / self.batch_size)
        total = steps_per_pass * ((c.sft_epochs if c.init != "none" else 0) + c.rl_iterations * c.update_epochs)
        with tqdm(total=total, disable=not self.progress, desc="training", unit="step", leave=False) as bar:
            self.bar = bar
            self.keep_if_best("init")
            if c.init != "none":
                self.supervise()
            if c.rl_iterations:
                self.reinforce()
        self.policy.load_state_dict(self.best_state)
        self.policy.eval()
        return self.policy

    def supervise(self) -> None:
        """Stage 1: cross-entropy to soft (or hard) targets, at random λ."""
        c = self.config
        hard = hard_targets(self.train, tau=c.tau) if c.init == "hard" else None
        optimizer = adamw(self.policy.parameters(), lr=c.sft_lr, weight_decay=c.weight_decay)
        for epoch in range(c.sft_epochs):
            for rows in self.batches(len(self.train)):
                batch = self.train.subset(rows)
                lam = self.sample_lams(len(rows))
                logp = F.log_softmax(self.logits(batch, lam), dim=1)
                if hard is not None:
                    targets = hard[rows]
                else:
                    targets = soft_targets(
                        batch,
                        tau=c.tau,
                        temperature=c.soft_temperature,
                        smoothing=c.smoothing,
                        lam=lam if c.soft_target_lam else None,
                    )
                loss = -(targets * logp).sum(dim=1).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                metrics: dict[str, Any] = {"epoch": epoch, "loss": float(loss.detach())}
                if self.log is not None:  # nothing else needs these: computed only to be logged
                    with torch.no_grad():
                        anchor_logp = F.log_softmax(self.anchor(batch, lam), dim=1)
                        metrics |= {
                            "entropy": float(entropy(logp).mean()),
                            "kl_anchor": float(kl(logp, anchor_logp).mean()),
                        }
                self.record("sft", metrics)
                self.bar.update()
            self.keep_if_best("sft")

    def reinforce(self) -> None:
        """Stage 2: clipped policy optimisation held by the Soft Anchor (see module docstring)."""
        c = self.config
        n_models = self.train.scores.shape[1]
        optimizer = adamw(self.policy.parameters(), lr=c.rl_lr, weight_decay=c.weight_decay)
        log_alpha = math.log(1e-3)
        stale = 0
        for iteration in range(c.rl_iterations):
            progress = iteration / max(c.rl_iterations - 1, 1)
            beta = anchor_weight(c, progress)
            anchor_temperature = kl_anchor_temperature(c, progress)
            target_entropy = None
            if c.entropy_start is not None:
                frac = c.entropy_start + (c.entropy_floor - c.entropy_start) * progress
                target_entropy = frac * math.log(n_models)

            # Snapshot π_old (and, for the sampled estimators, its G samples per query).
            lam = self.sample_lams(len(self.train))
            with torch.no_grad():
                self.policy.eval()
                old_logp = F.log_softmax(self.logits(self.train, lam), dim=1)
                self.policy.train()
                rewards = self.train.rewards(lam)
                anchor_logp = F.log_softmax(self.anchor(self.train, lam, anchor_temperature), dim=1)
                if c.estimator == "exact":
                    advantages = rewards - (old_logp.exp() * rewards).sum(dim=1, keepdim=True)
                    actions = None
                else:
                    actions = torch.multinomial(
                        old_logp.exp(), c.group_size, replacement=True, generator=self.generator
                    )
                    group = rewards.gather(1, actions)
                    if c.estimator == "grpo":
                        advantages = (group - group.mean(1, keepdim=True)) / (group.std(1, keepdim=True) + 1e-4)
                    else:  # rloo: leave-one-out baseline
                        advantages = group - (group.sum(1, keepdim=True) - group) / (c.group_size - 1)

            stop = False
            for _ in range(c.update_epochs):
                for rows in self.batches(len(self.train)):
                    logp = F.log_softmax(self.logits(self.train.subset(rows), lam[rows]), dim=1)
                    pg_loss, clip_frac = self.surrogate(
                        logp,
                        old_logp[rows],
                        advantages[rows],
                        None if actions is None else actions[rows],
                    )
                    kl_anchor = kl(logp, anchor_logp[rows]).mean()
                    ent = entropy(logp).mean()
                    alpha = math.exp(log_alpha) if target_entropy is not None else 0.0
                    loss = pg_loss + beta * kl_anchor - alpha * ent
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    with torch.no_grad():
                        kl_prev = float(kl(old_logp[rows], logp).mean())
                    if target_entropy is not None:
                        # SAC-style dual step: α grows while entropy is below its target.
                        log_alpha = min(0.0, log_alpha + c.alpha_lr * (target_entropy - float(ent.detach())))
                    self.record(
                        "rl",
                        {
                            "iteration": iteration,
                            "loss": float(loss.detach()),
                            "pg_loss": float(pg_loss.detach()),
                            "entropy": float(ent.detach()),
                            "kl_anchor": float(kl_anchor.detach()),
                            "kl_prev": kl_prev,
                            "clip_frac": clip_frac,
                            "beta": beta,
                            "anchor_temperature": anchor_temperature,
                            "alpha": alpha,
                            "target_entropy": target_entropy,
                        },
                    )
                    self.bar.update()
                    if kl_prev > c.target_kl:
                        stop = True  # trust region reached: end this iteration
                        break
                if stop:
                    break
            stale = 0 if self.keep_if_best("rl") else stale + 1
            if stale >= c.patience:
                break

    def surrogate(
        self,
        logp: torch.Tensor,
        old_logp: torch.Tensor,
        advantages: torch.Tensor,
        actions: torch.Tensor | None,
    ) -> tuple[torch.Tensor, float]:
        """Negative clipped surrogate and the fraction of clipped probability mass/samples."""
        c = self.config
        if actions is None:  # exact: expectation over k ~ π_old as a weighted sum
            weight = old_logp.exp()
            ratio = (logp - old_logp).exp()
        else:
            weight = torch.full(actions.shape, 1.0 / actions.shape[1])
            ratio = (logp.gather(1, actions) - old_logp.gather(1, actions)).exp()
        clipped = ratio.clamp(1 - c.clip_low, 1 + c.clip_high)
        objective = torch.minimum(ratio * advantages, clipped * advantages)
        outside = ((ratio < 1 - c.clip_low) | (ratio > 1 + c.clip_high)).float()
        clip_frac = float((weight * outside).sum(dim=1).mean())
        return -(weight * objective).sum(dim=1).mean(), clip_frac
