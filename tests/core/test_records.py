"""Event parsing, result and dead-letter records, headers: each against the schemas of schemas/."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import schemas
from worker.api.errors import ApiError, ErrorClass
from worker.api.models import Api, Candidate, Face, FaceRect, IdentifyResult
from worker.core.records import (
    EMPTY_VALUE,
    EVENT_TOO_LARGE,
    H_ERROR_CLASS,
    H_ERROR_CODE,
    H_ORIGINAL_KEY,
    H_ORIGINAL_OFFSET,
    H_ORIGINAL_PARTITION,
    H_ORIGINAL_TIMESTAMP,
    H_ORIGINAL_TOPIC,
    H_REPLAY_COUNT,
    H_WORKER_VERSION,
    INVALID_CODES,
    INVALID_EVENT,
    INVALID_JSON,
    INVALID_URL,
    INVALID_UTF8,
    MAX_MESSAGE_CHARS,
    UNSUPPORTED_VERSION,
    ErrorInfo,
    Event,
    InvalidEvent,
    Source,
    build_dead_letter,
    build_result,
    dead_letter_headers,
    dead_letter_key,
    parse_event,
    replay_count,
    result_headers,
    rfc3339_ms,
)

SRC = Source("images", 3, 1234, 1_700_000_000_000, b"cam-7", (("traceparent", b"00-abc-def-01"),))


def _event(**fields: Any) -> bytes:
    return orjson.dumps({"image_url": "https://img.example.com/a.jpg", **fields})


def _code_of(value: bytes | None) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse_event(value, SRC)
    return info.value.code


def _valid(name: schemas.SchemaName, record: bytes) -> dict[str, Any]:
    doc = orjson.loads(record)
    errors = list(schemas.validator(name).iter_errors(doc))
    assert not errors, [e.message[:200] for e in errors]
    return doc  # type: ignore[no-any-return]


# --- parsing ---------------------------------------------------------------------------------------------


def test_full_event_parses_into_its_fields() -> None:
    value = _event(
        event_id="e-1", group_ids=["staff", "vip"], session_id="s", metadata={"cam": {"id": 7}}, schema_version=1
    )
    assert parse_event(value, SRC) == Event(
        event_id="e-1",
        image_url="https://img.example.com/a.jpg",
        group_ids=("staff", "vip"),
        session_id="s",
        metadata={"cam": {"id": 7}},
        event_id_derived=False,
    )


def test_missing_event_id_is_derived_from_the_coordinates() -> None:
    event = parse_event(_event(), SRC)
    assert event.event_id == "images-3-1234"
    assert event.event_id_derived
    assert event.group_ids is None and event.session_id is None and event.metadata is None


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, EMPTY_VALUE),
        (b"", EMPTY_VALUE),
        (b"\xff\xfe{}", INVALID_UTF8),
        (b'{"image_url": "http://x/\xc3"}', INVALID_UTF8),
        (b"{not json", INVALID_JSON),
        (b'{"image_url": NaN}', INVALID_JSON),
        (b"[" * 2000 + b"]" * 2000, INVALID_JSON),
        (b"[]", INVALID_EVENT),
        (b'"https://img/a.jpg"', INVALID_EVENT),
        (b"{}", INVALID_EVENT),
        (_event(schema_version=2), UNSUPPORTED_VERSION),
        (_event(schema_version="1"), INVALID_EVENT),
        (_event(schema_version=True), INVALID_EVENT),
        (_event(group_id="staff"), INVALID_EVENT),
        (_event(event_id=""), INVALID_EVENT),
        (_event(event_id="x" * 129), INVALID_EVENT),
        (_event(event_id="a\nb"), INVALID_EVENT),
        (_event(group_ids=[]), INVALID_EVENT),
        (_event(group_ids=["a/b"]), INVALID_EVENT),
        (_event(group_ids=["a b"]), INVALID_EVENT),
        (_event(group_ids=["ab\n"]), INVALID_EVENT),
        (_event(group_ids=[""]), INVALID_EVENT),
        (_event(group_ids=["g" * 65]), INVALID_EVENT),
        (_event(group_ids=[f"g{i}" for i in range(101)]), INVALID_EVENT),
        (_event(group_ids="staff"), INVALID_EVENT),
        (_event(session_id="s" * 129), INVALID_EVENT),
        (_event(metadata=[1, 2]), INVALID_EVENT),
        (orjson.dumps({"image_url": 5}), INVALID_EVENT),
        (orjson.dumps({"image_url": ""}), INVALID_URL),
        (orjson.dumps({"image_url": "ftp://img/a.jpg"}), INVALID_URL),
        (orjson.dumps({"image_url": "img/a.jpg"}), INVALID_URL),
        (orjson.dumps({"image_url": "https:///a.jpg"}), INVALID_URL),
        (orjson.dumps({"image_url": "https://img/a b.jpg"}), INVALID_URL),
        (orjson.dumps({"image_url": "https://img/a.jpg\n"}), INVALID_URL),
        (orjson.dumps({"image_url": "https://img/a\x00.jpg"}), INVALID_URL),
        (orjson.dumps({"image_url": "https://user:pw@img/a.jpg"}), INVALID_URL),
        (orjson.dumps({"image_url": "https://img:99999/a.jpg"}), INVALID_URL),
        (orjson.dumps({"image_url": "https://[::1/a.jpg"}), INVALID_URL),
        (orjson.dumps({"image_url": "https://img/" + "a" * 2048}), INVALID_URL),
    ],
)
def test_invalid_values_get_their_code(value: bytes | None, code: str) -> None:
    assert _code_of(value) == code


def test_accepted_edge_cases() -> None:
    assert parse_event(orjson.dumps({"image_url": "HTTP://IMG:8080/a.jpg?x=1#f"}), SRC).image_url.startswith("HTTP")
    assert parse_event(_event(group_ids=["g" * 64] * 100, session_id=""), SRC).session_id == ""
    assert parse_event(orjson.dumps({"image_url": "https://img/" + "a" * 2036}), SRC)


def test_too_large_is_refused_before_parsing() -> None:
    value = _event(metadata={"blob": "x" * 300_000})
    assert _code_of(value) == EVENT_TOO_LARGE
    assert parse_event(value, SRC, max_bytes=400_000).metadata == {"blob": "x" * 300_000}


def test_metadata_depth_is_limited() -> None:
    def nested(levels: int) -> Any:
        node: Any = {}
        for _ in range(levels - 1):
            node = {"n": node}
        return node

    assert parse_event(_event(metadata=nested(16)), SRC).metadata == nested(16)
    assert _code_of(_event(metadata=nested(17))) == INVALID_EVENT
    assert _code_of(_event(metadata={"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]})) == INVALID_EVENT


def test_messages_name_the_field_and_stay_short() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(_event(group_ids=["ok", "bad/id"]), SRC)
    assert "group_ids[1]" in info.value.message
    with pytest.raises(InvalidEvent) as info:
        parse_event(_event(**{"x" * 10_000: 1}), SRC)
    assert "unknown field" in info.value.message and len(info.value.message) <= MAX_MESSAGE_CHARS
    with pytest.raises(InvalidEvent) as info:
        parse_event(orjson.dumps({"event_id": "e"}), SRC)
    assert "image_url" in info.value.message


@settings(max_examples=400, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes_only_raise_invalid_event(value: bytes) -> None:
    try:
        event = parse_event(value, SRC)
    except InvalidEvent as exc:
        assert exc.code in INVALID_CODES
    else:
        assert event.image_url


_VALID = _event(event_id="e-1", group_ids=["staff"], session_id="s", metadata={"a": [1, {"b": "c"}]})


@settings(max_examples=400, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255), st.booleans()), min_size=1, max_size=4))
def test_fuzz_mutated_valid_events_only_raise_invalid_event(edits: list[tuple[int, int, bool]]) -> None:
    value = bytearray(_VALID)
    for position, byte, insert in edits:
        if insert:
            value.insert(position, byte)
        else:
            value[position] = byte
    try:
        parse_event(bytes(value), SRC)
    except InvalidEvent as exc:
        assert exc.code in INVALID_CODES


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_field_values = st.one_of(
    _json,
    st.sampled_from(["https://img/a.jpg", "http://x", "https://u@h/", "ftp://x", "https://h/\n", "a/b", ""]),
    st.lists(st.text(max_size=70), max_size=5),
)
_events = st.dictionaries(
    st.sampled_from(["event_id", "image_url", "group_ids", "session_id", "metadata", "schema_version", "other"]),
    _field_values,
)


@settings(max_examples=400, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(_events)
def test_fuzz_structured_events_only_raise_invalid_event_and_valid_ones_round_trip(doc: dict[str, Any]) -> None:
    value = orjson.dumps(doc)
    try:
        event = parse_event(value, SRC)
    except InvalidEvent as exc:
        assert exc.code in INVALID_CODES
        return
    # Whatever the parser accepts, the schema accepts, and the result record built from it is valid.
    assert not list(schemas.validator("event").iter_errors(doc))
    record = build_result(
        event,
        IdentifyResult((), "s", 200),
        source=SRC,
        attempts=1,
        api_latency_ms=1.0,
        worker_version="t",
        processed_at_ms=0,
        image_mode="url",
    )
    assert _valid("result", record)["metadata"] == doc.get("metadata")


# --- result records --------------------------------------------------------------------------------------


def _face(n_candidates: int, x: int = 10) -> Face:
    candidates = tuple(Candidate(f"p{i}", f"f{i}", 90.0 - i * 7.5, f"t{i}") for i in range(n_candidates))
    return Face(FaceRect(x, 20, 30, 40), candidates)


def test_result_record_is_valid_and_complete() -> None:
    event = parse_event(_event(event_id="e-9", group_ids=["g"], session_id="s-1", metadata={"cam": 7}), SRC)
    faces = (_face(7), _face(0, x=-3))
    record = _valid(
        "result",
        build_result(
            event,
            IdentifyResult(faces, "tc-sess", 200),
            source=SRC,
            attempts=2,
            api_latency_ms=312.5,
            worker_version="0.1.0",
            processed_at_ms=1_700_000_000_123,
            image_mode="image",
        ),
    )
    assert record["event_id"] == "e-9" and record["session_id"] == "s-1" and record["group_ids"] == ["g"]
    assert record["face_count"] == 2
    first, second = record["faces"]
    assert first["face_rect"] == {"x": 10, "y": 20, "width": 30, "height": 40}
    assert [c["person_id"] for c in first["candidates"]] == ["p0", "p1", "p2", "p3", "p4"]
    assert first["best_match"] == first["candidates"][0]
    assert second == {"face_rect": {"x": -3, "y": 20, "width": 30, "height": 40}, "candidates": [], "best_match": None}
    assert record["metadata"] == {"cam": 7}
    assert record["api"] == {
        "name": "v1",
        "latency_ms": 312.5,
        "attempts": 2,
        "session_id": "tc-sess",
        "http_status": 200,
        "image_mode": "image",
    }
    assert record["source"] == {"topic": "images", "partition": 3, "offset": 1234, "timestamp_ms": 1_700_000_000_000}
    assert record["processed_at"] == "2023-11-14T22:13:20.123Z"


def test_an_iai_result_names_its_api_and_keeps_every_candidate_asked_for_and_quality_failed_faces() -> None:
    ten = tuple(Candidate(f"p{i}", f"f{i}", 95.0 - i, "", person_name=f"Person {i}") for i in range(10))
    faces = (Face(FaceRect(-4, -2, 30, 40), ten, ret_code=0), Face(FaceRect(5, 6, 20, 20), (), ret_code=-1601))
    record = _valid(
        "result",
        build_result(
            parse_event(_event(), SRC),
            IdentifyResult(faces, "57b42b73-b978-45b9-8095-8f50e9642d35", 200, api=Api.IAI),
            source=SRC,
            attempts=1,
            api_latency_ms=80.0,
            worker_version="0.1.0",
            processed_at_ms=0,
            image_mode="url",
        ),
    )
    assert record["api"]["name"] == "iai"
    assert record["api"]["session_id"] == "57b42b73-b978-45b9-8095-8f50e9642d35"
    searched, refused = record["faces"]
    # MaxPersonNum is the request's: nothing is cut at v1's five.
    assert [c["person_id"] for c in searched["candidates"]] == [f"p{i}" for i in range(10)]
    assert searched["best_match"]["person_name"] == "Person 0"
    assert searched["face_rect"] == {"x": -4, "y": -2, "width": 30, "height": 40} and searched["ret_code"] == 0
    assert refused == {
        "face_rect": {"x": 5, "y": 6, "width": 20, "height": 20},
        "candidates": [],
        "best_match": None,
        "ret_code": -1601,
    }


def test_a_dead_letter_names_the_api_the_worker_called() -> None:
    doc = _valid(
        "deadletter",
        build_dead_letter(
            b"{}",
            event_id="e",
            error=ErrorInfo("FailedOperation.ImageDownloadError", "permanent", "download failed", 200, 1, 1, 2),
            source=SRC,
            worker_version="v",
            api=Api.IAI,
        ),
    )
    assert doc["worker"]["api"] == "iai" and doc["error"]["code"] == "FailedOperation.ImageDownloadError"
    assert doc["error"]["meaning"] != "FailedOperation.ImageDownloadError"  # the registry explains it


def test_result_candidates_are_ranked_best_first() -> None:
    unordered = Face(FaceRect(0, 0, 1, 1), tuple(Candidate(f"p{c}", "f", float(c), "") for c in (3, 50, 12, 50, 1, 99)))
    record = orjson.loads(
        build_result(
            parse_event(_event(), SRC),
            IdentifyResult((unordered,), "s", 200),
            source=SRC,
            attempts=1,
            api_latency_ms=0,
            worker_version="v",
            processed_at_ms=0,
            image_mode="url",
        )
    )
    assert [c["confidence"] for c in record["faces"][0]["candidates"]] == [99, 50, 50, 12, 3]


def test_result_with_huge_metadata_is_valid_and_passes_it_through() -> None:
    metadata = {"items": [{"k": i, "v": "x" * 50, "nested": {"a": [i, None, True]}} for i in range(2000)]}
    event = parse_event(_event(metadata=metadata), SRC)
    record = _valid(
        "result",
        build_result(
            event,
            IdentifyResult((_face(1),), "s", 200),
            source=SRC,
            attempts=1,
            api_latency_ms=1,
            worker_version="v",
            processed_at_ms=5,
            image_mode="url",
        ),
    )
    assert record["metadata"] == metadata


# --- dead letters ----------------------------------------------------------------------------------------


def _info(code: str = "-1308", error_class: str = "permanent") -> ErrorInfo:
    return ErrorInfo(code, error_class, "url image download failed", 200, 1, 1_000, 2_000)


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"\xff\x00\xfe binary \x80", orjson.dumps({"image_url": "https://x/a.jpg"}), bytes(range(256)) * 40],
)
def test_dead_letter_is_valid_and_keeps_the_original_bytes(raw: bytes | None) -> None:
    source = Source("in", 0, 7, None, b"\x00key\xff", (("traceparent", b"00-1"), ("h", None), ("bin", b"\xff")))
    doc = _valid(
        "deadletter",
        build_dead_letter(
            raw, event_id=None, error=_info(), source=source, worker_version="0.1.0", dead_lettered_at_ms=3_000
        ),
    )
    original = doc["original"]
    if raw is None:
        assert original["value_base64"] is None and original["value_size"] is None
    else:
        assert base64.b64decode(original["value_base64"], validate=True) == raw
        assert original["value_size"] == len(raw)
    assert base64.b64decode(original["key_base64"]) == b"\x00key\xff"
    assert [(n, v if v is None else base64.b64decode(v)) for n, v in original["headers"]] == list(source.headers)
    assert original["timestamp_ms"] is None and original["value_omitted"] is False


def test_dead_letter_error_fields() -> None:
    error = ApiError.from_service(15, "rate limited", 200)
    info = ErrorInfo.from_api_error(error, attempts=5, first_failure_ms=10, last_failure_ms=4)
    doc = _valid(
        "deadletter",
        build_dead_letter(
            b"{}",
            event_id="e-1",
            error=info,
            source=SRC,
            worker_version="v",
            dead_lettered_at_ms=20,
            replay_count=2,
            consumer_group="mdw",
        ),
    )
    assert doc["error"] == {
        "code": "15",
        "class": "transient",
        "disposition": "retries_exhausted",
        "meaning": "rate limited",
        "message": "rate limited",
        "http_status": 200,
        "attempts": 5,
        "first_failure_ms": 10,
        "last_failure_ms": 10,  # a clock step backwards does not produce last < first
    }
    assert doc["event_id"] == "e-1" and doc["replay_count"] == 2
    assert doc["worker"] == {"version": "v", "consumer_group": "mdw"}
    assert doc["dead_lettered_at"] == "1970-01-01T00:00:00.020Z"


def test_dead_lettered_at_defaults_to_the_last_failure() -> None:
    doc = orjson.loads(build_dead_letter(b"x", event_id="e", error=_info(), source=SRC, worker_version="v"))
    assert doc["dead_lettered_at_ms"] == 2_000


def test_dead_letter_for_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(b"\xff", SRC)
    info = ErrorInfo.from_invalid(caught.value, at_ms=99)
    doc = _valid(
        "deadletter",
        build_dead_letter(b"\xff", event_id=None, error=info, source=SRC, worker_version="v", dead_lettered_at_ms=99),
    )
    assert doc["error"]["code"] == INVALID_UTF8 and doc["error"]["class"] == "invalid"
    assert doc["error"]["disposition"] == "rejected" and doc["error"]["attempts"] == 0


def test_dead_letter_truncates_long_messages() -> None:
    info = ErrorInfo("-1308", "permanent", "m" * 10_000, None, 1, 0, 0)
    doc = _valid(
        "deadletter",
        build_dead_letter(b"x", event_id="e", error=info, source=SRC, worker_version="v", dead_lettered_at_ms=0),
    )
    assert len(doc["error"]["message"]) == MAX_MESSAGE_CHARS


def test_dead_letter_omits_a_value_too_large_to_embed() -> None:
    doc = _valid(
        "deadletter",
        build_dead_letter(
            b"x" * 101,
            event_id=None,
            error=_info(),
            source=SRC,
            worker_version="v",
            dead_lettered_at_ms=0,
            max_original_bytes=100,
        ),
    )
    assert doc["original"]["value_omitted"] is True
    assert doc["original"]["value_base64"] is None and doc["original"]["value_size"] == 101


def test_config_errors_are_never_dead_lettered() -> None:
    with pytest.raises(ValueError, match="never dead-lettered"):
        ErrorInfo.from_api_error(
            ApiError.from_service(14, "sig", 200), attempts=1, first_failure_ms=0, last_failure_ms=0
        )
    assert ApiError.from_service(14, "", 200).error_class is ErrorClass.CONFIG


@settings(max_examples=100, deadline=1000)
@given(
    raw=st.none() | st.binary(max_size=500),
    key=st.none() | st.binary(max_size=50),
    headers=st.lists(st.tuples(st.text(max_size=20), st.none() | st.binary(max_size=30)), max_size=5),
)
def test_fuzz_dead_letter_round_trip(raw: bytes | None, key: bytes | None, headers: list[Any]) -> None:
    source = Source("t", 1, 2, 3, key, tuple(headers))
    doc = _valid(
        "deadletter",
        build_dead_letter(raw, event_id=None, error=_info(), source=source, worker_version="v", dead_lettered_at_ms=0),
    )
    encoded = doc["original"]["value_base64"]
    assert (None if encoded is None else base64.b64decode(encoded)) == raw
    assert (None if doc["original"]["key_base64"] is None else base64.b64decode(doc["original"]["key_base64"])) == key


# --- keys and headers ------------------------------------------------------------------------------------


def test_dead_letter_key_is_the_code() -> None:
    assert dead_letter_key("-1308") == b"-1308"
    assert dead_letter_key("invalid_json") == b"invalid_json"
    assert dead_letter_key(ApiError.local("http_503", "x", http_status=503).code) == b"http_503"


def test_dead_letter_headers_copy_the_input_and_cannot_be_spoofed() -> None:
    source = Source(
        "in",
        2,
        9,
        1234,
        b"k\xff",
        (("traceparent", b"tp"), ("mdw.replay.count", b"0"), ("MDW.error.code", b"fake"), ("x", None)),
    )
    headers = dead_letter_headers(source, _info("15", "transient"), "0.1.0", replay_count=3)
    assert headers[:2] == [("traceparent", b"tp"), ("x", None)]
    ours = dict(headers[2:])
    assert ours == {
        H_ORIGINAL_TOPIC: b"in",
        H_ORIGINAL_PARTITION: b"2",
        H_ORIGINAL_OFFSET: b"9",
        H_ORIGINAL_TIMESTAMP: b"1234",
        H_ORIGINAL_KEY: b"k\xff",
        H_ERROR_CODE: b"15",
        H_ERROR_CLASS: b"transient",
        H_WORKER_VERSION: b"0.1.0",
        H_REPLAY_COUNT: b"3",
    }
    assert len(headers) == 2 + len(ours)  # no duplicates of our names


def test_dead_letter_headers_without_key_or_timestamp() -> None:
    names = [n for n, _ in dead_letter_headers(Source("in", 0, 0), _info(), "v", 0)]
    assert H_ORIGINAL_KEY not in names and H_ORIGINAL_TIMESTAMP not in names


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((), 0),
        ((("mdw.replay.count", b"2"),), 2),
        ((("mdw.replay.count", b"1"), ("mdw.replay.count", b"4")), 4),
        ((("mdw.replay.count", b"-1"),), 0),
        ((("mdw.replay.count", b"two"),), 0),
        ((("mdw.replay.count", None),), 0),
        ((("mdw.replay.count", b"9" * 50),), 0),
        ((("other", b"5"),), 0),
    ],
)
def test_replay_count(headers: tuple[tuple[str, bytes | None], ...], expected: int) -> None:
    assert replay_count(headers) == expected


def test_result_headers_carry_trace_context_only() -> None:
    source = Source(
        "in", 0, 0, headers=(("traceparent", b"00-a-b-01"), ("TraceState", b"k=v"), ("x", b"1"), ("tracestate", None))
    )
    assert result_headers(source) == [("traceparent", b"00-a-b-01"), ("tracestate", b"k=v")]


def test_rfc3339() -> None:
    assert rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339_ms(1_700_000_000_999) == "2023-11-14T22:13:20.999Z"


def test_source_from_a_confluent_message() -> None:
    class Msg:
        def topic(self) -> str:
            return "t"

        def partition(self) -> int:
            return 4

        def offset(self) -> int:
            return 10

        def timestamp(self) -> tuple[int, int]:
            return (0, -1)

        def key(self) -> bytes | None:
            return None

        def headers(self) -> list[tuple[str, bytes | None]] | None:
            return [("a", b"1")]

    assert Source.from_message(Msg()) == Source("t", 4, 10, None, None, (("a", b"1"),))


def test_oversized_original_key_and_headers_are_left_out_but_the_trace_context_stays() -> None:
    from worker.core.records import (
        MAX_ORIGINAL_HEADER_BYTES,
        MAX_ORIGINAL_KEY_BYTES,
        ErrorInfo,
        InvalidEvent,
        Source,
        build_dead_letter,
        dead_letter_headers,
    )
    from worker.schemas import validator

    trace = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    huge = ("blob", b"x" * (MAX_ORIGINAL_HEADER_BYTES + 1))
    source = Source("in", 0, 5, None, key=b"k" * (MAX_ORIGINAL_KEY_BYTES + 1), headers=(trace, huge))
    error = ErrorInfo.from_invalid(InvalidEvent("invalid_json", "not json"), at_ms=1)
    envelope = orjson.loads(build_dead_letter(b"v", event_id=None, error=error, source=source, worker_version="t"))
    validator("deadletter").validate(envelope)
    original = envelope["original"]
    assert original["key_omitted"] is True and original["key_base64"] is None
    assert original["headers_omitted"] is True
    assert original["headers"] == [["traceparent", base64.b64encode(trace[1]).decode()]]
    headers = dead_letter_headers(source, error, "t", 0)
    assert trace in headers and all(name != "blob" for name, _ in headers)
    assert all(name != "mdw.original.key" for name, _ in headers)
    assert sum(len(v or b"") for _, v in headers) < 4096
