"""Which offsets may be committed, given outputs that are acknowledged out of order (no I/O).

Contract (docs/design.md): for a partition, position N+1 is committable only when every offset ≤ N that was
consumed (``track``) has its output acknowledged (``done``). Gaps between consumed offsets (compaction,
transaction markers) are fine: only tracked offsets are waited for.

Rebalances: ``revoke`` forgets partitions; a later ``done`` for them is ignored (returns False), so a late
result of a revoked partition is never counted for the new assignment. Each (re)assignment of a partition
gets a fresh *epoch* returned by ``track``; passing it back to ``done`` also rejects a stale completion when
the partition was revoked and assigned again in between (the offsets may then repeat).

Cost: O(1) amortised per offset (each tracked offset enters and leaves a deque once).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

TopicPartition = tuple[str, int]

_epochs = itertools.count(1)


class _Partition:
    __slots__ = (
        "committed",
        "epoch",
        "first_tracked",
        "highest_done",
        "last_tracked",
        "order",
        "outstanding",
        "position",
        "tracked_at",
    )

    def __init__(self) -> None:
        self.epoch = next(_epochs)
        self.order: deque[int] = deque()  # tracked offsets not yet passed by ``position``, ascending
        self.tracked_at: deque[float] = deque()  # clock reading at ``track``, parallel to ``order``
        self.first_tracked: int | None = None
        self.highest_done: int | None = None
        self.outstanding: set[int] = set()  # tracked offsets whose output is not acknowledged yet
        self.last_tracked: int | None = None
        self.position: int | None = None  # next offset to commit (highest contiguous done + 1)
        self.committed: int | None = None  # last position handed to mark_committed


class OffsetTracker:
    """Per (topic, partition): consumed offsets in, commit positions out. Not thread-safe: one owner (the loop).

    ``clock`` (seconds, monotonic) only stamps tracked offsets for :meth:`oldest_age`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}
        self._clock = clock

    def track(self, tp: TopicPartition, offset: int) -> int:
        """Record a consumed offset (strictly increasing per partition); return the partition's epoch."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        if part.last_tracked is not None and offset <= part.last_tracked:
            raise ValueError(f"{tp}: offset {offset} tracked after {part.last_tracked}; offsets must increase")
        if part.first_tracked is None:
            part.first_tracked = offset
        part.last_tracked = offset
        part.order.append(offset)
        part.tracked_at.append(self._clock())
        part.outstanding.add(offset)
        return part.epoch

    def would_go_back(self, tp: TopicPartition, offset: int) -> bool:
        """True when ``offset`` is not above the last one tracked for ``tp``: the consumer went back (a seek,
        an offset reset after log truncation). The caller must ``revoke`` the partition before tracking it."""
        part = self._parts.get(tp)
        return part is not None and part.last_tracked is not None and offset <= part.last_tracked

    def done(self, tp: TopicPartition, offset: int, epoch: int | None = None) -> bool:
        """Record that ``offset``'s output is acknowledged. False (ignored) when the partition was revoked,
        ``epoch`` is stale, or the offset is not outstanding (never tracked, or already done)."""
        part = self._parts.get(tp)
        if part is None or (epoch is not None and epoch != part.epoch) or offset not in part.outstanding:
            return False
        part.outstanding.remove(offset)
        if part.highest_done is None or offset > part.highest_done:
            part.highest_done = offset
        order = part.order
        while order and order[0] not in part.outstanding:
            part.position = order.popleft() + 1
            part.tracked_at.popleft()
        return True

    def commit_positions(self, tps: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Positions to commit now: per partition (of ``tps``, default all), the highest contiguous done
        offset + 1, only where it moved past the last ``mark_committed``."""
        selected = self._parts.keys() if tps is None else [tp for tp in tps if tp in self._parts]
        positions = {}
        for tp in selected:
            part = self._parts[tp]
            if part.position is not None and (part.committed is None or part.position > part.committed):
                positions[tp] = part.position
        return positions

    def mark_committed(self, positions: Mapping[TopicPartition, int]) -> None:
        """Record positions the broker confirmed (ignores revoked partitions and positions that go backwards)."""
        for tp, position in positions.items():
            part = self._parts.get(tp)
            if part is not None and (part.committed is None or position > part.committed):
                part.committed = position

    def uncommit(self, tps: Iterable[TopicPartition]) -> None:
        """Forget the committed mark of ``tps`` (an async commit failed): their positions are offered again."""
        for tp in tps:
            part = self._parts.get(tp)
            if part is not None:
                part.committed = None

    def unconfirmed(self) -> int:
        """Offsets passed by the commit position whose commit is not confirmed yet (all partitions)."""
        total = 0
        for part in self._parts.values():
            if part.position is None:
                continue
            base = part.committed if part.committed is not None else part.first_tracked
            total += max(0, part.position - (base if base is not None else part.position))
        return total

    def revoke(self, tps: Iterable[TopicPartition]) -> None:
        """Forget partitions (revoked or lost); their pending offsets will be redelivered to the next owner."""
        for tp in tps:
            self._parts.pop(tp, None)

    def epoch(self, tp: TopicPartition) -> int | None:
        """The partition's current epoch, or None when it is not tracked."""
        part = self._parts.get(tp)
        return part.epoch if part else None

    def in_flight(self, tp: TopicPartition | None = None) -> int:
        """Tracked offsets whose output is not acknowledged yet (for ``tp``, or all partitions)."""
        if tp is not None:
            part = self._parts.get(tp)
            return len(part.outstanding) if part else 0
        return sum(len(p.outstanding) for p in self._parts.values())

    def buffered(self, tp: TopicPartition | None = None) -> int:
        """Offsets held back from the commit position: outstanding ones plus done ones behind an outstanding one.
        This is what grows when one slow event pins its partition; pause the partition when it is too large."""
        if tp is not None:
            part = self._parts.get(tp)
            return len(part.order) if part else 0
        return sum(len(p.order) for p in self._parts.values())

    def oldest_pending(self, tp: TopicPartition) -> int | None:
        """The lowest offset not acknowledged yet (the one that pins the commit position), or None."""
        part = self._parts.get(tp)
        return part.order[0] if part and part.order else None

    def oldest_age(self, now: float | None = None) -> float:
        """Seconds since the oldest still-unacknowledged offset (any partition) was tracked; 0 when none."""
        stamps = [p.tracked_at[0] for p in self._parts.values() if p.tracked_at]
        return max(0.0, (self._clock() if now is None else now) - min(stamps)) if stamps else 0.0

    def commit_gaps(self) -> dict[TopicPartition, int]:
        """Per partition: offsets processed (up to the highest acknowledged one) but not covered by the last
        committed position, i.e. roughly what a crash now would process again."""
        gaps = {}
        for tp, part in self._parts.items():
            if part.highest_done is None:
                gaps[tp] = 0
                continue
            base = part.committed if part.committed is not None else part.first_tracked
            gaps[tp] = max(0, part.highest_done + 1 - (base if base is not None else 0))
        return gaps

    def partitions(self) -> list[TopicPartition]:
        """Partitions currently tracked."""
        return list(self._parts)
