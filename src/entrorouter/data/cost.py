"""Cost models: price cards (data, never code) and token estimates.

A price card maps each model to its price in US$ per 1M input and output tokens::

    {"_about": "where the prices come from", "model-a": {"input": 0.2, "output": 0.2}, ...}

Keys starting with ``_`` are comments. When a dataset has no per-call cost we estimate
tokens from text length (about 4 characters per token, the usual rule of thumb for
English with BPE tokenizers) and price them with the card.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from entrorouter.errors import DataError

CHARS_PER_TOKEN = 4.0


def estimate_tokens(n_chars: np.ndarray | float) -> np.ndarray:
    """Token estimate from a character count (~4 characters per token)."""
    return np.asarray(n_chars, dtype=np.float64) / CHARS_PER_TOKEN


@dataclass(frozen=True)
class PriceCard:
    """US$ per 1M tokens, input and output, per model."""

    prices: dict[str, tuple[float, float]]
    about: str = ""
    source: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PriceCard:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError("price card not found", file=path) from None
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg}, line {exc.lineno})", file=path) from None
        if not isinstance(raw, dict):
            raise DataError("expected a JSON object of model -> {input, output}", file=path)
        prices: dict[str, tuple[float, float]] = {}
        for model, entry in raw.items():
            if model.startswith("_"):
                continue
            try:
                pin, pout = float(entry["input"]), float(entry["output"])
            except (TypeError, KeyError, ValueError):
                raise DataError(
                    'expected {"input": <US$/1M tokens>, "output": <US$/1M tokens>}',
                    file=path,
                    column=model,
                ) from None
            if pin < 0 or pout < 0:
                raise DataError("prices must be >= 0", file=path, column=model)
            prices[model] = (pin, pout)
        return cls(prices=prices, about=str(raw.get("_about", "")), source=str(path))

    def require(self, models: list[str] | tuple[str, ...]) -> None:
        missing = [m for m in models if m not in self.prices]
        if missing:
            raise DataError(f"no price for model(s) {missing}", file=self.source or None)

    def cost(self, model: str, in_tokens: np.ndarray, out_tokens: np.ndarray) -> np.ndarray:
        """US$ for calls with the given token counts."""
        pin, pout = self.prices[model]
        return (np.asarray(in_tokens) * pin + np.asarray(out_tokens) * pout) / 1e6


def bundled_price_card(name: str) -> PriceCard:
    """A price card shipped with the package (``entrorouter/data/price_cards/<name>.json``)."""
    return PriceCard.load(Path(__file__).parent / "price_cards" / f"{name}.json")


class CostPredictor:
    """Predicted cost of sending a query to each model, from the query text alone.

    At routing time the realised cost of a call is unknown, so the router uses this
    prediction (DESIGN §3, "no leakage"): per model, least squares of the observed cost on
    the query's length in characters, clipped to the range observed for that model. With
    fewer than 10 outcomes for a model, or a negative slope, it is the model's mean cost.
    """

    def __init__(self) -> None:
        self.intercept: np.ndarray | None = None
        self.slope: np.ndarray | None = None
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None

    @staticmethod
    def _lengths(texts: list[str] | np.ndarray) -> np.ndarray:
        return np.array([len(t) for t in texts], dtype=np.float64)

    def fit(self, texts: list[str] | np.ndarray, costs: np.ndarray) -> CostPredictor:
        length = self._lengths(texts)
        k = costs.shape[1]
        self.intercept, self.slope = np.zeros(k), np.zeros(k)
        self.low, self.high = np.zeros(k), np.zeros(k)
        for j in range(k):
            seen = ~np.isnan(costs[:, j])
            y, x = costs[seen, j], length[seen]
            if y.size == 0:
                continue
            self.low[j], self.high[j] = y.min(), y.max()
            self.intercept[j] = y.mean()
            if y.size >= 10 and x.std() > 0:
                slope = np.cov(x, y, bias=True)[0, 1] / x.var()
                if slope > 0:
                    self.slope[j] = slope
                    self.intercept[j] = y.mean() - slope * x.mean()
        return self

    def predict(self, texts: list[str] | np.ndarray) -> np.ndarray:
        """(n, K) predicted US$ per call."""
        length = self._lengths(texts)[:, None]
        return np.clip(self.intercept + self.slope * length, self.low, self.high)

    def predict_one(self, text: str, model: int) -> float:
        """Model ``model``'s predicted US$ for one text: :meth:`predict` without building arrays
        (the gateway's dashboard calls it on every request)."""
        assert self.intercept is not None and self.slope is not None and self.low is not None and self.high is not None
        cost = self.intercept[model] + self.slope[model] * len(text)
        return float(min(max(cost, self.low[model]), self.high[model]))

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            "intercept": self.intercept,
            "slope": self.slope,
            "low": self.low,
            "high": self.high,
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> CostPredictor:
        predictor = cls()
        for key in ("intercept", "slope", "low", "high"):
            setattr(predictor, key, np.asarray(tensors[key], dtype=np.float64))
        return predictor
