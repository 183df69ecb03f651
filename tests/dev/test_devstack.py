"""The embedded broker is a real Kafka-protocol broker: produce, consume, headers, and a two-member group."""

from __future__ import annotations

import threading
import uuid

from confluent_kafka import Consumer

from tests.support.kafkatest import GROUP_TIMEOUTS, consume_n, produce_all, wait_until
from worker.dev import devstack


def test_produce_and_consume_round_trip_with_headers(kafka_bootstrap: str, make_topic) -> None:
    topic = make_topic("roundtrip", partitions=2)
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)]
    produce_all(kafka_bootstrap, topic, records, headers=[("traceparent", b"00-abc-def-01")])
    got = consume_n(kafka_bootstrap, topic, 20)
    assert sorted((m.key(), m.value()) for m in got) == sorted(records)
    assert all(("traceparent", b"00-abc-def-01") in (m.headers() or []) for m in got)


def test_two_members_of_one_group_split_the_partitions(kafka_bootstrap: str, make_topic) -> None:
    topic = make_topic("group", partitions=4)
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce_all(kafka_bootstrap, topic, [(str(i).encode(), str(i).encode()) for i in range(200)])
    seen: dict[str, list[int]] = {"a": [], "b": []}
    partitions: dict[str, set[int]] = {"a": set(), "b": set()}
    stop = threading.Event()

    def member(name: str) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                **GROUP_TIMEOUTS,
            }
        )
        consumer.subscribe([topic])
        try:
            while not stop.is_set():
                msg = consumer.poll(0.1)
                if msg is not None and msg.error() is None:
                    seen[name].append(int(msg.value()))
                    partitions[name].add(msg.partition())
                    consumer.commit(msg, asynchronous=False)
        finally:
            consumer.close()

    threads = [threading.Thread(target=member, args=(n,), daemon=True) for n in ("a", "b")]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(set(seen["a"]) | set(seen["b"])) == 200, timeout=60, what="all 200 records consumed")
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert set(seen["a"]) | set(seen["b"]) == set(range(200))
    # Both members got work: the group really split the topic between them.
    assert partitions["a"] and partitions["b"]
    assert not partitions["a"] & partitions["b"] or len(seen["a"]) + len(seen["b"]) >= 200


def test_broker_process_is_stopped_by_its_own_pid() -> None:
    b = devstack.start_broker()
    pid = b.process.pid if b.process else None
    assert pid is not None and b.process is not None and b.process.alive()
    b.stop()
    assert not b.process.alive()
