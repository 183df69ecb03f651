"""End to end on the embedded broker and the emulator: one worker consumes three topics in three formats.

A camera topic in CloudEvents (a structured record written by ``produce --cloudevents structured``, a binary one
written by the CloudEvents SDK's Kafka binding), a MinIO topic of bucket notifications (``produce --as-is``), and
the worker's own event topic. Each record gets exactly one output: results with the attributes mapped as
docs/event-formats.md says, dead letters keyed by the formats' codes; every offset of the three topics is
committed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote_plus

import orjson
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import Producer

from tests.support.kafkatest import produce_all, wait_until
from tests.support.pipeline import enrolled_emulator, settings_env, thread_worker, validate_all
from worker.dev.harness.outputs import read_outputs
from worker.dev.harness.positions import committed_positions
from worker.dev.harness.topics import Topics, create_topics
from worker.emulator import synth
from worker.tools import produce

pytestmark = pytest.mark.broker

DATA = Path(__file__).resolve().parents[1] / "data" / "events"
PEOPLE = ["alice", "bob", "carol"]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _photo(images_dir: Path, name: str, person: str, seed: int) -> int:
    data, _ = synth.scene_with_faces([person], (480, 360), seed=seed)
    (images_dir / name).write_bytes(data)
    return len(data)


def _minio_notification(bucket: str, key: str, size: int, event_name: str = "s3:ObjectCreated:Put") -> bytes:
    """The MinIO sample with this bucket, key (form-encoded as MinIO's QueryEscape does) and event."""
    doc = copy.deepcopy(orjson.loads((DATA / "minio-put.json").read_bytes()))
    doc["EventName"] = event_name
    doc["Key"] = f"{bucket}/{key}"
    record = doc["Records"][0]
    record["eventName"] = event_name
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["object"].update(key=quote_plus(key), size=size)
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)  # pretty, as the samples are: --as-is compacts it


def test_cloudevents_minio_and_plain_topics_in_one_worker(
    kafka_bootstrap: str, make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    with enrolled_emulator(images_dir, PEOPLE) as (emulator, _):
        base = emulator.base_url
        topics = make_topics(2, results=1, dlq=1)
        ce_topic, s3_topic = f"{topics.input}-ce", f"{topics.input}-minio"
        create_topics(kafka_bootstrap, [ce_topic, s3_topic], 2)

        # The camera: one structured CloudEvent through the produce tool, one binary through the SDK.
        _photo(images_dir, "bob.jpg", "bob", 11)
        _photo(images_dir, "carol.jpg", "carol", 12)
        structured = produce.as_cloudevent(
            produce.prepare({"event_id": "cam-structured", "image_url": f"{base}/images/bob.jpg"}), "structured"
        )
        binary = ce_kafka.to_binary(
            CloudEvent(
                attributes={
                    "type": "com.example.camera.face-capture",
                    "source": "/cameras/gate-3",
                    "id": "cam-binary",
                    "subject": "lobby",
                    "datacontenttype": "application/json",
                    "traceparent": TRACEPARENT,
                },
                data={"image_url": f"{base}/images/carol.jpg", "metadata": {"camera": "gate-3"}},
            ),
            JSONFormat(),
        )
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        report = produce.publish(producer, ce_topic, [structured], timeout_s=30)
        assert report.delivered == 1, report.errors
        produce_all(kafka_bootstrap, ce_topic, [(None, binary.value)], headers=list(binary.headers.items()))
        produce_all(kafka_bootstrap, ce_topic, [b'{"image_url": "http://x.invalid/a.jpg"}'])  # no CloudEvent

        # MinIO: an upload whose key needs escaping (space, non-ASCII), and a delete.
        key = "lobby/alice ä 1.jpg"
        (images_dir / "lobby").mkdir()
        size = _photo(images_dir, key, "alice", 13)
        notifications = [
            _minio_notification("images", key, size),
            _minio_notification("images", key, size, event_name="s3:ObjectRemoved:Delete"),
        ]
        for text in notifications:
            report = produce.publish(producer, s3_topic, produce.as_is(text.splitlines(keepends=True)), timeout_s=30)
            assert report.delivered == 1, report.errors

        # The worker's own format, unchanged.
        _photo(images_dir, "plain.jpg", "alice", 14)
        produce_all(
            kafka_bootstrap,
            topics.input,
            [orjson.dumps({"event_id": "plain", "image_url": f"{base}/images/plain.jpg"})],
        )

        env = settings_env(
            kafka_bootstrap,
            base,
            topics,
            input_topic=f"{topics.input},{ce_topic},{s3_topic}",
            input_formats=f"{ce_topic}=cloudevents,{s3_topic}=s3",
            image_url_template=f"{base}/{{bucket}}/{{key}}",
            max_in_flight=4,
        )
        expected = 6
        with thread_worker(env) as w:
            wait_until(
                lambda: w.pipeline.stats.results + sum(w.pipeline.stats.dead_letters.values()) >= expected,
                timeout=60,
                what="an output for every record of the three topics",
            )
            assert w.stop() == 0

    outputs = read_outputs(kafka_bootstrap, topics)
    validate_all(outputs)
    assert len(outputs) == expected, [(o.code, o.event_id) for o in outputs]
    results = {o.doc["source"]["topic"] + ":" + o.doc["event_id"]: o for o in outputs if o.kind == "result"}
    dead = sorted((o.doc["original"]["topic"], o.code) for o in outputs if o.kind != "result")
    assert dead == sorted([(ce_topic, "not_a_cloudevent"), (s3_topic, "not_object_created")])

    cam_s = results[f"{ce_topic}:cam-structured"].doc
    assert cam_s["faces"][0]["best_match"]["person_id"] == "bob"
    assert cam_s["metadata"]["cloudevent"]["source"] == produce.CE_SOURCE

    cam_b = results[f"{ce_topic}:cam-binary"]
    assert cam_b.doc["faces"][0]["best_match"]["person_id"] == "carol"
    assert cam_b.doc["metadata"]["camera"] == "gate-3"
    assert cam_b.doc["metadata"]["cloudevent"]["subject"] == "lobby"
    assert ("traceparent", TRACEPARENT.encode()) in list(cam_b.headers)  # from the CloudEvent's extension

    [minio] = [o for o in outputs if o.kind == "result" and o.doc["source"]["topic"] == s3_topic]
    assert minio.doc["image_url"] == f"{base}/images/lobby/alice%20%C3%A4%201.jpg"
    assert minio.doc["metadata"]["s3"]["key"] == key
    assert minio.doc["faces"][0]["best_match"]["person_id"] == "alice"

    assert results[f"{topics.input}:plain"].doc["faces"][0]["best_match"]["person_id"] == "alice"

    # Every offset of the three topics is committed (the records' count per topic).
    for topic, count in ((ce_topic, 3), (s3_topic, 2), (topics.input, 1)):
        positions = committed_positions(kafka_bootstrap, topics.group, topic)
        assert sum(p for p in positions.values() if p > 0) == count, (topic, positions)
