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


def test_unlimited_never_waits_while_nothing_is_throttled() -> None:
    limiter = AimdRateLimiter(0, clock=Clock())
    assert all(limiter.reserve() == 0.0 for _ in range(1000))
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


def test_rate_grows_additively_up_to_max_after_a_cut() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(40, increase_per_s=1.0, clock=clock)
    limiter.on_throttled()  # no history of successes yet: halve
    assert limiter.rate == 20
    for _ in range(30):
        clock.now += 1.0
        limiter.on_success()
    assert limiter.rate == pytest.approx(40)  # +1/s for 20 s, then capped at max_rate
    clock.now += 5.0
    limiter.on_success()
    assert limiter.rate == 40


def test_a_cut_keeps_95_percent_of_what_the_service_accepted() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(100, increase_per_s=1.0, clock=clock)
    for _ in range(60):  # the service accepts 30 calls/s for 2 s
        clock.now += 1 / 30
        limiter.on_success()
    limiter.on_throttled()
    assert limiter.accepted_rate() == pytest.approx(30, rel=0.05)
    assert limiter.rate == pytest.approx(28.5, rel=0.05)


def test_unlimited_starts_limiting_at_the_first_rate_limit_answer() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)
    limiter.on_throttled()  # nothing accepted yet: nothing to limit to
    assert limiter.unlimited
    for _ in range(80):
        clock.now += 1 / 40
        limiter.on_success()
    limiter.on_throttled()
    assert not limiter.unlimited and limiter.rate == pytest.approx(38, rel=0.05)
    assert limiter.reserve() == 0.0 or limiter.reserve() > 0  # now paced


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
    """A client with unbounded demand (but at most 200 calls/s, as its in-flight window would allow) against a
    server that answers 15 above ``limit`` calls in any 1 s (``limit`` may depend on the simulated time).

    Returns (served calls/s after warm-up, throttled share after warm-up). Pure and bounded: simulated time.
    """
    clock = Clock()
    start = clock.now
    limiter = AimdRateLimiter(clock=clock, **settings)  # type: ignore[arg-type]
    served: deque[float] = deque()
    answers: list[tuple[float, bool]] = []
    ok = throttled = 0
    last_call = start - 1.0
    for _ in range(100_000):
        if clock.now - start >= seconds:
            break
        call_at = max(clock.now + limiter.reserve(), last_call + 1 / 200)
        last_call = call_at
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


@pytest.mark.parametrize(
    "settings",
    [
        {"rate": 100.0, "max_rate": 100, "increase_per_s": 1.0},
        {"rate": 10.0, "max_rate": 100, "increase_per_s": 1.0},
        {"rate": 100.0},  # the worker's defaults for MDW_RATE_LIMIT_QPS=100
        {"rate": 0.0},  # MDW_RATE_LIMIT_QPS=0: unlimited until the first code 15
    ],
)
def test_converges_near_a_server_limit(settings: dict[str, float]) -> None:
    served, throttled_share = _simulate(50, seconds=150, warmup=30, latency=0.2, **settings)
    assert served >= 0.93 * 50
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
