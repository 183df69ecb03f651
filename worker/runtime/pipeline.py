"""The poll loop: consume → identify (HTTP threads) → result or dead letter → commit after delivery.

Commit contract (tested one failure at a time in tests/pipeline/):

1. For partition P, offset N+1 is committed only when every consumed offset ≤ N of P has its output
   (result or dead letter) acknowledged by the broker (idempotent producer, acks=all). Commits are
   asynchronous every ``commit_interval_s``, synchronous on revoke and on shutdown.
2. Revoke: stop dispatching the revoked partitions, wait up to ``revoke_timeout_s`` for their
   in-flight events, commit what is contiguous, forget the rest (it is redelivered to the new owner).
   Completions that arrive later for a revoked partition are discarded, never produced twice.
   Lost assignment: commit nothing.
3. Configuration/auth errors (wrong key, unknown appid, missing group…) stop the pipeline: nothing
   is written for the affected event, its offset is not committed, the exit code is non-zero and the
   reason names the cause.
4. SIGTERM/SIGINT: stop consuming, drain in-flight events within ``drain_timeout_s``, commit, close.

The loop never blocks on HTTP: calls run on a bounded pool of threads and their completions come back
through a queue. When the window of ``max_in_flight`` unfinished events is full, or the circuit
breaker is open, all assigned partitions are paused so that polling (and group membership) goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from worker import __version__
from worker.api.errors import ApiError, ErrorClass, meaning
from worker.config import Settings
from worker.core import records
from worker.core.breaker import CircuitBreaker
from worker.core.guard import DeadLetterGuard
from worker.core.offsets import OffsetTracker
from worker.core.ordering import OrderingGate
from worker.runtime.identify import Completion, Identifier, Kind, Task
from worker.runtime.observer import Observer, Snapshot

log = logging.getLogger("worker.pipeline")

TP = tuple[str, int]

EXIT_OK = 0
EXIT_CONFIG = 3  # the API says our configuration/credentials are wrong
EXIT_DLQ_GUARD = 4  # nearly every event went to the dead-letter topic
EXIT_KAFKA = 5  # an output could not be delivered, or the Kafka client failed fatally

# Size refusals: local (message.max.bytes) and from the broker (max.message.bytes of the topic).
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})

# A window full for longer than this pauses the partitions (see Pipeline._wait_while_full).
_PAUSE_AFTER_S = 1.0

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
}


def config_error_reason(err: ApiError) -> str:
    cause = _CAUSES.get(err.code, "the worker's configuration")
    status = f", HTTP {err.http_status}" if err.http_status else ""
    return f"the face API refused our configuration (code {err.code}: {err.message}{status}); check {cause}"


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


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        identifier: Identifier,
        *,
        breaker: CircuitBreaker,
        observer: Observer | None = None,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        consumer_config: dict[str, Any] | None = None,
        producer_config: dict[str, Any] | None = None,
        worker_version: str = __version__,
    ) -> None:
        from worker.runtime import kafka

        self.settings = settings
        self.stats = PipelineStats()
        self._identifier = identifier
        self._breaker = breaker
        self._observer = observer or Observer()
        self._version = worker_version
        self._instance = f"{socket.gethostname()}/{os.getpid()}"
        self._in_topic = settings.input_topic
        self._results_topic = settings.results_topic
        self._dlq_topic = settings.dlq_topic
        self._max_in_flight = int(settings.max_in_flight)
        self._max_buffered = max(4 * self._max_in_flight, 64)

        cconf = consumer_config or kafka.consumer_config(settings)
        cconf.setdefault("stats_cb", self._on_stats)
        cconf.setdefault("error_cb", self._on_kafka_error)
        cconf.setdefault("on_commit", self._on_commit)
        pconf = producer_config or kafka.producer_config(settings)
        pconf.setdefault("error_cb", self._on_kafka_error)
        self._consumer = consumer or Consumer(cconf)
        self._producer = producer or Producer(pconf)

        self._tracker = OffsetTracker()
        self._gate: OrderingGate[Task] = OrderingGate(settings.ordering)
        self._guard = DeadLetterGuard(
            window=settings.dlq_guard_window,
            max_ratio=settings.dlq_guard_ratio,
            min_events=settings.dlq_guard_window,  # judge only a full window
        )
        self._assigned: set[TP] = set()
        self._completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._pool = _TaskPool(self._max_in_flight)
        self._dispatched = 0  # handed to the pool, not yet completed
        self._stop = threading.Event()
        self._abort = False  # set when the drain deadline passed: threads give up at once
        self._closing = False
        self._fatal: str | None = None
        self._exit_code = EXIT_OK
        self._paused = False
        self._broker_reachable = True
        self._last_commit = 0.0
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

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        self._consumer.subscribe(
            [self._in_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            while not self._stop.is_set() and self._fatal is None:
                self._turn()
            self._drain()
        finally:
            self._close()
        reason = self._fatal or "stopped"
        self._observer.stopped(self._exit_code, reason)
        return self._exit_code

    # -- the loop ----------------------------------------------------------------------------

    def _turn(self) -> None:
        now = time.monotonic()
        self._observer.loop_turned(now)
        handled = self._handle_completions()
        self._producer.poll(0)
        if now - self._last_commit >= self.settings.commit_interval_s:
            self._commit(asynchronous=True)
            self._last_commit = now
        if now - self._last_snapshot >= 1.0:
            self._publish_snapshot()
            self._last_snapshot = now
        # The window counts events not yet completed (in a thread or queued behind a predecessor); outputs
        # waiting for their broker acknowledgement do not hold a slot, the tracker still holds their commit.
        free = self._max_in_flight - self._dispatched - self._gate.queued()
        # Done events behind a slow one are not committable yet; bound them too (memory, duplicates on a crash).
        held_back = self._tracker.buffered() >= self._max_buffered
        if free <= 0 or held_back or self._breaker.is_open:
            self._wait_while_full(now, handled)
            return
        self._full_since = None
        self._set_paused(False)
        # Never sit in consume() while calls are in flight: completions would wait behind it.
        busy = handled or self._dispatched > 0
        msgs = self._consumer.consume(min(free, 500), 0 if busy else 0.1)
        if msgs:
            self._on_messages(msgs)
        elif busy and not handled:
            self._wait_for_completion(0.005)  # wakes at the first completion; new input is seen within 5 ms

    def _wait_while_full(self, now: float, handled: int) -> None:
        """The window is full: take no new events, wait for completions.

        A short wait just skips consume(). A long one (or an open breaker) pauses the partitions, so that
        polling can go on for the group (rebalances, poll interval) without fetching: pausing and resuming
        costs a refetch, which is why it is not done for every full moment.
        """
        if self._full_since is None:
            self._full_since = now
        if self._breaker.is_open or now - self._full_since >= _PAUSE_AFTER_S:
            self._set_paused(True)
        if self._paused or now - self._last_poll >= _PAUSE_AFTER_S:
            self._last_poll = now
            msg = self._consumer.poll(0)  # paused: only events and errors; otherwise at most one record
            if msg is not None:
                self._on_messages([msg])
        if not handled:
            self._wait_for_completion(0.05)

    def _wait_for_completion(self, timeout: float) -> None:
        try:
            completion = self._completions.get(timeout=timeout)
        except queue.Empty:
            return
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
            consumed_at=time.monotonic(),
        )
        if self._gate.offer(task, tp, source.key):
            self._dispatch(task)

    def _dispatch(self, task: Task) -> None:
        self._dispatched += 1
        self._dispatched_by_tp[task.tp] = self._dispatched_by_tp.get(task.tp, 0) + 1
        identifier = self._identifier
        completions = self._completions
        tracker = self._tracker

        def cancelled() -> bool:
            return self._abort or tracker.epoch(task.tp) != task.epoch

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

    # -- completions → outputs ---------------------------------------------------------------

    def _handle(self, c: Completion) -> None:
        self._dispatched -= 1
        task = c.task
        self._dispatched_by_tp[task.tp] -= 1
        current = self._tracker.epoch(task.tp) == task.epoch
        if current:
            for ready in self._gate.release(task, task.tp, task.source.key):
                self._dispatch(ready)
        if not current:
            self.stats.discarded_late += 1  # revoked meanwhile: the new owner processes it again
            return
        if c.kind is Kind.CANCELLED:
            return
        if c.kind is Kind.STOP:
            assert c.error is not None
            if self._fatal is None:
                self._fatal = config_error_reason(c.error)
                self._exit_code = EXIT_CONFIG
                log.error(self._fatal, extra={"event_id": task.event.event_id, "code": c.error.code})
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
            if self._fatal is None:
                self._fatal = f"could not deliver to {topic}: {reason}"
                self._exit_code = EXIT_KAFKA
                log.error(self._fatal, extra={"topic": tp[0], "partition": tp[1], "offset": offset})

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
        self._guard.record(True)
        self._observer.dead_letter(code)
        if self._guard.tripped and self._fatal is None:
            self._fatal = (
                f"stopping: {self.settings.dlq_guard_ratio:.0%} or more of the last {self.settings.dlq_guard_window}"
                f" events went to the dead-letter topic (latest code {code}: {meaning(code)})"
            )
            self._exit_code = EXIT_DLQ_GUARD
            log.error(self._fatal)

    # -- commits -------------------------------------------------------------------------------

    def _commit(self, *, asynchronous: bool, only: set[TP] | None = None) -> None:
        positions = self._tracker.commit_positions()
        if only is not None:
            positions = {tp: pos for tp, pos in positions.items() if tp in only}
        if not positions:
            return
        offsets = [TopicPartition(t, p, pos) for (t, p), pos in positions.items()]
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # e.g. ILLEGAL_GENERATION mid-rebalance: the next commit retries
            log.warning("commit failed: %s", exc)
            return
        self._tracker.mark_committed(positions)
        self.stats.commits += 1
        if not asynchronous:
            self._observer.committed(positions)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("async commit failed: %s", err)
            self._tracker.uncommit({(p.topic, p.partition) for p in partitions})
            return
        self._observer.committed({(p.topic, p.partition): p.offset for p in partitions if p.offset >= 0})

    # -- rebalance -----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._assigned.update(tps)
        if self._paused:
            # Assign explicitly so the new partitions can be paused like the rest right away.
            with contextlib.suppress(Exception):
                if self._cooperative:
                    consumer.incremental_assign(partitions)
                else:
                    consumer.assign(partitions)
                consumer.pause(partitions)
        self._observer.rebalance("assigned", tps)
        self._publish_snapshot()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        if not tps:
            return
        # Events queued behind a predecessor (key/partition ordering) were never dispatched: the next
        # owner gets them again. Only the dispatched ones are waited for.
        self._gate.drop(tps)
        if not self._closing:
            deadline = time.monotonic() + self.settings.revoke_timeout_s

            def running() -> bool:
                return any(self._dispatched_by_tp.get(tp, 0) for tp in tps)

            while time.monotonic() < deadline and running():
                self._handle_completions()
                self._producer.poll(0)
                if running():
                    self._wait_for_completion(0.02)
            self._producer.flush(max(0.0, deadline - time.monotonic()))
        else:
            self._producer.flush(5)
        self._commit(asynchronous=False, only=tps)
        self._forget(tps)
        self._observer.rebalance("revoked", sorted(tps))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self._gate.drop(tps)
        self._forget(tps)  # another member owns them now: commit nothing
        self._observer.rebalance("lost", sorted(tps))

    def _forget(self, tps: set[TP]) -> None:
        # Forgetting the partition ends its epoch: every in-flight completion of it becomes stale.
        self._tracker.revoke(tps)
        self._assigned -= tps
        self._publish_snapshot()

    # -- pause / resume, snapshot ------------------------------------------------------------

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        assignment = self._consumer.assignment()
        try:
            if paused:
                self._consumer.pause(assignment)
            else:
                self._consumer.resume(assignment)
        except Exception as exc:  # mid-rebalance; the next turn tries again
            log.debug("pause/resume failed: %s", exc)
            return
        self._paused = paused

    def _publish_snapshot(self) -> None:
        now = time.monotonic()
        gaps = self._tracker.commit_gaps()
        oldest = self._tracker.oldest_age(now) or 0.0
        self._observer.snapshot(
            Snapshot(
                assigned=tuple(sorted(self._assigned)),
                paused=self._paused,
                in_flight=self._dispatched,
                queued=self._gate.queued(),
                oldest_in_flight_age_s=oldest,
                commit_gap=gaps,
                breaker_state=str(self._breaker.state),
                rate_limit_qps=self._identifier.rate_limit_qps,
                broker_reachable=self._broker_reachable,
                stopping=self._stop.is_set() or self._closing,
                fatal=self._fatal,
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
        self._observer.kafka_stats(stats)

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._broker_reachable = False
        if err.fatal() and self._fatal is None:
            self._fatal = f"fatal Kafka client error: {err.str()}"
            self._exit_code = EXIT_KAFKA
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
        deadline = time.monotonic() + (
            self.settings.drain_timeout_s if self._fatal is None else min(5.0, self.settings.drain_timeout_s)
        )
        while self._dispatched > 0 and time.monotonic() < deadline:
            self._handle_completions()
            self._producer.poll(0)
            self._wait_for_completion(0.05)
        self._abort = True  # whatever is still running gives up; its offsets stay uncommitted
        self._handle_completions()
        self._producer.flush(10)
        self._commit(asynchronous=False)

    def _close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            self._consumer.close()  # revokes (our callback commits what is contiguous) and leaves the group
        with contextlib.suppress(Exception):
            self._producer.flush(5)
        self._pool.shutdown()
