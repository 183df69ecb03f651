"""Tracing on the in-memory Kafka (deterministic): one trace per event, continuing the input's trace context.

The real pipeline runs (tests/support/contract.py) with the OpenTelemetry tracer of worker.ops.otel recording into
the SDK's InMemorySpanExporter. What is checked is what docs/tracing.md promises: the ``process`` span's parent is
the input record's ``traceparent``; every API call is an ``identify`` child with its outcome and latency (a
retried transient failure included); the output's ``send`` child ends at the acknowledgement and its context is
the output record's ``traceparent``; a dead letter marks the event span as an error.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.contract import DLQ, IN, OK, RESULTS, Harness, build, err
from worker.api.errors import ApiError
from worker.api.models import IdentifyResult
from worker.ops.otel import OtelTracer

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def traced_harness(sampler: Sampler | None = None, **kwargs: object) -> tuple[Harness, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # exported at end(): visible at once
    return build(tracer=OtelTracer(provider, group_id="g1"), **kwargs), exporter  # type: ignore[arg-type]


def publish(h: Harness, event_id: str, *, url: str | None = None, traceparent: str | None = TRACEPARENT) -> None:
    headers: list[tuple[str, bytes | None]] = [("x-other", b"kept")]
    if traceparent is not None:
        headers += [("traceparent", traceparent.encode()), ("tracestate", b"vendor=abc")]
    value = orjson.dumps({"event_id": event_id, "image_url": url or f"http://img.test/{event_id}.jpg"})
    h.broker.append(IN, 0, value, key=event_id.encode(), headers=headers)


def named(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id),
        key=lambda s: s.start_time or 0,
    )


def header(msg_headers: object, name: str) -> str | None:
    found = [v for n, v in (msg_headers or []) if n == name]  # type: ignore[attr-defined]
    return found[-1].decode() if found else None


def scripted(*answers: ApiError | IdentifyResult) -> Callable[[str], ApiError | IdentifyResult]:
    """The API's answers in order (the last one repeats)."""
    left = list(answers)
    return lambda url: left.pop(0) if len(left) > 1 else left[0]


def test_an_event_is_one_trace_continuing_the_input_with_its_attempts_and_its_output() -> None:
    h, spans = traced_harness(partitions=1, max_in_flight=2, policy=None)
    h.api.answer = scripted(err(213), OK)  # a transient failure, retried
    publish(h, "e1")
    h.assign(0)
    h.run_until(lambda: len(h.results()) == 1 and h.committed(0) == 1, within_s=10)

    finished = spans.get_finished_spans()
    [event] = named(finished, "process ")
    assert event.context is not None and event.parent is not None
    assert event.name == f"process {IN}" and event.kind is SpanKind.CONSUMER
    assert format(event.context.trace_id, "032x") == TRACE_ID  # the input's trace, continued
    assert format(event.parent.span_id, "016x") == PARENT_ID and event.parent.is_remote
    assert event.attributes is not None
    assert {k: event.attributes[k] for k in event.attributes if k.startswith("messaging.")} == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": IN,
        "messaging.destination.partition.id": "0",
        "messaging.kafka.offset": 0,
        "messaging.consumer.group.name": "g1",
    }
    assert event.attributes["mdw.event_id"] == "e1"
    assert event.attributes["mdw.outcome"] == "result" and event.attributes["mdw.faces"] == 1
    assert event.attributes["mdw.attempts"] == 2
    assert event.status.status_code is StatusCode.UNSET

    first, second, send = children(finished, event)
    for attempt, outcome in ((first, "213"), (second, "ok")):
        assert attempt.name == "identify" and attempt.kind is SpanKind.CLIENT
        assert attempt.attributes is not None and attempt.attributes["mdw.outcome"] == outcome
        assert attempt.start_time is not None and attempt.end_time is not None
        # Its duration is the call's latency (the fake API answers after 0.05 s of virtual time).
        assert attempt.end_time - attempt.start_time == pytest.approx(h.api.latency_s * 1e9, abs=1e3)
    assert first.attributes is not None and second.attributes is not None
    assert (first.attributes["mdw.attempt"], second.attributes["mdw.attempt"]) == (1, 2)
    assert first.attributes["mdw.error.code"] == "213" and first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET

    assert send.name == f"send {RESULTS}" and send.kind is SpanKind.PRODUCER
    [record] = h.broker.records(RESULTS)
    assert send.attributes is not None and send.context is not None
    assert send.attributes["messaging.destination.name"] == RESULTS
    assert send.attributes["messaging.destination.partition.id"] == str(record.partition())
    assert send.attributes["messaging.kafka.offset"] == record.offset()
    # The event span ends with the acknowledgement, after its send span.
    assert event.end_time is not None and send.end_time is not None and send.end_time <= event.end_time

    # The output continues the trace from the send span; tracestate and other headers travel as before.
    assert header(record.headers(), "traceparent") == f"00-{TRACE_ID}-{send.context.span_id:016x}-01"
    assert header(record.headers(), "tracestate") == "vendor=abc"
    assert [n for n, _ in record.headers() or []].count("traceparent") == 1


def test_a_dead_letter_marks_the_event_span_as_an_error() -> None:
    h, spans = traced_harness(partitions=1)
    h.api.answer = lambda url: err(-1101)  # permanent: dead-lettered at once
    publish(h, "e1")
    h.assign(0)
    h.run_until(lambda: len(h.dead_letters()) == 1 and h.committed(0) == 1, within_s=10)

    finished = spans.get_finished_spans()
    [event] = named(finished, "process ")
    assert event.status.status_code is StatusCode.ERROR and event.status.description == "dead letter -1101"
    assert event.attributes is not None
    assert event.attributes["mdw.outcome"] == "dead_letter" and event.attributes["mdw.error.code"] == "-1101"
    attempt, send = children(finished, event)
    assert attempt.attributes is not None and attempt.attributes["mdw.outcome"] == "-1101"
    assert send.name == f"send {DLQ}" and send.status.status_code is StatusCode.UNSET
    [record] = h.broker.records(DLQ)
    assert send.context is not None
    assert header(record.headers(), "traceparent") == f"00-{TRACE_ID}-{send.context.span_id:016x}-01"
    assert header(record.headers(), "x-other") == "kept"  # the dead letter's own header rules still hold


def test_an_invalid_event_is_traced_too_without_attempts() -> None:
    h, spans = traced_harness(partitions=1)
    h.broker.append(IN, 0, b"{not json", headers=[("traceparent", TRACEPARENT.encode())])
    h.assign(0)
    h.run_until(lambda: len(h.dead_letters()) == 1 and h.committed(0) == 1, within_s=10)

    finished = spans.get_finished_spans()
    [event] = named(finished, "process ")
    assert event.context is not None and format(event.context.trace_id, "032x") == TRACE_ID
    assert event.status.status_code is StatusCode.ERROR
    assert [s.name for s in children(finished, event)] == [f"send {DLQ}"]


def test_a_dead_letter_refused_for_its_size_shows_both_sends() -> None:
    h, spans = traced_harness(partitions=1)
    h.producer.too_large_bytes = 1500  # the dead letter with the original is larger; without it, it fits
    publish(h, "e1", url="http://img.test/" + "x" * 1500 + ".jpg")
    h.api.answer = lambda url: err(-1101)
    h.assign(0)
    h.run_until(lambda: len(h.dead_letters()) == 1 and h.committed(0) == 1, within_s=10)

    finished = spans.get_finished_spans()
    [event] = named(finished, "process ")
    refused, sent = (s for s in children(finished, event) if s.name.startswith("send "))
    assert refused.status.status_code is StatusCode.ERROR and sent.status.status_code is StatusCode.UNSET
    [record] = h.broker.records(DLQ)
    assert sent.context is not None
    assert header(record.headers(), "traceparent") == f"00-{TRACE_ID}-{sent.context.span_id:016x}-01"
    assert event.status.status_code is StatusCode.ERROR


def test_without_a_trace_header_each_event_starts_its_own_trace() -> None:
    h, spans = traced_harness(partitions=1)
    publish(h, "e1", traceparent=None)
    publish(h, "e2", traceparent=None)
    h.assign(0)
    h.run_until(lambda: len(h.results()) == 2 and h.committed(0) == 2, within_s=10)

    events = named(spans.get_finished_spans(), "process ")
    assert len(events) == 2 and all(e.parent is None for e in events)
    assert len({e.context.trace_id for e in events if e.context is not None}) == 2
    for record in h.broker.records(RESULTS):
        assert header(record.headers(), "traceparent") is not None  # downstream continues the worker's trace


def test_a_configuration_stop_ends_the_event_span_as_an_error() -> None:
    h, spans = traced_harness(partitions=1)
    h.api.down(err(14))  # a wrong secret key: configuration/auth
    h.api.check = lambda: err(14)  # ... confirmed by the check call
    publish(h, "e1")
    h.assign(0)
    h.run_until(lambda: h.pipeline.fatal_reason is not None, within_s=10)

    [event] = named(spans.get_finished_spans(), "process ")
    assert event.attributes is not None and event.attributes["mdw.outcome"] == "stop"
    assert event.attributes["mdw.error.code"] == "14"
    assert event.status.status_code is StatusCode.ERROR
    assert h.stop() == 3


def test_a_sampled_out_event_records_nothing_but_its_output_still_carries_the_trace() -> None:
    h, spans = traced_harness(sampler=ParentBased(ALWAYS_OFF, remote_parent_sampled=ALWAYS_OFF))
    h.api.answer = scripted(err(213), OK)
    publish(h, "e1")
    h.assign(0)
    h.run_until(lambda: len(h.results()) == 1 and h.committed(0) == 1, within_s=10)
    assert spans.get_finished_spans() == ()
    [record] = h.broker.records(RESULTS)
    traceparent = header(record.headers(), "traceparent")
    assert traceparent is not None and traceparent.startswith(f"00-{TRACE_ID}-") and traceparent.endswith("-00")


def test_off_the_output_keeps_the_input_trace_headers() -> None:
    # No tracer: the records carry the input's trace context unchanged, as before tracing existed.
    h = build(partitions=1)
    publish(h, "e1")
    h.assign(0)
    h.run_until(lambda: len(h.results()) == 1, within_s=10)
    [record] = h.broker.records(RESULTS)
    assert header(record.headers(), "traceparent") == TRACEPARENT
    assert header(record.headers(), "tracestate") == "vendor=abc"
