"""DeadLetterGuard: stop when nearly everything recent went to the dead-letter topic."""

from __future__ import annotations

import pytest

from worker.core.guard import DeadLetterGuard


def test_trips_only_with_enough_events_and_a_dominant_share() -> None:
    guard = DeadLetterGuard(window=100, max_ratio=0.98, min_events=100)
    for _ in range(99):
        guard.record(True)
    assert not guard.tripped  # not enough events yet
    guard.record(True)
    assert guard.tripped and guard.ratio == 1.0


def test_a_few_results_keep_it_from_tripping_and_old_events_slide_out() -> None:
    guard = DeadLetterGuard(window=100, max_ratio=0.98, min_events=100)
    for i in range(1000):
        guard.record(i % 10 != 0)  # 90 % dead-lettered
    assert not guard.tripped and guard.ratio == pytest.approx(0.9)
    for dead in [False] * 3 + [True] * 97:
        guard.record(dead)
    assert not guard.tripped and guard.ratio == pytest.approx(0.97)
    guard.record(True)  # the oldest result slides out: 98 of 100
    assert guard.tripped


def test_tripped_is_sticky_until_reset() -> None:
    guard = DeadLetterGuard(window=10, max_ratio=0.9, min_events=10)
    for _ in range(10):
        guard.record(True)
    for _ in range(10):
        guard.record(False)
    assert guard.tripped
    guard.reset()
    assert not guard.tripped and guard.ratio == 0.0


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        DeadLetterGuard(window=10, min_events=11)
    with pytest.raises(ValueError):
        DeadLetterGuard(max_ratio=1.5)


def test_a_result_recounted_as_a_dead_letter_counts_once() -> None:
    """A result the broker refused for its size became a dead letter: the event counts once, as dead-lettered."""
    guard = DeadLetterGuard(window=10, max_ratio=1.0, min_events=10)
    for _ in range(9):
        guard.record(True)
    guard.record(False)  # the result, produced
    assert not guard.tripped and guard.size() == 10
    assert guard.recount_as_dead_letter()  # ... refused: the window is now 10 dead letters of 10 events
    assert guard.tripped and guard.ratio == 1.0 and guard.size() == 10


def test_a_recount_whose_result_slid_out_is_recorded_as_a_dead_letter() -> None:
    guard = DeadLetterGuard(window=4, max_ratio=1.0, min_events=4)
    for _ in range(4):
        guard.record(True)
    guard.reset()
    assert not guard.recount_as_dead_letter() and guard.size() == 1 and guard.ratio == 1.0
