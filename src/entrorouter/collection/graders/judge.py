"""LLM-as-judge: a configured judge backend scores the answer against a rubric."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from entrorouter.backends import (
    BackendConfig,
    BackendError,
    ClientShards,
    RetryPolicy,
    parse_backends,
    post_chat_completion,
)
from entrorouter.collection.graders.base import Grader, GradingError
from entrorouter.errors import ConfigError

if TYPE_CHECKING:
    from entrorouter.collection.queries import Query

DEFAULT_RUBRIC = (
    "Judge whether the answer correctly and completely answers the question. When a "
    "reference answer is given, the answer must agree with it; wording may differ."
)

PROMPT = """You are grading an answer to a question.

Rubric: {rubric}

Question:
{question}

Reference answer:
{reference}

Answer to grade:
{answer}

Reply with a short justification, then a last line "Score: N" where N is a whole number \
from 0 (wrong) to {scale} (fully correct)."""

_SCORE = re.compile(r"score\W{0,3}\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?))?", re.IGNORECASE)


def parse_judge_score(reply: str, scale: float) -> float | None:
    """The last "Score: N" (or "Score: N/M") of a judge reply, mapped to [0, 1]."""
    matches = _SCORE.findall(reply)
    if not matches:
        return None
    value, out_of = matches[-1]
    top = float(out_of) if out_of else scale
    if top <= 0:
        return None
    return min(1.0, max(0.0, float(value) / top))


@dataclass
class Judge(Grader):
    """A score in [0, 1] from a judge model that reads the question, the reference (when
    there is one), the answer and a rubric. pool.yaml: ``graders: {judge: {backend: {...},
    rubric: "...", scale: 10, max_tokens: 512}}``; ``backend`` is one entry in the backend
    format. Judge calls are retried like collection calls (the backend's ``max_retries``,
    paced by pool.yaml's ``retry:``); a judge that fails or replies without a score leaves
    the pair ungraded (an error, re-graded on the next run)."""

    name: ClassVar[str] = "judge"
    backend: BackendConfig | None = field(default=None, repr=False)  # its headers may hold secrets
    rubric: str = DEFAULT_RUBRIC
    scale: float = 10.0
    max_tokens: int = 512
    retry: RetryPolicy = field(default_factory=RetryPolicy, init=False, repr=False, compare=False)
    _connections: ClientShards | None = field(default=None, init=False, repr=False, compare=False)
    _slots: asyncio.Semaphore | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.backend is None:
            raise ValueError("the judge needs a backend: graders: {judge: {backend: {name, base_url, ...}}}")
        if self.scale <= 0 or self.max_tokens < 1:
            raise ValueError("expected scale > 0 and max_tokens >= 1")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str) -> Grader:
        raw_backend = options.get("backend")
        if not isinstance(raw_backend, dict):
            raise ConfigError(
                f"{where}.backend: the judge needs a backend entry "
                "{name, base_url, model, api_key_env, price} (the pool's backend format)"
            )
        (backend,) = parse_backends([raw_backend], f"{where}.backend")
        values = cls.coerce_options({k: v for k, v in options.items() if k != "backend"}, where)
        return cls.build(where, backend=backend, **values)

    @classmethod
    def check_query(cls, query: Query) -> None:
        """The judge can grade without a reference."""

    def fingerprint(self) -> str:
        # The judge's identity, not its endpoint or key: moving it to another host keeps grades.
        assert self.backend is not None
        return f"judge:{self.backend.model}:{self.rubric}:{self.scale}:{self.max_tokens}"

    async def grade(self, answer: str, query: Query) -> float:
        assert self.backend is not None
        if self._connections is None:
            self._connections = ClientShards(self.backend.max_concurrency)
            self._slots = asyncio.Semaphore(self.backend.max_concurrency)
        prompt = PROMPT.format(
            rubric=self.rubric,
            question=query.text,
            reference="\n".join(query.references) or "(none given)",
            answer=answer,
            scale=f"{self.scale:g}",
        )
        body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": self.max_tokens}
        assert self._slots is not None
        async with self._slots, self._connections.connection() as client:
            try:
                response = await post_chat_completion(client, self.backend, body, policy=self.retry)
            except BackendError as exc:
                raise GradingError(f"judge: {exc}") from None
        reply = response.content
        if reply is None:
            raise GradingError("judge response has no message content")
        score = parse_judge_score(reply, self.scale)
        if score is None:
            raise GradingError(f"judge reply has no 'Score: N' line: {reply[-200:]!r}")
        return score

    async def aclose(self) -> None:
        if self._connections is not None:
            await self._connections.aclose()
            self._connections = None
