"""Input formats (worker.core.formats): CloudEvents 1.0, S3/MinIO and COS notifications, and the settings that
choose a format per topic. Every dead-letter code of origin ``event`` is produced here by a concrete record, and
the CloudEvents SDK's own Kafka binding writes records the parser must read."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.jsonfuzz import JSON, corrupted
from worker import config, schemas
from worker.api import codes
from worker.core import formats
from worker.core.formats import cloudevent, cos, objects, s3
from worker.core.records import (
    MAX_MESSAGE_CHARS,
    Event,
    InvalidEvent,
    Source,
    build_result,
    result_headers,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "events"
TEMPLATE = "https://minio.example:9000/{bucket}/{key}"
LIMIT = 1_500_000
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EVENT = {"image_url": "https://img.example.com/a.jpg", "group_ids": ["staff"], "metadata": {"camera": "gate-3"}}

INPUTS = formats.Inputs(
    {
        "plain": formats.TopicInput("event"),
        "ce": formats.TopicInput("cloudevents"),
        "s3": formats.TopicInput("s3", TEMPLATE, LIMIT),
        "cos": formats.TopicInput("cos", None, LIMIT),
        "cos-cdn": formats.TopicInput("cos", "https://cdn.example.com/{region}/{bucket}/{key}", LIMIT),
    }
)


def src(topic: str, headers: tuple[tuple[str, bytes | None], ...] = ()) -> Source:
    return Source(topic, 2, 40, 1_700_000_000_000, None, headers)


def sample(name: str) -> dict[str, Any]:
    doc = orjson.loads((DATA / name).read_bytes())
    assert isinstance(doc, dict)
    return doc


def parse(topic: str, value: bytes | None, headers: tuple[tuple[str, bytes | None], ...] = ()) -> Event:
    return INPUTS.parse(value, src(topic, headers))


def code_of(topic: str, value: bytes | None, headers: tuple[tuple[str, bytes | None], ...] = ()) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse(topic, value, headers)
    assert len(info.value.message) <= MAX_MESSAGE_CHARS
    return info.value.code


def structured(**attributes: Any) -> bytes:
    doc = {"specversion": "1.0", "id": "ev-1", "source": "/cameras/gate-3", "type": "camera.image", "data": EVENT}
    doc.update(attributes)
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


CT_STRUCTURED = (("content-type", b"application/cloudevents+json"),)


def binary_headers(**attributes: str | None) -> tuple[tuple[str, bytes | None], ...]:
    attrs: dict[str, str | None] = {"specversion": "1.0", "id": "ev-1", "source": "/cameras/gate-3", "type": "t"}
    attrs.update(attributes)
    return tuple((f"ce_{k}", v.encode()) for k, v in attrs.items() if v is not None)


# -- CloudEvents ------------------------------------------------------------------------------------------------


def test_structured_sample_maps_attributes_into_the_event() -> None:
    value = (DATA / "cloudevent-structured.json").read_bytes()
    event = parse("ce", value, CT_STRUCTURED)
    assert event.event_id == "gate3-000042" and not event.event_id_derived
    assert event.image_url == "https://images.example.com/gate3/000042.jpg"
    assert event.group_ids == ("staff",)
    assert event.metadata == {
        "camera": "gate-3",
        "cloudevent": {
            "id": "gate3-000042",
            "source": "/cameras/gate-3",
            "type": "com.example.camera.face-capture",
            "specversion": "1.0",
            "subject": "lobby",
            "time": "2026-05-01T12:00:00.250Z",
            "datacontenttype": "application/json",
            "extensions": {"camerazone": "north"},
        },
    }
    assert event.trace_context == (("traceparent", TRACEPARENT.encode()),)


def test_structured_without_content_type_is_read_when_it_has_a_specversion() -> None:
    assert parse("ce", structured()).image_url == EVENT["image_url"]


def test_the_sdk_binary_and_structured_records_are_read() -> None:
    """The CloudEvents SDK's Kafka binding (what a Python camera gateway would use) writes both modes."""
    ce = CloudEvent(
        attributes={
            "type": "com.example.camera.image",
            "source": "/cameras/gate-3",
            "id": "sdk-1",
            "subject": "lobby",
            "datacontenttype": "application/json",
            "traceparent": TRACEPARENT,
        },
        data=dict(EVENT),
    )
    for message in (ce_kafka.to_binary(ce, JSONFormat()), ce_kafka.to_structured(ce, JSONFormat())):
        headers = tuple(message.headers.items())
        event = parse("ce", message.value, headers)
        assert (event.event_id, event.image_url, event.group_ids) == ("sdk-1", EVENT["image_url"], ("staff",))
        assert event.metadata is not None and event.metadata["cloudevent"]["subject"] == "lobby"
        assert event.metadata["cloudevent"]["time"].endswith("Z") or "+00:00" in event.metadata["cloudevent"]["time"]
        assert event.trace_context == (("traceparent", TRACEPARENT.encode()),)


def test_binary_mode_reads_headers_and_the_value_as_data() -> None:
    headers = (*binary_headers(subject="lobby", time="2026-05-01T12:00:00Z"), ("content-type", b"application/json"))
    event = parse("ce", orjson.dumps(EVENT), headers)
    assert event.event_id == "ev-1"
    assert event.metadata is not None
    assert event.metadata["cloudevent"] == {
        "id": "ev-1",
        "source": "/cameras/gate-3",
        "type": "t",
        "specversion": "1.0",
        "subject": "lobby",
        "time": "2026-05-01T12:00:00Z",
        "datacontenttype": "application/json",
    }


def test_event_id_prefers_the_data_then_the_ce_id_then_the_coordinates() -> None:
    assert parse("ce", structured(data={**EVENT, "event_id": "mine"})).event_id == "mine"
    assert parse("ce", structured()).event_id == "ev-1"
    long_id = parse("ce", structured(id="x" * 129))
    assert (long_id.event_id, long_id.event_id_derived) == ("ce-2-40", True)
    assert long_id.metadata is not None and long_id.metadata["cloudevent"]["id"] == "x" * 129


def test_the_worker_owns_metadata_cloudevent() -> None:
    event = parse("ce", structured(data={**EVENT, "metadata": {"cloudevent": "spoofed", "k": 1}}))
    assert event.metadata is not None and event.metadata["k"] == 1
    assert event.metadata["cloudevent"]["id"] == "ev-1"


def test_trace_context_reaches_the_result_unless_the_record_has_its_own() -> None:
    event = parse("ce", structured(traceparent=TRACEPARENT, tracestate="k=v"))
    assert result_headers(src("ce"), event) == [("traceparent", TRACEPARENT.encode()), ("tracestate", b"k=v")]
    own = src("ce", (("traceparent", b"00-own"),))
    assert result_headers(own, event) == [("traceparent", b"00-own")]
    assert parse("ce", structured(traceparent="garbage")).trace_context == ()  # dropped, not refused


@pytest.mark.parametrize(
    ("value", "headers", "code"),
    [
        (orjson.dumps(EVENT), (), "not_a_cloudevent"),  # a plain event on a cloudevents topic
        (b"[1, 2]", (), "not_a_cloudevent"),
        (structured(specversion="0.3"), CT_STRUCTURED, "unsupported_specversion"),
        (orjson.dumps(EVENT), binary_headers(specversion="2.0"), "unsupported_specversion"),
        (b'{"id": "x"}', CT_STRUCTURED, "invalid_cloudevent"),  # declared structured, no specversion
        (structured(id=None), CT_STRUCTURED, "invalid_cloudevent"),
        (structured(source=""), (), "invalid_cloudevent"),
        (structured(specversion=1.0), (), "invalid_cloudevent"),
        (structured(time="2026-13-01T00:00:00Z"), (), "invalid_cloudevent"),
        (structured(time="yesterday"), (), "invalid_cloudevent"),
        (structured(Camera="x"), (), "invalid_cloudevent"),  # attribute names are lower case
        (structured(ext={"nested": 1}), (), "invalid_cloudevent"),  # extensions are scalars
        (orjson.dumps(EVENT), binary_headers(type=None), "invalid_cloudevent"),
        (orjson.dumps(EVENT), (*binary_headers(), ("ce_id", b"again")), "invalid_cloudevent"),
        (orjson.dumps(EVENT), (*binary_headers(), ("ce_subject", b"\xff")), "invalid_cloudevent"),
        (orjson.dumps(EVENT), (*binary_headers(), ("ce_subject", None)), "invalid_cloudevent"),
        (orjson.dumps(EVENT), (*binary_headers(), ("ce_data", b"{}")), "invalid_cloudevent"),
        (structured(), (("content-type", b"application/cloudevents-batch+json"),), "unsupported_content_type"),
        (structured(), (("content-type", b"application/cloudevents+avro"),), "unsupported_content_type"),
        (structured(datacontenttype="text/plain"), (), "unsupported_content_type"),
        (structured(data=None, data_base64="aGk="), (), "unsupported_content_type"),
        (b"<xml/>", (*binary_headers(), ("content-type", b"application/xml")), "unsupported_content_type"),
        (structured(data=None), CT_STRUCTURED, "cloudevent_without_data"),
        (b"", binary_headers(), "cloudevent_without_data"),
        (None, binary_headers(), "cloudevent_without_data"),
        (b"null", binary_headers(), "cloudevent_without_data"),
        # The data is an event: the event's own codes.
        (structured(data="https://img/a.jpg"), (), "invalid_event"),
        (structured(data={"image_url": "ftp://img/a.jpg"}), (), "invalid_url"),
        (structured(data={**EVENT, "schema_version": 2}), (), "unsupported_version"),
        (b"\xff\xfe", binary_headers(), "invalid_utf8"),
        (b"{nope", binary_headers(), "invalid_json"),
        (b"x" * 300_000, binary_headers(), "event_too_large"),
        (None, (), "empty_value"),
    ],
)
def test_cloudevent_refusals(value: bytes | None, headers: tuple[tuple[str, bytes | None], ...], code: str) -> None:
    assert code_of("ce", value, headers) == code


# -- S3 / MinIO ---------------------------------------------------------------------------------------------------


def test_aws_sample_decodes_the_form_encoded_key_and_encodes_it_as_a_path() -> None:
    event = parse("s3", (DATA / "s3-aws-put.json").read_bytes())
    # "gate+3/2026-05-01/visitor%C3%A4+1.jpg" is "gate 3/2026-05-01/visitorä 1.jpg"
    assert event.image_url == "https://minio.example:9000/camera-uploads/gate%203/2026-05-01/visitor%C3%A4%201.jpg"
    assert (event.event_id, event.event_id_derived, event.group_ids) == ("s3-2-40", True, None)
    assert event.metadata == {
        "s3": {
            "event_name": "ObjectCreated:Put",
            "bucket": "camera-uploads",
            "key": "gate 3/2026-05-01/visitorä 1.jpg",
            "event_time": "2026-05-01T12:00:00.000Z",
            "region": "eu-west-1",
            "size": 48213,
            "etag": "d41d8cd98f00b204e9800998ecf8427e",
            "sequencer": "0055AED6DCD90281E5",
            "event_source": "aws:s3",
        }
    }


def test_minio_sample() -> None:
    event = parse("s3", (DATA / "minio-put.json").read_bytes())
    assert event.image_url == "https://minio.example:9000/faces/lobby/alice%201.jpg"
    assert event.metadata is not None and event.metadata["s3"]["content_type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("a+b%2Bc.jpg", "a%20b%2Bc.jpg"),  # form encoding: + is a space, %2B a plus
        ("x%3F%23%25.png", "x%3F%23%25.png"),  # ? # % stay in the path
        ("%E4%BA%BA%E8%84%B8.jpg", "%E4%BA%BA%E8%84%B8.jpg"),
        ("...%2F.x%2Fx..jpg", ".../.x/x..jpg"),  # dots that are not a whole segment are just characters
        ("%252E%252E%2Fx.jpg", "%252E%252E/x.jpg"),  # a literal %2E%2E is escaped again: no dot-segment
        ("a%5C..%5Cb.jpg", "a%5C..%5Cb.jpg"),  # a backslash is escaped (WHATWG reads a raw one as /)
    ],
)
def test_keys_are_escaped_for_the_url_path(key: str, path: str) -> None:
    doc = sample("minio-put.json")
    doc["Records"][0]["s3"]["object"]["key"] = key
    assert parse("s3", orjson.dumps(doc)).image_url == f"https://minio.example:9000/faces/{path}"


def _s3(**object_fields: Any) -> bytes:
    doc = sample("minio-put.json")
    obj = doc["Records"][0]["s3"]["object"]
    obj.update(object_fields)
    for name in [k for k, v in object_fields.items() if v is None]:
        del obj[name]
    return orjson.dumps(doc)


def _s3_bucket(name: str) -> bytes:
    doc = sample("minio-put.json")
    doc["Records"][0]["s3"]["bucket"]["name"] = name
    return orjson.dumps(doc)


def _s3_event(name: str) -> bytes:
    doc = sample("s3-aws-put.json")
    doc["Records"][0]["eventName"] = name
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ((DATA / "s3-test-event.json").read_bytes(), "s3_test_event"),
        ((DATA / "minio-delete.json").read_bytes(), "not_object_created"),
        (_s3_event("ObjectRemoved:Delete"), "not_object_created"),
        (_s3_event("ObjectRestore:Completed"), "not_object_created"),
        (orjson.dumps({"Records": sample("minio-put.json")["Records"] * 2}), "several_records"),
        (_s3(contentType="video/mp4"), "not_an_image"),
        (_s3(key="notes.txt", contentType=None), "not_an_image"),
        (_s3(key="notes.txt", contentType="application/octet-stream"), "not_an_image"),
        (_s3(key="folder%2F", contentType=None), "not_an_image"),
        (_s3(size=0), "not_an_image"),
        (_s3(size=LIMIT + 1), "object_too_large"),
        (orjson.dumps(EVENT), "invalid_notification"),  # a plain event on an s3 topic
        (b"[]", "invalid_notification"),
        (orjson.dumps({"Records": []}), "invalid_notification"),
        (_s3(key=""), "invalid_notification"),
        (_s3(size=-1), "invalid_notification"),
        # Keys whose URL a browser, proxy or CDN would resolve elsewhere (%2E%2E is read as ..).
        (_s3(key="..%2Fother-bucket%2Fx.jpg"), "unsafe_object_key"),
        (_s3(key="a%2F..%2F..%2Fx.jpg"), "unsafe_object_key"),
        (_s3(key="a%2F.%2Fx.jpg"), "unsafe_object_key"),
        (_s3(key=".%2Fx.jpg"), "unsafe_object_key"),
        (_s3(key="a%2F%2Fb.jpg"), "unsafe_object_key"),  # an empty segment: merge_slashes would drop it
        (_s3(key="%2Fa.jpg"), "unsafe_object_key"),  # a leading / is an empty segment too
        (_s3_bucket(".."), "invalid_notification"),  # not a bucket name S3 or MinIO allows
        (b"", "empty_value"),
        (b"{", "invalid_json"),
    ],
)
def test_s3_refusals(value: bytes, code: str) -> None:
    assert code_of("s3", value) == code


@FUZZ
@given(st.text(min_size=1, max_size=60).filter(lambda k: not k.endswith("/")))
def test_any_key_round_trips_through_the_notification_and_the_url(key: str) -> None:
    """MinIO form-encodes the key; the URL path, percent-decoded, is the bucket and that same key (or the key is
    refused, when a segment is '.', '..' or empty)."""
    from urllib.parse import quote_plus, unquote

    value = _s3(key=quote_plus(key), contentType="image/jpeg")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        assert code_of("s3", value) == "unsafe_object_key"
        return
    event = parse("s3", value)
    parts = urlsplit(event.image_url)
    assert (parts.hostname, parts.query, parts.fragment) == ("minio.example", "", "")
    assert unquote(parts.path) == "/faces/" + key


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, as written (the reference, not the code under test)."""
    out: list[str] = []
    while path:
        if path.startswith("../"):
            path = path[3:]
        elif path.startswith(("./", "/./")):
            path = path[2:]
        elif path == "/.":
            path = "/"
        elif path.startswith("/../"):
            path = path[3:]
            if out:
                out.pop()
        elif path == "/..":
            path = "/"
            if out:
                out.pop()
        elif path in (".", ".."):
            path = ""
        else:
            start = 1 if path.startswith("/") else 0
            end = path.find("/", start)
            end = len(path) if end < 0 else end
            out.append(path[:end])
            path = path[end:]
    return "".join(out)


def _resolved_path(url: str) -> str:
    """The path a WHATWG parser requests: %2E is a dot in a dot-segment (any case), then dot-segments go."""
    segments = urlsplit(url).path.split("/")
    dots = [re.sub("%2e", ".", seg, flags=re.IGNORECASE) for seg in segments]
    return _remove_dot_segments("/".join(d if d in (".", "..") else s for s, d in zip(segments, dots, strict=True)))


KEY_TEMPLATES = {
    "https://minio.example:9000/{bucket}/{key}": "/faces/",
    "https://cdn.example/img/{region}/{bucket}/{key}": "/img/eu/faces/",
    "https://{bucket}.s3.example/{key}": "/",
}


@FUZZ
@given(
    st.sampled_from(sorted(KEY_TEMPLATES)),
    st.lists(
        st.sampled_from([".", "..", "", "a", "x.jpg", "%2E", "%2e%2E", ".%2e", "\\..", "...", " .. "]),
        min_size=1,
        max_size=6,
    ),
)
def test_no_accepted_key_leaves_the_template_s_prefix(template: str, segments: list[str]) -> None:
    """Whatever key S3 stores, a URL the worker builds never resolves (RFC 3986 remove_dot_segments, after the
    percent-decoding of dots that WHATWG parsers do) outside the path the template gives the bucket."""
    key = "/".join(segments) + ".jpg"
    doc = sample("minio-put.json")
    record = doc["Records"][0]
    record["awsRegion"] = "eu"
    record["s3"]["object"]["key"] = quote(key, safe="")
    inputs = formats.Inputs({"s3": formats.TopicInput("s3", template, LIMIT)})
    try:
        event = inputs.parse(orjson.dumps(doc), src("s3"))
    except InvalidEvent as refused:
        assert refused.code in codes.INVALID_CODES
        return
    prefix = KEY_TEMPLATES[template]
    assert _resolved_path(event.image_url).startswith(prefix), (key, event.image_url)
    assert _resolved_path(event.image_url) == urlsplit(event.image_url).path  # nothing left to resolve


def test_the_review_s_key_cannot_reach_another_bucket() -> None:
    """https://cdn.example/b/%2E%2E/other/x.jpg resolves to https://cdn.example/other/x.jpg in a browser."""
    assert _resolved_path("https://cdn.example/b/%2E%2E/other/x.jpg") == "/other/x.jpg"  # the oracle sees it
    assert code_of("s3", _s3(key="..%2Fother%2Fx.jpg")) == "unsafe_object_key"


def test_image_checks_accept_what_may_be_an_image() -> None:
    assert parse("s3", _s3(key="photo", contentType=None)).image_url.endswith("/faces/photo")  # no evidence either way
    assert parse("s3", _s3(key="photo.bin", contentType="image/png"))  # the content type wins
    assert parse("s3", _s3(key="PHOTO.JPEG", contentType="binary/octet-stream"))
    assert parse("s3", _s3(size=LIMIT))


# -- COS ----------------------------------------------------------------------------------------------------------


def test_cos_sample_uses_the_url_cos_sent() -> None:
    event = parse("cos", (DATA / "cos-put.json").read_bytes())
    assert event.image_url == "http://faces-1250000000.cos.ap-guangzhou.myqcloud.com/gate3/visitor.jpg"
    assert event.metadata is not None
    assert event.metadata["cos"] == {
        "event_name": "cos:ObjectCreated:Put",
        "bucket": "faces",
        "key": "gate3/visitor.jpg",
        "event_time": 1777636800,
        "region": "gz",
        "appid": "1250000000",
        "size": 48213,
        "content_type": "image/jpeg",
        "url": "http://faces-1250000000.cos.ap-guangzhou.myqcloud.com/gate3/visitor.jpg",
    }


def test_cos_with_a_template_builds_the_url_from_the_key() -> None:
    event = parse("cos-cdn", (DATA / "cos-put.json").read_bytes())
    assert event.image_url == "https://cdn.example.com/gz/faces/gate3/visitor.jpg"


def _cos(mutate: Any) -> bytes:
    doc = sample("cos-put.json")
    mutate(doc["Records"][0])
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (_cos(lambda r: r["event"].update(eventName="cos:ObjectRemove:Delete")), "not_object_created"),
        (_cos(lambda r: r["cos"]["cosObject"]["meta"].update({"Content-Type": "text/plain"})), "not_an_image"),
        (_cos(lambda r: r["cos"]["cosObject"].update(size=10**9)), "object_too_large"),
        (_cos(lambda r: r["cos"]["cosObject"].update(url="javascript:alert(1)")), "invalid_url"),
        (_cos(lambda r: r["cos"]["cosObject"].pop("url")), "invalid_notification"),  # and no template
        (_cos(lambda r: r["cos"]["cosObject"].update(key="/1250000000/faces/dir/")), "not_an_image"),
        (_cos(lambda r: r["cos"]["cosObject"].update(key="/1250000000/faces/")), "invalid_notification"),
        (_cos(lambda r: r.pop("event")), "invalid_notification"),
        (_cos(lambda r: r["cos"]["cosObject"].update(key="/1250000000/faces/../x.jpg")), "unsafe_object_key"),
        (_cos(lambda r: r["cos"]["cosObject"].update(key="/1250000000/faces/a//x.jpg")), "unsafe_object_key"),
        (orjson.dumps({"Records": sample("cos-put.json")["Records"] * 3}), "several_records"),
        ((DATA / "minio-put.json").read_bytes(), "invalid_notification"),  # an S3 notification on a cos topic
    ],
)
def test_cos_refusals(value: bytes, code: str) -> None:
    assert code_of("cos", value) == code


def test_cos_key_prefix() -> None:
    assert cos.object_key("/125/b/a/x.jpg", "125", "b") == "a/x.jpg"
    assert cos.object_key("/other/x.jpg", "125", "b") == "other/x.jpg"


# -- every code, the registry, the schemas, the results -----------------------------------------------------------


def test_every_event_code_of_the_registry_is_produced_by_a_test_here() -> None:
    """Each parametrised refusal above names its code; together they cover the registry's event keys."""
    produced: set[str] = set()
    for test in (test_cloudevent_refusals, test_s3_refusals, test_cos_refusals):
        for mark in test.pytestmark:  # type: ignore[attr-defined]
            if mark.name == "parametrize":
                produced |= {case[-1] for case in mark.args[1]}
    assert produced == set(codes.INVALID_CODES)
    for code in produced:
        info = codes.lookup(code)
        assert info is not None and info.origin is codes.Origin.EVENT and info.meaning


def test_results_of_every_format_are_valid_records() -> None:
    from worker.api.models import Api, IdentifyResult

    values = {
        "ce": (DATA / "cloudevent-structured.json").read_bytes(),
        "s3": (DATA / "minio-put.json").read_bytes(),
        "cos": (DATA / "cos-put.json").read_bytes(),
    }
    for topic, value in values.items():
        event = parse(topic, value)
        record = build_result(
            event,
            IdentifyResult(api=Api.V1, faces=(), request_id="r", http_status=200),
            source=src(topic),
            attempts=1,
            api_latency_ms=1.0,
            worker_version="t",
            processed_at_ms=1,
            image_mode="url",
        )
        schemas.validator("result").validate(orjson.loads(record))


def test_samples_match_their_schemas() -> None:
    schemas.validator("s3-notification").validate(sample("s3-aws-put.json"))
    schemas.validator("s3-notification").validate(sample("minio-put.json"))
    schemas.validator("cos-notification").validate(sample("cos-put.json"))
    schemas.validator("cloudevent").validate(sample("cloudevent-structured.json"))


# -- fuzz: any input is an Event or a refusal with a registered code -----------------------------------------------


def _accepts_or_refuses(topic: str, value: bytes | None, headers: tuple[tuple[str, bytes | None], ...] = ()) -> None:
    try:
        event = parse(topic, value, headers)
    except InvalidEvent as invalid:
        assert invalid.code in codes.INVALID_CODES, invalid.code
        assert len(invalid.message) <= MAX_MESSAGE_CHARS
        return
    assert event.image_url.lower().startswith(("http://", "https://"))


SAMPLES = {
    "s3": [sample("s3-aws-put.json"), sample("minio-put.json")],
    "cos": [sample("cos-put.json")],
    "ce": [sample("cloudevent-structured.json")],
}


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_corrupted_samples_are_accepted_or_refused_with_a_code(topic: str, data: st.DataObject) -> None:
    doc = data.draw(corrupted(st.sampled_from(SAMPLES[topic]).map(copy.deepcopy)))
    _accepts_or_refuses(topic, orjson.dumps(doc))


@FUZZ
@given(
    st.sampled_from(["ce", "s3", "cos"]),
    JSON,
    st.lists(
        st.tuples(
            st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type", "ce_X"]),
            st.one_of(st.none(), st.binary(max_size=12), st.sampled_from([b"1.0", b"application/json"])),
        ),
        max_size=6,
    ),
)
def test_any_json_and_headers_are_accepted_or_refused_with_a_code(
    topic: str, doc: Any, headers: list[tuple[str, bytes | None]]
) -> None:
    _accepts_or_refuses(topic, orjson.dumps(doc), tuple(headers))


# -- settings -----------------------------------------------------------------------------------------------------


def test_settings_choose_a_format_per_topic() -> None:
    s = config.load(
        environ={
            "MDW_INPUT_TOPIC": "images, camera.events,minio.images",
            "MDW_INPUT_FORMATS": "camera.events=cloudevents,minio.images=S3",
            "MDW_IMAGE_URL_TEMPLATE": "https://minio.example:9000/{bucket}/{key}",
        }
    )
    assert s.input_topics == ("images", "camera.events", "minio.images")
    inputs = s.inputs()
    assert [inputs.format_of(t) for t in s.input_topics] == ["event", "cloudevents", "s3"]
    assert inputs.by_topic["minio.images"] == formats.TopicInput("s3", TEMPLATE, config.V1_MAX_IMAGE_BYTES)
    assert config.load(environ={"MDW_API": "iai"}).image_limit_bytes == config.IAI_MAX_IMAGE_BYTES


def test_per_topic_templates() -> None:
    s = config.load(
        environ={
            "MDW_INPUT_TOPIC": "a,b",
            "MDW_INPUT_FORMATS": "a=s3,b=cos",
            "MDW_IMAGE_URL_TEMPLATE": "https://default/{key} b=https://cdn/{bucket}/{key}?r={region}",
        }
    )
    assert s.inputs().by_topic["a"].image_url_template == "https://default/{key}"
    assert s.inputs().by_topic["b"].image_url_template == "https://cdn/{bucket}/{key}?r={region}"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MDW_INPUT_TOPIC": "a,,a"}, "input_topic (MDW_INPUT_TOPIC): a topic is listed twice"),
        ({"MDW_INPUT_TOPIC": "a,b c"}, "input_topic (MDW_INPUT_TOPIC): topic names"),
        ({"MDW_INPUT_FORMATS": "images=avro"}, "input_formats (MDW_INPUT_FORMATS): images: unknown format 'avro'"),
        ({"MDW_INPUT_FORMATS": "images"}, "input_formats (MDW_INPUT_FORMATS): 'images' is not topic=format"),
        ({"MDW_INPUT_FORMATS": "other=s3"}, "input_formats (MDW_INPUT_FORMATS) names 'other', which input_topic"),
        ({"MDW_INPUT_FORMATS": "images=s3"}, "image_url_template (MDW_IMAGE_URL_TEMPLATE): the s3 topic 'images'"),
        (
            {"MDW_IMAGE_URL_TEMPLATE": "https://h/{bucket}"},
            "image_url_template (MDW_IMAGE_URL_TEMPLATE): 'https://h/{b",
        ),
        ({"MDW_IMAGE_URL_TEMPLATE": "https://h/{key}/{path}"}, "unknown placeholder(s) {path}"),
        ({"MDW_IMAGE_URL_TEMPLATE": "ftp://h/{key}"}, "neither an http(s) template nor topic=TEMPLATE"),
        ({"MDW_IMAGE_URL_TEMPLATE": "images=https://u:p@h/{key}"}, "http:// or https:// URL with a host"),
        ({"MDW_IMAGE_URL_TEMPLATE": "images=https://h/{key}"}, "names 'images', which is not an s3 or cos topic"),
    ],
)
def test_bad_format_settings_stop_at_start_naming_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(environ=env)
    assert message in str(info.value)


def test_template_fill_never_reads_a_value_as_a_placeholder() -> None:
    assert objects.fill("https://h/{bucket}/{key}", bucket="{key}", key="{bucket}", region="") == (
        "https://h/%7Bkey%7D/%7Bbucket%7D"
    )


def test_s3_parser_is_pure_and_direct() -> None:
    value = (DATA / "minio-put.json").read_bytes()
    direct = s3.parse(value, src("s3"), template=TEMPLATE, max_object_bytes=None)
    assert direct == parse("s3", value)
    assert cloudevent.parse(structured(), src("ce")) == parse("ce", structured())
    assert parse("plain", orjson.dumps(EVENT)).image_url == EVENT["image_url"]  # the event format, unchanged


# -- bounded output: what an input copies into its result stays far below the broker's message limit ---------------

FULL = cloudevent.MAX_ATTRIBUTE_BYTES
RESULT_BUDGET = 1_000_000  # the broker's default message limit; a larger result would be refused


def _result_bytes(event: Event, topic: str) -> int:
    from worker.api.models import Api, IdentifyResult

    return len(
        build_result(
            event,
            IdentifyResult(api=Api.V1, faces=(), request_id="r", http_status=200),
            source=src(topic),
            attempts=1,
            api_latency_ms=1.0,
            worker_version="t",
            processed_at_ms=1,
            image_mode="url",
        )
    )


@pytest.mark.parametrize(
    "headers",
    [
        # One attribute over its limit (a control character would grow it sixfold in JSON; a plain one does not).
        (*binary_headers(), ("ce_note", b"x" * (cloudevent.MAX_ATTRIBUTE_BYTES + 1))),
        binary_headers(subject="s" * (cloudevent.MAX_ATTRIBUTE_BYTES + 1)),
        # Each within its limit, together over the total.
        (
            *binary_headers(),
            *((f"ce_x{i}", b"x" * FULL) for i in range(cloudevent.MAX_ATTRIBUTES_BYTES // FULL)),
        ),
        # Many small extensions: the names count too.
        (*binary_headers(), *((f"ce_{'n' * 56}{i:08d}", b"") for i in range(600))),
    ],
    ids=["extension", "subject", "total", "many-names"],
)
def test_binary_attributes_are_bounded(headers: tuple[tuple[str, bytes | None], ...]) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse("ce", orjson.dumps(EVENT), headers)
    assert info.value.code == "invalid_cloudevent"
    assert "bytes" in info.value.message and "limit" in info.value.message


def test_the_attribute_limits_hold_in_structured_mode_too() -> None:
    assert code_of("ce", structured(note="x" * (cloudevent.MAX_ATTRIBUTE_BYTES + 1))) == "invalid_cloudevent"
    many = {f"x{i}": "x" * 4000 for i in range(cloudevent.MAX_ATTRIBUTES_BYTES // 4000 + 1)}
    assert code_of("ce", structured(**many)) == "invalid_cloudevent"
    assert parse("ce", structured(note="x" * cloudevent.MAX_ATTRIBUTE_BYTES))  # at the limit: accepted


@pytest.mark.parametrize("char", ["\x00", "\x01", "\n", "\x1f", "\x7f", "\x80", "\x9f"])
@pytest.mark.parametrize("attribute", ["id", "source", "subject", "note"])
def test_control_characters_in_attributes_are_refused(attribute: str, char: str) -> None:
    """The CloudEvents String type excludes U+0000–U+001F and U+007F–U+009F, in either mode."""
    bad = f"a{char}b"
    binary = (*binary_headers(**{attribute: None}), (f"ce_{attribute}", bad.encode()))
    assert code_of("ce", orjson.dumps(EVENT), binary) == "invalid_cloudevent"
    assert code_of("ce", structured(**{attribute: bad})) == "invalid_cloudevent"


def test_a_binary_event_s_result_stays_within_the_message_limit() -> None:
    """The review's poison pill: 200 KB of control characters in headers made 1.2 MB of result metadata.
    Whatever is accepted now — the largest value plus every attribute at its limit — fits with room to spare."""
    pad = "\u00e9" * ((200 * 1024) // 2)  # two UTF-8 bytes each
    value = orjson.dumps({**EVENT, "metadata": {"pad": pad}})
    headers: list[tuple[str, bytes | None]] = list(binary_headers())
    budget = cloudevent.MAX_ATTRIBUTES_BYTES - sum(len(n) - 3 + len(v or b"") for n, v in headers)
    i = 0
    while budget > 0:  # attributes of '"' (escaped as two bytes in JSON), up to the total
        name = f"ce_q{i}"
        size = min(cloudevent.MAX_ATTRIBUTE_BYTES, budget - (len(name) - 3))
        if size <= 0:
            break
        headers.append((name, b'"' * size))
        budget -= len(name) - 3 + size
        i += 1
    event = parse("ce", value, tuple(headers))
    assert _result_bytes(event, "ce") < RESULT_BUDGET // 2


def test_the_review_s_poison_pill_is_refused() -> None:
    headers = (*binary_headers(), *((f"ce_x{i}", b"\x01" * 2000) for i in range(100)))
    assert code_of("ce", orjson.dumps(EVENT), headers) == "invalid_cloudevent"


REGION_INPUTS = formats.Inputs(
    {
        "s3": formats.TopicInput("s3", "https://cdn.example/{region}/{bucket}/{key}", LIMIT),
        "cos": formats.TopicInput("cos", "https://cdn.example/{region}/{bucket}/{key}", LIMIT),
    }
)


def _s3_region(region: str) -> bytes:
    doc = sample("s3-aws-put.json")
    doc["Records"][0]["awsRegion"] = region
    return orjson.dumps(doc)


def _cos_region(region: str) -> bytes:
    doc = sample("cos-put.json")
    doc["Records"][0]["cos"]["cosBucket"]["region"] = region
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("topic", "value"),
    [
        # {region} is percent-encoded: 250,000 spaces would be 750 KB of image URL, plus the metadata's copy.
        ("s3", _s3_region(" " * 250_000)),
        ("cos", _cos_region(" " * 250_000)),
    ],
)
def test_an_image_url_built_from_a_notification_is_bounded_like_an_event_s(topic: str, value: bytes) -> None:
    """schemas/event.schema.json caps image_url at 2048 characters; a built URL is held to the same cap."""
    with pytest.raises(InvalidEvent) as info:
        REGION_INPUTS.parse(value, src(topic))
    assert info.value.code == "invalid_url" and "2048" in info.value.message


def test_an_s3_result_copies_no_more_than_the_notification_holds() -> None:
    """metadata.s3 copies strings that JSON already spelled out in the input (a '"' is two bytes either way, raw
    UTF-8 stays raw), and the URL is capped: a full-size notification makes a result of about its own size."""
    doc = sample("s3-aws-put.json")
    record = doc["Records"][0]
    pad = '"\u00e9' * 5000  # four bytes a pair, in the input as in the result: \" and the raw é
    obj = record["s3"]["object"]
    obj.update(eTag=pad * 2, versionId=pad * 2, sequencer=pad * 2, contentType="image/jpeg;" + pad * 2)
    record.update(eventTime=pad * 2, eventSource=pad * 2)
    value = orjson.dumps(doc)
    assert 200_000 < len(value) <= 256 * 1024
    assert _result_bytes(parse("s3", value), "s3") < len(value) + 4096


def test_cos_url_is_bounded_too() -> None:
    long = "http://faces-1250000000.cos.ap-guangzhou.myqcloud.com/" + "a" * 2100 + ".jpg"
    assert code_of("cos", _cos(lambda r: r["cos"]["cosObject"].update(url=long))) == "invalid_url"


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_results_of_corrupted_notifications_stay_small(topic: str, data: st.DataObject) -> None:
    """Whatever a notification or CloudEvent of at most 256 KiB makes, its result is far below 1 MB."""
    doc = data.draw(corrupted(st.sampled_from(SAMPLES[topic]).map(copy.deepcopy)))
    try:
        event = parse(topic, orjson.dumps(doc))
    except InvalidEvent:
        return
    assert _result_bytes(event, topic) < RESULT_BUDGET // 2
