"""A simulated model pool, so `entrorouter quickstart` runs with no data at all.

This is a simulation, not a measurement. It is built to look like real routing data:

* six query domains; each query's text is drawn from its domain's vocabulary, and its
  difficulty shows in the wording (a one-line lookup vs a multi-step, rigorous request);
* eight models, each with a skill per domain: small specialists as good as the frontier
  model on math and on code, generalists of several sizes (the largest matches the
  frontier on history and writing), a cheap and a frontier API model;
* ``P(correct) = sigmoid(1.7 * (skill[model, domain] - difficulty))``, then one Bernoulli draw;
* cost = tokens x price, with tokens estimated from the text (input) and a per-domain
  answer length (output); prices follow public 2024 tiers: hosted open-weight models by
  size (the tiers listed in the MMLU-Pro price card of this project's data) and OpenAI's
  list prices for GPT-4o-mini ($0.15/$0.60 per 1M tokens) and GPT-4o ($2.50/$10).

Run on real data instead with ``entrorouter quickstart --data TABLE`` (see the README).
"""

from __future__ import annotations

import numpy as np

from entrorouter.data.cost import estimate_tokens
from entrorouter.data.table import OutcomeTable

DOMAINS = ("math", "code", "law", "medicine", "history", "writing")

# name: (US$/1M input, US$/1M output, skill per domain in DOMAINS order)
DEMO_POOL: dict[str, tuple[float, float, tuple[float, ...]]] = {
    "tiny-3b": (0.10, 0.10, (-1.2, -1.0, -0.8, -0.9, -0.4, -0.2)),
    "small-8b": (0.20, 0.20, (-0.6, -0.5, -0.3, -0.4, 0.1, 0.3)),
    "math-7b": (0.20, 0.20, (1.5, -0.4, -1.0, -0.9, -0.8, -0.8)),
    "code-16b": (0.30, 0.30, (-0.1, 1.6, -0.9, -0.8, -0.6, -0.5)),
    "medium-34b": (0.80, 0.80, (0.1, 0.2, 0.3, 0.4, 0.6, 0.7)),
    "large-70b": (0.90, 0.90, (0.6, 0.5, 0.9, 0.8, 1.5, 1.4)),
    "mini-api": (0.15, 0.60, (0.3, 0.4, 0.2, 0.3, 0.5, 0.8)),
    "frontier-api": (2.50, 10.00, (1.4, 1.5, 1.5, 1.4, 1.5, 1.4)),
}

_VOCAB = {
    "math": (
        "integral",
        "derivative",
        "prime",
        "matrix",
        "eigenvalue",
        "probability",
        "triangle",
        "series",
        "polynomial",
        "limit",
    ),
    "code": (
        "function",
        "python",
        "recursion",
        "array",
        "sorting",
        "API",
        "regex",
        "class",
        "bug",
        "unit test",
    ),
    "law": (
        "contract",
        "tort",
        "liability",
        "statute",
        "appeal",
        "plaintiff",
        "negligence",
        "jurisdiction",
        "precedent",
        "clause",
    ),
    "medicine": (
        "diagnosis",
        "symptom",
        "dosage",
        "patient",
        "enzyme",
        "infection",
        "therapy",
        "artery",
        "antibiotic",
        "syndrome",
    ),
    "history": (
        "empire",
        "treaty",
        "revolution",
        "dynasty",
        "war",
        "colony",
        "parliament",
        "century",
        "monarch",
        "reform",
    ),
    "writing": (
        "poem",
        "story",
        "essay",
        "slogan",
        "metaphor",
        "letter",
        "dialogue",
        "haiku",
        "tone",
        "headline",
    ),
}
_EASY = (
    "What is the {a}?",
    "Define {a} in one sentence.",
    "Name one {a} example.",
    "Quick question about a {a}.",
)
_HARD = (
    "Prove rigorously, step by step, how the {a} relates to the {b} and justify every assumption.",
    "Analyse in depth the interaction between {a}, {b} and {c}, considering edge cases.",
    "Derive and explain, with a worked multi-step argument, why the {a} constrains the {b}.",
)
_MEDIUM = (
    "Explain how a {a} affects the {b}.",
    "Compare the {a} and the {b} briefly.",
    "Give an example where a {a} changes a {b}.",
)
_ANSWER_CHARS = {
    "math": 900,
    "code": 1400,
    "law": 1100,
    "medicine": 1000,
    "history": 900,
    "writing": 1300,
}


def make_demo_table(n_queries: int = 4000, seed: int = 0) -> OutcomeTable:
    """The simulated pool described in the module docstring (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    models = list(DEMO_POOL)
    skill = np.array([DEMO_POOL[m][2] for m in models])  # (K, D)
    domain = rng.integers(len(DOMAINS), size=n_queries)
    difficulty = rng.normal(0.0, 1.0, size=n_queries)

    texts = []
    for d, diff in zip(domain, difficulty, strict=True):
        words = rng.choice(_VOCAB[DOMAINS[d]], size=3, replace=False)
        templates = _EASY if diff < -0.5 else _HARD if diff > 0.5 else _MEDIUM
        template = templates[rng.integers(len(templates))]
        texts.append(template.format(a=words[0], b=words[1], c=words[2]))

    p_correct = 1.0 / (1.0 + np.exp(-1.7 * (skill[:, domain].T - difficulty[:, None])))
    scores = (rng.random(p_correct.shape) < p_correct).astype(np.float64)

    in_tok = 200.0 + estimate_tokens(np.array([len(t) for t in texts]))
    answer_chars = np.array([_ANSWER_CHARS[DOMAINS[d]] for d in domain]) * np.exp(0.3 * difficulty)
    out_tok = estimate_tokens(answer_chars)[:, None] * rng.lognormal(0.0, 0.2, size=(n_queries, len(models)))
    prices = np.array([DEMO_POOL[m][:2] for m in models])
    costs = (in_tok[:, None] * prices[:, 0] + out_tok * prices[:, 1]) / 1e6

    return OutcomeTable.from_arrays(
        query_ids=[f"demo-{i}" for i in range(n_queries)],
        queries=texts,
        models=models,
        scores=scores,
        costs=costs,
        tasks=[DOMAINS[d] for d in domain],
        splits=np.where(np.arange(n_queries) % 5 == 0, "test", "train"),
        name="demo (simulated)",
        meta={"simulated": True, "seed": seed},
    )
