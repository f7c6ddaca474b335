"""End-to-end training of the query encoder (DESIGN §3.6 b): the encoder learns to route.

The default router trains a head on frozen MiniLM vectors. Here the encoder itself (LoRA
adapters on its last layers, :mod:`entrorouter.features.finetuned`) is trained together
with a temporary routing head, by the same two stages as the router:

1. Soft Supervision — cross-entropy to :func:`~entrorouter.training.trainer.soft_targets`
   at random λ;
2. RL with the Soft Anchor — the *exact* estimator: the expected reward
   ``Σ_k π_θ(k|q)·A(q,k)``, ``A = r − E_π[r]``, plus ``β_t·KL(π_θ ‖ π_A)``. Every step
   snapshots π_old = π_θ, where the trainer's clipped surrogate equals this sum (the clip
   cannot bind at ratio 1), so no ratio is needed.

The anchor's capability estimates are a leave-one-out kNN on the encoder's vectors before
fine-tuning, so they stay fixed while the encoder moves. The head then is thrown away: the
router trains its own policy on the fine-tuned (from then on frozen) vectors. The adapters
kept are those of the epoch whose validation reward (greedy routing of held-out queries
over a λ grid, as the trainer's) is best; the run stops cleanly, after the current step,
when its time budget ``max_seconds`` is spent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from entrorouter.data.cost import CostPredictor
from entrorouter.data.table import OutcomeTable
from entrorouter.errors import ConfigError
from entrorouter.policy.mlp import RoutingPolicy
from entrorouter.policy.weights import anchor_logits
from entrorouter.router.capability import KnnCapability
from entrorouter.router.config import TrainConfig
from entrorouter.training.nets import as_float_tensor
from entrorouter.training.trainer import (
    RoutingData,
    anchor_weight,
    entropy,
    kl,
    kl_anchor_temperature,
    route_first_observed,
    soft_targets,
)

if TYPE_CHECKING:
    from entrorouter.features.finetuned import FineTunedMiniLMEncoder

LogFn = Callable[[dict[str, Any]], None]


@dataclass
class BackboneConfig:
    """How the ``minilm-ft`` encoder is shaped and fine-tuned.

    Set in the encoder name: ``minilm-ft:max_seconds=600,lora_rank=4``.
    """

    max_tokens: int = 128
    """Tokens of a query the encoder reads (training and routing)."""
    lora_rank: int = 8
    """Rank of the LoRA adapters (on query, key, value and dense layers)."""
    lora_layers: int = 2
    """Adapters go into the last ``lora_layers`` of MiniLM's 6 layers; lower layers stay
    frozen, so backpropagation stops there (the cost of a step is mostly one forward pass)."""
    sft_epochs: int = 2
    """Passes of Soft Supervision over the training queries."""
    rl_epochs: int = 2
    """Passes of Soft-Anchor RL (exact estimator)."""
    lr: float = 1e-3
    """AdamW learning rate of adapters and head."""
    batch_size: int = 32
    max_seconds: float = 900.0
    """Time budget of the fine-tune (the encoder's first pass included); when spent, training
    stops after the current step and keeps its best validated weights."""
    max_queries: int | None = None
    """Train on at most this many queries (a seeded subsample); None: all."""
    val_queries: int = 256
    """Queries held out for choosing the weights kept (at most a fifth of the table)."""

    def __post_init__(self) -> None:
        for name in ("max_tokens", "lora_rank", "lora_layers", "batch_size", "val_queries"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"backbone setting {name!r}: expected an integer >= 1, got {getattr(self, name)!r}")
        if not 1 <= self.lora_layers <= 6:
            raise ConfigError(f"backbone setting 'lora_layers': MiniLM has 6 layers, got {self.lora_layers!r}")
        for name in ("sft_epochs", "rl_epochs"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"backbone setting {name!r}: expected an integer >= 0, got {getattr(self, name)!r}")
        if self.sft_epochs + self.rl_epochs < 1:
            raise ConfigError("backbone settings 'sft_epochs' + 'rl_epochs': expected at least one epoch")
        if not self.lr > 0 or not self.max_seconds > 0:
            raise ConfigError("backbone settings 'lr' and 'max_seconds' must be > 0")
        if self.max_queries is not None and self.max_queries < 20:
            raise ConfigError(f"backbone setting 'max_queries': expected None or >= 20, got {self.max_queries!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_options(cls, options: str) -> BackboneConfig:
        """From ``key=value,key=value`` (the part of the encoder name after ``minilm-ft:``)."""
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in options.split(","))):
            key, sep, raw = item.partition("=")
            if not sep or key not in types:
                raise ConfigError(f"encoder option {item!r}: expected key=value with key one of {', '.join(types)}")
            try:
                if raw == "None" and "None" in types[key]:
                    values[key] = None
                else:
                    values[key] = float(raw) if types[key] == "float" else int(raw)
            except ValueError:
                raise ConfigError(f"encoder option {key!r}: {raw!r} is not a number") from None
        return cls(**values)


def finetune_encoder(
    encoder: FineTunedMiniLMEncoder,
    table: OutcomeTable,
    config: TrainConfig,
    *,
    log: LogFn | None = None,
) -> None:
    """Fine-tune ``encoder`` in place on ``table`` (Soft Supervision, then Soft-Anchor RL).

    ``config`` supplies the router's shared settings (seed, τ, temperatures, λ range,
    anchor weights); ``encoder.config`` the backbone's own. Every step is logged with
    ``stage`` "backbone-sft" / "backbone-rl".
    """
    started = time.perf_counter()
    log = log or (lambda record: None)
    bb = encoder.config
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    texts = np.asarray([str(q) for q in table.queries], dtype=object)

    # Rewards and anchor, as the router computes them (C: the strongest model's mean cost).
    cost_scale = float(table.model_stats().loc[table.strongest_model(), "mean_cost"]) or 1.0
    cost_pred = CostPredictor().fit(list(texts), table.costs).predict(list(texts)) / cost_scale
    base_vectors = encoder.encode(list(texts))
    capability = KnnCapability(k=config.knn_k, prior_strength=config.prior_strength, seed=config.seed).fit(
        base_vectors, table.scores
    )
    data = RoutingData(
        features=torch.arange(len(texts)),  # row numbers: the vectors come from the encoder
        scores=as_float_tensor(table.scores),
        cost=as_float_tensor(table.costs / cost_scale),
        capability=as_float_tensor(capability),
        cost_pred=as_float_tensor(cost_pred),
    )
    order = rng.permutation(len(texts))
    n_val = min(bb.val_queries, max(1, len(texts) // 5))
    val_rows, fit_rows = order[:n_val], order[n_val:]
    if bb.max_queries is not None:
        fit_rows = fit_rows[: bb.max_queries]
    train, val = data.subset(torch.from_numpy(np.sort(fit_rows))), data.subset(torch.from_numpy(val_rows))

    torch.manual_seed(config.seed)
    head = RoutingPolicy(encoder.dim, table.n_models, lam_min=config.lam_min, lam_max=config.lam_max)
    adapters = encoder.trainable_parameters()
    optimizer = torch.optim.AdamW([*adapters, *head.parameters()], lr=bb.lr, weight_decay=config.weight_decay)
    val_lams = torch.tensor([0.0, *np.geomspace(3 * config.lam_min, config.lam_max, 10)], dtype=torch.float32)

    def sample_lams(n: int) -> torch.Tensor:
        """λ per row: 0 with probability 0.1, else log-uniform in [lam_min, lam_max] (as the trainer)."""
        u = torch.rand(n, generator=generator)
        lam = torch.exp(math.log(config.lam_min) + u * math.log(config.lam_max / config.lam_min))
        return torch.where(torch.rand(n, generator=generator) < 0.1, torch.zeros(n), lam)

    def anchor(batch: RoutingData, lam: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        return anchor_logits(batch.capability, batch.cost_pred, lam, temperature or config.anchor_temperature)

    @torch.no_grad()
    def val_reward() -> float:
        """Mean validation reward of greedy routing over a λ grid (the trainer's early-stopping score)."""
        head.eval()
        vectors = torch.from_numpy(encoder.encode(list(texts[val_rows.tolist()])))
        head.train()
        rewards = []
        for value in val_lams:
            lam = torch.full((len(val),), float(value))
            choice = route_first_observed(head(vectors, lam, anchor(val, lam)), val.observed)
            rewards.append(float(val.rewards(lam).gather(1, choice[:, None]).mean()))
        return float(np.mean(rewards))

    best_score, best_adapters = -math.inf, encoder.adapter_state()
    step, n_epochs = 0, bb.sft_epochs + bb.rl_epochs
    out_of_time = False
    for epoch in range(n_epochs):
        stage = "backbone-sft" if epoch < bb.sft_epochs else "backbone-rl"
        progress = (epoch - bb.sft_epochs) / max(bb.rl_epochs - 1, 1)
        beta = anchor_weight(config, progress) if stage == "backbone-rl" else None
        for rows in torch.randperm(len(train), generator=generator).split(bb.batch_size):
            batch = train.subset(rows)
            lam = sample_lams(len(rows))
            vectors = encoder.embed_for_training(list(texts[batch.features.numpy().tolist()]))
            anchor_batch = anchor(batch, lam)
            logp = F.log_softmax(head(vectors, lam, anchor_batch), dim=1)
            scheduled = stage == "backbone-rl" and config.anchor_temperature_end is not None
            kl_target = anchor(batch, lam, kl_anchor_temperature(config, progress)) if scheduled else anchor_batch
            anchor_logp = F.log_softmax(kl_target, dim=1)
            kl_anchor = kl(logp, anchor_logp).mean()
            metrics: dict[str, Any] = {}
            if stage == "backbone-sft":
                targets = soft_targets(
                    batch, tau=config.tau, temperature=config.soft_temperature, smoothing=config.smoothing, lam=lam
                )
                loss = -(targets * logp).sum(dim=1).mean()
            else:
                rewards = batch.rewards(lam)
                probs = logp.exp()
                advantages = rewards - (probs.detach() * rewards).sum(dim=1, keepdim=True)
                loss = -(probs * advantages).sum(dim=1).mean() + beta * kl_anchor
                metrics["reward"] = float((probs.detach() * rewards).sum(dim=1).mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            elapsed = time.perf_counter() - started
            log(
                {
                    "stage": stage,
                    "step": step,
                    "epoch": epoch,
                    "loss": float(loss.detach()),
                    "entropy": float(entropy(logp.detach()).mean()),
                    "kl_anchor": float(kl_anchor.detach()),
                    "beta": beta,
                    "seconds": round(elapsed, 2),
                    **metrics,
                }
            )
            if elapsed > bb.max_seconds:
                out_of_time = True
                break
        score = val_reward()
        improved = score > best_score + 1e-6
        if improved:
            best_score, best_adapters = score, encoder.adapter_state()
        log({"stage": stage, "event": "validation", "step": step, "val_reward": score, "best": improved})
        if out_of_time:
            log({"stage": stage, "event": "time_budget", "step": step, "max_seconds": bb.max_seconds})
            break
    encoder.load_adapter_state(best_adapters)
    log(
        {
            "stage": "backbone",
            "event": "done",
            "step": step,
            "val_reward": best_score,
            "seconds": round(time.perf_counter() - started, 2),
            "cache_id": encoder.cache_id,
        }
    )
