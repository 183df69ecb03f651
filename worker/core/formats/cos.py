"""Format ``cos``: Tencent Cloud Object Storage event notifications (``schemas/cos-notification.schema.json``).

The structure COS documents for its bucket events (the SCF trigger's message): ``{"Records": [{"cos":
{"cosObject": {"url": …, "key": "/<appid>/<bucket>/<key>", "size": …, "meta": {"Content-Type": …}},
"cosBucket": {"name": …, "region": …, "appid": …}}, "event": {"eventName": "cos:ObjectCreated:Put", …}}]}``,
forwarded to Kafka unchanged.

The image URL is ``cosObject.url`` as COS sent it, or, when ``image_url_template`` is set for the topic (a CDN,
a private endpoint), the template filled with the bucket, the object key (the ``key`` member without its
``/<appid>/<bucket>/`` prefix) and the region. ``event_id`` is derived from the record's coordinates;
``metadata.cos`` says what the notification says about the object.
"""

from __future__ import annotations

from typing import Any

from worker import schemas
from worker.core.formats import objects
from worker.core.records import MAX_EVENT_BYTES, Event, InvalidEvent, Source, check_url, decode_json


def parse(
    value: bytes | None,
    source: Source,
    *,
    template: str | None,
    max_object_bytes: int | None,
    max_bytes: int = MAX_EVENT_BYTES,
) -> Event:
    """One COS notification → the event of the object it announces; :class:`InvalidEvent` otherwise."""
    doc = decode_json(value, max_bytes=max_bytes)
    if not isinstance(doc, dict):
        raise InvalidEvent(objects.INVALID_NOTIFICATION, "the notification must be a JSON object")
    objects.one_record(doc)
    error = next(schemas.validator("cos-notification").iter_errors(doc), None)
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path).lstrip(".")
        raise InvalidEvent(
            objects.INVALID_NOTIFICATION, f"not a COS notification: {where or 'notification'}: {error.message}"[:400]
        )
    record: dict[str, Any] = doc["Records"][0]
    name: str = record["event"]["eventName"]
    if not objects.event_name_created(name, "cos:"):
        raise InvalidEvent(objects.NOT_OBJECT_CREATED, f"the event is {name[:100]!r}, not cos:ObjectCreated:*")
    cos_object: dict[str, Any] = record["cos"]["cosObject"]
    bucket_doc: dict[str, Any] = record["cos"]["cosBucket"]
    bucket: str = bucket_doc["name"]
    appid = bucket_doc.get("appid") or ""
    region = bucket_doc.get("region") or ""
    key = object_key(cos_object["key"], appid, bucket)
    if not key:
        raise InvalidEvent(objects.INVALID_NOTIFICATION, "cosObject.key names no object")
    meta = cos_object.get("meta") or {}
    content_type = next((v for k, v in meta.items() if k.lower() == "content-type"), None)
    size = cos_object.get("size")
    objects.check_image(key, content_type, size, max_object_bytes)
    objects.check_key(key)  # also without a template: COS's own URL of such a key resolves elsewhere too
    if template is not None:
        image_url = objects.fill(template, bucket=bucket, key=key, region=region)
    elif cos_object.get("url"):
        image_url = cos_object["url"]
    else:
        raise InvalidEvent(
            objects.INVALID_NOTIFICATION,
            "the notification has no cosObject.url and the topic has no image_url_template",
        )
    check_url(image_url)
    about: dict[str, Any] = {"event_name": name, "bucket": bucket, "key": key}
    optional = {
        "event_time": record["event"].get("eventTime"),
        "region": region or None,
        "appid": appid or None,
        "size": size,
        "version_id": cos_object.get("vid") or None,
        "content_type": content_type or None,
        "url": cos_object.get("url"),
    }
    return objects.object_event(source, image_url, "cos", about, optional)


def object_key(raw: str, appid: str, bucket: str) -> str:
    """The object key of ``cosObject.key`` (``/<appid>/<bucket>/<key>``); a key without that prefix as it is,
    less a leading ``/``."""
    prefix = f"/{appid}/{bucket}/"
    return raw[len(prefix) :] if appid and raw.startswith(prefix) else raw.lstrip("/")
