"""Format ``s3``: Amazon S3 and MinIO bucket notifications (``schemas/s3-notification.schema.json``).

One record value is one notification: ``{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name":
…}, "object": {"key": …, "size": …}}}]}`` (MinIO adds ``EventName``/``Key`` at the top and ``contentType`` on the
object, and spells the event ``s3:ObjectCreated:Put``). The object key is URL-encoded as a form value (a space is
``+``); it is decoded, then encoded again as a URL path when the image URL is built from ``image_url_template``.

The event: ``image_url`` from the template, ``event_id`` derived from the record's coordinates, the configured
groups, and ``metadata.s3`` = what the notification says about the object (bucket, key, size, etag, version,
content type, event name and time, region). Refusals (dead-letter codes): see :mod:`worker.core.formats`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from worker import schemas
from worker.core.formats import objects
from worker.core.records import MAX_EVENT_BYTES, Event, InvalidEvent, Source, check_url, decode_json

TEST_EVENT = "s3:TestEvent"


def parse(
    value: bytes | None,
    source: Source,
    *,
    template: str,
    max_object_bytes: int | None,
    max_bytes: int = MAX_EVENT_BYTES,
) -> Event:
    """One S3/MinIO notification → the event of the object it announces; :class:`InvalidEvent` otherwise."""
    doc = decode_json(value, max_bytes=max_bytes)
    if not isinstance(doc, dict):
        raise InvalidEvent(objects.INVALID_NOTIFICATION, "the notification must be a JSON object")
    if doc.get("Event") == TEST_EVENT:
        raise InvalidEvent(objects.S3_TEST_EVENT, "the s3:TestEvent a bucket sends when notifications are set up")
    objects.one_record(doc)
    error = next(schemas.validator("s3-notification").iter_errors(doc), None)
    if error is not None:
        raise InvalidEvent(
            objects.INVALID_NOTIFICATION, f"not an S3 notification: {_where(error.path)}: {error.message}"[:400]
        )
    record: dict[str, Any] = doc["Records"][0]
    name: str = record["eventName"]
    if not objects.event_name_created(name, "s3:"):
        raise InvalidEvent(objects.NOT_OBJECT_CREATED, f"the event is {name[:100]!r}, not ObjectCreated:*")
    bucket: str = record["s3"]["bucket"]["name"]
    obj: dict[str, Any] = record["s3"]["object"]
    key = unquote_plus(obj["key"])
    region = record.get("awsRegion") or ""
    size = obj.get("size")
    content_type = obj.get("contentType")
    objects.check_image(key, content_type, size, max_object_bytes)
    objects.check_key(key)
    image_url = objects.fill(template, bucket=bucket, key=key, region=region)
    check_url(image_url)
    about: dict[str, Any] = {"event_name": name, "bucket": bucket, "key": key}
    optional = {
        "event_time": record.get("eventTime"),
        "region": region or None,
        "size": size,
        "etag": obj.get("eTag"),
        "version_id": obj.get("versionId"),
        "sequencer": obj.get("sequencer"),
        "content_type": content_type,
        "event_source": record.get("eventSource"),
    }
    return objects.object_event(source, image_url, "s3", about, optional)


def _where(path: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "notification"
