"""The demo's MinIO notifications are MinIO's: the builder writes what the samples in tests/data/events/ hold, and
the worker's ``s3`` parser reads both alike (the same event from an upload, the same refusal from a delete)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.core.formats import objects, s3
from worker.core.records import Event, InvalidEvent, Source
from worker.dev.notifications import OBJECT_REMOVED, minio_notification

DATA = Path(__file__).resolve().parents[1] / "data" / "events"
TEMPLATE = "http://127.0.0.1:9000/{bucket}/{key}"
SOURCE = Source("minio.images", 1, 7)


def _sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((DATA / name).read_bytes())
    return doc


def _parse(value: bytes) -> Event:
    return s3.parse(value, SOURCE, template=TEMPLATE, max_object_bytes=1_500_000)


def test_an_upload_reads_as_the_minio_sample_does() -> None:
    sample = _sample("minio-put.json")
    obj = sample["Records"][0]["s3"]["object"]
    when = datetime(2026, 5, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    built = minio_notification(
        "faces", "lobby/alice 1.jpg", data=b"x" * obj["size"], content_type="image/jpeg", when=when
    )
    doc = orjson.loads(built)
    # The key is encoded as MinIO encodes it ('/' → %2F, space → +), and the top-level members are MinIO's.
    assert doc["Records"][0]["s3"]["object"]["key"] == obj["key"] == "lobby%2Falice+1.jpg"
    assert (doc["EventName"], doc["Key"]) == (sample["EventName"], sample["Key"])
    mine, theirs = _parse(built), _parse(orjson.dumps(sample))
    assert mine.image_url == theirs.image_url == "http://127.0.0.1:9000/faces/lobby/alice%201.jpg"
    skip = {"etag", "sequencer"}  # the sample's come from other bytes and another moment
    assert {k: v for k, v in mine.metadata["s3"].items() if k not in skip} == {
        k: v for k, v in theirs.metadata["s3"].items() if k not in skip
    }


def test_a_delete_is_refused_as_the_minio_sample_is() -> None:
    sample = _sample("minio-delete.json")
    built = minio_notification("faces", "lobby/alice 1.jpg", event_name=OBJECT_REMOVED)
    assert orjson.loads(built)["Records"][0]["s3"]["object"].keys() == sample["Records"][0]["s3"]["object"].keys()
    for value in (built, orjson.dumps(sample)):
        with pytest.raises(InvalidEvent) as refused:
            _parse(value)
        assert refused.value.code == objects.NOT_OBJECT_CREATED


def test_an_upload_of_a_video_is_not_an_image() -> None:
    with pytest.raises(InvalidEvent) as refused:
        _parse(minio_notification("faces", "lobby/clip.mp4", data=b"\0" * 100, content_type="video/mp4"))
    assert refused.value.code == objects.NOT_AN_IMAGE
