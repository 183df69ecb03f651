"""CircuitBreaker state machine with a fake clock."""

from __future__ import annotations

import pytest

from worker.core.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so mypy does not narrow the property between transitions


def _breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(window=10, failure_ratio=0.5, min_calls=4, open_s=5, clock=clock)


def test_stays_closed_below_min_calls_and_below_the_ratio() -> None:
    breaker = _breaker(Clock())
    for _ in range(3):
        breaker.record(False)
    assert _state(breaker) is BreakerState.CLOSED  # 3 failures, but fewer than min_calls results
    for _ in range(7):
        breaker.record(True)
    for _ in range(4):
        breaker.record(False)  # window: 6 successes, 4 failures... oldest failures slid out
    assert _state(breaker) is BreakerState.CLOSED and breaker.allow()
    assert breaker.failure_share() == pytest.approx(0.4)


def test_opens_at_the_ratio_and_refuses_calls() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for success in (True, False, True, False):
        breaker.record(success)
    assert _state(breaker) is BreakerState.OPEN and breaker.is_open
    assert not breaker.allow()
    clock.now = 4.9
    assert not breaker.allow()


def test_half_open_admits_one_probe_and_closes_on_success() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(4):
        breaker.record(False)
    clock.now = 5.0
    assert _state(breaker) is BreakerState.HALF_OPEN and breaker.is_open
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time
    breaker.record(True)
    assert _state(breaker) is BreakerState.CLOSED and not breaker.is_open
    assert breaker.failure_share() == 0.0  # a fresh window
    for _ in range(3):
        breaker.record(False)
    assert _state(breaker) is BreakerState.CLOSED  # fewer than min_calls since closing


def test_a_failed_probe_reopens_for_another_period() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(4):
        breaker.record(False)
    clock.now = 5.0
    assert breaker.allow()
    breaker.record(False)
    assert _state(breaker) is BreakerState.OPEN
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()


def test_a_lost_probe_is_replaced_after_open_s() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(4):
        breaker.record(False)
    clock.now = 5.0
    assert breaker.allow()
    clock.now = 9.0
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()


def test_results_arriving_while_open_are_ignored() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(4):
        breaker.record(False)
    clock.now = 1.0
    breaker.record(True)
    breaker.record(False)
    assert _state(breaker) is BreakerState.OPEN
    clock.now = 5.0  # the open period was not extended by the late failure
    assert _state(breaker) is BreakerState.HALF_OPEN


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(window=10, min_calls=20)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_ratio=0)
