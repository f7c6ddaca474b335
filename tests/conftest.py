"""Shared fixtures: the public datasets folder and small trained routers.

The datasets live outside the project (``ENTROROUTER_DATA_DIR``, which ``.ci/run`` points
at ``../shared/data``). Without it the real-data tests skip, unless
``ENTROROUTER_REQUIRE_DATA=1`` (set by CI) turns the skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from entrorouter.data.datasets import DATA_DIR_ENV
from entrorouter.router.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get(DATA_DIR_ENV)
    path = Path(value) if value else REPO.parent / "shared" / "data"
    if not path.is_dir():
        message = f"public datasets not found (set {DATA_DIR_ENV}, e.g. to ../shared/data)"
        if os.environ.get("ENTROROUTER_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Embedding cache in a per-session folder unless the caller chose one."""
    if not os.environ.get("ENTROROUTER_CACHE_DIR"):
        os.environ["ENTROROUTER_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


FAST = {
    "encoder": "hashed-tfidf",
    "capability": "knn",
    "sft_epochs": 2,
    "rl_iterations": 4,
    "hidden": 64,
    # No calibration curve (K more fits) unless a test needs one: then a fixed λ is required.
    "calibration_folds": 0,
    "lam": 0.1,
    "policy_seeds": 1,  # a third of the default's policy training
}
#: FAST with the calibration curve, for routers that must accept a target retention, and the
#: default number of policies (the saved router most routing tests route with).
CALIBRATED = {**FAST, "calibration_folds": 3, "lam": None, "policy_seeds": TrainConfig.policy_seeds}


@pytest.fixture(scope="session")
def demo_table():
    from entrorouter.data.demo import make_demo_table

    return make_demo_table(n_queries=800, seed=1)


@pytest.fixture(scope="session")
def tiny_router(demo_table, tmp_path_factory):
    """A real router trained in a few seconds (hashed TF-IDF features), saved once."""
    from entrorouter.router import Router

    router = Router(TrainConfig(**CALIBRATED)).fit(demo_table.split("train"))
    path = tmp_path_factory.mktemp("routers") / "tiny"
    router.save(path)
    return path


@pytest.fixture
def fake(_fake_server):
    """The folder's session-wide fake backend (its ``_fake_server`` fixture: tests/collection,
    tests/serving), with counters and behaviours reset around each test."""
    _fake_server.reset()
    yield _fake_server
    _fake_server.reset()
