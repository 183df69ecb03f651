"""Shared fixtures: a real Kafka-protocol broker for the session and unique topics per test.

Broker choice, in order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; testcontainers' Kafka when a Docker engine
answers a quick ping; else the embedded Tansu broker (worker.dev.devstack).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from worker.dev import devstack
from worker.dev.harness.topics import Topics, create_topics

pytest_plugins = ["tests.support.emulator"]  # the ``emu`` fixture


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    broker = devstack.start_broker()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """``make_topic("in", partitions=4)`` → a topic name unique to this test, created and ready."""

    def _make(prefix: str = "t", partitions: int = 4, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        create_topics(kafka_bootstrap, [name], partitions, config)
        return name

    return _make


@pytest.fixture
def make_topics(kafka_bootstrap: str) -> Callable[..., Topics]:
    """``make_topics(4, results=2, dlq=1)`` → a worker's three topics, unique to this test and created, and a fresh
    consumer group (``partitions`` each unless ``results``/``dlq`` say otherwise)."""

    def _make(partitions: int = 4, *, results: int | None = None, dlq: int | None = None) -> Topics:
        return Topics.unique("t").create(kafka_bootstrap, partitions, results=results, dlq=dlq)

    return _make
