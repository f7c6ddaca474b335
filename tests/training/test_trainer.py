"""Real (small) training runs: logging, determinism, the soft-vs-hard entropy story, estimators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from entrorouter.policy.weights import policy_input
from entrorouter.router import Router
from entrorouter.router.config import TrainConfig
from entrorouter.training.fit import fit_parts
from entrorouter.training.trainer import anchor_weight

from ..conftest import FAST

STEP_FIELDS = {
    "stage",
    "step",
    "loss",
    "entropy",
    "kl_anchor",
    "val_entropy",
    "usage_entropy",
    "usage",
    "suppression",
    "suppressed",
}
RL_FIELDS = STEP_FIELDS | {"kl_prev", "clip_frac", "beta", "anchor_temperature", "alpha", "target_entropy", "pg_loss"}


def fit(table, **overrides) -> Router:
    return Router(TrainConfig(**{**FAST, **overrides})).fit(table.split("train"))


def test_every_step_is_logged(demo_table) -> None:
    router = fit(demo_table)
    steps = [r for r in router.training_log if "event" not in r]
    assert {r["stage"] for r in steps} == {"sft", "rl"}
    for record in steps:
        assert (RL_FIELDS if record["stage"] == "rl" else STEP_FIELDS) <= set(record)
        assert set(record["usage"]) == set(demo_table.models)
        assert abs(sum(record["usage"].values()) - 1) < 1e-3
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1))
    assert any(r.get("event") == "validation" for r in router.training_log)


def test_training_is_deterministic(demo_table) -> None:
    a = fit(demo_table, seed=7)
    torch.rand(3)  # whatever the process drew in between: the seed alone makes the router
    b = fit(demo_table, seed=7)
    texts = list(demo_table.split("test").queries[:50])
    features = a.embed(texts)
    np.testing.assert_array_equal(
        a.probabilities(a.inputs(features, texts), 0.1), b.probabilities(b.inputs(features, texts), 0.1)
    )
    assert a.lam == b.lam
    for name, tensor in a.policy.tensors().items():
        np.testing.assert_array_equal(tensor, b.policy.tensors()[name])
    c = fit(demo_table, seed=8)
    assert not np.array_equal(a.policy.tensors()["0.body.0.weight"], c.policy.tensors()["0.body.0.weight"])


@pytest.mark.parametrize("estimator", ["exact", "grpo", "rloo"])
def test_estimators_run_and_keep_the_trust_region(demo_table, estimator: str) -> None:
    router = fit(demo_table, estimator=estimator, init="none", rl_iterations=3, target_kl=0.01)
    rl = [r for r in router.training_log if r.get("stage") == "rl" and "event" not in r]
    assert rl
    # An iteration's updates stop at the first step past the KL limit, so only such a
    # last step may exceed it.
    by_iteration: dict[int, list[float]] = {}
    for r in rl:
        by_iteration.setdefault(r["iteration"], []).append(r["kl_prev"])
    for kls in by_iteration.values():
        assert all(k <= 0.01 for k in kls[:-1])
    assert all(0.0 <= r["clip_frac"] <= 1.0 for r in rl)


def test_anchor_weight_decays_geometrically_or_linearly_to_zero() -> None:
    assert [anchor_weight(TrainConfig(beta_start=0.2, beta_end=0.02), p) for p in (0, 0.5, 1)] == pytest.approx(
        [0.2, 0.2 * 0.1**0.5, 0.02]
    )
    assert [anchor_weight(TrainConfig(beta_start=0.2, beta_end=0), p) for p in (0, 0.5, 1)] == pytest.approx(
        [0.2, 0.1, 0]
    )
    assert anchor_weight(TrainConfig(beta_start=0, beta_end=0), 0.5) == 0


def test_anchor_temperature_schedule_moves_the_kl_target_in_rl(demo_table) -> None:
    def rl_steps(router: Router) -> list[dict]:
        return [r for r in router.training_log if r.get("stage") == "rl" and "event" not in r]

    constant = fit(demo_table, anchor_temperature=0.1, patience=10)
    scheduled = fit(demo_table, anchor_temperature=0.1, anchor_temperature_end=0.025, patience=10)
    assert {r["anchor_temperature"] for r in rl_steps(constant)} == {0.1}
    by_iteration = {r["iteration"]: r["anchor_temperature"] for r in rl_steps(scheduled)}
    # Geometric over the 4 iterations: 0.1 · 0.25^(i/3).
    assert by_iteration == pytest.approx({i: 0.1 * 0.25 ** (i / 3) for i in range(4)})
    beta = {r["iteration"]: r["beta"] for r in rl_steps(scheduled)}  # β_t keeps its own schedule
    assert beta == pytest.approx({i: 0.2 * 0.1 ** (i / 3) for i in range(4)})
    # Stage 1 and the first RL iteration are the same fit; the KL term differs from then on.
    first = [r["kl_anchor"] for r in rl_steps(constant) if r["iteration"] == 0]
    assert first == [r["kl_anchor"] for r in rl_steps(scheduled) if r["iteration"] == 0]
    later = [r["kl_anchor"] for r in rl_steps(constant) if r["iteration"] == 3]
    assert later != [r["kl_anchor"] for r in rl_steps(scheduled) if r["iteration"] == 3]


def test_soft_supervision_keeps_higher_entropy_than_hard(demo_table) -> None:
    def sft_entropies(init: str) -> list[float]:
        router = fit(
            demo_table,
            init=init,
            rl_iterations=0,
            anchor_residual=False,
            sft_epochs=40,
            batch_size=128,
        )
        return [r["entropy"] for r in router.training_log if r.get("stage") == "sft" and "event" not in r]

    soft, hard = sft_entropies("soft"), sft_entropies("hard")
    assert soft[0] == pytest.approx(np.log(len(demo_table.models)), abs=0.05)  # uniform start
    assert soft[-1] > hard[-1] + 0.3  # soft targets keep a high-entropy prior


def test_larger_lambda_routes_cheaper(demo_table) -> None:
    router = fit(demo_table)
    test = demo_table.split("test")
    cheap, costly = router.evaluate(test, lam=2.0), router.evaluate(test, lam=0.0)
    assert cheap["cost"] < costly["cost"]
    assert costly["accuracy"] > cheap["accuracy"]


def test_training_without_a_log_skips_it_and_trains_the_same_weights(demo_table) -> None:
    table = demo_table.split("train")
    logged = fit(demo_table, seed=3)
    unlogged = Router(logged.config)
    unlogged.encoder = logged.encoder
    features = logged.embed([str(q) for q in table.queries])
    fit_parts(unlogged, table, features)  # no log: the cross-fitting's fold routers train like this
    assert logged.training_log and not unlogged.training_log
    for name, tensor in logged.policy.tensors().items():
        np.testing.assert_array_equal(tensor, unlogged.policy.tensors()[name])


def test_policy_seeds_train_members_whose_mean_routes(demo_table) -> None:
    lone, pair = fit(demo_table, seed=5), fit(demo_table, seed=5, policy_seeds=2)
    first, second = pair.policy.members
    # Member 0 is the lone policy of the same seed; member 1 is another policy (seed + 1000).
    for name, tensor in lone.policy.members[0].tensors().items():
        np.testing.assert_array_equal(tensor, first.tensors()[name])
    assert not np.array_equal(first.tensors()["body.0.weight"], second.tensors()["body.0.weight"])
    texts = list(demo_table.split("test").queries[:50])
    inputs = pair.inputs(pair.embed(texts), texts)
    lam = np.full(len(texts), 0.1, dtype=np.float32)
    x = policy_input(inputs.features, inputs.capability, inputs.cost, pair.config.policy_input).astype(np.float32)
    np.testing.assert_allclose(
        pair.policy.logits(x, lam), (first.logits(x, lam) + second.logits(x, lam)) / 2, rtol=1e-6, atol=1e-6
    )
    assert {r["stage"] for r in pair.training_log if "event" not in r} == {"sft", "rl"}  # member 0's log
