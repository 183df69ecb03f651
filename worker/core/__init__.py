"""The pure core: decisions without I/O, driven by injected clocks, tested exhaustively.

- records    input events → ``Event`` (or ``InvalidEvent``); result and dead-letter records and headers
- formats    which parser reads which input topic: the event, CloudEvents, S3/MinIO and COS notifications
- offsets    acknowledged outputs → commit positions (highest contiguous per partition)
- ordering   which consumed events may be dispatched (unordered / key / partition)
- outcomes   failed call → RETRY / DEAD_LETTER / STOP / HOLD, and the retry policy (tenacity adapters)
- ratelimit  AIMD token bucket with a floor and a slow start
- breaker    circuit breaker over recent calls
- guard      hold the worker when nearly everything is dead-lettered, then a trial
- budget     bytes of images held in memory (fetch mode)
- clock      the time seam (virtual time in the contract tests)
"""

from __future__ import annotations

from worker.core.breaker import BreakerState, CircuitBreaker
from worker.core.guard import DeadLetterGuard
from worker.core.offsets import OffsetTracker
from worker.core.ordering import OrderingGate
from worker.core.outcomes import Decision, Outcome, RetryPolicy, decide
from worker.core.ratelimit import AimdRateLimiter
from worker.core.records import (
    ErrorInfo,
    Event,
    InvalidEvent,
    Source,
    build_dead_letter,
    build_result,
    dead_letter_headers,
    dead_letter_key,
    parse_event,
    replay_count,
    result_headers,
)

__all__ = [
    "AimdRateLimiter",
    "BreakerState",
    "CircuitBreaker",
    "DeadLetterGuard",
    "Decision",
    "ErrorInfo",
    "Event",
    "InvalidEvent",
    "OffsetTracker",
    "OrderingGate",
    "Outcome",
    "RetryPolicy",
    "Source",
    "build_dead_letter",
    "build_result",
    "dead_letter_headers",
    "dead_letter_key",
    "decide",
    "parse_event",
    "replay_count",
    "result_headers",
]
