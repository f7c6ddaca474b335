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

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from entrorouter.policy.weights import PolicyWeights, lam_features


class Dropout(nn.Module):
    """``nn.Dropout``, with its mask drawn by NumPy's PCG64 rather than torch's CPU generator.

    Why: torch draws a CPU dropout mask element by element from its Mersenne Twister, about
    three times NumPy's time, and every net here trains on the CPU, where dropout took a tenth
    of a resplit under a profiler (``benchmarks/results/training_step.md`` times a step with
    torch's dropout and AdamW and with these). Each mask's stream is seeded from torch's global
    generator, so ``torch.manual_seed`` still fixes a run; the masks differ from
    ``nn.Dropout``'s. No parameters, so state dicts keep their names.

    An element is kept when the top 24 bits of its 32-bit draw, read as a fraction, are at
    least p: the test NumPy's ``random(dtype=float32) >= p`` makes, done on the raw draws
    (the low, then the high half of each 64-bit output), which skips the conversion to floats
    and took half the time. The masks are those of that float test, bit for bit.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        draws = np.random.PCG64(int(torch.randint(0, 2**62, ()))).random_raw((n + 1) // 2)
        # u / 2**24 >= float32(p)  <=>  u >= ceil(float32(p) * 2**24), for the 24-bit integers u
        threshold = np.uint32(math.ceil(float(np.float32(self.p)) * 2**24))
        keep = (draws.view(np.uint32)[:n] >> 8 >= threshold).reshape(tuple(x.shape))
        scale = torch.from_numpy(keep * np.float32(1 / (1 - self.p)))
        return x * scale.to(x.device, x.dtype)  # a no-op for float32 on the CPU

    def extra_repr(self) -> str:
        return f"p={self.p}"


def adamw(parameters: Iterable[nn.Parameter], *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel: one call per step for all tensors, where the default
    loops over them in Python; the same update rule."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)


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
            layers += [nn.Linear(width, hidden), nn.GELU(), Dropout(dropout)]
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
