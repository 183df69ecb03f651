"""Fetch mode end to end inside one event: a real image server, a real API server, the real client and fetcher.

An event's image is downloaded once: API retries (and held rounds) reuse it, it stays within the byte
budget while the event runs, and it is given back however the event ends (result, dead letter, cancel).
Everything binds to 127.0.0.1 on OS-assigned ports.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from PIL import Image

from tests.support.netguard import Tripwire, install_tripwire
from worker.api.client import ClientOptions, MultidentifyClient
from worker.core.breaker import CircuitBreaker
from worker.core.budget import ByteBudget
from worker.core.outcomes import RetryPolicy
from worker.core.ratelimit import AimdRateLimiter
from worker.core.records import Event, Source
from worker.fetch import FetchOptions, ImageFetcher
from worker.runtime.identify import Completion, Identifier, Kind, Task
from worker.runtime.observer import Observer

BOUND = 10.0
MAX_BYTES = 200_000


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 90)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg()
OK = orjson.dumps({"data": {"session_id": "", "results": []}, "code": 0, "message": "OK"})


@pytest.fixture(autouse=True)
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tripwire]:
    wire = install_tripwire(monkeypatch)
    yield wire
    wire.assert_clean()


@dataclass
class Answer:
    status: int = 200
    body: bytes = OK


@dataclass
class Servers:
    """The image server (GET /a.jpg) and the API (POST anywhere), one ThreadingHTTPServer each."""

    api_script: list[Answer] = field(default_factory=list)  # answered in order, then OK forever
    image_script: list[int] = field(default_factory=list)  # statuses for the downloads, then 200
    downloads: int = 0
    uploads: list[bytes] = field(default_factory=list)
    on_upload: Callable[[], None] = lambda: None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        servers = self

        class Images(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with servers.lock:
                    servers.downloads += 1
                    status = servers.image_script.pop(0) if servers.image_script else 200
                body = JPEG if status == 200 else b"busy"
                self.send_response(status)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Api(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                servers.on_upload()
                with servers.lock:
                    servers.uploads.append(body)
                    answer = servers.api_script.pop(0) if servers.api_script else Answer()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._httpds = [Server(("127.0.0.1", 0), Images), Server(("127.0.0.1", 0), Api)]
        self._threads = [
            threading.Thread(target=h.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True) for h in self._httpds
        ]
        for t in self._threads:
            t.start()
        self.image_url = f"http://127.0.0.1:{self._httpds[0].server_address[1]}/a.jpg?sig=x"
        self.api_url = f"http://127.0.0.1:{self._httpds[1].server_address[1]}"

    def stop(self) -> None:
        for h in self._httpds:
            h.shutdown()
            h.server_close()
        for t in self._threads:
            t.join(5)


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    s.start()
    yield s
    s.stop()


class Factory:
    """Identifiers over a real client and fetcher; remembers the fetchers to tell events' bytes from idle ones."""

    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        self.fetchers: list[ImageFetcher] = []
        self.clients: list[MultidentifyClient] = []

    def __call__(self, budget: ByteBudget | None = None, policy: RetryPolicy | None = None) -> Identifier:
        api = self.servers.api_url
        client = MultidentifyClient(ClientOptions(appid="1250000000", secret_id="AKIDx", secret_key="k", base_url=api))
        fetcher = ImageFetcher(FetchOptions(allowed_networks=("127.0.0.0/8",), max_bytes=MAX_BYTES), budget=budget)
        self.clients.append(client)
        self.fetchers.append(fetcher)
        return Identifier(
            client,
            default_groups=("g",),
            policy=policy or RetryPolicy.instant(max_attempts=3),
            limiter=AimdRateLimiter(0),
            breaker=CircuitBreaker(window=20, min_calls=20, open_s=60),
            observer=Observer(),
            fetcher=fetcher,
            breaker_poll_s=0.005,
        )

    def held_by_events(self, budget: ByteBudget) -> int:
        """Reserved bytes not kept as idle buffers for the next download: what events still hold."""
        return budget.in_use - sum(f.idle_bytes for f in self.fetchers)

    def close(self) -> None:
        for thing in [*self.clients, *self.fetchers]:
            thing.close()


@pytest.fixture
def make_identifier(servers: Servers) -> Iterator[Factory]:
    factory = Factory(servers)
    yield factory
    factory.close()


def task(url: str) -> Task:
    event = Event(event_id="e1", image_url=url)
    return Task(event=event, raw=b"{}", source=Source("in", 0, 7), tp=("in", 0), epoch=1, replay_count=0, consumed_at=0)


def never() -> bool:
    return False


def run(identifier: Identifier, t: Task, cancelled: Callable[[], bool] = never) -> Completion:
    """``identifier.run`` on a daemon thread: the test fails, instead of hanging, if it outlives BOUND."""
    box: list[Completion] = []
    worker = threading.Thread(target=lambda: box.append(identifier.run(t, cancelled)), daemon=True)
    worker.start()
    worker.join(BOUND)
    assert box, f"the event was still running after {BOUND} s"
    return box[0]


def test_an_api_retry_reuses_the_downloaded_image(servers: Servers, make_identifier: Factory) -> None:
    servers.api_script = [Answer(503, b"Service Unavailable")]
    done = run(make_identifier(), task(servers.image_url))
    assert (done.kind, done.attempts) == (Kind.RESULT, 2)
    assert servers.downloads == 1  # the retry uploaded the bytes it already had
    first, second = servers.uploads
    assert JPEG in first and JPEG in second


def test_the_image_stays_within_the_budget_across_retries_and_is_given_back(
    servers: Servers, make_identifier: Factory
) -> None:
    budget = ByteBudget(MAX_BYTES)
    held_during_uploads: list[int] = []
    servers.on_upload = lambda: held_during_uploads.append(budget.in_use)
    servers.api_script = [Answer(503, b""), Answer(500, b"")]
    done = run(make_identifier(budget), task(servers.image_url))
    assert (done.kind, done.attempts, servers.downloads) == (Kind.RESULT, 3, 1)
    assert held_during_uploads == [len(JPEG)] * 3  # one image, its own size, the whole event long
    assert make_identifier.held_by_events(budget) == 0 and budget.peak == MAX_BYTES  # max_bytes until headers


@pytest.mark.parametrize(
    ("script", "attempts"),
    [
        ([Answer(body=orjson.dumps({"code": -1101, "message": "no face"}))], 1),  # the image's fault
        ([Answer(503, b"")] * 3, 3),  # transient every time: dead-lettered once the attempts are spent
    ],
)
def test_a_dead_lettered_event_gives_its_image_back(
    servers: Servers, make_identifier: Factory, script: list[Answer], attempts: int
) -> None:
    budget = ByteBudget(MAX_BYTES)
    servers.api_script = list(script)
    done = run(make_identifier(budget), task(servers.image_url))
    assert (done.kind, done.attempts, servers.downloads) == (Kind.DEAD_LETTER, attempts, 1)
    assert make_identifier.held_by_events(budget) == 0


def test_a_cancelled_event_gives_its_image_back(servers: Servers, make_identifier: Factory) -> None:
    budget = ByteBudget(MAX_BYTES)
    revoked = threading.Event()
    servers.api_script = [Answer(503, b"")]
    servers.on_upload = revoked.set  # the partition is revoked while the first call is out
    policy = RetryPolicy(max_attempts=3, backoff_initial_s=BOUND, backoff_max_s=BOUND, jitter=False)
    started = time.monotonic()
    done = run(make_identifier(budget, policy), task(servers.image_url), revoked.is_set)
    assert done.kind is Kind.CANCELLED and time.monotonic() - started < BOUND
    assert make_identifier.held_by_events(budget) == 0 and servers.downloads == 1


def test_an_event_cancelled_while_waiting_for_room_downloads_nothing(
    servers: Servers, make_identifier: Factory
) -> None:
    budget = ByteBudget(MAX_BYTES)
    other = budget.acquire(MAX_BYTES)  # every byte is held by other events
    revoked = threading.Event()
    identifier = make_identifier(budget)
    box: list[Kind] = []
    worker = threading.Thread(
        target=lambda: box.append(identifier.run(task(servers.image_url), revoked.is_set).kind), daemon=True
    )
    worker.start()
    try:
        deadline = time.monotonic() + BOUND
        while budget.waiting == 0:
            assert time.monotonic() < deadline, "the event never waited for room"
            time.sleep(0.005)
        revoked.set()
        worker.join(BOUND)
        assert box == [Kind.CANCELLED]
        assert servers.downloads == 0 and budget.in_use == MAX_BYTES and budget.waiting == 0
    finally:
        other.release()  # whatever happened, nothing stays blocked behind the test
        worker.join(BOUND)


def test_a_failed_download_is_not_held_and_is_tried_again(servers: Servers, make_identifier: Factory) -> None:
    budget = ByteBudget(MAX_BYTES)
    servers.image_script = [503]
    done = run(make_identifier(budget), task(servers.image_url))
    assert (done.kind, done.attempts, servers.downloads, len(servers.uploads)) == (Kind.RESULT, 2, 2, 1)
    assert make_identifier.held_by_events(budget) == 0
