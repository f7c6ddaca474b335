"""The routing policy as routing runs it: its weights in NumPy, without torch.

π_θ(k | q, λ) = softmax(anchor(q, λ) + f_θ(x(q), λ)), where f_θ is the MLP that
:class:`entrorouter.policy.mlp.RoutingPolicy` trains in torch. A saved or trained router
keeps f_θ as :class:`PolicyWeights` and computes it in NumPy: on one query torch's
fixed cost per call made it several times slower (:mod:`entrorouter.numeric`), and a
process that only routes does not import torch at all (a fresh ``entrorouter route``
took 0.3 s instead of 2.3–2.8 s, side by side).

A router routes with a :class:`PolicyEnsemble`: one f_θ, or several trained from different
seeds (``TrainConfig.policy_seeds``) whose logits are averaged.

The helpers below are shared with training, so they take NumPy arrays or torch tensors.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from entrorouter.numeric import gelu


def _columns(parts: list[Any]) -> Any:
    """``parts`` side by side: NumPy arrays, or torch tensors (then torch is loaded already)."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=1)
    import torch

    return torch.cat(parts, dim=1)


def anchor_logits(capability: Any, cost: Any, lam: Any, temperature: float) -> Any:
    """Soft Anchor logits (â − λ·ĉ) / T_A for (n, K) estimates, (n, K) normalised costs, (n,) λ."""
    return (capability - lam[:, None] * cost) / temperature


def policy_input(features: Any, capability: Any, cost: Any, mode: str) -> Any:
    """What f_θ reads (``mode``: "embedding", "estimates" or "embedding+estimates")."""
    parts = {"embedding": [features], "estimates": [capability, cost]}
    return _columns([t for name in mode.split("+") for t in parts[name]])


def policy_input_dim(embedding_dim: int, n_models: int, mode: str) -> int:
    return sum({"embedding": embedding_dim, "estimates": 2 * n_models}[name] for name in mode.split("+"))


def lam_features(lam: Any, lam_min: float, lam_max: float) -> Any:
    """(n, 2) for (n,) λ: λ on a log scale in about [-1, 1], and λ / lam_max."""
    lo, hi = math.log(lam_min), math.log(lam_max + lam_min)
    log = np.log(lam + lam_min) if isinstance(lam, np.ndarray) else (lam + lam_min).log()
    return _columns([(2 * (log - lo) / (hi - lo) - 1)[:, None], lam[:, None] / lam_max])


@dataclass(frozen=True)
class PolicyWeights:
    """f_θ's weights, float32: hidden layers (each Linear then GELU), then the head."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight (out, in), bias (out,)) per hidden layer
    head: tuple[np.ndarray, np.ndarray]  # (weight (K, in), bias (K,))
    lam_min: float
    lam_max: float

    @property
    def in_dim(self) -> int:
        """Width of the policy input (without the two λ features)."""
        first = self.layers[0][0] if self.layers else self.head[0]
        return first.shape[1] - 2

    @property
    def n_models(self) -> int:
        return self.head[0].shape[0]

    def logits(self, x: np.ndarray, lam: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
        """(n, K) logits for float32 ``x`` (:func:`policy_input`) and (n,) λ; ``anchor`` is added."""
        h = np.concatenate([x, lam_features(lam, self.lam_min, self.lam_max)], axis=1)
        for weight, bias in self.layers:
            h = gelu(h @ weight.T + bias)
        logits = h @ self.head[0].T + self.head[1]
        return logits if anchor is None else logits + anchor

    def tensors(self) -> dict[str, np.ndarray]:
        """The torch module's state-dict names (``body.<i>`` for Linear i of Linear, GELU,
        Dropout blocks), so saved routers keep their format."""
        out: dict[str, np.ndarray] = {}
        for i, (weight, bias) in enumerate(self.layers):
            out[f"body.{3 * i}.weight"], out[f"body.{3 * i}.bias"] = weight, bias
        out["head.weight"], out["head.bias"] = self.head
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], *, lam_min: float, lam_max: float) -> PolicyWeights:
        """From :meth:`tensors`' names; ValueError when they do not form one MLP."""
        expected = {"head.weight", "head.bias"}
        body = sorted(int(m[1]) for name in tensors if (m := re.fullmatch(r"body\.(\d+)\.weight", name)))
        expected |= {f"body.{i}.{part}" for i in body for part in ("weight", "bias")}
        if set(tensors) != expected or body != list(range(0, 3 * len(body), 3)):
            raise ValueError(f"unexpected policy tensors {sorted(tensors)}")

        def layer(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            weight, bias = (np.asarray(tensors[f"{prefix}.{p}"], dtype=np.float32) for p in ("weight", "bias"))
            if weight.ndim != 2 or bias.shape != weight.shape[:1]:
                raise ValueError(f"{prefix}: weight {list(weight.shape)} and bias {list(bias.shape)} do not match")
            return weight, bias

        layers = tuple(layer(f"body.{i}") for i in body)
        head = layer("head")
        for (w_in, _), (w_out, _) in zip((*layers, head), (*layers, head)[1:], strict=False):
            if w_out.shape[1] != w_in.shape[0]:
                raise ValueError(f"a layer of width {w_in.shape[0]} feeds one that reads {w_out.shape[1]}")
        return cls(layers, head, lam_min, lam_max)


@dataclass(frozen=True)
class PolicyEnsemble:
    """Policies trained from different seeds, each with its own early-stopping split; f_θ is
    the mean of their logits. Why: one policy's trade-off at a given λ moves by a few points
    of cost from seed to seed, and that noise reaches the calibration curve and the chosen
    operating point; the mean of several moves less (``benchmarks/results/policy_seeds*.md``).

    The members compute stacked, one matrix product per layer for all of them (the first
    layer's weights side by side, the later ones as a batch): on one query three members then
    cost twice what one does, where member by member they cost nearly four times
    (``benchmarks/results/policy_ensemble.md``). The first layer's share that reads the query,
    not λ, is :meth:`first_layer`: a router computes it once per query
    (:class:`~entrorouter.router.model.RoutingInputs`) and a sweep over λ reuses it.
    """

    members: tuple[PolicyWeights, ...]

    @property
    def in_dim(self) -> int:
        return self.members[0].in_dim

    @property
    def n_models(self) -> int:
        return self.members[0].n_models

    def logits(self, x: np.ndarray, lam: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
        """As :meth:`PolicyWeights.logits`."""
        return self.logits_from(self.first_layer(x), lam, anchor)

    def first_layer(self, x: np.ndarray) -> np.ndarray:
        """(n, M·width) every member's first layer on ``x`` without its λ features' share: the
        part of a query's computation that does not depend on λ, so a sweep computes it once."""
        (weight, _, bias), _ = self._stacked
        return x @ weight + bias

    def logits_from(self, first_layer: np.ndarray, lam: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
        """:meth:`logits` from :meth:`first_layer`'s output, for (n,) λ."""
        (_, lam_weight, _), later = self._stacked
        member = self.members[0]
        h = first_layer + lam_features(lam, member.lam_min, member.lam_max) @ lam_weight
        if later:  # GELU on the contiguous rows: on the (M, n, width) view below it would copy them first
            h = gelu(h)
        h = h.reshape(len(h), len(self.members), -1).transpose(1, 0, 2)  # (M, n, width), a view
        for i, (weight, bias) in enumerate(later):  # (M, in, out), (M, 1, out)
            h = (h if i == 0 else gelu(h)) @ weight + bias  # the first GELU ran above
        logits = h.mean(axis=0)
        return logits if anchor is None else logits + anchor

    @functools.cached_property
    def _stacked(self) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
        """The members' layers stacked: the first side by side, split into the columns that read
        the input (in, M·out) and those that read λ's features (2, M·out), with its bias; each
        later layer as a batch, (M, in, out) with biases (M, 1, out). Built on the first call."""
        per_member = [(*m.layers, m.head) for m in self.members]
        first = np.concatenate([layers[0][0] for layers in per_member]).T  # (in + 2, M·out)
        later = [
            (
                np.ascontiguousarray(np.stack([layers[i][0] for layers in per_member]).transpose(0, 2, 1)),
                np.stack([layers[i][1][None, :] for layers in per_member]),
            )
            for i in range(1, len(per_member[0]))
        ]
        split = (
            np.ascontiguousarray(first[:-2]),
            np.ascontiguousarray(first[-2:]),
            np.concatenate([layers[0][1] for layers in per_member]),
        )
        return split, later

    def tensors(self) -> dict[str, np.ndarray]:
        """Member j's tensors under ``<j>.`` (as the bagged success nets are saved)."""
        return {
            f"{j}.{name}": value for j, member in enumerate(self.members) for name, value in member.tensors().items()
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], *, lam_min: float, lam_max: float) -> PolicyEnsemble:
        """From :meth:`tensors`' names; ValueError when they do not form members 0..M−1 of one shape."""
        grouped: dict[str, dict[str, np.ndarray]] = {}
        for key, value in tensors.items():
            index, _, name = key.partition(".")
            grouped.setdefault(index, {})[name] = value
        if not grouped or set(grouped) != {str(j) for j in range(len(grouped))}:
            raise ValueError(f"expected policy members 0..M-1, got {sorted(grouped)}")
        members = tuple(
            PolicyWeights.from_tensors(grouped[str(j)], lam_min=lam_min, lam_max=lam_max) for j in range(len(grouped))
        )
        shapes = {tuple(w.shape for w, _ in (*m.layers, m.head)) for m in members}
        if len(shapes) > 1:
            raise ValueError(f"policy members of different shapes: {sorted(shapes)}")
        return cls(members)
