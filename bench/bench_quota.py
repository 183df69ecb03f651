"""Quota scenario: the emulator allows 50 calls/s and refuses the calls above it; does AIMD use the quota?

    python bench/bench_quota.py [--quick] [--api v1|iai]

One worker (in-flight 64, ``MDW_RATE_LIMIT_QPS=100``: the AIMD limiter only lowers a configured rate, so
it starts above the quota) drains a preloaded topic against the emulator with ``qps_limit 50`` (token
bucket, burst 50) and 200 ms latency on the calls it admits. After a 10 s warm-up (from the first
output), the emulator's own counters over the measured window give successful calls/s and the share of
calls refused.

``api``: ``v1`` (multidentify, the worker's default; a refusal is code 15) or ``iai`` (SearchFaces; a refusal is
``RequestLimitExceeded``, the same token bucket). IAI searches the gallery enrolled through v1: the emulator
runs with ``iai_shared_gallery`` (stack.py).
"""

from __future__ import annotations

import time

from drain import first_output, reading
from machine import ProcMonitor
from metrics import scrape
from report import Check, ScenarioReport, fmt, pct, standalone
from stack import BenchStack, delta, latency_faults
from workers import children, start_workers

from worker.config import ApiName

QUOTA = 50.0
CLIENT_RATE = 100.0
IN_FLIGHT = 64
PARTITIONS = 4
WARMUP_S = 10.0


def run(quick: bool, api: ApiName = "v1") -> ScenarioReport:
    window = 8.0 if quick else 20.0
    events = int(QUOTA * (WARMUP_S + window) * 2)  # more than can be done: the worker never runs dry
    scenario = f"quota ({api})"
    rows: list[list[str]] = []
    checks: list[Check] = []
    with BenchStack(api=api) as stack:
        refused = stack.rate_limited  # v1: "15", IAI: "RequestLimitExceeded"
        stack.set_faults(latency_faults("fixed", 200, qps_limit=QUOTA))
        topics = stack.topics(PARTITIONS)
        stack.preload(topics, PARTITIONS, events)
        assert stack.emulator is not None
        stack.emulator.reset(stats=True, faults=False, caches=False)
        with children() as procs, reading(stack, topics) as reader, ProcMonitor(stack.pids()) as mon:
            (worker,) = start_workers(
                procs, stack, topics, monitor=mon, max_in_flight=IN_FLIGHT, rate_limit_qps=CLIENT_RATE
            )
            first = first_output(reader, scenario, worker)
            start_codes = stack.emulator_codes()  # calls before the first output: the first ~200 ms
            time.sleep(max(0.0, first + WARMUP_S - time.time()))
            a_t, a = time.time(), stack.emulator_codes()
            time.sleep(window)
            b_t, b = time.time(), stack.emulator_codes()
            metrics = scrape(worker, 5.0)
            # Unanswered (a busy machine): "–", not a limiter at 0 (which would read "no cap yet").
            limiter_rate = metrics.value("mdw_rate_limit_qps") if metrics.ok else float("nan")
            alive = worker.alive()
            worker.stop(30)
            outputs = reader.snapshot()
        warm = delta(start_codes, a)
        measured = delta(a, b)
        span = b_t - a_t
        ok_rate = measured.get("0", 0) / span
        total = sum(measured.values())
        share_refused = measured.get(refused, 0) / total if total else 0.0
        warm_total = sum(warm.values())
        in_window = [o for o in outputs if a_t <= o.ts <= b_t]
        results = sum(1 for o in in_window if o.kind == "result")
        dead = sum(1 for o in in_window if o.kind != "result")
        cpu = mon.cpu_between(worker.pid, a_t, b_t)
        rows.append(
            [
                f"warm-up (first {WARMUP_S:.0f} s)",
                fmt(warm.get("0", 0) / WARMUP_S, 1),
                pct(warm.get("0", 0) / WARMUP_S / QUOTA),
                fmt(warm_total, 0),
                pct(warm.get(refused, 0) / warm_total if warm_total else 0.0),
                "–",
                "–",
                "–",
            ]
        )
        rows.append(
            [
                f"measured ({span:.0f} s after warm-up)",
                fmt(ok_rate, 1),
                pct(ok_rate / QUOTA),
                fmt(total, 0),
                pct(share_refused),
                f"{fmt(results / span, 1)} results/s, {dead} dead letters",
                fmt(limiter_rate, 1),
                fmt(100 * cpu / span, 0) + " %",
            ]
        )
        checks.append(
            Check(
                scenario,
                "≥ 95 % of a 50 QPS quota used (successful calls/s after 10 s warm-up)",
                f"{fmt(ok_rate, 1)}/s = {pct(ok_rate / QUOTA)}",
                ok_rate >= 0.95 * QUOTA,
                ""
                if ok_rate >= 0.95 * QUOTA
                else f"{pct(share_refused)} of calls were refused ({refused}) and retried later; worker CPU "
                f"{fmt(100 * cpu / span, 0)} %",
            )
        )
        checks.append(
            Check(
                scenario,
                f"≤ 5 % of calls answered {refused} after warm-up",
                f"{pct(share_refused)} ({measured.get(refused, 0):.0f} of {total:.0f})",
                share_refused <= 0.05,
                ""
                if share_refused <= 0.05
                else f"the limiter stood at {fmt(limiter_rate, 1)}/s at the end (quota {QUOTA:.0f}/s): it keeps "
                "probing above the quota and is cut at most once per cooldown (worker.core.ratelimit)",
            )
        )
        notes = [
            "Counts come from the emulator (/__admin/stats): every call it answered, by code.",
            f"The worker's limiter started at {CLIENT_RATE:.0f}/s; 'limiter' is its rate (mdw_rate_limit_qps) at "
            f"the end of the window. {refused} is retried by the worker (jittered backoff, 5 attempts).",
        ]
        if not alive:
            notes.append("the worker had exited before the end of the window: " + worker.tail(500))
    return ScenarioReport(
        name="quota" if api == "v1" else f"quota-{api}",
        title=f"Rate quota, api {api}: emulator limit 50 calls/s ({refused} above it), worker limiter from 100/s",
        headers=[
            "period",
            "successful calls/s",
            "% of quota",
            "calls answered",
            "share refused",
            "worker outputs",
            "limiter calls/s",
            "worker CPU",
        ],
        table=rows,
        checks=checks,
        notes=notes,
    )


if __name__ == "__main__":
    standalone(run, "quota", [("--api", "v1", "the face API: v1 or iai")])
