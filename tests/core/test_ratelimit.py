"""AimdRateLimiter with a fake clock: spacing, AIMD feedback and convergence on a throttling server.

Long simulated faults (many callers, refusal spells, idle spells, a day of traffic) are in
``test_ratelimit_longfaults.py``.
"""

from __future__ import annotations

import heapq
import threading
import tracemalloc
from collections import deque
from collections.abc import Callable

import pytest

from worker.core import ratelimit
from worker.core.ratelimit import AimdRateLimiter


@pytest.fixture(autouse=True)
def one_refusal_cuts(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests pin the cut arithmetic one refusal at a time: no tolerance for sporadic refusals here
    (it has its own tests, which pass ``tolerated_share`` explicitly)."""
    monkeypatch.setattr(ratelimit, "_TOLERATED_SHARE", 0.0)


def test_sporadic_refusals_do_not_cut_but_an_overshoot_does() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(100, tolerated_share=0.03, clock=clock)
    _accept(limiter, clock, per_s=100, seconds=3)
    limiter.on_throttled()  # 1 refusal among ~200 answers: random, not a quota
    assert limiter.rate == 100
    for _ in range(8):  # an overshoot refuses every call above the quota: the share climbs past 3 %
        limiter.on_throttled()
    assert limiter.rate < 100


def test_when_every_call_is_refused_the_first_refusal_cuts() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, tolerated_share=0.03, clock=clock)
    limiter.on_throttled()
    assert not limiter.unlimited and limiter.rate == 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_calls_are_spaced_at_the_rate_after_the_burst() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(10, burst=2, clock=clock)
    # A refused ask takes nothing: asking again at once is told the same wait, no debt builds up.
    assert [limiter.try_acquire() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.1, 0.1])
    clock.now += 0.1
    assert [limiter.try_acquire() for _ in range(2)] == pytest.approx([0.0, 0.1])
    clock.now += 10  # idle: the bucket refills only up to the burst
    assert [limiter.try_acquire() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])


def test_unlimited_never_waits_while_nothing_is_throttled() -> None:
    limiter = AimdRateLimiter(0, clock=Clock())
    assert all(limiter.try_acquire() == 0.0 for _ in range(1000))
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


def test_rate_grows_additively_up_to_max_after_a_cut_with_a_known_accepted_rate() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(40, increase_per_s=1.0, clock=clock)
    _accept(limiter, clock, per_s=20, seconds=3)
    limiter.on_throttled()  # the service took 20/s: keep 95 % of it, then probe additively
    assert limiter.rate == pytest.approx(19, rel=0.02)
    assert limiter.phase == "probing"
    for _ in range(30):
        clock.now += 1.0
        limiter.on_success()
    assert limiter.rate == pytest.approx(40)  # +1/s for 21 s, then capped at max_rate
    clock.now += 5.0
    limiter.on_success()
    assert limiter.rate == 40


def test_a_refusal_with_nothing_known_halves_then_doubles_back_per_second_of_successes() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(40, increase_per_s=1.0, clock=clock)
    limiter.on_throttled()  # the first answer: nothing measured yet
    assert limiter.rate == 20
    assert limiter.phase == "slow_start"
    clock.now += 0.5
    limiter.on_success()
    assert limiter.rate == pytest.approx(20 * 2**0.5)
    clock.now += 0.5
    limiter.on_success()
    assert limiter.rate == pytest.approx(40)  # ×2 per second of successes, up to max_rate


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
    _accept(limiter, clock, per_s=40, seconds=2)
    assert limiter.unlimited and limiter.rate == 0.0
    limiter.on_throttled()
    assert not limiter.unlimited and limiter.rate == pytest.approx(38, rel=0.05)
    assert limiter.try_acquire() == 0.0 or limiter.try_acquire() > 0  # now paced


def test_idle_time_does_not_count_as_growth() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(10, max_rate=100, increase_per_s=1.0, clock=clock)
    clock.now += 3600
    limiter.on_success()
    assert limiter.rate <= 11.0


def test_a_cut_slows_the_callers_already_waiting() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(10, burst=1, clock=clock)
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == pytest.approx(0.1)
    limiter.on_throttled()
    assert limiter.try_acquire() == pytest.approx(0.2)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        AimdRateLimiter(-1)
    with pytest.raises(ValueError):
        AimdRateLimiter(10, max_rate=5)
    with pytest.raises(ValueError):
        AimdRateLimiter(10, decrease_factor=1.0)
    with pytest.raises(ValueError):
        AimdRateLimiter(10, burst=0.5)
    with pytest.raises(ValueError):
        AimdRateLimiter(0, min_rate=0)
    with pytest.raises(ValueError):
        AimdRateLimiter(float("nan"))


def test_concurrent_try_acquire_hands_out_each_token_once() -> None:
    limiter = AimdRateLimiter(100, burst=10, clock=Clock())  # the clock stands still: 10 tokens, no more
    granted: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        mine = sum(1 for _ in range(100) if limiter.try_acquire() == 0.0)
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sum(granted) == 10


def _accept(limiter: AimdRateLimiter, clock: Clock, *, per_s: float, seconds: float) -> None:
    """The service accepts ``per_s`` calls/s for ``seconds``: one success every 1/per_s s."""
    for _ in range(round(per_s * seconds)):
        clock.now += 1 / per_s
        limiter.on_success()


def test_a_refusal_of_a_call_sent_before_the_last_cut_cuts_nothing() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)
    _accept(limiter, clock, per_s=50, seconds=5)
    cut_at = clock.now
    limiter.on_throttled(sent_at=cut_at - 0.2)
    after_first_cut = limiter.rate
    _accept(limiter, clock, per_s=after_first_cut, seconds=2)
    grown = limiter.rate
    limiter.on_throttled(sent_at=cut_at - 0.1)  # answers take 2 s: this call left at the old rate
    assert limiter.rate == grown
    limiter.on_throttled(sent_at=cut_at + 0.5)  # this one left at the new rate: the new rate is too high
    assert limiter.rate < grown


@pytest.mark.parametrize("latency_known", [True, False])
def test_growth_is_paced_per_round_trip_when_answers_take_longer_than_a_second(latency_known: bool) -> None:
    clock = Clock()
    limiter = AimdRateLimiter(40, increase_per_s=1.0, clock=clock)
    for _ in range(200):  # 5 s of successes whose calls left 4 s before their answer
        clock.now += 1 / 40
        limiter.on_success(sent_at=clock.now - 4.0 if latency_known else None)
    clock.now += 60
    limiter.on_throttled()  # after an idle minute: halve, then slow start back to what worked
    assert limiter.rate == pytest.approx(20, rel=0.02)
    for _ in range(20):  # one second of successes
        clock.now += 1 / 20
        limiter.on_success(sent_at=clock.now - 4.0 if latency_known else None)
    if latency_known:
        assert limiter.rate < 20 * 2**0.5  # ×2 per round trip (4 s): ~×1.2 in a second
    else:
        assert limiter.rate >= 39  # ×2 per second


# -- 1. memory: every structure bounded under any traffic --------------------------------------------


def test_memory_does_not_grow_with_the_number_of_successes() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)  # never throttled: only successes
    _accept(limiter, clock, per_s=20, seconds=600)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _accept(limiter, clock, per_s=20, seconds=3000)  # 50 more minutes at 20 calls/s
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 16_000, f"{grown} bytes retained after 60 000 more successes"
    assert limiter.footprint() <= 21


def test_footprint_counts_the_buckets_of_the_last_two_seconds() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(10, clock=clock)
    assert limiter.footprint() == 0
    _accept(limiter, clock, per_s=20, seconds=1)
    assert 9 <= limiter.footprint() <= 11  # 0.1 s buckets
    for _ in range(100):  # refusals are counted too, in the same bounded buckets
        clock.now += 0.05
        limiter.on_throttled()
    assert limiter.footprint() <= 21
    clock.now += 60
    limiter.on_success()
    assert limiter.footprint() == 1


# -- 2. no collapse after an idle spell or an outage -------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 100.0])
@pytest.mark.parametrize("gap_s", [5.0, 60.0])
def test_a_refusal_after_an_idle_spell_keeps_near_the_rate_known_to_work(rate: float, gap_s: float) -> None:
    clock = Clock()
    limiter = AimdRateLimiter(rate, clock=clock)
    _accept(limiter, clock, per_s=50, seconds=5)
    limiter.on_throttled()  # the service took 50/s: limited at 47.5
    assert limiter.rate == pytest.approx(47.5, rel=0.05)
    _accept(limiter, clock, per_s=47.5, seconds=5)
    known = limiter.accepted_rate()
    assert known is not None and known == pytest.approx(47.5, rel=0.05)
    clock.now += gap_s  # idle (or an outage: errors the limiter never hears of); nothing answered
    assert limiter.accepted_rate() is None  # nothing in the window: unknown, not zero
    limiter.on_throttled()  # the first answer after the gap
    assert limiter.rate >= 0.5 * known  # one multiplicative step, not the 1-2 calls/s floor
    _accept(limiter, clock, per_s=limiter.rate, seconds=0.5)
    _accept(limiter, clock, per_s=limiter.rate, seconds=0.5)
    assert limiter.rate >= 0.95 * known  # doubled back within a second of successes


def test_a_refusal_after_an_idle_spell_of_a_never_limited_worker_keeps_its_known_rate() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)
    _accept(limiter, clock, per_s=40, seconds=10)  # never refused: unlimited, but 40/s is known to work
    clock.now += 60
    limiter.on_throttled()
    assert not limiter.unlimited
    assert limiter.rate >= 0.45 * 40  # one multiplicative step below what worked, not the floor
    _accept(limiter, clock, per_s=limiter.rate, seconds=0.5)
    _accept(limiter, clock, per_s=limiter.rate, seconds=0.5)
    assert limiter.rate >= 38


def test_the_additive_step_comes_from_the_rate_known_to_work_not_from_the_floor() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)
    _accept(limiter, clock, per_s=50, seconds=5)
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(47.5, rel=0.03)
    spell = clock.now
    while clock.now - spell < 30:  # 30 s where every call the limiter lets through is refused
        clock.now += 1 / limiter.rate
        limiter.on_throttled()
    assert limiter.rate <= 2.0  # at the floor
    # The quota is back: the service takes every call the limiter lets through, up to 50/s.
    recovered_after = None
    start = clock.now
    while clock.now - start < 60:
        clock.now += 1 / min(limiter.rate, 50.0)
        limiter.on_success()
        if limiter.rate >= 47.5:
            recovered_after = clock.now - start
            break
    assert recovered_after is not None and recovered_after <= 10, recovered_after
    before = limiter.rate
    _accept(limiter, clock, per_s=before, seconds=1)
    assert limiter.rate - before == pytest.approx(0.02 * 47.5, rel=0.1)  # 2 % of the known rate per second


def test_a_refusal_spell_keeps_the_known_rate_but_a_real_quota_drop_lowers_it() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)
    _accept(limiter, clock, per_s=50, seconds=5)
    limiter.on_throttled()
    known = limiter.known_rate
    assert known == pytest.approx(47.5, rel=0.03)
    spell = clock.now
    while clock.now - spell < 10:  # nothing accepted: the cuts reach the floor, what worked is kept
        clock.now += 1 / limiter.rate
        limiter.on_throttled()
    assert limiter.rate == 2.0 and limiter.known_rate == known
    # The service now takes 20 calls in any second and refuses the rest: the known rate follows it down.
    served: deque[float] = deque()
    start = clock.now
    while clock.now - start < 30:
        clock.now += 1 / limiter.rate
        while served and served[0] <= clock.now - 1.0:
            served.popleft()
        if len(served) < 20:
            served.append(clock.now)
            limiter.on_success()
        else:
            limiter.on_throttled()
    assert limiter.known_rate is not None and 15 <= limiter.known_rate <= 21  # measured: ±1 bucket edge


def test_a_rate_0_limiter_that_grows_to_its_internal_cap_is_unlimited_again() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)
    limiter.on_throttled()  # nothing known: the floor, then slow start with no ceiling
    assert limiter.rate == 2.0
    _accept(limiter, clock, per_s=100, seconds=25)  # ×2 per second: 2 → 10⁶ in about 19 s
    assert limiter.unlimited and limiter.rate == 0.0 and limiter.phase == "unlimited"
    assert limiter.try_acquire() == 0.0


# -- 3. refused from the first call: worker-wide floor -----------------------------------------------


def test_refused_from_the_first_call_the_limiter_engages_at_the_floor() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)
    limiter.on_throttled()  # nothing was ever accepted
    assert not limiter.unlimited
    assert limiter.rate == 2.0
    assert limiter.phase == "slow_start"
    for _ in range(60):  # a minute of refusals at the floor: it stays there
        clock.now += 0.5
        limiter.on_throttled()
    assert limiter.rate == 2.0


def test_while_everything_is_refused_the_floor_holds_for_any_number_of_callers() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)
    limiter.on_throttled()
    admitted = 0
    for _ in range(200):  # 10 s of 64 callers asking every 50 ms
        clock.now += 0.05
        for _ in range(64):
            if limiter.try_acquire() == 0.0:
                admitted += 1
                limiter.on_throttled()
    assert admitted <= 2.0 * 10 + 1


# -- 4. try_acquire: no debt ---------------------------------------------------------------------------


def test_try_acquire_takes_a_token_only_when_one_is_there() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(10, burst=2, clock=clock)
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == pytest.approx(0.1)
    assert limiter.try_acquire() == pytest.approx(0.1)  # nothing taken: no debt
    clock.now += 0.05
    assert limiter.try_acquire() == pytest.approx(0.05)
    clock.now += 0.05
    assert limiter.try_acquire() == 0.0
    assert AimdRateLimiter(0, clock=clock).try_acquire() == 0.0  # unlimited


def test_many_callers_at_the_floor_build_no_debt_and_see_a_rate_rise_at_once() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(0, clock=clock)
    limiter.on_throttled()  # floor: 2/s
    waits = [limiter.try_acquire() for _ in range(64)]
    assert max(waits) <= 0.5  # the next token, not the 64th in a queue (32 s if waits were reserved)
    for _ in range(10):  # the quota is back: 5 s of successes at the limiter's pace
        _accept(limiter, clock, per_s=limiter.rate, seconds=0.5)
    assert limiter.rate >= 40
    limiter.try_acquire()
    waits = [limiter.try_acquire() for _ in range(64)]
    assert max(waits) <= 1 / 40  # the callers that were waiting are served at the new rate


def test_retry_after_holds_every_token_until_then() -> None:
    clock = Clock()
    limiter = AimdRateLimiter(10, burst=5, clock=clock)
    limiter.on_throttled(retry_after=3.0)
    assert limiter.try_acquire() == pytest.approx(3.0 + 0.2)  # hold, then the next token at the new rate
    clock.now += 3.0
    assert limiter.try_acquire() == pytest.approx(0.2)
    clock.now += 0.2
    assert limiter.try_acquire() == 0.0
    limiter.on_throttled(retry_after=86_000)  # an absurd Retry-After: the hold is capped
    assert limiter.try_acquire() <= 30.0 + 1.0


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

    def advance_to(when: float) -> None:  # answers arrive while we wait for the slot
        while answers and answers[0][0] <= when:
            clock.now, ok_answer = heapq.heappop(answers)
            limiter.on_success() if ok_answer else limiter.on_throttled()
        clock.now = when

    for _ in range(100_000):
        if clock.now - start >= seconds:
            break
        # Wait for a token as the worker's HTTP threads do: ask, sleep min(wait, a step), ask again.
        advance_to(max(clock.now, last_call + 1 / 200))
        while (wait := limiter.try_acquire()) > 0:
            advance_to(clock.now + min(wait, 0.01))
        call_at = last_call = clock.now
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
