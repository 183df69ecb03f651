"""Fleet quota: four workers of one group share one API quota of 50 calls/s; is it used, and fairly?

    python bench/bench_fleet_quota.py [--quick]

Four worker processes (one group, 8 partitions, in-flight 64 each, 20 ms API latency, every other
setting at its default, ``rate_limit_qps`` 0 included: no cap until throttled) drain a backlog far larger
than the quota allows, against one emulator with ``qps_limit 50`` (code 15 above it). Each limiter sees
only its own calls, so the fleet's share of the quota must emerge from four independent AIMD loops.
The group is formed on an empty topic first, then the backlog is written. After a 15 s warm-up (from the
first output) a 60 s window (``--quick``: 10 s and 20 s) is measured: total successful calls/s and the
share of calls answered 15 from the emulator's own counters, each worker's successes from its own
/metrics (``mdw_api_calls_total{outcome="ok"}``, one metrics port per worker).
"""

from __future__ import annotations

import time

from drain import first_output, reading
from machine import ProcMonitor
from metrics import api_calls, scrape, wait_for_assignment
from report import Check, ScenarioReport, fmt, pct, standalone
from stack import BenchStack, delta, latency_faults
from workers import children, start_workers

from worker.dev.harness.processes import stop_all

QUOTA = 50.0
WORKERS = 4
PARTITIONS = 8
IN_FLIGHT = 64
LATENCY_MS = 20
MIN_SHARE = 0.15  # of the fleet's successes, per worker (a fair share is 25 %)


def run(quick: bool) -> ScenarioReport:
    warmup, window = (10.0, 20.0) if quick else (15.0, 60.0)
    events = int(QUOTA * (warmup + window + 30) * 2)  # never runs dry: the quota caps the fleet at 50/s
    with BenchStack() as stack:
        stack.set_faults(latency_faults("fixed", LATENCY_MS, qps_limit=QUOTA))
        topics = stack.topics(PARTITIONS)
        with (
            children() as procs,
            reading(stack, topics) as reader,
            ProcMonitor(stack.pids(), interval=0.5) as mon,
        ):
            workers = start_workers(procs, stack, topics, WORKERS, monitor=mon, max_in_flight=IN_FLIGHT)
            held = wait_for_assignment(workers, PARTITIONS, 60)
            stack.preload(topics, PARTITIONS, events)
            first = first_output(reader, "fleet quota", workers[0])
            time.sleep(max(0.0, first + warmup - time.time()))
            a_t, a_codes = time.time(), stack.emulator_codes()
            a_workers = [api_calls(scrape(w, 2.0)) for w in workers]
            time.sleep(window)
            b_t, b_codes = time.time(), stack.emulator_codes()
            b_scrapes = [scrape(w, 2.0) for w in workers]
            alive = [w.alive() for w in workers]
            exit_codes = list(stop_all(workers, 20).values())
    span = b_t - a_t
    codes = delta(a_codes, b_codes)
    total = sum(codes.values())
    ok_rate = codes.get("0", 0) / span
    share15 = codes.get("15", 0) / total if total else 0.0
    per = [delta(a, api_calls(b)) for a, b in zip(a_workers, b_scrapes, strict=True)]
    oks = [d.get("ok", 0.0) for d in per]
    fleet_ok = sum(oks) or 1.0
    rows: list[list[str]] = []
    for i, w in enumerate(workers):
        calls = sum(per[i].values())
        rows.append(
            [
                w.name,
                ",".join(str(p) for p in sorted(held[i])),
                fmt(oks[i] / span, 1),
                pct(oks[i] / fleet_ok),
                fmt(calls / span, 1),
                pct(per[i].get("15", 0) / calls if calls else 0.0),
                fmt(b_scrapes[i].value("mdw_rate_limit_qps"), 1),
                fmt(100 * mon.cpu_between(w.pid, a_t, b_t) / span, 0) + " %",
                "running" if alive[i] else f"exited ({exit_codes[i]})",
            ]
        )
    rows.append(
        [
            "fleet (emulator's counts)",
            f"{PARTITIONS} partitions",
            fmt(ok_rate, 1),
            pct(ok_rate / QUOTA) + " of the quota",
            fmt(total / span, 1),
            pct(share15),
            fmt(sum(s.value("mdw_rate_limit_qps") for s in b_scrapes), 1),
            "–",
            "–",
        ]
    )
    shares = [o / fleet_ok for o in oks]
    checks = [
        Check(
            "fleet quota",
            f"≥ 95 % of a {QUOTA:.0f} QPS quota used by {WORKERS} workers together",
            f"{fmt(ok_rate, 1)}/s = {pct(ok_rate / QUOTA)}",
            ok_rate >= 0.95 * QUOTA,
        ),
        Check(
            "fleet quota",
            "≤ 5 % of calls answered 15",
            f"{pct(share15)} ({codes.get('15', 0):.0f} of {total:.0f}; {fmt(total / span, 1)} calls/s)",
            share15 <= 0.05,
            ""
            if share15 <= 0.05
            else "each worker's limiter reacts only to its own 15s; together they probe above the quota",
        ),
        Check(
            "fleet quota",
            f"each worker ≥ {MIN_SHARE:.0%} of the fleet's successful calls",
            " / ".join(pct(s) for s in shares),
            min(shares) >= MIN_SHARE and all(alive),
            ""
            if min(shares) >= MIN_SHARE
            else "a cut keeps 95 % of what that worker itself got accepted, and every limiter climbs back by the "
            "same additive step: a worker cut low early stays low (worker.core.ratelimit)",
        ),
    ]
    return ScenarioReport(
        name="fleet_quota",
        title=f"Fleet quota: {WORKERS} workers share one {QUOTA:.0f} calls/s quota (in-flight {IN_FLIGHT} each, "
        f"{LATENCY_MS} ms)",
        headers=[
            "worker",
            "partitions",
            "successful calls/s",
            "share of successes",
            "calls/s",
            "share answered 15",
            "limiter calls/s at the end",
            "CPU",
            "state",
        ],
        table=rows,
        checks=checks,
        notes=[
            f"Warm-up {warmup:.0f} s from the first output, then {span:.0f} s measured.",
            "The fleet row counts what the emulator answered (/__admin/stats); worker rows come from each "
            "worker's own /metrics (mdw_api_calls_total by outcome).",
            f"Offered load: a backlog of {events:,} events; {WORKERS} × {IN_FLIGHT} in flight at {LATENCY_MS} ms "
            f"could call {WORKERS * IN_FLIGHT * 1000 / LATENCY_MS:,.0f} times/s without a limiter.",
        ],
    )


if __name__ == "__main__":
    standalone(run, "fleet_quota")
