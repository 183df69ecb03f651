"""Reading topics back from the beginning, by assignment (no group join, nothing committed).

A :class:`TopicReader` assigns every partition of its topics at offset 0 and keeps what it has read.
Three ways to read, each bounded in time:

- :meth:`TopicReader.poll` reads for a short budget and returns what is new: cheap progress checks while
  the topics still grow (it never re-reads);
- :meth:`TopicReader.drain` reads until nothing new arrived for ``idle_s``;
- :meth:`TopicReader.read_to_end` reads until every partition reported its end (librdkafka's partition
  EOF): everything written before the call, exactly, without waiting for quiet.

Records with an error are skipped. ``on_message`` turns each record into what the reader keeps (the
raw message by default); it runs on the thread that reads. One thread reads at a time: either the
caller, or the background thread of :meth:`TopicReader.in_background`, whose readers then only look
at ``items`` (under the lock :meth:`TopicReader.snapshot` takes).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Self, TypeVar

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from worker.dev.harness.topics import partitions_of

T = TypeVar("T")

# Tansu holds every fetch of an empty partition this long: short, so that reads stay responsive.
FETCH_WAIT_MS = 100


class TopicReader(Generic[T]):
    """Reads ``topics`` from offset 0 and keeps ``on_message(record)`` for every record, in arrival order."""

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        on_message: Callable[[Message], T],
        *,
        fetch_wait_ms: int = FETCH_WAIT_MS,
        max_record_bytes: int = 100 * 1024 * 1024,
    ) -> None:
        self.items: list[T] = []
        self._convert = on_message
        self._parts = {(t, p) for t in topics for p in partitions_of(bootstrap, t)}
        self._at_end: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",  # never joined: assignment only
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": fetch_wait_ms,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "receive.message.max.bytes": max_record_bytes,
            }
        )
        self._consumer.assign([TopicPartition(t, p, 0) for t, p in sorted(self._parts)])
        self._background: threading.Thread | None = None
        self._stop = threading.Event()

    # -- reading ---------------------------------------------------------------------------------------------

    def poll(self, budget_s: float = 0.2) -> int:
        """Read for ``budget_s`` seconds; how many records were new."""
        deadline = time.monotonic() + budget_s
        added = 0
        while (left := deadline - time.monotonic()) > 0:
            added += self._consume(min(0.1, left))
        return added

    def drain(self, idle_s: float = 0.6, timeout: float = 60.0) -> None:
        """Read until nothing new arrived for ``idle_s`` (longer than the broker's fetch wait) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.poll(idle_s):
            pass

    def read_to_end(self, timeout: float = 15.0) -> None:
        """Read until every partition has reported its end; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._at_end != self._parts:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end of partitions {sorted(self._parts - self._at_end)} within {timeout:.0f}s")
            self._consume(0.1)

    def _consume(self, timeout: float) -> int:
        batch = self._consumer.consume(2000, timeout)
        added: list[T] = []
        for msg in batch:
            where = (msg.topic() or "", msg.partition() or 0)
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(where)
                continue
            self._at_end.discard(where)
            added.append(self._convert(msg))
        if added:
            with self._lock:
                self.items.extend(added)
        return len(added)

    # -- reading in a thread ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def in_background(self, max_seconds: float = 1800.0) -> Iterator[Self]:
        """Read in a thread for the block (at most ``max_seconds``); look at :meth:`snapshot` meanwhile."""
        self._stop.clear()
        deadline = time.monotonic() + max_seconds

        def run() -> None:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._consume(0.1)

        self._background = threading.Thread(target=run, name="topic-reader", daemon=True)
        self._background.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._background.join(10)
            self._background = None

    @property
    def reading_in_background(self) -> bool:
        return self._background is not None

    def snapshot(self) -> list[T]:
        with self._lock:
            return list(self.items)

    def since(self, index: int) -> tuple[list[T], int]:
        """The items from ``index`` on, and the index to ask from next time."""
        with self._lock:
            return self.items[index:], len(self.items)

    def count(self) -> int:
        with self._lock:
            return len(self.items)

    # -- the end ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        if self._background is not None:
            self._background.join(10)
        with contextlib.suppress(Exception):  # closing twice, or after the broker has gone
            self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _keep(msg: Message) -> Message:
    return msg


def messages(bootstrap: str, topics: Sequence[str]) -> TopicReader[Message]:
    """A reader that keeps the raw messages."""
    return TopicReader(bootstrap, topics, _keep)


def read_topic(bootstrap: str, topic: str, timeout: float = 15.0) -> list[Message]:
    """Every record of ``topic`` now, read up to the end of each partition."""
    with messages(bootstrap, [topic]) as reader:
        reader.read_to_end(timeout)
        return reader.items
