"""The poll loop: consume → identify (HTTP threads) → result or dead letter → commit after delivery.

Commit contract (tested rule by rule on an in-memory Kafka in tests/pipeline/test_contract_*.py, and end to
end on a real broker in tests/pipeline/):

1. For partition P, offset N+1 is committed only when every consumed offset ≤ N of P has its output
   (result or dead letter) acknowledged by the broker (idempotent producer, acks=all). Commits are
   asynchronous every ``commit_interval_s`` (sooner when the uncommitted window is half full), synchronous
   on revoke and on shutdown. A commit counts as done only when the broker confirmed it, partition by
   partition; a refused one is offered again.
2. The uncommitted window is bounded: consumed events whose commit is not confirmed yet (in flight, waiting
   for an acknowledgement, done behind a slower one, or done but not committed) never exceed
   ``max(4 × max_in_flight, 64)``; at the bound the worker takes no new events until commits land. This is
   also the bound on what a crash makes the next owner process again.
3. Revoke: stop dispatching the revoked partitions, cancel their held events, wait up to
   ``revoke_timeout_s`` for their calls in progress, commit what is contiguous, forget the rest (it is
   redelivered to the new owner). Completions that arrive later for a revoked partition are discarded, never
   produced twice. Lost assignment: commit nothing. Every (re)assigned partition is explicitly paused or
   resumed to match the loop's state (librdkafka keeps a pause across a revoke).
4. Configuration/auth errors confirmed by a check call (wrong key, unknown appid, missing group…) stop the
   pipeline: nothing is written for the affected event, its offset is not committed, the exit code is 3 and
   the reason names the cause.
5. SIGTERM/SIGINT: stop consuming, drain in-flight events within ``drain_timeout_s``, commit, close.

The loop never blocks on HTTP: calls run on a bounded pool of threads and their completions come back
through a queue. Consumed events wait in per-partition queues and are dispatched round-robin, so every
assigned partition gets a share of the ``max_in_flight`` window; a partition holding more than its share
is paused until its queue drains. While the circuit breaker is not closed nothing new is dispatched; when
it is half-open and no event is there to test the API, the loop sends a probe call itself, so recovery
never depends on an event being in flight. When nearly every event goes to the dead-letter topic, the
guard pauses the worker instead of letting a restart loop flood the topic (see worker.core.guard).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from worker import __version__
from worker.api.errors import ApiError, ErrorClass, meaning
from worker.config import Settings
from worker.core import records
from worker.core.breaker import BreakerState, CircuitBreaker
from worker.core.clock import SYSTEM_CLOCK, Clock
from worker.core.guard import DeadLetterGuard
from worker.core.offsets import OffsetTracker
from worker.core.ordering import OrderingGate
from worker.runtime.identify import Completion, Identifier, Kind, ProbeDone, Task
from worker.runtime.observer import Observer, Snapshot

log = logging.getLogger("worker.pipeline")

TP = tuple[str, int]

EXIT_OK = 0
EXIT_CONFIG = 3  # the API says our configuration/credentials are wrong (confirmed by a check call)
EXIT_KAFKA = 5  # an output could not be delivered, or the Kafka client failed fatally

# Size refusals: local (message.max.bytes) and from the broker (max.message.bytes of the topic).
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})

# Commit errors worth another try within the same revoke/shutdown (a rebalance or a coordinator move).
_RETRIABLE_COMMIT = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._WAIT_COORD,
    }
)
_SYNC_COMMIT_TRIES = 3
# After the drain, each producer flush gets this long: the stop must fit in drain_timeout_s + 4 s, after which
# the watchdog ends the process (worker.runtime.stopping). Outputs not acknowledged by then stay uncommitted.
_CLOSE_FLUSH_S = 1.0

# A window full for longer than this pauses the partitions (see Pipeline._blocked_pause).
_PAUSE_AFTER_S = 1.0
# An assigned partition that delivered nothing for this long while others did gets a look (_fair_pauses).
_STARVE_S = 1.0
_STARVE_LOOK_S = 0.05
# An async commit not confirmed after this long is sent again.
_COMMIT_RESEND_S = 1.0

# Which setting to look at for each configuration/auth code.
_CAUSES: dict[str, str] = {
    "3": "the account (arrears/suspended) or a malformed request",
    "4": "secret_id/secret_key (MDW_SECRET_ID, MDW_SECRET_KEY): the signature is empty",
    "5": "secret_id/secret_key (MDW_SECRET_ID, MDW_SECRET_KEY): the signature is malformed",
    "6": "appid/bucket (MDW_APPID, MDW_BUCKET) do not match the signature",
    "9": "the system clock or signature_lifetime_s (MDW_SIGNATURE_LIFETIME_S): signatures arrive expired",
    "10": "appid (MDW_APPID): the AppID does not exist",
    "11": "secret_id (MDW_SECRET_ID): the SecretId does not exist",
    "12": "appid/secret_id (MDW_APPID, MDW_SECRET_ID) do not belong together (sub-account keys give this)",
    "13": "the system clock: signatures are seen as replayed",
    "14": "secret_key (MDW_SECRET_KEY): the signature does not verify",
    "16": "bucket (MDW_BUCKET): the bucket does not exist",
    "24": "the API version: Tencent is retiring this interface",
    "-1306": "group_ids (MDW_GROUP_IDS): a configured group does not exist",
    "-1307": "group_ids (MDW_GROUP_IDS): the appid has no groups",
    "-1310": "the group is full (20000 persons)",
    "-1311": "the appid has too many groups (5000)",
    "http_401": "secret_id/secret_key (MDW_SECRET_ID, MDW_SECRET_KEY) and the account's permissions",
    "http_403": "the account's permissions for this API (secret_id MDW_SECRET_ID)",
}


def config_error_reason(err: ApiError) -> str:
    cause = _CAUSES.get(err.code, "the worker's configuration")
    status = f", HTTP {err.http_status}" if err.http_status else ""
    return f"the face API refused our configuration (code {err.code}: {err.message}{status}); check {cause}"


def unconsumed(stats: dict[str, Any]) -> dict[TP, int]:
    """Per partition, records above what the application consumed (``hi_offset`` − ``app_offset``), from
    librdkafka statistics; partitions with no figure yet are left out."""
    out: dict[TP, int] = {}
    for topic, tstats in (stats.get("topics") or {}).items():
        for key, pstats in (tstats.get("partitions") or {}).items():
            partition = int(pstats.get("partition", key))
            hi, app = pstats.get("hi_offset", -1), pstats.get("app_offset", -1)
            if partition >= 0 and hi >= 0:
                out[(topic, partition)] = hi - max(app, pstats.get("committed_offset", -1), 0)
    return out


class _TaskPool:
    """N daemon threads running tasks from one queue: no thread outlives the process or blocks exit."""

    def __init__(self, size: int, name: str = "mdw-http") -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(size)]
        for t in self._threads:
            t.start()

    def _loop(self) -> None:
        while True:
            fn = self._tasks.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:  # pragma: no cover - tasks catch their own errors
                log.exception("task crashed")

    def submit(self, fn: Callable[[], None]) -> None:
        self._tasks.put(fn)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)


@dataclass
class PipelineStats:
    """Totals for tests, benchmarks and the demo's summary."""

    consumed: int = 0
    results: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    discarded_late: int = 0
    commits: int = 0
    probes: int = 0


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        identifier: Identifier,
        *,
        breaker: CircuitBreaker,
        observer: Observer | None = None,
        consumer: Consumer | Any | None = None,
        producer: Producer | Any | None = None,
        consumer_config: dict[str, Any] | None = None,
        producer_config: dict[str, Any] | None = None,
        worker_version: str = __version__,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        from worker.runtime import kafka

        self.settings = settings
        self.stats = PipelineStats()
        self._identifier = identifier
        self._breaker = breaker
        self._observer = observer or Observer()
        self._clock = clock
        self._version = worker_version
        self._instance = f"{socket.gethostname()}/{os.getpid()}"
        self._in_topic = settings.input_topic
        self._results_topic = settings.results_topic
        self._dlq_topic = settings.dlq_topic
        self._max_in_flight = int(settings.max_in_flight)
        # Consumed events whose commit is not confirmed yet: what a crash makes the next owner redo.
        self._max_uncommitted = max(4 * self._max_in_flight, 64)

        cconf = consumer_config or kafka.consumer_config(settings)
        cconf.setdefault("stats_cb", self._on_stats)
        cconf.setdefault("error_cb", self._on_kafka_error)
        cconf.setdefault("on_commit", self._on_commit)
        pconf = producer_config or kafka.producer_config(settings)
        pconf.setdefault("error_cb", self._on_kafka_error)
        self._consumer = consumer if consumer is not None else Consumer(cconf)
        self._producer = producer if producer is not None else Producer(pconf)

        self._tracker = OffsetTracker(clock=clock.now)
        self._gate: OrderingGate[Task] = OrderingGate(settings.ordering)
        self._guard = DeadLetterGuard(
            window=settings.dlq_guard_window,
            max_ratio=settings.dlq_guard_ratio,
            pause_s=settings.dlq_guard_pause_s,
            clock=clock.now,
        )
        self._assigned: set[TP] = set()
        self._ready: dict[TP, deque[Task]] = {}  # consumed, dispatchable; the dict order is the rotation
        self._ready_count = 0
        self._completions: queue.SimpleQueue[Completion | ProbeDone] = queue.SimpleQueue()
        self._pool = _TaskPool(self._max_in_flight + 1)  # one spare thread for the breaker's probe
        self._dispatched = 0  # handed to the pool, not yet completed
        self._probing = False
        self._revoking: set[TP] = set()
        self._stop = threading.Event()
        self._abort = False  # set when the drain deadline passed: threads give up at once
        self._closing = False
        self._fatal: str | None = None
        self._exit_code = EXIT_OK
        self._paused: set[TP] = set()  # what we asked the consumer to pause
        self._last_fed: dict[TP, float] = {}  # when each assigned partition last delivered a record
        self._backlog: dict[TP, int] = {}  # records not yet handed to us, per partition (librdkafka statistics)
        self._starve_look: tuple[float, set[TP]] | None = None  # (since, starving partitions) while looking
        self._broker_reachable = True
        self._last_commit = 0.0
        self._commit_sent: dict[TP, tuple[int, float]] = {}  # async commits awaiting confirmation
        self._last_snapshot = 0.0
        self._full_since: float | None = None
        self._last_poll = 0.0
        self._dispatched_by_tp: dict[TP, int] = {}
        self._cooperative = settings.assignment_strategy == "cooperative-sticky"

    # -- public ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to drain and stop (safe from signal handlers and other threads)."""
        self._stop.set()

    @property
    def fatal_reason(self) -> str | None:
        return self._fatal

    def outstanding(self) -> int:
        """Tasks handed to the HTTP threads whose completion has not been queued yet (tests' virtual time)."""
        return self._dispatched + int(self._probing) - self._completions.qsize()

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        self.start()
        try:
            while not self._stop.is_set() and self._fatal is None:
                self.turn()
            self._drain()
        finally:
            self._close()
        reason = self._fatal or "stopped"
        self._observer.stopped(self._exit_code, reason)
        return self._exit_code

    def start(self) -> None:
        self._consumer.subscribe(
            [self._in_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    # -- the loop ----------------------------------------------------------------------------

    def turn(self) -> None:
        """One turn of the loop: completions, commits, probe, dispatch, then new records or a short wait."""
        now = self._clock.now()
        self._observer.loop_turned(now)
        handled = self._handle_completions()
        self._producer.poll(0)
        self._maybe_commit(now)
        if now - self._last_snapshot >= 1.0:
            self._publish_snapshot()
            self._last_snapshot = now
        self._maybe_probe()
        self._fill()
        room = self._intake_room(now)
        self._reconcile_pauses(now, room)
        if room > 0:
            # Never sit in consume() while calls are in flight: completions would wait behind it.
            busy = handled or self._dispatched > 0
            msgs = self._consumer.consume(min(room, 500), 0 if busy else 0.1)
            if msgs:
                self._on_messages(msgs)
                self._fill()
            elif busy and not handled:
                self._wait_for_completion(0.005)  # wakes at the first completion; new input is seen within 5 ms
            return
        # Taking nothing: keep serving the group (rebalances, commit results) without fetching more than one.
        if len(self._paused) == len(self._assigned) or now - self._last_poll >= _PAUSE_AFTER_S:
            self._last_poll = now
            msg = self._consumer.poll(0)
            if msg is not None:
                self._on_messages([msg])
        if not handled:
            self._wait_for_completion(0.05)

    def _intake_room(self, now: float) -> int:
        """How many new records the loop may take now (0: none, and why decides the pausing)."""
        if not self._admitting():
            return 0
        uncommitted = self._tracker.buffered() + self._tracker.unconfirmed()
        window = 2 * self._max_in_flight - self._dispatched - self._gate.queued() - self._ready_count
        room = min(window, self._max_uncommitted - uncommitted)
        if room <= 0:
            if self._full_since is None:
                self._full_since = now
            return 0
        self._full_since = None
        return room

    def _admitting(self) -> bool:
        """False while nothing new may start: the breaker tests the API, or the DLQ guard holds the worker."""
        return self._breaker.state is BreakerState.CLOSED and self._guard.admits()

    def _wait_for_completion(self, timeout: float) -> None:
        completion = self._clock.wait(self._completions, timeout)
        if completion is not None:
            self._handle(completion)

    def _handle_completions(self) -> int:
        n = 0
        while True:
            try:
                completion = self._completions.get_nowait()
            except queue.Empty:
                return n
            self._handle(completion)
            n += 1

    def _on_messages(self, msgs: list[Message]) -> None:
        consumed = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                self._on_consume_error(err)
                continue
            consumed += 1
            self._on_message(msg)
        if consumed:
            self._broker_reachable = True
            self.stats.consumed += consumed
            self._observer.consumed(self._in_topic, consumed)

    def _on_message(self, msg: Message) -> None:
        source = records.Source.from_message(msg)  # type: ignore[arg-type]  # consumed headers are a list
        tp = source.tp
        if tp not in self._assigned:  # revoked while the record was on its way to us
            return
        now = self._clock.now()
        self._last_fed[tp] = now
        if self._starve_look is not None and tp in self._starve_look[1]:
            self._end_starve_look(now)  # a starving partition delivers: resume the others
        if self._tracker.would_go_back(tp, source.offset):
            self._reset_partition(tp, source.offset)
        epoch = self._tracker.track(tp, source.offset)
        replay_count = records.replay_count(source.headers)
        try:
            event = records.parse_event(msg.value(), source)
        except records.InvalidEvent as invalid:
            error = records.ErrorInfo.from_invalid(invalid, at_ms=int(time.time() * 1000))
            self._produce_dead_letter(tp, epoch, source, msg.value(), None, error, replay_count)
            return
        task = Task(
            event=event,
            raw=msg.value(),
            source=source,
            tp=tp,
            epoch=epoch,
            replay_count=replay_count,
            consumed_at=self._clock.now(),
        )
        if self._gate.offer(task, tp, source.key):
            self._make_ready(task)

    def _reset_partition(self, tp: TP, offset: int) -> None:
        """The partition's offsets went back (a seek, log truncation, an offset reset): start it afresh.

        Everything consumed from it so far belongs to the old epoch: its late completions are discarded and
        the records come again from ``offset``.
        """
        log.warning("offsets of %s[%d] went back to %d: tracking it afresh", tp[0], tp[1], offset)
        self._gate.drop({tp})
        self._drop_ready({tp})
        self._tracker.revoke({tp})
        self._commit_sent.pop(tp, None)

    # -- dispatch ------------------------------------------------------------------------------

    def _make_ready(self, task: Task) -> None:
        queue_ = self._ready.get(task.tp)
        if queue_ is None:
            queue_ = self._ready[task.tp] = deque()
        queue_.append(task)
        self._ready_count += 1

    def _drop_ready(self, tps: set[TP]) -> None:
        for tp in tps:
            dropped = self._ready.pop(tp, None)
            if dropped:
                self._ready_count -= len(dropped)

    def _fill(self) -> None:
        """Dispatch ready events into free slots, one partition after the other (a fair share each)."""
        if not self._ready or not self._admitting():
            return
        while self._ready and self._dispatched < self._max_in_flight:
            tp = next(iter(self._ready))
            tasks = self._ready.pop(tp)
            self._ready_count -= 1
            self._dispatch(tasks.popleft())
            if tasks:
                self._ready[tp] = tasks  # to the end of the rotation

    def _dispatch(self, task: Task) -> None:
        self._dispatched += 1
        self._dispatched_by_tp[task.tp] = self._dispatched_by_tp.get(task.tp, 0) + 1
        identifier = self._identifier
        completions = self._completions
        tracker = self._tracker
        revoking = self._revoking

        def cancelled() -> bool:
            return self._abort or task.tp in revoking or tracker.epoch(task.tp) != task.epoch

        def run() -> None:
            try:
                completion = identifier.run(task, cancelled)
            except Exception as exc:  # a bug must not lose the event: dead-letter it with the reason
                log.exception("identify crashed", extra={"event_id": task.event.event_id})
                completion = Completion(
                    task=task,
                    kind=Kind.DEAD_LETTER,
                    error=ApiError("internal_error", ErrorClass.PERMANENT, f"{type(exc).__name__}: {exc}"),
                )
            completions.put(completion)

        self._pool.submit(run)

    def _maybe_probe(self) -> None:
        """Half-open and nothing is testing the API: send a probe call, so recovery never waits for an event."""
        if self._probing or self._breaker.state is not BreakerState.HALF_OPEN or not self._breaker.allow():
            return
        self._probing = True
        self.stats.probes += 1
        identifier = self._identifier
        completions = self._completions

        def cancelled() -> bool:
            return self._abort

        def run() -> None:
            try:
                done = identifier.probe(cancelled)
            except Exception as exc:  # pragma: no cover - a bug in the probe must not wedge the loop
                log.exception("probe crashed")
                done = ProbeDone(error=ApiError("internal_error", ErrorClass.TRANSIENT, str(exc)))
            completions.put(done)

        self._pool.submit(run)

    # -- completions → outputs ---------------------------------------------------------------

    def _handle(self, c: Completion | ProbeDone) -> None:
        if isinstance(c, ProbeDone):
            self._probing = False
            if c.confirmed_config is not None:
                self._fail(config_error_reason(c.confirmed_config), EXIT_CONFIG, code=c.confirmed_config.code)
            return
        self._dispatched -= 1
        task = c.task
        left = self._dispatched_by_tp[task.tp] - 1
        if left:
            self._dispatched_by_tp[task.tp] = left
        else:
            del self._dispatched_by_tp[task.tp]
        current = self._tracker.epoch(task.tp) == task.epoch
        if current:
            for ready in self._gate.release(task, task.tp, task.source.key):
                self._make_ready(ready)
        if not current:
            self.stats.discarded_late += 1  # revoked meanwhile: the new owner processes it again
            return
        if c.kind is Kind.CANCELLED:
            return
        if c.kind is Kind.STOP:
            assert c.error is not None
            self._fail(config_error_reason(c.error), EXIT_CONFIG, event_id=task.event.event_id, code=c.error.code)
            return
        if c.kind is Kind.RESULT:
            assert c.result is not None
            value = records.build_result(
                task.event,
                c.result,
                source=task.source,
                attempts=c.attempts,
                api_latency_ms=c.api_latency_ms,
                worker_version=self._version,
                processed_at_ms=int(time.time() * 1000),
                image_mode="image" if self.settings.image_mode == "fetch" else "url",
                worker_instance=self._instance,
            )
            faces = len(c.result.faces)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "result: %d faces",
                    faces,
                    extra={
                        "event_id": task.event.event_id,
                        "topic": task.tp[0],
                        "partition": task.tp[1],
                        "offset": task.source.offset,
                        "attempts": c.attempts,
                    },
                )
            self._produce(
                self._results_topic,
                task.source.key,
                value,
                records.result_headers(task.source),
                task.tp,
                task.epoch,
                task.source.offset,
                lambda: self._on_result_delivered(faces),
            )
            return
        err = c.error
        assert err is not None
        now_ms = int(time.time() * 1000)
        error = records.ErrorInfo.from_api_error(
            err,
            attempts=c.attempts,
            first_failure_ms=c.first_failure_ms or now_ms,
            last_failure_ms=c.last_failure_ms or now_ms,
        )
        self._produce_dead_letter(
            task.tp, task.epoch, task.source, task.raw, task.event.event_id, error, task.replay_count
        )

    def _produce_dead_letter(
        self,
        tp: TP,
        epoch: int,
        source: records.Source,
        raw: bytes | None,
        event_id: str | None,
        error: records.ErrorInfo,
        replay_count: int,
    ) -> None:
        value = records.build_dead_letter(
            raw,
            event_id=event_id,
            error=error,
            source=source,
            worker_version=self._version,
            replay_count=replay_count,
            consumer_group=self.settings.group_id,
            worker_instance=self._instance,
        )
        headers = records.dead_letter_headers(source, error, self._version, replay_count)
        code = error.code
        log.info(
            "dead letter %s: %s",
            code,
            error.message,
            extra={
                "event_id": event_id,
                "topic": source.topic,
                "partition": source.partition,
                "offset": source.offset,
                "code": code,
                "attempts": error.attempts,
            },
        )

        def without_original() -> None:
            # The broker refuses a record this size: keep the error and coordinates, drop the original's
            # value, key and headers (a replay cannot use it; the input offset still says where it was).
            log.warning("dead letter too large; sent without the original", extra={"offset": source.offset})
            stripped = records.Source(source.topic, source.partition, source.offset, source.timestamp_ms)
            small = records.build_dead_letter(
                raw,
                event_id=event_id,
                error=error,
                source=stripped,
                worker_version=self._version,
                replay_count=replay_count,
                consumer_group=self.settings.group_id,
                worker_instance=self._instance,
                max_original_bytes=0,
            )
            self._produce(
                self._dlq_topic,
                records.dead_letter_key(code),
                small,
                records.dead_letter_headers(stripped, error, self._version, replay_count),
                tp,
                epoch,
                source.offset,
                lambda: self._on_dead_letter_delivered(code),
            )

        self._produce(
            self._dlq_topic,
            records.dead_letter_key(code),
            value,
            headers,
            tp,
            epoch,
            source.offset,
            lambda: self._on_dead_letter_delivered(code),
            on_too_large=without_original,
        )

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes | None]] | list[tuple[str, bytes]],
        tp: TP,
        epoch: int,
        offset: int,
        on_acked: Callable[[], None],
        on_too_large: Callable[[], None] | None = None,
    ) -> None:
        """Produce one output; ``on_acked`` runs once the broker acknowledged it and the offset is done.

        ``on_too_large`` replaces the record when the client or the broker refuses its size; without it,
        a refusal stops the worker like any failed delivery (the input must not be committed).
        """

        def fail(reason: str) -> None:
            # librdkafka already retried for message.timeout.ms: the output is not safe, so the
            # input must not be committed. Stop; the event is processed again after restart.
            self._fail(
                f"could not deliver to {topic}: {reason}", EXIT_KAFKA, topic=tp[0], partition=tp[1], offset=offset
            )

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                if on_too_large is not None and err.code() in _TOO_LARGE:
                    on_too_large()
                else:
                    fail(err.str())
                return
            if self._tracker.done(tp, offset, epoch):
                on_acked()

        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,  # type: ignore[arg-type]  # None values are valid headers
                    on_delivery=delivered,
                )
                return
            except BufferError:  # local queue full: serve delivery reports, then try again
                self._producer.poll(0.05)
            except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
                error = exc.args[0]
                if on_too_large is not None and error.code() in _TOO_LARGE:
                    on_too_large()
                else:
                    fail(error.str())
                return

    def _on_result_delivered(self, faces: int) -> None:
        self.stats.results += 1
        self._guard.record(False)
        self._observer.result(faces)

    def _on_dead_letter_delivered(self, code: str) -> None:
        self.stats.dead_letters[code] = self.stats.dead_letters.get(code, 0) + 1
        self._observer.dead_letter(code)
        if self._guard.record(True):
            log.error(
                "dead-letter guard: %.0f%% or more of the last events went to the dead-letter topic (latest code %s:"
                " %s); taking no new events for %.0fs, then a trial of %d",
                100 * self.settings.dlq_guard_ratio,
                code,
                meaning(code),
                self._guard.paused_for(),
                self._guard.trial_events,
            )
            self._publish_snapshot()

    def _fail(self, reason: str, exit_code: int, **context: Any) -> None:
        """Stop the worker: the first reason wins, the loop drains and exits with ``exit_code``."""
        if self._fatal is not None:
            return
        self._fatal = reason
        self._exit_code = exit_code
        log.error(reason, extra=context)

    # -- commits -------------------------------------------------------------------------------

    def _maybe_commit(self, now: float) -> None:
        due = now - self._last_commit >= self.settings.commit_interval_s
        if due or self._tracker.unconfirmed() >= self._max_uncommitted // 2:
            self._commit_async(now)
            self._last_commit = now

    def _commit_async(self, now: float) -> None:
        """Send the positions that moved; an unconfirmed one is sent again only after ``_COMMIT_RESEND_S``."""
        fresh = {}
        for tp, position in self._tracker.commit_positions().items():
            sent = self._commit_sent.get(tp)
            if sent is None or sent[0] != position or now - sent[1] >= _COMMIT_RESEND_S:
                fresh[tp] = position
        if not fresh:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, pos) for (t, p), pos in fresh.items()], asynchronous=True
            )
        except KafkaException as exc:  # e.g. no coordinator right now: the next interval offers them again
            log.warning("commit failed: %s", exc)
            return
        for tp, position in fresh.items():
            self._commit_sent[tp] = (position, now)
        self.stats.commits += 1

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Result of a commit: only what the broker confirmed, partition by partition, counts as committed."""
        confirmed: dict[TP, int] = {}
        refused: list[str] = []
        for p in partitions:
            tp = (p.topic, p.partition)
            error = err or p.error
            if error is not None:
                refused.append(f"{p.topic}[{p.partition}]@{p.offset}: {error}")
                self._commit_sent.pop(tp, None)  # offered again at the next interval
            elif p.offset >= 0:
                confirmed[tp] = p.offset
        if refused:
            log.warning("commit refused, will retry: %s", "; ".join(refused))
        if confirmed:
            self._confirm_committed(confirmed)

    def _confirm_committed(self, positions: dict[TP, int]) -> None:
        positions = {tp: pos for tp, pos in positions.items() if self._tracker.epoch(tp) is not None}
        if not positions:
            return
        self._tracker.mark_committed(positions)
        for tp, position in positions.items():
            sent = self._commit_sent.get(tp)
            if sent is not None and sent[0] <= position:
                del self._commit_sent[tp]
        self._observer.committed(positions)

    def _commit_sync(self, only: set[TP] | None = None) -> None:
        """Commit now and wait for the answer (revoke, shutdown); retry what a rebalance refused, a few times."""
        positions = self._tracker.commit_positions(only)
        for attempt in range(_SYNC_COMMIT_TRIES):
            if not positions:
                return
            last = attempt == _SYNC_COMMIT_TRIES - 1
            offsets = [TopicPartition(t, p, pos) for (t, p), pos in positions.items()]
            try:
                result = self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                error = exc.args[0]
                if last or not isinstance(error, KafkaError) or error.code() not in _RETRIABLE_COMMIT:
                    log.warning("commit failed: %s (the next owner processes these events again)", exc)
                    return
                log.info("commit refused (%s), retrying", error.str())
                self._clock.sleep(0.1)
                continue
            self.stats.commits += 1
            if result is None:
                confirmed = dict(positions)
            else:
                confirmed = {(p.topic, p.partition): p.offset for p in result if p.error is None and p.offset >= 0}
            self._confirm_committed(confirmed)
            positions = {tp: pos for tp, pos in positions.items() if tp not in confirmed}
            if positions and not last:
                self._clock.sleep(0.1)
        if positions:
            log.warning("commit not confirmed for %s (the next owner processes these events again)", sorted(positions))

    # -- rebalance -----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._assigned.update(tps)
        self._revoking.difference_update(tps)
        now = self._clock.now()
        for tp in tps:
            self._last_fed[tp] = now
        try:
            if self._cooperative:
                consumer.incremental_assign(partitions)
            else:
                consumer.assign(partitions)
        except Exception as exc:  # pragma: no cover - librdkafka assigns itself after the callback
            log.warning("assign failed: %s", exc)
        # librdkafka keeps a partition's pause across a revoke: set every assigned one's state deliberately.
        hold = bool(self._paused) and self._paused >= (self._assigned - set(tps))
        fresh = [TopicPartition(t, p) for t, p in tps]
        try:
            if hold:
                consumer.pause(fresh)
                self._paused.update(tps)
            else:
                consumer.resume(fresh)
                self._paused.difference_update(tps)
        except Exception as exc:  # pragma: no cover - the next reconcile tries again
            log.warning("pause/resume of assigned partitions failed: %s", exc)
        self._observer.rebalance("assigned", tps)
        self._publish_snapshot()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        if not tps:
            return
        # Held and waiting events of these partitions give up now (the next owner gets them again); events
        # queued behind a predecessor or ready were never dispatched. Only calls in progress are waited for.
        self._revoking |= tps
        self._gate.drop(tps)
        self._drop_ready(tps)
        if not self._closing:
            deadline = self._clock.now() + self.settings.revoke_timeout_s

            def running() -> bool:
                return any(self._dispatched_by_tp.get(tp, 0) for tp in tps)

            while self._clock.now() < deadline and running():
                self._handle_completions()
                self._producer.poll(0)
                if running():
                    self._wait_for_completion(0.02)
            self._producer.flush(max(0.0, deadline - self._clock.now()))
        else:
            self._producer.flush(_CLOSE_FLUSH_S)
        self._commit_sync(only=tps)
        self._forget(tps)
        self._observer.rebalance("revoked", sorted(tps))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self._gate.drop(tps)
        self._drop_ready(tps)
        self._forget(tps)  # another member owns them now: commit nothing
        self._observer.rebalance("lost", sorted(tps))

    def _forget(self, tps: set[TP]) -> None:
        # Forgetting the partition ends its epoch: every in-flight completion of it becomes stale.
        self._tracker.revoke(tps)
        self._assigned -= tps
        self._revoking -= tps
        self._paused -= tps
        for tp in tps:
            self._last_fed.pop(tp, None)
        for tp in tps:
            self._commit_sent.pop(tp, None)
        self._publish_snapshot()

    # -- pause / resume, snapshot ------------------------------------------------------------

    def _reconcile_pauses(self, now: float, room: int) -> None:
        """Pause what must not fetch, resume the rest: all partitions while the worker takes nothing for a
        while (window full for ``_PAUSE_AFTER_S``, breaker testing the API, guard holding), else only the
        partitions holding more than their share of the window (so that the others' records come through)."""
        if not self._assigned:
            return
        if room <= 0:
            stuck = self._full_since is not None and now - self._full_since >= _PAUSE_AFTER_S
            if not stuck and self._admitting():
                return  # briefly full: skipping consume() is cheaper than a pause (it drops the prefetch)
            self._apply_pauses(set(self._assigned))
            return
        self._apply_pauses(self._fair_pauses(now))

    def _fair_pauses(self, now: float) -> set[TP]:
        """Partitions to pause so that starving ones come through (the rest of the time: none).

        librdkafka hands over what a fetch brought partition after partition, so one partition with a deep
        backlog can fill every consume() for many seconds. When an assigned partition has delivered nothing
        for ``_STARVE_S`` while others did, the others are paused for one look (pausing drops their prefetch,
        so whatever was fetched for the starving ones comes next); the look ends as soon as a starving
        partition delivers, or after ``_STARVE_LOOK_S`` when it has nothing. Only a partition with a backlog
        (librdkafka's statistics: high watermark above what we consumed) counts as starving: a merely empty
        one never makes the others pay a refetch.
        """
        if len(self._assigned) < 2:
            self._starve_look = None
            return set()
        if self._starve_look is not None:
            started, starving = self._starve_look
            if now - started < _STARVE_LOOK_S and starving & self._assigned:
                return self._assigned - starving
            self._end_starve_look(now)
            return set()
        starving = {
            tp
            for tp in self._assigned
            if now - self._last_fed.get(tp, now) >= _STARVE_S and self._backlog.get(tp, 0) > 0
        }
        if not starving or starving == self._assigned:
            return set()
        self._starve_look = (now, starving)
        return self._assigned - starving

    def _end_starve_look(self, now: float) -> None:
        if self._starve_look is not None:
            for tp in self._starve_look[1]:
                if tp in self._assigned:
                    self._last_fed[tp] = now  # looked at: the next look in _STARVE_S at the earliest
        self._starve_look = None

    def _apply_pauses(self, wanted: set[TP]) -> None:
        to_pause = wanted - self._paused
        to_resume = (self._paused - wanted) & self._assigned
        try:
            if to_pause:
                self._consumer.pause([TopicPartition(t, p) for t, p in sorted(to_pause)])
                self._paused |= to_pause
            if to_resume:
                self._consumer.resume([TopicPartition(t, p) for t, p in sorted(to_resume)])
                self._paused -= to_resume
        except Exception as exc:  # mid-rebalance; the next turn tries again
            log.debug("pause/resume failed: %s", exc)

    def structure_sizes(self) -> dict[str, int]:
        """Entries held by every long-lived structure (bounded whatever the traffic; benchmarks watch them)."""
        return {
            "offset_tracker": self._tracker.buffered(),
            "ordering_gate": self._gate.queued(),
            "ready": self._ready_count,
            "commits_unconfirmed": len(self._commit_sent),
            "dispatched_partitions": len(self._dispatched_by_tp),
            "breaker_window": self._breaker.size(),
            **self._identifier.structure_sizes(),
        }

    def _publish_snapshot(self) -> None:
        now = self._clock.now()
        gaps = self._tracker.commit_gaps()
        oldest = self._tracker.oldest_age(now) or 0.0
        self._observer.snapshot(
            Snapshot(
                assigned=tuple(sorted(self._assigned)),
                paused=bool(self._paused),
                in_flight=self._dispatched,
                queued=self._gate.queued() + self._ready_count,
                oldest_in_flight_age_s=oldest,
                commit_gap=gaps,
                breaker_state=str(self._breaker.state),
                rate_limit_qps=self._identifier.rate_limit_qps,
                broker_reachable=self._broker_reachable,
                stopping=self._stop.is_set() or self._closing,
                fatal=self._fatal,
                guard_tripped=not self._guard.admits(),
                structures=self.structure_sizes(),
            )
        )

    # -- Kafka callbacks -----------------------------------------------------------------------

    def _on_stats(self, raw: str) -> None:
        try:
            stats = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        # Real brokers have a node id ≥ 0; the bootstrap entries (-1) say nothing once metadata is known.
        brokers = [b for b in stats.get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        if brokers:
            self._broker_reachable = any(b.get("state") == "UP" for b in brokers)
        self._backlog = unconsumed(stats)
        self._observer.kafka_stats(stats)

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._broker_reachable = False
        if err.fatal():
            self._fail(f"fatal Kafka client error: {err.str()}", EXIT_KAFKA)
        log.warning("kafka: %s", err.str())

    def _on_consume_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._broker_reachable = False
        log.warning("consume error: %s", err.str())

    # -- shutdown ------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Stop taking events; give in-flight ones ``drain_timeout_s`` to finish; commit."""
        self._closing = True
        self._publish_snapshot()
        with contextlib.suppress(Exception):
            self._consumer.pause(self._consumer.assignment())
        self._gate.drop(set(self._assigned))
        self._drop_ready(set(self._assigned))
        budget = self.settings.drain_timeout_s if self._fatal is None else min(5.0, self.settings.drain_timeout_s)
        deadline = self._clock.now() + budget
        while self._dispatched + self._probing > 0 and self._clock.now() < deadline:
            self._handle_completions()
            self._producer.poll(0)
            self._wait_for_completion(0.05)
        self._abort = True  # whatever is still running gives up; its offsets stay uncommitted
        self._handle_completions()
        self._producer.flush(_CLOSE_FLUSH_S)
        self._commit_sync()

    def _close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            self._consumer.close()  # revokes (our callback commits what is contiguous) and leaves the group
        with contextlib.suppress(Exception):
            self._producer.flush(_CLOSE_FLUSH_S)
        self._pool.shutdown()
