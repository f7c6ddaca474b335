"""The cost predictor the router and the gateway's dashboard share."""

from __future__ import annotations

import numpy as np

from entrorouter.data.cost import CostPredictor


def test_predict_one_matches_predict_including_the_clipped_ends() -> None:
    rng = np.random.default_rng(0)
    texts = ["x" * int(n) for n in rng.integers(1, 400, size=60)]
    lengths = np.array([len(t) for t in texts], dtype=float)
    costs = np.stack([1e-4 + 2e-6 * lengths, np.full(60, 3e-3), 5e-5 + 1e-7 * lengths], axis=1)
    costs[::7, 1] = np.nan  # a model not tried on every query
    predictor = CostPredictor().fit(texts, costs)
    probes = ["", "short", "x" * 250, "x" * 5000]  # 0 and 5,000 characters fall outside the fitted range
    expected = predictor.predict(probes)
    got = np.array([[predictor.predict_one(t, k) for k in range(3)] for t in probes])
    np.testing.assert_allclose(got, expected)
    assert got[3, 0] == costs[:, 0].max()  # clipped to the highest cost seen
