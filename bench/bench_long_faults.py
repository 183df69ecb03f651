"""Long faults: a 40 s API outage with a rebalance inside it, then a quota squeeze, on a steady event stream.

    python bench/bench_long_faults.py [--quick] [--rebalance join|leave]

Events arrive at a steady 100/s (6 partitions, 100 ms API latency, in-flight 32, ``breaker_open_s`` 5,
everything else at the worker's defaults, ``rate_limit_qps`` 0 included). Phases, from the first output:

1. *steady* (20 s): one worker keeps up.
2. *outage* (40 s): the emulator answers HTTP 503 to every call. Half-way through, a second worker joins
   the group (``--rebalance join``, the default) or, with ``--rebalance leave``, the second of two workers
   gets SIGTERM (it drains within ``drain_timeout_s`` 10 s while the API is still down).
3. *recovery* (25 s): the API is healthy again.
4. *squeeze* (30 s): the emulator allows 40 calls/s (code 15 above it), below the 100 events/s offered.
5. *after lift* (30 s): the quota is gone.
6. *drain*: the stream stops; wait until every event has an output (bounded, and cut short after 20 s
   without progress).

Figures: per phase, the emulator's own counts of the calls it answered (what reached the API) and the
workers' ``mdw_api_calls_total`` (what they attempted), the limiter rate (``mdw_rate_limit_qps``, summed
over the live workers), and the time from each fault's end to full throughput (outputs ≥ 90 % of the
offered rate in 4 consecutive 0.5 s bins); the size of every long-lived structure the workers expose as
``mdw_structure_entries{structure=…}`` at the end of each phase; lost events, duplicates, dead letters.
``--quick`` shortens every phase (≈ 1.5 min in all).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drain import first_output, reading
from events import SteadyStream
from longrun import (
    Timeline,
    committed_offsets,
    count_between,
    lost_and_pending,
    recovery_s,
    sleep_until,
    wait_for_outputs,
)
from metrics import wait_for_assignment
from report import Check, ScenarioReport, Table, fmt, pct, standalone
from stack import BenchStack, latency_faults
from workers import children, start_worker

from worker.dev.harness.outputs import Output, tally
from worker.dev.harness.processes import WorkerProcess, stop_all

OFFERED = 100.0  # events/s
LATENCY_MS = 100
IN_FLIGHT = 32
PARTITIONS = 6
BREAKER_OPEN_S = 5.0
SQUEEZE_QPS = 40.0
RECOVERY_TARGET_S = BREAKER_OPEN_S + 2
THROTTLE_SLACK = 1.1  # calls/s at the API may exceed the limiters' rate by 10 % (burst, sampling)
BREAKER = {0: "closed", 1: "half-open", 2: "open"}


@dataclass(frozen=True)
class Plan:
    steady_s: float
    outage_s: float
    recover_s: float
    squeeze_s: float
    lift_s: float
    drain_s: float
    stall_s: float


FULL = Plan(steady_s=15, outage_s=40, recover_s=20, squeeze_s=30, lift_s=25, drain_s=60, stall_s=20)
QUICK = Plan(steady_s=5, outage_s=15, recover_s=8, squeeze_s=10, lift_s=8, drain_s=15, stall_s=10)


def run(quick: bool, rebalance: str = "join") -> ScenarioReport:
    if rebalance not in ("join", "leave"):
        raise ValueError(f"--rebalance must be join or leave, not {rebalance!r}")
    plan = QUICK if quick else FULL
    scheduled = plan.steady_s + plan.outage_s + plan.recover_s + plan.squeeze_s + plan.lift_s
    base = latency_faults("fixed", LATENCY_MS)
    marks: dict[str, float] = {}
    with BenchStack() as stack:
        stack.set_faults(base)
        topics = stack.topics(PARTITIONS)
        settings = {"max_in_flight": IN_FLIGHT, "breaker_open_s": BREAKER_OPEN_S}
        with (
            children() as procs,
            reading(stack, topics) as reader,
            Timeline(stack, interval=1.0, max_seconds=scheduled + plan.drain_s + 300) as tl,
        ):

            def mark(name: str) -> None:
                # A sample right at each boundary, so that per-phase counts are not smeared by the 1 s interval.
                tl.sample()
                marks[name] = time.time()

            def start(name: str) -> WorkerProcess:
                w = start_worker(stack, topics, name, **settings)
                procs.append(w)
                tl.add(w)
                return w

            workers = [start("worker-a")] + ([start("worker-b")] if rebalance == "leave" else [])
            wait_for_assignment(workers, PARTITIONS, 60)
            with SteadyStream(
                stack.bootstrap, topics.input, PARTITIONS, stack.image_urls, OFFERED, scheduled + 60
            ) as stream:
                first = first_output(reader, "long faults", workers[0])
                marks["start"] = tl.sample().wall  # ≈ the first output (read back within ~0.1 s)
                sleep_until(first + plan.steady_s)
                mark("outage")
                stack.set_faults({**base, "http_error_rates": {"503": 1.0}})
                sleep_until(marks["outage"] + plan.outage_s / 2)
                mark("rebalance")
                if rebalance == "join":
                    workers.append(start("worker-b"))
                else:
                    os.kill(workers[1].pid, signal.SIGTERM)  # it drains by itself; stopped by PID at the end
                sleep_until(marks["outage"] + plan.outage_s)
                stack.set_faults(base)
                mark("outage_end")
                sleep_until(marks["outage_end"] + plan.recover_s)
                mark("squeeze")
                stack.set_faults({**base, "qps_limit": SQUEEZE_QPS})
                sleep_until(marks["squeeze"] + plan.squeeze_s)
                stack.set_faults(base)
                mark("lift")
                sleep_until(marks["lift"] + plan.lift_s)
                mark("stop")
                unacked = stream.stop()
            done, waited, stalled = wait_for_outputs(reader.unique, len(stream.ids), plan.drain_s, plan.stall_s)
            mark("drained")
            exit_codes = stop_all(workers, 20)
            outputs = reader.snapshot()
        committed = committed_offsets(stack.bootstrap, topics.input, topics.group, PARTITIONS)
    lost, pending = lost_and_pending(stream.placed, {o.event_id for o in outputs if o.event_id}, committed)
    drain = Drain(done, waited, stalled, unacked, len(lost), len(pending))
    return _report(plan, rebalance, marks, stream, tl, outputs, exit_codes, drain)


@dataclass(frozen=True)
class Drain:
    done: bool  # every event had an output within the drain bound
    waited_s: float
    stalled_s: float  # seconds without a new output when the wait gave up
    unacked: int  # events the broker had not acknowledged when the stream stopped
    lost: int  # no output, below the group's committed offset: never read again
    pending: int  # no output, at or above the committed offset: the next owner would process them


def _report(
    plan: Plan,
    rebalance: str,
    marks: dict[str, float],
    stream: SteadyStream,
    tl: Timeline,
    outputs: Sequence[Output],
    exit_codes: Mapping[str, int | None],
    drain: Drain,
) -> ScenarioReport:
    stamps = [o.ts for o in outputs]
    phases = [
        ("steady", marks["start"], marks["outage"]),
        ("outage (HTTP 503 on every call)", marks["outage"], marks["outage_end"]),
        ("recovery", marks["outage_end"], marks["squeeze"]),
        (f"squeeze (quota {SQUEEZE_QPS:.0f} calls/s)", marks["squeeze"], marks["lift"]),
        ("after lift", marks["lift"], marks["stop"]),
        ("drain (stream stopped)", marks["stop"], marks["drained"]),
    ]
    horizon = {"outage_end": plan.recover_s, "lift": plan.lift_s}
    recovered = {k: recovery_s(stamps, marks[k], OFFERED, horizon[k]) for k in horizon}
    rows: list[list[str]] = []
    for i, (name, t0, t1) in enumerate(phases):
        span = max(1e-9, t1 - t0)
        codes, codes_span = tl.codes_between(t0, t1)
        calls = sum(codes.values())
        refused = {k: v for k, v in codes.items() if k != "0" and v}
        attempts = sum(sum(tl.worker_calls_between(n, t0, t1).values()) for n in _names(tl))
        limiter, unlimited = tl.limiter_between(t0, t1)
        after = {1: recovered["outage_end"], 3: recovered["lift"]}.get(i)
        rows.append(
            [
                name,
                fmt(span, 0),
                fmt(stream.produced_between(t0, t1) / span, 1),
                fmt(count_between(stamps, t0, t1) / span, 1),
                fmt(calls / codes_span, 1) if codes_span else "–",
                fmt(codes.get("0", 0) / codes_span, 1) if codes_span else "–",
                ", ".join(f"{k}: {fmt(v / codes_span, 1)}" for k, v in sorted(refused.items())) or "–",
                fmt(attempts / span, 1),
                _limiter_cell(limiter, unlimited),
                BREAKER.get(round(tl.max_breaker(t0, t1)), "?"),
                "–" if after is None else _after(after, plan.recover_s if i == 1 else plan.lift_s),
            ]
        )

    # Throttling: what reached the API vs the limiters, over the squeeze (after its first 5 s: the cut itself).
    s0, s1 = marks["squeeze"] + min(5.0, plan.squeeze_s / 3), marks["lift"]
    codes, span = tl.codes_between(s0, s1)
    api_rate = sum(codes.values()) / span if span else math.nan
    ok_rate = codes.get("0", 0) / span if span else math.nan
    limiter, unlimited = tl.limiter_between(s0, s1)
    throttled_ok = not unlimited and api_rate == api_rate and api_rate <= THROTTLE_SLACK * limiter
    share15 = codes.get("15", 0) / sum(codes.values()) if sum(codes.values()) else 0.0

    t = tally(outputs, stream.ids)
    dead = {k: v for k, v in t.kinds.items() if k != "result"}
    names = _names(tl)
    worker_rows = []
    for n in names:
        cells = [n]
        pts = [p.workers[n] for p in tl.snapshot() if n in p.workers]
        for _, t0, t1 in phases:
            ok = tl.worker_calls_between(n, t0, t1).get("ok", 0)
            at_end = tl.at(t1)
            wp = at_end.workers.get(n) if at_end else None
            held = (
                f"{fmt(wp.partitions)}p, limiter {_limiter_cell(wp.limiter, wp.limiter <= 0)}"
                if wp and wp.scraped
                else "down"
            )
            cells.append(f"{fmt(ok / max(1e-9, t1 - t0), 1)} ({held})")
        exited = tl.exited_at(n)
        exited = exited if exited is not None and exited < marks["drained"] else None  # not our final stop
        cells.append(fmt(max((p.rss_mb for p in pts if p.rss_mb == p.rss_mb), default=math.nan), 0))
        cells.append(
            f"{exit_codes.get(n)}" + (f" (left at +{fmt(exited - marks['start'], 0)} s)" if exited is not None else "")
        )
        worker_rows.append(cells)

    struct_names = tl.structure_names()
    struct_rows = [
        [s] + [fmt(tl.structures_at(t1).get(s, math.nan)) for _, _, t1 in phases] + [fmt(tl.structure_peaks()[s])]
        for s in struct_names
    ] or [["not exposed (no mdw_structure_entries series on /metrics)"] + ["–"] * (len(phases) + 1)]
    steady_sizes = tl.structures_per_worker_at(marks["outage"])
    end_sizes = tl.structures_per_worker_at(marks["drained"])
    grown = [
        s for s in struct_names if end_sizes.get(s, 0) > max(1.1 * steady_sizes.get(s, 0), steady_sizes.get(s, 0) + 10)
    ]

    # A backlog is served partition by partition (bench/README.md, Caveats): only a partition with no output at
    # all from the outage's end to the stream's end counts as stuck.
    stuck = [
        p
        for p in range(PARTITIONS)
        if not any(o.partition == p and marks["outage_end"] <= o.ts < marks["stop"] for o in outputs)
    ]
    checks = [
        Check(
            "long faults",
            f"full throughput ≤ breaker_open_s + 2 = {RECOVERY_TARGET_S:.0f} s after a 40 s outage "
            f"(with a rebalance: {rebalance})",
            _after(recovered["outage_end"], plan.recover_s),
            _le(recovered["outage_end"], RECOVERY_TARGET_S),
            f"partitions without any output from the outage's end to the stream's end: {stuck}" if stuck else "",
        ),
        Check(
            "long faults",
            f"full throughput ≤ {RECOVERY_TARGET_S:.0f} s after a quota squeeze is lifted",
            _after(recovered["lift"], plan.lift_s),
            _le(recovered["lift"], RECOVERY_TARGET_S),
            ""
            if recovered["lift"] == recovered["lift"]
            else f"the limiters summed {fmt(_limiter_at(tl, marks['stop']), 1)} calls/s at the stream's end "
            f"(offered {OFFERED:.0f}/s)",
        ),
        Check(
            "long faults",
            f"while throttled, calls/s reaching the API ≤ {THROTTLE_SLACK:.0%} of the workers' limiter rate",
            f"{fmt(api_rate, 1)} calls/s vs limiter "
            + ("unlimited" if unlimited else f"{fmt(limiter, 1)}/s")
            + f"; {fmt(ok_rate, 1)} ok/s of a {SQUEEZE_QPS:.0f}/s quota ({pct(ok_rate / SQUEEZE_QPS)})",
            throttled_ok,
            "" if throttled_ok else "calls beyond the limiter: retries or probes that do not take a token",
        ),
        Check(
            "long faults",
            "≤ 5 % of calls answered 15 while throttled",
            f"{pct(share15)} ({codes.get('15', 0):.0f} of {sum(codes.values()):.0f})",
            share15 <= 0.05,
        ),
        Check(
            "long faults",
            "none lost (no output although the group committed past it)",
            f"{drain.lost} lost of {t.expected}; {drain.pending} without an output yet, not committed",
            drain.lost == 0 and not drain.unacked,
            ""
            if drain.done
            else f"the drain wait ran out after {fmt(drain.waited_s, 0)} s; after the workers' own SIGTERM drain "
            f"{drain.pending} events had no output and were not committed (slow, not lost: the next owner reads them)",
        ),
        Check(
            "long faults",
            "no dead letter (an outage or a quota is not the event's fault)",
            ", ".join(f"{k}: {v}" for k, v in sorted(dead.items())) or "0",
            not dead,
        ),
        Check("long faults", "duplicates (reported)", f"{t.duplicates} of {t.outputs} outputs", None),
        Check(
            "long faults",
            "long-lived structures back to their steady size after the drain, per worker (≤ +10 % or +10 entries)",
            "not exposed" if not struct_names else (f"grown: {grown}" if grown else "all back"),
            None if not struct_names else not grown,
        ),
    ]
    notes = [
        f"Offered {OFFERED:.0f} events/s over {PARTITIONS} partitions; API latency {LATENCY_MS} ms; in-flight "
        f"{IN_FLIGHT} per worker; breaker_open_s {BREAKER_OPEN_S:g}; rate_limit_qps 0 (default: no cap until "
        "throttled).",
        f"Rebalance: {rebalance} at +{fmt(marks['rebalance'] - marks['outage'], 0)} s into the outage.",
        "'API calls/s' and 'answered ok/s' are the emulator's own counts; 'worker attempts/s' is the sum of the "
        "workers' mdw_api_calls_total; 'limiter' is the mean of mdw_rate_limit_qps summed over live workers.",
        "'full throughput again' = the first of 4 consecutive 0.5 s bins each with ≥ 90 % of the offered rate in "
        "outputs (Kafka timestamps), counted from the fault's end.",
        f"Throttling check window: the squeeze without its first {fmt(s0 - marks['squeeze'], 0)} s.",
        f"Drain: {'all output' if drain.done else 'gave up'} after {fmt(drain.waited_s, 0)} s"
        + ("" if drain.done else f" ({fmt(drain.stalled_s, 0)} s without a new output)")
        + f"; {t.outputs} outputs for {t.expected} events, {t.unique} with an output; "
        f"{drain.unacked} events unacknowledged by the broker at the stream's end, {stream.failed} failed. "
        "Lost = no output but below the offset the group committed (read from the broker after the workers "
        "stopped).",
        "/metrics scrapes that got no answer within 2 s while the worker ran (figures from its nearest good one): "
        + ", ".join(f"{n} {tl.failed_scrapes(n)}" for n in names)
        + ".",
    ]
    return ScenarioReport(
        name="long_faults",
        title=f"Long faults: 40 s API outage with a rebalance ({rebalance}), then a quota squeeze, at "
        f"{OFFERED:.0f} events/s" + (" (quick: shorter phases)" if plan is QUICK else ""),
        headers=[
            "phase",
            "s",
            "offered events/s",
            "outputs/s",
            "API calls/s (emulator)",
            "answered ok/s",
            "refused/s by code",
            "worker attempts/s (/metrics)",
            "limiter calls/s",
            "breaker (worst)",
            "full throughput again after",
        ],
        table=rows,
        extra=[
            Table(
                "Per worker: successful API calls/s (partitions held and limiter rate at the phase's end)",
                ["worker"] + [p[0] for p in phases] + ["peak RSS MB", "exit code"],
                worker_rows,
            ),
            Table(
                "Long-lived structures (mdw_structure_entries, summed over live workers, at each phase's end)",
                ["structure"] + [p[0] for p in phases] + ["peak in one worker"],
                struct_rows,
            ),
        ],
        checks=checks,
        notes=notes,
    )


def _names(tl: Timeline) -> list[str]:
    return sorted({n for p in tl.snapshot() for n in p.workers})


def _limiter_at(tl: Timeline, t: float) -> float:
    p = tl.at(t)
    return sum(w.limiter for w in p.workers.values() if w.scraped) if p else math.nan


def _limiter_cell(limiter: float, unlimited: bool) -> str:
    if unlimited:
        return "unlimited" if not limiter else f"{fmt(limiter, 1)} (one unlimited)"
    return fmt(limiter, 1)


def _after(value: float, horizon: float) -> str:
    return f"{fmt(value, 1)} s" if value == value else f"not within {horizon:.0f} s"


def _le(value: float, limit: float) -> bool:
    return value == value and value <= limit


if __name__ == "__main__":
    standalone(run, "long_faults", [("--rebalance", "join", "join: a 2nd worker joins mid-outage; leave: SIGTERM one")])
