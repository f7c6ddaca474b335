"""The routing policy π_θ(k | q, λ) = softmax(anchor(q, λ) + f_θ(e(q), λ)), as training runs it.

``f_θ`` is a small MLP over the query embedding and two features of the trade-off λ, so
one network serves every λ. With ``anchor_residual`` the Soft Anchor's logits
``(â − λ·ĉ) / T_A`` are added, so an untrained policy *is* the anchor and training learns
corrections; without it the policy starts uniform. The last layer starts at zero for
exactly that reason.

This is the torch module that training optimises; a trained router keeps its weights as
:class:`~entrorouter.policy.weights.PolicyWeights` (:meth:`RoutingPolicy.weights`) and
routes with those, in NumPy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from entrorouter.policy.weights import PolicyWeights, lam_features


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

    def forward(self, features: torch.Tensor, lam: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (n, K); ``anchor`` (n, K) logits are added when the policy is residual."""
        return self.logits_from(self.first_layer(features), lam, anchor)

    def logits_from(
        self, first_layer: torch.Tensor, lam: torch.Tensor, anchor: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`forward` from :meth:`first_layer`'s output, computed once for many λ."""
        h = first_layer + F.linear(lam_features(lam, self.lam_min, self.lam_max), self.first.weight[:, self.in_dim :])
        logits = self.head(self.body[1:](h)) if len(self.body) else h
        return logits if anchor is None else logits + anchor

    def first_layer(self, features: torch.Tensor) -> torch.Tensor:
        """(n, width) the first layer on ``features`` without its λ features' share: what every
        λ shares (:meth:`PolicyEnsemble.first_layer <entrorouter.policy.weights.PolicyEnsemble.first_layer>`
        is the same in NumPy)."""
        return F.linear(features, self.first.weight[:, : self.in_dim], self.first.bias)

    @property
    def first(self) -> nn.Linear:
        """The Linear that reads the input and λ's features (the head when there is no hidden layer)."""
        return self.body[0] if len(self.body) else self.head

    def weights(self) -> PolicyWeights:
        """A copy of the current weights, for routing (the same function in eval mode)."""
        linears = [m for m in self.body if isinstance(m, nn.Linear)]

        def layer(linear: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
            return linear.weight.detach().numpy().copy(), linear.bias.detach().numpy().copy()

        return PolicyWeights(tuple(layer(m) for m in linears), layer(self.head), self.lam_min, self.lam_max)
