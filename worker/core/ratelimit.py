"""Calls per second to the face API: a token bucket whose rate adapts to rate-limit answers (AIMD with slow start).

One limiter serves every HTTP thread of a worker; every API call (first attempts, retries, held events,
breaker probes) asks it first. ``on_success()`` after a call that went through, ``on_throttled()`` after
code 15 / HTTP 429; both take ``sent_at``, the ``clock`` time the call left (optional, but without it a
latency above the cooldown cuts again on stale refusals and grows too fast; see below). Time comes from
the injected ``clock`` (seconds, monotonic). Thread-safe: one lock.

Admission
    ``try_acquire()`` takes a token if one is there and returns 0.0; otherwise it takes nothing and returns
    the seconds until the next token at the current rate. Callers sleep min(that, a short step) and ask
    again (checking cancellation), so nobody holds a slot computed at an old rate: when the rate rises the
    waiting callers see it at once, and no debt builds up behind a low rate.
    ``on_throttled(retry_after=s)`` also holds every token for min(s, 30) seconds.

Phases (``phase``)
    unlimited   ``rate == 0`` configured and not refused yet (or grown back to 10⁶/s since): no pacing
                (``rate`` reads 0).
    slow_start  after a cut that left the rate below the best rate known to work: the rate doubles per
                second of successes up to that rate (up to ``max_rate`` when none is known), then probing.
    probing     the rate grows by ``increase_per_s`` per second of successes (idle gaps do not count), up
                to ``max_rate``: the probe for more. After 10 s of probing with the limiter in use and no
                refusal the quota has grown: back to slow start, up to ``max_rate``.
    When answers take longer than a second (a moving average over ``sent_at``), "per second" above reads
    "per round trip": the news of an overshoot arrives one latency late.

The accepted rate
    Successes per second over the last 1 s and over the last 2 s (the higher: the short one follows a
    ramp, the long one smooths noise), counted from the start of the current busy spell: answers
    (successes and refusals) with no gap longer than 3 call spacings at the current rate (at least
    0.5 s). It is *unknown* while the spell is shorter than 0.5 s: at the start, after an idle spell,
    after an outage (errors the limiter never hears of). Unknown is not zero: a spell of refusals with
    no success is a measured 0.

Cuts (only when refusals are at least 3 % of the last 2 s of answers, so sporadic refusals are retried
without cutting; at most once per ``cooldown_s``, and never for a call sent before the last cut when the caller
passes ``sent_at``: the answers to calls sent at the old rate arrive in a burst, up to one API latency
after the cut; they are still counted, they just do not cut again)
    accepted known, > 0  the rate becomes 95 % of min(rate, accepted): cutting to what the service took,
                         rather than halving, keeps throughput near the quota (≥ 95 % used, ≤ 5 %
                         refused) where plain halving AIMD averages ~75 %.
    accepted 0           everything was refused for a while: the floor ``min_rate``.
    accepted unknown     one multiplicative step: ``decrease_factor`` × min(rate, best known) (the
                         floor when nothing is known; a rate-0 limiter limits from then on).
    The best rate known to work is the highest accepted rate measured since the last cut; a known cut
    resets it to the new rate unless the service refused more calls than it took since the previous
    cut (a spell where the quota is used up must not erase what worked before: the recovery is then a
    slow start of a few seconds, not an additive climb of minutes). The additive step defaults to 2 %
    per second of ``max_rate`` when one is configured, else of the best known rate, never of the floor.

Floor
    ``min_rate`` (default 2 calls/s, or the configured rate if lower) for the whole worker whatever the
    number of threads: a refusing service sees a few calls/s, and the return of the quota is noticed
    within half a second; slow start from 2/s reaches a 50/s quota in under 5 s.

Memory
    Fixed: counters in 0.1 s buckets over the last 2 s (at most 20 entries, ``footprint()``) and a few
    numbers, whatever the traffic and however long the worker runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

Phase = Literal["unlimited", "slow_start", "probing"]

_KEEP_SHARE = 0.95  # a cut keeps this share of the accepted rate
# Refusals below this share of the last 2 s of answers do not cut: a quota overshoot refuses every call above
# it (the share grows with the overshoot), while sporadic refusals would otherwise walk the rate down to the
# floor (an AIMD reads random loss as a low quota). At a quota the worker then runs with a few % refused.
_TOLERATED_SHARE = 0.03
_BUCKET_S = 0.1
_WINDOW_BUCKETS = 20  # successes and refusals counted over the last 2 s ...
_SHORT_BUCKETS = 10  # ... and over the last 1 s (follows a slow-start ramp)
_WINDOW_S = _WINDOW_BUCKETS * _BUCKET_S
_MIN_HISTORY_S = 0.5  # answers covering less than this: the accepted rate is unknown
_GAP_SPACINGS = 3.0  # no answer for this many call spacings (at least _MIN_HISTORY_S): a new busy spell
_MAX_STEP_S = 1.0  # longest gap between successes that counts as growth time
_SLOW_START_FACTOR = 2.0  # per second of successes
_PROBE_RESTART_S = 10.0  # seconds of probing without a refusal before looking for a larger quota
_IN_USE_SHARE = 0.8  # the limiter is in use when the accepted rate is at least this share of the rate
_DEFAULT_MIN_RATE = 2.0
_DEFAULT_INCREASE_SHARE = 0.02
_MAX_HOLD_S = 30.0  # a Retry-After longer than this is not believed
_RATE_CAP = 1_000_000.0  # growth without a configured max stops here (keeps every number finite)
_EPSILON = 1e-9
_LATENCY_WEIGHT = 0.05  # moving average of the API latency (from sent_at) ...
_MAX_LATENCY_S = 30.0  # ... of samples capped here


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
        tolerated_share: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``rate``: starting calls/s (0 = unlimited until refused). Defaults: ``max_rate`` = ``rate`` (the
        configured cap is never exceeded; 10⁶ when ``rate`` is 0), ``min_rate`` = min(2, rate) (2 when
        ``rate`` is 0), ``burst`` = max(1, current rate / 10) tokens, ``increase_per_s`` = 2 % of
        ``max_rate`` per second when a cap is configured, else 2 % of the best rate known to work."""
        if not math.isfinite(rate) or rate < 0:
            raise ValueError("rate must be a number >= 0 (0 = unlimited)")
        if not 0 < decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        self._unlimited = rate == 0
        self._capped = max_rate is not None or rate > 0
        self._max = max_rate if max_rate is not None else (rate if rate else _RATE_CAP)
        self._min = min_rate if min_rate is not None else (min(_DEFAULT_MIN_RATE, rate) if rate else _DEFAULT_MIN_RATE)
        if not 0 < self._min <= self._max or not (self._unlimited or self._min <= rate <= self._max):
            raise ValueError("need 0 < min_rate <= rate <= max_rate")
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1 token")
        if increase_per_s is not None and increase_per_s < 0:
            raise ValueError("increase_per_s must be >= 0")
        self._burst_setting = burst
        self._increase_setting = increase_per_s
        self._decrease = decrease_factor
        self._cooldown = cooldown_s
        self._tolerated = _TOLERATED_SHARE if tolerated_share is None else tolerated_share
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = float(rate)
        now = clock()
        self._tokens = self._burst()
        self._stamp = now  # tokens are earned from here on (later than now while a Retry-After holds)
        self._last_growth = now
        self._last_cut: float | None = None
        self._slow = False
        self._ssthresh: float | None = None  # slow start stops here (None: at max_rate)
        self._known: float | None = None  # the best rate known to work since the last cut
        self._probing_s = 0.0  # seconds of successes while probing since the last cut or restart
        self._ok_since_cut = 0
        self._refused_since_cut = 0
        # [bucket index, successes, refusals] for the 0.1 s buckets of the last 2 s: at most 20 entries.
        self._buckets: deque[list[int]] = deque(maxlen=_WINDOW_BUCKETS)
        self._busy_since: float | None = None  # first answer of the current busy spell
        self._last_answer: float | None = None
        self._latency = 0.0  # seconds, moving average over the answers that said when their call left

    # -- what metrics and logs read ---------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """Current calls/s (0 = unlimited)."""
        return 0.0 if self._unlimited else self._rate

    @property
    def unlimited(self) -> bool:
        return self._unlimited

    @property
    def phase(self) -> Phase:
        if self._unlimited:
            return "unlimited"
        return "slow_start" if self._slow else "probing"

    @property
    def known_rate(self) -> float | None:
        """The best rate known to work (the slow-start target and the additive step's base), if any."""
        return self._known

    def footprint(self) -> int:
        """Entries retained (the 0.1 s buckets of the last 2 s): at most 20 under any traffic."""
        with self._lock:
            return len(self._buckets)

    def accepted_rate(self) -> float | None:
        """Successes per second lately, or None while unknown (too little of the current busy spell seen)."""
        with self._lock:
            return self._accepted(self._clock())

    # -- admission ---------------------------------------------------------------------------------------

    def try_acquire(self) -> float:
        """Take a token and return 0.0 if one is available now; else take nothing and return the seconds
        until the next one at the current rate (sleep min(that, a short step), then ask again)."""
        if self._unlimited:
            return 0.0
        with self._lock:
            now = self._clock()
            self._refill(now)
            if self._tokens >= 1.0 - _EPSILON and now >= self._stamp:  # float sums land a hair short of 1
                self._tokens -= 1.0
                return 0.0
            return max(0.0, self._stamp - now) + (1.0 - self._tokens) / self._rate

    def _burst(self) -> float:
        if self._burst_setting is not None:
            return self._burst_setting
        return max(1.0, self._rate / 10)

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst(), self._tokens + max(0.0, now - self._stamp) * self._rate)
        self._stamp = max(self._stamp, now)

    # -- measurement ---------------------------------------------------------------------------------------

    def _gap_s(self) -> float:
        """No answer for this long ends a busy spell: a few call spacings at the current rate."""
        spacing = 0.0 if self._unlimited else _GAP_SPACINGS / self._rate
        return min(_WINDOW_S, max(_MIN_HISTORY_S, spacing))

    def _prune(self, index: int) -> None:
        while self._buckets and self._buckets[0][0] <= index - _WINDOW_BUCKETS:
            self._buckets.popleft()

    def _record(self, now: float, ok: bool) -> bool:
        """Count one answer; True when it opened a new bucket."""
        index = math.floor(now / _BUCKET_S)
        self._prune(index)
        if self._last_answer is None or now - self._last_answer >= self._gap_s():
            self._busy_since = now
        self._last_answer = now if self._last_answer is None else max(self._last_answer, now)
        if self._buckets and self._buckets[-1][0] >= index:  # same bucket (or a clock step back)
            self._buckets[-1][1 if ok else 2] += 1
            return False
        self._buckets.append([index, int(ok), int(not ok)])
        return True

    def _accepted(self, now: float) -> float | None:
        index = math.floor(now / _BUCKET_S)
        self._prune(index)
        busy, last = self._busy_since, self._last_answer
        if busy is None or last is None or now - last >= self._gap_s() or now - busy < _MIN_HISTORY_S:
            return None  # unknown: not zero
        short_first = index - _SHORT_BUCKETS + 1
        recent = total = 0
        for bucket, successes, _ in self._buckets:  # all within the last 2 s after _prune
            total += successes
            if bucket >= short_first:
                recent += successes
        short_span = now - max(short_first * _BUCKET_S, busy)
        long_span = now - max((index - _WINDOW_BUCKETS + 1) * _BUCKET_S, busy)
        return max(recent / short_span, total / long_span)

    # -- feedback -----------------------------------------------------------------------------------------

    def on_throttled(self, retry_after: float | None = None, *, sent_at: float | None = None) -> None:
        """The service answered "too many requests": lower the rate (once per cooldown); a ``retry_after``
        (seconds) holds every token until then. ``sent_at`` (the ``clock`` time the call left): a call
        sent before the last cut was sent at the old rate, so its refusal is counted but cuts nothing."""
        with self._lock:
            now = self._clock()
            accepted = self._accepted(now)  # before counting this answer: it is the news, not the history
            self._record(now, ok=False)
            self._refused_since_cut += 1
            last_cut = self._last_cut
            stale = last_cut is not None and sent_at is not None and sent_at < last_cut
            due = last_cut is None or now - last_cut >= self._cooldown
            if not stale and due and self._refused_share() >= self._tolerated:
                self._cut(accepted, now)
            self._observe_latency(now, sent_at)
            if retry_after is not None and retry_after > 0:
                self._refill(now)
                self._stamp = max(self._stamp, now + min(retry_after, _MAX_HOLD_S))
                self._tokens = min(self._tokens, 0.0)

    def _refused_share(self) -> float:
        """Refusals among the answers of the last 2 s (this one counted)."""
        ok = refused = 0
        for _, successes, refusals in self._buckets:
            ok += successes
            refused += refusals
        return refused / (ok + refused) if ok + refused else 0.0

    def _cut(self, accepted: float | None, now: float) -> None:
        current = self._known if self._unlimited else self._rate
        if accepted is not None and accepted > 0:
            rate = max(self._min, min(self._max, accepted if current is None else min(current, accepted)) * _KEEP_SHARE)
            if self._last_cut is None or self._ok_since_cut > self._refused_since_cut:
                self._known = rate
        elif accepted is not None:
            rate = self._min  # everything refused for a while: the quota is used up
        else:
            if current is not None and self._known is not None:
                current = min(current, self._known)
            rate = self._min if current is None else max(self._min, current * self._decrease)
        if not self._unlimited:
            self._refill(now)  # tokens earned so far at the old rate
        else:
            self._tokens = 0.0
            self._stamp = max(self._stamp, now)
        self._unlimited = False
        self._rate = rate
        self._tokens = min(self._tokens, self._burst())
        self._ssthresh = self._known
        self._slow = self._known is None or rate < self._known
        self._probing_s = 0.0
        self._ok_since_cut = self._refused_since_cut = 0
        self._last_cut = now
        self._last_growth = now

    def on_success(self, *, sent_at: float | None = None) -> None:
        """A call went through: count it, and let the rate grow by the time since the last growth step.
        ``sent_at`` (the ``clock`` time the call left) feeds the latency that paces growth."""
        with self._lock:
            now = self._clock()
            self._observe_latency(now, sent_at)
            fresh = self._last_cut is None or now - self._last_cut >= _WINDOW_S  # window all after the cut
            if self._record(now, ok=True) and fresh:  # once per bucket: is more known to work now?
                accepted = self._accepted(now)
                if accepted is not None and (self._known is None or accepted > self._known):
                    self._known = accepted
            self._ok_since_cut += 1
            if self._unlimited:
                return
            # Growth per round trip when answers take longer than a second: the news of an overshoot
            # arrives one latency late, so faster growth would overshoot by more than the step.
            step = min(_MAX_STEP_S, max(0.0, now - self._last_growth)) / max(1.0, self._latency)
            self._last_growth = now
            if step == 0:
                return
            self._refill(now)
            if self._slow:
                target = self._max if self._ssthresh is None else min(self._max, self._ssthresh)
                self._rate = max(self._rate, min(target, self._rate * _SLOW_START_FACTOR**step))
                self._slow = self._rate < target
            elif self._rate < self._max:
                self._rate = min(self._max, self._rate + self._increase() * step)
                self._probing_s += step
                if self._probing_s >= _PROBE_RESTART_S:
                    # Long probing without a refusal while the rate is used: the quota has grown (another
                    # worker left). Find it in seconds rather than minutes.
                    self._probing_s = 0.0
                    accepted = self._accepted(now)
                    if accepted is not None and accepted >= _IN_USE_SHARE * self._rate:
                        self._slow, self._ssthresh = True, None
            if not self._capped and self._rate >= self._max:
                self._unlimited, self._slow = True, False  # rate 0: no cap until refused again

    def _observe_latency(self, now: float, sent_at: float | None) -> None:
        if sent_at is not None:
            sample = min(_MAX_LATENCY_S, max(0.0, now - sent_at))
            self._latency += _LATENCY_WEIGHT * (sample - self._latency)

    def _increase(self) -> float:
        if self._increase_setting is not None:
            return self._increase_setting
        base = self._max if self._capped else (self._known or self._rate)
        return _DEFAULT_INCREASE_SHARE * base
