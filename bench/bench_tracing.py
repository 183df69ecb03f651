"""What tracing costs per event: off (the default) vs on with OpenTelemetry recording into memory.

    python bench/bench_tracing.py [--quick]

No broker, no API: the tracing work is exactly the hooks the pipeline calls per event (worker.runtime.observer):
``Tracer.event`` at consumption, ``EventTrace.parsed`` once the record is parsed, ``EventTrace.attempt`` per API
call (here one transient failure and its retry), ``producing`` when the output is produced (it returns the
output's trace headers) and ``delivered`` at the acknowledgement. They run N times in a loop, as the poll loop and
the HTTP threads would, for each configuration:

* **off**: the no-op ``Tracer`` that ``worker.ops.tracing.start`` returns without ``OTEL_*`` variables. The
  figure also checks that nothing of OpenTelemetry was imported by then.
* **on, sampled out**: OpenTelemetry with the ``always_off`` sampler (what unsampled traffic costs).
* **on, batch export**: OpenTelemetry with ``BatchSpanProcessor`` into an in-memory exporter, the shape of a
  production setup minus the network (the batching thread's CPU is counted: process CPU time).
* **on, synchronous export**: ``SimpleSpanProcessor`` into memory: every span exported on the calling thread.

Every event carries an input ``traceparent`` (its trace is continued). Figures are CPU microseconds per event,
the best of a few rounds (the machine is shared; the best round is the least disturbed one).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from report import Check, ScenarioReport, fmt, standalone

from worker.core.records import Source
from worker.ops import tracing
from worker.runtime.observer import Tracer

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# The worker's own CPU per event end to end (bench_cpu, worker row of bench/results/2026-12-01-cpu.md): the
# scale the overhead is read against.
WORKER_CPU_US_PER_EVENT = 800.0


def _sources(n: int) -> list[Source]:
    headers = (("traceparent", TRACEPARENT), ("tracestate", b"vendor=abc"))
    return [Source("images", i % 8, i, 1_700_000_000_000, f"k{i}".encode(), headers) for i in range(n)]


def _per_event_us(tracer: Tracer, sources: list[Source], rounds: int) -> float:
    """Best round's process CPU per event (µs) running the pipeline's tracing hooks for every source."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for i, source in enumerate(sources):
            trace = tracer.event(source)
            trace.parsed(f"e{i}")
            trace.attempt("213", 0.02)
            trace.attempt("ok", 0.02)
            trace.producing("results", event_id=f"e{i}", faces=2)
            trace.delivered(0, i)
        flush = getattr(getattr(tracer, "provider", None), "force_flush", None)
        if flush is not None:
            flush()  # the batch thread's work on these spans is part of the round
        best = min(best, (time.process_time() - start) / len(sources) * 1e6)
    return best


def _otel(processor: str, sampled: bool) -> Callable[[], Tracer]:
    def make() -> Tracer:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

        from worker.ops.otel import OtelTracer

        provider = TracerProvider(
            sampler=None if sampled else ParentBased(ALWAYS_OFF, remote_parent_sampled=ALWAYS_OFF)
        )
        exporter = InMemorySpanExporter()
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=1 << 16)
            if processor == "batch"
            else SimpleSpanProcessor(exporter)
        )
        return OtelTracer(provider, group_id="bench")

    return make


def run(quick: bool) -> ScenarioReport:
    n = 2_000 if quick else 10_000
    rounds = 3 if quick else 5
    sources = _sources(n)

    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]  # the default: no OTEL_* variable (this process only)
    off_tracer = tracing.start()  # what the worker runs with
    off = _per_event_us(off_tracer, sources, rounds)
    imported_off = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")

    rows = [["off (default)", fmt(off, 2), fmt(100 * off / WORKER_CPU_US_PER_EVENT, 2) + " %", str(len(imported_off))]]
    figures: dict[str, float] = {}
    for label, make in (
        ("on, sampled out (always_off)", _otel("simple", sampled=False)),
        ("on, batch export to memory", _otel("batch", sampled=True)),
        ("on, synchronous export to memory", _otel("simple", sampled=True)),
    ):
        tracer = make()
        try:
            figures[label] = us = _per_event_us(tracer, sources, rounds)
        finally:
            tracer.close()
        rows.append([label, fmt(us, 1), fmt(100 * us / WORKER_CPU_US_PER_EVENT, 1) + " %", "–"])

    checks = [
        Check(
            "tracing",
            "off: no OpenTelemetry module imported",
            f"{len(imported_off)} modules" + (f" ({', '.join(imported_off[:3])}…)" if imported_off else ""),
            not imported_off,
        ),
        Check(
            "tracing",
            "off: the hooks cost < 1 % of the worker's CPU per event",
            f"{fmt(off, 2)} µs of {fmt(WORKER_CPU_US_PER_EVENT, 0)} µs",
            off < 0.01 * WORKER_CPU_US_PER_EVENT,
        ),
        Check(
            "tracing",
            "on (batch export): CPU per event (reported, no target)",
            f"{fmt(figures['on, batch export to memory'], 1)} µs",
            None,
        ),
    ]
    return ScenarioReport(
        name="tracing",
        title="Tracing: CPU per event off (default) and on (OpenTelemetry, in-memory export)",
        headers=["configuration", "CPU µs / event", "vs the worker's CPU per event", "opentelemetry modules"],
        table=rows,
        checks=checks,
        notes=[
            f"{n:,} events per round, best of {rounds} rounds; per event: one consumed record with a traceparent,"
            " two API attempts (a transient failure and its retry), one output produced and acknowledged"
            " (4 spans when on).",
            f"The worker's own CPU per event ({fmt(WORKER_CPU_US_PER_EVENT, 0)} µs) is bench_cpu's figure"
            " (0 ms API latency, in-flight 64): the scale the overhead is read against.",
            "An OTLP exporter adds its serialisation and HTTP on the batch thread (not measured here).",
        ],
    )


if __name__ == "__main__":
    standalone(run, "tracing")
