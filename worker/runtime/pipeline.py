"""The poll loop: consume → identify (HTTP threads) → result or dead letter → commit after delivery.

Commit contract (tested rule by rule on an in-memory Kafka in tests/pipeline/test_contract_*.py, and end to
end on a real broker in tests/pipeline/):

1. For partition P, offset N+1 is committed only when every consumed offset ≤ N of P has its output
   (result or dead letter) acknowledged by the broker (idempotent producer, acks=all). Commits are
   asynchronous every ``commit_interval_s`` (sooner when a quarter of the uncommitted window is used), synchronous
   on revoke and on shutdown. A commit counts as done only when the broker confirmed it, partition by
   partition; a refused one is offered again (worker.runtime.commits).
2. The uncommitted window is bounded: consumed events whose commit is not confirmed yet (in flight, waiting
   for an acknowledgement, or done behind a slower one: "held back"; or done and committable but not confirmed
   yet) never exceed ``2 × max(4 × max_in_flight, 64) + max_in_flight``. Held back events are bounded by
   W = ``max(4 × max_in_flight, 64)``: at W the worker takes nothing new. Unconfirmed ones too: at W it stops
   taking batches and polls for the commit results (at most one record per turn), and at W + ``max_in_flight``
   it pauses every partition until commits land. This is also the bound on what a crash makes the next owner
   process again.
3. Revoke: stop dispatching the revoked partitions, cancel their held events, wait up to
   ``revoke_timeout_s`` for their calls in progress, commit what is contiguous, forget the rest (it is
   redelivered to the new owner). Completions that arrive later for a revoked partition are discarded, never
   produced twice. Lost assignment: commit nothing. Every (re)assigned partition is explicitly paused or
   resumed to match the loop's state (librdkafka keeps a pause across a revoke).
4. Configuration/auth errors confirmed by a check call (wrong key, unknown appid, missing group…) stop the
   pipeline: nothing is written for the affected event, its offset is not committed, the exit code is 3 and
   the reason names the cause.
5. SIGTERM/SIGINT: stop consuming, drain in-flight events within ``drain_timeout_s`` of the request (a revoke
   waiting for its calls when it came stops waiting then too), commit, close.

The loop never blocks on HTTP: calls run on a bounded pool of threads and their completions come back
through a queue. The pieces, one job each: ``Dispatcher`` (ready queues, round-robin, the pool, the probe),
``OutputWriter`` (records and the too-large fallback, offsets done on acknowledgement), ``Committer``,
``PauseControl`` (which partitions fetch; fairness). This module owns the loop, the rebalance callbacks and
the shutdown. While the circuit breaker is not closed nothing new is dispatched; when it is half-open the
loop sends a probe call itself, so recovery never depends on an event being in flight. When nearly every
event goes to the dead-letter topic, the guard holds the worker instead of letting a restart loop flood the
topic (see worker.core.guard).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer

from worker import __version__
from worker.api.codes import Api
from worker.api.errors import config_error_reason, meaning
from worker.config import Settings
from worker.core import formats, records
from worker.core.breaker import BreakerState, CircuitBreaker
from worker.core.clock import SYSTEM_CLOCK, Clock
from worker.core.guard import DeadLetterGuard
from worker.core.offsets import OffsetTracker
from worker.core.ordering import Mode, OrderingGate
from worker.runtime.commits import Committer
from worker.runtime.dispatch import Dispatcher
from worker.runtime.exits import ExitCode
from worker.runtime.identify import Completion, Identifier, Kind, ProbeDone, Task
from worker.runtime.kafka import ConsumerLike, MessageLike, Partition, ProducerLike
from worker.runtime.observer import Observer, Snapshot, Tracer
from worker.runtime.outputs import Identity, OutputWriter, PipelineStats
from worker.runtime.pausing import PAUSE_AFTER_S, PauseControl

log = logging.getLogger("worker.pipeline")

# After the drain, each producer flush gets this long: the stop must fit in drain_timeout_s + 4 s, after which
# the watchdog ends the process (worker.runtime.stopping). Outputs not acknowledged by then stay uncommitted.
_CLOSE_FLUSH_S = 1.0


@dataclass(frozen=True)
class PipelineOptions:
    """What the loop needs of the settings."""

    input_topic: str
    results_topic: str
    dlq_topic: str
    group_id: str
    max_in_flight: int
    ordering: Mode
    cooperative: bool
    commit_interval_s: float
    revoke_timeout_s: float
    drain_timeout_s: float
    image_mode: str
    dlq_guard_window: int
    dlq_guard_ratio: float
    dlq_guard_pause_s: float
    api: Api = Api.V1
    # How each input topic is read (default: every topic in the event format).
    inputs: formats.Inputs = field(default_factory=formats.Inputs)

    @classmethod
    def from_settings(cls, s: Settings) -> PipelineOptions:
        return cls(
            input_topic=s.input_topic,
            results_topic=s.results_topic,
            dlq_topic=s.dlq_topic,
            group_id=s.group_id,
            max_in_flight=s.max_in_flight,
            ordering=s.ordering,
            cooperative=s.assignment_strategy == "cooperative-sticky",
            commit_interval_s=s.commit_interval_s,
            revoke_timeout_s=s.revoke_timeout_s,
            drain_timeout_s=s.drain_timeout_s,
            image_mode=s.image_mode,
            dlq_guard_window=s.dlq_guard_window,
            dlq_guard_ratio=s.dlq_guard_ratio,
            dlq_guard_pause_s=s.dlq_guard_pause_s,
            api=Api(s.api),
            inputs=s.inputs(),
        )


class Pipeline:
    def __init__(
        self,
        settings: Settings | PipelineOptions,
        identifier: Identifier,
        *,
        breaker: CircuitBreaker,
        observer: Observer | None = None,
        consumer: ConsumerLike | None = None,
        producer: ProducerLike | None = None,
        consumer_config: dict[str, Any] | None = None,
        producer_config: dict[str, Any] | None = None,
        worker_version: str = __version__,
        clock: Clock = SYSTEM_CLOCK,
        tracer: Tracer | None = None,
    ) -> None:
        from worker.runtime import kafka

        opts = settings if isinstance(settings, PipelineOptions) else PipelineOptions.from_settings(settings)
        self.options = opts
        self.stats = PipelineStats()
        self._identifier = identifier
        self._breaker = breaker
        self._observer = observer or Observer()
        self._tracer = tracer or Tracer()  # the no-op one unless tracing is on (worker.ops.tracing)
        self._clock = clock
        self._max_in_flight = opts.max_in_flight
        # Consumed events whose commit is not confirmed yet: what a crash makes the next owner redo.
        self._max_uncommitted = max(4 * opts.max_in_flight, 64)

        if consumer is None or producer is None:
            assert isinstance(settings, Settings), "real Kafka clients need the settings"
        if consumer is None:
            cconf = consumer_config or kafka.consumer_config(settings)  # type: ignore[arg-type]
            cconf.setdefault("stats_cb", self._on_stats)
            cconf.setdefault("error_cb", self._on_kafka_error)
            cconf.setdefault("on_commit", self._on_commit)
            consumer = Consumer(cconf)
        if producer is None:
            pconf = producer_config or kafka.producer_config(settings)  # type: ignore[arg-type]
            pconf.setdefault("error_cb", self._on_kafka_error)
            producer = Producer(pconf)
        self._consumer: ConsumerLike = consumer
        self._producer: ProducerLike = producer

        self._tracker = OffsetTracker(clock=clock.now)
        self._gate: OrderingGate[Task] = OrderingGate(opts.ordering)
        self._guard = DeadLetterGuard(
            window=opts.dlq_guard_window,
            max_ratio=opts.dlq_guard_ratio,
            pause_s=opts.dlq_guard_pause_s,
            clock=clock.now,
        )
        self._assigned: set[Partition] = set()
        self._completions: queue.Queue[Completion | ProbeDone] = queue.Queue()  # not SimpleQueue: worker.core.clock
        self._dispatch = Dispatcher(
            identifier, self._tracker, self._completions, max_in_flight=opts.max_in_flight, aborted=lambda: self._abort
        )
        self._outputs = OutputWriter(
            self._producer,
            self._tracker,
            self._guard,
            self._observer,
            self.stats,
            results_topic=opts.results_topic,
            dlq_topic=opts.dlq_topic,
            identity=Identity(
                worker_version,
                f"{socket.gethostname()}/{os.getpid()}",
                opts.group_id,
                "image" if opts.image_mode == "fetch" else "url",
                opts.api,
            ),
            fail=self._fail,
            guard_tripped=self._guard_tripped,
        )
        self._commits = Committer(
            self._consumer,
            self._tracker,
            self._observer,
            self.stats,
            clock,
            interval_s=opts.commit_interval_s,
            max_uncommitted=self._max_uncommitted,
        )
        self._pauses = PauseControl(self._consumer)
        self._stop = threading.Event()
        self._stop_at: float | None = None  # when the stop was asked for: the drain's budget counts from then
        self._abort = False  # set when the drain deadline passed: threads give up at once
        self._closing = False
        self._fatal: str | None = None
        self._exit_code = ExitCode.OK
        self._broker_reachable = True
        self._last_snapshot = 0.0
        self._full_since: float | None = None
        self._last_poll = 0.0
        self._waiting_for_commits = False  # the uncommitted window is full: commit results are awaited
        self._over_margin = False  # ... and the records taken meanwhile used the margin: every partition pauses

    # -- public ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to drain and stop (safe from signal handlers and other threads).

        The drain ends ``drain_timeout_s`` after the first request, whatever the loop was waiting for meanwhile
        (a revoke's wait ends then too): the watchdog allows ``drain_timeout_s`` + 4 s from the signal.
        """
        if self._stop_at is None:
            self._stop_at = self._clock.now()
        self._stop.set()

    def _stop_deadline(self, deadline: float) -> float:
        """``deadline``, or the end of the stop's drain if that comes first."""
        if self._stop_at is None:
            return deadline
        return min(deadline, self._stop_at + self.options.drain_timeout_s)

    @property
    def fatal_reason(self) -> str | None:
        return self._fatal

    def outstanding(self) -> int:
        """Tasks handed to the HTTP threads whose completion has not been queued yet (tests' virtual time)."""
        return self._dispatch.in_flight + int(self._dispatch.probing) - self._completions.qsize()

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
        return int(self._exit_code)

    def start(self) -> None:
        self._consumer.subscribe(
            list(formats.split_topics(self.options.input_topic)),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    # -- the loop ----------------------------------------------------------------------------

    def turn(self) -> None:
        """One turn of the loop: completions, commits, probe, dispatch, then new records or a short wait."""
        now = self._clock.now()
        self._observer.loop_turned(now)
        handled = self._handle_completions()
        self._producer.poll(0)
        self._commits.maybe(now)
        if now - self._last_snapshot >= 1.0:
            self._publish_snapshot()
            self._last_snapshot = now
        self._maybe_probe()
        if self._admitting():
            self._dispatch.fill()
        room = self._intake_room(now)
        self._reconcile_pauses(now, room)
        if room > 0:
            # Never sit in consume() while calls are in flight: completions would wait behind it.
            busy = handled or self._dispatch.in_flight > 0
            msgs = self._consumer.consume(min(room, 500), 0 if busy else 0.1)
            if msgs:
                self._on_messages(msgs)
                if self._admitting():  # the batch's dead letters may have tripped the guard
                    self._dispatch.fill()
            elif busy and not handled:
                self._wait_for_completion(0.005)  # wakes at the first completion; new input is seen within 5 ms
            return
        # Taking nothing: keep serving the group (rebalances, commit results) without fetching more than one.
        # Waiting for commits to be confirmed: their results come through poll(), so poll on every turn (at most
        # one record each, and none once the window's hard margin is used: then every partition is paused).
        if (
            self._waiting_for_commits
            or len(self._pauses.paused) == len(self._assigned)
            or now - self._last_poll >= PAUSE_AFTER_S
        ):
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
        # Two bounds of max(4 × max_in_flight, 64) each: events held back behind a slower one (not committable
        # yet), and events committable but not confirmed (commits must keep up, also through a rebalance).
        held_back = self._tracker.buffered()
        unconfirmed = self._tracker.unconfirmed()
        queued = self._dispatch.in_flight + self._gate.queued() + self._dispatch.ready_count
        self._waiting_for_commits = unconfirmed >= self._max_uncommitted
        self._over_margin = unconfirmed >= self._max_uncommitted + self._max_in_flight
        room = min(
            2 * self._max_in_flight - queued,
            self._max_uncommitted - held_back,
            self._max_uncommitted - unconfirmed,
        )
        if room <= 0:
            if self._full_since is None:
                self._full_since = now
            return 0
        self._full_since = None
        return room

    def _admitting(self) -> bool:
        """False while nothing new may start: the breaker tests the API, or the DLQ guard holds the worker."""
        return self._breaker.state is BreakerState.CLOSED and self._guard.admits()

    def _reconcile_pauses(self, now: float, room: int) -> None:
        if room <= 0:
            stuck = self._full_since is not None and now - self._full_since >= PAUSE_AFTER_S
            if not stuck and not self._over_margin and self._admitting():
                return  # briefly full: skipping consume() is cheaper than a pause (it drops the prefetch)
        self._pauses.reconcile(self._assigned, now, hold_all=room <= 0)

    def _maybe_probe(self) -> None:
        """Half-open and nothing is testing the API: send a probe call, so recovery never waits for an event."""
        if self._dispatch.probing or self._breaker.state is not BreakerState.HALF_OPEN or not self._breaker.allow():
            return
        self.stats.probes += 1
        self._dispatch.probe()

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

    # -- records in ------------------------------------------------------------------------------

    def _on_messages(self, msgs: Sequence[Any]) -> None:
        consumed: dict[str, int] = {}  # per topic: the worker may consume several
        for msg in msgs:
            err = msg.error()
            if err is not None:
                self._on_consume_error(err)
                continue
            topic = msg.topic() or ""  # as records.Source names it
            consumed[topic] = consumed.get(topic, 0) + 1
            self._on_message(msg)
        if consumed:
            self._broker_reachable = True
            self.stats.consumed += sum(consumed.values())
            for topic, count in consumed.items():
                self._observer.consumed(topic, count)

    def _on_message(self, msg: MessageLike) -> None:
        source = records.Source.from_message(msg)  # type: ignore[arg-type]  # consumed headers are a list
        tp = source.tp
        if tp not in self._assigned:  # revoked while the record was on its way to us
            return
        self._pauses.fed(tp, self._clock.now())
        if self._tracker.would_go_back(tp, source.offset):
            self._reset_partition(tp, source.offset)
        trace = self._tracer.event(source)  # after a reset: this record belongs to the new epoch
        epoch = self._tracker.track(tp, source.offset)
        replay_count = records.replay_count(source.headers)
        raw = msg.value()
        value = raw.encode() if isinstance(raw, str) else raw
        try:
            event = self.options.inputs.parse(value, source)  # the topic's format: worker.core.formats
        except records.InvalidEvent as invalid:
            error = records.ErrorInfo.from_invalid(invalid, at_ms=int(time.time() * 1000))
            self._outputs.dead_letter(tp, epoch, source, value, None, error, replay_count, trace=trace)
            return
        trace.parsed(event.event_id)
        task = Task(
            event=event,
            raw=value,
            source=source,
            tp=tp,
            epoch=epoch,
            replay_count=replay_count,
            consumed_at=self._clock.now(),
            trace=trace,
        )
        if self._gate.offer(task, tp, source.key):
            self._dispatch.ready(task)

    def _reset_partition(self, tp: Partition, offset: int) -> None:
        """The partition's offsets went back (a seek, log truncation, an offset reset): start it afresh.

        Everything consumed from it so far belongs to the old epoch: its late completions are discarded and
        the records come again from ``offset``.
        """
        log.warning("offsets of %s[%d] went back to %d: tracking it afresh", tp[0], tp[1], offset)
        self._gate.drop({tp})
        self._dispatch.drop({tp})
        self._tracker.revoke({tp})
        self._commits.forget({tp})
        self._tracer.abandon("reset", {tp})

    # -- completions → outputs ---------------------------------------------------------------

    def _handle(self, c: Completion | ProbeDone) -> None:
        if isinstance(c, ProbeDone):
            self._dispatch.probing = False
            if c.confirmed_config is not None:
                err = c.confirmed_config
                self._fail(config_error_reason(err), ExitCode.CONFIG_REFUSED, code=err.code)
            return
        task = c.task
        self._dispatch.completed(task)
        if self._tracker.epoch(task.tp) != task.epoch:
            # Revoked, lost or reset meanwhile: the new owner processes it again. Its trace ended then (abandon).
            self.stats.discarded_late += 1
            return
        for ready in self._gate.release(task, task.tp, task.source.key):
            self._dispatch.ready(ready)
        if c.kind is Kind.CANCELLED:
            task.trace.ended("cancelled", event_id=task.event.event_id)
            return
        if c.kind is Kind.STOP:
            assert c.error is not None
            task.trace.ended("stop", event_id=task.event.event_id, code=c.error.code)
            reason = config_error_reason(c.error)
            self._fail(reason, ExitCode.CONFIG_REFUSED, event_id=task.event.event_id, code=c.error.code)
        elif c.kind is Kind.RESULT:
            self._outputs.result(task, c)
        else:
            self._outputs.failed(task, c)

    def _guard_tripped(self, code: str) -> None:
        log.error(
            "dead-letter guard: %.0f%% or more of the last events went to the dead-letter topic (latest code %s:"
            " %s); taking no new events for %.0fs, then a trial of %d",
            100 * self.options.dlq_guard_ratio,
            code,
            meaning(code),
            self._guard.paused_for(),
            self._guard.trial_events,
        )
        self._publish_snapshot()

    def _fail(self, reason: str, exit_code: ExitCode, **context: Any) -> None:
        """Stop the worker: the first reason wins, the loop drains and exits with ``exit_code``."""
        if self._fatal is not None:
            return
        self._fatal = reason
        self._exit_code = exit_code
        log.error(reason, extra=context)

    # -- commits (librdkafka's callback) -------------------------------------------------------

    def _on_commit(self, err: KafkaError | None, partitions: list[Any]) -> None:
        self._commits.on_commit(err, partitions)

    # -- rebalance -----------------------------------------------------------------------------

    def _on_assign(self, consumer: ConsumerLike, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._assigned.update(tps)
        self._dispatch.revoking.difference_update(tps)
        try:
            if self.options.cooperative:
                consumer.incremental_assign(partitions)
            else:
                consumer.assign(partitions)
        except Exception as exc:  # pragma: no cover - librdkafka assigns itself after the callback
            log.warning("assign failed: %s", exc)
        # librdkafka keeps a partition's pause across a revoke: set every assigned one's state deliberately.
        paused = self._pauses.paused
        hold = bool(paused) and paused >= (self._assigned - set(tps))
        self._pauses.assigned(consumer, tps, self._clock.now(), hold=hold)
        self._observer.rebalance("assigned", tps)
        self._publish_snapshot()

    def _on_revoke(self, consumer: ConsumerLike, partitions: list[Any]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        if not tps:
            return
        # Held and waiting events of these partitions give up now (the next owner gets them again); events
        # queued behind a predecessor or ready were never dispatched. Only calls in progress are waited for.
        self._dispatch.revoking |= tps
        self._gate.drop(tps)
        self._dispatch.drop(tps)
        if not self._closing:
            deadline = self._clock.now() + self.options.revoke_timeout_s
            while self._clock.now() < self._stop_deadline(deadline) and self._dispatch.running(tps):
                self._handle_completions()
                self._producer.poll(0)
                if self._dispatch.running(tps):
                    self._wait_for_completion(0.02)
            self._producer.flush(max(0.0, self._stop_deadline(deadline) - self._clock.now()))
        else:
            self._producer.flush(_CLOSE_FLUSH_S)
        self._commits.sync(only=tps)
        self._forget(tps, "revoked")
        self._observer.rebalance("revoked", sorted(tps))

    def _on_lost(self, consumer: ConsumerLike, partitions: list[Any]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self._gate.drop(tps)
        self._dispatch.drop(tps)
        self._forget(tps, "lost")  # another member owns them now: commit nothing
        self._observer.rebalance("lost", sorted(tps))

    def _forget(self, tps: set[Partition], why: str) -> None:
        # Forgetting the partition ends its epoch: every in-flight completion of it becomes stale.
        self._tracker.revoke(tps)
        self._tracer.abandon(why, tps)  # the traces of its events without an output end now
        self._assigned -= tps
        self._dispatch.revoking -= tps
        self._pauses.forget(tps)
        self._commits.forget(tps)
        self._publish_snapshot()

    # -- snapshot ----------------------------------------------------------------------------

    def structure_sizes(self) -> dict[str, int]:
        """Entries held by every long-lived structure (bounded whatever the traffic; benchmarks watch them)."""
        return {
            "offset_tracker": self._tracker.buffered(),
            "ordering_gate": self._gate.queued(),
            "ready": self._dispatch.ready_count,
            "commits_unconfirmed": self._commits.unconfirmed_partitions(),
            "dispatched_partitions": len(self._dispatch.in_flight_by_partition),
            "breaker_window": self._breaker.size(),
            **self._identifier.structure_sizes(),
        }

    def _publish_snapshot(self) -> None:
        now = self._clock.now()
        self._observer.snapshot(
            Snapshot(
                assigned=tuple(sorted(self._assigned)),
                paused=bool(self._pauses.paused),
                in_flight=self._dispatch.in_flight,
                queued=self._gate.queued() + self._dispatch.ready_count,
                oldest_in_flight_age_s=self._tracker.oldest_age(now) or 0.0,
                commit_gap=self._tracker.commit_gaps(),
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
        self._pauses.backlog(stats)
        self._observer.kafka_stats(stats)

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._broker_reachable = False
        if err.fatal():
            self._fail(f"fatal Kafka client error: {err.str()}", ExitCode.KAFKA)
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
            self._consumer.pause(list(self._consumer.assignment()))
        self._gate.drop(set(self._assigned))
        self._dispatch.drop(set(self._assigned))
        budget = self.options.drain_timeout_s if self._fatal is None else min(5.0, self.options.drain_timeout_s)
        deadline = self._stop_deadline(self._clock.now() + budget)
        while self._dispatch.in_flight + self._dispatch.probing > 0 and self._clock.now() < deadline:
            self._handle_completions()
            self._producer.poll(0)
            self._wait_for_completion(0.05)
        self._abort = True  # whatever is still running gives up; its offsets stay uncommitted
        self._handle_completions()
        self._tracer.abandon("stopped")  # events dropped above or still running: their completions come too late
        self._producer.flush(_CLOSE_FLUSH_S)
        self._commits.sync()

    def _close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            # Revokes (our callback commits what is contiguous), then leaves the group; a static member
            # (group_instance_id) sends no LeaveGroup: its partitions wait out session_timeout_ms.
            self._consumer.close()
        with contextlib.suppress(Exception):
            self._producer.flush(_CLOSE_FLUSH_S)
        self._tracer.stopped()  # outputs never acknowledged: their traces end now, or never would
        self._dispatch.shutdown()
