"""Failover scenario: SIGKILL one of three workers; how long until its partitions progress again, how many duplicates.

    python bench/bench_failover.py [--quick]

Three workers (in-flight 64 each, session timeout 3 s, cooperative-sticky, default 1 s commit interval)
share 6 partitions at 200 ms latency. Once the group is stable the events are produced; a few seconds
after the first output, the victim's partitions and its uncommitted window are read from its /metrics,
then it gets SIGKILL. Every output record names its input partition and offset, and its Kafka timestamp
is the moment a worker produced it, so:

* *resumed* = first output of a victim partition produced after the kill (by a survivor);
* *new progress* = first output of a victim partition beyond the highest offset output before the kill;
* *duplicates* = outputs beyond the first per event; *lost* = events with no output once all are done.
"""

from __future__ import annotations

import time

from drain import first_output, reading
from machine import ProcMonitor
from metrics import assigned_partitions, scrape, wait_for_assignment
from report import Check, ScenarioReport, fmt, standalone
from stack import BenchStack, latency_faults
from workers import SESSION_TIMEOUT_MS, children, start_workers

from worker.config import BY_NAME
from worker.dev.harness.outputs import tally

PARTITIONS = 6
WORKERS = 3
IN_FLIGHT = 64
COMMIT_INTERVAL_S = float(BY_NAME["commit_interval_s"].default)  # the worker's default, not set here


def run(quick: bool) -> ScenarioReport:
    before_kill = 3.0 if quick else 5.0
    events = 6_000 if quick else 12_000
    with BenchStack() as stack:
        stack.set_faults(latency_faults("fixed", 200))
        topics = stack.topics(PARTITIONS)
        with children() as procs, ProcMonitor(stack.pids()) as mon:
            workers = start_workers(procs, stack, topics, WORKERS, monitor=mon, max_in_flight=IN_FLIGHT)
            wait_for_assignment(workers, PARTITIONS, 60)
            with reading(stack, topics) as reader:
                ids = stack.preload(topics, PARTITIONS, events)
                first = first_output(reader, "failover", workers[0])
                time.sleep(max(0.0, first + before_kill - time.time()))
                victim = workers[0]
                victim_parts = assigned_partitions(victim)
                in_flight = scrape(victim, 2.0).value("mdw_in_flight")
                kill_at = time.time()
                victim.kill()
                survivors = workers[1:]
                # When the survivors hold the victim's partitions (their /metrics), apart from when they output.
                assigned_s = float("nan")
                while time.time() - kill_at < 60:
                    held = set().union(*(assigned_partitions(w) for w in survivors))
                    if victim_parts <= held:
                        assigned_s = time.time() - kill_at
                        break
                    time.sleep(0.1)
                done = reader.wait_for_unique(events, 180, lambda: all(w.alive() for w in survivors))
                outputs = reader.snapshot()
            for w in survivors:
                w.stop(30)
    t = tally(outputs, ids)
    rows: list[list[str]] = []
    resumed: list[float] = []
    progressed: list[float] = []
    for p in sorted(victim_parts):
        mine = [o for o in outputs if o.partition == p]
        before = [o.offset for o in mine if o.ts <= kill_at]
        high = max(before, default=-1)
        after = sorted((o for o in mine if o.ts > kill_at), key=lambda o: o.ts)
        first_after = after[0].ts - kill_at if after else float("nan")
        beyond = [o.ts - kill_at for o in after if o.offset > high]
        first_beyond = min(beyond) if beyond else float("nan")
        redone = sum(1 for o in after if o.offset <= high)
        resumed.append(first_after)
        progressed.append(first_beyond)
        rows.append([str(p), fmt(high), fmt(first_after, 1), fmt(first_beyond, 1), str(redone)])
    starved = [p for p in sorted(victim_parts) if not any(o.partition == p and o.ts <= kill_at for o in outputs)]
    resume_s = max(resumed, default=float("nan"))
    progress_s = max(progressed, default=float("nan"))
    limit = SESSION_TIMEOUT_MS / 1000 + 5
    # The victim's output rate just before the kill: what it could deliver between two commits.
    recent = [o for o in outputs if o.partition in victim_parts and kill_at - 2.0 < o.ts <= kill_at]
    victim_rate = len(recent) / 2.0
    window = IN_FLIGHT + victim_rate * COMMIT_INTERVAL_S
    checks = [
        Check(
            "failover",
            f"progress resumes within session timeout + 5 s = {limit:.0f} s (all victim partitions)",
            f"resumed after {fmt(resume_s, 1)} s; new offsets after {fmt(progress_s, 1)} s",
            resume_s == resume_s and resume_s <= limit,
            f"the survivors held the victim's partitions {fmt(assigned_s, 1)} s after the kill (group rebalance); "
            f"the rest, {fmt(resume_s - assigned_s, 1)} s, is fetch + 200 ms API call + produce",
        ),
        Check(
            "failover",
            f"duplicates ≤ the killed worker's in-flight window (max_in_flight {IN_FLIGHT})",
            f"{t.duplicates} duplicates; the victim had {fmt(in_flight)} in flight at the kill and delivered "
            f"{fmt(victim_rate, 0)} outputs/s before it",
            t.duplicates <= IN_FLIGHT,
            "outputs delivered but not yet committed are redone too: commits are every "
            f"{COMMIT_INTERVAL_S:g} s (commit_interval_s default), so the window the worker bounds is in-flight + "
            f"1 commit interval of output ≈ {fmt(window, 0)} here",
        ),
        Check("failover", "none lost", f"{t.lost} lost of {t.expected}", t.lost == 0 and done),
    ]
    summary = [
        "all",
        f"victim had {len(victim_parts)} partitions; survivors held them after {fmt(assigned_s, 1)} s",
        fmt(resume_s, 1),
        fmt(progress_s, 1),
        f"{t.duplicates} duplicates, {t.lost} lost, {t.outputs} outputs for {t.expected} events",
    ]
    rows.append(summary)
    return ScenarioReport(
        name="failover",
        title="Failover: SIGKILL one of 3 workers (6 partitions, 200 ms, in-flight 64, session timeout 3 s)",
        headers=[
            "victim partition",
            "highest offset output before kill",
            "resumed after s",
            "new offsets after s",
            "outputs redone (duplicates)",
        ],
        table=rows,
        checks=checks,
        notes=[
            f"The kill comes {before_kill:.0f} s after the first output, once the three members share the partitions.",
            "Seconds are measured from the SIGKILL to the Kafka timestamp of the survivors' outputs.",
        ]
        + (
            [
                f"Victim partition(s) {starved} had no output at all in the {before_kill:.0f} s before the kill "
                "although events were waiting on them: the victim served its partitions one after another, "
                "not side by side."
            ]
            if starved
            else []
        ),
    )


if __name__ == "__main__":
    standalone(run, "failover")
