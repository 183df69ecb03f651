"""AimdRateLimiter over long simulated faults: many callers against a quota server, in simulated time.

Each caller is one HTTP thread of a worker: it asks ``try_acquire()``,
sleeps min(wait, 50 ms) when told to wait, sends one call, and reports the answer to the limiter when it
arrives. It has unbounded demand: after every answer (success, 15, or an outage error) it wants the next call.
The server is the emulator's quota: a token bucket of ``quota(t)`` calls/s with a burst of one second's
worth, answering 15 above it (0 refuses everything); ``down(t)`` answers an outage error the limiter never
hears of (the breaker's business). Deterministic (seeded latency jitter) and bounded in events and time.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from worker.core.ratelimit import AimdRateLimiter

START = 1000.0
POLL_S = 0.05  # a caller told to wait sleeps at most this long before asking again
OUTAGE_BACKOFF_S = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Server:
    quota: Callable[[float], float]
    down: Callable[[float], bool] = lambda t: False
    tokens: float = 0.0
    stamp: float = 0.0

    def answer(self, t: float) -> str:
        if self.down(t):
            return "down"
        q = self.quota(t)
        self.tokens = min(q, self.tokens + (t - self.stamp) * q)
        self.stamp = t
        if self.tokens >= 1:
            self.tokens -= 1
            return "ok"
        return "15"


@dataclass
class Trace:
    calls: list[tuple[float, str]] = field(default_factory=list)  # (sent at, answer), simulated time from 0
    limiter: AimdRateLimiter | None = None

    def count(self, a: float, b: float, answer: str | None = None) -> int:
        return sum(1 for t, r in self.calls if a <= t < b and (answer is None or r == answer))

    def ok_per_s(self, a: float, b: float) -> float:
        return self.count(a, b, "ok") / (b - a)

    def refused_share(self, a: float, b: float) -> float:
        return self.count(a, b, "15") / max(1, self.count(a, b))

    def max_calls_in_a_second(self, a: float, b: float) -> int:
        return max(self.count(s, s + 1.0) for s in _steps(a, b - 1.0, 0.25))

    def first_full_second(self, a: float, b: float, ok_per_s: float) -> float | None:
        """The first time t in [a, b) from which one second holds at least ``ok_per_s`` successes."""
        return next((s for s in _steps(a, b - 1.0, 0.1) if self.count(s, s + 1.0, "ok") >= ok_per_s), None)


def _steps(a: float, b: float, step: float) -> list[float]:
    return [a + i * step for i in range(int((b - a) / step) + 1)]


def simulate(
    server: Server,
    *,
    callers: int,
    seconds: float,
    latency: float = 0.2,
    active: Callable[[float], bool] = lambda t: True,
    seed: int = 7,
    sent_at: bool = True,
    settings: dict[str, float],
) -> Trace:
    """``settings``: the limiter's keyword arguments (``rate`` at least); ``sent_at``: refusals tell the
    limiter when their call left (as the worker does)."""
    clock = Clock()
    limiter = AimdRateLimiter(clock=clock, **settings)
    rng = random.Random(seed)
    trace = Trace(limiter=limiter)
    server.stamp, server.tokens = START, server.quota(START)  # the bucket starts full
    # (time, seq, caller, what, answer, sent at): what is "ask" (for a slot) or "answer"
    events: list[tuple[float, int, int, str, str, float]] = [(START, i, i, "ask", "", START) for i in range(callers)]
    heapq.heapify(events)
    seq = callers
    for _ in range(3_000_000):
        if not events:
            break
        t, _, caller, what, answer, sent = heapq.heappop(events)
        if t - START >= seconds:
            break
        clock.now = t
        nxt: tuple[float, str] = (t, "ask")
        if what == "answer":
            told = {"sent_at": sent} if sent_at else {}  # as a call site that does not pass it
            if answer == "ok":
                limiter.on_success(**told)
            elif answer == "15":
                limiter.on_throttled(**told)
            else:
                nxt = (t + OUTAGE_BACKOFF_S, "ask")
        elif what == "ask" and not active(t - START):
            nxt = (t + 0.25, "ask")  # no demand now
        elif what == "ask" and (wait := limiter.try_acquire()) > 0:
            nxt = (t + min(wait, POLL_S), "ask")
        else:
            answer = server.answer(t)
            trace.calls.append((t - START, answer))
            seq += 1
            heapq.heappush(events, (t + latency * rng.uniform(0.8, 1.2), seq, caller, "answer", answer, t))
            continue
        seq += 1
        heapq.heappush(events, (nxt[0], seq, caller, nxt[1], "", t))
    return trace


def _quota(*spells: tuple[float, float, float], base: float = 50.0) -> Callable[[float], float]:
    """``base`` calls/s, except ``value`` during each (start, end, value) spell (simulated seconds)."""
    return lambda t: next((v for a, b, v in spells if a <= t - START < b), base)


# -- the quota is used, and little is refused ----------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"rate": 0.0},  # MDW_RATE_LIMIT_QPS=0: unlimited until the first code 15
        {"rate": 100.0},  # the benchmark's setting: starts above the quota
        {"rate": 100.0, "min_rate": 1.0},  # as worker.runtime.app builds it for a configured rate
    ],
)
@pytest.mark.parametrize("callers", [16, 64])  # 16 × (1 call per 0.2 s) = 80/s of demand at most
@pytest.mark.parametrize("sent_at", [True, False])  # whether the callers say when each call left
def test_many_callers_use_95_percent_of_a_50_qps_quota_with_at_most_5_percent_refused(
    settings: dict[str, float], callers: int, sent_at: bool
) -> None:
    trace = simulate(Server(_quota()), callers=callers, seconds=150, sent_at=sent_at, settings=settings)
    assert trace.ok_per_s(30, 150) >= 0.95 * 50
    assert trace.refused_share(30, 150) <= 0.05


@pytest.mark.parametrize("settings", [{"rate": 0.0}, {"rate": 100.0}])
@pytest.mark.parametrize("latency", [1.5, 3.0])
def test_slow_answers_still_use_the_quota_with_at_most_5_percent_refused(
    settings: dict[str, float], latency: float
) -> None:
    # Answers slower than the 1 s cooldown: the refusals of calls sent before a cut keep arriving after it
    # (sent_at tells them apart), and an overshoot is only seen one latency later (growth per round trip).
    callers = int(100 * latency) + 16  # enough in flight for 100 calls/s of demand
    trace = simulate(Server(_quota()), callers=callers, seconds=150, latency=latency, settings=settings)
    assert trace.ok_per_s(30, 150) >= 0.95 * 50
    assert trace.refused_share(30, 150) <= 0.05


# -- refused from the first call (quota used up), then the quota returns --------------------------------


@pytest.mark.parametrize("sent_at", [True, False])
def test_refused_from_the_first_call_the_whole_worker_sends_a_few_calls_per_second(sent_at: bool) -> None:
    trace = simulate(
        Server(_quota((0, 60, 0.0))),
        callers=64,
        seconds=60,
        sent_at=sent_at,
        settings={"rate": 0.0},
    )
    floor = 2.0
    # The first 64 calls leave before any answer (nothing is known yet); from the first 15 on, the floor
    # holds for the whole worker whatever the number of threads (one burst token at most on top).
    assert trace.max_calls_in_a_second(1, 60) <= floor + 1
    assert trace.count(5, 60) / 55 <= floor * 1.05


def test_refused_from_the_first_call_then_the_quota_returns_and_is_used_within_seconds() -> None:
    trace = simulate(Server(_quota((0, 60, 0.0))), callers=64, seconds=180, settings={"rate": 0.0})
    back = trace.first_full_second(60, 180, 0.95 * 50)
    assert back is not None and back - 60 <= 10, back
    assert trace.ok_per_s(90, 180) >= 0.95 * 50
    assert trace.refused_share(90, 180) <= 0.05


@pytest.mark.parametrize("settings", [{"rate": 0.0}, {"rate": 100.0}])
def test_quota_used_up_for_a_minute_mid_run_then_back_within_seconds(settings: dict[str, float]) -> None:
    trace = simulate(Server(_quota((60, 120, 0.0))), callers=64, seconds=210, settings=settings)
    assert trace.ok_per_s(30, 60) >= 0.95 * 50
    # During the spell: the cuts reach the floor within a few seconds, then a few calls/s for the worker.
    assert trace.count(70, 120) / 50 <= 2.0 * 1.05
    back = trace.first_full_second(120, 210, 0.95 * 50)
    assert back is not None and back - 120 <= 10, back
    assert trace.ok_per_s(140, 210) >= 0.95 * 50
    assert trace.refused_share(140, 210) <= 0.05


def test_a_quota_that_shrinks_then_grows_back_is_followed_both_ways() -> None:
    # Other workers take most of the quota for a minute (10 calls/s left), then leave.
    trace = simulate(Server(_quota((60, 120, 10.0))), callers=64, seconds=210, settings={"rate": 0.0})
    assert 0.85 * 10 <= trace.ok_per_s(80, 120) <= 10
    assert trace.refused_share(80, 120) <= 0.05
    back = trace.first_full_second(120, 210, 0.95 * 50)
    assert back is not None and back - 120 <= 20, back  # ~10 s of probing, then slow start finds it
    assert trace.ok_per_s(150, 210) >= 0.95 * 50
    assert trace.refused_share(150, 210) <= 0.05


# -- idle spells and outages ---------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"rate": 0.0}, {"rate": 100.0}])
def test_a_refusal_right_after_an_idle_minute_does_not_collapse_the_rate(settings: dict[str, float]) -> None:
    # No demand for a minute; when it returns, the service refuses the first ~0.3 s (a blip).
    trace = simulate(
        Server(_quota((120, 120.3, 0.0))),
        callers=64,
        seconds=210,
        active=lambda t: not 60 <= t < 120,
        settings=settings,
    )
    assert trace.count(60.5, 120) == 0
    back = trace.first_full_second(120, 210, 0.95 * 50)
    assert back is not None and back - 120 <= 5, back
    assert trace.ok_per_s(130, 210) >= 0.95 * 50
    assert trace.refused_share(130, 210) <= 0.05


@pytest.mark.parametrize("settings", [{"rate": 0.0}, {"rate": 100.0}])
def test_a_refusal_right_after_an_outage_does_not_collapse_the_rate(settings: dict[str, float]) -> None:
    # A minute of outage (errors the limiter never hears of), then the first answers are 15 (a blip).
    trace = simulate(
        Server(_quota((120, 120.3, 0.0)), down=lambda t: 60 <= t - START < 120),
        callers=64,
        seconds=210,
        settings=settings,
    )
    back = trace.first_full_second(120, 210, 0.95 * 50)
    assert back is not None and back - 120 <= 5, back
    assert trace.ok_per_s(130, 210) >= 0.95 * 50
    assert trace.refused_share(130, 210) <= 0.05


# -- memory -------------------------------------------------------------------------------------------


def test_footprint_stays_bounded_over_a_simulated_day_at_20_calls_per_second() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)
    worst = 0
    for i in range(24 * 3600 * 20):
        clock.now += 0.05
        if i % 1000 == 999:
            limiter.on_throttled()  # a 15 now and then: limiting starts, cuts and regrowth go on all day
        else:
            limiter.on_success()
        if i % 5000 == 0:
            worst = max(worst, limiter.footprint())
    assert 0 < worst <= 21
    assert limiter.footprint() <= 21
