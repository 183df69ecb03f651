"""``multidentify-worker tail results|dlq``: follow the results or the dead-letter topic, one line per record.

It reads every partition by assignment (no consumer group, nothing committed). By default it starts at the
end offsets (right on Tansu too, see :func:`worker.tools._kafka.end_offsets`) and shows only new records.

``--annotate DIR`` (results only) also fetches each result's image from its ``image_url`` (http(s) only, a bounded
time and size), draws its faces (box, name and confidence; strangers marked) into ``DIR/<event_id>.jpg`` and keeps
``DIR/index.html`` up to date (:mod:`worker.dev.gallery`, which needs Pillow: the ``emulator`` extra). An image
that cannot be fetched or drawn is reported on stderr and skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from worker.api.errors import meaning
from worker.config import ConfigError
from worker.tools import _kafka

KINDS = ("results", "dlq")


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _confidence(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def format_result(doc: dict[str, Any]) -> str:
    """``event_id  faces=N  best: person_id (confidence) …`` (one entry per face; ``-`` = no candidate)."""
    raw_faces = doc.get("faces")
    faces: list[Any] = raw_faces if isinstance(raw_faces, list) else []
    count = doc.get("face_count", len(faces))
    line = f"{doc.get('event_id', '-')}  faces={count}"
    best = []
    for face in faces:
        match = face.get("best_match") if isinstance(face, dict) else None
        if isinstance(match, dict):
            best.append(f"{match.get('person_id', '?')} ({_confidence(match.get('confidence'))})")
        else:
            best.append("-")
    return f"{line}  best: {' '.join(best)}" if best else line


def format_dead_letter(doc: dict[str, Any], key: bytes | None = None) -> str:
    """``event_id  code=…  meaning  message (attempts=N)``; the code falls back to the record key."""
    raw_error = doc.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    code = error.get("code") or (key.decode("utf-8", "replace") if key is not None else "?")
    explained = error.get("meaning") or meaning(str(code))
    message = _one_line(str(error.get("message", "")))
    return f"{doc.get('event_id') or '-'}  code={code}  {explained}  {message} (attempts={error.get('attempts', '?')})"


def format_record(kind: str, value: bytes | None, key: bytes | None, where: str) -> str:
    """The line for one record of ``kind`` (``results`` or ``dlq``); a value that is not a JSON object is shown
    as unreadable with its coordinates ``where``."""
    try:
        doc = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        shown = "null" if value is None else repr(value[:80])
        return f"?  unreadable record at {where}: {shown}"
    return format_result(doc) if kind == "results" else format_dead_letter(doc, key)


class Annotator(Protocol):
    def __call__(self, value: bytes | None) -> str | None: ...


def annotator(folder: Path) -> Annotator:
    """What ``--annotate`` does with each result record: draw it into ``folder``; returns a reason it could not
    (printed, then skipped) or None. Raises ImportError without the ``emulator`` extra."""
    from worker.dev.gallery import FetchError, Gallery, faces_of, fetch_image, threshold_for
    from worker.emulator.faces import ImageError

    gallery = Gallery(folder, title="multidentify-worker tail results")

    def draw(value: bytes | None) -> str | None:
        try:
            doc = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("image_url"), str):
            return "not a result record with an image_url"
        event_id = str(doc.get("event_id") or "-")
        try:
            image = fetch_image(doc["image_url"])
            gallery.add(event_id, image, faces_of(doc), threshold_for(doc), title=f"{event_id}: {doc['image_url']}")
        except (FetchError, ImageError, OSError) as exc:
            return f"{event_id}: {exc}"
        return None

    return draw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Follow the results or the dead-letter topic and print one readable line per record."
    parser.add_argument("kind", choices=KINDS, help="which topic to follow (names from the settings)")
    parser.add_argument("--topic", metavar="TOPIC", help="follow this topic instead (formatted as KIND)")
    parser.add_argument("--json", action="store_true", help="print each record's raw value instead")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record (default: only new records)"
    )
    parser.add_argument("--max", type=int, metavar="N", help="exit after N records")
    parser.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="results only: fetch each result's image and draw its faces into DIR/<event_id>.jpg and DIR/index.html",
    )
    parser.add_argument(
        "--timeout", type=float, default=0.0, metavar="S", help="exit after S seconds without a record (0: never)"
    )
    _kafka.add_connection_flags(parser)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Exit codes: 0 (--max reached, idle --timeout, or Ctrl-C), 1 the topic cannot be read, 2 bad arguments."""
    out = out or sys.stdout
    try:
        settings = _kafka.load_settings(args)
        if (args.max is not None and args.max < 1) or args.timeout < 0:
            raise ValueError("--max must be ≥ 1 and --timeout ≥ 0")
        if args.annotate is not None and args.kind != "results":
            raise ValueError("--annotate draws results: use it with `tail results`")
        draw = annotator(args.annotate) if args.annotate is not None else None
    except ImportError as exc:
        print(f"tail: --annotate needs Pillow: pip install 'multidentify-worker[emulator]' ({exc})", file=sys.stderr)
        return 2
    except (ValueError, ConfigError) as exc:
        print(f"tail: {exc}", file=sys.stderr)
        return 2
    topic = args.topic or (settings.results_topic if args.kind == "results" else settings.dlq_topic)
    conf = _kafka.consumer_config(settings)
    consumer = Consumer(conf)
    try:
        partitions = _kafka.partitions_of(consumer, topic, 10.0)
        if args.from_beginning:
            starts = {p: OFFSET_BEGINNING for p in partitions}
        else:
            starts = {p: high for p, (_, high) in _kafka.end_offsets(conf, topic, partitions, 10.0).items()}
        consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
        shown = _follow(consumer, args, out, draw)
    except _kafka.ToolError as exc:
        print(f"tail: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
    print(f"tail: {shown} record(s)", file=sys.stderr)
    return 0


def _follow(consumer: Consumer, args: argparse.Namespace, out: TextIO, draw: Annotator | None = None) -> int:
    shown = 0
    last = time.monotonic()
    while args.max is None or shown < args.max:
        if args.timeout and time.monotonic() - last >= args.timeout:
            break
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                print(f"tail: {err}", file=sys.stderr)
            continue
        last = time.monotonic()
        print(_line(msg, args), file=out, flush=True)
        shown += 1
        if draw is not None:
            raw = msg.value()
            failed = draw(raw.encode() if isinstance(raw, str) else raw)
            if failed:
                print(f"tail: not annotated: {failed}", file=sys.stderr, flush=True)
    return shown


def _line(msg: Message, args: argparse.Namespace) -> str:
    raw, key = msg.value(), msg.key()
    value = raw.encode() if isinstance(raw, str) else raw
    if args.json:
        return "null" if value is None else value.decode("utf-8", "replace")
    key_bytes = key.encode() if isinstance(key, str) else key
    return format_record(args.kind, value, key_bytes, f"{msg.topic()}/{msg.partition()}/{msg.offset()}")
