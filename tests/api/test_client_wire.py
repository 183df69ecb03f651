"""MultidentifyClient against a recording HTTP server: exact bytes on the wire and every failure path."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
import requests
import urllib3.filepost

from worker import __version__
from worker.api import (
    MAX_BODY_BYTES,
    ApiError,
    ClientOptions,
    ErrorClass,
    FaceRect,
    MultidentifyClient,
    class_of_code,
    parse,
)

APPID = "1251234567"
SECRET_ID = "AKIDtestSecretId0001"
SECRET_KEY = "testSecretKey0001"
URL = "http://images.example/cam1/0001.jpg"

OK_BODY = (
    b'{"data":{"session_id":"111","results":[{"candidates":[{"person_id":"person1","face_id":"10001",'
    b'"confidence":64,"tag":""},{"person_id":"person2","face_id":"100002","confidence":12,"tag":""}],'
    b'"face_rect":{"x":60,"y":80,"width":50,"height":60}}]},"code":0,"message":"OK"}'
)
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n" + b"\xff\xd9"


# -- the recording server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    client_port: int


@dataclass(frozen=True)
class Canned:
    status: int = 200
    body: bytes = OK_BODY
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    hang: bool = False  # wait (until the test ends) before answering
    trickle_s: float = 0.0  # send the body one byte at a time, this long apart


Responder = Callable[[Recorded], Canned]


class RecordingServer:
    """127.0.0.1, port 0; records every request; answers ``responses`` in order (the last one repeats)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.responses: list[Canned | Responder] = [Canned()]
        self.release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real service
            # One write per answer and no Nagle: otherwise delayed ACKs add ~40 ms per call.
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                recorded = Recorded(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                    client_port=self.client_address[1],
                )
                canned = server._record(recorded)
                if canned.hang:
                    server.release.wait(timeout=30)
                self.send_response(canned.status)
                for name, value in canned.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(canned.body)))
                self.end_headers()
                if not canned.trickle_s:
                    self.wfile.write(canned.body)
                    return
                self.wfile.flush()
                for i in range(len(canned.body)):
                    if server.release.wait(canned.trickle_s):
                        return  # the test ended
                    self.wfile.write(canned.body[i : i + 1])
                    self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the client hung up (timeout test); nothing to report

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.host = f"127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def _record(self, recorded: Recorded) -> Canned:
        with self._lock:
            index = len(self.requests)
            self.requests.append(recorded)
            choice = self.responses[min(index, len(self.responses) - 1)]
        return choice(recorded) if callable(choice) else choice

    def answer(self, *responses: Canned | Responder) -> None:
        self.responses = list(responses)

    def close(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    yield srv
    srv.close()


@pytest.fixture
def make_client(server: RecordingServer) -> Iterator[Callable[..., MultidentifyClient]]:
    clients: list[MultidentifyClient] = []

    def _make(
        session: requests.Session | None = None, clock: Callable[[], float] = time.time, **overrides: Any
    ) -> MultidentifyClient:
        options: dict[str, Any] = {
            "appid": APPID,
            "secret_id": SECRET_ID,
            "secret_key": SECRET_KEY,
            "base_url": server.url,
            "read_timeout": 5.0,
        }
        options.update(overrides)
        client = MultidentifyClient(ClientOptions(**options), session=session, clock=clock)
        clients.append(client)
        return client

    yield _make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., MultidentifyClient]) -> MultidentifyClient:
    return make_client()


def envelope(code: int, message: str = "msg") -> Canned:
    return Canned(body=orjson.dumps({"code": code, "message": message}))


def multipart_parts(recorded: Recorded) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart body with the boundary of its Content-Type: [(part headers, part bytes)]."""
    content_type = recorded.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    delimiter = b"--" + content_type.split("boundary=", 1)[1].encode()
    chunks = recorded.body.split(delimiter)
    assert chunks[0] == b""
    assert chunks[-1] == b"--\r\n"
    parts = []
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, content = chunk[2:-2].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append(({k.lower(): v for k, v in headers.items()}, content))
    return parts


def part_names(parts: list[tuple[dict[str, str], bytes]]) -> list[str]:
    return [h["content-disposition"].split('name="', 1)[1].split('"', 1)[0] for h, _ in parts]


def text_parts(parts: list[tuple[dict[str, str], bytes]]) -> dict[str, str]:
    return {
        name: content.decode()
        for name, (h, content) in zip(part_names(parts), parts, strict=True)
        if "filename=" not in h["content-disposition"]
    }


def assert_common_headers(recorded: Recorded, server: RecordingServer, path: str = "/face/multidentify") -> None:
    assert recorded.method == "POST"
    assert recorded.path == path
    assert recorded.headers["host"] == server.host
    assert recorded.headers["user-agent"] == f"multidentify-worker/{__version__}"
    assert int(recorded.headers["content-length"]) == len(recorded.body)
    signature = parse(recorded.headers["authorization"])
    assert signature.verify(SECRET_KEY)
    assert (signature.appid, signature.secret_id, signature.fields["b"]) == (APPID, SECRET_ID, "")
    assert signature.expires_at - signature.signed_at == 3600


# -- JSON (url) mode --------------------------------------------------------------------------------


def test_url_one_group_sends_group_id(client: MultidentifyClient, server: RecordingServer) -> None:
    result = client.multidentify_url(URL, ["tencent"])
    (recorded,) = server.requests
    assert_common_headers(recorded, server)
    assert recorded.headers["content-type"] == "application/json"
    assert recorded.body == b'{"appid":"1251234567","group_id":"tencent","url":"http://images.example/cam1/0001.jpg"}'
    assert result.faces[0].rect == FaceRect(60, 80, 50, 60)
    assert [c.person_id for c in result.faces[0].candidates] == ["person1", "person2"]
    assert (result.session_id, result.http_status) == ("111", 200)


def test_url_several_groups_send_a_group_ids_array(client: MultidentifyClient, server: RecordingServer) -> None:
    client.multidentify_url(URL, ["tencent", "qq"])
    assert server.requests[0].body == (
        b'{"appid":"1251234567","group_ids":["tencent","qq"],"url":"http://images.example/cam1/0001.jpg"}'
    )


def test_url_with_session_id(client: MultidentifyClient, server: RecordingServer) -> None:
    client.multidentify_url(URL, ["tencent"], session_id="evt-42")
    client.multidentify_url(URL, ["tencent", "qq"], session_id="evt-43")
    client.multidentify_url(URL, ["tencent"], session_id="")  # empty → not sent
    assert [r.body for r in server.requests] == [
        b'{"appid":"1251234567","group_id":"tencent","url":"http://images.example/cam1/0001.jpg","session_id":"evt-42"}',
        b'{"appid":"1251234567","group_ids":["tencent","qq"],"url":"http://images.example/cam1/0001.jpg",'
        b'"session_id":"evt-43"}',
        b'{"appid":"1251234567","group_id":"tencent","url":"http://images.example/cam1/0001.jpg"}',
    ]


def test_bucket_is_signed_and_sent_when_configured(
    make_client: Callable[..., MultidentifyClient], server: RecordingServer
) -> None:
    make_client(bucket="bkt", signature_lifetime=600).multidentify_url(URL, ["g"])
    (recorded,) = server.requests
    assert (
        recorded.body
        == b'{"appid":"1251234567","bucket":"bkt","group_id":"g","url":"http://images.example/cam1/0001.jpg"}'
    )
    signature = parse(recorded.headers["authorization"])
    assert signature.fields["b"] == "bkt"
    assert signature.expires_at - signature.signed_at == 600


def test_signature_is_reused_across_calls(client: MultidentifyClient, server: RecordingServer) -> None:
    client.multidentify_url(URL, ["g"])
    client.multidentify_url(URL, ["g"])
    assert server.requests[0].headers["authorization"] == server.requests[1].headers["authorization"]


def test_custom_user_agent(make_client: Callable[..., MultidentifyClient], server: RecordingServer) -> None:
    make_client(user_agent="cam-bridge/2").multidentify_url(URL, ["g"])
    assert server.requests[0].headers["user-agent"] == "cam-bridge/2"


# -- multipart (image) mode -------------------------------------------------------------------------


def test_image_one_group(client: MultidentifyClient, server: RecordingServer) -> None:
    result = client.multidentify_image(JPEG, ["tencent"], filename="test.jpg")
    (recorded,) = server.requests
    assert_common_headers(recorded, server)
    parts = multipart_parts(recorded)
    assert part_names(parts) == ["appid", "group_id", "image"]
    assert text_parts(parts) == {"appid": APPID, "group_id": "tencent"}
    image_headers, image_bytes = parts[2]
    assert image_bytes == JPEG
    assert image_headers["content-disposition"] == 'form-data; name="image"; filename="test.jpg"'
    assert image_headers["content-type"] == "image/jpeg"
    assert result.faces[0].candidates[0].confidence == 64.0


def test_image_several_groups_and_session_id(client: MultidentifyClient, server: RecordingServer) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    client.multidentify_image(png, ["tencent", "qq", "wx"], session_id="evt-7")
    parts = multipart_parts(server.requests[0])
    assert part_names(parts) == ["appid", "group_ids[0]", "group_ids[1]", "group_ids[2]", "session_id", "image"]
    assert text_parts(parts) == {
        "appid": APPID,
        "group_ids[0]": "tencent",
        "group_ids[1]": "qq",
        "group_ids[2]": "wx",
        "session_id": "evt-7",
    }
    assert parts[-1] == (
        {"content-disposition": 'form-data; name="image"; filename="image.jpg"', "content-type": "image/png"},
        png,
    )


def test_image_just_under_the_limit_is_sent(client: MultidentifyClient, server: RecordingServer) -> None:
    image = b"\xff\xd8\xff" + b"\x00" * (MAX_BODY_BYTES - 2000)
    client.multidentify_image(image, ["g"])
    (recorded,) = server.requests
    assert len(recorded.body) <= MAX_BODY_BYTES
    assert multipart_parts(recorded)[-1][1] == image


@pytest.mark.parametrize(
    ("image", "label"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image/png"),
        (b"BM" + b"\x00" * 40, "image/bmp"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20, "image/webp"),
        (b"II*\x00" + b"\x00" * 40, "image/tiff"),  # the formats fetch mode accepts are labelled alike
        (b"MM\x00*" + b"\x00" * 40, "image/tiff"),
        (b"<html>not an image</html>", "application/octet-stream"),
    ],
    ids=["png", "bmp", "webp", "tiff-le", "tiff-be", "html"],
)
def test_image_part_is_labelled_by_its_magic_bytes(
    client: MultidentifyClient, server: RecordingServer, image: bytes, label: str
) -> None:
    client.multidentify_image(image, ["g"])
    assert multipart_parts(server.requests[0])[-1][0]["content-type"] == label


FIXED_BOUNDARY = "0123456789abcdef0123456789abcdef"
PNG_SMALL = b"\x89PNG\r\n\x1a\n" + b"\x01" * 10


def requests_encoding(fields: list[tuple[str, str]], files: list[tuple[str, tuple[str, bytes, str]]]) -> bytes:
    """The body requests itself encodes for these fields and files (the reference the client must match)."""
    body = requests.Request("POST", "http://x.test/", data=fields, files=files).prepare().body
    assert isinstance(body, bytes)
    return body


@pytest.mark.parametrize(
    ("call", "fields", "files"),
    [
        (
            lambda c: c.multidentify_image(JPEG, ["tencent"], filename="test.jpg"),
            [("appid", APPID), ("group_id", "tencent")],
            [("image", ("test.jpg", JPEG, "image/jpeg"))],
        ),
        (
            lambda c: c.multidentify_image(PNG_SMALL, ["tencent", "qq"], session_id="evt-7"),
            [("appid", APPID), ("group_ids[0]", "tencent"), ("group_ids[1]", "qq"), ("session_id", "evt-7")],
            [("image", ("image.jpg", PNG_SMALL, "image/png"))],
        ),
        (
            lambda c: c.newperson("p1", ["g1"], image=JPEG, person_name='Ann "Q" 张', tag="t\\x"),
            [("appid", APPID), ("group_ids[0]", "g1"), ("person_id", "p1"), ("person_name", 'Ann "Q" 张'),
             ("tag", "t\\x")],
            [("image", ("image.jpg", JPEG, "image/jpeg"))],
        ),
        (
            lambda c: c.addface("p1", images=[JPEG, PNG_SMALL, b"\x00\x01"], tag="x"),
            [("appid", APPID), ("person_id", "p1"), ("tag", "x")],
            [("images[0]", ("image0.jpg", JPEG, "image/jpeg")), ("images[1]", ("image1.jpg", PNG_SMALL, "image/png")),
             ("images[2]", ("image2.jpg", b"\x00\x01", "application/octet-stream"))],
        ),
    ],
)  # fmt: skip
def test_multipart_body_is_byte_identical_to_what_requests_encodes(
    call: Callable[[MultidentifyClient], object],
    fields: list[tuple[str, str]],
    files: list[tuple[str, tuple[str, bytes, str]]],
    client: MultidentifyClient,
    server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.answer(Canned(body=orjson.dumps({"data": {"results": [], "session_id": ""}, "code": 0, "message": "OK"})))
    monkeypatch.setattr(urllib3.filepost, "choose_boundary", lambda: FIXED_BOUNDARY)
    call(client)
    (recorded,) = server.requests
    assert recorded.headers["content-type"] == f"multipart/form-data; boundary={FIXED_BOUNDARY}"
    assert recorded.body == requests_encoding(fields, files)
    # Framed by Content-Length (the service does not take chunked uploads), never chunked.
    assert int(recorded.headers["content-length"]) == len(recorded.body)
    assert "transfer-encoding" not in recorded.headers


class SinkServer:
    """127.0.0.1, port 0: reads each POST body in 16 KB pieces without keeping it; records (length, sha256)."""

    def __init__(self) -> None:
        self.received: list[tuple[int, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                left = int(self.headers.get("Content-Length", "0"))
                digest = hashlib.sha256()
                total = 0
                while left > 0:
                    piece = self.rfile.read(min(left, 16384))
                    if not piece:
                        break
                    digest.update(piece)
                    total += len(piece)
                    left -= len(piece)
                server.received.append((total, digest.hexdigest()))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(OK_BODY)))
                self.end_headers()
                self.wfile.write(OK_BODY)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def test_an_upload_makes_no_full_copy_of_the_image(
    make_client: Callable[..., MultidentifyClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 1.3 MB image goes out as prefix + the image itself + suffix: the only large allocation in this
    # process is the image. Encoding the body in one piece (requests' way) holds it at least twice.
    monkeypatch.setattr(urllib3.filepost, "choose_boundary", lambda: FIXED_BOUNDARY)
    sink = SinkServer()
    try:
        client = make_client(base_url=sink.url)
        client.multidentify_image(JPEG, ["g"])  # connection and signature ready before measuring
        size = 1_300_000
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            image = b"\xff\xd8\xff".ljust(size, b"\0")  # one allocation: the image itself
            client.multidentify_image(image, ["g"], session_id="evt-1")
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
        assert peak < 1.2 * size, f"the upload allocated {peak / size:.2f} × the image size"
        expected = requests_encoding(
            [("appid", APPID), ("group_id", "g"), ("session_id", "evt-1")],
            [("image", ("image.jpg", image, "image/jpeg"))],
        )
        assert sink.received[-1] == (len(expected), hashlib.sha256(expected).hexdigest())
    finally:
        sink.close()


# -- service errors ---------------------------------------------------------------------------------

DOCUMENTED_CODES = [3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16, 21, 23, 24, 107, 108, 213,
                    *range(-1101, -1110, -1), -1200, *range(-1300, -1314, -1), -1400, -1403]  # fmt: skip


@pytest.mark.parametrize("code", DOCUMENTED_CODES)
def test_documented_code_in_body_maps_to_api_error(
    code: int, client: MultidentifyClient, server: RecordingServer
) -> None:
    server.answer(envelope(code, "服务端消息"))
    with pytest.raises(ApiError) as info:
        client.multidentify_url(URL, ["g"])
    error = info.value
    assert (error.code, error.error_class, error.message, error.http_status) == (
        str(code),
        class_of_code(code),
        "服务端消息",
        200,
    )
    # 9 and 13 were re-signed and sent once more; everything else exactly once.
    assert len(server.requests) == (2 if code in (9, 13) else 1)


@pytest.mark.parametrize("code", [9, 13])
def test_resign_retry_then_success(code: int, client: MultidentifyClient, server: RecordingServer) -> None:
    server.answer(envelope(code), Canned())
    result = client.multidentify_image(JPEG, ["g"])
    assert result.session_id == "111"
    first, second = server.requests
    assert first.headers["authorization"] != second.headers["authorization"]
    assert parse(second.headers["authorization"]).verify(SECRET_KEY)
    assert first.body == second.body
    # The fresh signature is kept for the next call.
    client.multidentify_url(URL, ["g"])
    assert server.requests[2].headers["authorization"] == second.headers["authorization"]


def test_resign_happens_once_per_call(client: MultidentifyClient, server: RecordingServer) -> None:
    server.answer(envelope(9), envelope(13), Canned())
    with pytest.raises(ApiError) as info:
        client.multidentify_url(URL, ["g"])
    assert info.value.code == "13"
    assert info.value.error_class is ErrorClass.CONFIG
    assert len(server.requests) == 2
    assert client.multidentify_url(URL, ["g"]).faces  # the next call starts over


def test_http_503_without_json_is_transient(client: MultidentifyClient, server: RecordingServer) -> None:
    server.answer(Canned(status=503, body=b"Service Unavailable", headers={"Retry-After": "7"}))
    with pytest.raises(ApiError) as info:
        client.multidentify_url(URL, ["g"])
    error = info.value
    assert (error.code, error.error_class, error.http_status, error.retry_after) == (
        "http_503",
        ErrorClass.TRANSIENT,
        503,
        7.0,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:51:37 GMT", 120.0),  # an HTTP-date: the time until then by the client's clock
        ("Sun, 06 Nov 1994 08:40:00 GMT", 0.0),  # already past: retry at once
        ("99999999", 86400.0),  # bounded (the retry policy caps it further)
        ("2.5", 2.5),
        ("-1", None),
        ("later", None),
    ],
)
def test_retry_after_forms(
    make_client: Callable[..., MultidentifyClient], server: RecordingServer, value: str, expected: float | None
) -> None:
    client = make_client(clock=lambda: 784111777.0)  # Sun, 06 Nov 1994 08:49:37 GMT
    server.answer(Canned(status=503, body=b"Service Unavailable", headers={"Retry-After": value}))
    with pytest.raises(ApiError) as info:
        client.multidentify_url(URL, ["g"])
    assert info.value.retry_after == expected


def test_http_429_is_rate_limited(client: MultidentifyClient, server: RecordingServer) -> None:
    server.answer(Canned(status=429, body=b""))
    with pytest.raises(ApiError) as info:
        client.multidentify_url(URL, ["g"])
    assert info.value.code == "http_429"
    assert info.value.rate_limited
    assert info.value.retry_after is None


def test_code_in_a_non_200_body_wins(client: MultidentifyClient, server: RecordingServer) -> None:
    server.answer(Canned(status=413, body=b'{"code":23,"message":"too big"}'))
    with pytest.raises(ApiError) as info:
        client.multidentify_url(URL, ["g"])
    assert (info.value.code, info.value.error_class, info.value.http_status) == ("23", ErrorClass.PERMANENT, 413)


def test_non_json_200_is_bad_response(client: MultidentifyClient, server: RecordingServer) -> None:
    server.answer(Canned(body=b"<html>hello</html>", headers={"Content-Type": "text/html"}))
    with pytest.raises(ApiError) as info:
        client.multidentify_url(URL, ["g"])
    assert (info.value.code, info.value.error_class) == ("bad_response", ErrorClass.TRANSIENT)


def test_redirect_is_not_followed(client: MultidentifyClient, server: RecordingServer) -> None:
    server.answer(Canned(status=302, body=b"", headers={"Location": "http://127.0.0.1:1/x"}))
    with pytest.raises(ApiError) as info:
        client.multidentify_url(URL, ["g"])
    assert info.value.code == "http_302"
    assert len(server.requests) == 1


# -- transport failures -----------------------------------------------------------------------------


def test_read_timeout(make_client: Callable[..., MultidentifyClient], server: RecordingServer) -> None:
    server.answer(Canned(hang=True))
    with pytest.raises(ApiError) as info:
        make_client(read_timeout=0.2).multidentify_url(URL, ["g"])
    assert (info.value.code, info.value.error_class) == ("timeout", ErrorClass.TRANSIENT)
    assert len(server.requests) == 1


def test_a_body_trickling_within_the_read_timeout_is_cut_at_the_call_deadline(
    make_client: Callable[..., MultidentifyClient], server: RecordingServer
) -> None:
    # Each byte arrives well within the 0.3 s read timeout, but the whole body would take ~20 s.
    server.answer(Canned(trickle_s=0.05))
    client = make_client(connect_timeout=0.2, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ApiError) as err:
        client.multidentify_url(URL, ["g"])
    assert err.value.code == "timeout" and err.value.transient
    assert time.monotonic() - started < 5


def test_connections_are_kept_alive_across_calls(client: MultidentifyClient, server: RecordingServer) -> None:
    for _ in range(10):
        client.multidentify_url(URL, ["g"])
    assert len({r.client_port for r in server.requests}) == 1  # one TCP connection for all ten calls


def test_connection_refused(make_client: Callable[..., MultidentifyClient]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port was bound then closed: nothing listens there.
    with pytest.raises(ApiError) as info:
        make_client(base_url=f"http://127.0.0.1:{port}").multidentify_url(URL, ["g"])
    assert (info.value.code, info.value.error_class) == ("connection", ErrorClass.TRANSIENT)


# -- local refusals: nothing reaches the server ----------------------------------------------------

GIF = b"GIF89a" + b"\x00" * 50


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda c: c.multidentify_url("", ["g"]), "-1301"),
        (lambda c: c.multidentify_url("   ", ["g"]), "-1301"),
        (lambda c: c.multidentify_url(URL, []), "-1301"),
        (lambda c: c.multidentify_url(URL, [""]), "-1301"),
        (lambda c: c.multidentify_url(URL, ["a b"]), "-1313"),
        (lambda c: c.multidentify_url(URL, ["ok", "a/b"]), "-1313"),
        (lambda c: c.multidentify_url(URL, ["a\tb"]), "-1313"),
        (lambda c: c.multidentify_url(URL, ["a\nb"]), "-1313"),
        (lambda c: c.multidentify_image(JPEG, ["a b"]), "-1313"),
        (lambda c: c.multidentify_image(GIF, ["g"]), "-1400"),
        (lambda c: c.multidentify_image(b"GIF87a....", ["g"]), "-1400"),
        (lambda c: c.multidentify_image(b"", ["g"]), "-1300"),
        (lambda c: c.multidentify_image(b"\xff\xd8\xff" + b"\x00" * MAX_BODY_BYTES, ["g"]), "23"),
        # The image alone fits, image + multipart overhead does not.
        (lambda c: c.multidentify_image(b"\xff\xd8\xff" + b"\x00" * (MAX_BODY_BYTES - 50), ["g"]), "23"),
        (lambda c: c.newperson("p 1", ["g"], url=URL), "-1313"),
        (lambda c: c.newperson("p1", [], url=URL), "-1301"),
        (lambda c: c.newperson("p1", ["g"]), "-1301"),
        (lambda c: c.newperson("p1", ["g"], image=GIF), "-1400"),
        (lambda c: c.addface("p1"), "-1301"),
        (lambda c: c.addface("p1", images=[]), "-1301"),
        (lambda c: c.addface("p1", images=[JPEG, GIF]), "-1400"),
        (lambda c: c.addface("p1", urls=[URL, ""]), "-1301"),
        (lambda c: c.addface("", urls=[URL]), "-1301"),
        (lambda c: c.delperson("a/b"), "-1313"),
        (lambda c: c.getinfo(""), "-1301"),
        (lambda c: c.getpersonids("x y"), "-1313"),
    ],
)
def test_local_refusals_send_nothing(
    call: Callable[[MultidentifyClient], object], code: str, client: MultidentifyClient, server: RecordingServer
) -> None:
    with pytest.raises(ApiError) as info:
        call(client)
    assert info.value.code == code
    assert info.value.error_class is class_of_code(int(code))
    assert "refused locally" in info.value.message
    assert info.value.http_status is None
    assert server.requests == []


def test_programming_errors_are_not_api_errors(client: MultidentifyClient, server: RecordingServer) -> None:
    with pytest.raises(TypeError):
        client.multidentify_url(URL, "tencent")
    with pytest.raises(ValueError):
        client.newperson("p1", ["g"], image=JPEG, url=URL)
    assert server.requests == []


@pytest.mark.parametrize("base_url", ["ftp://api.example", "api.example", "http://", ""])
def test_options_refuse_an_endpoint_that_is_not_http(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        ClientOptions(appid=APPID, secret_id=SECRET_ID, secret_key=SECRET_KEY, base_url=base_url)


def test_options_and_client_never_show_the_secrets(client: MultidentifyClient) -> None:
    options = ClientOptions(appid=APPID, secret_id=SECRET_ID, secret_key=SECRET_KEY)
    for shown in (repr(options), str(options), repr(client)):
        assert APPID in shown and SECRET_ID not in shown and SECRET_KEY not in shown


# -- management calls -------------------------------------------------------------------------------


def data_answer(data: Any) -> Canned:
    return Canned(body=orjson.dumps({"data": data, "code": 0, "message": "OK"}))


def test_newperson_with_url(client: MultidentifyClient, server: RecordingServer) -> None:
    data = {"person_id": "person0", "suc_group": 2, "suc_face": 1, "session_id": "", "face_id": "10095",
            "group_ids": ["tencent", "qq"]}  # fmt: skip
    server.answer(data_answer(data))
    assert client.newperson("person0", ["tencent", "qq"], url=URL, person_name="Ann", tag="vip") == data
    (recorded,) = server.requests
    assert_common_headers(recorded, server, "/face/newperson")
    assert recorded.body == (
        b'{"appid":"1251234567","group_ids":["tencent","qq"],"person_id":"person0",'
        b'"url":"http://images.example/cam1/0001.jpg","person_name":"Ann","tag":"vip"}'
    )


def test_newperson_with_image(client: MultidentifyClient, server: RecordingServer) -> None:
    server.answer(data_answer({"person_id": "p1"}))
    client.newperson("p1", ["g1"], image=JPEG, tag="t")
    (recorded,) = server.requests
    assert_common_headers(recorded, server, "/face/newperson")
    parts = multipart_parts(recorded)
    assert part_names(parts) == ["appid", "group_ids[0]", "person_id", "tag", "image"]
    assert text_parts(parts) == {"appid": APPID, "group_ids[0]": "g1", "person_id": "p1", "tag": "t"}
    assert parts[-1][1] == JPEG


def test_addface_with_images_and_urls(client: MultidentifyClient, server: RecordingServer) -> None:
    data = {"added": 2, "session_id": "", "face_ids": ["1", "2"], "ret_codes": [0, -1312]}
    server.answer(data_answer(data))
    second = b"\x89PNG\r\n\x1a\n" + b"\x01" * 10
    assert client.addface("p1", images=[JPEG, second]) == data
    parts = multipart_parts(server.requests[0])
    assert part_names(parts) == ["appid", "person_id", "images[0]", "images[1]"]
    assert [content for _, content in parts[2:]] == [JPEG, second]
    client.addface("p1", urls=[URL, URL + "?2"], tag="x")
    assert server.requests[1].path == "/face/addface"
    assert server.requests[1].body == (
        b'{"appid":"1251234567","person_id":"p1","urls":["http://images.example/cam1/0001.jpg",'
        b'"http://images.example/cam1/0001.jpg?2"],"tag":"x"}'
    )


def test_simple_management_calls(client: MultidentifyClient, server: RecordingServer) -> None:
    server.answer(
        data_answer({"deleted": 1, "person_id": "p1", "session_id": ""}),
        data_answer({"person_id": "p1", "person_name": "", "face_ids": [], "group_ids": ["g"], "tag": ""}),
        data_answer({"group_ids": ["g", "h"]}),
        data_answer({"person_ids": ["p1"]}),
    )
    assert client.delperson("p1")["deleted"] == 1
    assert client.getinfo("p1")["group_ids"] == ["g"]
    assert client.getgroupids() == ["g", "h"]
    assert client.getpersonids("g") == ["p1"]
    assert [(r.path, r.body) for r in server.requests] == [
        ("/face/delperson", b'{"appid":"1251234567","person_id":"p1"}'),
        ("/face/getinfo", b'{"appid":"1251234567","person_id":"p1"}'),
        ("/face/getgroupids", b'{"appid":"1251234567"}'),
        ("/face/getpersonids", b'{"appid":"1251234567","group_id":"g"}'),
    ]
    for recorded in server.requests:
        assert_common_headers(recorded, server, recorded.path)


def test_management_error_code(client: MultidentifyClient, server: RecordingServer) -> None:
    server.answer(envelope(-1302, "exists"))
    with pytest.raises(ApiError) as info:
        client.newperson("p1", ["g"], url=URL)
    assert (info.value.code, info.value.error_class) == ("-1302", ErrorClass.PERMANENT)


# -- sessions, TLS settings, threads ----------------------------------------------------------------


class SpySession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.send_kwargs: list[dict[str, Any]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.send_kwargs.append(kwargs)
        return super().send(request, **kwargs)


@pytest.mark.parametrize("verify", [False, "/etc/custom/ca.pem"])
def test_verify_is_passed_on_every_request(
    verify: bool | str, make_client: Callable[..., MultidentifyClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    spy = SpySession()
    client = make_client(session=spy, verify=verify, connect_timeout=1.5, read_timeout=4.0)
    client.multidentify_url(URL, ["g"])
    client.multidentify_image(JPEG, ["g"])
    assert [k["verify"] for k in spy.send_kwargs] == [verify, verify]
    assert all(k["timeout"] == (1.5, 4.0) for k in spy.send_kwargs)


def test_close_closes_only_an_owned_session(
    make_client: Callable[..., MultidentifyClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[requests.Session] = []
    original = requests.Session.close

    def recording_close(self: requests.Session) -> None:
        closed.append(self)
        original(self)

    monkeypatch.setattr(requests.Session, "close", recording_close)
    injected = requests.Session()
    make_client(session=injected).close()
    assert closed == []
    make_client().close()
    assert len(closed) == 1
    assert closed[0] is not injected
    injected.close()


def test_concurrent_calls_share_one_client(
    make_client: Callable[..., MultidentifyClient], server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    def echo(recorded: Recorded) -> Canned:
        session_id = orjson.loads(recorded.body)["session_id"]
        return data_answer({"session_id": session_id, "results": []})

    server.answer(echo)
    threads, per_thread = 16, 20
    client = make_client(pool_size=threads)  # requests' default pool (10) would churn connections here
    mismatches: list[tuple[str, str]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        try:
            for i in range(per_thread):
                sid = f"w{worker}-{i}"
                got = client.multidentify_url(URL, ["g"], session_id=sid).session_id
                if got != sid:
                    with lock:
                        mismatches.append((sid, got))
        except BaseException as exc:
            with lock:
                failures.append(exc)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=30)
    assert failures == []
    assert mismatches == []
    assert len(server.requests) == threads * per_thread
    # Keep-alive: connections are reused (at most one per thread), not one per call, and the pool is
    # large enough that none is discarded ("Connection pool is full" from urllib3).
    assert len({r.client_port for r in server.requests}) <= threads
    assert [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()] == []
