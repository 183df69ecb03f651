"""Backlog scenario: 200,000 events queued, in-flight 256; the worker's peak RSS must stay bounded.

    python bench/bench_backlog.py [--quick]

The topic (8 partitions) is filled before the worker starts. The worker then runs for a bounded window
against 200 ms lognormal latency (median 200 ms, σ 0.3: slow calls hold back commits, so done-but-not-
committable events pile up too) and is stopped with SIGTERM. Memory is the kernel's own peak (VmHWM)
of the worker process, sampled every 0.1 s; the drain after SIGTERM is timed as well.
"""

from __future__ import annotations

import time

from drain import first_output, reading
from machine import ProcMonitor
from report import Check, ScenarioReport, fmt, standalone
from stack import BenchStack, latency_faults
from workers import children, start_workers

from worker.dev.harness.outputs import tally

EVENTS = 200_000
IN_FLIGHT = 256
PARTITIONS = 8
LIMIT_MB = 250.0


def run(quick: bool) -> ScenarioReport:
    window = 12.0 if quick else 60.0
    with BenchStack() as stack:
        stack.set_faults(latency_faults("lognormal", 200))
        topics = stack.topics(PARTITIONS)
        t0 = time.monotonic()
        ids = stack.preload(topics, PARTITIONS, EVENTS)
        preload_s = time.monotonic() - t0
        with children() as procs, reading(stack, topics) as reader, ProcMonitor(stack.pids()) as mon:
            (worker,) = start_workers(procs, stack, topics, monitor=mon, max_in_flight=IN_FLIGHT)
            first = first_output(reader, "backlog", worker)
            rss_first = mon.rss_mb_at(worker.pid, first)
            time.sleep(max(0.0, first + window - time.time()))
            mon.sample()
            quarters = [mon.rss_mb_at(worker.pid, first + window * q / 4) for q in (1, 2, 3, 4)]
            peak_running = mon.peak_rss_mb(worker.pid)
            rss_end = mon.rss_mb_at(worker.pid, time.time())
            stop_at = time.monotonic()
            code = worker.stop(60)
            drain_s = time.monotonic() - stop_at
            peak = max(peak_running, mon.peak_rss_mb(worker.pid))
            time.sleep(1.0)  # outputs delivered during the drain reach the reader
            outputs = reader.snapshot()
        t = tally(outputs, ids)
        rows = [
            [
                fmt(EVENTS),
                fmt(preload_s, 1),
                str(IN_FLIGHT),
                fmt(window, 0),
                fmt(t.unique),
                fmt(t.rate, 0),
                fmt(rss_first, 0),
                " → ".join(fmt(v, 0) for v in quarters),
                fmt(rss_end, 0),
                fmt(peak, 0),
                f"{drain_s:.1f} s (exit {code})",
                str(t.duplicates),
            ]
        ]
        checks = [
            Check(
                "backlog",
                f"peak RSS ≤ {LIMIT_MB:.0f} MB with {EVENTS:,} events queued, in-flight {IN_FLIGHT}",
                f"{fmt(peak, 0)} MB (VmHWM)",
                peak <= LIMIT_MB,
            )
        ]
    return ScenarioReport(
        name="backlog",
        title=f"Backlog: {EVENTS:,} events queued, in-flight {IN_FLIGHT}, 200 ms lognormal latency",
        headers=[
            "queued events",
            "preload s",
            "in-flight",
            "window s",
            "events done",
            "events/s",
            "RSS at first output MB",
            "RSS at ¼ ½ ¾ 1 of the window MB",
            "RSS at end MB",
            "peak RSS (VmHWM) MB",
            "SIGTERM → exit",
            "duplicates",
        ],
        table=rows,
        checks=checks,
        notes=[
            "The backlog stays in the broker: the worker's consumer prefetch is capped "
            "(queued.max.messages.kbytes) and it holds at most in-flight events plus done-but-not-committable "
            "ones (paused beyond max(4 × in-flight, 1000)).",
            "The worker is stopped after the window; events not done then stay uncommitted in the topic.",
        ],
    )


if __name__ == "__main__":
    standalone(run, "backlog")
