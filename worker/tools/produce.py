"""``multidentify-worker produce``: publish image events to the input topic (for demos and tests).

Sources: a JSON-lines file (``--file events.jsonl``, ``--file -`` for stdin) or a directory of images
(``--images DIR --image-base-url URL``: one event per image file). An event object without ``event_id`` gets
one (uuid4 hex); ``--group-id`` adds face groups. A line that is not a JSON object is published as it is, so
the dead-letter path can be exercised. The command waits until the broker acknowledged every record.

Other input formats (docs/event-formats.md): ``--cloudevents structured|binary`` wraps each event in a CloudEvent
1.0 (Kafka structured or binary mode; ``id`` = the event_id); ``--as-is`` publishes every line unchanged, for
S3/MinIO/COS notifications (``tests/data/events/`` holds samples).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO
from urllib.parse import quote

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from worker.config import ConfigError
from worker.tools import _kafka

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
CE_SOURCE = "/multidentify-worker/produce"
CE_TYPE = "com.github.multidentify-worker.image"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to publish. ``raw`` = the line was not a JSON object and goes out unchanged."""

    key: bytes | None
    value: bytes
    raw: bool = False
    headers: tuple[tuple[str, bytes], ...] = ()  # this record's own, after the --header ones


def as_cloudevent(rec: Outgoing, mode: str, *, source: str = CE_SOURCE, now: datetime | None = None) -> Outgoing:
    """An event record wrapped in a CloudEvent 1.0 (``mode`` structured or binary, the Kafka protocol binding):
    ``id`` = its event_id, ``data`` = the event. A raw record (not a JSON object) is left alone."""
    if rec.raw:
        return rec
    event = orjson.loads(rec.value)
    attributes = {
        "specversion": "1.0",
        "id": str(event.get("event_id") or new_event_id()),
        "source": source,
        "type": CE_TYPE,
        "time": (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if mode == "structured":
        envelope = {**attributes, "datacontenttype": "application/json", "data": event}
        return replace(rec, value=orjson.dumps(envelope), headers=(("content-type", b"application/cloudevents+json"),))
    headers = tuple((f"ce_{name}", value.encode()) for name, value in attributes.items())
    return replace(rec, headers=(*headers, ("content-type", b"application/json")))


def as_is(lines: Iterable[bytes]) -> Iterator[Outgoing]:
    """Records published as they are (notifications of S3/MinIO/COS: nothing is added to them): a text that is one
    JSON document (a pretty-printed sample) is one record, compacted; any other text, each non-blank line."""
    text_lines = [line.rstrip(b"\r\n") for line in lines]
    try:
        whole = orjson.loads(b"\n".join(text_lines))
    except orjson.JSONDecodeError:
        whole = None
    if whole is not None and len(text_lines) > 1:
        yield Outgoing(None, orjson.dumps(whole))
        return
    for text in text_lines:
        if text.strip():
            yield Outgoing(None, text)


def new_event_id() -> str:
    return uuid.uuid4().hex


def prepare(event: dict[str, Any], *, group_ids: Iterable[str] = (), key_field: str | None = None) -> Outgoing:
    """An event object → the record: ``event_id`` added when missing, ``group_ids`` extended (no duplicates;
    a non-list value is left alone), the key taken from ``key_field`` (a string as is, anything else as its
    JSON text; absent → no key)."""
    event = dict(event)
    if "event_id" not in event:
        event["event_id"] = new_event_id()
    current = event.get("group_ids")
    if current is None or isinstance(current, list):  # a malformed value stays, for the worker to refuse
        extra = [g for g in group_ids if g not in (current or [])]
        if extra:
            event["group_ids"] = [*(current or []), *extra]
    key = None
    if key_field is not None and event.get(key_field) is not None:
        field_value = event[key_field]
        key = field_value.encode() if isinstance(field_value, str) else orjson.dumps(field_value)
    return Outgoing(key, orjson.dumps(event))


def from_lines(
    lines: Iterable[bytes], *, group_ids: Iterable[str] = (), key_field: str | None = None
) -> Iterator[Outgoing]:
    """JSON lines → records. Blank lines are ignored; a line that is not a JSON object is passed through raw
    (without its line ending) so that invalid events can be produced on purpose."""
    groups = list(group_ids)
    for line in lines:
        text = line.rstrip(b"\r\n")
        if not text.strip():
            continue
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            yield prepare(doc, group_ids=groups, key_field=key_field)
        else:
            yield Outgoing(None, text, raw=True)


def from_images(
    directory: Path, base_url: str, *, group_ids: Iterable[str] = (), key_field: str | None = None
) -> Iterator[Outgoing]:
    """One event per image file of ``directory`` (by suffix, sorted by name, not recursive):
    ``image_url`` = ``base_url`` + the URL-quoted file name."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    groups = list(group_ids)
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            event = {"image_url": base + quote(path.name)}
            yield prepare(event, group_ids=groups, key_field=key_field)


@dataclass
class Report:
    sent: int = 0
    delivered: int = 0
    raw: int = 0  # records that were not JSON objects, published unchanged
    errors: list[str] = field(default_factory=list)


def publish(
    producer: Producer,
    topic: str,
    records: Iterable[Outgoing],
    *,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    timeout_s: float = 30.0,
) -> Report:
    """Produce every record and wait (at most ``timeout_s`` in all) for the acknowledgements."""
    deadline = time.monotonic() + timeout_s
    report = Report()
    errors = report.errors

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            report.delivered += 1
        elif len(errors) < 10:
            errors.append(str(err))

    for rec in records:
        while True:
            try:
                producer.produce(
                    topic,
                    value=rec.value,
                    key=rec.key,
                    headers=[*(headers or ()), *rec.headers] or None,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                if time.monotonic() >= deadline:
                    errors.append("timed out with the producer queue full")
                    return report
                producer.poll(0.1)
            except KafkaException as exc:
                errors.append(f"cannot produce: {exc}")
                return report
        report.sent += 1
        report.raw += rec.raw
        producer.poll(0)
    left = producer.flush(max(0.1, deadline - time.monotonic()))
    if left:
        errors.append(f"{left} record(s) not acknowledged within the timeout")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Publish image events to the input topic and wait until the broker acknowledged them. Event objects "
        "without event_id get one (uuid4 hex). Lines that are not JSON objects are published raw, unchanged, "
        "so you can watch them reach the dead-letter topic."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--file",
        metavar="PATH",
        help="JSON lines, one event object per line; '-' reads stdin. Non-JSON lines are published raw",
    )
    source.add_argument("--images", metavar="DIR", help="one event per image file in DIR (needs --image-base-url)")
    parser.add_argument(
        "--image-base-url", metavar="URL", help="base of image_url with --images, e.g. http://127.0.0.1:8080/"
    )
    parser.add_argument(
        "--group-id",
        dest="event_group_ids",
        action="append",
        default=[],
        metavar="ID",
        help="face group to search, added to each event's group_ids; repeatable",
    )
    parser.add_argument("--key-field", metavar="FIELD", help="use this event field as the record key")
    parser.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="header on every record; repeatable"
    )
    envelope = parser.add_mutually_exclusive_group()
    envelope.add_argument(
        "--cloudevents",
        choices=("structured", "binary"),
        help="wrap each event in a CloudEvent 1.0 (Kafka structured or binary mode; input_formats topic=cloudevents)",
    )
    envelope.add_argument(
        "--as-is",
        action="store_true",
        help="publish --file unchanged: one JSON document, or one record per line (S3/MinIO/COS notifications)",
    )
    parser.add_argument("--topic", metavar="TOPIC", help="publish here instead of the input topic")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="time allowed in all (default 30)")
    _kafka.add_connection_flags(parser)


def _stdin_lines() -> Iterator[bytes]:
    stream: BinaryIO | TextIO = getattr(sys.stdin, "buffer", sys.stdin)
    for line in stream:
        yield line.encode() if isinstance(line, str) else line


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Exit codes: 0 every record delivered, 1 some were not, 2 invalid arguments or configuration."""
    out = out or sys.stdout
    try:
        settings = _kafka.load_settings(args)
        headers: list[tuple[str, str | bytes | None]] = [
            (n, v.encode()) for n, _, v in (h.partition("=") for h in args.header)
        ]
        if any(not n for n, _ in headers):
            raise ValueError("--header needs NAME=VALUE")
        if args.images and not args.image_base_url:
            raise ValueError("--images needs --image-base-url")
        groups, key_field = args.event_group_ids, args.key_field
        if not args.topic and len(settings.input_topics) > 1:
            raise ValueError(
                f"input_topic (MDW_INPUT_TOPIC) lists several topics ({settings.input_topic}); name one with --topic"
            )
        if args.as_is and not args.file:
            raise ValueError("--as-is needs --file")
        if args.file and args.file != "-" and not Path(args.file).is_file():
            raise ValueError(f"--file {args.file!r} is not a readable file")
        if args.as_is:
            records: Iterable[Outgoing] = as_is(_stdin_lines() if args.file == "-" else _read_lines(Path(args.file)))
        elif args.images:
            directory = Path(args.images)
            if not directory.is_dir():
                raise ValueError(f"--images {args.images!r} is not a directory")
            records = from_images(directory, args.image_base_url, group_ids=groups, key_field=key_field)
        elif args.file == "-":
            records = from_lines(_stdin_lines(), group_ids=groups, key_field=key_field)
        else:
            records = from_lines(_read_lines(Path(args.file)), group_ids=groups, key_field=key_field)
        if args.cloudevents:
            mode = args.cloudevents
            records = (as_cloudevent(rec, mode) for rec in records)
    except (ValueError, ConfigError) as exc:
        print(f"produce: {exc}", file=sys.stderr)
        return 2
    topic = args.topic or settings.input_topic
    producer = Producer(_kafka.producer_config(settings))
    report = publish(producer, topic, records, headers=headers or None, timeout_s=args.timeout)
    raw = f" ({report.raw} raw, not JSON objects)" if report.raw else ""
    print(f"delivered {report.delivered} of {report.sent} record(s) to {topic}{raw}", file=out)
    for error in report.errors:
        print(f"produce: {error}", file=sys.stderr)
    return 0 if report.delivered == report.sent and not report.errors else 1


def _read_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from fh
