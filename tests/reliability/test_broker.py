"""Broker outages through ``tansu proxy``: frozen (SIGSTOP, a hang) and refused (SIGKILL, then a restart).

The worker process and the test's producer both bootstrap through the proxy, so each ~10 s outage hits
production (the test's producer and the worker's output producer) and consumption at once. The outputs
are read straight from the broker. What must hold: no event is lost, processing resumes after the outage,
``/readyz`` answers not-ready while the worker is cut off and ready again afterwards, SIGTERM still exits 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

from tests.support.pipeline import settings_env
from tests.support.reliability import TansuProxy, enroll, event_value, image_urls, readiness, uncovered_commits
from worker.dev.harness.loopback import free_port
from worker.dev.harness.outputs import OutputReader
from worker.dev.harness.positions import committed_positions
from worker.dev.harness.processes import WorkerProcess
from worker.dev.harness.topics import Topics
from worker.emulator import EmulatorHandle, start_in_thread

pytestmark = [pytest.mark.broker, pytest.mark.heavy]

OUTAGE_S = 10.0
RATE_PER_S = 25  # events produced per second, before, during and after the outage
AFTER_S = 3.0  # production continues this long after the broker is back


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorHandle, list[str]]]:
    images = tmp_path_factory.mktemp("broker-images")
    with start_in_thread(images_dir=str(images), latency_ms=5, url_cache_ttl_s=600) as handle:
        sc = enroll(handle.base_url, images, ["alice", "bob"])
        yield handle, image_urls(sc, 8, seed=8000)


@dataclass
class SteadyProducer:
    """Produces events at a steady rate through ``bootstrap`` until stopped; keeps what was acknowledged."""

    bootstrap: str
    topic: str
    urls: list[str]
    prefix: str
    produced: list[tuple[float, str]] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SteadyProducer:
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": 60000,
                "linger.ms": 5,
                "log_level": 2,  # the refused connections during the outage are the point, not news
            }
        )

        def report(err: KafkaError | None, msg: object) -> None:
            event_id = msg.key().decode()  # type: ignore[attr-defined]
            if err is None:
                self.acked.add(event_id)
            else:
                self.failed.append(f"{event_id}: {err}")

        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            event_id = f"{self.prefix}-{i:05d}"
            producer.produce(
                self.topic,
                key=event_id.encode(),
                value=event_value(event_id, self.urls[i % len(self.urls)]),
                on_delivery=report,
            )
            self.produced.append((time.monotonic(), event_id))
            i += 1
            next_at += 1.0 / RATE_PER_S
            # poll() returns early when it serves a delivery report: wait out the rest of the slot.
            while (left := next_at - time.monotonic()) > 0:
                producer.poll(left)
        remaining = producer.flush(60)
        if remaining:
            self.failed.append(f"{remaining} records still queued after 60 s")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(90)


@pytest.mark.parametrize("outage", ["frozen", "refused"])
def test_broker_outage_loses_nothing_resumes_and_reports_not_ready(
    outage: str,
    kafka_bootstrap: str,
    emulator: tuple[EmulatorHandle, list[str]],
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    handle, urls = emulator
    topics = make_topics(4, results=2, dlq=2)
    proxy = TansuProxy(kafka_bootstrap, tmp_path / "proxy.log").start()
    port = free_port()
    env = settings_env(
        proxy.bootstrap, handle.base_url, topics, max_in_flight=16, metrics_port=port, metrics_host="127.0.0.1"
    )
    worker = WorkerProcess(env, log_path=tmp_path / "worker.log")
    producer = SteadyProducer(proxy.bootstrap, topics.input, urls, prefix=outage)
    collector = OutputReader(kafka_bootstrap, topics)
    try:
        with readiness(f"http://127.0.0.1:{port}/readyz") as probe:
            producer.start()
            collector.wait_for(
                lambda c: len(c.outputs) >= 20 and probe.ready_now(), timeout=30, what="a ready, working worker"
            )
            cut_at = time.monotonic()
            if outage == "frozen":
                proxy.freeze()
            else:
                proxy.kill()
            # The outage itself lasts OUTAGE_S; meanwhile outputs are still read straight from the broker.
            while time.monotonic() < cut_at + OUTAGE_S:
                collector.poll()
            if outage == "frozen":
                proxy.thaw()
            else:
                proxy.start()
            back_at = time.monotonic()
            outputs_before_back = len(collector.outputs)
            while time.monotonic() < back_at + AFTER_S:
                collector.poll()
            producer.stop()
            assert producer.failed == [], producer.failed[:5]
            collector.wait_for(
                lambda c: producer.acked <= c.event_ids(), timeout=40, what="an output for every acknowledged event"
            )
            collector.wait_for(lambda c: probe.ready_now(), timeout=20, what="/readyz to be ready again")
            samples = list(probe.samples)
        exit_code = worker.terminate(60)
    finally:
        producer.stop()
        worker.stop()
        proxy.stop()
    collector.drain()
    collector.close()
    assert exit_code == 0, worker.output()[-2000:]

    produced_during = [e for t, e in producer.produced if cut_at <= t < back_at]
    assert produced_during, "the outage must fall during production"
    assert producer.acked == {e for _, e in producer.produced}, "every produced event is acknowledged"
    lost = producer.acked - collector.event_ids()
    assert not lost, f"lost {len(lost)}: {sorted(lost)[:5]}"
    assert collector.dead_letters() == []
    assert len(collector.outputs) > outputs_before_back, "processing resumed after the outage"
    assert set(produced_during) <= collector.event_ids()

    positions = committed_positions(kafka_bootstrap, topics.group, topics.input)
    assert uncovered_commits(positions, collector.outputs) == []

    during = [(round(t - cut_at, 1), s, why) for t, s, why in samples if cut_at <= t <= back_at]
    not_ready = [x for x in during if x[1] != 200]
    duplicates = len(collector.outputs) - len(collector.event_ids())
    first_not_ready = not_ready[0][0] if not_ready else None
    print(
        f"\nbroker {outage} for {OUTAGE_S:.0f}s: produced {len(producer.produced)} ({len(produced_during)} during the "
        f"outage), outputs {len(collector.outputs)}, duplicates {duplicates}, lost 0; /readyz not ready from "
        f"+{first_not_ready}s ({len(not_ready)}/{len(during)} samples during the outage; reasons "
        f"{sorted({x[2] for x in not_ready})})"
    )
    assert not_ready, f"/readyz stayed ready while the broker was {outage}: {during[:5]}…"
