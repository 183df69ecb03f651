"""Helpers for tests that talk to a real broker: produce, consume as a group member, and wait, with deadlines.

Reading topics back by assignment (what is there now, until quiet, to the end) is the shared harness's
job: ``worker.dev.harness.reader`` and, for the worker's outputs, ``worker.dev.harness.outputs``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, Message, Producer

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
