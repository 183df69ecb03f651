"""The committed positions of a consumer group, read from the broker.

A position is the offset of the next record the group would read in a partition; librdkafka answers a
negative offset (-1001, ``OFFSET_INVALID``) for a partition where nothing is committed. The group is not
joined: a consumer with the group's id only asks the group coordinator.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Consumer, TopicPartition

from worker.dev.harness.topics import partitions_of


def committed_positions(
    bootstrap: str, group: str, topic: str, partitions: Sequence[int] | None = None, timeout: float = 10.0
) -> dict[int, int]:
    """The group's committed position per partition of ``topic`` (every partition unless ``partitions``)."""
    parts = list(partitions) if partitions is not None else partitions_of(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=timeout)
        return {tp.partition: tp.offset for tp in got}
    finally:
        consumer.close()
