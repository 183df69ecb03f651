"""Which consumed events may be dispatched now, per ordering mode (docs/design.md#ordering; no I/O).

- ``unordered``: everything is dispatched at once (maximum concurrency; commits stay contiguous anyway).
- ``key``: at most one event in flight per (partition, key); later events with that key wait in FIFO order.
  A record without a key has no ordering constraint.
- ``partition``: at most one event in flight per partition (strictly sequential).

The gate only orders dispatch; whether an event succeeded is the caller's business. ``release`` is
matched by identity with the item in flight, so a late release after ``drop`` (or after the partition was
assigned again) changes nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
TopicPartition = tuple[str, int]
Mode = Literal["unordered", "key", "partition"]
MODES: tuple[Mode, ...] = ("unordered", "key", "partition")

_WHOLE_PARTITION = object()  # the lane key in partition mode


class _Lane(Generic[T]):
    __slots__ = ("in_flight", "waiting")

    def __init__(self, item: T) -> None:
        self.in_flight = item
        self.waiting: deque[T] = deque()


class OrderingGate(Generic[T]):
    """Decides dispatch order. Not thread-safe: one owner (the loop)."""

    def __init__(self, mode: Mode = "unordered") -> None:
        if mode not in MODES:
            raise ValueError(f"ordering mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode: Mode = mode
        self._lanes: dict[TopicPartition, dict[Hashable, _Lane[T]]] = {}
        self._queued = 0

    def _lane_key(self, key: bytes | None) -> Hashable | None:
        if self.mode == "partition":
            return _WHOLE_PARTITION
        if self.mode == "key":
            return key  # None: unconstrained
        return None

    def offer(self, item: T, tp: TopicPartition, key: bytes | None) -> bool:
        """True: dispatch ``item`` now. False: it is queued behind a predecessor and will come out of ``release``."""
        lane_key = self._lane_key(key)
        if lane_key is None:
            return True
        lanes = self._lanes.setdefault(tp, {})
        lane = lanes.get(lane_key)
        if lane is None:
            lanes[lane_key] = _Lane(item)
            return True
        lane.waiting.append(item)
        self._queued += 1
        return False

    def release(self, item: T, tp: TopicPartition, key: bytes | None) -> list[T]:
        """``item`` (previously dispatched) is finished; return the items that may be dispatched now (0 or 1)."""
        lane_key = self._lane_key(key)
        if lane_key is None:
            return []
        lanes = self._lanes.get(tp)
        lane = lanes.get(lane_key) if lanes else None
        if lanes is None or lane is None or lane.in_flight is not item:
            return []
        if lane.waiting:
            lane.in_flight = lane.waiting.popleft()
            self._queued -= 1
            return [lane.in_flight]
        del lanes[lane_key]
        if not lanes:
            del self._lanes[tp]
        return []

    def drop(self, tps: Iterable[TopicPartition]) -> list[T]:
        """Forget partitions (revoked); return their queued, never dispatched items (not the in-flight ones)."""
        dropped: list[T] = []
        for tp in tps:
            for lane in self._lanes.pop(tp, {}).values():
                dropped.extend(lane.waiting)
        self._queued -= len(dropped)
        return dropped

    def queued(self) -> int:
        """Items waiting behind a predecessor."""
        return self._queued
