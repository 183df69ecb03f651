"""Commits: what the offset tracker says is done goes to the group coordinator, and counts only once confirmed.

- Asynchronously every ``interval_s``, and sooner when a quarter of the uncommitted window is used (rule 2 of the
  commit contract: the window is bounded, so commits must keep up). A position sent and not confirmed is
  sent again only after ``_RESEND_S``.
- ``on_commit`` (librdkafka's callback, served by consume/poll) confirms partition by partition; a refused
  partition (an overall error, or one on the partition itself) is offered again at the next interval.
- ``sync`` (revoke, shutdown) waits for the answer and retries what a rebalance refused, a few times.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from worker.core.clock import Clock
from worker.core.offsets import OffsetTracker
from worker.runtime.kafka import ConsumerLike, Partition
from worker.runtime.observer import Observer
from worker.runtime.outputs import PipelineStats

log = logging.getLogger("worker.commits")

# Commit errors worth another try within the same revoke/shutdown (a rebalance or a coordinator move).
_RETRIABLE = frozenset(
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
_SYNC_TRIES = 3
_RESEND_S = 1.0  # an async commit not confirmed after this long is sent again


class Committer:
    def __init__(
        self,
        consumer: ConsumerLike,
        tracker: OffsetTracker,
        observer: Observer,
        stats: PipelineStats,
        clock: Clock,
        *,
        interval_s: float,
        max_uncommitted: int,
    ) -> None:
        self._consumer = consumer
        self._tracker = tracker
        self._observer = observer
        self._stats = stats
        self._clock = clock
        self._interval_s = interval_s
        self._max_uncommitted = max_uncommitted
        self._last = 0.0
        self._sent: dict[Partition, tuple[int, float]] = {}  # async commits awaiting confirmation

    def unconfirmed_partitions(self) -> int:
        return len(self._sent)

    def maybe(self, now: float) -> None:
        """Commit asynchronously when the interval passed or half the uncommitted window is used."""
        if now - self._last >= self._interval_s or self._tracker.unconfirmed() >= self._max_uncommitted // 4:
            self._send(now)
            self._last = now

    def _send(self, now: float) -> None:
        fresh = {}
        for tp, position in self._tracker.commit_positions().items():
            sent = self._sent.get(tp)
            if sent is None or sent[0] != position or now - sent[1] >= _RESEND_S:
                fresh[tp] = position
        if not fresh:
            return
        try:
            offsets = [TopicPartition(t, p, pos) for (t, p), pos in fresh.items()]
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:  # e.g. no coordinator right now: the next interval offers them again
            log.warning("commit failed: %s", exc)
            return
        for tp, position in fresh.items():
            self._sent[tp] = (position, now)
        self._stats.commits += 1

    def on_commit(self, err: KafkaError | None, partitions: list[Any]) -> None:
        """Result of a commit: only what the broker confirmed, partition by partition, counts as committed."""
        confirmed: dict[Partition, int] = {}
        refused: list[str] = []
        for p in partitions:
            tp = (p.topic, p.partition)
            error = err or p.error
            if error is not None:
                refused.append(f"{p.topic}[{p.partition}]@{p.offset}: {error}")
                self._sent.pop(tp, None)  # offered again at the next interval
            elif p.offset >= 0:
                confirmed[tp] = p.offset
        if refused:
            log.warning("commit refused, will retry: %s", "; ".join(refused))
        if confirmed:
            self._confirm(confirmed)

    def sync(self, only: set[Partition] | None = None) -> None:
        """Commit now and wait for the answer (revoke, shutdown); retry what a rebalance refused, a few times."""
        positions = self._tracker.commit_positions(only)
        for attempt in range(_SYNC_TRIES):
            if not positions:
                return
            last = attempt == _SYNC_TRIES - 1
            offsets = [TopicPartition(t, p, pos) for (t, p), pos in positions.items()]
            try:
                result = self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                error = exc.args[0]
                if last or not isinstance(error, KafkaError) or error.code() not in _RETRIABLE:
                    log.warning("commit failed: %s (the next owner processes these events again)", exc)
                    return
                log.info("commit refused (%s), retrying", error.str())
                self._clock.sleep(0.1)
                continue
            self._stats.commits += 1
            if result is None:
                confirmed = dict(positions)
            else:
                confirmed = {(p.topic, p.partition): p.offset for p in result if p.error is None and p.offset >= 0}
            self._confirm(confirmed)
            positions = {tp: pos for tp, pos in positions.items() if tp not in confirmed}
            if positions and not last:
                self._clock.sleep(0.1)
        if positions:
            log.warning("commit not confirmed for %s (the next owner processes these events again)", sorted(positions))

    def forget(self, tps: set[Partition]) -> None:
        for tp in tps:
            self._sent.pop(tp, None)

    def _confirm(self, positions: dict[Partition, int]) -> None:
        positions = {tp: pos for tp, pos in positions.items() if self._tracker.epoch(tp) is not None}
        if not positions:
            return
        self._tracker.mark_committed(positions)
        for tp, position in positions.items():
            sent = self._sent.get(tp)
            if sent is not None and sent[0] <= position:
                del self._sent[tp]
        self._observer.committed(positions)
