"""What the pipeline tells the outside world: one observer interface, many sinks.

Metrics, health and logs hang off these hooks instead of being sprinkled through the pipeline
(the dramatiq middleware idea). Hooks are called from the poll-loop thread, except ``api_call`` and
``retried`` which HTTP threads call; implementations must be cheap and thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


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
