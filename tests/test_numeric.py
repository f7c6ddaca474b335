"""Routing runs the torch-trained networks in NumPy: the same numbers, up to float rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from entrorouter.numeric import erf, gelu, sigmoid, softmax
from entrorouter.policy.mlp import RoutingPolicy
from entrorouter.policy.weights import PolicyEnsemble, PolicyWeights, anchor_logits


def test_activations_match_torch() -> None:
    x = np.linspace(-12, 12, 20001, dtype=np.float32)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(erf(x), torch.erf(t).numpy(), atol=5e-7)
    np.testing.assert_allclose(gelu(x), nn.functional.gelu(t).numpy(), atol=1e-6)
    np.testing.assert_allclose(sigmoid(x * 10), torch.sigmoid(t * 10).numpy(), atol=1e-7)  # no overflow at -120
    logits = x.reshape(-1, 3)[:50] * 100
    np.testing.assert_allclose(softmax(logits), torch.softmax(torch.from_numpy(logits), dim=1).numpy(), atol=1e-6)


def test_policy_weights_compute_the_trained_policy() -> None:
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
    weights = policy.weights()
    assert (weights.in_dim, weights.n_models) == (12, 4)
    np.testing.assert_allclose(weights.logits(x, lam, anchor), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weights.logits(x[:1], lam[:1]), expected[:1] - anchor[:1], rtol=1e-5, atol=1e-5)
    # Saved under the module's own names, and read back to the same function.
    assert set(weights.tensors()) == set(policy.state_dict())
    again = PolicyWeights.from_tensors(weights.tensors(), lam_min=policy.lam_min, lam_max=policy.lam_max)
    np.testing.assert_array_equal(again.logits(x, lam, anchor), weights.logits(x, lam, anchor))


def test_a_policy_without_hidden_layers_computes_the_same_in_numpy() -> None:
    torch.manual_seed(0)
    policy = RoutingPolicy(5, 3, n_layers=0)
    nn.init.normal_(policy.head.weight)
    x = np.random.default_rng(2).standard_normal((4, 5)).astype(np.float32)
    lam = np.array([0, 0.1, 1, 2], dtype=np.float32)
    with torch.no_grad():
        expected = policy(torch.from_numpy(x), torch.from_numpy(lam)).numpy()
    np.testing.assert_allclose(policy.weights().logits(x, lam), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(PolicyEnsemble((policy.weights(),)).logits(x, lam), expected, rtol=1e-5, atol=1e-5)


def test_policy_weights_that_do_not_form_one_network_are_refused() -> None:
    tensors = RoutingPolicy(6, 3, hidden=8).weights().tensors()
    for broken in (
        {k: v for k, v in tensors.items() if k != "head.bias"},  # a tensor missing
        {**tensors, "body.3.weight": tensors["body.3.weight"][:, :5]},  # a layer reading the wrong width
        {**tensors, "head.bias": tensors["head.bias"][:2]},  # bias and weight disagree
    ):
        with pytest.raises(ValueError):
            PolicyWeights.from_tensors(broken, lam_min=1e-3, lam_max=2.0)


def test_a_policy_ensemble_averages_its_members_logits_and_saves_each() -> None:
    torch.manual_seed(0)
    members = []
    for _ in range(3):
        policy = RoutingPolicy(6, 3, hidden=8)
        nn.init.normal_(policy.head.weight)
        members.append(policy.weights())
    ensemble = PolicyEnsemble(tuple(members))
    rng = np.random.default_rng(1)
    x, lam = rng.standard_normal((5, 6)).astype(np.float32), np.full(5, 0.1, dtype=np.float32)
    anchor = rng.standard_normal((5, 3)).astype(np.float32)
    expected = np.mean([m.logits(x, lam) for m in members], axis=0) + anchor
    np.testing.assert_allclose(ensemble.logits(x, lam, anchor), expected, rtol=1e-6, atol=1e-6)  # computed stacked
    np.testing.assert_allclose(ensemble.logits(x[:1], lam[:1]), expected[:1] - anchor[:1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        PolicyEnsemble(members[:1]).logits(x, lam, anchor), members[0].logits(x, lam, anchor), rtol=1e-6, atol=1e-6
    )
    # The λ-free first layer, computed once, serves every λ (it is what a sweep reuses).
    first_layer = ensemble.first_layer(x)
    for value in (0.0, 0.5, 2.0):
        at = np.full(5, value, dtype=np.float32)
        expected_at = np.mean([m.logits(x, at) for m in members], axis=0)
        np.testing.assert_allclose(ensemble.logits_from(first_layer, at), expected_at, rtol=1e-6, atol=1e-6)
    tensors = ensemble.tensors()
    again = PolicyEnsemble.from_tensors(tensors, lam_min=1e-3, lam_max=2.0)
    np.testing.assert_array_equal(again.logits(x, lam, anchor), ensemble.logits(x, lam, anchor))
    no_member_1 = {k: v for k, v in tensors.items() if not k.startswith("1.")}
    with pytest.raises(ValueError, match=r"members 0\.\.M-1"):
        PolicyEnsemble.from_tensors(no_member_1, lam_min=1e-3, lam_max=2.0)
    wider = RoutingPolicy(6, 3, hidden=16).weights().tensors()
    with pytest.raises(ValueError, match="different shapes"):
        PolicyEnsemble.from_tensors({**tensors, **{f"1.{k}": v for k, v in wider.items()}}, lam_min=1e-3, lam_max=2.0)


def test_dropout_drops_its_share_scales_the_rest_and_follows_torchs_seed() -> None:
    from entrorouter.policy.mlp import Dropout

    drop, x = Dropout(0.25), torch.ones(400, 500, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    kept = y.detach() != 0
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.005  # 200,000 draws: sd of the share ≈ 0.001
    assert torch.allclose(y.detach()[kept], torch.full((int(kept.sum()),), 1 / 0.75))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient goes through the kept elements, scaled alike
    torch.manual_seed(0)
    assert torch.equal(drop(x).detach(), y.detach())
    assert not torch.equal(drop(x).detach(), y.detach())  # the next mask is a new draw
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.25, 1e-6, 0.999])
def test_dropout_keeps_what_numpys_float_draws_would_keep(p: float) -> None:
    """The mask from raw 32-bit draws is the one ``random(dtype=float32) >= p`` gives with the
    same seed, on an odd number of elements too (half of the last 64-bit draw unused)."""
    from entrorouter.policy.mlp import Dropout

    drop, x = Dropout(p), torch.ones(37, 129)
    torch.manual_seed(3)
    seed = int(torch.randint(0, 2**62, ()))
    expected = np.random.Generator(np.random.PCG64(seed)).random((37, 129), dtype=np.float32) >= p
    torch.manual_seed(3)
    assert np.array_equal(drop(x).numpy() != 0, expected)


def test_fused_adamw_makes_the_default_adamw_update() -> None:
    from entrorouter.policy.mlp import adamw

    torch.manual_seed(0)
    nets = [nn.Linear(8, 3), nn.Linear(8, 3)]
    nets[1].load_state_dict(nets[0].state_dict())
    initial = nets[0].weight.detach().clone()
    optimizers = [adamw(nets[0].parameters(), lr=1e-2, weight_decay=1e-3)]
    optimizers.append(torch.optim.AdamW(nets[1].parameters(), lr=1e-2, weight_decay=1e-3))
    x = torch.randn(32, 8)
    for _ in range(5):
        for net, optimizer in zip(nets, optimizers, strict=True):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    for fused, default in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.allclose(fused, default, atol=1e-6)
    assert not torch.allclose(nets[0].weight, initial, atol=1e-3)  # the steps moved it
