"""Kafka for the worker: what the pipeline needs of a consumer and a producer, and their configuration.

``ConsumerLike`` and ``ProducerLike`` are the parts of confluent-kafka's clients the pipeline uses; the
in-memory Kafka of the contract tests (tests/support/memkafka.py) implements them too. ``Partition`` is the one
name of a (topic, partition) pair inside the worker.

Offsets are stored and committed by the pipeline only (auto commit and auto offset store off):
the commit contract lives in :mod:`worker.runtime.pipeline`. Where a partition without a committed offset
starts (``auto_offset_reset``) and how long the consumer may go unpolled (``max_poll_interval_ms``) are settings;
:func:`worker.config.load` keeps the waits that do not poll (revoke, drain) below the latter.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Protocol

from worker import __version__
from worker.config import Settings

Partition = tuple[str, int]  # (topic, partition): the one name of the pair inside the worker


class MessageLike(Protocol):
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...
    def headers(self) -> Any: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> Any: ...


class ConsumerLike(Protocol):
    """What the pipeline calls on a consumer (confluent_kafka.Consumer, or the tests' in-memory one)."""

    def subscribe(self, topics: list[str], on_assign: Any = ..., on_revoke: Any = ..., on_lost: Any = ...) -> None: ...
    def consume(self, num_messages: int = ..., timeout: float = ...) -> Sequence[Any]: ...
    def poll(self, timeout: float = ...) -> Any: ...
    def assignment(self) -> Sequence[Any]: ...
    def pause(self, partitions: list[Any]) -> None: ...
    def resume(self, partitions: list[Any]) -> None: ...
    def incremental_assign(self, partitions: list[Any]) -> None: ...
    def assign(self, partitions: list[Any]) -> None: ...
    def commit(self, *args: Any, **kwargs: Any) -> Any: ...
    def close(self) -> None: ...


class ProducerLike(Protocol):
    """What the pipeline calls on a producer."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        """``value``, ``key``, ``headers`` and ``on_delivery`` are passed by keyword."""

    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...


def _common(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"multidentify-worker-{__version__}-{socket.gethostname()}",
        "security.protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        conf["sasl.mechanism"] = settings.sasl_mechanism
        conf["sasl.username"] = settings.sasl_username
        conf["sasl.password"] = settings.sasl_password
    if settings.ssl_ca_location:
        conf["ssl.ca.location"] = settings.ssl_ca_location
    return conf


def consumer_config(settings: Settings, *, stats_interval_ms: int = 5000) -> dict[str, Any]:
    session = settings.session_timeout_ms
    return {
        **_common(settings),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": settings.auto_offset_reset,
        "partition.assignment.strategy": settings.assignment_strategy,
        "session.timeout.ms": session,
        "heartbeat.interval.ms": max(100, min(3000, session // 3)),
        # Explicit (librdkafka's default is the same 300 s): config.load() keeps the revoke and drain waits, which
        # do not poll, below it.
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        # Keep prefetch small (per partition): events wait in Kafka, not in our memory, when the API is the
        # bottleneck, and a partition taken over in a rebalance is not queued behind a deep local backlog.
        "queued.min.messages": max(100, 2 * settings.max_in_flight),
        "queued.max.messages.kbytes": 2048,
        "fetch.max.bytes": 16 * 1024 * 1024,
        "statistics.interval.ms": stats_interval_ms,
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **_common(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # Dead letters carry the original value (base64) plus context; allow for that growth.
        "message.max.bytes": 16 * 1024 * 1024,
    }
