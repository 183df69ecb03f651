"""What the pipeline tells the outside world: one observer interface, many sinks.

Metrics, health and logs hang off these hooks instead of being sprinkled through the pipeline
(the dramatiq middleware idea). Hooks are called from the poll-loop thread, except ``api_call`` and
``retried`` which HTTP threads call; implementations must be cheap and thread-safe.

Tracing needs to know which event a hook is about, so it has its own pair: a :class:`Tracer` gives every
consumed record an :class:`EventTrace` that travels with the event (``Task.trace``) and hears its attempts and
its output. Both bases are no-ops and the default: with tracing off a record costs one call returning
:data:`NO_TRACE` and a few empty method calls. The OpenTelemetry implementation is ``worker.ops.otel``; the
runtime never imports it.

Every trace ends exactly once. The event's own path ends it (``delivered``, ``ended``); an event the worker gives
up without an output ends when the pipeline says so per partition (:meth:`Tracer.abandon`: revoked, lost, offsets
reset, stopped), and whatever is still open when the pipeline closes ends then (:meth:`Tracer.stopped`). The
late completion of an abandoned event never reaches its trace again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.core.records import Source

# One output header, as the producer takes it.
Header = tuple[str, bytes]
# (topic, partition), as worker.runtime.kafka names it (not imported: this module stays dependency-free).
TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class Snapshot:
    """The pipeline's state, published about once a second and at every state change."""

    assigned: tuple[tuple[str, int], ...] = ()
    paused: bool = False
    in_flight: int = 0
    queued: int = 0
    oldest_in_flight_age_s: float = 0.0
    # Per partition: consumed-and-done positions not yet committed (processed − committed).
    commit_gap: Mapping[tuple[str, int], int] = field(default_factory=dict)
    breaker_state: str = "closed"
    rate_limit_qps: float = 0.0
    broker_reachable: bool = True
    stopping: bool = False
    fatal: str | None = None
    guard_tripped: bool = False  # the dead-letter guard holds the worker (worker.core.guard)
    # Entries held by each long-lived structure, by name (bounded whatever the traffic).
    structures: Mapping[str, int] = field(default_factory=dict)


class Observer:
    """No-op base; subclasses override what they need."""

    def loop_turned(self, now: float) -> None:
        """The poll loop completed one turn (liveness heartbeat)."""

    def consumed(self, topic: str, count: int) -> None:
        """``count`` records were read from ``topic``."""

    def api_call(self, outcome: str, latency_s: float) -> None:
        """One HTTP attempt ended; ``outcome`` is ``ok`` or the error code. Called from HTTP threads."""

    def retried(self, code: str) -> None:
        """An attempt failed with ``code`` and will be retried. Called from HTTP threads."""

    def result(self, faces: int) -> None:
        """A result record was acknowledged by the broker."""

    def dead_letter(self, code: str) -> None:
        """A dead-letter record with key ``code`` was acknowledged by the broker."""

    def committed(self, positions: Mapping[tuple[str, int], int]) -> None:
        """Offsets were committed (synchronously or by a successful async commit)."""

    def rebalance(self, kind: str, partitions: Sequence[tuple[str, int]]) -> None:
        """``kind`` is assigned, revoked or lost."""

    def kafka_stats(self, stats: Mapping[str, object]) -> None:
        """librdkafka statistics (parsed JSON), the source of consumer lag."""

    def snapshot(self, snap: Snapshot) -> None:
        """Periodic state: in-flight, pause, breaker, gaps, readiness inputs."""

    def stopped(self, exit_code: int, reason: str) -> None:
        """The pipeline ended."""


class Observers(Observer):
    """Fans every hook out to several observers."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self._all = tuple(observers)

    def loop_turned(self, now: float) -> None:
        for o in self._all:
            o.loop_turned(now)

    def consumed(self, topic: str, count: int) -> None:
        for o in self._all:
            o.consumed(topic, count)

    def api_call(self, outcome: str, latency_s: float) -> None:
        for o in self._all:
            o.api_call(outcome, latency_s)

    def retried(self, code: str) -> None:
        for o in self._all:
            o.retried(code)

    def result(self, faces: int) -> None:
        for o in self._all:
            o.result(faces)

    def dead_letter(self, code: str) -> None:
        for o in self._all:
            o.dead_letter(code)

    def committed(self, positions: Mapping[tuple[str, int], int]) -> None:
        for o in self._all:
            o.committed(positions)

    def rebalance(self, kind: str, partitions: Sequence[tuple[str, int]]) -> None:
        for o in self._all:
            o.rebalance(kind, partitions)

    def kafka_stats(self, stats: Mapping[str, object]) -> None:
        for o in self._all:
            o.kafka_stats(stats)

    def snapshot(self, snap: Snapshot) -> None:
        for o in self._all:
            o.snapshot(snap)

    def stopped(self, exit_code: int, reason: str) -> None:
        for o in self._all:
            o.stopped(exit_code, reason)


class EventTrace:
    """One event's trace, from its consumption to its output's acknowledgement (no-op base).

    ``attempt`` is called from the HTTP thread that runs the event, the others from the poll-loop thread; one
    event is never in two threads at once. It ends once: by ``delivered`` (acknowledged), by ``ended``, or by its
    tracer (:meth:`Tracer.abandon`, :meth:`Tracer.stopped`); a later call changes nothing. An ``attempt`` that
    ends after that (a call that outlived its partition's revoke) is still recorded, under the ended event.
    """

    __slots__ = ()

    def parsed(self, event_id: str) -> None:
        """The record was parsed into the event ``event_id`` (not called for an invalid record)."""

    def attempt(self, outcome: str, latency_s: float) -> None:
        """One API call of this event ended; ``outcome`` is ``ok`` or the error code. From the HTTP thread."""

    def producing(
        self, topic: str, *, event_id: str | None, code: str | None = None, faces: int | None = None
    ) -> Sequence[Header]:
        """The event's output is produced to ``topic`` (a dead letter when ``code`` is set); returns the trace
        context headers the output record carries instead of the input's (empty: keep the input's)."""
        return ()

    def delivered(self, partition: int | None, offset: int | None, error: str | None = None) -> None:
        """The broker acknowledged the output (``error`` None) or refused it; the trace ends on acknowledgement."""

    def ended(self, outcome: str, *, event_id: str | None = None, code: str | None = None) -> None:
        """The event ends without an output: ``cancelled`` (its call gave up: revoked, stopping), ``stop``
        (configuration error, ``code``) or ``produce_failed`` (the broker refused its output, ``code``)."""


NO_TRACE = EventTrace()


class Tracer:
    """Starts one :class:`EventTrace` per consumed record (no-op base: tracing off)."""

    def event(self, source: Source) -> EventTrace:
        """A record was consumed (called before it is parsed: invalid events are traced too)."""
        return NO_TRACE

    def abandon(self, outcome: str, partitions: Collection[TopicPartition] | None = None) -> None:
        """The worker gives up the events of ``partitions`` (None: of every partition) that have no output
        produced yet: queued, waiting, or with a call in progress whose completion will be discarded. Their traces
        end now with ``outcome``: ``revoked``, ``lost``, ``reset`` (the partition's offsets went back), or
        ``stopped`` (the drain is over). An event whose output is produced still ends at its delivery report.
        From the poll-loop thread."""

    def stopped(self) -> None:
        """The pipeline closed: every trace still open (an output never acknowledged) ends now as ``stopped``."""

    def close(self) -> None:
        """Export what is buffered and release the exporter (called once, at shutdown)."""
