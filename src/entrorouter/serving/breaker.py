"""A circuit breaker per backend: stop sending traffic to a backend that keeps failing.

States: *closed* (traffic flows) → after ``failure_threshold`` consecutive failures →
*open* (the backend is skipped) → after ``cooldown_s`` → *half-open*: exactly one request,
the probe, is let through; its success closes the circuit, its failure opens it again for
another cool-down.

Every call happens on the gateway's event loop thread, so the state needs no lock. Each
request admitted by :meth:`CircuitBreaker.admit` must end with exactly one of
``record_success``, ``record_failure`` or ``record_abandoned``, given its permit.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Permit:
    """Leave to send one request; ``probe``: the single trial request of a half-open circuit."""

    probe: bool


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        cooldown_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> CircuitState:
        """The current state; an open circuit whose cool-down has passed reads half-open."""
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._set(CircuitState.HALF_OPEN)
        return self._state

    def admit(self) -> Permit | None:
        """A permit to send one request now, or None (open; half-open with its probe out)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return Permit(probe=False)
        if state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return Permit(probe=True)
        return None

    def record_success(self, permit: Permit) -> None:
        # Any success (even of a request admitted before the circuit opened) shows the
        # backend answers again.
        if permit.probe:
            self._probe_in_flight = False
        self._failures = 0
        self._set(CircuitState.CLOSED)

    def record_failure(self, permit: Permit) -> None:
        if permit.probe:
            self._probe_in_flight = False
            self._open()
        elif self._state is CircuitState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()
        # A late failure of a request admitted before the circuit opened changes nothing.

    def record_abandoned(self, permit: Permit) -> None:
        """The request ended without a verdict (the client left): free the probe slot."""
        if permit.probe:
            self._probe_in_flight = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
