"""Routing runs the torch-trained networks in NumPy: the same numbers, up to float rounding."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from entrorouter.numeric import erf, gelu, sigmoid, softmax
from entrorouter.policy.mlp import RoutingPolicy, anchor_logits


def test_activations_match_torch() -> None:
    x = np.linspace(-12, 12, 20001, dtype=np.float32)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(erf(x), torch.erf(t).numpy(), atol=5e-7)
    np.testing.assert_allclose(gelu(x), nn.functional.gelu(t).numpy(), atol=1e-6)
    np.testing.assert_allclose(sigmoid(x * 10), torch.sigmoid(t * 10).numpy(), atol=1e-7)  # no overflow at -120
    logits = x.reshape(-1, 3)[:50] * 100
    np.testing.assert_allclose(softmax(logits), torch.softmax(torch.from_numpy(logits), dim=1).numpy(), atol=1e-6)


def test_policy_numpy_logits_match_its_forward() -> None:
    torch.manual_seed(0)
    policy = RoutingPolicy(12, 4, hidden=32, dropout=0.5)
    nn.init.normal_(policy.head.weight)  # the head starts at zero: give it something to compute
    policy.eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 12)).astype(np.float32)
    lam = np.array([0, 1e-3, 0.01, 0.05, 0.1, 0.3, 1, 2, 5], dtype=np.float32)
    capability, cost = rng.random((9, 4), dtype=np.float32), rng.random((9, 4), dtype=np.float32)
    anchor = anchor_logits(capability, cost, lam, 0.1)
    with torch.no_grad():
        expected = policy(torch.from_numpy(x), torch.from_numpy(lam), torch.from_numpy(anchor)).numpy()
    np.testing.assert_allclose(policy.numpy_logits(x, lam, anchor), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(policy.numpy_logits(x[:1], lam[:1]), expected[:1] - anchor[:1], rtol=1e-5, atol=1e-5)
    # It reads the weights in place: a training step shows at once.
    with torch.no_grad():
        policy.head.bias += 1.0
    np.testing.assert_allclose(policy.numpy_logits(x, lam, anchor), expected + 1.0, rtol=1e-5, atol=1e-5)
