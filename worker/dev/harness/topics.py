"""The names of one worker's topics and group, and creating topics on a broker.

:class:`Topics` names the input, results and dead-letter topics a worker (or a group of them) uses, and
the consumer group they join; a fresh group per instance unless one is given. :func:`create_topics`
creates topics (existing ones are fine) and returns once every one is visible in the broker's metadata;
:func:`partitions_of` reads how many partitions a topic has. Every call is bounded by a timeout.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]


def _fresh_group() -> str:
    return f"workers-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Topics:
    """One worker deployment's topics and its consumer group."""

    input: str
    results: str
    dlq: str
    group: str = field(default_factory=_fresh_group)

    @classmethod
    def unique(cls, prefix: str = "t", group: str | None = None) -> Topics:
        """Names no other run uses: ``{prefix}-in-{tag}``, ``{prefix}-out-{tag}``, ``{prefix}-dlq-{tag}``."""
        tag = uuid.uuid4().hex[:8]
        return cls(f"{prefix}-in-{tag}", f"{prefix}-out-{tag}", f"{prefix}-dlq-{tag}", group or f"{prefix}-g-{tag}")

    @property
    def outputs(self) -> tuple[str, str]:
        """The topics the worker writes: results, then dead letters."""
        return (self.results, self.dlq)

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.input, self.results, self.dlq)

    def create(
        self, bootstrap: str, partitions: int = 4, *, results: int | None = None, dlq: int | None = None
    ) -> Topics:
        """Create the three topics (``partitions`` each unless ``results``/``dlq`` say otherwise); returns self."""
        create_topics(bootstrap, [self.input], partitions)
        if results is None and dlq is None:
            create_topics(bootstrap, self.outputs, partitions)
        else:
            create_topics(bootstrap, [self.results], partitions if results is None else results)
            create_topics(bootstrap, [self.dlq], partitions if dlq is None else dlq)
        return self


def create_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int = 4,
    config: Mapping[str, str] | None = None,
    timeout: float = 15.0,
) -> None:
    """Create topics (already existing ones are fine) and wait until every one is visible."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = list(topics)
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1, config=dict(config or {})) for t in wanted],
        operation_timeout=timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise RuntimeError(f"cannot create topic {topic}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=5)
        if all(t in meta.topics and meta.topics[t].error is None for t in wanted):
            return
        time.sleep(0.05)
    raise TimeoutError(f"topics not visible after {timeout}s: {wanted}")


def partitions_of(bootstrap: str, topic: str, timeout: float = 10.0) -> list[int]:
    """The partition ids of ``topic``, from the broker's metadata (the topic must exist)."""
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=timeout)
    found = meta.topics.get(topic)
    if found is None or found.error is not None:
        raise LookupError(f"topic {topic!r} is not on {bootstrap}: {found.error if found else 'unknown'}")
    return sorted(found.partitions)
