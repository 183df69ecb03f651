"""Scale-out scenario: 1, 2 and 4 worker processes on 8 partitions at 200 ms latency; events/s per process.

    python bench/bench_scaleout.py [--quick]

The workers (in-flight 64 each, all pinned to the worker CPU) join one consumer group on an empty topic;
once every member holds partitions and the assignment has been stable for 1 s (read from each worker's
/metrics), the events are produced at once and the window runs from the first output to the last. So the
join and the rebalances are outside the window.
"""

from __future__ import annotations

from drain import events_for, reading
from machine import ProcMonitor
from metrics import wait_for_assignment
from report import ScenarioReport, fmt, pct, standalone
from stack import BenchStack, latency_faults, mean_latency_s
from workers import children, start_workers

from worker.dev.harness.outputs import tally

PARTITIONS = 8
IN_FLIGHT = 64
PROCESSES = (1, 2, 4)


def run(quick: bool) -> ScenarioReport:
    seconds = 3.0 if quick else 10.0
    rows: list[list[str]] = []
    notes: list[str] = []
    per_process_1 = 0.0
    with BenchStack() as stack:
        faults = latency_faults("fixed", 200)
        stack.set_faults(faults)
        for count in PROCESSES:
            bound = count * IN_FLIGHT / mean_latency_s(faults)
            events = events_for(bound, seconds)
            topics = stack.topics(PARTITIONS)
            with children() as procs, ProcMonitor(stack.pids()) as mon:
                workers = start_workers(procs, stack, topics, count, monitor=mon, max_in_flight=IN_FLIGHT)
                assignment = wait_for_assignment(workers, PARTITIONS, 60)
                with reading(stack, topics) as reader:
                    ids = stack.preload(topics, PARTITIONS, events)
                    done = reader.wait_for_unique(events, events / (0.1 * bound) + 60)
                    mon.sample()
                    outputs = reader.snapshot()
                for w in workers:
                    w.stop(30)
            t = tally(outputs, ids)
            cpus = [100 * mon.cpu_between(w.pid, t.first_ts, t.last_ts) / t.window_s for w in workers]
            per_process = t.rate / count
            per_process_1 = per_process_1 or per_process
            rows.append(
                [
                    str(count),
                    " / ".join(str(len(assignment[i])) for i in range(count)),
                    fmt(t.outputs),
                    fmt(t.window_s, 1),
                    fmt(t.rate, 1),
                    fmt(per_process, 1),
                    pct(t.rate / bound),
                    pct(per_process / per_process_1),
                    " / ".join(fmt(c, 0) for c in cpus) + " %",
                    f"{t.duplicates} / {t.lost}",
                ]
            )
            if count > 1:
                notes.append(
                    f"{count} processes: together {fmt(sum(cpus), 0)} % of the one worker core"
                    + (" (CPU-bound: the core is full)" if sum(cpus) >= 85 else "")
                )
            if not done:
                notes.append(f"{count} processes: {t.lost} events without output before the timeout")
    notes.append(
        "All worker processes share the worker CPU (one core), as on the 2-core target machine; "
        "'per-process efficiency' is events/s per process relative to the single process."
    )
    return ScenarioReport(
        name="scaleout",
        title="Scale-out: 1, 2, 4 worker processes, 8 partitions, 200 ms latency, in-flight 64 each",
        headers=[
            "processes",
            "partitions each",
            "events",
            "window s",
            "events/s total",
            "events/s per process",
            "% of Little bound (procs × 64 / 0.2 s)",
            "per-process efficiency",
            "CPU per process",
            "dup / lost",
        ],
        table=rows,
        checks=[],
        notes=notes,
    )


if __name__ == "__main__":
    standalone(run, "scaleout")
