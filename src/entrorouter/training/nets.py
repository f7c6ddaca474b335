"""The torch side of the capability estimators: the success nets and their training loop.

Routing never needs these: a fitted :class:`~entrorouter.router.capability.MlpCapability`
keeps its nets' weights as arrays and predicts with them in NumPy; it imports this module
only to train (or when a subclass brings a net of its own).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from entrorouter.policy.mlp import Dropout, adamw


def as_float_tensor(x: np.ndarray) -> torch.Tensor:
    """A float32, contiguous torch view (or copy) of ``x``."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


class SuccessNet(nn.Module):
    """Logits of P(model k solves q) for every k; ``hidden=0`` is a linear (logistic) model."""

    def __init__(self, in_dim: int, n_models: int, hidden: int, dropout: float) -> None:
        super().__init__()
        if hidden:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, n_models)
            )
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, n_models))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_success_net(
    net: nn.Module, x: np.ndarray, scores: np.ndarray, *, epochs: int, lr: float, weight_decay: float, seed: int
) -> nn.Module:
    """Masked binary cross-entropy on the observed outcomes (NaN scores are skipped)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xt, st = as_float_tensor(x), as_float_tensor(scores)
    observed = ~torch.isnan(st)
    target = torch.where(observed, st, torch.zeros_like(st))
    opt = adamw(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(xt), generator=generator).split(256):
            mask = observed[batch].float()
            loss = (loss_fn(net(xt[batch]), target[batch]) * mask).sum() / mask.sum().clamp_min(1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()
