"""Plan the missing (query, model) pairs, check the backends, send, grade and record.

Concurrency: each backend gets ``min(max_concurrency, --concurrency)`` workers that pull
its pairs in query order; a shared semaphore bounds the calls in flight over all backends
to ``--concurrency``. Every worker owns a one-connection HTTP client: httpx's shared pool
spends O(connections) per request, which caps a single client at a few hundred calls/s.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from entrorouter.backends import (
    BackendConfig,
    BackendError,
    ChatResponse,
    RetryPolicy,
    describe_error,
    post_chat_completion,
)
from entrorouter.collection.graders import Grader, GradingError
from entrorouter.collection.queries import Query
from entrorouter.collection.store import ERROR, GRADED, UNGRADED, Outcome, ProgressStore
from entrorouter.data.cost import CHARS_PER_TOKEN
from entrorouter.errors import ConfigError
from entrorouter.messages import message_text

if TYPE_CHECKING:
    import ssl

    import httpx


# ------------------------------------------------------------------ planning
@dataclass(frozen=True, slots=True)
class Job:
    """One pair to process: send it (then grade), or grade its stored answer again."""

    query: Query
    backend: BackendConfig
    send: bool
    request_hash: str
    grade_hash: str


@dataclass
class PlanCounts:
    """How many pairs a run must send, grade again, or can skip."""

    done: int = 0
    to_send: int = 0
    to_grade: int = 0
    per_backend: dict[str, int] = field(default_factory=dict)  # pairs to process, by backend name

    @property
    def total(self) -> int:
        return self.done + self.to_send + self.to_grade


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


class Plan:
    """What a run must do, decided pair by pair against the store when a worker asks.

    A pair is sent when it was never answered, its call failed, or what would be sent
    changed (messages, request fields, model id); it is only graded again when its answer
    is stored but the grading failed or changed (grader, its options, reference, choices,
    tests). Nothing is kept per pair, so memory stays flat however many pairs there are.
    """

    def __init__(
        self,
        queries: Sequence[Query],
        backends: Sequence[BackendConfig],
        graders: Mapping[str, Grader],
        request: Mapping[str, Any],
        store: ProgressStore,
    ) -> None:
        self.queries, self.backends, self._store = queries, backends, store
        request_json = json.dumps(dict(request), sort_keys=True)
        fingerprints = {name: grader.fingerprint() for name, grader in graders.items()}
        # Per query, not per pair: (what is sent, how it is graded), hashed once.
        self._hashes = {
            q.id: (
                _digest(json.dumps(q.messages, sort_keys=True, ensure_ascii=False), request_json),
                _digest(fingerprints[q.grader], json.dumps([q.references, q.choices, q.tests])),
            )
            for q in queries
        }

    def job(self, query: Query, backend: BackendConfig) -> Job | None:
        """The work for one pair, or None when it is finished."""
        sent, grade_hash = self._hashes[query.id]
        request_hash = _digest(sent, backend.model)
        state = self._store.state(query.id, backend.name)
        if state is None or state.status == ERROR or state.request_hash != request_hash:
            return Job(query, backend, True, request_hash, grade_hash)
        if state.status == UNGRADED or state.grade_hash != grade_hash:
            return Job(query, backend, False, request_hash, grade_hash)
        return None

    def jobs(self, backend: BackendConfig) -> Iterator[Job]:
        """The backend's unfinished pairs, in query order, generated as they are consumed."""
        for query in self.queries:
            job = self.job(query, backend)
            if job is not None:
                yield job

    def count(self) -> PlanCounts:
        """One pass over every pair (a primary-key lookup each), for the progress bar."""
        counts = PlanCounts()
        for backend in self.backends:
            pending = 0
            for query in self.queries:
                job = self.job(query, backend)
                if job is None:
                    counts.done += 1
                    continue
                pending += 1
                if job.send:
                    counts.to_send += 1
                else:
                    counts.to_grade += 1
            counts.per_backend[backend.name] = pending
        return counts


# ------------------------------------------------------------------ preflight
async def check_backends(backends: Sequence[BackendConfig], source: str) -> list[str]:
    """Fail fast on an unreachable backend or a rejected key; warnings for the rest.

    Asks each backend's ``GET /models``. Any HTTP answer but 401/403 means reachable
    (some servers do not implement /models); a model id missing from a /models list is a
    warning, since proxies often list only part of what they serve.
    """
    import httpx

    async with httpx.AsyncClient() as client:
        results = await asyncio.gather(*(_check(client, b, source) for b in backends), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [warning for warning in results if isinstance(warning, str)]


async def _check(client: httpx.AsyncClient, backend: BackendConfig, source: str) -> str | None:
    import httpx

    # A short read limit: a server that accepts connections but never answers is not usable.
    timeout = httpx.Timeout(min(backend.timeout_s, 30.0), connect=backend.connect_timeout_s)
    try:
        response = await client.get(backend.models_url, headers=backend.headers(), timeout=timeout)
    except httpx.TransportError as exc:
        raise ConfigError(
            f"{source}: backend {backend.name!r} at {backend.base_url} is unreachable ({describe_error(exc)})"
        ) from None
    if response.status_code in (401, 403):
        key = f" from ${backend.api_key_env}" if backend.api_key_env else " (no api_key_env is set)"
        raise ConfigError(
            f"{source}: backend {backend.name!r} at {backend.base_url} rejected the API key{key} "
            f"(HTTP {response.status_code})"
        )
    listed = _listed_models(response)
    if listed and backend.model not in listed:
        return f"backend {backend.name!r}: model {backend.model!r} is not in the /models list of {backend.base_url}"
    return None


def _listed_models(response: httpx.Response) -> set[str]:
    if response.status_code != 200:
        return set()
    try:
        data = response.json().get("data")
        return {str(item["id"]) for item in data}
    except (ValueError, AttributeError, TypeError, KeyError):
        return set()


# ------------------------------------------------------------------ running
class ProgressSink(Protocol):
    """Told about every finished pair (:class:`~entrorouter.collection.progress.ProgressDisplay`)."""

    def advance(self, backend: str, ok: bool) -> None: ...


class NoProgress:
    """A silent :class:`ProgressSink` (the Python API without a console)."""

    def advance(self, backend: str, ok: bool) -> None:
        pass


@dataclass
class RunCounts:
    """What this run did (the table's totals are in the output report)."""

    sent: int = 0
    call_errors: int = 0
    graded: int = 0
    grading_errors: int = 0


class Collector:
    """Runs a :class:`Plan`: send, grade, record, report progress."""

    def __init__(
        self,
        store: ProgressStore,
        graders: Mapping[str, Grader],
        request: Mapping[str, Any],
        concurrency: int,
        progress: ProgressSink | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._store = store
        self._graders = graders
        self._request = dict(request)
        self._concurrency = concurrency
        self._progress = progress or NoProgress()
        self._retry = retry or RetryPolicy()
        self._slots = asyncio.Semaphore(concurrency)  # calls in flight over all backends
        self.counts = RunCounts()

    async def run(self, plan: Plan, planned: PlanCounts) -> RunCounts:
        import httpx

        ssl_context = httpx.create_ssl_context()  # shared: building one per client is slow
        workers = []
        for backend in plan.backends:
            pending = plan.jobs(backend)  # one generator, shared by the backend's workers
            for _ in range(min(backend.max_concurrency, self._concurrency, planned.per_backend[backend.name])):
                workers.append(asyncio.create_task(self._worker(pending, ssl_context)))
        try:
            await asyncio.gather(*workers)
        finally:  # on an error or Ctrl-C: stop the other workers before returning
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for grader in self._graders.values():
                await grader.aclose()
        return self.counts

    async def _worker(self, jobs: Iterator[Job], ssl_context: ssl.SSLContext) -> None:
        import httpx

        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(limits=limits, verify=ssl_context) as client:
            for job in jobs:  # workers of a backend share this iterator
                outcome = await self._send(client, job) if job.send else self._stored(job)
                if outcome.status != ERROR:
                    outcome = await self._grade(job, outcome)
                self._store.record(outcome)
                self._progress.advance(job.backend.name, ok=outcome.status == GRADED)

    async def _send(self, client: httpx.AsyncClient, job: Job) -> Outcome:
        body = {**self._request, "messages": list(job.query.messages)}
        self.counts.sent += 1
        async with self._slots:
            try:
                response = await post_chat_completion(client, job.backend, body, policy=self._retry)
            except BackendError as exc:
                self.counts.call_errors += 1
                return Outcome(job.query.id, job.backend.name, ERROR, job.request_hash, error=_error_text(exc))
        outcome = _answered(job, response)
        if outcome.status == ERROR:
            self.counts.call_errors += 1
        return outcome

    def _stored(self, job: Job) -> Outcome:
        outcome = self._store.get(job.query.id, job.backend.name)
        assert outcome is not None and outcome.response is not None, "planned a re-grade without an answer"
        return outcome

    async def _grade(self, job: Job, outcome: Outcome) -> Outcome:
        assert outcome.response is not None
        grader = self._graders[job.query.grader]
        try:
            score = float(await grader.grade(outcome.response, job.query))
        except GradingError as exc:
            self.counts.grading_errors += 1
            return replace(outcome, status=UNGRADED, score=None, grade_hash=None, error=f"grading failed: {exc}")
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"grader {grader.name!r} returned {score}, outside [0, 1]")
        self.counts.graded += 1
        return replace(outcome, status=GRADED, score=score, grade_hash=job.grade_hash, error=None)


def _answered(job: Job, response: ChatResponse) -> Outcome:
    """An answered call as an outcome: text, tokens (estimated when usage is missing), cost."""
    content = response.content
    if content is None:
        return Outcome(
            job.query.id, job.backend.name, ERROR, job.request_hash, error="the response has no message content"
        )
    usage = response.body.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
    estimated = not (_is_count(prompt_tokens) and _is_count(completion_tokens))
    if estimated:
        prompt_chars = sum(len(message_text(m)) for m in job.query.messages)
        prompt_tokens = math.ceil(prompt_chars / CHARS_PER_TOKEN)
        completion_tokens = math.ceil(len(content) / CHARS_PER_TOKEN)
    return Outcome(
        query_id=job.query.id,
        model=job.backend.name,
        status=UNGRADED,
        request_hash=job.request_hash,
        response=content,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        usage_estimated=estimated,
        latency_s=response.latency_s,
        cost=job.backend.cost(prompt_tokens, completion_tokens),
        attempts=response.attempts,
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _error_text(exc: BackendError) -> str:
    """The error with the provider's own message when it sent one (never a header or key)."""
    detail = exc.body.get("error") if isinstance(exc.body, dict) else None
    message = detail.get("message") if isinstance(detail, dict) else None
    text = f"{exc}: {message}" if isinstance(message, str) else str(exc)
    return text[:500]
