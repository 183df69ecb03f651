"""Input formats: which parser reads which input topic (pure: bytes + headers in, ``Event`` or ``InvalidEvent``).

    event        the worker's own event (schemas/event.schema.json), worker.core.records.parse_event
    cloudevents  CloudEvents 1.0, Kafka binary or structured mode, data = an event (formats.cloudevent)
    s3           Amazon S3 / MinIO bucket notifications, image URL from a template (formats.s3)
    cos          Tencent COS event notifications, image URL from cosObject.url or a template (formats.cos)

Settings (worker.config, Kafka section; validated at start by :func:`inputs_from_settings`):

    input_topic         one topic or a comma-separated list, every one consumed
    input_formats       ``topic=format,…`` for the topics that are not in the event format
    image_url_template  ``https://host/{bucket}/{key}`` for every s3/cos topic, or whitespace-separated
                        ``topic=TEMPLATE`` entries (an entry without ``topic=`` is the default)

:meth:`Inputs.parse` is the pipeline's one call: the record's topic picks the parser. Every refusal is an
``InvalidEvent`` whose code is in the registry (worker.api.codes, origin ``event``); docs/event-formats.md lists
them with what each format carries into the event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from worker.core.formats import cloudevent, cos, objects, s3
from worker.core.records import MAX_EVENT_BYTES, Event, Source, parse_event

Format = Literal["event", "cloudevents", "s3", "cos"]
FORMATS: tuple[Format, ...] = get_args(Format)
#: Formats whose image URL is built from a template (cos may use the URL it carries instead).
TEMPLATE_FORMATS: frozenset[str] = frozenset({"s3", "cos"})
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class TopicInput:
    """How one input topic is read."""

    format: Format = "event"
    image_url_template: str | None = None  # s3 (required) and cos (optional)
    max_object_bytes: int | None = None  # s3/cos: a larger object is refused (object_too_large)


EVENT_INPUT = TopicInput()


@dataclass(frozen=True, slots=True)
class Inputs:
    """Every consumed topic and its format; a topic not listed reads the event format."""

    by_topic: Mapping[str, TopicInput] = field(default_factory=dict)
    max_event_bytes: int = MAX_EVENT_BYTES

    def parse(self, value: bytes | None, source: Source) -> Event:
        """The record's event, by its topic's format; raises ``InvalidEvent`` and nothing else when refused."""
        spec = self.by_topic.get(source.topic, EVENT_INPUT)
        if spec.format == "cloudevents":
            return cloudevent.parse(value, source, max_bytes=self.max_event_bytes)
        if spec.format == "s3":
            assert spec.image_url_template is not None  # inputs_from_settings refuses an s3 topic without one
            return s3.parse(
                value,
                source,
                template=spec.image_url_template,
                max_object_bytes=spec.max_object_bytes,
                max_bytes=self.max_event_bytes,
            )
        if spec.format == "cos":
            return cos.parse(
                value,
                source,
                template=spec.image_url_template,
                max_object_bytes=spec.max_object_bytes,
                max_bytes=self.max_event_bytes,
            )
        return parse_event(value, source, max_bytes=self.max_event_bytes)

    def format_of(self, topic: str) -> Format:
        return self.by_topic.get(topic, EVENT_INPUT).format


# -- settings -------------------------------------------------------------------------------------------------


def split_topics(text: str) -> tuple[str, ...]:
    """``input_topic`` → its topics (comma-separated, blanks around names ignored)."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def topics_problem(text: str) -> str | None:
    """Why ``input_topic`` is not a valid topic list (None when it is)."""
    topics = split_topics(text)
    if not topics:
        return "name at least one topic"
    bad = [t for t in topics if not _TOPIC.match(t)]
    if bad:
        return f"topic names use letters, digits, '.', '_' and '-' (1–249 characters): {bad[0]!r}"
    if len(set(topics)) != len(topics):
        return "a topic is listed twice"
    return None


def parse_formats(entries: Sequence[str]) -> dict[str, Format]:
    """``input_formats`` entries (``topic=format``) → topic → format; ValueError names the bad entry."""
    out: dict[str, Format] = {}
    for entry in entries:
        topic, sep, name = (part.strip() for part in entry.partition("="))
        if not sep or not topic or not name:
            raise ValueError(f"{entry!r} is not topic=format")
        if not _TOPIC.match(topic):
            raise ValueError(f"{topic!r} is not a topic name")
        fmt = name.lower()
        if fmt not in FORMATS:
            raise ValueError(f"{topic}: unknown format {name!r}; known: {', '.join(FORMATS)}")
        if topic in out:
            raise ValueError(f"{topic} is given a format twice")
        out[topic] = fmt  # type: ignore[assignment]  # checked against FORMATS above
    return out


def parse_templates(text: str) -> tuple[str | None, dict[str, str]]:
    """``image_url_template`` → (the default template, topic → template); ValueError names the bad entry.

    Entries are separated by whitespace (a URL holds none); an entry that starts with ``http://`` or ``https://``
    is the default, any other is ``topic=TEMPLATE``.
    """
    default: str | None = None
    per_topic: dict[str, str] = {}
    for entry in text.split():
        if re.match(r"^[Hh][Tt][Tt][Pp][Ss]?://", entry):
            if default is not None:
                raise ValueError("two default templates (entries without topic=)")
            default = entry
            continue
        topic, sep, template = entry.partition("=")
        if not sep or not _TOPIC.match(topic):
            raise ValueError(f"{entry[:80]!r} is neither an http(s) template nor topic=TEMPLATE")
        if topic in per_topic:
            raise ValueError(f"{topic} is given a template twice")
        per_topic[topic] = template
    for template in [*([default] if default else []), *per_topic.values()]:
        problem = objects.template_problem(template)
        if problem:
            raise ValueError(f"{template[:120]!r}: {problem}")
    return default, per_topic


def inputs_from_settings(
    input_topic: str,
    input_formats: Sequence[str],
    image_url_template: str,
    *,
    max_object_bytes: int | None,
) -> Inputs:
    """The checked inputs of the settings; ValueError names the settings to fix (the worker stops at start)."""
    problem = topics_problem(input_topic)
    if problem:
        raise ValueError(f"input_topic (MDW_INPUT_TOPIC): {problem}")
    topics = split_topics(input_topic)
    try:
        formats = parse_formats(input_formats)
    except ValueError as exc:
        raise ValueError(f"input_formats (MDW_INPUT_FORMATS): {exc}") from None
    try:
        default, per_topic = parse_templates(image_url_template)
    except ValueError as exc:
        raise ValueError(f"image_url_template (MDW_IMAGE_URL_TEMPLATE): {exc}") from None
    for topic in formats:
        if topic not in topics:
            raise ValueError(
                f"input_formats (MDW_INPUT_FORMATS) names {topic!r}, which input_topic (MDW_INPUT_TOPIC) does not "
                f"consume ({', '.join(topics)})"
            )
    for topic in per_topic:
        if formats.get(topic) not in TEMPLATE_FORMATS:
            raise ValueError(
                f"image_url_template (MDW_IMAGE_URL_TEMPLATE) names {topic!r}, which is not an s3 or cos topic of "
                "input_formats (MDW_INPUT_FORMATS)"
            )
    by_topic: dict[str, TopicInput] = {}
    for topic in topics:
        fmt = formats.get(topic, "event")
        template = per_topic.get(topic, default) if fmt in TEMPLATE_FORMATS else None
        if fmt == "s3" and template is None:
            raise ValueError(
                f"image_url_template (MDW_IMAGE_URL_TEMPLATE): the s3 topic {topic!r} needs one to build image URLs, "
                "e.g. https://minio.example:9000/{bucket}/{key}"
            )
        by_topic[topic] = TopicInput(fmt, template, max_object_bytes if fmt in TEMPLATE_FORMATS else None)
    return Inputs(by_topic)


__all__ = [
    "EVENT_INPUT",
    "FORMATS",
    "Format",
    "Inputs",
    "TopicInput",
    "inputs_from_settings",
    "parse_formats",
    "parse_templates",
    "split_topics",
    "topics_problem",
]
