"""Bucket notifications as MinIO publishes them to Kafka, for the demo and the tests (format ``s3``).

:func:`minio_notification` builds the record value of one bucket event in MinIO's shape (docs/event-formats.md;
the samples ``tests/data/events/minio-put.json`` and ``minio-delete.json``): the top-level ``EventName`` and ``Key``,
then one record with the bucket and the object. The object key is form-encoded as MinIO's QueryEscape writes it
(``/`` → ``%2F``, a space → ``+``), so the worker's decoding is exercised as a real MinIO would. An object-created
event describes the object's bytes (size, ETag = MD5, content type); a removal names the key only, as MinIO's does.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import orjson

OBJECT_CREATED = "s3:ObjectCreated:Put"
OBJECT_REMOVED = "s3:ObjectRemoved:Delete"
OWNER = "minioadmin"  # MinIO's default root user: the principal its notifications name


def minio_notification(
    bucket: str,
    key: str,
    *,
    event_name: str = OBJECT_CREATED,
    data: bytes | None = None,
    content_type: str | None = None,
    when: datetime | None = None,
) -> bytes:
    """One MinIO notification of ``event_name`` for ``bucket``/``key`` (the key as stored, not encoded).

    ``data`` (the object's bytes) gives the size and ETag, ``content_type`` the object's; leave both out for a
    removal. ``when`` is the event time (now by default); the sequencer is derived from it, as MinIO's grows with
    time."""
    at = when or datetime.now(UTC)
    obj: dict[str, Any] = {"key": quote_plus(key), "sequencer": f"{int(at.timestamp() * 1e9):016X}"}
    if data is not None:
        obj |= {"size": len(data), "eTag": hashlib.md5(data, usedforsecurity=False).hexdigest()}
    if content_type is not None:
        obj |= {"contentType": content_type, "userMetadata": {"content-type": content_type}}
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventName": event_name,
        "userIdentity": {"principalId": OWNER},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": OWNER}, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }
    return orjson.dumps({"EventName": event_name, "Key": f"{bucket}/{key}", "Records": [record]})
