"""Tracing on the in-memory Kafka (deterministic): one trace per event, continuing the input's trace context.

The real pipeline runs (tests/support/contract.py) with the OpenTelemetry tracer of worker.ops.otel recording into
the SDK's InMemorySpanExporter. What is checked is what docs/tracing.md promises: the ``process`` span's parent is
the input record's ``traceparent``; every API call is an ``identify`` child with its outcome and latency (a
retried transient failure included); the output's ``send`` child ends at the acknowledgement and its context is
the output record's ``traceparent``; a dead letter marks the event span as an error.
"""

from __future__ import annotations

import logging
from collections import Counter
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
    assert h.pipeline._tracer._open == {}  # type: ignore[attr-defined]  # ended traces are not kept

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


# -- every event span ends exactly once, whatever happens to its partition ------------------------------------


@pytest.fixture
def sdk_warnings(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The SDK's warnings: it warns (and does nothing) when a span is ended twice or changed after its end."""
    caplog.set_level(logging.WARNING, logger="opentelemetry.sdk.trace")
    return lambda: [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry.sdk.trace")]


def outcomes(spans: InMemorySpanExporter) -> Counter[str]:
    """The ``mdw.outcome`` of every ended ``process`` span."""
    return Counter(str((s.attributes or {}).get("mdw.outcome")) for s in named(spans.get_finished_spans(), "process "))


def assert_one_span_per_consumption(h: Harness, spans: InMemorySpanExporter) -> None:
    events = named(spans.get_finished_spans(), "process ")
    assert len(events) == h.pipeline.stats.consumed, outcomes(spans)
    for event in events:
        if (event.attributes or {}).get("mdw.outcome") in ("revoked", "lost", "reset", "stopped", "cancelled"):
            assert event.status.status_code is StatusCode.UNSET  # not the event's fault: not an error


def test_events_revoked_before_their_call_started_end_as_revoked(sdk_warnings: Callable[[], list[str]]) -> None:
    h, spans = traced_harness(partitions=1, max_in_flight=2, latency_s=1.0)
    h.publish(10)
    h.assign(0)
    h.run_until(lambda: h.pipeline._dispatch.in_flight == 2 and h.pipeline._dispatch.ready_count == 2, within_s=5)
    h.clock.settle()  # both calls are in the API now
    h.revoke(0)  # the two calls in progress finish within revoke_timeout_s; the two waiting ones never start
    h.run_until(lambda: 0 not in {p for _, p in h.pipeline._assigned}, within_s=60)
    h.run(5)
    assert h.pipeline.stats.consumed == 4 and len(h.results()) == 2
    assert outcomes(spans) == Counter({"result": 2, "revoked": 2})
    assert_one_span_per_consumption(h, spans)
    for event in named(spans.get_finished_spans(), "process "):
        if (event.attributes or {})["mdw.outcome"] == "revoked":
            assert children(spans.get_finished_spans(), event) == []  # never called, never sent
    assert sdk_warnings() == []


def test_an_event_revoked_during_its_call_ends_at_the_revoke_and_its_late_completion_leaves_it_alone(
    sdk_warnings: Callable[[], list[str]],
) -> None:
    h, spans = traced_harness(partitions=1, max_in_flight=2, latency_s=100.0, revoke_timeout_s=1)
    h.publish(2)
    h.assign(0)
    h.run_until(lambda: h.pipeline._dispatch.in_flight == 2, within_s=5)
    h.clock.settle()
    h.revoke(0)  # the calls outlast revoke_timeout_s: the partition is forgotten with them in progress
    h.run_until(lambda: h.pipeline.stats.discarded_late == 2, within_s=200)  # the late completions
    h.run(5)
    assert outcomes(spans) == Counter({"revoked": 2})
    assert_one_span_per_consumption(h, spans)
    finished = spans.get_finished_spans()
    for event in named(finished, "process "):
        # The call that was in progress is still recorded (it was made); no output was, so no send span.
        [late] = children(finished, event)
        assert late.name == "identify"
        # The event ended at the revoke, before its call came back (span times are wall-clock).
        assert event.end_time is not None and late.end_time is not None and event.end_time <= late.end_time
    assert named(finished, "send ") == [] and h.results() == []
    assert sdk_warnings() == []


def test_events_of_a_lost_partition_end_as_lost(sdk_warnings: Callable[[], list[str]]) -> None:
    h, spans = traced_harness(partitions=1, max_in_flight=4, latency_s=1.0, commit_interval_s=60)
    h.publish(8)
    h.assign(0)
    h.run_until(lambda: h.pipeline._dispatch.in_flight == 4 and h.pipeline._dispatch.ready_count == 4, within_s=5)
    h.lose(0)
    h.run_until(lambda: h.pipeline.stats.discarded_late == 4, within_s=10)
    h.run(3)
    assert outcomes(spans) == Counter({"lost": 8})
    assert_one_span_per_consumption(h, spans)
    assert named(spans.get_finished_spans(), "send ") == []
    assert sdk_warnings() == []


def test_events_of_a_partition_whose_offsets_went_back_end_as_reset(sdk_warnings: Callable[[], list[str]]) -> None:
    h, spans = traced_harness(partitions=1, max_in_flight=2, latency_s=1.0)
    h.publish(6)
    h.assign(0)
    h.run_until(lambda: len(h.results()) == 2 and h.pipeline._dispatch.in_flight == 2, within_s=10)
    h.consumer.seek_back((IN, 0), 0)  # the next record consumed is offset 0 again: the partition starts afresh
    h.run_until(lambda: h.pipeline.stats.discarded_late > 0 and h.committed(0) == 6, within_s=30)
    h.run(3)
    counts = outcomes(spans)
    assert counts["reset"] >= 1 and counts["result"] == len(h.results()), counts
    assert set(counts) == {"result", "reset"}
    assert_one_span_per_consumption(h, spans)
    # The record that revealed the reset is traced in the new epoch, not ended with the old one.
    reset_offsets = [
        e.attributes["messaging.kafka.offset"]
        for e in named(spans.get_finished_spans(), "process ")
        if e.attributes is not None and e.attributes["mdw.outcome"] == "reset"
    ]
    assert 0 not in reset_offsets and 1 not in reset_offsets  # those had their results before the seek
    assert sdk_warnings() == []


def test_events_still_waiting_or_in_flight_when_the_drain_times_out_end_as_stopped(
    sdk_warnings: Callable[[], list[str]],
) -> None:
    h, spans = traced_harness(partitions=1, max_in_flight=2, latency_s=1000.0, drain_timeout_s=1)
    h.publish(6)
    h.assign(0)
    h.run_until(lambda: h.pipeline._dispatch.in_flight == 2 and h.pipeline._dispatch.ready_count == 2, within_s=5)
    h.clock.settle()
    assert h.stop() == 0
    assert outcomes(spans) == Counter({"stopped": 4})
    assert h.pipeline._tracer._open == {}  # type: ignore[attr-defined]
    assert_one_span_per_consumption(h, spans)
    assert sdk_warnings() == []


def test_an_output_not_acknowledged_by_the_stop_ends_its_event_and_send_spans(
    sdk_warnings: Callable[[], list[str]],
) -> None:
    h, spans = traced_harness(partitions=1, max_in_flight=2)
    h.producer.hold_acks = True  # the broker never acknowledges
    h.publish(2)
    h.assign(0)
    h.run_until(lambda: len(h.producer) == 2, within_s=10)
    assert h.stop() == 0
    assert outcomes(spans) == Counter({"stopped": 2})
    assert_one_span_per_consumption(h, spans)
    finished = spans.get_finished_spans()
    for event in named(finished, "process "):
        [_attempt, send] = children(finished, event)
        assert send.name == f"send {RESULTS}" and send.attributes is not None
        assert "messaging.kafka.offset" not in send.attributes  # never written, as far as the worker knows
    assert sdk_warnings() == []


def test_a_fatal_stop_ends_every_event_span(sdk_warnings: Callable[[], list[str]]) -> None:
    h, spans = traced_harness(partitions=1, max_in_flight=2)
    h.api.down(err(14))
    h.api.check = lambda: err(14)  # confirmed: the worker stops
    h.publish(6)
    h.assign(0)
    h.run_until(lambda: h.pipeline.fatal_reason is not None, within_s=10)
    assert h.stop() == 3
    counts = outcomes(spans)
    assert counts["stop"] >= 1 and set(counts) <= {"stop", "stopped", "cancelled"}, counts
    assert_one_span_per_consumption(h, spans)
    assert sdk_warnings() == []


# -- a binary-mode CloudEvent's tracing extension ----------------------------------------------------------------

CE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CE_PARENT_ID = "00f067aa0ba902b7"


def publish_binary_cloudevent(h: Harness, event_id: str, *, traceparent: str | None) -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", b"/cameras/gate-3"),
        ("ce_type", b"com.example.camera.face-capture"),
        ("ce_traceparent", f"00-{CE_TRACE_ID}-{CE_PARENT_ID}-01".encode()),
        ("ce_tracestate", b"camera=gate3"),
        ("content-type", b"application/json"),
    ]
    if traceparent is not None:
        headers.append(("traceparent", traceparent.encode()))
    value = orjson.dumps({"image_url": f"http://img.test/{event_id}.jpg"})
    h.broker.append(IN, 0, value, key=event_id.encode(), headers=headers)


def test_a_binary_cloudevent_without_a_traceparent_header_continues_its_ce_traceparent() -> None:
    h, spans = traced_harness(partitions=1, input_formats=f"{IN}=cloudevents")
    publish_binary_cloudevent(h, "c1", traceparent=None)
    h.assign(0)
    h.run_until(lambda: len(h.results()) == 1 and h.committed(0) == 1, within_s=10)

    [event] = named(spans.get_finished_spans(), "process ")
    assert event.context is not None and event.parent is not None
    assert format(event.context.trace_id, "032x") == CE_TRACE_ID
    assert format(event.parent.span_id, "016x") == CE_PARENT_ID and event.parent.is_remote
    assert event.context.trace_state.to_header() == "camera=gate3"
    assert event.attributes is not None and event.attributes["mdw.event_id"] == "c1"
    [record] = h.broker.records(RESULTS)
    traceparent = header(record.headers(), "traceparent")
    assert traceparent is not None and traceparent.startswith(f"00-{CE_TRACE_ID}-")  # the camera's trace goes on


def test_a_traceparent_header_wins_over_a_ce_traceparent() -> None:
    h, spans = traced_harness(partitions=1, input_formats=f"{IN}=cloudevents")
    publish_binary_cloudevent(h, "c1", traceparent=TRACEPARENT)
    h.assign(0)
    h.run_until(lambda: len(h.results()) == 1 and h.committed(0) == 1, within_s=10)

    [event] = named(spans.get_finished_spans(), "process ")
    assert event.context is not None and event.parent is not None
    assert format(event.context.trace_id, "032x") == TRACE_ID
    assert format(event.parent.span_id, "016x") == PARENT_ID
