"""Helpers for tests that talk to a real broker: produce, consume and wait, always with deadlines."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

T = TypeVar("T")

# Tansu finishes a group join after about session.timeout.ms / 2 (docs/api-notes.md#broker-notes), so tests use a
# short session; heartbeats must be well below it.
GROUP_TIMEOUTS = {
    "session.timeout.ms": 2000,
    "heartbeat.interval.ms": 300,
}


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def produce_all(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes | None, bytes | None]] | list[bytes],
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
) -> None:
    """Produce and wait until every record is acknowledged (raises on any delivery error)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    errors: list[Any] = []

    def _cb(err: Any, msg: Message) -> None:
        if err is not None:
            errors.append(err)

    for rec in records:
        key, value = rec if isinstance(rec, tuple) else (None, rec)
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": _cb}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} records not delivered"
    assert not errors, errors


def consume_n(bootstrap: str, topic: str, n: int, timeout: float = 30.0, group: str | None = None) -> list[Message]:
    """Read ``n`` records of ``topic`` from the beginning (own throw-away group); fail after ``timeout``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **GROUP_TIMEOUTS,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                continue
            out.append(msg)
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
    assert len(out) >= n, f"only {len(out)} of {n} records arrived on {topic} within {timeout:.0f}s"
    return out


def read_all(bootstrap: str, topic: str, idle: float = 1.5, timeout: float = 60.0) -> list[Message]:
    """Every record currently in ``topic``: reads by assignment (no group join) until idle for ``idle`` s."""
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    parts = list(meta.topics[topic].partitions)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-all-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[Message] = []
    last = time.monotonic()
    deadline = last + timeout
    try:
        while time.monotonic() - last < idle and time.monotonic() < deadline:
            msgs = consumer.consume(500, 0.2)
            for msg in msgs:
                if msg.error() is None:
                    out.append(msg)
            if msgs:
                last = time.monotonic()
    finally:
        consumer.close()
    return out


class TopicReader:
    """Reads a topic from the beginning by assignment (no group join) and keeps what it has seen.

    ``poll()`` returns promptly even while the topic keeps growing, so it suits progress checks in
    ``wait_until`` (``read_all`` waits for the topic to go quiet).
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
        self._consumer.assign([TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions])
        self.messages: list[Message] = []

    def poll(self, seconds: float = 0.2) -> list[Message]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            batch = self._consumer.consume(1000, 0.05)
            self.messages.extend(m for m in batch if m.error() is None)
        return self.messages

    def count(self) -> int:
        return len(self.poll())

    def close(self) -> None:
        self._consumer.close()


def read_everything(bootstrap: str, topic: str, timeout: float = 15.0) -> list[Message]:
    """Every record of ``topic``, read by assignment up to the end of each partition (EOF events)."""
    parts = list(AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic].partitions)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 20,  # an empty partition's EOF needs one fetch round
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[Message] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < len(parts):
            assert time.monotonic() < deadline, f"{topic}: no end of partitions {set(parts) - at_end}"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                continue
            out.append(msg)
    finally:
        consumer.close()
    return out
