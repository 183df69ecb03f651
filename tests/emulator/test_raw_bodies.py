"""Bodies the emulator cannot read, sent as raw HTTP: each gets a ``{"data","code","message"}`` envelope.

A body whose ``Content-Encoding`` does not match it, an encoding the emulator cannot decode, a broken
chunked framing or a body cut short is a malformed request like any unparseable body: HTTP 200 and
code 3 (bad request), never an HTTP 500 or a text/plain page (Tencent's SDK reports a non-JSON answer as
a client error). A client that goes away mid-body gets no answer (there is no one to send it to), and
the emulator neither logs an error nor stops serving.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import orjson
import pytest

from tests.support.emulator import APPID, dev_auth
from worker.emulator import EmulatorHandle, start_in_thread

BODY = orjson.dumps({"appid": APPID, "group_id": "nobody-here", "url": "http://127.0.0.1:9/x.jpg"})
# Readable and signed, this body answers -1306 (unknown group) at once: the control for every case.
READABLE = -1306
BAD_REQUEST = 3


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    handle = start_in_thread(max_body_bytes=64 * 1024, body_timeout_s=1.0)
    try:
        yield handle
    finally:
        handle.stop()


def _address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _head(headers: dict[str, str], *, auth: bool = True) -> bytes:
    lines = ["POST /face/multidentify HTTP/1.1", "Host: emulator", "Content-Type: application/json"]
    if auth:
        lines.append(f"Authorization: {dev_auth()}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def exchange(
    base_url: str, head: bytes, body: bytes, *, between: Callable[[], None] | None = None
) -> tuple[int, str, bytes]:
    """Send ``head`` and ``body`` on a fresh connection (``between`` runs in between) and read one answer:
    (status, Content-Type, body)."""
    with socket.create_connection(_address(base_url), timeout=10) as sock:
        sock.sendall(head)
        if between is not None:
            between()
        sock.sendall(body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.getheader("Content-Type", ""), response.read()


def envelope_code(status: int, content_type: str, body: bytes) -> int:
    assert status == 200, (status, body[:200])
    assert content_type.startswith("application/json"), (content_type, body[:200])
    doc = orjson.loads(body)
    assert set(doc) == {"data", "code", "message"} and doc["message"], doc
    return int(doc["code"])


def encoded(name: str, body: bytes = BODY) -> tuple[dict[str, str], bytes]:
    return {"Content-Encoding": name, "Content-Length": str(len(body))}, body


GZIP = gzip.compress(BODY)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(*encoded("gzip"), id="gzip-header-plain-body"),
        pytest.param(*encoded("deflate"), id="deflate-header-plain-body"),
        pytest.param(*encoded("gzip", GZIP[: len(GZIP) // 2]), id="gzip-stream-cut-short"),
        pytest.param(*encoded("gzip", GZIP + b"trailing"), id="gzip-with-trailing-bytes"),
        pytest.param(*encoded("deflate", zlib.compress(BODY)[:-6]), id="deflate-stream-cut-short"),
        pytest.param(*encoded("br"), id="br"),
        pytest.param(*encoded("zstd"), id="zstd"),
        pytest.param(*encoded("compress"), id="compress"),
        pytest.param(*encoded("x-unheard-of"), id="unknown-encoding"),
        pytest.param(*encoded("gzip, br", GZIP), id="a-chain-with-br"),
    ],
)
def test_a_body_that_cannot_be_decoded_is_a_bad_request(
    emu: EmulatorHandle, headers: dict[str, str], body: bytes
) -> None:
    assert envelope_code(*exchange(emu.base_url, _head(headers), body)) == BAD_REQUEST


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(*encoded("gzip", GZIP), id="gzip"),
        pytest.param(*encoded("x-gzip", GZIP), id="x-gzip"),
        pytest.param(*encoded("deflate", zlib.compress(BODY)), id="deflate-zlib"),
        pytest.param(*encoded("deflate", zlib.compress(BODY, wbits=-15)), id="deflate-raw"),
        pytest.param(*encoded("identity"), id="identity"),
        pytest.param(*encoded("gzip, gzip", gzip.compress(GZIP)), id="gzip-twice"),
        pytest.param({"Content-Length": str(len(BODY))}, BODY, id="none"),
    ],
)
def test_a_body_in_an_encoding_it_declares_is_read(emu: EmulatorHandle, headers: dict[str, str], body: bytes) -> None:
    assert envelope_code(*exchange(emu.base_url, _head(headers), body)) == READABLE


def test_a_compressed_body_larger_than_the_limit_once_decoded_is_23(emu: EmulatorHandle) -> None:
    bomb = gzip.compress(b'{"appid": "' + b"a" * (4 * 1024 * 1024) + b'"}')  # 4 MiB once decoded, 4 KiB on the wire
    headers, body = encoded("gzip", bomb)
    assert envelope_code(*exchange(emu.base_url, _head(headers), body)) == 23


def test_the_signature_is_judged_before_an_unreadable_body(emu: EmulatorHandle) -> None:
    headers, body = encoded("gzip")
    assert envelope_code(*exchange(emu.base_url, _head(headers, auth=False), body)) == 4


def test_broken_chunked_framing_after_the_head_is_a_bad_request(emu: EmulatorHandle) -> None:
    # aiohttp stops parsing at the bad chunk size without ending the body: the body timeout answers.
    emu.reset()
    answer = exchange(
        emu.base_url,
        _head({"Transfer-Encoding": "chunked"}),
        b"zz\r\n{}\r\n0\r\n\r\n",
        between=lambda: _wait_for(lambda: emu.stats()["in_flight"] == 1, "the emulator to read the head"),
    )
    assert envelope_code(*answer) == BAD_REQUEST


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"POST /face/multidentify HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            id="bad-chunk-size-with-the-head",
        ),
        pytest.param(b"POST /face/multidentify HTTP/1.1\r\nHost: e\r\nno colon here\r\n\r\n", id="bad-header-line"),
        pytest.param(
            b"POST /face/multidentify HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}{}{}",
            id="two-content-lengths",
        ),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", id="not-http-at-all"),
    ],
)
def test_a_request_aiohttp_cannot_parse_is_a_bad_request(emu: EmulatorHandle, request_bytes: bytes) -> None:
    emu.reset()
    with socket.create_connection(_address(emu.base_url), timeout=10) as sock:
        sock.sendall(request_bytes)
        response = http.client.HTTPResponse(sock)
        response.begin()
        answer = response.status, response.getheader("Content-Type", ""), response.read()
    assert envelope_code(*answer) == BAD_REQUEST
    assert emu.stats()["codes"]["<unparsed>"] == {"3": 1}


def test_a_body_that_stops_short_of_its_length_is_a_bad_request_after_the_body_timeout(emu: EmulatorHandle) -> None:
    started = time.monotonic()
    answer = exchange(emu.base_url, _head({"Content-Length": str(len(BODY) + 50)}), BODY)  # 50 bytes never come
    assert envelope_code(*answer) == BAD_REQUEST
    assert 0.9 <= time.monotonic() - started < 8  # body_timeout_s is 1 s here


@pytest.mark.parametrize("how", ["close", "half-close"])
def test_a_client_gone_mid_body_gets_no_answer_and_nothing_breaks(
    emu: EmulatorHandle, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    emu.reset()
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    with socket.create_connection(_address(emu.base_url), timeout=10) as sock:
        sock.sendall(_head({"Content-Length": str(len(BODY))}) + BODY[:10])  # 10 of the promised bytes
        _wait_for(lambda: emu.stats()["in_flight"] == 1, "the emulator to read the head")
        if how == "half-close":
            sock.shutdown(socket.SHUT_WR)  # the rest will never come
            try:
                answer = sock.recv(65536)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # the emulator closes: a request without its body has no answer
    _wait_for(lambda: emu.stats()["in_flight"] == 0, "the handler to finish")
    assert emu.stats()["codes"]["/face/multidentify"] == {"client_gone": 1}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    # And the next request on a new connection is served as usual.
    assert envelope_code(*exchange(emu.base_url, _head({"Content-Length": str(len(BODY))}), BODY)) == READABLE
