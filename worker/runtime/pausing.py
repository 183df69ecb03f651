"""Which assigned partitions fetch: all of them, none while the worker takes nothing, or all but the ones
crowding out a starving partition.

Pausing drops what librdkafka prefetched for a partition (it refetches on resume), so it is not done for
every full moment: the loop pauses everything only when it took nothing for ``PAUSE_AFTER_S`` or must not
take anything (breaker testing the API, guard holding).

Fairness: librdkafka hands over what one fetch brought, partition after partition, so one partition with a
deep backlog can fill every consume() for many seconds. When an assigned partition with a backlog (from
librdkafka's statistics: high watermark above what we consumed) delivered nothing for ``STARVE_S`` while
others did, the others are paused for one look: their prefetch is dropped, so whatever was fetched for the
starving one comes next. The look ends as soon as a starving partition delivers, or after ``LOOK_S``. A
merely empty partition never makes the others pay a refetch.

librdkafka keeps a partition's pause across a revoke, so every (re)assigned partition is explicitly paused
or resumed to match (``assigned``).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import TopicPartition

from worker.runtime.kafka import ConsumerLike, Partition

log = logging.getLogger("worker.pausing")

PAUSE_AFTER_S = 1.0  # a loop that took nothing for this long pauses every partition
STARVE_S = 5.0  # a partition with a backlog that delivered nothing for this long gets a look (once per stats interval)
LOOK_S = 0.05  # how long the others stay paused for one look


class PauseControl:
    def __init__(self, consumer: ConsumerLike) -> None:
        self._consumer = consumer
        self.paused: set[Partition] = set()  # what we asked the consumer to pause
        self._last_fed: dict[Partition, float] = {}  # when each assigned partition last delivered a record
        self._backlog: dict[Partition, int] = {}  # records not yet handed to us, per partition
        self._look: tuple[float, set[Partition]] | None = None  # (since, starving partitions) while looking

    # -- facts -----------------------------------------------------------------------------------

    def fed(self, tp: Partition, now: float) -> None:
        """A record of ``tp`` was consumed."""
        self._last_fed[tp] = now
        if self._look is not None and tp in self._look[1]:
            self._end_look(now)  # a starving partition delivers: resume the others

    def backlog(self, stats: dict[str, Any]) -> None:
        """librdkafka statistics arrived."""
        self._backlog = unconsumed(stats)

    def assigned(self, consumer: ConsumerLike, tps: list[Partition], now: float, *, hold: bool) -> None:
        """Set the state of newly assigned partitions deliberately: paused when the loop holds, else resumed."""
        fresh = [TopicPartition(t, p) for t, p in tps]
        for tp in tps:
            self._last_fed[tp] = now
        try:
            if hold:
                consumer.pause(fresh)
                self.paused.update(tps)
            else:
                consumer.resume(fresh)
                self.paused.difference_update(tps)
        except Exception as exc:  # pragma: no cover - the next reconcile tries again
            log.warning("pause/resume of assigned partitions failed: %s", exc)

    def forget(self, tps: set[Partition]) -> None:
        self.paused -= tps
        for tp in tps:
            self._last_fed.pop(tp, None)

    # -- decisions -------------------------------------------------------------------------------

    def reconcile(self, assigned: set[Partition], now: float, *, hold_all: bool) -> None:
        """Pause every assigned partition (``hold_all``), else only those crowding out a starving one."""
        if not assigned:
            return
        self._apply(set(assigned) if hold_all else self._crowding(assigned, now), assigned)

    def _crowding(self, assigned: set[Partition], now: float) -> set[Partition]:
        if len(assigned) < 2:
            self._look = None
            return set()
        if self._look is not None:
            started, starving = self._look
            if now - started < LOOK_S and starving & assigned:
                return assigned - starving
            self._end_look(now)
            return set()
        starving = {
            tp for tp in assigned if now - self._last_fed.get(tp, now) >= STARVE_S and self._backlog.get(tp, 0) > 0
        }
        if not starving or starving == assigned:
            return set()
        self._look = (now, starving)
        return assigned - starving

    def _end_look(self, now: float) -> None:
        if self._look is not None:
            for tp in self._look[1]:
                if tp in self._last_fed:
                    self._last_fed[tp] = now  # looked at: the next look in STARVE_S at the earliest
        self._look = None

    def _apply(self, wanted: set[Partition], assigned: set[Partition]) -> None:
        to_pause = wanted - self.paused
        to_resume = (self.paused - wanted) & assigned
        try:
            if to_pause:
                self._consumer.pause([TopicPartition(t, p) for t, p in sorted(to_pause)])
                self.paused |= to_pause
            if to_resume:
                self._consumer.resume([TopicPartition(t, p) for t, p in sorted(to_resume)])
                self.paused -= to_resume
        except Exception as exc:  # mid-rebalance; the next turn tries again
            log.debug("pause/resume failed: %s", exc)


def unconsumed(stats: dict[str, Any]) -> dict[Partition, int]:
    """Per partition, records above what the application consumed (``hi_offset`` − ``app_offset``), from
    librdkafka statistics; partitions with no figure yet are left out."""
    out: dict[Partition, int] = {}
    for topic, tstats in (stats.get("topics") or {}).items():
        for key, pstats in (tstats.get("partitions") or {}).items():
            partition = int(pstats.get("partition", key))
            hi, app = pstats.get("hi_offset", -1), pstats.get("app_offset", -1)
            if partition >= 0 and hi >= 0:
                out[(topic, partition)] = hi - max(app, pstats.get("committed_offset", -1), 0)
    return out
