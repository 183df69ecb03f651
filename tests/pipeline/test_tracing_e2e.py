"""Tracing end to end: the real broker, the emulator over HTTP with transient faults, the OpenTelemetry SDK.

Each event is produced with its own ``traceparent``; the worker (``build_pipeline``, as ``run`` wires it) records
into the SDK's InMemorySpanExporter. Checked: one ``process`` span per event in the input's trace; its ``identify``
children match, code by code, what the emulator answered (its own statistics), the injected transient ``213``
answers included, each followed by a retry; the ``send`` child names the output record's partition and offset,
and the record carries that span's context; dead letters are errors.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.support.kafkatest import wait_until
from tests.support.pipeline import enrolled_emulator, settings_env
from worker import config
from worker.dev.harness.outputs import read_outputs
from worker.dev.harness.topics import Topics
from worker.ops.otel import OtelTracer
from worker.runtime.app import build_pipeline

pytestmark = pytest.mark.broker

PEOPLE = ["alice", "bob"]
FAULTS = {"error_rates": {"213": 0.4}, "latency": {"kind": "fixed", "ms": 20}, "seed": 16}


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, str]]) -> None:
    """(key, value, traceparent) each; waits for every acknowledgement."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failed: list[object] = []
    for key, value, traceparent in records:
        producer.produce(
            topic,
            value=value,
            key=key,
            headers=[("traceparent", traceparent.encode())],
            on_delivery=lambda err, _msg: failed.append(err) if err is not None else None,
        )
    assert producer.flush(30) == 0 and not failed, failed


def test_every_event_is_one_trace_with_its_calls_and_its_output(
    kafka_bootstrap: str, make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    topics = make_topics(2, results=1, dlq=1)
    with enrolled_emulator(tmp_path, PEOPLE) as (emulator, sc):
        sc.add_known(6, seed=2000)
        sc.add_unreachable(2, seed=2100)  # a permanent answer: dead letters
        emulator.admin(FAULTS)  # after the enrolment: only the searches see the transient answers
        emulator.reset(stats=True, faults=False)
        parents = {e.event_id: (secrets.token_hex(16), secrets.token_hex(8)) for e in sc.events}
        _produce(
            kafka_bootstrap,
            topics.input,
            [(e.key, e.value, f"00-{parents[e.event_id][0]}-{parents[e.event_id][1]}-01") for e in sc.events],
        )

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        env = settings_env(kafka_bootstrap, emulator.base_url, topics, max_in_flight=4, max_attempts=8)
        pipeline = build_pipeline(
            config.load(environ=env, require_credentials=True),
            tracer=OtelTracer(provider, group_id=topics.group),
        )
        exit_code: list[int] = []
        runner = threading.Thread(target=lambda: exit_code.append(pipeline.run()), name="pipeline", daemon=True)
        runner.start()
        try:
            wait_until(
                lambda: (
                    len([s for s in exporter.get_finished_spans() if s.name.startswith("process ")]) >= len(sc.events)
                ),
                timeout=90,
                what="a finished process span for every event",
            )
        finally:
            pipeline.request_stop()
            runner.join(60)
        assert not runner.is_alive() and exit_code == [0]
        answered = emulator.stats()["codes"]["/face/multidentify"]

    spans = exporter.get_finished_spans()
    events = [s for s in spans if s.name == f"process {topics.input}"]
    assert len(events) == len(sc.events)
    by_event: dict[str, ReadableSpan] = {}
    for span in events:
        assert span.attributes is not None and span.context is not None and span.parent is not None
        event_id = str(span.attributes["mdw.event_id"])
        trace_id, parent_id = parents[event_id]
        assert format(span.context.trace_id, "032x") == trace_id  # the input's trace, continued
        assert format(span.parent.span_id, "016x") == parent_id
        by_event[event_id] = span
    assert set(by_event) == set(parents)

    def children(parent: ReadableSpan, name: str) -> list[ReadableSpan]:
        assert parent.context is not None
        found = [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]
        return sorted((s for s in found if s.name == name), key=lambda s: s.start_time or 0)

    # Every call the emulator answered is an identify span with the same outcome, and nothing else is.
    attempts = {eid: children(span, "identify") for eid, span in by_event.items()}
    outcomes = Counter(str(a.attributes["mdw.outcome"]) for spans_ in attempts.values() for a in spans_)  # type: ignore[index]
    assert outcomes == Counter({("ok" if code == "0" else code): n for code, n in answered.items()})
    assert outcomes["213"] >= 1, "the seeded faults injected no transient answer: the test would prove nothing"
    for eid, calls in attempts.items():
        codes = [str(a.attributes["mdw.outcome"]) for a in calls]  # type: ignore[index]
        assert [a.attributes["mdw.attempt"] for a in calls] == list(range(1, len(calls) + 1))  # type: ignore[index]
        assert all(c == "213" for c in codes[:-1]), f"{eid}: only transient answers are retried: {codes}"
        for call in calls:
            assert call.end_time is not None and call.start_time is not None
            assert call.end_time - call.start_time >= 20e6  # the emulator's injected 20 ms latency, at least

    outputs = {o.event_id: o for o in read_outputs(kafka_bootstrap, topics)}
    for e in sc.events:
        span = by_event[e.event_id]
        [send] = children(span, f"send {topics.results if e.expect == 'result' else topics.dlq}")
        out = outputs[e.event_id]
        assert out.message is not None and send.attributes is not None and send.context is not None
        assert send.attributes["messaging.kafka.offset"] == out.message.offset()
        assert send.attributes["messaging.destination.partition.id"] == str(out.message.partition())
        assert (
            dict(out.headers)["traceparent"] == f"00-{parents[e.event_id][0]}-{send.context.span_id:016x}-01".encode()
        )
        if e.expect == "result":
            assert span.status.status_code is StatusCode.UNSET
        else:
            assert span.status.status_code is StatusCode.ERROR and out.code in (span.status.description or "")
