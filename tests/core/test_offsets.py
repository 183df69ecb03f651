"""OffsetTracker: the commit contract (docs/design.md#the-commit-contract), by example and as properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.offsets import OffsetTracker

TP = ("in", 0)
TP2 = ("in", 1)


def test_commits_only_the_contiguous_prefix() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.track(TP, offset)
    assert tracker.commit_positions() == {}
    assert tracker.done(TP, 12)
    assert tracker.commit_positions() == {}  # 10 and 11 are still pending
    assert tracker.oldest_pending(TP) == 10
    assert tracker.done(TP, 10)
    assert tracker.commit_positions() == {TP: 11}
    assert tracker.done(TP, 11)
    assert tracker.commit_positions() == {TP: 13}  # 12 was done already
    assert tracker.in_flight(TP) == 1 and tracker.buffered(TP) == 1


def test_gaps_between_tracked_offsets_do_not_block() -> None:
    tracker = OffsetTracker()
    for offset in (5, 9, 20):
        tracker.track(TP, offset)
    tracker.done(TP, 9)
    tracker.done(TP, 5)
    assert tracker.commit_positions() == {TP: 10}
    tracker.done(TP, 20)
    assert tracker.commit_positions() == {TP: 21}


def test_positions_are_reported_only_when_they_advance() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0)
    tracker.track(TP2, 0)
    tracker.done(TP, 0)
    tracker.done(TP2, 0)
    assert tracker.commit_positions() == {TP: 1, TP2: 1}
    assert tracker.commit_positions([TP2]) == {TP2: 1}
    tracker.mark_committed({TP: 1})
    assert tracker.commit_positions() == {TP2: 1}
    tracker.mark_committed({TP2: 1, ("gone", 0): 5})
    assert tracker.commit_positions() == {}
    tracker.mark_committed({TP: 0})  # going backwards is ignored
    tracker.track(TP, 1)
    tracker.done(TP, 1)
    assert tracker.commit_positions() == {TP: 2}


def test_done_twice_or_untracked_is_refused() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 3)
    assert not tracker.done(TP, 2)
    assert tracker.done(TP, 3)
    assert not tracker.done(TP, 3)
    assert not tracker.done(TP2, 3)


def test_offsets_must_increase() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 3)
    with pytest.raises(ValueError, match="must increase"):
        tracker.track(TP, 3)


def test_revoke_forgets_and_late_completions_are_ignored() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.track(TP, offset)
    tracker.track(TP2, 0)
    tracker.done(TP, 0)
    tracker.done(TP, 1)
    assert tracker.commit_positions([TP]) == {TP: 2}  # what the revoke callback commits
    tracker.revoke([TP])
    assert not tracker.done(TP, 2)
    assert tracker.commit_positions() == {}
    assert tracker.in_flight() == 1 and tracker.in_flight(TP) == 0 and tracker.oldest_pending(TP) is None
    assert tracker.partitions() == [TP2]


def test_epoch_rejects_a_stale_completion_after_reassignment() -> None:
    tracker = OffsetTracker()
    old_epoch = tracker.track(TP, 7)
    tracker.revoke([TP])
    new_epoch = tracker.track(TP, 7)  # redelivered to us after the rebalance
    assert new_epoch != old_epoch and tracker.epoch(TP) == new_epoch
    assert not tracker.done(TP, 7, old_epoch)
    assert tracker.commit_positions() == {}
    assert tracker.done(TP, 7, new_epoch)
    assert tracker.commit_positions() == {TP: 8}


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[list[int], list[tuple[str, int]]]:
    """Offsets with gaps, and an interleaving of 'track next' and 'complete some tracked offset' steps."""
    gaps = draw(st.lists(st.integers(1, 4), min_size=1, max_size=60))
    offsets = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    order = draw(st.permutations(range(len(offsets))))
    steps: list[tuple[str, int]] = []
    tracked = 0
    # Complete offsets in `order`, but only after they are tracked; track lazily, as a consumer would.
    for index in order:
        while tracked <= index:
            steps.append(("track", offsets[tracked]))
            tracked += 1
        steps.append(("done", offsets[index]))
    return offsets, steps


@settings(max_examples=300, deadline=None)
@given(_scenario(), st.integers(0, 5))
def test_property_commit_never_passes_an_unfinished_offset(
    scenario: tuple[list[int], list[tuple[str, int]]], commit_every: int
) -> None:
    offsets, steps = scenario
    tracker = OffsetTracker()
    tracked: set[int] = set()
    finished: set[int] = set()
    committed = None
    for i, (action, offset) in enumerate(steps):
        if action == "track":
            tracker.track(TP, offset)
            tracked.add(offset)
        else:
            assert tracker.done(TP, offset)
            finished.add(offset)
        if commit_every and i % commit_every == 0:
            positions = tracker.commit_positions()
            if TP in positions:
                position = positions[TP]
                assert committed is None or position > committed
                # Every tracked offset below the position is finished; the first unfinished one is not passed.
                assert all(o in finished for o in tracked if o < position)
                unfinished = tracked - finished
                assert not unfinished or position <= min(unfinished)
                tracker.mark_committed(positions)
                committed = position
        assert tracker.in_flight(TP) == len(tracked - finished)
    assert tracker.commit_positions().get(TP, committed) == offsets[-1] + 1
    assert tracker.in_flight() == 0 and tracker.buffered() == 0 and tracker.oldest_pending(TP) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([TP, TP2]), st.booleans()), max_size=80), st.randoms())
def test_property_partitions_are_independent(ops: list[tuple[tuple[str, int], bool]], rnd: random.Random) -> None:
    tracker = OffsetTracker()
    next_offset = {TP: 0, TP2: 0}
    pending: dict[tuple[str, int], list[int]] = {TP: [], TP2: []}
    for tp, complete in ops:
        if complete and pending[tp]:
            offset = pending[tp].pop(rnd.randrange(len(pending[tp])))
            tracker.done(tp, offset)
        else:
            tracker.track(tp, next_offset[tp])
            pending[tp].append(next_offset[tp])
            next_offset[tp] += 1
    positions = tracker.commit_positions()
    for tp in (TP, TP2):
        expected = min(pending[tp]) if pending[tp] else next_offset[tp]
        assert positions.get(tp, 0) == expected


def test_uncommit_offers_the_position_again_after_a_failed_async_commit() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0)
    tracker.done(TP, 0)
    tracker.mark_committed(tracker.commit_positions())
    assert tracker.commit_positions() == {}
    tracker.uncommit([TP, ("gone", 0)])
    assert tracker.commit_positions() == {TP: 1}


def test_oldest_age_follows_the_oldest_unacknowledged_offset() -> None:
    now = [100.0]
    tracker = OffsetTracker(clock=lambda: now[0])
    assert tracker.oldest_age() == 0.0
    tracker.track(TP, 0)
    now[0] = 103.0
    tracker.track(TP, 1)
    tracker.track(TP2, 0)
    now[0] = 110.0
    assert tracker.oldest_age() == 10.0
    tracker.done(TP, 1)
    assert tracker.oldest_age() == 10.0  # offset 0 still pins it
    tracker.done(TP, 0)
    assert tracker.oldest_age() == 7.0 and tracker.oldest_age(now=112.0) == 9.0
    tracker.done(TP2, 0)
    assert tracker.oldest_age() == 0.0


def test_commit_gaps_count_processed_offsets_a_crash_would_repeat() -> None:
    tracker = OffsetTracker()
    for offset in range(100, 110):
        tracker.track(TP, offset)
    tracker.track(TP2, 0)
    assert tracker.commit_gaps() == {TP: 0, TP2: 0}
    for offset in (100, 101, 105):
        tracker.done(TP, offset)
    assert tracker.commit_gaps()[TP] == 6  # 100..105 would be consumed again
    tracker.mark_committed(tracker.commit_positions())  # position 102
    assert tracker.commit_gaps()[TP] == 4
