"""Soak: one worker at a steady load for 10 minutes; does its memory or any long-lived structure grow?

    python bench/bench_soak.py [--minutes 10] [--quick]        # opt-in, not part of `make bench`
    python bench/run_all.py --soak [--soak-minutes 10]

One worker (in-flight 32, 6 partitions, every other setting at its default) gets a steady 100 events/s
for ``--minutes`` (≥ 3; ``--quick``: 3) at 100 ms lognormal API latency, with 1 % of calls answered HTTP
503 (retried) and 1 % code -1101 (no face: dead-lettered), so the retry and dead-letter paths run too.
Every 2 s the worker's RSS (``/proc``) and its ``mdw_structure_entries{structure=…}`` series are sampled.

* *Baseline*: RSS at the 2-minute mark (median of the samples within ±15 s): by then the imports, the
  HTTP pool, the emulator-side caches and librdkafka's buffers have all been filled once.
* *Noise*: how far RSS moves on its own at steady state, i.e. its range (max − min) over minute 1–2,
  at least 2 MB (allocator arenas and librdkafka's queues breathe by about that much).
* *Growth*: median RSS over the last 30 s of the stream minus the baseline; within noise when ≤ noise.
  The least-squares slope from minute 2 to the end, per hour, says what a leak would cost a day.
* A structure is *flat* when its size at the end is ≤ its largest size over minute 1–2 + 10 % (or + 10
  entries, for small ones).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from drain import first_output, reading
from events import SteadyStream
from longrun import Point, Timeline, committed_offsets, count_between, lost_and_pending, sleep_until, wait_for_outputs
from metrics import wait_for_assignment
from report import Check, ScenarioReport, fmt, standalone
from stack import BenchStack, latency_faults
from workers import children, start_worker

from worker.dev.harness.outputs import tally
from worker.dev.harness.processes import stop_all

OFFERED = 100.0
PARTITIONS = 6
IN_FLIGHT = 32
LATENCY_MS = 100
BASELINE_S = 120.0
NOISE_FLOOR_MB = 2.0
SAMPLE_S = 2.0
NAME = "worker"


def run(quick: bool, minutes: float = 0.0) -> ScenarioReport:
    minutes = minutes or (3.0 if quick else 10.0)
    if minutes < 3:
        raise ValueError(f"--minutes must be ≥ 3 (the baseline is taken at 2 min), not {minutes:g}")
    seconds = minutes * 60
    faults = latency_faults("lognormal", LATENCY_MS, http_error_rates={"503": 0.01}, error_rates={"-1101": 0.01})
    with BenchStack() as stack:
        stack.set_faults(faults)
        topics = stack.topics(PARTITIONS)
        with (
            children() as procs,
            reading(stack, topics, max_seconds=seconds + 600) as reader,
            Timeline(stack, interval=SAMPLE_S, max_seconds=seconds + 600) as tl,
        ):
            worker = start_worker(stack, topics, NAME, max_in_flight=IN_FLIGHT)
            procs.append(worker)
            tl.add(worker)
            wait_for_assignment([worker], PARTITIONS, 60)
            with SteadyStream(
                stack.bootstrap, topics.input, PARTITIONS, stack.image_urls, OFFERED, seconds + 60
            ) as stream:
                first = first_output(reader, "soak", worker)
                sleep_until(first + seconds, worker.alive)
                stop = tl.sample().wall
                unacked = stream.stop()
            done, waited, _ = wait_for_outputs(reader.unique, len(stream.ids), 60, 20)
            alive = worker.alive()
            exit_code = stop_all([worker], 20)[worker.name]
            outputs = reader.snapshot()
        committed = committed_offsets(stack.bootstrap, topics.input, topics.group, PARTITIONS)
    lost, pending = lost_and_pending(stream.placed, {o.event_id for o in outputs if o.event_id}, committed)
    points = [p for p in tl.snapshot() if first <= p.wall <= stop]
    stamps = [o.ts for o in outputs]

    rss = [(p.wall - first, p.workers[NAME].rss_mb) for p in points if NAME in p.workers]
    rss = [(t, v) for t, v in rss if v == v]
    base = _median([v for t, v in rss if abs(t - BASELINE_S) <= 15])
    end = _median([v for t, v in rss if t >= seconds - 30])
    warm = [v for t, v in rss if 60 <= t <= BASELINE_S]
    noise = max(NOISE_FLOOR_MB, max(warm) - min(warm)) if warm else NOISE_FLOOR_MB
    growth = end - base
    slope_h = _slope([(t, v) for t, v in rss if t >= BASELINE_S]) * 3600

    names = tl.structure_names()
    rows: list[list[str]] = []
    for m in range(math.ceil(minutes)):
        t0, t1 = first + 60 * m, min(first + 60 * (m + 1), stop)
        in_minute = [v for t, v in rss if 60 * m <= t < 60 * (m + 1)]
        at_end = tl.structures_at(t1)
        rows.append(
            [
                f"{m + 1}",
                fmt(count_between(stamps, t0, t1) / max(1e-9, t1 - t0), 1),
                fmt(_median(in_minute), 1),
                f"{fmt(min(in_minute, default=math.nan), 1)}–{fmt(max(in_minute, default=math.nan), 1)}",
            ]
            + ([fmt(at_end.get(s, math.nan)) for s in names] or ["not exposed"])
        )

    grown = []
    for s in names:
        before = [_size(p, s) for p in points if 60 <= p.wall - first <= BASELINE_S]
        ref = max(before, default=0.0)
        last = tl.structures_at(stop).get(s, 0.0)
        if last > max(1.1 * ref, ref + 10):
            grown.append(f"{s} {fmt(ref)} → {fmt(last)}")
    t = tally(outputs, stream.ids)
    checks = [
        Check(
            "soak",
            f"RSS growth from minute 2 to minute {minutes:g} within noise",
            f"{fmt(base, 1)} → {fmt(end, 1)} MB: {fmt(growth, 1)} MB (noise {fmt(noise, 1)} MB); "
            f"slope {fmt(slope_h, 1)} MB/h",
            growth <= noise if growth == growth else None,
        ),
        Check(
            "soak",
            "every long-lived structure flat (end ≤ its minute 1–2 peak + 10 % or + 10 entries)",
            "not exposed" if not names else ("grown: " + "; ".join(grown) if grown else f"{len(names)} flat"),
            None if not names else not grown,
        ),
        Check(
            "soak",
            "none lost (no output although the group committed past it)",
            f"{len(lost)} lost of {t.expected}; {len(pending)} not output yet, not committed",
            not lost and not unacked,
        ),
    ]
    return ScenarioReport(
        name="soak",
        title=f"Soak: one worker at {OFFERED:.0f} events/s for {minutes:g} min (RSS and long-lived structures)",
        headers=["minute", "outputs/s", "RSS MB (median)", "RSS MB range"] + (names or ["structures"]),
        table=rows,
        checks=checks,
        notes=[
            f"{LATENCY_MS} ms lognormal API latency, 1 % HTTP 503 (retried), 1 % -1101 (dead-lettered); in-flight "
            f"{IN_FLIGHT}; {PARTITIONS} partitions; samples every {SAMPLE_S:g} s.",
            f"Baseline = median RSS within ±15 s of minute 2; end = median over the last 30 s; noise = RSS range over "
            f"minute 1–2, at least {NOISE_FLOOR_MB:g} MB.",
            f"Outputs: {t.outputs} for {t.expected} events ({t.duplicates} duplicates, dead letters "
            f"{sum(v for k, v in t.kinds.items() if k != 'result')}); drain {'complete' if done else 'cut'} after "
            f"{fmt(waited, 0)} s; worker {'running' if alive else 'had exited'} at the end, exit code {exit_code}.",
        ],
    )


def _size(p: Point, structure: str) -> float:
    w = p.workers.get(NAME)
    return w.structures.get(structure, 0.0) if w else 0.0


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope (units per second) of (t, v) points; NaN with fewer than 2."""
    if len(points) < 2:
        return math.nan
    mt = statistics.fmean(t for t, _ in points)
    mv = statistics.fmean(v for _, v in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den if den else math.nan


if __name__ == "__main__":
    standalone(run, "soak", [("--minutes", 0.0, "how long the stream runs, ≥ 3 (0: 10, or 3 with --quick)")])
