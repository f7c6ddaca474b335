"""The routing policy π_θ(k | q, λ) = softmax(anchor(q, λ) + f_θ(e(q), λ)).

``f_θ`` is a small MLP over the query embedding and two features of the trade-off λ, so
one network serves every λ. With ``anchor_residual`` the Soft Anchor's logits
``(â − λ·ĉ) / T_A`` are added, so an untrained policy *is* the anchor and training learns
corrections; without it the policy starts uniform. The last layer starts at zero for
exactly that reason.

Training runs in torch; routing runs the same network in NumPy
(:meth:`RoutingPolicy.numpy_logits`, :mod:`entrorouter.numeric` says why). The helpers
below take either kind of array.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from entrorouter.numeric import gelu

Array = np.ndarray | torch.Tensor


def _columns(parts: list[Array]) -> Array:
    """``parts`` side by side (NumPy arrays or torch tensors, all of one kind)."""
    return np.concatenate(parts, axis=1) if isinstance(parts[0], np.ndarray) else torch.cat(parts, dim=1)


def anchor_logits(capability: Array, cost: Array, lam: Array, temperature: float) -> Array:
    """Soft Anchor logits (â − λ·ĉ) / T_A for (n, K) estimates, (n, K) normalised costs, (n,) λ."""
    return (capability - lam[:, None] * cost) / temperature


def policy_input(features: Array, capability: Array, cost: Array, mode: str) -> Array:
    """What f_θ reads (``mode``: "embedding", "estimates" or "embedding+estimates")."""
    parts = {"embedding": [features], "estimates": [capability, cost]}
    return _columns([t for name in mode.split("+") for t in parts[name]])


def policy_input_dim(embedding_dim: int, n_models: int, mode: str) -> int:
    return sum({"embedding": embedding_dim, "estimates": 2 * n_models}[name] for name in mode.split("+"))


class RoutingPolicy(nn.Module):
    def __init__(
        self,
        in_dim: int,
        n_models: int,
        *,
        hidden: int = 256,
        n_layers: int = 2,
        dropout: float = 0.1,
        lam_min: float = 1e-3,
        lam_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.in_dim, self.n_models = in_dim, n_models
        self.lam_min, self.lam_max = lam_min, lam_max
        layers: list[nn.Module] = []
        width = in_dim + 2
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_models)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def lam_features(self, lam: Array) -> Array:
        """λ on a log scale in about [-1, 1], and λ / lam_max: (n, 2) for (n,) λ."""
        lo, hi = math.log(self.lam_min), math.log(self.lam_max + self.lam_min)
        log = np.log if isinstance(lam, np.ndarray) else torch.log
        log_scaled = 2 * (log(lam + self.lam_min) - lo) / (hi - lo) - 1
        return _columns([log_scaled[:, None], lam[:, None] / self.lam_max])

    def forward(self, features: torch.Tensor, lam: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (n, K); ``anchor`` (n, K) logits are added when the policy is residual."""
        logits = self.head(self.body(torch.cat([features, self.lam_features(lam)], dim=1)))
        return logits if anchor is None else logits + anchor

    def numpy_logits(self, features: np.ndarray, lam: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
        """:meth:`forward` in NumPy and in eval mode (no dropout), for float32 inputs. It reads the
        parameters in place, without a copy, so it always sees the current weights."""
        x = np.concatenate([features, self.lam_features(lam)], axis=1)
        for layer in [*self.body, self.head]:
            if isinstance(layer, nn.Linear):
                x = x @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
            elif isinstance(layer, nn.GELU):
                x = gelu(x)
            elif not isinstance(layer, nn.Dropout):  # the identity in eval mode
                raise TypeError(f"numpy_logits does not know the layer {layer!r}")
        return x if anchor is None else x + anchor
