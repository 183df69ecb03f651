"""A whole pipeline on the in-memory Kafka and virtual time, for the deterministic contract tests.

The real ``Pipeline``, ``Identifier``, ``CircuitBreaker``, ``AimdRateLimiter``, ``OffsetTracker`` and
``DeadLetterGuard`` run; only Kafka (tests/support/memkafka.py), the face API (:class:`FakeApi`) and the clock
(tests/support/simclock.py) are stand-ins. The test thread drives the loop turn by turn; time moves only when the
loop waits, so "40 seconds of outage" takes milliseconds and the same turns happen on any machine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from tests.support.memkafka import MemBroker, MemConsumer, MemMessage, MemProducer
from tests.support.simclock import VirtualClock
from worker import config
from worker.api.errors import ApiError
from worker.api.models import Candidate, Face, FaceRect, IdentifyResult
from worker.core.breaker import CircuitBreaker
from worker.core.outcomes import RetryPolicy
from worker.core.ratelimit import AimdRateLimiter
from worker.runtime.identify import Identifier
from worker.runtime.observer import Observer, Snapshot, Tracer
from worker.runtime.pipeline import Pipeline

IN, RESULTS, DLQ = "images", "results", "dlq"
STATS_INTERVAL_S = 1.0  # the worker asks librdkafka for statistics every 5 s; 1 s keeps the tests short

OK = IdentifyResult(
    faces=(
        Face(
            rect=FaceRect(x=1, y=2, width=30, height=40),
            candidates=(Candidate(person_id="alice", face_id="f1", confidence=95.0, tag=""),),
        ),
    ),
    request_id="",
    http_status=200,
)


def err(code: int | str, http_status: int | None = None) -> ApiError:
    if isinstance(code, int):
        return ApiError.from_service(code, "scripted", http_status=http_status)
    return ApiError.local(code, "scripted", http_status=http_status)


@dataclass
class Call:
    at: float
    kind: str  # identify | check
    url: str
    outcome: str  # ok or the error code


class FakeApi:
    """The face API as a test scripts it: ``answer`` decides every identify call (default: OK), ``check``
    the configuration check; ``quota`` (calls/s, token bucket of one second) answers 15 above it."""

    def __init__(self, clock: VirtualClock, latency_s: float = 0.05) -> None:
        self.clock = clock
        self.latency_s = latency_s
        self.answer: Callable[[str], ApiError | IdentifyResult] = lambda url: OK
        self.check: Callable[[], ApiError | None] = lambda: None
        self.quota: float | None = None
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._stamp = clock.now()

    def down(self, error: ApiError) -> None:
        self.answer = lambda url: error

    def up(self) -> None:
        self.answer = lambda url: OK

    def _throttled(self) -> bool:
        if self.quota is None:
            return False
        now = self.clock.now()
        self._tokens = min(self.quota, self._tokens + (now - self._stamp) * self.quota)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return False
        return True

    def identify_url(self, url: str, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult:
        self.clock.sleep(self.latency_s)
        with self._lock:
            answer = err(15) if self._throttled() else self.answer(url)
            outcome = answer.code if isinstance(answer, ApiError) else "ok"
            self.calls.append(Call(self.clock.now(), "identify", url, outcome))
        if isinstance(answer, ApiError):
            raise answer
        return answer

    def identify_image(self, image: bytes, group_ids: Sequence[str], session_id: str | None = None) -> IdentifyResult:
        raise AssertionError("url mode only")

    def check_configuration(self, group_ids: Sequence[str]) -> None:
        self.clock.sleep(self.latency_s)
        with self._lock:
            answer = err(15) if self._throttled() else self.check()
            self.calls.append(Call(self.clock.now(), "check", "", answer.code if answer else "ok"))
        if answer is not None:
            raise answer

    def identify_calls(self, since: float = float("-inf"), until: float = float("inf")) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.kind == "identify" and since <= c.at < until]


class Snapshots(Observer):
    def __init__(self) -> None:
        self.last = Snapshot()

    def snapshot(self, snap: Snapshot) -> None:
        self.last = snap


@dataclass
class Harness:
    clock: VirtualClock
    broker: MemBroker
    consumer: MemConsumer
    producer: MemProducer
    api: FakeApi
    breaker: CircuitBreaker
    limiter: AimdRateLimiter
    identifier: Identifier
    pipeline: Pipeline
    snapshots: Snapshots
    partitions: int
    published: int = 0
    _next_stats: float = 0.0

    # -- input -----------------------------------------------------------------------------------

    def publish(self, n: int, partition: int | None = None, *, url: str | None = None) -> list[MemMessage]:
        msgs = []
        for _ in range(n):
            p = self.published % self.partitions if partition is None else partition
            event = {"image_url": url or f"http://img.test/{self.published}.jpg", "event_id": f"e{self.published}"}
            msgs.append(self.broker.append(IN, p, orjson.dumps(event), key=f"k{self.published}".encode()))
            self.published += 1
        return msgs

    def assign(self, *partitions: int) -> None:
        self.consumer.rebalance(assign=[(IN, p) for p in partitions])

    def revoke(self, *partitions: int) -> None:
        self.consumer.rebalance(revoke=[(IN, p) for p in partitions])

    def lose(self, *partitions: int) -> None:
        self.consumer.rebalance(lose=[(IN, p) for p in partitions])

    # -- driving ---------------------------------------------------------------------------------

    def turn(self) -> None:
        """One turn of the loop; every ``STATS_INTERVAL_S`` the consumer's statistics first, as librdkafka does."""
        if self.clock.now() >= self._next_stats:
            self._next_stats = self.clock.now() + STATS_INTERVAL_S
            self.pipeline._on_stats(orjson.dumps(self.consumer.statistics()).decode())
        self.pipeline.turn()

    def run(self, seconds: float, max_turns: int = 200_000) -> None:
        """Turn the loop for ``seconds`` of virtual time."""
        end = self.clock.now() + seconds
        for _ in range(max_turns):
            if self.clock.now() >= end or self.pipeline.fatal_reason:
                return
            self.turn()
        raise AssertionError(f"{max_turns} turns did not cover {seconds}s of virtual time")

    def run_until(self, done: Callable[[], bool], within_s: float, max_turns: int = 200_000) -> float:
        """Turn the loop until ``done()``; return the virtual seconds it took (fails after ``within_s``)."""
        start = self.clock.now()
        for _ in range(max_turns):
            if done():
                return self.clock.now() - start
            if self.clock.now() - start > within_s:
                break
            self.turn()
        raise AssertionError(f"not done within {within_s}s of virtual time ({self.clock.now() - start:.1f}s)")

    def stop(self) -> int:
        self.pipeline.request_stop()
        self.pipeline._drain()
        self.pipeline._close()
        return int(self.pipeline._exit_code)

    # -- output ----------------------------------------------------------------------------------

    def results(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.value() or b"") for m in self.broker.records(RESULTS)]

    def dead_letters(self) -> list[tuple[str, dict[str, Any]]]:
        return [((m.key() or b"").decode(), orjson.loads(m.value() or b"")) for m in self.broker.records(DLQ)]

    def outputs_by_partition(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for r in self.results():
            p = r["source"]["partition"]
            counts[p] = counts.get(p, 0) + 1
        return counts

    def committed(self, partition: int) -> int | None:
        return self.broker.committed.get((self.consumer.group, (IN, partition)))


def build(
    *,
    partitions: int = 2,
    max_in_flight: int = 8,
    latency_s: float = 0.05,
    policy: RetryPolicy | None = None,
    breaker: CircuitBreaker | None = None,
    limiter: AimdRateLimiter | None = None,
    cooperative: bool = True,
    fetch_chunk: int = 100,
    tracer: Tracer | None = None,
    **overrides: Any,
) -> Harness:
    clock = VirtualClock()
    broker = MemBroker()
    for topic in (IN, RESULTS, DLQ):
        broker.create_topic(topic, partitions)
    settings = config.load(
        environ={},
        overrides={
            "input_topic": IN,
            "results_topic": RESULTS,
            "dlq_topic": DLQ,
            "group_ids": "g1",
            "max_in_flight": max_in_flight,
            "assignment_strategy": "cooperative-sticky" if cooperative else "range",
            **overrides,
        },
    )
    api = FakeApi(clock, latency_s)
    breaker = breaker or CircuitBreaker(
        failure_ratio=settings.breaker_failure_ratio, open_s=settings.breaker_open_s, clock=clock.now
    )
    limiter = limiter or AimdRateLimiter(settings.rate_limit_qps, clock=clock.now)
    snapshots = Snapshots()
    identifier = Identifier(
        api,
        default_groups=settings.group_ids,
        policy=policy
        or RetryPolicy(
            max_attempts=settings.max_attempts,
            deadline_s=1e9,  # tenacity measures its deadline in real time; attempts bound the retries here
            backoff_initial_s=settings.backoff_initial_s,
            backoff_max_s=settings.backoff_max_s,
        ),
        limiter=limiter,
        breaker=breaker,
        observer=snapshots,
        clock=clock,
    )
    consumer = MemConsumer(broker, clock, cooperative=cooperative, fetch_chunk=fetch_chunk)
    producer = MemProducer(broker, clock)
    pipeline = Pipeline(
        settings,
        identifier,
        breaker=breaker,
        observer=snapshots,
        consumer=consumer,
        producer=producer,
        clock=clock,
        tracer=tracer,
    )
    consumer.set_on_commit(pipeline._on_commit)  # type: ignore[arg-type]
    clock.outstanding = pipeline.outstanding
    pipeline.start()
    return Harness(
        clock, broker, consumer, producer, api, breaker, limiter, identifier, pipeline, snapshots, partitions
    )
