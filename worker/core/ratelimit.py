"""Calls per second to the face API: a token bucket whose rate adapts to rate-limit answers (AIMD).

- ``reserve()`` takes a token and returns how long to wait before the call may start (0 when one is free);
  reservations queue up as debt, so concurrent callers are spaced at the current rate.
- ``on_throttled()`` (code 15 / HTTP 429) multiplies the rate by ``decrease_factor``, at most once per
  ``cooldown_s``: the answers to calls already sent at the old rate arrive in a burst and must not cut it
  again and again.
- ``on_success()`` raises the rate over time (idle gaps do not count). Right after a cut the rate climbs back
  quickly (doubling per second) to 90 % of the rate that was throttled, then additively by
  ``increase_per_s`` to probe for more, up to ``max_rate``. The quick phase keeps throughput near the
  server's limit although a cut halves the rate; plain AIMD would average ~75 % of it.

``rate == 0`` means unlimited: ``reserve`` always returns 0 and feedback is ignored. Thread-safe (one lock);
time comes from the injected ``clock`` (seconds, monotonic).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_RECOVERY_TARGET = 0.9  # fraction of the last throttled rate regained quickly
_RECOVERY_PER_S = 1.0  # growth per second (relative) during the quick phase
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
        """``rate``: starting calls/s (0 = unlimited). Defaults: ``max_rate`` = ``rate`` (the configured cap is
        never exceeded), ``min_rate`` = min(1, rate), ``burst`` = max(1, rate/10) tokens, ``increase_per_s`` =
        2 % of ``max_rate`` per second."""
        if rate < 0:
            raise ValueError("rate must be >= 0 (0 = unlimited)")
        if not 0 < decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")
        self._unlimited = rate == 0
        self._max = max_rate if max_rate is not None else rate
        self._min = min_rate if min_rate is not None else min(1.0, rate)
        if not self._unlimited and not 0 < self._min <= rate <= self._max:
            raise ValueError("need 0 < min_rate <= rate <= max_rate")
        self._burst = burst if burst is not None else max(1.0, rate / 10)
        if self._burst < 1:
            raise ValueError("burst must be at least 1 token")
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
        self._ceiling: float | None = None  # the rate at the last cut

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

    def on_throttled(self) -> None:
        """The service answered "too many requests": cut the rate (once per cooldown)."""
        if self._unlimited:
            return
        with self._lock:
            now = self._clock()
            if self._last_cut is not None and now - self._last_cut < self._cooldown:
                return
            self._refill(now)  # tokens earned so far at the old rate
            self._ceiling = self._rate
            self._rate = max(self._min, self._rate * self._decrease)
            self._last_cut = now
            self._last_growth = now

    def on_success(self) -> None:
        """A call went through: let the rate grow by the time since the last growth step."""
        if self._unlimited:
            return
        with self._lock:
            now = self._clock()
            step = min(_MAX_STEP_S, max(0.0, now - self._last_growth))
            self._last_growth = now
            if self._rate >= self._max or step == 0:
                return
            self._refill(now)
            rate = self._rate
            target = self._ceiling * _RECOVERY_TARGET if self._ceiling is not None else 0.0
            if rate < target:
                rate = min(target, rate + max(self._increase, rate * _RECOVERY_PER_S) * step)
            else:
                rate += self._increase * step
            self._rate = min(self._max, rate)
