"""What to do with a failed call: the error → outcome table as data, and the retry policy (no I/O).

    config      → STOP         the pipeline is broken, not the event (never dead-letter, commit nothing)
                                — except one immediate re-signed retry for codes 9/13 (``ApiError.resign``)
    permanent   → DEAD_LETTER  at once
    transient   → RETRY        after ``RetryPolicy.wait`` while attempts and the deadline allow
                → HOLD         when exhausted while the circuit breaker is open (an outage, not this image)
                → DEAD_LETTER  when exhausted otherwise (key = the last code)

``attempt`` counts calls made so far for the event, the failed one included (1 after the first failure).
``elapsed_s`` is the time since the first call. A retry is granted only if it would start before the deadline.

Test mode: ``RetryPolicy.instant()`` gives a policy without waits; ``set_testing(True)`` makes every
policy's waits zero (for tests that build policies from configuration). Attempt caps still apply.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from typing import Any

from tenacity import RetryCallState
from tenacity.retry import retry_base
from tenacity.stop import stop_after_attempt, stop_base, stop_before_delay
from tenacity.wait import wait_base

from worker.api.errors import ApiError, ErrorClass

_testing = False


def set_testing(enabled: bool) -> None:
    """Turn every retry wait into zero (process-wide), like stamina's test mode."""
    global _testing
    _testing = enabled


def is_testing() -> bool:
    return _testing


class Outcome(enum.Enum):
    RETRY = "retry"  # call again after ``delay_s``
    DEAD_LETTER = "dead_letter"  # produce a dead-letter record, then commit
    STOP = "stop"  # configuration error: stop consuming, commit nothing for this event, exit non-zero
    HOLD = "hold"  # keep the event (no dead letter); next round after ``delay_s``, through breaker and limiter


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries of transient errors: attempts *and* a deadline, jittered exponential backoff.

    The n-th wait (after attempt n) is ``min(backoff_max_s, backoff_initial_s * 2**(n-1))``, with full jitter
    (uniform in [0, that]) when ``jitter``; a ``retry_after`` on the error (seconds, capped at
    ``retry_after_cap_s``) is a floor. A rate-limit answer (15, HTTP 429) waits only for its ``retry_after``:
    the worker-wide limiter paces those retries.
    """

    max_attempts: int = 5
    deadline_s: float = 60.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    jitter: bool = True
    retry_after_cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.deadline_s, self.backoff_initial_s, self.backoff_max_s, self.retry_after_cap_s) < 0:
            raise ValueError("retry durations must not be negative")

    @classmethod
    def instant(cls, **overrides: Any) -> RetryPolicy:
        """A policy without waits (tests); attempts and deadline as given or default."""
        zero: dict[str, Any] = {"backoff_initial_s": 0.0, "backoff_max_s": 0.0, "retry_after_cap_s": 0.0}
        return replace(cls(), **(zero | overrides))

    def wait(self, attempt: int, error: ApiError | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before call ``attempt + 1``."""
        if _testing:
            return 0.0
        if error is not None and error.rate_limited:
            # The worker-wide rate limiter spaces these calls (every attempt asks it first); a backoff of each
            # event's own would only leave its slot idle once the quota is back. Retry-After still holds.
            return min(max(error.retry_after or 0.0, 0.0), self.retry_after_cap_s)
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(max(attempt - 1, 0), 62))
        delay = (rng or random).uniform(0.0, ceiling) if self.jitter else ceiling
        if error is not None and error.retry_after is not None:
            delay = max(delay, min(max(error.retry_after, 0.0), self.retry_after_cap_s))
        return delay


def decide(
    error: ApiError,
    *,
    attempt: int,
    elapsed_s: float,
    policy: RetryPolicy,
    breaker_open: bool,
    rng: random.Random | None = None,
) -> Decision:
    """The outcome of a failed call (see the module docstring for the table)."""
    if error.error_class is ErrorClass.CONFIG:
        if error.resign and attempt == 1 and policy.max_attempts > 1:
            return Decision(Outcome.RETRY, 0.0)  # a fresh signature fixes a one-off expiry/replay
        return Decision(Outcome.STOP)
    if error.error_class is ErrorClass.PERMANENT:
        return Decision(Outcome.DEAD_LETTER)
    delay = policy.wait(attempt, error, rng)
    if attempt < policy.max_attempts and elapsed_s + delay < policy.deadline_s:
        return Decision(Outcome.RETRY, delay)
    if breaker_open:
        # Held, not dead-lettered; a jittered wait spreads the held events' next rounds apart.
        return Decision(Outcome.HOLD, policy.wait(attempt, error, rng))
    return Decision(Outcome.DEAD_LETTER)


# tenacity adapters: the same rules for code that runs retries with tenacity (the HTTP threads).


class _PolicyWait(wait_base):
    def __init__(self, policy: RetryPolicy, rng: random.Random | None) -> None:
        self.policy = policy
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        error = _api_error(retry_state)
        if error is not None and not error.transient:
            return 0.0  # the one re-signed retry goes at once, as in decide()
        return self.policy.wait(retry_state.attempt_number, error, self.rng)


class _RetryApiError(retry_base):
    def __call__(self, retry_state: RetryCallState) -> bool:
        error = _api_error(retry_state)
        if error is None:
            return False
        return error.transient or (error.resign and retry_state.attempt_number == 1)


def _api_error(retry_state: RetryCallState) -> ApiError | None:
    outcome = retry_state.outcome
    if outcome is None or not outcome.failed:
        return None
    exc = outcome.exception()
    return exc if isinstance(exc, ApiError) else None


def tenacity_wait(policy: RetryPolicy, rng: random.Random | None = None) -> wait_base:
    """A tenacity ``wait`` equal to ``policy.wait`` (honours ``ApiError.retry_after`` and test mode)."""
    return _PolicyWait(policy, rng)


def tenacity_stop(policy: RetryPolicy) -> stop_base:
    """A tenacity ``stop``: after ``max_attempts`` calls, or when the next call would start past the deadline."""
    return stop_after_attempt(policy.max_attempts) | stop_before_delay(policy.deadline_s)


def tenacity_retry() -> retry_base:
    """A tenacity ``retry`` predicate: transient ApiErrors, and one re-signed retry for ``resign`` codes."""
    return _RetryApiError()
