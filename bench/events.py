"""Input events of the benchmarks: ids ``{run}-{i}``, round-robin over partitions and images.

:func:`preload` writes a backlog before the workers start and waits for every acknowledgement;
:class:`SteadyStream` produces at a fixed rate from a thread, so a fault hits workers that keep up with live
traffic (as in production) rather than drain a preloaded backlog. Both are bounded in count and time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import Producer


def event_ids(run: str, n: int) -> list[str]:
    return [f"{run}-{i}" for i in range(n)]


def event_value(event_id: str, urls: Sequence[str], i: int) -> bytes:
    """The ``i``-th input event of a run: ``{"event_id", "image_url", "metadata"}``, images round-robin."""
    return orjson.dumps({"event_id": event_id, "image_url": urls[i % len(urls)], "metadata": {"seq": i}})


def preload(bootstrap: str, topic: str, partitions: int, urls: Sequence[str], run: str, n: int) -> list[str]:
    """Write ``n`` events (ids ``{run}-{i}``), round-robin over partitions and images; wait for every ack."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000, "compression.type": "lz4"}
    )
    failed: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    ids = event_ids(run, n)
    for i, event_id in enumerate(ids):
        value = event_value(event_id, urls, i)
        while True:
            try:
                producer.produce(topic, value=value, partition=i % partitions, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    if left or failed:
        raise RuntimeError(f"preload: {left} not delivered, {len(failed)} failed: {failed[:3]}")
    return ids


class SteadyStream:
    """Produces ``rate`` events/s (ids ``{run}-{i}``) round-robin over partitions and images, from a thread,
    until ``stop()`` or ``max_seconds``; ``times[i]`` is when event i was handed to the producer."""

    def __init__(
        self, bootstrap: str, topic: str, partitions: int, urls: Sequence[str], rate: float, max_seconds: float
    ) -> None:
        self.run = uuid.uuid4().hex[:6]
        self.rate = rate
        self.ids: list[str] = []
        self.times: list[float] = []
        self.placed: dict[str, tuple[int, int]] = {}  # event id → (partition, offset), from delivery reports
        self.failed = 0
        self._args = (topic, partitions, list(urls))
        self._max_seconds = max_seconds
        self._producer: Producer | None = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"}
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="steady-stream", daemon=True)

    def __enter__(self) -> SteadyStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int:
        """Stop producing, wait for every acknowledgement (at most 30 s); returns how many are unacknowledged."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self._producer is None:
            return 0
        left = int(self._producer.flush(30))
        self._producer = None  # destroyed now, not when the broker is already gone (librdkafka would log)
        return left

    def produced(self) -> int:
        with self._lock:
            return len(self.ids)

    def produced_between(self, t0: float, t1: float) -> int:
        with self._lock:
            return sum(1 for t in self.times if t0 <= t < t1)

    def _delivered(self, event_id: str) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                self.failed += 1
                return
            with self._lock:
                self.placed[event_id] = (int(msg.partition()), int(msg.offset()))

        return on_delivery

    def _loop(self) -> None:
        topic, partitions, urls = self._args
        producer = self._producer
        assert producer is not None
        start = time.monotonic()
        limit = int(self.rate * self._max_seconds)
        i = 0
        while not self._stop.is_set() and i < limit:
            elapsed = time.monotonic() - start
            if elapsed >= self._max_seconds:
                break
            due = min(limit, int(self.rate * elapsed) + 1)
            while i < due:
                event_id = f"{self.run}-{i}"
                try:
                    producer.produce(
                        topic,
                        event_value(event_id, urls, i),
                        partition=i % partitions,
                        on_delivery=self._delivered(event_id),
                    )
                except BufferError:
                    producer.poll(0.05)  # the local queue is full (broker stalled): retry this one
                    break
                with self._lock:
                    self.ids.append(event_id)
                    self.times.append(time.time())
                i += 1
            producer.poll(0)
            self._stop.wait(0.01)
