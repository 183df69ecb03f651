"""An in-memory Kafka for deterministic contract tests: a broker, a consumer and a producer that behave
like confluent-kafka's where the pipeline can tell, and that assign, revoke, lose, acknowledge, refuse,
fail commits and redeliver on command.

Behaviours copied from librdkafka on purpose, because the pipeline must cope with them:
- rebalance callbacks run inside ``consume``/``poll``; when a callback does not assign, the consumer does;
- ``consume`` returns what one fetch brought, partition after partition (``fetch_chunk`` records each),
  which is how one busy partition can starve another;
- pausing a partition drops what was fetched for it; resuming refetches from the consume position;
- a partition paused before it was revoked comes back *paused* when it is assigned again;
- async commit results and delivery reports are served by ``consume``/``poll`` (and ``flush``).

Waiting (a ``timeout`` with nothing to return) lets virtual time pass (tests/support/simclock.py).
This is a test double: the real-broker suites stay the integration tests.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from tests.support.simclock import VirtualClock

TP = tuple[str, int]


class MemMessage:
    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        timestamp_ms: int,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers = key, value, headers
        self._ts = timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def error(self) -> KafkaError | None:
        return None

    def __len__(self) -> int:
        return len(self._value or b"")

    def __repr__(self) -> str:
        return f"MemMessage({self._topic}[{self._partition}]@{self._offset})"


@dataclass
class MemPartition:
    """What the pipeline passes to and gets from rebalance and commit callbacks."""

    topic: str
    partition: int
    offset: int = -1001
    error: KafkaError | None = None


class MemBroker:
    def __init__(self) -> None:
        self.topics: dict[str, list[list[MemMessage]]] = {}
        self.committed: dict[tuple[str, TP], int] = {}  # (group, tp) → position
        self.commit_log: list[tuple[str, TP, int, bool]] = []  # (group, tp, position, synchronous)

    def create_topic(self, name: str, partitions: int) -> None:
        self.topics.setdefault(name, [[] for _ in range(partitions)])

    def append(
        self,
        topic: str,
        partition: int,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> MemMessage:
        log = self.topics[topic][partition]
        msg = MemMessage(topic, partition, len(log), key, value, headers, 1_700_000_000_000 + len(log))
        log.append(msg)
        return msg

    def records(self, topic: str) -> list[MemMessage]:
        return [m for part in self.topics.get(topic, []) for m in part]

    def end_offset(self, tp: TP) -> int:
        return len(self.topics[tp[0]][tp[1]])


@dataclass
class _Rebalance:
    kind: str  # assign | revoke | lost
    tps: list[TP]


@dataclass
class _CommitFailure:
    code: int
    partition_level: bool  # the overall error is None; each partition carries the error
    sync: bool
    remaining: int


@dataclass
class MemConsumer:
    broker: MemBroker
    clock: VirtualClock
    group: str = "workers"
    cooperative: bool = True
    fetch_chunk: int = 100
    assigned: list[TP] = field(default_factory=list)
    paused: set[TP] = field(default_factory=set)
    closed: bool = False

    def __post_init__(self) -> None:
        self._callbacks: dict[str, Callable[..., Any]] = {}
        self._on_commit: Callable[[KafkaError | None, list[MemPartition]], None] | None = None
        self._pending: list[_Rebalance] = []
        self._position: dict[TP, int] = {}  # next offset to hand to the application
        self._fetched: list[MemMessage] = []  # what the last fetch brought, not consumed yet
        self._commit_results: list[tuple[KafkaError | None, list[MemPartition]]] = []
        self._failures: list[_CommitFailure] = []
        self._in_callback = False
        self._assigned_in_callback = False

    # -- test commands ---------------------------------------------------------------------------

    def rebalance(self, *, assign: Iterable[TP] = (), revoke: Iterable[TP] = (), lose: Iterable[TP] = ()) -> None:
        """Queue a rebalance; its callbacks run at the next consume/poll, as librdkafka does."""
        for kind, tps in (("lost", list(lose)), ("revoke", list(revoke)), ("assign", list(assign))):
            if tps:
                self._pending.append(_Rebalance(kind, tps))

    def fail_commits(self, code: int, *, times: int = 1, sync: bool = False, partition_level: bool = False) -> None:
        """The next ``times`` commits (sync or async) fail with ``code``."""
        self._failures.append(_CommitFailure(code, partition_level, sync, times))

    def seek_back(self, tp: TP, offset: int) -> None:
        """Move the consume position back (an offset reset or a seek): offsets are delivered again."""
        self._position[tp] = offset
        self._fetched = [m for m in self._fetched if (m.topic(), m.partition()) != tp]

    # -- confluent-kafka's Consumer, as the pipeline uses it ---------------------------------------

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None) -> None:
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def set_on_commit(self, fn: Callable[[KafkaError | None, list[MemPartition]], None]) -> None:
        self._on_commit = fn

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[MemMessage]:
        self._serve()
        if not self._fetched:
            self._fetch()
        if not self._fetched and timeout > 0:
            self.clock.idle(timeout)
            self._serve()
            self._fetch()
        taken, self._fetched = self._fetched[:num_messages], self._fetched[num_messages:]
        for msg in taken:
            self._position[(msg.topic(), msg.partition())] = msg.offset() + 1
        return taken

    def poll(self, timeout: float = -1) -> MemMessage | None:
        msgs = self.consume(1, timeout)
        return msgs[0] if msgs else None

    def assignment(self) -> list[MemPartition]:
        return [MemPartition(t, p) for t, p in self.assigned]

    def pause(self, partitions: list[Any]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self.paused |= tps
        self._fetched = [m for m in self._fetched if (m.topic(), m.partition()) not in tps]

    def resume(self, partitions: list[Any]) -> None:
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def incremental_assign(self, partitions: list[Any]) -> None:
        self._add([(p.topic, p.partition) for p in partitions])

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = []
        self._add([(p.topic, p.partition) for p in partitions])

    def commit(self, offsets: list[Any] | None = None, asynchronous: bool = True) -> list[MemPartition] | None:
        parts = [MemPartition(o.topic, o.partition, o.offset) for o in offsets or []]
        failure = next((f for f in self._failures if f.sync == (not asynchronous) and f.remaining > 0), None)
        if failure is not None:
            failure.remaining -= 1
            error = KafkaError(failure.code)
            if not failure.partition_level and not asynchronous:
                raise KafkaException(error)
            for p in parts:
                p.error = error if failure.partition_level else None
            if asynchronous:
                self._commit_results.append((None if failure.partition_level else error, parts))
                return None
            return parts
        for p in parts:
            tp = (p.topic, p.partition)
            self.broker.committed[(self.group, tp)] = p.offset
            self.broker.commit_log.append((self.group, tp, p.offset, not asynchronous))
        if asynchronous:
            self._commit_results.append((None, parts))
            return None
        return parts

    def statistics(self) -> dict[str, Any]:
        """What librdkafka's ``stats_cb`` reports, for the parts the pipeline reads (high watermark, position)."""
        topics: dict[str, Any] = {}
        for topic, partition in self.assigned:
            parts = topics.setdefault(topic, {"partitions": {}})["partitions"]
            parts[str(partition)] = {
                "partition": partition,
                "hi_offset": self.broker.end_offset((topic, partition)),
                "app_offset": self._position.get((topic, partition), -1001),
                "committed_offset": self.broker.committed.get((self.group, (topic, partition)), -1001),
            }
        return {"type": "consumer", "topics": topics}

    def close(self) -> None:
        if self.assigned and self._callbacks.get("revoke"):
            self._call("revoke", list(self.assigned))
        self.assigned = []
        self.closed = True

    # -- internals ---------------------------------------------------------------------------------

    def _serve(self) -> None:
        while self._pending:
            event = self._pending.pop(0)
            if event.kind == "assign":
                self._call("assign", event.tps)
            else:
                self._call(event.kind, event.tps)
                gone = set(event.tps)
                self.assigned = [tp for tp in self.assigned if tp not in gone]
                self._fetched = [m for m in self._fetched if (m.topic(), m.partition()) not in gone]
        results, self._commit_results = self._commit_results, []
        for err, parts in results:
            if self._on_commit is not None:
                self._on_commit(err, parts)

    def _call(self, kind: str, tps: list[TP]) -> None:
        self._assigned_in_callback = False
        callback = self._callbacks.get(kind)
        if callback is not None:
            callback(self, [MemPartition(t, p) for t, p in tps])
        if kind == "assign" and not self._assigned_in_callback:
            self._add(tps)

    def _add(self, tps: list[TP]) -> None:
        self._assigned_in_callback = True
        for tp in tps:
            if tp not in self.assigned:
                self.assigned.append(tp)
                self._position[tp] = self.broker.committed.get((self.group, tp), 0)

    def _fetch(self) -> None:
        for tp in self.assigned:
            if tp in self.paused:
                continue
            log = self.broker.topics[tp[0]][tp[1]]
            start = self._position.get(tp, 0)
            self._fetched.extend(log[start : start + self.fetch_chunk])


@dataclass
class _Pending:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Any
    on_delivery: Callable[[KafkaError | None, Any], None] | None


@dataclass
class MemProducer:
    broker: MemBroker
    clock: VirtualClock
    hold_acks: bool = False
    queue_limit: int = 100_000
    too_large_bytes: int | None = None  # the broker refuses records larger than this

    def __post_init__(self) -> None:
        self._pending: list[_Pending] = []
        self._fail_next: list[int] = []
        self.produced: list[tuple[str, bytes | None]] = []

    def fail_next_delivery(self, code: int) -> None:
        self._fail_next.append(code)

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Any = None,
        on_delivery: Callable[[KafkaError | None, Any], None] | None = None,
    ) -> None:
        if len(self._pending) >= self.queue_limit:
            raise BufferError("local queue full")
        self._pending.append(_Pending(topic, key, value, headers, on_delivery))
        self.produced.append((topic, key))

    def poll(self, timeout: float = 0) -> int:
        if self.hold_acks:
            if timeout > 0:
                self.clock.idle(timeout)
            return 0
        return self._deliver()

    def flush(self, timeout: float = -1) -> int:
        if self.hold_acks:
            if timeout > 0:
                self.clock.idle(timeout)
            return len(self._pending)
        self._deliver()
        return 0

    def __len__(self) -> int:
        return len(self._pending)

    def _deliver(self) -> int:
        pending, self._pending = self._pending, []
        for p in pending:
            err: KafkaError | None = None
            if self._fail_next:
                err = KafkaError(self._fail_next.pop(0))
            elif self.too_large_bytes is not None and len(p.value or b"") > self.too_large_bytes:
                err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
            msg = None
            if err is None:
                partitions = len(self.broker.topics[p.topic])
                partition = zlib.crc32(p.key) % partitions if p.key is not None else 0
                msg = self.broker.append(p.topic, partition, p.value, p.key, p.headers)
            if p.on_delivery is not None:
                p.on_delivery(err, msg)
        return len(pending)
