"""``multidentify-worker run`` with tracing on, as a user runs it: OTEL_* variables, OTLP over HTTP to a collector.

The collector is a loopback HTTP server that decodes OTLP/protobuf export requests (``POST /v1/traces``) with
OpenTelemetry's own protobuf classes. The worker process is configured only by the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``, ``OTEL_BSP_SCHEDULE_DELAY``); it exports a trace per
event that continues the input's ``traceparent``, under the service name given, and what is still buffered
when it stops is exported before it exits.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.kafkatest import wait_until
from tests.support.pipeline import enrolled_emulator, settings_env
from tests.support.servers import loopback_server, serving
from worker.dev.harness.outputs import read_outputs
from worker.dev.harness.processes import WorkerProcess
from worker.dev.harness.topics import Topics
from worker.emulator import EmulatorHandle

pytestmark = pytest.mark.broker

EVENTS = 4


class Collector:
    """What the OTLP receiver got: (service name, span name, trace id hex, parent span id hex, attributes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, str, str, str, dict[str, Any]]] = []
        self.paths: list[str] = []

    def add(self, path: str, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            self.paths.append(path)
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attributes = {a.key: a.value.string_value or a.value.int_value for a in span.attributes}
                        self.spans.append(
                            (
                                resource.get("service.name", ""),
                                span.name,
                                span.trace_id.hex(),
                                span.parent_span_id.hex(),
                                attributes,
                            )
                        )

    def named(self, prefix: str) -> list[tuple[str, str, str, str, dict[str, Any]]]:
        with self.lock:
            return [s for s in self.spans if s[1].startswith(prefix)]


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    got = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.add(self.path, body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    with serving(loopback_server(Handler)) as server:
        yield got, f"http://127.0.0.1:{server.server_address[1]}"


def test_the_worker_process_exports_a_trace_per_event_over_otlp(
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    collector: tuple[Collector, str],
    tmp_path: Path,
) -> None:
    got, endpoint = collector
    topics = make_topics(2, results=1, dlq=1)
    with contextlib.ExitStack() as stack:
        emulator, sc = stack.enter_context(enrolled_emulator(tmp_path, ["alice", "bob"]))
        sc.add_known(EVENTS - 1, seed=3000)
        sc.add_unreachable(1, seed=3100)  # a permanent answer: one dead letter
        parents = {e.event_id: (secrets.token_hex(16), secrets.token_hex(8)) for e in sc.events}
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for e in sc.events:
            trace_id, span_id = parents[e.event_id]
            headers = [("traceparent", f"00-{trace_id}-{span_id}-01".encode())]
            producer.produce(topics.input, value=e.value, key=e.key, headers=headers)
        assert producer.flush(30) == 0
        _run_worker(kafka_bootstrap, emulator, topics, endpoint, tmp_path)

    events = got.named("process ")
    assert len(events) == EVENTS, got.paths
    assert set(got.paths) == {"/v1/traces"}
    assert {(s[2], s[3]) for s in events} == set(parents.values())  # each continues its input's trace
    assert {s[0] for s in got.spans} == {"mdw-under-test"}
    assert sorted(s[4]["mdw.outcome"] for s in events) == ["dead_letter"] + ["result"] * (EVENTS - 1)
    sends = sorted(s[1] for s in got.named("send "))
    assert sends == [f"send {topics.dlq}"] + [f"send {topics.results}"] * (EVENTS - 1)


def _run_worker(bootstrap: str, emulator: EmulatorHandle, topics: Topics, endpoint: str, tmp_path: Path) -> None:
    """Run the worker process until every event has its output, then stop it with SIGTERM (exit 0)."""
    env = {
        **settings_env(bootstrap, emulator.base_url, topics),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "mdw-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing exported before the stop: the stop must flush
    }
    worker = WorkerProcess(env, log_path=tmp_path / "worker.log")
    try:
        wait_until(
            lambda: len(read_outputs(bootstrap, topics, timeout=2)) >= EVENTS or not worker.alive(),
            timeout=60,
            what="an output per event",
        )
        assert worker.alive(), worker.output()[-2000:]
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.output()[-2000:]
    finally:
        worker.stop(10)
    assert "tracing every event with OpenTelemetry" in worker.output()
