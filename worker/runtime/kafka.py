"""Kafka for the worker: what the pipeline needs of a consumer and a producer, and their configuration.

``ConsumerLike`` and ``ProducerLike`` are the parts of confluent-kafka's clients the pipeline uses; the
in-memory Kafka of the contract tests (tests/support/memkafka.py) implements them too. ``Partition`` is the one
name of a (topic, partition) pair inside the worker.

Every Kafka client of the worker and of its tools gets its librdkafka configuration here, from the settings: the
connection, the worker's tuning, the operator's librdkafka properties (``kafka_common``, ``kafka_consumer``,
``kafka_producer``; docs/kafka.md) and, last, what the commit contract and the settings own.

Offsets are stored and committed by the pipeline only (auto commit and auto offset store off):
the commit contract lives in :mod:`worker.runtime.pipeline`. Every consumer reads committed events only
(``isolation.level`` ``read_committed``, librdkafka's default made explicit and owned, like the rest of
``CONSUMER_CONTRACT``): an event of an aborted transaction is neither processed nor replayed.

Where a partition without a committed offset starts (``auto_offset_reset``) and how long the consumer may go
unpolled (``max_poll_interval_ms``) are settings; :func:`worker.config.load` keeps the waits that do not poll
(revoke, drain) below the latter, and refuses a property that one of them, or the contract, owns.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Protocol

from worker import __version__
from worker.config import Settings
from worker.config.properties import CONSUMER_CONTRACT, PRODUCER_CONTRACT

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


def connection_config(settings: Settings) -> dict[str, Any]:
    """Where the brokers are and how to reach them, from the settings: the part every client shares."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"multidentify-worker-{__version__}-{socket.gethostname()}",
        "security.protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        conf["sasl.mechanism"] = settings.sasl_mechanism
        if settings.sasl_mechanism != "OAUTHBEARER":  # OAUTHBEARER: sasl.oauthbearer.* in kafka_common instead
            conf["sasl.username"] = settings.sasl_username
            conf["sasl.password"] = settings.sasl_password
    if settings.ssl_ca_location:
        conf["ssl.ca.location"] = settings.ssl_ca_location
    return conf


# Every client is built in layers, later ones winning: the connection (settings), the worker's tuning (defaults the
# properties may change), the operator's librdkafka properties (kafka_common, then kafka_consumer/_producer), and
# last what the commit contract and the settings own. config.load() refuses owned properties among the operator's,
# so the last layer never silently overrides one of them; it is applied last all the same.


def consumer_config(settings: Settings, *, stats_interval_ms: int = 5000) -> dict[str, Any]:
    """The worker's consumer: a member of ``group_id`` that commits only what the pipeline tells it to."""
    session = settings.session_timeout_ms
    owned: dict[str, Any] = {
        "group.id": settings.group_id,
        **CONSUMER_CONTRACT,  # no auto commit, no auto offset store, isolation.level read_committed
        "auto.offset.reset": settings.auto_offset_reset,
        "partition.assignment.strategy": settings.assignment_strategy,
        "session.timeout.ms": session,
        # Explicit (librdkafka's default is the same 300 s): config.load() keeps the revoke and drain waits, which
        # do not poll, below it.
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "statistics.interval.ms": stats_interval_ms,
    }
    if settings.group_instance_id:  # static membership (docs/kafka.md)
        owned["group.instance.id"] = settings.group_instance_id
    return {
        **connection_config(settings),
        "heartbeat.interval.ms": max(100, min(3000, session // 3)),
        # Keep prefetch small (per partition): events wait in Kafka, not in our memory, when the API is the
        # bottleneck, and a partition taken over in a rebalance is not queued behind a deep local backlog.
        "queued.min.messages": max(100, 2 * settings.max_in_flight),
        "queued.max.messages.kbytes": 2048,
        "fetch.max.bytes": 16 * 1024 * 1024,
        **settings.properties("consumer"),
        **owned,
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    """The worker's producer: idempotent, acks=all (an output is written once every in-sync replica has it)."""
    return {
        **connection_config(settings),
        "linger.ms": 5,
        "compression.type": "lz4",
        # Dead letters carry the original value (base64) plus context; allow for that growth.
        "message.max.bytes": 16 * 1024 * 1024,
        **settings.properties("producer"),
        **PRODUCER_CONTRACT,
    }


def tool_consumer_config(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    """An operator tool's consumer (replay, tail): reads by ``assign()``, commits nothing by itself; ``group`` only
    names where offsets are committed. It is no member of the worker's group: no group.instance.id."""
    return {
        **connection_config(settings),
        **settings.properties("consumer"),
        "group.id": group,
        **CONSUMER_CONTRACT,
        # The tools start at explicit offsets; this applies only when one is out of range (retention removed it).
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,  # the tools stop at the end of what is there
        **extra,
    }


def tool_producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """An operator tool's producer (replay, produce): idempotent, acks=all, like the worker's."""
    return {
        **connection_config(settings),
        "linger.ms": 5,
        **settings.properties("producer"),
        **PRODUCER_CONTRACT,
        **extra,
    }
