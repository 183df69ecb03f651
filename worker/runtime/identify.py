"""One event, run to an outcome inside an HTTP thread: rate limit, breaker, call, retries.

Retries use tenacity (jittered exponential backoff within an attempt cap and a deadline, a
rate-limit answer's Retry-After honoured); what to do once they are exhausted is the pure table in
:mod:`worker.core.outcomes`. While the circuit breaker is open an exhausted event is *held* — it
waits (the hold delay, then the breaker) instead of going to the dead-letter topic — because an outage
is not the event's fault. Every call passes the one rate limiter of the worker first, retries, held
events and probes included: while the API refuses calls, the whole worker makes a few per second.

A configuration/auth answer (wrong key, missing group, HTTP 401/403, code 3…) stops the worker only once
it is *confirmed*: a known-good call with the same credentials and the configured groups
(``FaceApi.check_configuration``) fails too. If that call succeeds, the answer was about this event and
it is dead-lettered with its code; if it cannot tell (a transient failure), the event is held and tried
again. One check answers for every event that asks within ``confirm_ttl_s``.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tenacity import RetryCallState, Retrying, retry_if_exception

from worker.api.codes import GROUP_CODES
from worker.api.errors import ApiError, ErrorClass, Origin
from worker.api.models import IdentifyResult
from worker.core.breaker import CircuitBreaker
from worker.core.budget import WaitCancelled
from worker.core.clock import SYSTEM_CLOCK, Clock
from worker.core.outcomes import Outcome, RetryPolicy, decide, tenacity_stop, tenacity_wait
from worker.core.ratelimit import AimdRateLimiter
from worker.core.records import Event, Source
from worker.runtime.observer import NO_TRACE, EventTrace, Observer

# Codes that mean "your configured groups are wrong" for the default groups, but are the event's own
# fault when the event named its groups itself (the registry marks them).
_GROUP_CODES = GROUP_CODES


_RECENT_CALLS = 256  # call outcomes kept to tell an outage from one unlucky event
_OTHERS = 16  # the latest calls of other events that tell whether the API is down
_RECENT_S = 30.0  # older outcomes say nothing about now


class Kind(enum.Enum):
    RESULT = "result"
    DEAD_LETTER = "dead_letter"
    STOP = "stop"  # configuration/auth: the pipeline is broken, not the event
    CANCELLED = "cancelled"  # revoked or shutting down: no output, the offset stays uncommitted


class Cancelled(Exception):
    """The task's partition was revoked or the worker is stopping."""


@dataclass(frozen=True, slots=True)
class Task:
    event: Event
    raw: bytes | None  # the record value exactly as consumed, for a dead letter
    source: Source
    tp: tuple[str, int]
    epoch: int  # the partition's assignment epoch (worker.core.offsets): stale when it changed
    replay_count: int
    consumed_at: float  # monotonic
    trace: EventTrace = NO_TRACE  # the event's trace (worker.runtime.observer): hears every attempt


@dataclass(slots=True)
class Completion:
    task: Task
    kind: Kind
    result: IdentifyResult | None = None
    error: ApiError | None = None
    attempts: int = 0
    api_latency_ms: float = 0.0
    first_failure_ms: int | None = None
    last_failure_ms: int | None = None
    round_failed: bool = False  # a transient failure of this round was told to the breaker already


@dataclass(frozen=True, slots=True)
class ProbeDone:
    """A breaker probe ended; ``confirmed_config`` is set when it proved the configuration wrong."""

    error: ApiError | None = None
    confirmed_config: ApiError | None = None


class Verdict(enum.Enum):
    CONFIRMED = "confirmed"  # the check call fails the same way: the configuration is wrong
    REFUTED = "refuted"  # the check call succeeds: the answer was about the event
    UNKNOWN = "unknown"  # the check call failed transiently (or was throttled): cannot tell yet


class FaceApi(Protocol):
    def identify_url(self, url: str, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult: ...

    def identify_image(
        self, image: bytes | bytearray | memoryview, group_ids: Sequence[str], session_id: str | None = None
    ) -> IdentifyResult: ...

    def check_configuration(self, group_ids: Sequence[str]) -> None:
        """A cheap known-good call with the same credentials; raises ApiError (a config code when the
        credentials or the configured ``group_ids`` are wrong)."""


class HeldImage(Protocol):
    @property
    def data(self) -> bytes | bytearray | memoryview: ...

    def release(self) -> None: ...  # gives its memory back to the fetch budget


class ImageSource(Protocol):
    # Raises worker.core.budget.WaitCancelled when cancelled() ends a wait for memory.
    def fetch(self, url: str, *, cancelled: Callable[[], bool]) -> HeldImage: ...


class Identifier:
    """Thread-safe; one instance serves every HTTP thread of a pipeline."""

    def __init__(
        self,
        api: FaceApi,
        *,
        default_groups: Sequence[str],
        policy: RetryPolicy,
        limiter: AimdRateLimiter,
        breaker: CircuitBreaker,
        observer: Observer,
        fetcher: ImageSource | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Clock = SYSTEM_CLOCK,
        breaker_poll_s: float = 0.05,
        confirm_ttl_s: float = 5.0,
    ) -> None:
        self._api = api
        self._fetcher = fetcher
        self._default_groups = tuple(default_groups)
        self._policy = policy
        self._limiter = limiter
        self._breaker = breaker
        self._observer = observer
        self._wall = wall_clock
        self._clock = clock
        self._breaker_poll_s = breaker_poll_s
        self._rng = random.Random()  # shared by threads: random.Random is safe to call concurrently
        # Recent call outcomes (when, event id, transient failure?) to tell an outage from one unlucky event.
        self._recent: deque[tuple[float, str, bool]] = deque(maxlen=_RECENT_CALLS)
        # One configuration check answers for every event that asks within confirm_ttl_s.
        self._confirm_lock = threading.Lock()
        self._confirm_ttl_s = confirm_ttl_s
        self._confirmed: tuple[float, Verdict, ApiError | None] | None = None
        self._checking = False
        # Fetch mode: (task, image) of the event this thread runs; its retries reuse the image (_image).
        self._held = threading.local()

    @property
    def rate_limit_qps(self) -> float:
        return float(self._limiter.rate)

    def structure_sizes(self) -> dict[str, int]:
        footprint = getattr(self._limiter, "footprint", None)
        return {"recent_calls": len(self._recent), "limiter_buckets": int(footprint()) if footprint else 0}

    def run(self, task: Task, cancelled: Callable[[], bool]) -> Completion:
        done = Completion(task=task, kind=Kind.RESULT)
        try:
            while True:
                round_started = self._clock.now()
                done.round_failed = False
                try:
                    done.result = self._with_retries(task, cancelled, done)
                    done.kind = Kind.RESULT
                    return done
                except ApiError as err:
                    err = self._event_scoped(task, err)
                    done.error = err
                    decision = decide(
                        err,
                        attempt=done.attempts,
                        elapsed_s=self._clock.now() - round_started,
                        policy=self._policy,
                        breaker_open=self._outage(err, task.event.event_id),
                        rng=self._rng,
                    )
                    if decision.outcome is Outcome.STOP or err.error_class is ErrorClass.CONFIG:
                        # A configuration answer is never the event's fault only if the configuration is
                        # wrong indeed: ask a known-good call before stopping every replica on one answer.
                        verdict = self.confirm_configuration(err, cancelled)
                        if verdict is Verdict.CONFIRMED:
                            done.kind = Kind.STOP
                            return done
                        if verdict is Verdict.REFUTED:
                            done.error = ApiError(
                                err.code,
                                ErrorClass.PERMANENT,  # about this event, like any other refused image
                                f"{err.message} (the configuration check passed: refused for this event)",
                                http_status=err.http_status,
                            )
                            done.kind = Kind.DEAD_LETTER
                            return done
                        self._sleep(self._policy.wait(self._policy.max_attempts, err, self._rng), cancelled)
                        done.attempts = 0
                        continue
                    if decision.outcome is Outcome.HOLD:
                        # Not the event's fault (an outage, a rate limit): wait, then a fresh round whose first
                        # attempt waits for the breaker and the limiter like every other call.
                        self._sleep(decision.delay_s, cancelled)
                        done.attempts = 0
                        continue
                    # RETRY cannot come back here: tenacity already spent the attempts/deadline.
                    done.kind = Kind.DEAD_LETTER
                    return done
        except Cancelled:
            done.kind = Kind.CANCELLED
            return done
        finally:
            self._drop_image()

    def probe(self, cancelled: Callable[[], bool]) -> ProbeDone:
        """The breaker's half-open test call, sent by the loop when no event is there to make it.

        The caller already holds the probe slot (``breaker.allow()`` said yes). The call is the configuration
        check (never an event's request: that might be a poison image); any answer that is not a transient
        failure says the API is up. A configuration answer is a confirmed configuration error.
        """
        try:
            self._acquire(cancelled)
        except Cancelled:
            self._breaker.record(False)  # the slot must not stay taken: try again after open_s
            return ProbeDone()
        started = self._clock.now()
        try:
            self._api.check_configuration(self._default_groups)
        except ApiError as err:
            self._observer.api_call(err.code, self._clock.now() - started)
            if err.rate_limited:
                self._limiter.on_throttled()
            self._breaker.record(not err.transient or err.rate_limited)
            if err.error_class is ErrorClass.CONFIG:
                return ProbeDone(error=err, confirmed_config=err)
            return ProbeDone(error=err)
        self._observer.api_call("ok", self._clock.now() - started)
        self._limiter.on_success()
        self._breaker.record(True)
        return ProbeDone()

    def confirm_configuration(self, err: ApiError, cancelled: Callable[[], bool]) -> Verdict:
        """Is ``err`` (a configuration/auth answer) about the configuration? One check call per ``confirm_ttl_s``;
        the threads that ask meanwhile wait for its verdict."""
        while True:
            with self._confirm_lock:
                cached = self._confirmed
                if cached is not None and self._clock.now() - cached[0] < self._confirm_ttl_s:
                    return cached[1]
                if not self._checking:
                    self._checking = True
                    break
            self._sleep(0.05, cancelled)
        try:
            verdict, proof = self._check_configuration(cancelled)
        finally:
            with self._confirm_lock:
                self._checking = False
        with self._confirm_lock:
            self._confirmed = (self._clock.now(), verdict, proof)
        return verdict

    def _check_configuration(self, cancelled: Callable[[], bool]) -> tuple[Verdict, ApiError | None]:
        self._acquire(cancelled)
        try:
            self._api.check_configuration(self._default_groups)
        except ApiError as check:
            if check.rate_limited:
                self._limiter.on_throttled()
            if check.error_class is ErrorClass.CONFIG:
                return Verdict.CONFIRMED, check
            return (Verdict.REFUTED if check.error_class is ErrorClass.PERMANENT else Verdict.UNKNOWN), check
        self._limiter.on_success()
        return Verdict.REFUTED, None

    # -- internals -------------------------------------------------------------------------

    def _outage(self, err: ApiError, event_id: str) -> bool:
        """Is the API down, rather than this event unlucky? Then an exhausted event is held, not dead-lettered.

        Evidence from the other events: transient failures dominate their latest ``_OTHERS`` calls within
        ``_RECENT_S``. One event failing alone (a poison image) is never held, nor one whose company succeeds;
        errors older than ``_RECENT_S`` say nothing about now. Works early in an outage too, before the
        breaker has seen ``min_calls`` (older successes do not outvote the latest failures).
        """
        if err.rate_limited:
            return True  # the API works and asks us to slow down (the limiter does): never the event's fault
        if not err.transient or err.origin is Origin.FETCH:
            return False
        horizon = self._clock.now() - _RECENT_S
        others: list[bool] = []
        # A copy, taken without a lock: appends from other threads are atomic, and the deque's maxlen bounds it.
        for at, eid, transient in reversed(list(self._recent)):
            if at < horizon:
                break
            if eid != event_id:
                others.append(transient)
                if len(others) == _OTHERS:
                    break
        return bool(others) and sum(others) >= self._breaker.failure_ratio * len(others)

    def _remember(self, event_id: str, transient_failure: bool) -> None:
        # Called after every call from every HTTP thread: deque.append is atomic, so no lock (it was contended).
        self._recent.append((self._clock.now(), event_id, transient_failure))

    def _event_scoped(self, task: Task, err: ApiError) -> ApiError:
        if err.code in _GROUP_CODES and task.event.group_ids:
            return ApiError(
                err.code,
                ErrorClass.PERMANENT,
                f"{err.message} (groups named by the event: {','.join(task.event.group_ids)})",
                http_status=err.http_status,
            )
        return err

    def _wait_for_breaker(self, cancelled: Callable[[], bool]) -> None:
        # Closed: allow() is True at once. Open: wait. Half-open: allow() admits one probe at a time, and
        # the call that follows right away is that probe (asking twice would waste the probe slot).
        while not self._breaker.allow():
            if cancelled():
                raise Cancelled
            self._clock.sleep(self._breaker_poll_s)

    def _acquire(self, cancelled: Callable[[], bool]) -> None:
        """Wait for the worker-wide rate limiter to admit one call (re-asked in short steps, so that a rate
        that rises meanwhile is used at once and a cancellation is seen)."""
        while (wait := self._limiter.try_acquire()) > 0:
            self._sleep(min(wait, 0.25), cancelled)

    def _sleep(self, seconds: float, cancelled: Callable[[], bool]) -> None:
        end = self._clock.now() + seconds
        while True:
            if cancelled():
                raise Cancelled
            left = end - self._clock.now()
            if left <= 0:
                return
            self._clock.sleep(min(left, 0.05))

    def _with_retries(self, task: Task, cancelled: Callable[[], bool], done: Completion) -> IdentifyResult:
        policy = self._policy

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, ApiError):
                self._observer.retried(exc.code)

        retrying = Retrying(
            stop=tenacity_stop(policy),
            wait=tenacity_wait(policy, self._rng),
            # Transient errors only: the client already spent the one re-signed retry for codes 9/13.
            retry=retry_if_exception(lambda e: isinstance(e, ApiError) and e.transient),
            sleep=lambda s: self._sleep(s, cancelled),
            before_sleep=before_sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._attempt(task, cancelled, done)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True always raises

    def _attempt(self, task: Task, cancelled: Callable[[], bool], done: Completion) -> IdentifyResult:
        if cancelled():
            raise Cancelled
        self._wait_for_breaker(cancelled)
        self._acquire(cancelled)
        event = task.event
        groups = event.group_ids or self._default_groups
        done.attempts += 1
        started = self._clock.now()
        try:
            if self._fetcher is not None:
                image = self._image(task, cancelled)
                started = self._clock.now()  # API latency excludes the download
                result = self._api.identify_image(image, groups, event.session_id)
            else:
                result = self._api.identify_url(event.image_url, groups, event.session_id)
        except ApiError as err:
            latency = self._clock.now() - started
            task.trace.attempt(err.code, latency)  # a failed download too: its code says so (origin fetch)
            now_ms = int(self._wall() * 1000)
            done.first_failure_ms = done.first_failure_ms or now_ms
            done.last_failure_ms = now_ms
            if err.origin is not Origin.FETCH:
                self._observer.api_call(err.code, latency)
                failed = err.transient and not err.rate_limited
                self._remember(event.event_id, failed)
                if err.rate_limited:
                    self._limiter.on_throttled(err.retry_after, sent_at=started)
                # Only transient failures say the API is unhealthy; a bad image or a rate-limit answer means
                # it works (the limiter handles the latter). The breaker hears one failure per event and
                # round: one event's retries are one piece of evidence (a poison image must not open it).
                if not failed or not done.round_failed:
                    self._breaker.record(not failed)
                done.round_failed = done.round_failed or failed
            raise
        latency = self._clock.now() - started
        done.api_latency_ms = latency * 1000
        task.trace.attempt("ok", latency)
        self._observer.api_call("ok", latency)
        self._limiter.on_success(sent_at=started)
        self._remember(event.event_id, False)
        self._breaker.record(True)
        return result

    # -- fetch mode: one download per event ------------------------------------------------------

    def _image(self, task: Task, cancelled: Callable[[], bool]) -> bytes | bytearray | memoryview:
        """The event's image bytes, downloaded on its first attempt only: API retries and held rounds
        reuse them. They count against the fetch memory budget until run() ends (_drop_image)."""
        assert self._fetcher is not None
        held: tuple[Task, HeldImage] | None = getattr(self._held, "image", None)
        if held is not None and held[0] is task:
            return held[1].data
        try:
            image = self._fetcher.fetch(task.event.image_url, cancelled=cancelled)
        except WaitCancelled:
            raise Cancelled from None
        self._held.image = (task, image)
        return image.data

    def _drop_image(self) -> None:
        held: tuple[Task, HeldImage] | None = getattr(self._held, "image", None)
        if held is not None:
            self._held.image = None
            held[1].release()
