"""Input events in, result and dead-letter records out: parsing, validation and record building (no I/O).

The formats are the JSON Schema files of ``schemas/`` (``event``, ``result``, ``deadletter``); the parser
validates against ``event.schema.json`` and the tests validate every record built here against the others.

Invalid events are dead-lettered at once, keyed by one of these codes (``InvalidEvent.code``):

    empty_value          the value is null (tombstone) or zero bytes
    event_too_large      the value is longer than ``max_bytes`` (256 KiB by default)
    invalid_utf8         the bytes are not UTF-8
    invalid_json         UTF-8 but not JSON (incl. NaN/Infinity, a BOM, nesting deeper than 1024)
    unsupported_version  ``schema_version`` is an integer other than 1
    invalid_url          ``image_url`` is not an absolute http(s) URL with a host, has whitespace or control
                         characters, credentials, a bad port, or is longer than 2048 characters
    invalid_event        any other schema violation (the message names the field), or metadata nested
                         deeper than 16 levels

Numbers in ``metadata`` pass through as orjson reads them (integers beyond 64 bits become floats).

Header names on output records (the prefix ``mdw.`` is ours: copies of input headers with that prefix are
dropped so an input cannot spoof them): see ``H_*`` below.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import orjson
from jsonschema import ValidationError

from worker import schemas
from worker.api import codes
from worker.api.errors import ApiError, ErrorClass, meaning
from worker.api.models import Api, Candidate, IdentifyResult

TopicPartition = tuple[str, int]
Headers = tuple[tuple[str, bytes | None], ...]
ImageMode = Literal["url", "image"]

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 256 * 1024  # keeps results with pass-through metadata well under the 1 MB message limit
MAX_METADATA_DEPTH = 16
MAX_URL_CHARS = 2048  # image_url's maxLength in schemas/event.schema.json; URLs built from notifications too
MAX_MESSAGE_CHARS = 500  # error messages in envelopes and logs
MAX_ORIGINAL_BYTES = 512 * 1024  # base64 grows it to ~683 KiB: the envelope still fits a 1 MB message
# The original key and headers are copied twice (envelope and record headers); beyond these budgets they are
# left out, or a hostile record could make a dead letter the broker refuses and stall its partition.
MAX_ORIGINAL_KEY_BYTES = 64 * 1024
MAX_ORIGINAL_HEADER_BYTES = 32 * 1024
MAX_TRACE_HEADER_BYTES = 512  # a traceparent is 55 bytes; tracestate is capped at 512 characters by W3C
TOP_CANDIDATES = 5

# Invalid-event codes: dead-letter keys of events refused before any API call.
EMPTY_VALUE = "empty_value"
EVENT_TOO_LARGE = "event_too_large"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
UNSUPPORTED_VERSION = "unsupported_version"
INVALID_URL = "invalid_url"
INVALID_EVENT = "invalid_event"
INVALID_CODES = codes.INVALID_CODES  # the registry's event keys (their meanings live there too)
# The dead-letter key of an event whose result the broker refused for its size (worker.runtime.outputs).
RESULT_TOO_LARGE = "result_too_large"

# Error classes of a dead letter: the API's transient/permanent, plus "invalid" for refused events.
# Config errors never reach the DLQ (the worker stops), so they are not accepted here.
INVALID_CLASS = "invalid"
DEAD_LETTER_CLASSES = frozenset({ErrorClass.TRANSIENT.value, ErrorClass.PERMANENT.value, INVALID_CLASS})
_DISPOSITION = {"transient": "retries_exhausted", "permanent": "terminal", "invalid": "rejected"}

HEADER_PREFIX = "mdw."
H_ORIGINAL_TOPIC = "mdw.original.topic"
H_ORIGINAL_PARTITION = "mdw.original.partition"
H_ORIGINAL_OFFSET = "mdw.original.offset"
H_ORIGINAL_TIMESTAMP = "mdw.original.timestamp"  # ms since the epoch, absent when the input had none
H_ORIGINAL_KEY = "mdw.original.key"  # raw key bytes, absent when the input had no key
H_ERROR_CODE = "mdw.error.code"
H_ERROR_CLASS = "mdw.error.class"
H_WORKER_VERSION = "mdw.worker.version"
H_REPLAY_COUNT = "mdw.replay.count"  # decimal ASCII; replay writes n+1 on the input record
TRACE_HEADERS = ("traceparent", "tracestate")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidEvent(Exception):
    """An event refused before any API call; ``code`` (one of ``INVALID_CODES``) is its dead-letter key."""

    def __init__(self, code: str, message: str) -> None:
        message = _truncate(message)
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message

    def __reduce__(self):  # type: ignore[no-untyped-def]  # picklable with both arguments (hypothesis, pools)
        return (InvalidEvent, (self.code, self.message))


class KafkaMessage(Protocol):
    """The part of ``confluent_kafka.Message`` that :meth:`Source.from_message` reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def key(self) -> str | bytes | None: ...
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


@dataclass(frozen=True, slots=True)
class Source:
    """Coordinates and envelope of one consumed input record (everything except its value)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    key: bytes | None = None
    headers: Headers = ()

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)

    @property
    def derived_event_id(self) -> str:
        """``{topic}-{partition}-{offset}``: the event id of an event that carries none."""
        return f"{self.topic}-{self.partition}-{self.offset}"

    @classmethod
    def from_message(cls, msg: KafkaMessage) -> Source:
        """Build from a consumed confluent-kafka message (timestamp type 0 = not available → None)."""
        ts_type, ts = msg.timestamp()
        key = msg.key()
        return cls(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            timestamp_ms=ts if ts_type != 0 and ts >= 0 else None,
            key=key.encode() if isinstance(key, str) else key,
            headers=tuple((name, value) for name, value in (msg.headers() or ())),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """A valid input event. ``event_id_derived`` says the id came from the coordinates, not the producer."""

    event_id: str
    image_url: str
    group_ids: tuple[str, ...] | None = None
    session_id: str | None = None
    metadata: dict[str, Any] | None = None
    event_id_derived: bool = False
    # W3C trace context the input carried inside its value (a CloudEvent's distributed-tracing extension):
    # results carry it when the record has no ``traceparent`` header of its own (:func:`result_headers`).
    trace_context: tuple[tuple[str, bytes], ...] = ()


def parse_event(value: bytes | None, source: Source, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Parse and validate one input value; raise :class:`InvalidEvent` (and nothing else) when it is refused."""
    return event_from_object(decode_json(value, max_bytes=max_bytes), source)


def decode_json(value: bytes | None, *, max_bytes: int = MAX_EVENT_BYTES) -> Any:
    """The JSON document a record value holds; :class:`InvalidEvent` (``empty_value``, ``event_too_large``,
    ``invalid_utf8``, ``invalid_json``) when it holds none. Every input format starts here."""
    if value is None:
        raise InvalidEvent(EMPTY_VALUE, "the record value is null (tombstone)")
    if not value:
        raise InvalidEvent(EMPTY_VALUE, "the record value is empty")
    if len(value) > max_bytes:
        raise InvalidEvent(EVENT_TOO_LARGE, f"the value is {len(value)} bytes, the limit is {max_bytes}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise InvalidEvent(INVALID_UTF8, f"the value is not UTF-8 (byte {uexc.start})") from None
        raise InvalidEvent(INVALID_JSON, f"the value is not JSON: {exc}") from None


def event_from_object(doc: Any, source: Source, *, what: str = "the event") -> Event:
    """Validate one decoded event object (schemas/event.schema.json) and build the :class:`Event`.

    ``what`` names the object in messages (a CloudEvent's data is "the CloudEvent's data").
    """
    if not isinstance(doc, dict):
        raise InvalidEvent(INVALID_EVENT, f"{what} must be a JSON object, not {_json_type(doc)}")

    version = doc.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        raise InvalidEvent(UNSUPPORTED_VERSION, f"schema_version {version} is not supported (this worker reads 1)")

    # The first error is enough for the dead letter, and stopping there bounds the work on hostile input.
    error = next(schemas.validator("event").iter_errors(doc), None)
    if error is not None:
        raise InvalidEvent(*_describe(error, doc))

    image_url: str = doc["image_url"]
    check_url(image_url)
    metadata = doc.get("metadata")
    if metadata is not None and _depth(metadata) > MAX_METADATA_DEPTH:
        raise InvalidEvent(INVALID_EVENT, f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")

    event_id = doc.get("event_id")
    group_ids = doc.get("group_ids")
    return Event(
        event_id=event_id if event_id is not None else source.derived_event_id,
        image_url=image_url,
        group_ids=tuple(group_ids) if group_ids is not None else None,
        session_id=doc.get("session_id"),
        metadata=metadata,
        event_id_derived=event_id is None,
    )


def check_url(url: str) -> None:
    """Refuse (``invalid_url``) an image URL the worker may not use: see the module docstring."""
    if len(url) > MAX_URL_CHARS:
        # The schema caps an event's own URL; one built from a notification (a percent-encoded key or region
        # grows threefold) or taken from it is held to the same cap, so a result stays far below 1 MB.
        raise InvalidEvent(INVALID_URL, f"image_url is {len(url)} characters; the limit is {MAX_URL_CHARS}")
    if _CONTROL.search(url):
        raise InvalidEvent(INVALID_URL, "image_url contains control characters")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0  # .port raises ValueError for junk or out-of-range ports
    except ValueError as exc:
        raise InvalidEvent(INVALID_URL, f"image_url is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidEvent(INVALID_URL, "image_url must be an http or https URL")
    if not parts.hostname:
        raise InvalidEvent(INVALID_URL, "image_url has no host")
    if not port_ok:
        raise InvalidEvent(INVALID_URL, "image_url has port 0")
    if "@" in parts.netloc:
        # Credentials would be echoed into results, dead letters and logs.
        raise InvalidEvent(INVALID_URL, "image_url must not carry credentials (user:password@)")


def _depth(node: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0, ``{}`` is 1); iterative, orjson already capped it at 1024."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _describe(error: ValidationError, doc: dict[str, Any]) -> tuple[str, str]:
    """(code, message) for a schema violation; messages name the field and never echo long values."""
    path = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(error.path))
    field = path or "event"
    rule, expected = error.validator, error.validator_value
    code = INVALID_URL if path == "image_url" and rule != "type" else INVALID_EVENT
    if rule == "required":
        missing = [name for name in expected if name not in doc]
        return code, f"missing required field: {', '.join(missing)}"
    if rule == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        extra = sorted(repr(name) for name in doc if name not in known)
        return code, f"unknown field(s): {', '.join(extra)}"
    if rule == "type":
        return code, f"{field} must be of type {expected}, not {_json_type(error.instance)}"
    if rule == "maxLength":
        return code, f"{field} is longer than {expected} characters"
    if rule == "minLength":
        return code, f"{field} is empty"
    if rule == "maxItems":
        return code, f"{field} has more than {expected} items"
    if rule == "minItems":
        return code, f"{field} is empty"
    if rule == "pattern" and path == "image_url":
        return code, "image_url must be an http:// or https:// URL without whitespace"
    if rule == "pattern":
        return code, f"{field} contains a forbidden character (whitespace, control character or '/')"
    if rule == "const":
        return code, f"{field} must be {expected!r}"
    return code, f"{field}: {error.message}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rfc3339_ms(epoch_ms: int) -> str:
    """``2024-05-01T12:00:00.000Z`` for milliseconds since the epoch (UTC, exact: no float rounding)."""
    instant = _EPOCH + timedelta(milliseconds=epoch_ms)
    return f"{instant:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _source_json(source: Source) -> dict[str, Any]:
    return {
        "topic": source.topic,
        "partition": source.partition,
        "offset": source.offset,
        "timestamp_ms": source.timestamp_ms,
    }


def _candidate_json(candidate: Candidate) -> dict[str, Any]:
    out: dict[str, Any] = {
        "person_id": candidate.person_id,
        "face_id": candidate.face_id,
        "confidence": candidate.confidence,
        "tag": candidate.tag,
    }
    if candidate.person_name is not None:
        out["person_name"] = candidate.person_name
    return out


def build_result(
    event: Event,
    result: IdentifyResult,
    *,
    source: Source,
    attempts: int,
    api_latency_ms: float,
    worker_version: str,
    processed_at_ms: int,
    image_mode: ImageMode,
    worker_instance: str | None = None,
) -> bytes:
    """The result record value (schemas/result.schema.json): every face with its candidates, best first (v1: the
    top 5; IAI: the ``MaxPersonNum`` the request asked for), and the API that answered (``api.name``)."""
    keep = TOP_CANDIDATES if result.api is Api.V1 else None
    faces = []
    for face in result.faces:
        # Stable sort: the service's order is kept among equal confidences and when it already sorts.
        ranked = sorted(face.candidates, key=lambda c: -c.confidence)[:keep]
        candidates = [_candidate_json(c) for c in ranked]
        entry: dict[str, Any] = {
            "face_rect": {
                "x": face.rect.x,
                "y": face.rect.y,
                "width": face.rect.width,
                "height": face.rect.height,
            },
            "candidates": candidates,
            "best_match": candidates[0] if candidates else None,
        }
        if face.ret_code is not None:  # IAI: 0, or -1601 for a face kept without candidates (quality check)
            entry["ret_code"] = face.ret_code
        faces.append(entry)
    record = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event.event_id,
        "image_url": event.image_url,
        "session_id": event.session_id,
        "group_ids": list(event.group_ids) if event.group_ids is not None else None,
        "face_count": len(faces),
        "faces": faces,
        "metadata": event.metadata,
        "api": {
            "name": result.api.value,
            "latency_ms": api_latency_ms,
            "attempts": attempts,
            "session_id": result.request_id,
            "http_status": result.http_status,
            "image_mode": image_mode,
        },
        "source": _source_json(source),
        "worker": _worker_json(worker_version, worker_instance),
        "processed_at_ms": processed_at_ms,
        "processed_at": rfc3339_ms(processed_at_ms),
    }
    return orjson.dumps(record)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an event is dead-lettered. ``error_class`` is ``transient``, ``permanent`` or ``invalid``.

    ``code`` is the dead-letter key; ``message`` must not contain secrets (it is truncated, not scrubbed);
    times are milliseconds since the epoch; ``attempts`` counts API calls (0 for an invalid event).
    """

    code: str
    error_class: str
    message: str
    http_status: int | None
    attempts: int
    first_failure_ms: int
    last_failure_ms: int

    def __post_init__(self) -> None:
        if self.error_class not in DEAD_LETTER_CLASSES:
            raise ValueError(f"error class {self.error_class!r} is never dead-lettered")
        if not 0 < len(self.code) <= 64:
            raise ValueError(f"dead-letter code must be 1..64 characters: {self.code!r}")

    @classmethod
    def from_api_error(
        cls, error: ApiError, *, attempts: int, first_failure_ms: int, last_failure_ms: int
    ) -> ErrorInfo:
        return cls(
            code=error.code,
            error_class=error.error_class.value,
            message=error.message,
            http_status=error.http_status,
            attempts=attempts,
            first_failure_ms=first_failure_ms,
            last_failure_ms=last_failure_ms,
        )

    @classmethod
    def from_invalid(cls, error: InvalidEvent, *, at_ms: int) -> ErrorInfo:
        return cls(error.code, INVALID_CLASS, error.message, None, 0, at_ms, at_ms)


def _worker_json(version: str, instance: str | None) -> dict[str, str]:
    return {"version": version} if instance is None else {"version": version, "instance": instance[:300]}


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def build_dead_letter(
    raw_value: bytes | None,
    *,
    event_id: str | None,
    error: ErrorInfo,
    source: Source,
    worker_version: str,
    dead_lettered_at_ms: int | None = None,
    replay_count: int = 0,
    consumer_group: str | None = None,
    max_original_bytes: int = MAX_ORIGINAL_BYTES,
    worker_instance: str | None = None,
    api: Api | None = None,
) -> bytes:
    """The dead-letter envelope (schemas/deadletter.schema.json) with the original value byte-for-byte.

    ``api``: the face API the worker calls, which says how to read ``error.code`` (left out when None).

    ``dead_lettered_at_ms`` defaults to the error's last failure time (the record is built right after it).
    A value longer than ``max_original_bytes`` is not embedded (``value_omitted``): the envelope must fit the
    broker's message limit or the event could never be dead-lettered and its partition would stall.
    """
    omitted = raw_value is not None and len(raw_value) > max_original_bytes
    key_omitted = source.key is not None and len(source.key) > MAX_ORIGINAL_KEY_BYTES
    headers, headers_omitted = original_headers(source)
    last_failure_ms = max(error.first_failure_ms, error.last_failure_ms)  # wall clocks step back now and then
    at_ms = dead_lettered_at_ms if dead_lettered_at_ms is not None else last_failure_ms
    envelope = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "error": {
            "code": error.code,
            "class": error.error_class,
            "disposition": _DISPOSITION[error.error_class],
            "meaning": _truncate(meaning(error.code), 200),
            "message": _truncate(error.message),
            "http_status": error.http_status,
            "attempts": error.attempts,
            "first_failure_ms": error.first_failure_ms,
            "last_failure_ms": last_failure_ms,
        },
        "original": {
            "value_base64": None if omitted else _b64(raw_value),
            "value_size": None if raw_value is None else len(raw_value),
            "value_omitted": omitted,
            "key_base64": None if key_omitted else _b64(source.key),
            "key_omitted": key_omitted,
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "timestamp_ms": source.timestamp_ms,
            "headers": [[name, _b64(value)] for name, value in headers],
            "headers_omitted": headers_omitted,
        },
        "worker": {
            **_worker_json(worker_version, worker_instance),
            "consumer_group": consumer_group,
            **({} if api is None else {"api": api.value}),
        },
        "replay_count": replay_count,
        "dead_lettered_at_ms": at_ms,
        "dead_lettered_at": rfc3339_ms(at_ms),
    }
    return orjson.dumps(envelope)


def original_headers(source: Source) -> tuple[list[tuple[str, bytes | None]], bool]:
    """The input headers a dead letter carries, and whether some were left out.

    All of them while they fit ``MAX_ORIGINAL_HEADER_BYTES``; beyond that only the trace context (so a replay
    still links to the original trace).
    """
    size = sum(len(name) + len(value or b"") for name, value in source.headers)
    if size <= MAX_ORIGINAL_HEADER_BYTES:
        return list(source.headers), False
    kept = [(n, v) for n, v in source.headers if n.lower() in TRACE_HEADERS and len(v or b"") <= MAX_TRACE_HEADER_BYTES]
    return kept, True


def dead_letter_key(code: str) -> bytes:
    """The dead-letter record key: the error code as UTF-8 (``b"-1308"``, ``b"invalid_json"``)."""
    return code.encode("utf-8")


def _ours(name: str) -> bool:
    return name.lower().startswith(HEADER_PREFIX)


def dead_letter_headers(
    source: Source, error: ErrorInfo, worker_version: str, replay_count: int
) -> list[tuple[str, bytes | None]]:
    """Headers of a dead-letter record: the input's headers (minus any ``mdw.*``) followed by ours.

    ``replay_count`` is the input's count (:func:`replay_count`); the replay tool writes count + 1.
    """
    copied, _ = original_headers(source)
    headers: list[tuple[str, bytes | None]] = [(n, v) for n, v in copied if not _ours(n)]
    headers += [
        (H_ORIGINAL_TOPIC, source.topic.encode()),
        (H_ORIGINAL_PARTITION, str(source.partition).encode()),
        (H_ORIGINAL_OFFSET, str(source.offset).encode()),
    ]
    if source.timestamp_ms is not None:
        headers.append((H_ORIGINAL_TIMESTAMP, str(source.timestamp_ms).encode()))
    if source.key is not None and len(source.key) <= MAX_ORIGINAL_KEY_BYTES:
        headers.append((H_ORIGINAL_KEY, source.key))
    headers += [
        (H_ERROR_CODE, error.code.encode()),
        (H_ERROR_CLASS, error.error_class.encode()),
        (H_WORKER_VERSION, worker_version.encode()),
        (H_REPLAY_COUNT, str(max(0, replay_count)).encode()),
    ]
    return headers


def replay_count(headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None]) -> int:
    """The ``mdw.replay.count`` header as an int (the last one wins); 0 when absent or garbled."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    count = 0
    for name, value in pairs:
        if name.lower() == H_REPLAY_COUNT:
            text = value.strip() if value is not None else b""
            count = int(text) if text.isdigit() and len(text) <= 9 else 0
    return count


def result_headers(source: Source, event: Event | None = None) -> list[tuple[str, bytes]]:
    """Headers of a result record: the input's W3C trace context (``traceparent``, ``tracestate``).

    The record's own headers win; without a ``traceparent`` header the event's ``trace_context`` (a CloudEvent's
    tracing extension) is used, so a trace started by a camera still reaches the result.
    """
    own = [
        (n.lower(), v)
        for n, v in source.headers
        if v is not None and n.lower() in TRACE_HEADERS and len(v) <= MAX_TRACE_HEADER_BYTES
    ]
    if event is None or not event.trace_context or any(n == "traceparent" for n, _ in own):
        return own
    return list(event.trace_context)
