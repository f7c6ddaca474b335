"""The circuit breaker's state machine, on a controlled clock."""

from __future__ import annotations

from entrorouter.serving.breaker import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, Clock, list[CircuitState]]:
    clock, changes = Clock(), []
    return CircuitBreaker(threshold, cooldown, clock=clock, on_change=changes.append), clock, changes


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        permit = breaker.admit()
        assert permit is not None
        breaker.record_failure(permit)


def test_opens_after_consecutive_failures_only() -> None:
    breaker, _, changes = make(threshold=3)
    fail(breaker, 2)
    breaker.record_success(breaker.admit())  # a success resets the count
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    fail(breaker, 1)
    assert breaker.state is CircuitState.OPEN and breaker.admit() is None
    assert changes == [CircuitState.OPEN]


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker, clock, changes = make(threshold=1, cooldown=10)
    fail(breaker, 1)
    clock.now = 9.9
    assert breaker.admit() is None
    clock.now = 10.0
    probe = breaker.admit()
    assert probe is not None and probe.probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.admit() is None  # the probe is out: everyone else still skips
    breaker.record_success(probe)
    assert breaker.state is CircuitState.CLOSED
    assert changes == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


def test_failed_probe_reopens_for_a_new_cooldown() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=10)
    fail(breaker, 1)
    clock.now = 10
    breaker.record_failure(breaker.admit())
    assert breaker.state is CircuitState.OPEN
    clock.now = 19
    assert breaker.admit() is None
    clock.now = 20
    assert breaker.admit() is not None


def test_abandoned_probe_frees_the_slot() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=1)
    fail(breaker, 1)
    clock.now = 1
    probe = breaker.admit()
    breaker.record_abandoned(probe)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.admit() is not None


def test_late_results_of_requests_admitted_while_closed() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=1)
    early = breaker.admit()  # admitted while closed, answers late
    fail(breaker, 1)
    clock.now = 1
    probe = breaker.admit()
    breaker.record_failure(early)  # a stale failure neither reopens nor frees the probe
    assert breaker.state is CircuitState.HALF_OPEN and breaker.admit() is None
    breaker.record_success(probe)
    assert breaker.state is CircuitState.CLOSED
