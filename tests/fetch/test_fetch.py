"""Fetch mode against real sockets, all on 127.0.0.1: the SSRF guard, redirects, limits and error codes.

A tripwire (autouse) patches socket connect/create_connection/getaddrinfo: any attempt to reach a
non-loopback address, or to resolve a name through the system resolver, is recorded and fails, and the
test fails at teardown. Refusal tests additionally assert that no connect happened at all.
"""

from __future__ import annotations

import contextlib
import email.utils
import importlib.util
import io
import ipaddress
import socket
import socketserver
import ssl
import threading
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from PIL import Image

from tests.support.netguard import Tripwire, install_tripwire
from worker.api.errors import ApiError, ErrorClass
from worker.core.budget import ByteBudget, WaitCancelled
from worker.fetch import FetchedImage, FetchOptions, ImageFetcher, buffers

BOUND = 10.0  # seconds any single fetch in these tests may take before we call it hung


def _image(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buf, fmt)
    return buf.getvalue()


JPEG, PNG, GIF = _image("JPEG"), _image("PNG"), _image("GIF")
LARGE = JPEG.ljust(1_300_000, b"\0")  # a camera-sized image, built once so serving it allocates nothing


# --- tripwire ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tripwire]:
    """Every Python-level connect and name lookup is recorded; anything not loopback fails the test."""
    wire = install_tripwire(monkeypatch)
    yield wire
    wire.assert_clean()


class FakeDNS:
    """The injected resolver: fixed answers (or a sequence of answers) per name; records every lookup."""

    def __init__(self, table: dict[str, list[str] | list[list[str]]] | None = None) -> None:
        self.table: dict[str, list[str] | list[list[str]]] = dict(table or {})
        self.calls: list[str] = []
        self._served: dict[str, int] = {}

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answer = self.table.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, f"unknown test host {host}")
        if answer and isinstance(answer[0], list):  # successive answers (DNS rebinding)
            n = self._served.get(host, 0)
            self._served[host] = n + 1
            return list(answer[min(n, len(answer) - 1)])
        return [str(a) for a in answer]


# --- a local image server with scripted routes -------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default 5 drops SYNs under the concurrency test (1 s retransmit)

    def __init__(self, app: ImageServer, tls: ssl.SSLContext | None, keep_alive: bool) -> None:
        self.app = app
        self.tls = tls
        super().__init__(("127.0.0.1", 0), _KeepAliveHandler if keep_alive else _Handler)

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn(): no reverse lookups
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:  # handshake later, in the handler thread, so a bad client cannot stall accept
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up (size cap, timeouts, TLS failures) are the point of these tests


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        route = self.server.app.routes.get(parts.path)
        if route is None:
            self.reply(404, b"not found", "text/plain")
            return
        with contextlib.suppress(OSError):
            route(self, {k: v[0] for k, v in parse_qs(parts.query).items()})

    def reply(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"  # connections persist, so the client pools and reuses them


Route = Callable[[_Handler, dict[str, str]], None]


class ImageServer:
    """ThreadingHTTPServer on 127.0.0.1:0, stopped by its handle. HTTP/1.0 (one connection per request)
    unless ``keep_alive``."""

    def __init__(self, tls: ssl.SSLContext | None = None, keep_alive: bool = False) -> None:
        self.stop_event = threading.Event()
        self.routes: dict[str, Route] = dict(_default_routes(self.stop_event))
        self._server = _Server(self, tls, keep_alive)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str, host: str = "img.test", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.stop_event.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _default_routes(stop: threading.Event) -> dict[str, Route]:
    def image(body: bytes, ctype: str) -> Route:
        return lambda h, q: h.reply(200, body, ctype)

    def status(code: int, headers: dict[str, str] | None = None) -> Route:
        return lambda h, q: h.reply(code, b"error page", "text/html", headers)

    def retry_after(h: _Handler, q: dict[str, str]) -> None:
        h.reply(int(q.get("code", "503")), b"error page", "text/html", {"Retry-After": q["value"]})

    def redirect(h: _Handler, q: dict[str, str]) -> None:
        h.reply(int(q.get("code", "302")), b"", "text/plain", {"Location": q["to"]})

    def hops(h: _Handler, q: dict[str, str]) -> None:
        left = int(q.get("n", "0"))
        if left == 0:
            h.reply(200, JPEG, "image/jpeg")
        else:
            h.reply(302, b"", "text/plain", {"Location": f"/hops?n={left - 1}"})

    def sized(h: _Handler, q: dict[str, str]) -> None:  # a valid JPEG prefix padded to exactly n bytes
        n = int(q["n"])
        h.reply(200, JPEG + b"\0" * (n - len(JPEG)), "image/jpeg")

    def declared_huge(h: _Handler, q: dict[str, str]) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "2000000")
        h.end_headers()
        h.wfile.write(JPEG)
        stop.wait(BOUND)  # never sends the rest: only the declaration can end this fetch early

    def stream(h: _Handler, q: dict[str, str]) -> None:  # no Content-Length: body ends when the server closes
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.end_headers()
        h.wfile.write(JPEG)
        total = int(q.get("n", "3000000"))
        sent = len(JPEG)
        while sent < total and not stop.is_set():
            piece = min(65536, total - sent)
            h.wfile.write(b"\0" * piece)
            sent += piece

    def chunked(h: _Handler, q: dict[str, str]) -> None:
        h.protocol_version = "HTTP/1.1"
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(b"%x\r\n%s\r\n" % (len(JPEG), JPEG))
        for _ in range(48):  # 3 MB in 64 KiB chunks, bounded
            if stop.is_set():
                return
            h.wfile.write(b"10000\r\n" + b"\0" * 65536 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    def trickle_body(h: _Handler, q: dict[str, str]) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        h.wfile.write(JPEG[:4])
        h.wfile.flush()
        while not stop.wait(0.05):  # one byte per 50 ms: every read succeeds, the whole never ends
            h.wfile.write(b"\0")
            h.wfile.flush()

    def trickle_headers(h: _Handler, q: dict[str, str]) -> None:
        h.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
        h.wfile.flush()
        while not stop.wait(0.05):
            h.wfile.write(b"a")
            h.wfile.flush()

    def loop(h: _Handler, q: dict[str, str]) -> None:
        h.reply(302, b"", "text/plain", {"Location": "/loop"})

    def large_chunked(h: _Handler, q: dict[str, str]) -> None:  # LARGE without a Content-Length
        h.protocol_version = "HTTP/1.1"
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close")
        h.end_headers()
        view = memoryview(LARGE)
        for start in range(0, len(LARGE), 65536):
            piece = view[start : start + 65536]
            h.wfile.write(b"%x\r\n" % len(piece))
            h.wfile.write(piece)
            h.wfile.write(b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    def declared_huge_twice(h: _Handler, q: dict[str, str]) -> None:  # a list form urllib3 accepts
        h.send_response(200)
        h.send_header("Content-Length", "2000000, 2000000")
        h.end_headers()
        h.wfile.write(JPEG)

    def short(h: _Handler, q: dict[str, str]) -> None:  # declares more than it sends, then hangs up
        h.send_response(200)
        h.send_header("Content-Length", "5000")
        h.end_headers()
        h.wfile.write(JPEG[:100])

    def silent(h: _Handler, q: dict[str, str]) -> None:
        stop.wait(BOUND)

    return {
        "/img.jpg": image(JPEG, "image/jpeg"),
        "/img.png": image(PNG, "image/png"),
        "/png-as-text": image(PNG, "text/plain"),
        "/html-as-jpeg": image(b"<html><body>hello</body></html>", "image/jpeg"),
        "/empty": image(b"", "image/jpeg"),
        "/anim.gif": image(GIF, "image/gif"),
        "/missing": status(404),
        "/forbidden": status(403),
        "/busy": status(503, {"Retry-After": "7"}),
        "/throttled": status(429),
        "/broken": status(500),
        "/retry-after": retry_after,
        "/redirect": redirect,
        "/hops": hops,
        "/loop": loop,
        "/sized": sized,
        "/declared-huge": declared_huge,
        "/stream": stream,
        "/chunked": chunked,
        "/trickle-body": trickle_body,
        "/trickle-headers": trickle_headers,
        "/silent": silent,
        "/large.jpg": image(LARGE, "image/jpeg"),
        "/large-chunked": large_chunked,
        "/short": short,
        "/declared-huge-twice": declared_huge_twice,
    }


@pytest.fixture
def server() -> Iterator[ImageServer]:
    srv = ImageServer()
    yield srv
    srv.stop()


@pytest.fixture
def dns() -> FakeDNS:
    return FakeDNS(
        {
            "img.test": ["127.0.0.1"],
            "evil.test": ["10.0.0.5"],
            "meta.test": ["169.254.169.254"],
            "localhost": ["127.0.0.1"],
        }
    )


@pytest.fixture
def make_fetcher(dns: FakeDNS) -> Iterator[Callable[..., ImageFetcher]]:
    made: list[ImageFetcher] = []

    def make(session: requests.Session | None = None, budget: ByteBudget | None = None, **options: Any) -> ImageFetcher:
        options.setdefault("allowed_networks", ["127.0.0.0/8"])
        fetcher = ImageFetcher(FetchOptions(**options), session=session, resolver=dns, budget=budget)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


def failure(fetcher: ImageFetcher, url: str) -> ApiError:
    with pytest.raises(ApiError) as info:
        fetcher.fetch(url)
    return info.value


def fetch_within_bound(fetcher: ImageFetcher, url: str) -> FetchedImage | BaseException:
    """Run the fetch on a thread and fail the test (instead of hanging) if it outlives BOUND."""
    box: list[FetchedImage | BaseException] = []

    def run() -> None:
        try:
            box.append(fetcher.fetch(url))
        except BaseException as exc:
            box.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(BOUND)
    assert not worker.is_alive(), f"fetch of {url} was still running after {BOUND} s"
    return box[0]


# --- the happy path ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "mime"), [("/img.jpg", JPEG, "image/jpeg"), ("/img.png", PNG, "image/png")])
def test_allowed_network_reaches_local_server(
    make_fetcher: Callable[..., ImageFetcher],
    server: ImageServer,
    dns: FakeDNS,
    tripwire: Tripwire,
    path: str,
    body: bytes,
    mime: str,
) -> None:
    url = server.url(path) + "?sig=abc"
    image = make_fetcher().fetch(url)
    assert image == FetchedImage(data=body, content_type=mime, final_url=url)
    assert dns.calls == ["img.test"]
    assert tripwire.connects == ["127.0.0.1"]


def test_declared_content_type_is_informational(make_fetcher: Callable[..., ImageFetcher], server: ImageServer) -> None:
    fetcher = make_fetcher()
    assert fetcher.fetch(server.url("/png-as-text")).content_type == "image/png"
    err = failure(fetcher, server.url("/html-as-jpeg"))
    assert (err.code, err.error_class) == ("fetch_not_image", ErrorClass.PERMANENT)


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "0177.0.0.1", "127.1"])
def test_numeric_host_spellings_connect_where_they_were_checked(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, dns: FakeDNS, tripwire: Tripwire, host: str
) -> None:
    assert make_fetcher().fetch(server.url("/img.jpg", host=host)).data == JPEG
    assert dns.calls == []
    assert tripwire.connects == ["127.0.0.1"]


def test_concurrent_fetches_share_one_fetcher(make_fetcher: Callable[..., ImageFetcher], server: ImageServer) -> None:
    fetcher = make_fetcher(pool_size=4)
    results: list[bytes] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(5):
            data = fetcher.fetch(server.url("/img.png")).data
            with lock:
                results.append(data)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert results == [PNG] * 40


# --- refusals happen before any connect ---------------------------------------------------------------------


def test_loopback_is_refused_unless_allowed(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, tripwire: Tripwire
) -> None:
    err = failure(make_fetcher(allowed_networks=()), server.url("/img.jpg"))
    assert (err.code, err.error_class) == ("fetch_refused", ErrorClass.PERMANENT)
    assert "loopback" in err.message
    assert tripwire.connects == []


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.5", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "CGNAT"),
        ("169.254.10.1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("169.254.0.23", "metadata"),
        ("100.100.100.200", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("fe80::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("::1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_resolved_addresses_are_refused(
    make_fetcher: Callable[..., ImageFetcher], dns: FakeDNS, tripwire: Tripwire, address: str, kind: str
) -> None:
    dns.table["target.test"] = [address]
    err = failure(make_fetcher(), "http://target.test/latest/meta-data/")
    assert (err.code, err.error_class) == ("fetch_refused", ErrorClass.PERMANENT)
    assert kind in err.message and str(ipaddress.ip_address(address)) in err.message
    assert dns.calls == ["target.test"]
    assert tripwire.connects == []


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0xA9FEA9FE/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://10.1.2.3/",
        "https://192.168.0.1/",
        "http://1.2.3.4.5/",  # looks numeric, is not an address: refused, never resolved as a name
    ],
)
def test_ip_literals_are_refused_without_resolving(
    make_fetcher: Callable[..., ImageFetcher], dns: FakeDNS, tripwire: Tripwire, url: str
) -> None:
    err = failure(make_fetcher(allowed_networks=()), url)
    assert (err.code, err.error_class) == ("fetch_refused", ErrorClass.PERMANENT)
    assert dns.calls == []
    assert tripwire.connects == []


@pytest.mark.parametrize(
    "url",
    ["ftp://img.test/a.jpg", "file:///etc/passwd", "gopher://img.test:70/_x", "img.test/a.jpg", "//img.test/a.jpg"],
)
def test_other_schemes_are_refused(
    make_fetcher: Callable[..., ImageFetcher], dns: FakeDNS, tripwire: Tripwire, url: str
) -> None:
    assert failure(make_fetcher(), url).code == "fetch_refused"
    assert dns.calls == [] and tripwire.connects == []


def test_userinfo_is_refused(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, tripwire: Tripwire
) -> None:
    url = server.url("/img.jpg").replace("://", "://user:hunter2@")
    err = failure(make_fetcher(), url)
    assert err.code == "fetch_refused"
    assert "hunter2" not in str(err) and "user:" not in str(err)
    assert tripwire.connects == []


def test_one_refused_address_refuses_the_whole_host(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, dns: FakeDNS, tripwire: Tripwire
) -> None:
    dns.table["mixed.test"] = ["127.0.0.1", "10.0.0.7"]  # the allowed address first, the refused one second
    err = failure(make_fetcher(), server.url("/img.jpg", host="mixed.test"))
    assert err.code == "fetch_refused" and "10.0.0.7" in err.message
    assert tripwire.connects == []


def test_allow_private_admits_loopback_but_never_metadata(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, dns: FakeDNS, tripwire: Tripwire
) -> None:
    dns.table["ali.test"] = ["100.100.100.200"]  # inside CGNAT, which allow_private admits
    fetcher = make_fetcher(allow_private=True, allowed_networks=["169.254.0.0/16", "100.64.0.0/10"])
    assert fetcher.fetch(server.url("/img.jpg")).data == JPEG
    for host in ("meta.test", "ali.test"):
        err = failure(fetcher, f"http://{host}/latest/meta-data/iam/")
        assert err.code == "fetch_refused" and "metadata" in err.message
    assert tripwire.connects == ["127.0.0.1"]


def test_dns_rebinding_cannot_swap_the_checked_address(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, dns: FakeDNS, tripwire: Tripwire
) -> None:
    dns.table["rebind.test"] = [["127.0.0.1"], ["10.0.0.1"]]
    fetcher = make_fetcher()
    assert fetcher.fetch(server.url("/img.jpg", host="rebind.test")).data == JPEG
    # One lookup for that connection, and the socket went to the address that lookup returned.
    assert dns.calls == ["rebind.test"] and tripwire.connects == ["127.0.0.1"]
    err = failure(fetcher, server.url("/img.jpg", host="rebind.test"))  # HTTP/1.0 server: a new connection
    assert err.code == "fetch_refused" and "10.0.0.1" in err.message
    assert dns.calls == ["rebind.test", "rebind.test"] and tripwire.connects == ["127.0.0.1"]


def test_environment_proxies_are_ignored(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, tripwire: Tripwire, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://10.9.9.9:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert make_fetcher().fetch(server.url("/img.jpg")).data == JPEG
    assert make_fetcher(session=requests.Session()).fetch(server.url("/img.jpg")).data == JPEG
    assert tripwire.connects == ["127.0.0.1", "127.0.0.1"]


def test_a_session_with_other_adapters_is_rejected() -> None:
    session = requests.Session()
    session.mount("https://bucket.example/", requests.adapters.HTTPAdapter())
    with pytest.raises(ValueError, match=r"bucket\.example"):
        ImageFetcher(session=session)


# --- redirects ----------------------------------------------------------------------------------------------


def test_redirect_to_metadata_is_refused(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, dns: FakeDNS, tripwire: Tripwire
) -> None:
    err = failure(make_fetcher(), server.url("/redirect?to=http://meta.test/latest/meta-data/"))
    assert err.code == "fetch_refused" and "169.254.169.254" in err.message
    assert dns.calls == ["img.test", "meta.test"]
    assert tripwire.connects == ["127.0.0.1"]  # only the first hop was connected to


@pytest.mark.parametrize("code", ["301", "302", "303", "307", "308"])
@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://evil.test/admin",
        "file:///etc/passwd",
        "gopher://img.test:6379/_FLUSHALL",
        "http://user:pw@img.test/img.jpg",
    ],
)
def test_every_redirect_hop_is_checked(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, tripwire: Tripwire, code: str, target: str
) -> None:
    err = failure(make_fetcher(), server.url(f"/redirect?code={code}&to={target}"))
    assert err.code == "fetch_refused"
    assert tripwire.connects == ["127.0.0.1"]


def test_relative_redirects_are_followed_up_to_the_limit(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer
) -> None:
    fetcher = make_fetcher(max_redirects=3)
    image = fetcher.fetch(server.url("/hops?n=3"))
    assert image.data == JPEG and image.final_url == server.url("/hops?n=0")
    err = failure(fetcher, server.url("/hops?n=4"))
    assert (err.code, err.error_class) == ("fetch_too_many_redirects", ErrorClass.PERMANENT)
    assert failure(make_fetcher(max_redirects=0), server.url("/hops?n=1")).code == "fetch_too_many_redirects"


def test_redirect_loop_ends(make_fetcher: Callable[..., ImageFetcher], server: ImageServer) -> None:
    err = failure(make_fetcher(), server.url("/loop"))
    assert err.code == "fetch_too_many_redirects" and "redirected from" in err.message


# --- HTTP status, content and size --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code", "cls"),
    [
        ("/missing", "fetch_http_404", ErrorClass.PERMANENT),
        ("/forbidden", "fetch_http_403", ErrorClass.PERMANENT),  # this image's problem, not a config error
        ("/busy", "fetch_http_503", ErrorClass.TRANSIENT),
        ("/throttled", "fetch_http_429", ErrorClass.TRANSIENT),
        ("/broken", "fetch_http_500", ErrorClass.TRANSIENT),
    ],
)
def test_http_status_codes(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, path: str, code: str, cls: ErrorClass
) -> None:
    err = failure(make_fetcher(), server.url(path))
    assert (err.code, err.error_class) == (code, cls)
    assert err.http_status is None  # reserved for the face API's answers (rate limiter, breaker)


def test_retry_after_is_passed_on(make_fetcher: Callable[..., ImageFetcher], server: ImageServer) -> None:
    assert failure(make_fetcher(), server.url("/busy")).retry_after == 7.0


@pytest.mark.parametrize(
    ("value", "code", "expected"),
    [
        ("1.5", "503", 1.5),  # the parser the face API's client uses reads fractions too
        ("99999999", "503", 86400.0),  # bounded (the retry policy caps it further)
        ("-3", "503", None),
        ("soon", "429", None),
        ("7", "404", None),  # a permanent answer is not retried: its hint means nothing
    ],
)
def test_retry_after_forms(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, value: str, code: str, expected: float | None
) -> None:
    err = failure(make_fetcher(), server.url(f"/retry-after?code={code}&value={quote(value)}"))
    assert err.retry_after == expected


def test_retry_after_as_an_http_date(make_fetcher: Callable[..., ImageFetcher], server: ImageServer) -> None:
    when = email.utils.formatdate(time.time() + 600, usegmt=True)
    delay = failure(make_fetcher(), server.url(f"/retry-after?value={quote(when)}")).retry_after
    assert delay is not None and 300 < delay <= 600  # wall time passes between the two clocks: a wide margin


@pytest.mark.parametrize("path", ["/html-as-jpeg", "/empty"])
def test_not_an_image(make_fetcher: Callable[..., ImageFetcher], server: ImageServer, path: str) -> None:
    err = failure(make_fetcher(), server.url(path))
    assert (err.code, err.error_class) == ("fetch_not_image", ErrorClass.PERMANENT)


def test_gif_is_refused_with_the_services_code(make_fetcher: Callable[..., ImageFetcher], server: ImageServer) -> None:
    err = failure(make_fetcher(), server.url("/anim.gif"))
    assert (err.code, err.error_class) == ("-1400", ErrorClass.PERMANENT)


def test_size_cap_boundary(make_fetcher: Callable[..., ImageFetcher], server: ImageServer) -> None:
    n = 5000
    assert len(make_fetcher(max_bytes=n).fetch(server.url(f"/sized?n={n}")).data) == n
    err = failure(make_fetcher(max_bytes=n - 1), server.url(f"/sized?n={n}"))
    assert (err.code, err.error_class) == ("fetch_too_large", ErrorClass.PERMANENT)
    assert len(make_fetcher(max_bytes=n).fetch(server.url(f"/stream?n={n}")).data) == n
    assert failure(make_fetcher(max_bytes=n - 1), server.url(f"/stream?n={n}")).code == "fetch_too_large"


def test_declared_length_is_refused_before_the_body(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer
) -> None:
    # The server never finishes the body, so only the Content-Length check can end this quickly and cleanly.
    outcome = fetch_within_bound(make_fetcher(total_timeout=BOUND * 2), server.url("/declared-huge"))
    assert isinstance(outcome, ApiError) and outcome.code == "fetch_too_large"
    assert "declares 2000000" in outcome.message


@pytest.mark.parametrize("path", ["/stream", "/chunked"])
def test_undeclared_body_is_cut_at_the_cap(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, path: str
) -> None:
    err = failure(make_fetcher(), server.url(path))
    assert err.code == "fetch_too_large" and "more than 1400000" in err.message


def test_a_body_shorter_than_declared_is_a_broken_transfer(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer
) -> None:
    err = failure(make_fetcher(), server.url("/short"))
    assert (err.code, err.error_class) == ("fetch_connection", ErrorClass.TRANSIENT)


# --- memory: one copy per image, within the byte budget ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/large.jpg", "/large-chunked"])
def test_a_download_holds_one_copy_of_the_image(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, path: str
) -> None:
    # The body goes into the image's own mapping (which tracemalloc does not see), straight from the socket
    # or, without a Content-Length, one chunk at a time: the Python heap never holds a copy of the image (a
    # bytearray plus bytes(bytearray) held it twice, 2.18 × the image size).
    fetcher = make_fetcher()
    assert fetcher.fetch(server.url("/img.jpg")).data == JPEG  # connection pool and watchdog warmed up
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        image = fetcher.fetch(server.url(path))
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert image.data == LARGE and isinstance(image.data, memoryview) and image.data.readonly
    assert peak < 0.2 * len(LARGE), f"the download allocated {peak / len(LARGE):.2f} × the image size on the heap"


def test_a_buffer_with_a_view_still_alive_is_never_reused(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer
) -> None:
    budget = ByteBudget(1_400_000)
    fetcher = make_fetcher(budget=budget)
    image = fetcher.fetch(server.url("/large.jpg"))
    lingering = memoryview(image.data)[:4]  # e.g. held by an exception's traceback after a failed upload
    image.release()
    with pytest.raises(ValueError):
        len(image.data)  # released: no use after release goes unnoticed
    assert fetcher.idle_bytes == 0 and budget.in_use == 0  # not kept: the next image must not show through
    assert fetcher.fetch(server.url("/img.png")).data == PNG
    assert bytes(lingering) == LARGE[:4]  # still the old image, still valid memory (unmapped when it goes)
    lingering.release()


def test_a_released_buffer_is_reused_for_the_next_download(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[object] = []

    class Counted(buffers.ImageBuffer):
        def __init__(self, capacity: int, **kwargs: Any) -> None:
            made.append(self)
            super().__init__(capacity, **kwargs)

    monkeypatch.setattr(buffers, "ImageBuffer", Counted)
    budget = ByteBudget(4 * 1_400_000)
    fetcher = make_fetcher(budget=budget)
    for path, body in [("/large.jpg", LARGE), ("/img.jpg", JPEG), ("/img.png", PNG), ("/large.jpg", LARGE)]:
        image = fetcher.fetch(server.url(path))
        assert image.data == body
        # Reserved: what this image needs or what the reused buffer ever held, whichever is more.
        assert budget.in_use == len(LARGE)
        image.release()
        assert fetcher.idle_bytes == budget.in_use == len(LARGE)  # kept, still counted
    assert len(made) == 1  # one mapping served all four downloads
    image = fetcher.fetch(server.url("/large-chunked"))  # length unknown: room for max_bytes is needed
    assert image.data == LARGE and len(made) == 2
    image.release()
    fetcher.close()
    assert budget.in_use == 0


def test_closing_the_fetcher_gives_back_idle_buffers_and_those_released_later(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer
) -> None:
    budget = ByteBudget(4 * 1_400_000)
    fetcher = make_fetcher(budget=budget)
    fetcher.fetch(server.url("/img.jpg")).release()
    still_out = fetcher.fetch(server.url("/img.png"))
    fetcher.close()
    assert budget.in_use == len(JPEG)  # only the image still out, in the buffer the first one left
    still_out.release()
    assert budget.in_use == 0 and fetcher.idle_bytes == 0


def test_idle_buffers_are_not_kept_while_a_download_waits_and_are_reclaimed_by_one(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer
) -> None:
    budget = ByteBudget(1_400_000)  # room for one image of fetch_max_bytes
    a, b = make_fetcher(budget=budget), make_fetcher(budget=budget)
    a.fetch(server.url("/img.jpg")).release()
    assert a.idle_bytes == len(JPEG) == budget.in_use  # kept by a: b's download can only get it back
    image = b.fetch(server.url("/img.png"))  # waits, reclaims a's idle buffer, proceeds
    assert image.data == PNG and a.idle_bytes == 0
    box: list[object] = []
    waiter = threading.Thread(target=lambda: box.append(_outcome(lambda: a.fetch(server.url("/img.jpg")))), daemon=True)
    waiter.start()
    _eventually(lambda: budget.waiting == 1, "a's download waits for b's image")
    image.release()  # someone is waiting: b keeps nothing
    waiter.join(BOUND)
    assert isinstance(box[0], FetchedImage) and box[0].data == JPEG
    assert b.idle_bytes == 0
    box[0].release()


@pytest.mark.parametrize("path", ["/large.jpg", "/large-chunked"])
def test_the_reservation_shrinks_to_the_image_and_release_gives_it_back(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, path: str
) -> None:
    budget = ByteBudget(4 * 1_400_000)
    fetcher = make_fetcher(budget=budget)
    image = fetcher.fetch(server.url(path))
    assert image.data == LARGE
    assert budget.in_use == len(LARGE)  # fetch_max_bytes was reserved, the unused part given back
    assert budget.peak == 1_400_000
    image.release()
    image.release()
    assert budget.in_use == fetcher.idle_bytes == len(LARGE)  # the buffer is kept for the next download
    fetcher.close()
    assert budget.in_use == 0


@pytest.mark.parametrize(
    "path", ["/missing", "/anim.gif", "/html-as-jpeg", "/declared-huge", "/declared-huge-twice", "/stream", "/short"]
)
def test_a_failed_download_gives_its_reservation_back(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, path: str
) -> None:
    budget = ByteBudget(1_400_000)
    err = failure(make_fetcher(budget=budget), server.url(path))
    assert err.code
    assert budget.in_use == 0 and budget.peak == 1_400_000


def test_a_refused_url_gives_its_reservation_back(make_fetcher: Callable[..., ImageFetcher]) -> None:
    budget = ByteBudget(1_400_000)
    assert failure(make_fetcher(budget=budget), "http://meta.test/latest/meta-data/").code == "fetch_refused"
    assert budget.in_use == 0


def test_a_download_waits_for_room_before_connecting_and_can_be_cancelled(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, tripwire: Tripwire
) -> None:
    budget = ByteBudget(1_400_000)
    fetcher = make_fetcher(budget=budget)
    held = budget.acquire(1_000_000)  # another event's image: no room for one more of fetch_max_bytes
    stop = threading.Event()
    box: list[object] = []
    waiter = threading.Thread(
        target=lambda: box.append(_outcome(lambda: fetcher.fetch(server.url("/img.jpg"), cancelled=stop.is_set)))
    )
    waiter.start()
    _eventually(lambda: budget.waiting == 1, "the download waits for room")
    assert tripwire.connects == []  # it waits before connecting: no idle connection held open meanwhile
    stop.set()
    waiter.join(BOUND)
    assert isinstance(box[0], WaitCancelled)
    assert budget.waiting == 0 and budget.in_use == 1_000_000 and tripwire.connects == []
    held.release()


def test_the_fetch_deadline_starts_after_the_wait_for_room(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer
) -> None:
    budget = ByteBudget(1_400_000)
    fetcher = make_fetcher(budget=budget, total_timeout=0.5)
    held = budget.acquire(1_400_000)
    box: list[object] = []
    waiter = threading.Thread(target=lambda: box.append(_outcome(lambda: fetcher.fetch(server.url("/img.jpg")))))
    waiter.start()
    _eventually(lambda: budget.waiting == 1, "the download waits for room")
    time.sleep(0.7)  # longer than the whole fetch may take: the wait must not count against it
    held.release()
    waiter.join(BOUND)
    image = box[0]
    assert isinstance(image, FetchedImage) and image.data == JPEG
    image.release()
    assert budget.in_use == fetcher.idle_bytes == len(JPEG)


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except BaseException as exc:
        return exc


def _eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"not within {BOUND} s: {what}"
        time.sleep(0.005)


# --- time -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/trickle-body", "/trickle-headers"])
def test_total_deadline_stops_a_trickling_server(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, path: str
) -> None:
    # Every read succeeds well within read_timeout; only the total deadline can end this fetch.
    fetcher = make_fetcher(read_timeout=BOUND, total_timeout=0.5)
    outcome = fetch_within_bound(fetcher, server.url(path))
    assert isinstance(outcome, ApiError), outcome
    assert (outcome.code, outcome.error_class) == ("fetch_timeout", ErrorClass.TRANSIENT)


def test_read_timeout(make_fetcher: Callable[..., ImageFetcher], server: ImageServer) -> None:
    outcome = fetch_within_bound(make_fetcher(read_timeout=0.3), server.url("/silent"))
    assert isinstance(outcome, ApiError) and outcome.code == "fetch_timeout"


def test_a_reused_connection_is_under_the_new_fetchs_deadline(
    make_fetcher: Callable[..., ImageFetcher], tripwire: Tripwire
) -> None:
    srv = ImageServer(keep_alive=True)
    try:
        fetcher = make_fetcher(read_timeout=BOUND, total_timeout=0.5)
        assert fetcher.fetch(srv.url("/img.jpg")).data == JPEG
        outcome = fetch_within_bound(fetcher, srv.url("/trickle-body"))  # on the pooled connection
        assert tripwire.connects == ["127.0.0.1"]
        assert isinstance(outcome, ApiError) and outcome.code == "fetch_timeout"
        assert fetcher.fetch(srv.url("/img.jpg")).data == JPEG  # the killed connection is not reused
        assert tripwire.connects == ["127.0.0.1", "127.0.0.1"]
    finally:
        srv.stop()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_total_deadline_covers_a_server_that_accepts_and_stalls(
    make_fetcher: Callable[..., ImageFetcher], scheme: str
) -> None:
    # The kernel completes the TCP handshake into the backlog; nobody ever reads or answers, so the fetch
    # stalls in the TLS handshake (https) or waiting for the status line (http).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        fetcher = make_fetcher(connect_timeout=BOUND, read_timeout=BOUND, total_timeout=0.5)
        outcome = fetch_within_bound(fetcher, f"{scheme}://img.test:{port}/img.jpg")
    assert isinstance(outcome, ApiError) and outcome.code == "fetch_timeout"


def test_fetcher_still_works_after_a_deadline(make_fetcher: Callable[..., ImageFetcher], server: ImageServer) -> None:
    fetcher = make_fetcher(read_timeout=BOUND, total_timeout=0.5)
    assert isinstance(fetch_within_bound(fetcher, server.url("/trickle-body")), ApiError)
    assert fetcher.fetch(server.url("/img.jpg")).data == JPEG


# --- connection failures ----------------------------------------------------------------------------------------


def test_connection_refused_is_transient(make_fetcher: Callable[..., ImageFetcher]) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    err = failure(make_fetcher(), f"http://img.test:{port}/img.jpg")
    assert (err.code, err.error_class) == ("fetch_connection", ErrorClass.TRANSIENT)


def test_unresolvable_host_is_transient(make_fetcher: Callable[..., ImageFetcher], tripwire: Tripwire) -> None:
    err = failure(make_fetcher(), "http://nxdomain.test/img.jpg")
    assert (err.code, err.error_class) == ("fetch_connection", ErrorClass.TRANSIENT)
    assert tripwire.connects == []


# --- TLS ----------------------------------------------------------------------------------------------------------


def _tls_material(tmp: Path) -> tuple[Path, Path, Path]:
    """(server cert chain, server key, CA bundle) for "localhost": generated with `cryptography` if installed,
    else the test certificates CPython ships in test/certdata; else skip."""
    try:
        return _generate_tls_material(tmp)
    except ImportError:
        pass
    spec = importlib.util.find_spec("test")
    if spec is not None and spec.submodule_search_locations:
        data = Path(next(iter(spec.submodule_search_locations))) / "certdata"
        if (data / "keycert3.pem").exists() and (data / "pycacert.pem").exists():
            return data / "keycert3.pem", data / "keycert3.pem", data / "pycacert.pem"
    pytest.skip("neither the cryptography package nor CPython's test certificates are available")


def _generate_tls_material(tmp: Path) -> tuple[Path, Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fetch-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert, key, bundle = tmp / "leaf.pem", tmp / "leaf.key", tmp / "ca.pem"
    cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return cert, key, bundle


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ImageServer, Path]]:
    cert, key, bundle = _tls_material(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = ImageServer(tls=ctx)
    yield srv, bundle
    srv.stop()


def test_tls_is_verified_by_default(
    make_fetcher: Callable[..., ImageFetcher],
    tls_server: tuple[ImageServer, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    srv, bundle = tls_server
    # Even with the test CA in REQUESTS_CA_BUNDLE, the fetcher's own verify=True (system/certifi CAs) applies.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    err = failure(make_fetcher(), srv.url("/img.jpg?token=SECRET", host="localhost", scheme="https"))
    assert (err.code, err.error_class) == ("fetch_tls", ErrorClass.PERMANENT)
    assert "SECRET" not in str(err)


def test_tls_checks_the_url_host_while_connecting_to_the_checked_address(
    make_fetcher: Callable[..., ImageFetcher], tls_server: tuple[ImageServer, Path], tripwire: Tripwire
) -> None:
    srv, bundle = tls_server
    fetcher = make_fetcher(verify=str(bundle))
    # The socket goes to 127.0.0.1; SNI and the hostname check still use "localhost", which the cert names.
    assert fetcher.fetch(srv.url("/img.jpg", host="localhost", scheme="https")).data == JPEG
    assert tripwire.connects == ["127.0.0.1"]
    err = failure(fetcher, srv.url("/img.jpg", host="img.test", scheme="https"))  # same address, other name
    assert err.code == "fetch_tls" and "mismatch" in err.message.lower()


# --- no secrets in errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/missing",
        "/busy",
        "/html-as-jpeg",
        "/anim.gif",
        "/stream",
        "/redirect?to=http://meta.test/",
        "/hops?n=9",
    ],
)
def test_errors_never_carry_the_query_string(
    make_fetcher: Callable[..., ImageFetcher], server: ImageServer, path: str
) -> None:
    sep = "&" if "?" in path else "?"
    url = server.url(path) + f"{sep}X-Amz-Signature=SECRET123&X-Amz-Credential=AKIDSECRET"
    err = failure(make_fetcher(), url)
    rendered = "".join(traceback.format_exception(err))
    assert "SECRET" not in rendered and "X-Amz" not in rendered
    assert f"img.test:{server.port}{urlsplit(url).path}" in err.message  # host and path are kept


def test_transport_errors_never_carry_the_query_string(make_fetcher: Callable[..., ImageFetcher]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    err = failure(make_fetcher(), f"http://img.test:{port}/a.jpg?sig=SECRET123")
    assert err.code == "fetch_connection"
    assert "SECRET" not in "".join(traceback.format_exception(err))
