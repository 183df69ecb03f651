"""What the object-store formats (``s3``, ``cos``) share: image URL templates, the image check, the size check.

An object-created notification names a bucket and a key; the image URL is built from a configured template
(setting ``image_url_template``) with the placeholders ``{bucket}``, ``{key}`` and ``{region}``. ``{key}`` is
percent-encoded as a URL path (RFC 3986: every byte except unreserved characters and ``/``), ``{bucket}`` and
``{region}`` as one path segment, so a key such as ``cam 1/ä+b.jpg`` becomes ``cam%201/%C3%A4%2Bb.jpg``.

A key with a ``.`` or ``..`` segment, or an empty one (``a//b``, a leading ``/``), is refused
(``unsafe_object_key``): escaping cannot make it safe, because WHATWG URL parsers (browsers, many proxies and
CDNs) read ``%2E%2E`` as ``..`` and ``https://cdn/b/%2E%2E/other/x.jpg`` as ``https://cdn/other/x.jpg``, and
servers that merge slashes read ``a//b`` as ``a/b``, another object. So no accepted key's URL resolves outside
the path the template gives its bucket. S3 stores such keys (any UTF-8 up to 1,024 bytes); MinIO refuses them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from worker.core.records import Event, InvalidEvent, Source

NOT_OBJECT_CREATED = "not_object_created"
NOT_AN_IMAGE = "not_an_image"
OBJECT_TOO_LARGE = "object_too_large"
SEVERAL_RECORDS = "several_records"
INVALID_NOTIFICATION = "invalid_notification"
S3_TEST_EVENT = "s3_test_event"
UNSAFE_OBJECT_KEY = "unsafe_object_key"

PLACEHOLDERS = ("bucket", "key", "region")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# Extensions of the formats the face APIs decode (JPEG, PNG, BMP, WEBP, TIFF; GIF is refused by v1).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff"})
# Content types that say nothing about the bytes: then the key's extension decides.
GENERIC_CONTENT_TYPES = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/x-www-form-urlencoded"}
)


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot build image URLs (None when it can): http(s), a host, ``{key}``, known placeholders."""
    names = _PLACEHOLDER.findall(template)
    unknown = sorted({n for n in names if n not in PLACEHOLDERS})
    if unknown:
        shown = ", ".join("{" + n + "}" for n in unknown)
        return f"unknown placeholder(s) {shown} (known: {{bucket}}, {{key}}, {{region}})"
    if "key" not in names:
        return "the template has no {key}"
    sample = fill(template, bucket="bucket", key="key", region="region")
    if "{" in sample or "}" in sample:
        return "unbalanced braces"
    try:
        parts = urlsplit(sample)
        valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc
    except ValueError:
        valid = False
    if not valid or re.search(r"\s", sample):
        return "must be an http:// or https:// URL with a host and no whitespace or user:password@"
    return None


def fill(template: str, *, bucket: str, key: str, region: str) -> str:
    """The template with its placeholders replaced by the percent-encoded values (one pass: a value is never
    read as a placeholder). :class:`InvalidEvent` for a key :func:`check_key` refuses, or a bucket or region that
    is a dot-segment (``invalid_notification``: neither S3 nor COS allows such a name)."""
    check_key(key)
    for name, value in (("bucket", bucket), ("region", region)):
        if value in (".", ".."):
            raise InvalidEvent(
                INVALID_NOTIFICATION, f"the {name} {value!r} is not a name (a URL reads it as a path step)"
            )
    values = {
        "bucket": quote(bucket, safe=""),
        "key": "/".join(quote(part, safe="") for part in key.split("/")),
        "region": quote(region, safe=""),
    }
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def check_key(key: str) -> None:
    """Refuse (``unsafe_object_key``) a key whose URL could resolve to another object (module docstring)."""
    for segment in key.split("/"):
        if segment in (".", ".."):
            raise InvalidEvent(
                UNSAFE_OBJECT_KEY,
                f"the object key {_short(key)!r} has a {segment!r} segment: a URL parser would resolve it to "
                "another path, possibly outside the bucket",
            )
        if not segment:
            raise InvalidEvent(
                UNSAFE_OBJECT_KEY,
                f"the object key {_short(key)!r} has an empty segment (a leading '/' or '//'): servers that merge "
                "slashes would serve another object",
            )


def check_image(key: str, content_type: str | None, size: int | None, max_bytes: int | None) -> None:
    """Refuse an object that is not worth a call: a folder marker, empty, not an image, or too large.

    A content type decides when it is specific (``image/*`` accepted, ``video/mp4`` refused); a generic or missing
    one leaves it to the key's extension; an object without extension and without a content type is accepted
    (the face API refuses what it cannot decode).
    """
    if key.endswith("/"):
        raise InvalidEvent(NOT_AN_IMAGE, f"the object {_short(key)!r} is a folder marker")
    if size == 0:
        raise InvalidEvent(NOT_AN_IMAGE, f"the object {_short(key)!r} is empty (0 bytes)")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not media.startswith("image/"):
        if media not in GENERIC_CONTENT_TYPES:
            raise InvalidEvent(NOT_AN_IMAGE, f"the object {_short(key)!r} has content type {media!r}, not image/*")
        extension = posixpath.splitext(posixpath.basename(key))[1].lower()
        if extension and extension not in IMAGE_EXTENSIONS:
            raise InvalidEvent(
                NOT_AN_IMAGE, f"the object {_short(key)!r} has the extension {extension!r}, not an image's"
            )
    if size is not None and max_bytes is not None and size > max_bytes:
        raise InvalidEvent(
            OBJECT_TOO_LARGE, f"the object {_short(key)!r} is {size:,} bytes; the face API takes at most {max_bytes:,}"
        )


def event_name_created(name: str, prefix: str) -> bool:
    """Is ``name`` an object-created event (``ObjectCreated:Put``, ``s3:ObjectCreated:Put``, ``cos:ObjectCreated:*``)?

    ``prefix`` is the service's (``s3:``, ``cos:``), optional: AWS leaves it out, MinIO and COS write it.
    """
    return name.removeprefix(prefix).startswith("ObjectCreated:")


def one_record(doc: object) -> None:
    """Refuse a notification that holds several records: the worker writes one output per input record, and
    committing one offset for several outcomes would break the commit contract (S3, MinIO and COS send one)."""
    if isinstance(doc, dict):
        records = doc.get("Records")
        if isinstance(records, list) and len(records) > 1:
            raise InvalidEvent(
                SEVERAL_RECORDS, f"the notification holds {len(records)} records; the worker takes one per record"
            )


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def object_event(
    source: Source, image_url: str, store: str, about: dict[str, Any], optional: Mapping[str, Any]
) -> Event:
    """The event of one object-created notification: ``metadata.<store>`` holds ``about`` and the ``optional``
    members that are set. A notification names no event, so the id comes from the record's coordinates."""
    about.update((k, v) for k, v in optional.items() if v is not None)
    return Event(event_id=source.derived_event_id, image_url=image_url, metadata={store: about}, event_id_derived=True)
