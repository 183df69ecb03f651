"""ByteBudget with real threads: waiting for room, first come first served, cancellation, bounds, accounting."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from worker.core.budget import BudgetTimeout, ByteBudget, Reservation, WaitCancelled

BOUND = 10.0  # seconds a condition may take to come true before the test calls it hung


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND} s: {what}")
        time.sleep(0.002)


class Waiter:
    """``budget.acquire(size, ...)`` in its own thread; the reservation or the exception lands in ``.result``."""

    def __init__(self, budget: ByteBudget, size: int, **kwargs: object) -> None:
        self.result: Reservation | BaseException | None = None
        self.done = threading.Event()

        def run() -> None:
            try:
                self.result = budget.acquire(size, **kwargs)  # type: ignore[arg-type]
            except BaseException as exc:
                self.result = exc
            self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def reservation(self) -> Reservation:
        assert self.done.wait(BOUND), "the waiter never got its reservation"
        assert isinstance(self.result, Reservation), self.result
        return self.result


def test_acquire_within_capacity_is_immediate_and_accounted() -> None:
    budget = ByteBudget(100)
    a = budget.acquire(60)
    b = budget.acquire(40)
    assert (a.size, b.size, budget.in_use, budget.waiting) == (60, 40, 100, 0)
    a.release()
    a.release()  # idempotent: the second release gives nothing back twice
    assert budget.in_use == 40 and a.size == 0
    with b:
        pass
    assert budget.in_use == 0 and budget.peak == 100


def test_shrink_gives_back_the_unused_part_and_never_grows() -> None:
    budget = ByteBudget(1000)
    r = budget.acquire(800)
    r.shrink(300)
    assert (r.size, budget.in_use) == (300, 300)
    with pytest.raises(ValueError):
        r.shrink(301)
    with pytest.raises(ValueError):
        r.shrink(-1)
    r.release()
    r.shrink(0)  # nothing left: a no-op
    assert budget.in_use == 0


@pytest.mark.parametrize("size", [-1, 101])
def test_impossible_sizes_fail_at_once_instead_of_waiting_forever(size: int) -> None:
    budget = ByteBudget(100)
    with pytest.raises(ValueError):
        budget.acquire(size)
    with pytest.raises(ValueError):
        budget.try_acquire(size)
    assert budget.waiting == 0


def test_capacity_and_poll_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ByteBudget(0)
    with pytest.raises(ValueError):
        ByteBudget(10, poll_s=0)


def test_a_full_budget_makes_the_caller_wait_until_room_is_given_back() -> None:
    budget = ByteBudget(100, poll_s=5.0)  # a long poll: the wake-up must come from the release itself
    held = budget.acquire(70)
    waiter = Waiter(budget, 50)
    eventually(lambda: budget.waiting == 1, "the second caller waits")
    assert not waiter.done.is_set() and budget.in_use == 70
    assert budget.try_acquire(10) is None  # someone is waiting ahead: no overtaking, even though 10 would fit
    started = time.monotonic()
    held.shrink(50)  # room for 50 now: giving back part of a reservation wakes the waiter too
    r = waiter.reservation()
    assert time.monotonic() - started < 2.0
    assert (r.size, budget.in_use, budget.waiting) == (50, 100, 0)


def test_waiters_are_served_first_come_first_served() -> None:
    budget = ByteBudget(100)
    held = budget.acquire(100)
    big = Waiter(budget, 100)
    eventually(lambda: budget.waiting == 1, "the big request queues")
    small = Waiter(budget, 10)
    eventually(lambda: budget.waiting == 2, "the small request queues behind it")
    held.shrink(50)  # the small one would fit now, but the big one is first in line
    time.sleep(0.2)  # not a synchronisation: only gives an overtaking bug the chance to show
    assert not big.done.is_set() and not small.done.is_set()
    held.release()
    big_r = big.reservation()
    assert not small.done.is_set()
    big_r.release()
    assert small.reservation().size == 10


def test_cancelled_ends_the_wait_promptly_and_leaves_nothing_behind() -> None:
    budget = ByteBudget(100, poll_s=0.01)
    held = budget.acquire(100)
    stop = threading.Event()
    first = Waiter(budget, 60, cancelled=stop.is_set)
    eventually(lambda: budget.waiting == 1, "the first caller waits")
    second = Waiter(budget, 40)
    eventually(lambda: budget.waiting == 2, "the second caller waits behind it")
    stop.set()
    assert first.done.wait(BOUND)
    assert isinstance(first.result, WaitCancelled)
    assert budget.waiting == 1 and budget.in_use == 100
    held.shrink(60)  # the cancelled caller no longer blocks the one behind it
    assert second.reservation().size == 40
    assert budget.in_use == 100


def test_cancelled_is_checked_even_when_room_never_comes() -> None:
    budget = ByteBudget(10, poll_s=0.01)
    budget.acquire(10)  # never released
    calls = 0

    def cancelled() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    with pytest.raises(WaitCancelled):
        budget.acquire(5, cancelled=cancelled)
    assert budget.waiting == 0


def test_the_wait_is_bounded_by_timeout() -> None:
    budget = ByteBudget(10, poll_s=1.0)
    budget.acquire(10)
    started = time.monotonic()
    with pytest.raises(BudgetTimeout):
        budget.acquire(1, timeout_s=0.1)
    assert 0.1 <= time.monotonic() - started < BOUND
    assert budget.waiting == 0 and budget.in_use == 10


def test_many_threads_never_exceed_the_capacity_and_give_everything_back() -> None:
    capacity = 1000
    budget = ByteBudget(capacity, poll_s=0.01)
    lock = threading.Lock()
    held_now = 0
    most = 0
    failures: list[BaseException] = []

    def work(seed: int) -> None:
        nonlocal held_now, most
        rng = random.Random(seed)
        try:
            for _ in range(100):
                want = rng.randint(1, 400)
                r = budget.acquire(want, timeout_s=BOUND)
                keep = rng.randint(0, want)
                r.shrink(keep)  # a download smaller than reserved
                with lock:
                    held_now += keep
                    most = max(most, held_now)
                    assert held_now <= capacity
                time.sleep(rng.random() / 2000)
                with lock:
                    held_now -= keep
                r.release()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert budget.in_use == 0 and budget.waiting == 0
    assert 0 < most <= capacity and budget.peak <= capacity


def test_giving_bytes_back_wakes_only_the_first_waiter() -> None:
    # Hundreds of slots may wait at once: a release must not wake them all to find out who is first.
    budget = ByteBudget(100, poll_s=60.0)  # no polling wake-ups within the test
    held = budget.acquire(100)
    checks = [0] * 20

    def counting(i: int) -> Callable[[], bool]:
        def cancelled() -> bool:
            checks[i] += 1  # once per wake-up
            return False

        return cancelled

    waiters = []
    for i in range(20):
        waiters.append(Waiter(budget, 100, cancelled=counting(i)))
        eventually(lambda i=i: budget.waiting == i + 1 and checks[i] == 1, "each caller queues in turn")
    held.release()
    first = waiters[0].reservation()
    assert checks[1:] == [1] * 19  # checked once on queueing, never woken by a release that was not theirs
    first.release()
    assert waiters[1].reservation().size == 100
    assert checks[2:] == [1] * 18


def test_try_grow_takes_free_room_without_waiting_or_overtaking() -> None:
    budget = ByteBudget(100, poll_s=0.01)
    r = budget.acquire(30)
    assert r.try_grow(20) and r.size == 30  # not a shrink: already holds more
    assert r.try_grow(80) and (r.size, budget.in_use) == (80, 80)
    assert not r.try_grow(101) and r.size == 80  # no room: nothing changes, nothing waits
    other = budget.acquire(20)
    waiter = Waiter(budget, 10)
    eventually(lambda: budget.waiting == 1, "a caller queues")
    other.shrink(5)  # room for the waiter, who is first in line: a grow must not take it
    assert not r.try_grow(85)
    assert waiter.reservation().size == 10
    assert r.size == 80 and budget.in_use == 95


def test_a_waiter_reclaims_cached_memory_before_it_waits() -> None:
    budget = ByteBudget(100, poll_s=60.0)  # only reclaiming can make room within the test
    cache = [budget.acquire(60)]  # memory someone keeps as a cache
    busy = budget.acquire(10)
    calls = 0

    def reclaim() -> None:
        nonlocal calls
        calls += 1
        while cache:
            cache.pop().release()

    budget.add_reclaimer(reclaim)
    first = budget.acquire(30)
    assert calls == 0  # it fitted: the cache is left alone
    second = budget.acquire(30)  # 100 of 100 in use: only the cache can make room
    assert second.size == 30 and cache == [] and calls == 1 and budget.in_use == 70
    budget.remove_reclaimer(reclaim)
    for r in (busy, first, second):
        r.release()
    cache.append(budget.acquire(100))
    with pytest.raises(BudgetTimeout):
        budget.acquire(1, timeout_s=0.05)  # no reclaimer any more: the cache stays
    assert calls == 1
