"""Format ``cloudevents``: CloudEvents 1.0 on Kafka, both content modes of the Kafka protocol binding.

* Binary mode: a record with a ``ce_specversion`` header. Every ``ce_<name>`` header is the attribute ``<name>``
  (its value UTF-8), the ``content-type`` header is ``datacontenttype``, and the record value is the data.
* Structured mode: the record value is a CloudEvent in the JSON event format, its ``content-type`` header
  ``application/cloudevents+json`` (parameters such as ``; charset=UTF-8`` allowed). A record without either
  header whose value is a JSON object with a ``specversion`` member is read as structured too (producers that
  set no content type are common).

The data is a multidentify-worker event (``schemas/event.schema.json``: ``image_url``, ``group_ids``,
``session_id``, ``metadata`` …), JSON. The attributes map onto it:

* ``event_id``: the data's own, else the CloudEvent ``id`` (when it is at most 128 characters; else derived
  from the record's coordinates as for a plain event).
* ``metadata``: the data's metadata plus ``metadata.cloudevent`` = ``id``, ``source``, ``type``,
  ``specversion`` and, when present, ``subject``, ``time``, ``dataschema``, ``datacontenttype`` and the other
  extension attributes (``extensions``). The worker writes that member; a ``cloudevent`` member the data's
  metadata already had is replaced.
* ``traceparent`` / ``tracestate`` (the distributed-tracing extension): results carry them as headers when the
  record has no ``traceparent`` header of its own (``Event.trace_context``).

Refusals, each its own dead-letter code: ``not_a_cloudevent`` (neither mode), ``unsupported_specversion``
(anything but ``"1.0"``), ``invalid_cloudevent`` (attributes against ``schemas/cloudevent.schema.json``:
missing ``id``/``source``/``type``, a bad ``time``, a header that is not UTF-8 or appears twice, a control
character (U+0000–U+001F, U+007F–U+009F: not in the CloudEvents String type), an attribute value over
``MAX_ATTRIBUTE_BYTES`` or names and values over ``MAX_ATTRIBUTES_BYTES`` in all …),
``unsupported_content_type`` (data that is not JSON: another ``datacontenttype``, ``data_base64``, a batch, an
envelope format other than JSON), ``cloudevent_without_data``; then the event codes for the data itself
(``invalid_event``, ``invalid_url``, ``unsupported_version``, and the value's ``empty_value`` …
``invalid_json``).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import Any

from worker import schemas
from worker.core.records import (
    MAX_EVENT_BYTES,
    MAX_TRACE_HEADER_BYTES,
    Event,
    InvalidEvent,
    Source,
    decode_json,
    event_from_object,
)

NOT_A_CLOUDEVENT = "not_a_cloudevent"
UNSUPPORTED_SPECVERSION = "unsupported_specversion"
INVALID_CLOUDEVENT = "invalid_cloudevent"
UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
CLOUDEVENT_WITHOUT_DATA = "cloudevent_without_data"

SPECVERSION = "1.0"
CE_PREFIX = "ce_"
CONTENT_TYPE = "content-type"
STRUCTURED = "application/cloudevents+json"
# The attributes the spec defines; any other is an extension (reported under metadata.cloudevent.extensions).
CONTEXT_ATTRIBUTES = ("id", "source", "type", "specversion", "subject", "time", "dataschema", "datacontenttype")
TRACE_ATTRIBUTES = ("traceparent", "tracestate")
# Attributes are copied into the result's metadata, on top of a value of up to max_bytes: bounded, so that a
# result stays far below the broker's message limit (a result the broker refuses would stall the partition).
MAX_ATTRIBUTE_BYTES = 4 * 1024  # one attribute's value, UTF-8
MAX_ATTRIBUTES_BYTES = 32 * 1024  # every attribute's name and value together
# The CloudEvents String type excludes these (and JSON would write each as six bytes, \u0001).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_EVENT_ID = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,128}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[ -~]*)?")


def parse(value: bytes | None, source: Source, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """One record of a ``cloudevents`` topic → its event; :class:`InvalidEvent` (one of the codes above)."""
    headers = _headers(source.headers)
    if CE_PREFIX + "specversion" in headers:
        attributes = _binary_attributes(headers)
        data = _binary_data(value, attributes.get("datacontenttype"), max_bytes)
    else:
        media = _media(headers.get(CONTENT_TYPE))
        declared = media.startswith("application/cloudevents")
        if declared and media != STRUCTURED:
            raise InvalidEvent(
                UNSUPPORTED_CONTENT_TYPE, f"content-type {media!r}: only {STRUCTURED} is read (no batches, no Avro)"
            )
        doc = decode_json(value, max_bytes=max_bytes)
        if not isinstance(doc, dict) or "specversion" not in doc:
            if declared:
                raise InvalidEvent(INVALID_CLOUDEVENT, "the structured CloudEvent has no specversion")
            raise InvalidEvent(
                NOT_A_CLOUDEVENT,
                "neither a binary-mode CloudEvent (no ce_specversion header) nor a structured one "
                f"(content-type {STRUCTURED}, or a JSON object with specversion)",
            )
        _check_attributes(doc)
        if "data_base64" in doc:
            raise InvalidEvent(UNSUPPORTED_CONTENT_TYPE, "data_base64: binary data is not an event object")
        _check_content_type(doc.get("datacontenttype"))
        if doc.get("data") is None:
            raise InvalidEvent(CLOUDEVENT_WITHOUT_DATA, "the CloudEvent has no data")
        attributes = {k: v for k, v in doc.items() if k != "data"}
        data = doc["data"]
    return _event(attributes, data, source)


def _headers(pairs: tuple[tuple[str, bytes | None], ...]) -> dict[str, bytes | None]:
    """The CloudEvents headers by lower-case name; one that appears twice is refused (which one would count?)."""
    out: dict[str, bytes | None] = {}
    for name, value in pairs:
        lower = name.lower()
        if not (lower.startswith(CE_PREFIX) or lower == CONTENT_TYPE):
            continue
        if lower in out:
            raise InvalidEvent(INVALID_CLOUDEVENT, f"the header {name[:64]!r} appears more than once")
        out[lower] = value
    return out


def _binary_attributes(headers: dict[str, bytes | None]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for name, raw in headers.items():
        attribute = "datacontenttype" if name == CONTENT_TYPE else name[len(CE_PREFIX) :]
        if raw is None:
            raise InvalidEvent(INVALID_CLOUDEVENT, f"the header {name[:64]!r} has no value")
        try:
            attributes[attribute] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(INVALID_CLOUDEVENT, f"the header {name[:64]!r} is not UTF-8") from None
        if attribute in ("data", "data_base64"):
            raise InvalidEvent(INVALID_CLOUDEVENT, f"the header {name[:64]!r} names no attribute (data is the value)")
    _check_attributes(attributes)
    _check_content_type(attributes.get("datacontenttype"))
    return attributes


def _binary_data(value: bytes | None, content_type: str | None, max_bytes: int) -> Any:
    if not value:
        raise InvalidEvent(
            CLOUDEVENT_WITHOUT_DATA, "the binary-mode CloudEvent has no data (the record value is empty)"
        )
    data = decode_json(value, max_bytes=max_bytes)
    if data is None:
        raise InvalidEvent(CLOUDEVENT_WITHOUT_DATA, "the binary-mode CloudEvent's data is null")
    return data


def _check_attributes(attributes: dict[str, Any]) -> None:
    """specversion first (its own code), then the schema; the first violation names the attribute."""
    version = attributes.get("specversion")
    if isinstance(version, str) and version != SPECVERSION:
        raise InvalidEvent(
            UNSUPPORTED_SPECVERSION, f"specversion {version[:20]!r} is not supported (this worker reads 1.0)"
        )
    envelope = {k: v for k, v in attributes.items() if k != "data"}
    _check_sizes(envelope)
    error = next(schemas.validator("cloudevent").iter_errors(envelope), None)
    if error is not None:
        raise InvalidEvent(INVALID_CLOUDEVENT, _describe(error, envelope))
    time = attributes.get("time")
    if time is not None:
        try:
            datetime.fromisoformat(time.replace("z", "Z").replace("t", "T"))
        except ValueError:
            raise InvalidEvent(INVALID_CLOUDEVENT, f"time {time[:40]!r} is not a valid RFC 3339 timestamp") from None


def _check_sizes(envelope: dict[str, Any]) -> None:
    """Each attribute value within ``MAX_ATTRIBUTE_BYTES``, all of them (names too) within
    ``MAX_ATTRIBUTES_BYTES``, and no control character in a string (``invalid_cloudevent``)."""
    total = 0
    for name, value in envelope.items():
        if name == "data_base64":
            continue  # never copied: refused as unsupported_content_type after the schema
        size = len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else len(str(value))
        if size > MAX_ATTRIBUTE_BYTES:
            raise InvalidEvent(
                INVALID_CLOUDEVENT, f"the attribute {name[:64]!r} is {size} bytes; the limit is {MAX_ATTRIBUTE_BYTES}"
            )
        total += len(name) + size
        if total > MAX_ATTRIBUTES_BYTES:
            raise InvalidEvent(
                INVALID_CLOUDEVENT,
                f"the attributes' names and values together exceed the limit of {MAX_ATTRIBUTES_BYTES} bytes",
            )
        if isinstance(value, str) and (bad := _CONTROL.search(value)):
            raise InvalidEvent(
                INVALID_CLOUDEVENT,
                f"the attribute {name[:64]!r} contains the control character U+{ord(bad.group()):04X} "
                "(the CloudEvents String type excludes U+0000-U+001F and U+007F-U+009F)",
            )


def _describe(error: Any, envelope: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error.path) or "the CloudEvent"
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in envelope]
        return f"missing required attribute(s): {', '.join(missing)}"
    if error.validator == "propertyNames":
        return f"attribute name {str(error.instance)[:64]!r} is not lower-case letters and digits"
    if error.validator == "pattern" and where == "time":
        return "time is not an RFC 3339 timestamp"
    if error.validator == "minLength":
        return f"{where} is empty"
    if error.validator == "type":
        return f"{where} must be of type {error.validator_value}"
    return f"{where}: {error.message}"[:400]


def _media(content_type: bytes | str | None) -> str:
    """The media type of a content type, lower case, without parameters ('' when absent or not ASCII)."""
    if content_type is None:
        return ""
    if isinstance(content_type, bytes):
        try:
            content_type = content_type.decode("ascii")
        except UnicodeDecodeError:
            return "(not ascii)"
    return content_type.split(";", 1)[0].strip().lower()


def _check_content_type(content_type: Any) -> None:
    if content_type is None:
        return
    media = _media(str(content_type))
    if media in ("application/json", "text/json") or media.endswith("+json"):
        return
    raise InvalidEvent(UNSUPPORTED_CONTENT_TYPE, f"datacontenttype {media[:100]!r}: the data must be JSON")


def _event(attributes: dict[str, Any], data: Any, source: Source) -> Event:
    event = event_from_object(data, source, what="the CloudEvent's data")
    ce_id: str = attributes["id"]
    about: dict[str, Any] = {name: attributes[name] for name in CONTEXT_ATTRIBUTES if name in attributes}
    extensions = {k: v for k, v in attributes.items() if k not in CONTEXT_ATTRIBUTES and k not in TRACE_ATTRIBUTES}
    if extensions:
        about["extensions"] = extensions
    metadata = dict(event.metadata or {})
    metadata["cloudevent"] = about
    changes: dict[str, Any] = {"metadata": metadata, "trace_context": _trace_context(attributes)}
    if event.event_id_derived and _EVENT_ID.fullmatch(ce_id):
        changes.update(event_id=ce_id, event_id_derived=False)
    return dataclasses.replace(event, **changes)


def _trace_context(attributes: dict[str, Any]) -> tuple[tuple[str, bytes], ...]:
    """The tracing extension as result headers; a malformed traceparent is dropped (never the event's fault)."""
    parent = attributes.get("traceparent")
    if not isinstance(parent, str) or not _TRACEPARENT.fullmatch(parent):
        return ()
    out = [("traceparent", parent.encode("ascii"))]
    state = attributes.get("tracestate")
    if isinstance(state, str) and state.isascii() and len(state) <= MAX_TRACE_HEADER_BYTES:
        out.append(("tracestate", state.encode("ascii")))
    return tuple(out)
