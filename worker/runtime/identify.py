"""One event, run to an outcome inside an HTTP thread: rate limit, breaker, call, retries.

Retries use tenacity (jittered exponential backoff within an attempt cap and a deadline, a
rate-limit answer's Retry-After honoured); what to do once they are exhausted is the pure table in
:mod:`worker.core.outcomes`. While the circuit breaker is open an exhausted event is *held* — it
waits for the breaker instead of going to the dead-letter topic — because an outage is not the
event's fault.
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

from worker.api.errors import ApiError, ErrorClass
from worker.api.models import IdentifyResult
from worker.core.breaker import CircuitBreaker
from worker.core.budget import WaitCancelled
from worker.core.outcomes import Outcome, RetryPolicy, decide, tenacity_stop, tenacity_wait
from worker.core.ratelimit import AimdRateLimiter
from worker.core.records import Event, Source
from worker.runtime.observer import Observer

# Codes that mean "your configured groups are wrong" for the default groups, but are the event's own
# fault when the event named its groups itself.
_GROUP_CODES = frozenset({"-1306", "-1307"})


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


class FaceApi(Protocol):
    def multidentify_url(self, url: str, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult: ...

    def multidentify_image(
        self, image: bytes | bytearray | memoryview, group_ids: Sequence[str], session_id: str | None = None
    ) -> IdentifyResult: ...


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
        breaker_poll_s: float = 0.05,
    ) -> None:
        self._api = api
        self._fetcher = fetcher
        self._default_groups = tuple(default_groups)
        self._policy = policy
        self._limiter = limiter
        self._breaker = breaker
        self._observer = observer
        self._wall = wall_clock
        self._breaker_poll_s = breaker_poll_s
        self._rng = random.Random()  # shared by threads: random.Random is safe to call concurrently
        # Events behind the most recent transient failures, to tell an outage from one unlucky event.
        self._failing: deque[str] = deque(maxlen=20)
        self._failing_lock = threading.Lock()
        # Fetch mode: (task, image) of the event this thread runs; its retries reuse the image (_image).
        self._held = threading.local()

    @property
    def rate_limit_qps(self) -> float:
        return float(self._limiter.rate)

    def run(self, task: Task, cancelled: Callable[[], bool]) -> Completion:
        done = Completion(task=task, kind=Kind.RESULT)
        try:
            while True:
                round_started = time.monotonic()
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
                        elapsed_s=time.monotonic() - round_started,
                        policy=self._policy,
                        breaker_open=self._outage(err),
                    )
                    if decision.outcome is Outcome.HOLD:
                        done.attempts = 0
                        continue  # a fresh round; its first attempt waits for the breaker to admit it
                    if decision.outcome is Outcome.STOP or err.error_class is ErrorClass.CONFIG:
                        # A configuration error is never the event's: also after the client's one
                        # re-signed retry (codes 9/13), which decide() would still count as retryable.
                        done.kind = Kind.STOP
                    else:
                        # RETRY cannot come back here: tenacity already spent the attempts/deadline.
                        done.kind = Kind.DEAD_LETTER
                    return done
        except Cancelled:
            done.kind = Kind.CANCELLED
            return done
        finally:
            self._drop_image()

    # -- internals -------------------------------------------------------------------------

    def _outage(self, err: ApiError) -> bool:
        """Is the API down, rather than this event unlucky? Then an exhausted event is held, not dead-lettered.

        The breaker may not have opened yet (it waits for ``min_calls``), so an event that exhausts its
        retries while transient failures dominate the recent calls trips it.
        """
        if err.rate_limited:
            return True  # the API works and asks us to slow down (the limiter does): never the event's fault
        if not err.transient or err.code.startswith("fetch_"):
            return False
        breaker = self._breaker
        with self._failing_lock:
            others_fail = len(set(self._failing)) >= 2
        # Only failures of several events say the API is down: one event whose every attempt fails
        # (a poison image) must be dead-lettered, not hold the whole worker while traffic is low.
        if not breaker.is_open and others_fail and breaker.failure_share() >= breaker.failure_ratio:
            breaker.trip()
        return breaker.is_open

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
            time.sleep(self._breaker_poll_s)

    def _sleep(self, seconds: float, cancelled: Callable[[], bool]) -> None:
        end = time.monotonic() + seconds
        while True:
            if cancelled():
                raise Cancelled
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

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
        wait = self._limiter.reserve()
        if wait > 0:
            self._sleep(wait, cancelled)
        event = task.event
        groups = event.group_ids or self._default_groups
        done.attempts += 1
        started = time.monotonic()
        try:
            if self._fetcher is not None:
                image = self._image(task, cancelled)
                started = time.monotonic()  # API latency excludes the download
                result = self._api.multidentify_image(image, groups, event.session_id)
            else:
                result = self._api.multidentify_url(event.image_url, groups, event.session_id)
        except ApiError as err:
            latency = time.monotonic() - started
            now_ms = int(self._wall() * 1000)
            done.first_failure_ms = done.first_failure_ms or now_ms
            done.last_failure_ms = now_ms
            if not err.code.startswith("fetch_"):
                self._observer.api_call(err.code, latency)
                if err.transient and not err.rate_limited:
                    with self._failing_lock:
                        self._failing.append(task.event.event_id)
                if err.rate_limited:
                    self._limiter.on_throttled()
                # Only transient failures say the API is unhealthy; a bad image or a rate-limit answer
                # means it works (the limiter handles the latter).
                self._breaker.record(not err.transient or err.rate_limited)
            raise
        latency = time.monotonic() - started
        done.api_latency_ms = latency * 1000
        self._observer.api_call("ok", latency)
        self._limiter.on_success()
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
