"""Calls per second to the face API: a token bucket whose rate adapts to rate-limit answers (AIMD).

- ``reserve()`` takes a token and returns how long to wait before the call may start (0 when one is free);
  reservations queue up as debt, so concurrent callers are spaced at the current rate.
- ``on_throttled()`` (code 15 / HTTP 429) lowers the rate, at most once per ``cooldown_s``: the answers to
  calls already sent at the old rate arrive in a burst and must not cut it again and again. The new rate is
  95 % of the rate the service actually accepted over the last seconds (successes counted here), or the
  old rate × ``decrease_factor`` when too little has been seen yet. Cutting to what the service took,
  rather than halving, keeps throughput near the quota: plain halving AIMD averages ~75 % of it.
- ``on_success()`` raises the rate additively by ``increase_per_s`` per second of successes (idle gaps do
  not count), up to ``max_rate``: the probe for more.

``rate == 0`` means no limit until the service says otherwise: the first rate-limit answer starts limiting
at 95 % of the accepted rate, and ``max_rate`` stays unbounded. Thread-safe (one lock); time comes from the
injected ``clock`` (seconds, monotonic).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

_KEEP_SHARE = 0.95  # a cut keeps this share of the accepted rate
_WINDOW_S = 2.0  # successes counted over this long to measure the accepted rate
_BUCKET_S = 0.1
_MIN_HISTORY_S = 0.5  # less history than this: the measurement is too noisy, fall back to decrease_factor
_MAX_STEP_S = 1.0  # longest gap between successes that counts as growth time


class AimdRateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        min_rate: float | None = None,
        max_rate: float | None = None,
        burst: float | None = None,
        increase_per_s: float | None = None,
        decrease_factor: float = 0.5,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``rate``: starting calls/s (0 = unlimited until throttled). Defaults: ``max_rate`` = ``rate`` (the
        configured cap is never exceeded; unbounded when ``rate`` is 0), ``min_rate`` = min(1, rate),
        ``burst`` = max(1, rate/10) tokens, ``increase_per_s`` = 2 % of ``max_rate`` per second (2 % of the
        first limited rate when unbounded)."""
        if rate < 0:
            raise ValueError("rate must be >= 0 (0 = unlimited)")
        if not 0 < decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")
        self._unlimited = rate == 0
        self._max = max_rate if max_rate is not None else (rate if rate else float("inf"))
        self._min = min_rate if min_rate is not None else (min(1.0, rate) if rate else 1.0)
        if not self._unlimited and not 0 < self._min <= rate <= self._max:
            raise ValueError("need 0 < min_rate <= rate <= max_rate")
        self._burst_setting = burst
        self._burst = burst if burst is not None else max(1.0, rate / 10)
        if self._burst < 1:
            raise ValueError("burst must be at least 1 token")
        self._increase_setting = increase_per_s
        self._increase = increase_per_s if increase_per_s is not None else 0.02 * self._max
        self._decrease = decrease_factor
        self._cooldown = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = float(rate)
        now = clock()
        self._tokens = self._burst  # may go negative: reserved future tokens
        self._stamp = now
        self._last_growth = now
        self._last_cut: float | None = None
        self._buckets: deque[list[float]] = deque()  # [bucket start, successes] over the last _WINDOW_S
        self._first_success: float | None = None

    @property
    def rate(self) -> float:
        """Current calls/s (0 = unlimited)."""
        return 0.0 if self._unlimited else self._rate

    @property
    def unlimited(self) -> bool:
        return self._unlimited

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._stamp) * self._rate)
        self._stamp = max(self._stamp, now)

    def reserve(self) -> float:
        """Take one token; return the seconds to wait before the call may start."""
        if self._unlimited:
            return 0.0
        with self._lock:
            self._refill(self._clock())
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def try_acquire(self) -> float:
        """Take a token if one is free now (0.0), else take nothing and return the seconds until one is."""
        if self._unlimited:
            return 0.0
        with self._lock:
            self._refill(self._clock())
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self._rate

    def accepted_rate(self) -> float | None:
        """Successes per second over the last seconds, or None while there is too little history."""
        with self._lock:
            return self._accepted(self._clock())

    def _accepted(self, now: float) -> float | None:
        while self._buckets and self._buckets[0][0] <= now - _WINDOW_S:
            self._buckets.popleft()
        if self._first_success is None:
            return None
        span = min(_WINDOW_S, now - self._first_success)
        if span < _MIN_HISTORY_S:
            return None
        return sum(count for _, count in self._buckets) / span

    def on_throttled(self) -> None:
        """The service answered "too many requests": lower the rate (once per cooldown)."""
        with self._lock:
            now = self._clock()
            if self._last_cut is not None and now - self._last_cut < self._cooldown:
                return
            accepted = self._accepted(now)
            if self._unlimited:
                if accepted is None:
                    return  # nothing known to limit to yet; the retries' backoff spaces the calls meanwhile
                self._start_limiting(accepted, now)
            else:
                self._refill(now)  # tokens earned so far at the old rate
                cut = self._rate * self._decrease if accepted is None else min(self._rate, accepted) * _KEEP_SHARE
                self._rate = max(self._min, cut)
            self._last_cut = now
            self._last_growth = now

    def _start_limiting(self, accepted: float, now: float) -> None:
        self._unlimited = False
        self._rate = max(self._min, accepted * _KEEP_SHARE)
        if self._burst_setting is None:
            self._burst = max(1.0, self._rate / 10)
        if self._increase_setting is None:
            self._increase = 0.02 * self._rate
        self._tokens = 0.0
        self._stamp = now

    def on_success(self) -> None:
        """A call went through: count it, and let the rate grow by the time since the last growth step."""
        with self._lock:
            now = self._clock()
            if self._first_success is None:
                self._first_success = now
            start = now - now % _BUCKET_S
            if self._buckets and self._buckets[-1][0] == start:
                self._buckets[-1][1] += 1
            else:
                self._buckets.append([start, 1.0])
            if self._unlimited:
                return
            step = min(_MAX_STEP_S, max(0.0, now - self._last_growth))
            self._last_growth = now
            if self._rate >= self._max or step == 0:
                return
            self._refill(now)
            self._rate = min(self._max, self._rate + self._increase * step)
