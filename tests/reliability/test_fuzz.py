"""Bounded fuzzing of every parser that reads bytes someone else controls: no crash, no hang.

* ``worker.core.records.parse_event`` (input records): an :class:`Event` or ``InvalidEvent`` with a known code,
  never another exception; an accepted event satisfies every rule the parser promises and round-trips
  through the result and dead-letter builders.
* ``worker.api.models.parse_multidentify`` (API answers): an ``IdentifyResult`` or ``ApiError``, nothing else.
* ``worker.api.signature.parse`` (Authorization headers, in the emulator): ``ParsedSignature`` or
  ``SignatureFormatError``.
* the emulator's request parsing (``worker.emulator.wire.Fields``, then the whole handler over HTTP): only
  ``BodyError`` from the parser, and over HTTP always a documented envelope ``{"data", "code", "message"}``.

Crashes found on the way (5000-digit array indexes and expiry fields, non-ASCII boundaries) are pinned by the
regression tests at the end.
"""

from __future__ import annotations

import base64
import time

import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.records import result_value
from worker.api.errors import ApiError, ErrorClass
from worker.api.models import Candidate, Face, FaceRect, parse_multidentify
from worker.api.signature import ParsedSignature, SignatureFormatError, parse, sign, sign_plain
from worker.core import records
from worker.emulator import DEV_ACCOUNT, EmulatorHandle
from worker.emulator.wire import BodyError, Fields

FUZZ = settings(
    max_examples=200,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
SOURCE = records.Source("images", 3, 1234, 1_700_000_000_000, b"k", (("traceparent", b"x"),))

# --- hostile JSON structures ---------------------------------------------------------------------------------

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what JSON (orjson) can carry
scalars = st.none() | st.booleans() | int64 | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
hosts = st.sampled_from(
    ["127.0.0.1", "localhost", "[::1]", "a.example", "xn--80ak6aa92e.com", "0x7f.1", "", "@", "%00"]
)
schemes = st.sampled_from(["http", "https", "HTTP", "hTtPs", "file", "gopher", "javascript", "data", "ftp", ""])
urls = st.builds(
    lambda s, sep, userinfo, h, port, path: f"{s}{sep}{userinfo}{h}{port}/{path}",
    schemes,
    st.sampled_from(["://", ":", ":///", "//"]),
    st.sampled_from(["", "user:pw@", "@"]),
    hosts,
    st.sampled_from(["", ":0", ":80", ":65536", ":-1", ":x"]),
    st.text(max_size=30),
) | st.text(max_size=60)
ids = st.text(max_size=140) | int64 | st.none()
events = st.fixed_dictionaries(
    {},
    optional={
        "event_id": ids,
        "image_url": st.sampled_from(["http://127.0.0.1/a.jpg", "HTTPS://h.example:8443/p?q=1#f"]) | urls | json_values,
        "group_ids": st.lists(st.text(max_size=70) | int64, max_size=5) | json_values,
        "session_id": st.text(max_size=140) | json_values,
        "metadata": json_values,
        "schema_version": st.sampled_from([1, 2, 0, -1, 1.0, "1", True, None]),
        "unknown": json_values,
    },
)


def _deep(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"image_url":"http://a/b","metadata":' + b'{"a":' * depth + b"0" + b"}" * depth + b"}"


raw_values = (
    events.map(orjson.dumps)
    | st.tuples(events.map(orjson.dumps), st.sampled_from(["bom", "utf16", "latin1-tail", "cut", "nul", "dup"])).map(
        lambda pair: {
            "bom": b"\xef\xbb\xbf" + pair[0],
            "utf16": pair[0].decode().encode("utf-16"),
            "latin1-tail": pair[0] + "é".encode("latin-1"),
            "cut": pair[0][: len(pair[0]) // 2],
            "nul": pair[0] + b"\x00",
            "dup": pair[0][:-1] + b',"image_url":"ftp://x/y"}' if pair[0] != b"{}" else pair[0],
        }[pair[1]]
    )
    | st.builds(_deep, st.integers(1, 3000), st.sampled_from(["array", "metadata"]))
    | st.binary(max_size=300)
    | st.none()
)


def _check_event(event: records.Event) -> None:
    from urllib.parse import urlsplit

    url = event.image_url
    parts = urlsplit(url)
    assert parts.scheme.lower() in ("http", "https") and parts.hostname, url
    assert "@" not in parts.netloc and len(url) <= 2048
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url)
    assert 0 < len(event.event_id) <= 128 or event.event_id_derived
    if event.group_ids is not None:
        assert 1 <= len(event.group_ids) <= 100
        for g in event.group_ids:
            assert isinstance(g, str) and 1 <= len(g) <= 64 and "/" not in g and not any(c.isspace() for c in g)
    assert event.session_id is None or len(event.session_id) <= 128


@FUZZ
@given(raw_values)
def test_parse_event_accepts_or_refuses_with_a_known_code(raw: bytes | None) -> None:
    try:
        event = records.parse_event(raw, SOURCE)
    except records.InvalidEvent as invalid:
        assert invalid.code in records.INVALID_CODES
        assert len(invalid.message) <= records.MAX_MESSAGE_CHARS
        error = records.ErrorInfo.from_invalid(invalid, at_ms=1)
        envelope = orjson.loads(
            records.build_dead_letter(raw, event_id=None, error=error, source=SOURCE, worker_version="t")
        )
        assert envelope["original"]["value_base64"] == (None if raw is None else base64.b64encode(raw).decode())
        return
    _check_event(event)
    face = Face(FaceRect(1, 2, 3, 4), (Candidate("p", "f", 90.5, "t"),))
    record = orjson.loads(result_value(faces=(face,), event=event, source=SOURCE, processed_at_ms=1))
    assert record["metadata"] == event.metadata  # passed through unchanged
    assert record["event_id"] == event.event_id


# --- API answers ----------------------------------------------------------------------------------------------

rect_values = st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=3) | st.none() | st.booleans()
candidates = st.fixed_dictionaries(
    {},
    optional={
        "person_id": st.text(max_size=8) | int64,
        "face_id": st.text(max_size=8) | st.none(),
        "confidence": st.floats() | int64 | st.text(max_size=3) | st.booleans(),
        "tag": st.text(max_size=8) | st.none(),
    },
)
faces = st.fixed_dictionaries(
    {},
    optional={
        "face_rect": st.fixed_dictionaries({}, optional={k: rect_values for k in ("x", "y", "width", "height")})
        | json_values,
        "candidates": st.lists(candidates, max_size=6) | json_values,
    },
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "code": st.integers(-(2**40), 2**40) | st.sampled_from([0, 0, 0, 15, -1101, 14]) | st.floats() | json_values,
        "message": st.text(max_size=400) | json_values,
        "data": st.fixed_dictionaries(
            {}, optional={"results": st.lists(faces, max_size=4) | json_values, "session_id": json_values}
        )
        | json_values,
    },
)


@FUZZ
@given(
    st.one_of(
        envelopes.map(orjson.dumps), st.binary(max_size=200), st.builds(_deep, st.integers(1, 2000), st.just("array"))
    ),
    st.integers(100, 599),
)
def test_parse_multidentify_returns_a_result_or_an_api_error(body: bytes, status: int) -> None:
    try:
        result = parse_multidentify(body, status)
    except ApiError as err:
        assert isinstance(err.code, str) and err.code
        assert isinstance(err.error_class, ErrorClass)
        assert len(err.message) <= 600
        return
    assert 200 <= status < 300
    for face in result.faces:
        for value in (face.rect.x, face.rect.y, face.rect.width, face.rect.height):
            assert isinstance(value, int) and not isinstance(value, bool)
        for c in face.candidates:
            assert isinstance(c.confidence, float) and c.confidence == c.confidence  # finite, not NaN


# --- signatures -------------------------------------------------------------------------------------------------

pairs = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "k", "e", "t", "r", "f", "u", "", "x"]),
        st.text(alphabet=st.characters(max_codepoint=127), max_size=12),
    ),
    max_size=9,
)


@FUZZ
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        st.builds(
            lambda digest, kv: base64.b64encode(digest + "&".join(f"{k}={v}" for k, v in kv).encode()).decode(),
            st.binary(min_size=0, max_size=24),
            pairs,
        ),
    )
)
def test_signature_parse_accepts_or_raises_its_format_error(header: str | bytes) -> None:
    try:
        sig = parse(header)
    except SignatureFormatError:
        return
    assert isinstance(sig, ParsedSignature)
    assert len(sig.digest) == 20
    assert {"a", "k", "e", "t"} <= set(sig.fields)
    assert sig.expires_at >= 0 and sig.signed_at >= 0


# --- the emulator's request parsing -------------------------------------------------------------------------------

field_names = st.sampled_from(
    ["appid", "group_id", "group_ids", "group_ids[0]", "group_ids[]", "url", "image", "images[1]", "person_id"]
) | st.text(max_size=12)
boundaries = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=255, exclude_characters='";\\'), min_size=1)


def _multipart(boundary: str, parts: list[tuple[str, str | None, bytes]], crlf: bool) -> bytes:
    nl = b"\r\n" if crlf else b"\n"
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += b"--" + boundary.encode("latin-1") + nl
        out += b"Content-Disposition: " + disposition.encode("utf-8", "replace") + nl + nl + data + nl
    return out + b"--" + boundary.encode("latin-1") + b"--" + nl


safe_names = field_names.filter(lambda n: not any(ch.isdigit() for ch in n) or len(n) < 40)
part_lists = st.lists(
    st.tuples(safe_names, st.none() | st.text(max_size=8), st.binary(max_size=64)),
    max_size=6,
)
bodies = st.one_of(
    st.builds(
        lambda b, parts, crlf: (_multipart(b, parts, crlf), f"multipart/form-data; boundary={b}"),
        boundaries.filter(lambda b: len(b) < 60),
        part_lists,
        st.booleans(),
    ),
    st.tuples(st.binary(max_size=200), st.sampled_from(["multipart/form-data; boundary=x", "multipart/form-data"])),
    st.tuples(
        st.binary(max_size=200) | json_values.map(orjson.dumps), st.sampled_from(["application/json", "", "x/y"])
    ),
)


@FUZZ
@given(bodies)
def test_emulator_body_parser_raises_only_body_error(body_and_type: tuple[bytes, str]) -> None:
    body, content_type = body_and_type
    try:
        fields = Fields.parse(body, content_type)
    except BodyError:
        return
    for name in ("appid", "group_id", "url", "person_id"):
        fields.text(name)
    for name in ("group_ids", "urls"):
        fields.texts(name)
    for name in ("image", "images"):
        fields.blob(name)
        fields.blobs(name)


def _not_http(text: str) -> bool:
    return not text.strip().lower().startswith(("http://", "https://"))


# Field values never name a host other than a closed loopback port: the emulator downloads http(s) urls.
url_values = st.text(max_size=30).filter(_not_http) | st.just("http://127.0.0.1:9/x.jpg")
json_requests = st.fixed_dictionaries(
    {"appid": st.just(DEV_ACCOUNT.appid) | scalars},
    optional={
        "group_id": st.text(max_size=20) | scalars,
        "group_ids": st.lists(st.text(max_size=10) | int64, max_size=4) | scalars,
        "url": url_values | scalars.filter(lambda v: not isinstance(v, str)),
        "urls": st.lists(url_values, max_size=3),
        "image": st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=20),
        "person_id": st.text(max_size=20),
        "session_id": json_values,
    },
).map(lambda d: (orjson.dumps(d), "application/json"))
multipart_requests = st.builds(
    lambda b, parts, crlf: (_multipart(b, [("appid", None, DEV_ACCOUNT.appid.encode()), *parts], crlf), b),
    st.sampled_from(["xYz", "----b0undary", "a'b"]),
    st.lists(
        st.tuples(
            st.sampled_from(["group_id", "group_ids[0]", "group_ids[]", "image", "images[0]", "person_id", "tag"])
            | st.text(max_size=10),
            st.none() | st.just("image.jpg"),
            st.binary(max_size=64),
        ),
        max_size=5,
    ),
    st.booleans(),
).map(lambda pair: (pair[0], f"multipart/form-data; boundary={pair[1]}"))
actions = st.sampled_from(["multidentify", "identify", "newperson", "addface", "getinfo", "getgroupids", "nope"])


@settings(FUZZ, max_examples=150)
@given(actions, json_requests | multipart_requests)
def test_emulator_answers_any_request_with_a_documented_envelope(
    emu: EmulatorHandle, action: str, request: tuple[bytes, str]
) -> None:
    body, content_type = request
    header = sign(DEV_ACCOUNT.appid, DEV_ACCOUNT.secret_id, DEV_ACCOUNT.secret_key, now=int(time.time()), lifetime=600)
    with requests.Session() as session:
        session.trust_env = False  # loopback only, never a proxy
        response = session.post(
            f"{emu.base_url}/face/{action}",
            data=body,
            headers={"Authorization": header, "Content-Type": content_type},
            timeout=10,
        )
    assert response.status_code == (404 if action == "nope" else 200), response.text[:200]
    envelope = orjson.loads(response.content)
    assert set(envelope) == {"data", "code", "message"}
    assert isinstance(envelope["code"], int) and isinstance(envelope["message"], str)


# --- crashes found by the fuzzers, pinned ------------------------------------------------------------------------


def _post(emulator: EmulatorHandle, body: bytes, content_type: bytes | str, header: str) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.post(
            f"{emulator.base_url}/face/multidentify",
            data=body,
            headers={"Authorization": header, "Content-Type": content_type},
            timeout=10,
        )


def _header() -> str:
    return sign(DEV_ACCOUNT.appid, DEV_ACCOUNT.secret_id, DEV_ACCOUNT.secret_key, now=int(time.time()), lifetime=600)


def test_multipart_index_with_5000_digits_is_a_bad_request(emu: EmulatorHandle) -> None:
    part = b'--x\r\nContent-Disposition: form-data; name="group_ids[' + b"9" * 5000 + b']"\r\n\r\nv\r\n--x--\r\n'
    response = _post(emu, part, "multipart/form-data; boundary=x", _header())
    assert response.status_code == 200 and orjson.loads(response.content)["code"] == 3


def test_non_latin1_boundary_is_a_bad_request(emu: EmulatorHandle) -> None:
    response = _post(emu, b"--\xe2\x82\xac\r\n", "multipart/form-data; boundary=€".encode(), _header())
    assert response.status_code == 200 and orjson.loads(response.content)["code"] == 3


def test_signature_with_a_5000_digit_expiry_is_refused_with_a_code(emu: EmulatorHandle) -> None:
    a = DEV_ACCOUNT
    header = sign_plain(a.secret_key, f"a={a.appid}&b=&k={a.secret_id}&e={'9' * 5000}&t=1&r=1&f=".encode())
    with pytest.raises(SignatureFormatError):
        parse(header).expires_at  # noqa: B018 - the property is what fails
    body = orjson.dumps({"appid": a.appid, "group_id": "demo", "url": "http://127.0.0.1:9/x.jpg"})
    response = _post(emu, body, "application/json", header)
    assert response.status_code == 200 and orjson.loads(response.content)["code"] in (5, 9)
