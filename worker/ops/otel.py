"""The OpenTelemetry tracer of the worker: one trace per event (the one module that imports OpenTelemetry).

Imported only when tracing is on (``worker.ops.tracing.start``). Per consumed record, under the context its
``traceparent``/``tracestate`` headers carry; without a ``traceparent`` header, under the one its
``ce_traceparent``/``ce_tracestate`` headers carry (a binary-mode CloudEvent's distributed-tracing extension, in
the Kafka protocol binding); a new trace without either:

* ``process <input topic>`` (CONSUMER): from consumption to the acknowledgement of the event's output;
  status error for a dead letter (description: its code), a configuration stop, or an output the broker refused.
  An event given up without an output (revoked, lost, reset, stopped) ends when the pipeline gives it up, with
  ``mdw.outcome`` saying why and status unset: that is not the event's failure. Each span ends exactly once.
* ``identify`` (CLIENT), a child per API call: its duration is the call's latency, ``mdw.outcome`` is ``ok``
  or the error code (status error then), ``mdw.attempt`` counts the event's calls from 1.
* ``send <output topic>`` (PRODUCER), a child: from the produce call to the broker's acknowledgement. Its context
  replaces the input's trace headers on the output record, so the record's consumer continues the trace (the
  messaging conventions inject the context of the span that sends the message).

Attributes follow OpenTelemetry's messaging semantic conventions for Kafka (``messaging.system``,
``messaging.destination.name``, ``messaging.destination.partition.id``, ``messaging.kafka.offset``,
``messaging.operation.type``/``.name``, ``messaging.consumer.group.name``); the worker's own are ``mdw.*``.

The SDK sets itself up from its variables: resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``;
``service.name`` defaults to ``multidentify-worker`` here), sampler (``OTEL_TRACES_SAMPLER[_ARG]``), the
exporters' endpoint, headers and timeouts (``OTEL_EXPORTER_OTLP_*``), batching (``OTEL_BSP_*``), propagators
(``OTEL_PROPAGATORS``). The provider is the worker's own, not the global one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence
from importlib.metadata import entry_points

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker import __version__
from worker.core.records import Source
from worker.ops.tracing import EXPORTER_VAR, TracingConfigError, TracingPlan
from worker.runtime.observer import EventTrace, Header, TopicPartition, Tracer

SERVICE = "multidentify-worker"
_CLOSE_S = 1.0  # buffered spans get this long at shutdown: the stop must fit its budget (worker.runtime.stopping)
_EXPORTER_ENTRY_POINTS = "opentelemetry_traces_exporter"

KafkaHeaders = Sequence[tuple[str, bytes | None]]


class _HeaderGetter(Getter[KafkaHeaders]):
    """Reads a record's headers for the propagator: names compared case-insensitively, values UTF-8."""

    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        key = key.lower()
        found = [v.decode("utf-8", "replace") for n, v in carrier if v is not None and n.lower() == key]
        return found or None

    def keys(self, carrier: KafkaHeaders) -> list[str]:
        return [n for n, _ in carrier]


class _CloudEventGetter(_HeaderGetter):
    """Reads ``traceparent``/``tracestate`` from a binary-mode CloudEvent's ``ce_`` headers (Kafka binding)."""

    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        return super().get(carrier, "ce_" + key)


_GETTER = _HeaderGetter()
_CE_GETTER = _CloudEventGetter()
# The CloudEvents distributed-tracing extension is W3C Trace Context, whatever OTEL_PROPAGATORS says.
_CE_PROPAGATOR = TraceContextTextMapPropagator()
STOPPED = "stopped"


def resource() -> Resource:
    """The SDK's resource from the environment; ``service.name``/``.version`` are ours unless it sets them."""
    res = Resource.create()
    ours: dict[str, str] = {}
    if str(res.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        ours[SERVICE_NAME] = SERVICE
    if SERVICE_VERSION not in res.attributes:
        ours[SERVICE_VERSION] = __version__
    return res.merge(Resource(ours)) if ours else res


def load_exporter(name: str) -> SpanExporter:
    """The exporter the SDK registers as ``name``, built by itself from its variables."""
    found = entry_points(group=_EXPORTER_ENTRY_POINTS, name=name)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=_EXPORTER_ENTRY_POINTS))
        raise TracingConfigError(
            f"{EXPORTER_VAR}: no trace exporter {name!r} is installed (installed: {', '.join(known)})"
        )
    exporter = next(iter(found)).load()()
    if not isinstance(exporter, SpanExporter):
        raise TracingConfigError(f"{EXPORTER_VAR}: {name!r} is not a trace exporter")
    return exporter  # type: ignore[no-any-return]


class OtelTracer(Tracer):
    """One :class:`EventTrace` per consumed record, recorded by ``provider``."""

    def __init__(
        self, provider: TracerProvider, *, group_id: str = "", propagator: TextMapPropagator | None = None
    ) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("multidentify-worker", __version__)
        self._propagator = propagator or propagate.get_global_textmap()  # OTEL_PROPAGATORS
        self._group = group_id
        # The recording traces not ended yet, by input partition, for abandon() and stopped(). Bounded by the
        # events the pipeline holds (its uncommitted window); a partition's entry goes with its last trace.
        self._open: dict[TopicPartition, set[_EventTrace]] = {}

    @classmethod
    def from_plan(cls, plan: TracingPlan, *, group_id: str = "") -> OtelTracer:
        provider = TracerProvider(resource=resource())  # the sampler: OTEL_TRACES_SAMPLER[_ARG]
        for name in plan.exporters:
            provider.add_span_processor(BatchSpanProcessor(load_exporter(name)))  # OTEL_BSP_*
        return cls(provider, group_id=group_id)

    def event(self, source: Source) -> EventTrace:
        parent = self._propagator.extract(source.headers, getter=_GETTER)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            # No trace context of the record's own: a binary-mode CloudEvent's ce_traceparent, if any (the
            # headers are there before parsing; a structured event's tracing extension is inside the value).
            parent = _CE_PROPAGATOR.extract(source.headers, context=parent, getter=_CE_GETTER)
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": source.topic,
            "messaging.destination.partition.id": str(source.partition),
            "messaging.kafka.offset": source.offset,
        }
        if self._group:
            attributes["messaging.consumer.group.name"] = self._group
        span = self._tracer.start_span(
            f"process {source.topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        event = _EventTrace(self, span, source.tp)
        if event._recording:  # a sampled-out span records nothing: ending it or not changes nothing
            self._open.setdefault(source.tp, set()).add(event)
        return event

    def abandon(self, outcome: str, partitions: Collection[TopicPartition] | None = None) -> None:
        for tp in list(self._open) if partitions is None else partitions:
            # Those with an output produced end at its delivery report (or at stopped()).
            for event in [e for e in self._open.get(tp, ()) if e._send is None]:
                event.ended(outcome)

    def stopped(self) -> None:
        for events in list(self._open.values()):
            for event in list(events):
                event.unacknowledged()

    def _closed(self, event: _EventTrace) -> None:
        events = self._open.get(event._tp)
        if events is not None:
            events.discard(event)
            if not events:
                del self._open[event._tp]

    def close(self) -> None:
        # Export what is buffered, within a bound: an unreachable collector must not hold the stop.
        done = threading.Thread(target=self.provider.shutdown, name="otel-shutdown", daemon=True)
        done.start()
        done.join(_CLOSE_S)


class _EventTrace(EventTrace):
    __slots__ = (
        "_attempts",
        "_code",
        "_context",
        "_event_id",
        "_live",
        "_owner",
        "_recording",
        "_send",
        "_span",
        "_tp",
    )

    def __init__(self, owner: OtelTracer, span: Span, tp: TopicPartition) -> None:
        self._owner = owner
        self._span = span
        self._tp = tp
        self._live = True  # not ended yet: the first end wins, later ones change nothing
        self._event_id: str | None = None
        self._context = trace.set_span_in_context(span)
        # Sampled out: no child is recorded either (the output still carries the trace context, unsampled).
        self._recording = span.is_recording()
        self._attempts = 0  # only the HTTP thread running the event counts
        self._send: Span | None = None
        self._code: str | None = None

    def _end(self) -> bool:
        """Claim the event span's end: False when it has ended already (then the caller does nothing)."""
        if not self._live:
            return False
        self._live = False
        if self._recording:
            self._owner._closed(self)
        return True

    def parsed(self, event_id: str) -> None:
        self._event_id = event_id

    def attempt(self, outcome: str, latency_s: float) -> None:
        self._attempts += 1
        if not self._recording:
            return
        end = time.time_ns()
        span = self._owner._tracer.start_span(
            "identify",
            context=self._context,
            kind=SpanKind.CLIENT,
            start_time=end - int(latency_s * 1e9),  # recorded when the call ended: its duration is the latency
            attributes={"mdw.attempt": self._attempts, "mdw.outcome": outcome},
        )
        if outcome != "ok":
            span.set_attribute("mdw.error.code", outcome)
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end(end_time=end)

    def producing(
        self, topic: str, *, event_id: str | None, code: str | None = None, faces: int | None = None
    ) -> Sequence[Header]:
        self._code = code
        if not self._recording or not self._live:
            return self._inject(self._context)
        outcome = "result" if code is None else "dead_letter"
        self._span.set_attributes(self._outcome(outcome, event_id, code, faces))
        send = self._owner._tracer.start_span(
            f"send {topic}",
            context=self._context,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": topic,
                "mdw.outcome": outcome,
            },
        )
        self._send = send
        return self._inject(trace.set_span_in_context(send))

    def _inject(self, context: Context) -> list[Header]:
        carrier: dict[str, str] = {}
        self._owner._propagator.inject(carrier, context=context)
        return [(name, value.encode()) for name, value in carrier.items()]

    def delivered(self, partition: int | None, offset: int | None, error: str | None = None) -> None:
        send, self._send = self._send, None
        if send is None:
            return
        if error is not None:
            send.set_status(Status(StatusCode.ERROR, error))
            send.end()
            return  # the event goes on: a smaller record follows, or ended() says why not
        if partition is not None:
            send.set_attribute("messaging.destination.partition.id", str(partition))
        if offset is not None:
            send.set_attribute("messaging.kafka.offset", offset)
        send.end()
        if not self._end():
            return
        if self._code is not None:
            self._span.set_status(Status(StatusCode.ERROR, f"dead letter {self._code}"))
        self._span.end()

    def ended(self, outcome: str, *, event_id: str | None = None, code: str | None = None) -> None:
        if not self._end():
            return
        event = self._span
        event.set_attributes(self._outcome(outcome, event_id, code, None))
        if outcome in ("stop", "produce_failed"):
            event.set_status(Status(StatusCode.ERROR, outcome if code is None else f"{outcome} {code}"))
        event.end()

    def unacknowledged(self) -> None:
        """The pipeline closed before the broker acknowledged the event's output (or before it had one)."""
        send, self._send = self._send, None
        if send is not None:
            send.end()  # without the record's partition and offset: it was not acknowledged
        self.ended(STOPPED)

    def _outcome(self, outcome: str, event_id: str | None, code: str | None, faces: int | None) -> dict[str, str | int]:
        """The event span's ``mdw.*`` attributes once its outcome is known."""
        attributes: dict[str, str | int] = {"mdw.outcome": outcome, "mdw.attempts": self._attempts}
        event_id = event_id if event_id is not None else self._event_id
        if event_id is not None:
            attributes["mdw.event_id"] = event_id
        if code is not None:
            attributes["mdw.error.code"] = code
        if faces is not None:
            attributes["mdw.faces"] = faces
        return attributes
