"""AimdRateLimiter with a fake clock: spacing, AIMD feedback and convergence on a throttling server."""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Callable

import pytest

from worker.core.ratelimit import AimdRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reservations_are_spaced_at_the_rate_after_the_burst() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(10, burst=2, clock=clock)
    waits = [limiter.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])
    clock.now += 10  # idle: the bucket refills only up to the burst
    assert [limiter.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])


def test_unlimited_never_waits_and_ignores_feedback() -> None:
    limiter = AimdRateLimiter(0, clock=Clock())
    assert all(limiter.reserve() == 0.0 for _ in range(1000))
    limiter.on_throttled()
    limiter.on_success()
    assert limiter.rate == 0.0 and limiter.unlimited


def test_throttling_cuts_once_per_cooldown() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(40, min_rate=5, clock=clock)
    for _ in range(20):  # a burst of code-15 answers to calls already sent
        limiter.on_throttled()
    assert limiter.rate == 20
    clock.now += 1.0
    limiter.on_throttled()
    limiter.on_throttled()
    assert limiter.rate == 10
    for _ in range(5):
        clock.now += 1.0
        limiter.on_throttled()
    assert limiter.rate == 5  # never below min_rate


def test_rate_recovers_quickly_to_90_percent_then_additively_up_to_max() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(40, increase_per_s=1.0, clock=clock)
    limiter.on_throttled()
    assert limiter.rate == 20
    for _ in range(7):  # 0.7 s of successes: roughly doubling per second, up to 90 % of the throttled rate
        clock.now += 0.1
        limiter.on_success()
    assert limiter.rate == pytest.approx(36.0)
    for _ in range(20):  # 2 more seconds: +1/s
        clock.now += 0.1
        limiter.on_success()
    assert limiter.rate == pytest.approx(38.0)
    for _ in range(100):
        clock.now += 0.1
        limiter.on_success()
    assert limiter.rate == 40  # max_rate defaults to the configured rate


def test_idle_time_does_not_count_as_growth() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(10, max_rate=100, increase_per_s=1.0, clock=clock)
    clock.now += 3600
    limiter.on_success()
    assert limiter.rate <= 11.0


def test_a_cut_slows_the_reservations_already_queued() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(10, burst=1, clock=clock)
    limiter.reserve()
    limiter.on_throttled()
    assert limiter.reserve() == pytest.approx(0.2)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        AimdRateLimiter(-1)
    with pytest.raises(ValueError):
        AimdRateLimiter(10, max_rate=5)
    with pytest.raises(ValueError):
        AimdRateLimiter(10, decrease_factor=1.0)
    with pytest.raises(ValueError):
        AimdRateLimiter(10, burst=0.5)


def test_concurrent_reservations_hand_out_distinct_slots() -> None:
    limiter = AimdRateLimiter(100, burst=1, clock=Clock())
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [limiter.reserve() for _ in range(100)]
        with lock:
            waits.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(round(w, 6) for w in waits) == [round(i * 0.01, 6) for i in range(400)]


def _simulate(
    limit: float | Callable[[float], float],
    *,
    seconds: float,
    warmup: float,
    latency: float,
    **settings: float,
) -> tuple[float, float]:
    """A client with unbounded demand against a server that answers 15 above ``limit`` calls in any 1 s
    (``limit`` may depend on the simulated time).

    Returns (served calls/s after warm-up, throttled share after warm-up). Pure and bounded: simulated time.
    """
    clock = Clock()
    start = clock.now
    limiter = AimdRateLimiter(clock=clock, **settings)  # type: ignore[arg-type]
    served: deque[float] = deque()
    answers: list[tuple[float, bool]] = []
    ok = throttled = 0
    for _ in range(100_000):
        if clock.now - start >= seconds:
            break
        call_at = clock.now + limiter.reserve()
        while answers and answers[0][0] <= call_at:  # answers arrive while we wait for the slot
            clock.now, success = heapq.heappop(answers)
            limiter.on_success() if success else limiter.on_throttled()
        clock.now = call_at
        while served and served[0] <= call_at - 1.0:
            served.popleft()
        success = len(served) < (limit(call_at - start) if callable(limit) else limit)
        if success:
            served.append(call_at)
        if call_at - start >= warmup:
            ok += success
            throttled += not success
        heapq.heappush(answers, (call_at + latency, success))
    return ok / (seconds - warmup), throttled / max(1, ok + throttled)


@pytest.mark.parametrize("start_rate", [100.0, 10.0])
def test_converges_near_a_server_limit(start_rate: float) -> None:
    served, throttled_share = _simulate(
        50, seconds=150, warmup=30, latency=0.2, rate=start_rate, max_rate=100, increase_per_s=1.0
    )
    assert served >= 0.9 * 50
    assert throttled_share <= 0.03


def test_follows_a_server_limit_that_drops() -> None:
    # Another worker joins: the share of this one falls from 50 to 20 calls/s after 60 s.
    served, throttled_share = _simulate(
        lambda t: 50 if t < 60 else 20,
        seconds=150,
        warmup=90,
        latency=0.2,
        rate=100,
        max_rate=100,
        increase_per_s=1.0,
    )
    assert 0.85 * 20 <= served <= 20
    assert throttled_share <= 0.05
