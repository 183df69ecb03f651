"""Outputs: a completion becomes a record on the results or the dead-letter topic, and its input offset is
marked done only when the broker acknowledged that record (rule 1 of the commit contract).

A dead letter the client or the broker refuses for its size is sent again without the original (value, key
and headers dropped; the error and the input coordinates kept). A result refused for its size becomes a dead
letter ``result_too_large`` (with the original, or without it when that is refused too): stopping instead would
leave the offset uncommitted, and every restart would make the same result and stop again. Its offset is done
when that dead letter is acknowledged, and the guard counts the event once, as dead-lettered (a results topic
that refuses every result is a misconfiguration the guard holds the worker for). Any other failed delivery stops
the worker:
librdkafka already retried for ``message.timeout.ms``, so the output is not safe and the input must not be
committed; the event is processed again after the restart.

The dead-letter guard judges an event when its output is *produced*, not when the broker acknowledges it: the
outcome is known then, and a slow broker must not let the loop dead-letter a whole uncommitted window before the
guard sees the first of them. So once the guard trips, the only outputs still to come are those of the calls in
progress (at most ``max_in_flight``) and of the unparseable records of the batch being read. Metrics and stats
count acknowledged records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException

from worker.api.codes import Api, ErrorClass
from worker.core import records
from worker.core.guard import DeadLetterGuard
from worker.core.offsets import OffsetTracker
from worker.runtime.exits import ExitCode
from worker.runtime.identify import Completion, Task
from worker.runtime.kafka import Partition, ProducerLike
from worker.runtime.observer import NO_TRACE, EventTrace, Header, Observer

log = logging.getLogger("worker.outputs")

# Size refusals: local (message.max.bytes) and from the broker (max.message.bytes of the topic).
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})

Headers = list[tuple[str, bytes | None]] | list[tuple[str, bytes]]


@dataclass
class PipelineStats:
    """Totals for tests, benchmarks and the demo's summary."""

    consumed: int = 0
    results: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    discarded_late: int = 0
    commits: int = 0
    probes: int = 0


@dataclass(frozen=True)
class Identity:
    """Who writes the records (stamped into each of them)."""

    version: str
    instance: str  # host/pid
    group_id: str
    image_mode: Literal["url", "image"]  # "image" in fetch mode, as the result records name it
    api: Api = Api.V1  # the face API called: dead letters say it (results carry the answer's own)


@dataclass(frozen=True, slots=True)
class _Output:
    """One record to produce for the input at (``partition``, ``offset``) of assignment ``epoch``."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    partition: Partition
    epoch: int
    offset: int
    on_acked: Callable[[], None]
    on_too_large: Callable[[], None] | None = None  # replaces the record when its size is refused
    trace: EventTrace = NO_TRACE  # the event's trace: hears the delivery report


class OutputWriter:
    def __init__(
        self,
        producer: ProducerLike,
        tracker: OffsetTracker,
        guard: DeadLetterGuard,
        observer: Observer,
        stats: PipelineStats,
        *,
        results_topic: str,
        dlq_topic: str,
        identity: Identity,
        fail: Callable[..., None],
        guard_tripped: Callable[[str], None],
    ) -> None:
        self._producer = producer
        self._tracker = tracker
        self._guard = guard
        self._observer = observer
        self._stats = stats
        self._results_topic = results_topic
        self._dlq_topic = dlq_topic
        self._id = identity
        self._fail = fail
        self._guard_tripped = guard_tripped

    # -- results ---------------------------------------------------------------------------------

    def result(self, task: Task, c: Completion) -> None:
        assert c.result is not None
        value = records.build_result(
            task.event,
            c.result,
            source=task.source,
            attempts=c.attempts,
            api_latency_ms=c.api_latency_ms,
            worker_version=self._id.version,
            processed_at_ms=int(time.time() * 1000),
            image_mode=self._id.image_mode,
            worker_instance=self._id.instance,
        )
        faces = len(c.result.faces)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("result: %d faces", faces, extra=_where(task.source, event_id=task.event.event_id))
        self._guard.record(False)
        traced = task.trace.producing(self._results_topic, event_id=task.event.event_id, faces=faces)
        self._produce(
            _Output(
                self._results_topic,
                task.source.key,
                value,
                _with_trace_context(records.result_headers(task.source, task.event), traced),
                task.tp,
                task.epoch,
                task.source.offset,
                lambda: self._result_acked(faces),
                on_too_large=lambda: self._result_too_large(task, c, len(value), faces),
                trace=task.trace,
            )
        )

    def _result_too_large(self, task: Task, c: Completion, size: int, faces: int) -> None:
        """The broker (or the client) refused the result for its size: dead-letter the event instead (module doc)."""
        assert c.result is not None
        log.warning(
            "result of %d bytes refused as too large for %s; dead-lettered as %s",
            size,
            self._results_topic,
            records.RESULT_TOO_LARGE,
            extra=_where(task.source, task.event.event_id),
        )
        now_ms = int(time.time() * 1000)
        error = records.ErrorInfo(
            records.RESULT_TOO_LARGE,
            ErrorClass.PERMANENT.value,
            f"the result ({size} bytes, {faces} faces) was refused as too large for {self._results_topic}",
            c.result.http_status,
            c.attempts,
            now_ms,
            now_ms,
        )
        self.dead_letter(
            task.tp,
            task.epoch,
            task.source,
            task.raw,
            task.event.event_id,
            error,
            task.replay_count,
            trace=task.trace,
            recount=True,
        )

    def _result_acked(self, faces: int) -> None:
        self._stats.results += 1
        self._observer.result(faces)

    # -- dead letters ----------------------------------------------------------------------------

    def failed(self, task: Task, c: Completion) -> None:
        """The dead letter of an event whose call failed for good."""
        err = c.error
        assert err is not None
        now_ms = int(time.time() * 1000)
        error = records.ErrorInfo.from_api_error(
            err,
            attempts=c.attempts,
            first_failure_ms=c.first_failure_ms or now_ms,
            last_failure_ms=c.last_failure_ms or now_ms,
        )
        self.dead_letter(
            task.tp, task.epoch, task.source, task.raw, task.event.event_id, error, task.replay_count, trace=task.trace
        )

    def dead_letter(
        self,
        partition: Partition,
        epoch: int,
        source: records.Source,
        raw: bytes | None,
        event_id: str | None,
        error: records.ErrorInfo,
        replay_count: int,
        *,
        trace: EventTrace = NO_TRACE,
        recount: bool = False,
    ) -> None:
        """``recount``: the guard already counted the event as a result (its result was refused for its size)."""
        code = error.code
        log.info("dead letter %s: %s", code, error.message, extra=_where(source, event_id, code, error.attempts))

        def build(keep_original: bool) -> _Output:
            # Without the original, the record keeps the error and the input coordinates: a replay cannot use
            # it, but the input offset still says where the event was.
            src = (
                source
                if keep_original
                else records.Source(source.topic, source.partition, source.offset, source.timestamp_ms)
            )
            value = records.build_dead_letter(
                raw,
                event_id=event_id,
                error=error,
                source=src,
                worker_version=self._id.version,
                replay_count=replay_count,
                consumer_group=self._id.group_id,
                worker_instance=self._id.instance,
                api=self._id.api,
                **({} if keep_original else {"max_original_bytes": 0}),
            )
            traced = trace.producing(self._dlq_topic, event_id=event_id, code=code)
            return _Output(
                self._dlq_topic,
                records.dead_letter_key(code),
                value,
                _with_trace_context(records.dead_letter_headers(src, error, self._id.version, replay_count), traced),
                partition,
                epoch,
                source.offset,
                lambda: self._dead_letter_acked(code),
                on_too_large=(lambda: self._without_original(build(False))) if keep_original else None,
                trace=trace,
            )

        # Judged now, not at the acknowledgement (module doc); once per event.
        tripped = self._guard.recount_as_dead_letter() if recount else self._guard.record(True)
        if tripped:
            self._guard_tripped(code)
        self._produce(build(True))

    def _without_original(self, output: _Output) -> None:
        log.warning("dead letter too large; sent without the original", extra={"offset": output.offset})
        self._produce(output)

    def _dead_letter_acked(self, code: str) -> None:
        self._stats.dead_letters[code] = self._stats.dead_letters.get(code, 0) + 1
        self._observer.dead_letter(code)

    # -- produce ---------------------------------------------------------------------------------

    def _produce(self, out: _Output) -> None:
        """Produce ``out``; its offset is done (and ``on_acked`` runs) once the broker acknowledged it."""

        def refused(error: KafkaError) -> None:
            out.trace.delivered(None, None, error.str())
            if out.on_too_large is not None and error.code() in _TOO_LARGE:
                out.on_too_large()
                return
            out.trace.ended("produce_failed", code=error.name())
            where = {"topic": out.partition[0], "partition": out.partition[1], "offset": out.offset}
            self._fail(f"could not deliver to {out.topic}: {error.str()}", ExitCode.KAFKA, **where)

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                refused(err)
                return
            out.trace.delivered(msg.partition(), msg.offset())
            if self._tracker.done(out.partition, out.offset, out.epoch):
                out.on_acked()

        while True:
            try:
                self._producer.produce(
                    out.topic, value=out.value, key=out.key, headers=out.headers, on_delivery=delivered
                )
                return
            except BufferError:  # local queue full: serve delivery reports, then try again
                self._producer.poll(0.05)
            except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
                refused(exc.args[0])
                return


def _with_trace_context(headers: list[Any], traced: Sequence[Header]) -> list[Any]:
    """``headers`` with the trace context of the event's trace (``traced``) instead of the input's: the
    consumer of the output continues the worker's trace. Unchanged when tracing is off (``traced`` empty)."""
    if not traced:
        return headers
    names = {name for name, _ in traced}
    return [(n, v) for n, v in headers if n.lower() not in names] + list(traced)


def _where(
    source: records.Source, event_id: str | None, code: str | None = None, attempts: int | None = None
) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "event_id": event_id,
        "topic": source.topic,
        "partition": source.partition,
        "offset": source.offset,
    }
    if code is not None:
        extra |= {"code": code, "attempts": attempts}
    return extra
