"""The embedded broker is a real Kafka-protocol broker: produce, consume, headers, and a two-member group; the
``devstack`` command prints the exports of a worker that reaches it, on either face API."""

from __future__ import annotations

import sys
import threading
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from tests.support.kafkatest import GROUP_TIMEOUTS, consume_n, produce_all, wait_until
from worker import config
from worker.api.client import MultidentifyClient
from worker.api.iai_client import IaiClient
from worker.config import ApiName
from worker.dev import devstack
from worker.dev.harness.processes import ChildProcess
from worker.dev.scenario import Scenario
from worker.emulator import synth
from worker.runtime.app import face_api


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


@pytest.mark.parametrize("api", ["v1", "iai"])
def test_devstack_prints_the_exports_of_a_worker_calling_the_api_asked_for(api: ApiName, tmp_path: Path) -> None:
    """``multidentify-worker devstack --api iai`` prints MDW_* exports that config.load reads as an IAI worker whose
    client reaches the emulator's IAI: enrolment (CreateGroup, CreatePerson), the check call and a search work."""
    argv = [sys.executable, "-m", "worker", "devstack", "--partitions", "2", "--topics", "in", "out"]
    with ChildProcess([*argv, *(["--api", api] if api != "v1" else [])], name="devstack", stop_timeout=30) as dev:
        wait_until(lambda: "devstack running" in dev.output() or not dev.alive(), timeout=60, what="the devstack")
        assert dev.alive(), dev.tail()
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in dev.output().splitlines()
            if line.startswith("export ")
        )
        settings = config.load(environ=exports | {"MDW_GROUP_IDS": "demo"}, require_credentials=True)
        assert settings.api == api
        assert AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(timeout=10).topics.keys() >= {
            "in",
            "out",
        }
        client = face_api(settings)
        assert isinstance(client, IaiClient if api == "iai" else MultidentifyClient)
        try:
            Scenario(tmp_path, "http://127.0.0.1:9/images/", api=api).enroll(client, ["alice"])
            client.check_configuration(settings.group_ids)
            photo, _ = synth.scene_with_faces(["alice"], (320, 240), seed=5)
            (face,) = client.identify_image(photo, settings.group_ids).faces
            assert face.candidates[0].person_id == "alice"
        finally:
            client.close()
        assert dev.stop() == 0, dev.tail()
