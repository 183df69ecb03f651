"""Machinery of the reliability suite: outputs read incrementally, a Kafka proxy to cut, readiness probes.

Everything here binds to 127.0.0.1, is stopped by its own handle or PID, and waits with deadlines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from worker.api.client import ClientOptions, MultidentifyClient
from worker.dev import devstack
from worker.dev.scenario import Scenario
from worker.emulator import DEV_ACCOUNT

Headers = list[tuple[str, bytes | None]]

# Codes the emulator's injected transient faults end as, once retries are exhausted.
TRANSIENT_CODES = frozenset(
    {"213", "15", "107", "108", "200", "-1200", "http_503", "http_429", "timeout", "connection", "bad_response"}
)


# --- outputs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """One record the worker wrote: a result or a dead letter, with the input coordinates it names."""

    kind: str  # "result" or "dlq"
    code: str  # "result", or the dead-letter key
    event_id: str | None
    partition: int  # input coordinates (source.* of a result, original.* of a dead letter)
    offset: int
    written_ms: int  # processed_at_ms / dead_lettered_at_ms: stamped before the record was produced
    instance: str  # worker host/pid
    doc: dict[str, Any]
    key: bytes | None
    headers: Headers


def _output(kind: str, key: str | bytes | None, value: bytes | None, headers: Headers) -> Output:
    key = key.encode() if isinstance(key, str) else key
    assert value is not None, "the worker never writes a tombstone"
    doc = orjson.loads(value)
    if kind == "result":
        src = doc["source"]
        return Output(
            "result",
            "result",
            doc["event_id"],
            src["partition"],
            src["offset"],
            doc["processed_at_ms"],
            doc["worker"].get("instance", ""),
            doc,
            key,
            headers,
        )
    orig = doc["original"]
    return Output(
        "dlq",
        (key or b"").decode("utf-8", "replace"),
        doc["event_id"],
        orig["partition"],
        orig["offset"],
        doc["dead_lettered_at_ms"],
        doc["worker"].get("instance", ""),
        doc,
        key,
        headers,
    )


class OutputCollector:
    """Reads the results and dead-letter topics from the start by assignment (no group) and keeps every record.

    ``poll()`` drains what has arrived; the collector never re-reads, so waiting on 20,000 outputs stays cheap.
    """

    def __init__(self, bootstrap: str, results_topic: str, dlq_topic: str) -> None:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        self._kinds = {results_topic: "result", dlq_topic: "dlq"}
        tps = []
        for topic in (results_topic, dlq_topic):
            meta = admin.list_topics(topic, timeout=10)
            tps += [TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions]
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"collector-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "fetch.wait.max.ms": 100,  # Tansu holds every fetch this long: keep the collector responsive
                "receive.message.max.bytes": 100 * 1024 * 1024,
            }
        )
        self._consumer.assign(tps)
        self.outputs: list[Output] = []
        self._lock = threading.Lock()

    def poll(self, budget_s: float = 0.3) -> int:
        """Read for ``budget_s`` seconds; the number of new records."""
        deadline = time.monotonic() + budget_s
        added = 0
        while (left := deadline - time.monotonic()) > 0:
            msgs = self._consumer.consume(2000, min(0.1, left))
            with self._lock:
                for m in msgs:
                    if m.error() is not None:
                        continue
                    kind = self._kinds[m.topic() or ""]
                    consumed: list[tuple[str, bytes | None]] = m.headers() or []  # type: ignore[assignment]
                    headers: Headers = list(consumed)
                    self.outputs.append(_output(kind, m.key(), m.value(), headers))
                    added += 1
        return added

    def drain(self, idle_s: float = 0.6, timeout: float = 60) -> None:
        """Read until nothing new arrived for ``idle_s`` (longer than the broker's fetch wait) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.poll(idle_s):
            pass

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        """Poll until ``predicate(self)`` is true; fail with ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} ({self.summary()})")
            self.poll()

    def wait_for_progress(
        self, predicate: Any, stall_s: float, what: str, diagnose: Callable[[], str] | None = None
    ) -> None:
        """Poll until ``predicate(self)``; fail only when no new output came for ``stall_s`` seconds.

        A busy machine makes the run slower, not wrong: what fails is a stall, and the message says what the
        workers report then (``diagnose``), so a wedge is told apart from load.
        """
        seen, last_progress = len(self.outputs), time.monotonic()
        while not predicate(self):
            if len(self.outputs) != seen:
                seen, last_progress = len(self.outputs), time.monotonic()
            elif time.monotonic() - last_progress > stall_s:
                state = f"; workers: {diagnose()}" if diagnose else ""
                raise AssertionError(f"no progress for {stall_s:.0f}s waiting for {what} ({self.summary()}){state}")
            self.poll()

    def event_ids(self) -> set[str]:
        return {o.event_id for o in self.outputs if o.event_id is not None}

    def results(self) -> list[Output]:
        return [o for o in self.outputs if o.kind == "result"]

    def dead_letters(self) -> list[Output]:
        return [o for o in self.outputs if o.kind == "dlq"]

    def by_coordinates(self) -> dict[tuple[int, int], list[Output]]:
        out: dict[tuple[int, int], list[Output]] = {}
        for o in self.outputs:
            out.setdefault((o.partition, o.offset), []).append(o)
        return out

    def summary(self) -> str:
        codes = Counter(o.code for o in self.outputs)
        return f"{len(self.outputs)} outputs: {dict(codes)}"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close()

    def __enter__(self) -> OutputCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def committed_positions(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed position per partition of ``topic`` (-1001 when nothing is committed)."""
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    parts = sorted(meta.topics[topic].partitions)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


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


def enroll(base_url: str, images_dir: Path, people: list[str]) -> Scenario:
    """Enroll ``people`` in the emulator at ``base_url``; the scenario writes its images to ``images_dir``."""
    sc = Scenario(images_dir, base_url + "/images/")
    with MultidentifyClient(
        ClientOptions(
            appid=DEV_ACCOUNT.appid,
            secret_id=DEV_ACCOUNT.secret_id,
            secret_key=DEV_ACCOUNT.secret_key,
            base_url=base_url,
        )
    ) as client:
        sc.enroll(client, people)
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
        self.port = devstack.free_port()
        self.origin = origin
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 15) -> TansuProxy:
        url = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        deadline = time.monotonic() + timeout
        while True:
            with open(self._log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [
                        devstack.tansu_binary(),
                        "proxy",
                        "--listener-url",
                        url,
                        "--advertised-listener-url",
                        url,
                        "--origin-url",
                        f"tcp://{self.origin}",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                )
            if self._wait_listening(deadline):
                return self
            # The port may linger for a moment after a kill: try again until the deadline.
            self._reap()
            if time.monotonic() > deadline:
                raise AssertionError(f"tansu proxy did not listen on {self.port}: {self._log_path.read_text()[-500:]}")
            time.sleep(0.1)

    def _wait_listening(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
            time.sleep(0.02)
        return False

    def freeze(self) -> None:
        """A hang: connections stay open, nothing moves."""
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        """Connections reset; new ones are refused until :meth:`start` again."""
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            if self.frozen:
                os.kill(self._proc.pid, signal.SIGCONT)
                self.frozen = False
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(10)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            if self.frozen:
                self.thaw()
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)


# --- HTTP probes ----------------------------------------------------------------------------------------------


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET on loopback; (0, reason) when nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, urllib.error.URLError) as exc:
        return 0, str(exc).encode()


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
