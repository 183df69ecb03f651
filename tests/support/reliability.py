"""Machinery of the reliability suite: records to produce, the commit contract, a Kafka proxy to cut, readiness.

Outputs are read back with the shared harness (``worker.dev.harness.outputs.OutputReader``). Everything here
binds to 127.0.0.1, is stopped by its own handle or PID, and waits with deadlines.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, Producer

from worker.config import ApiName
from worker.dev.devstack import tansu_binary
from worker.dev.harness.loopback import free_port, http_get
from worker.dev.harness.outputs import Output
from worker.dev.harness.processes import ChildProcess
from worker.dev.scenario import Scenario

Headers = list[tuple[str, bytes | None]]

# Codes the emulator's injected transient faults end as, once retries are exhausted.
TRANSIENT_CODES = frozenset(
    {"213", "15", "107", "108", "200", "-1200", "http_503", "http_429", "timeout", "connection", "bad_response"}
)


# --- the commit contract ---------------------------------------------------------------------------------------


def uncovered_commits(
    positions: Mapping[int, int], outputs: Iterable[Output], *, written_before_ms: int | None = None
) -> list[tuple[int, int]]:
    """Input coordinates below a committed position that have no output (written before ``written_before_ms``).

    The commit contract says an offset is committed only after its output is acknowledged, and outputs are
    stamped before they are produced: so with ``written_before_ms`` = a moment after the positions were read,
    every covered coordinate must have an output stamped no later than that.
    """
    covered: set[tuple[int, int]] = set()
    for o in outputs:
        if written_before_ms is None or o.written_ms <= written_before_ms:
            covered.add((o.partition, o.offset))
    missing = []
    for partition, position in positions.items():
        for offset in range(max(position, 0)):
            if (partition, offset) not in covered:
                missing.append((partition, offset))
    return missing


# --- producing ---------------------------------------------------------------------------------------------


@dataclass
class Record:
    value: bytes | None
    key: bytes | None = None
    headers: Headers = field(default_factory=list)
    partition: int | None = None


def produce_records(bootstrap: str, topic: str, records: list[Record], timeout: float = 60) -> list[tuple[int, int]]:
    """Produce in order (idempotent, up to 64 MiB per record); returns (partition, offset) per record."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": 64 * 1024 * 1024,
        }
    )
    coords: list[tuple[int, int] | None] = [None] * len(records)
    errors: list[str] = []

    def report(i: int) -> Any:
        def _cb(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(f"record {i}: {err}")
            else:
                coords[i] = (msg.partition(), msg.offset())

        return _cb

    for i, rec in enumerate(records):
        kwargs: dict[str, Any] = {"key": rec.key, "value": rec.value, "on_delivery": report(i)}
        if rec.headers:
            kwargs["headers"] = rec.headers
        if rec.partition is not None:
            kwargs["partition"] = rec.partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(timeout) == 0, "records not delivered in time"
    assert not errors, errors
    assert all(c is not None for c in coords)
    return [c for c in coords if c is not None]


# --- the emulator with a gallery -----------------------------------------------------------------------------


def enroll(base_url: str, images_dir: Path, people: list[str], *, api: ApiName = "v1") -> Scenario:
    """Enroll ``people`` in the emulator at ``base_url`` through ``api``; the scenario writes its images to
    ``images_dir``."""
    sc = Scenario(images_dir, base_url + "/images/", api=api)
    sc.enroll_at(base_url, people)
    return sc


def image_urls(sc: Scenario, count: int, seed: int) -> list[str]:
    """``count`` fresh synthetic photos of enrolled people (a stranger beside some), as URLs."""
    before = len(sc.events)
    sc.add_known(count, stranger_every=4, seed=seed)
    return [orjson.loads(e.value)["image_url"] for e in sc.events[before:]]


def event_value(event_id: str, url: str, **extra: Any) -> bytes:
    return orjson.dumps({"event_id": event_id, "image_url": url, **extra})


# --- the Kafka proxy we cut ---------------------------------------------------------------------------------


class TansuProxy:
    """``tansu proxy`` on a fixed loopback port in front of ``origin``; frozen (SIGSTOP) or killed at will.

    Clients that bootstrap through it see it advertised in metadata, so all their traffic passes here.
    """

    def __init__(self, origin: str, log_path: Path) -> None:
        self.port = free_port()
        self.origin = origin
        self._log_path = log_path
        self._proc: ChildProcess | None = None
        self.frozen = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15) -> TansuProxy:
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [tansu_binary(), "proxy", "--listener-url", url, "--advertised-listener-url", url]
        argv += ["--origin-url", f"tcp://{self.origin}"]
        deadline = time.monotonic() + timeout
        while True:
            self._proc = ChildProcess(
                argv,
                name="tansu-proxy",
                drop_env=("MDW_", "OTEL_"),
                log_path=self._log_path,
                append_log=True,  # one log across restarts
                cwd=None,
                stop_timeout=5,
            )
            if self._wait_listening(deadline):
                return self
            # The port may linger for a moment after a kill: try again until the deadline.
            self._proc.kill()
            if time.monotonic() > deadline:
                raise AssertionError(f"tansu proxy did not listen on {self.port}: {self._log_path.read_text()[-500:]}")
            time.sleep(0.1)

    def _wait_listening(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            assert self._proc is not None
            if not self._proc.alive():
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
            time.sleep(0.02)
        return False

    def freeze(self) -> None:
        """A hang: connections stay open, nothing moves."""
        assert self._proc is not None
        self._proc.signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self._proc is not None
        self._proc.signal(signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        """Connections reset; new ones are refused until :meth:`start` again."""
        if self._proc is not None:
            self._proc.kill()  # SIGKILL ends a stopped process too
            self.frozen = False

    def stop(self) -> None:
        if self._proc is not None:
            if self.frozen:
                self.thaw()
            self._proc.stop()


# --- HTTP probes ----------------------------------------------------------------------------------------------


@dataclass
class ReadinessProbe:
    """Polls ``/readyz`` every ``interval`` seconds in a thread and keeps (monotonic time, status, reason)."""

    url: str
    interval: float = 0.2
    samples: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ReadinessProbe:
        self._thread = threading.Thread(target=self._run, name="readyz-probe", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body = http_get(self.url, timeout=1.0)
            self.samples.append((time.monotonic(), status, body.decode("utf-8", "replace").strip()))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def between(self, start: float, end: float) -> list[tuple[float, int, str]]:
        return [s for s in self.samples if start <= s[0] <= end]

    def ready_now(self) -> bool:
        return bool(self.samples) and self.samples[-1][1] == 200


@contextlib.contextmanager
def readiness(url: str) -> Iterator[ReadinessProbe]:
    probe = ReadinessProbe(url).start()
    try:
        yield probe
    finally:
        probe.stop()
