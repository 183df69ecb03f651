"""CPU-bound scenario: latency 0 ms. One worker process vs a bare requests client (the ceiling) vs the naive loop.

    python bench/bench_cpu.py [--quick]

The bare client is the least a requests-based caller can do per call: N threads sharing one keep-alive
``requests.Session`` (pool of N), a precomputed signature and body, ``orjson`` to read the answer's code.
It runs pinned to the worker's CPU, against the same emulator, with the same images and group, at the
worker's in-flight (64) and at 8 threads (requests' best point on one core, docs/design.md). Its
figure is calls/s; the worker's is events/s end to end (consume, call, produce, commit), so the ratio
is what the worker's Kafka side, pool and bookkeeping cost on top of requests itself.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time

import orjson
from drain import measure_drain
from report import Check, ScenarioReport, fmt, pct, standalone
from stack import BenchStack, latency_faults
from workers import start_child

PARTITIONS = 4
IN_FLIGHT = 64
BARE_THREADS = (IN_FLIGHT, 8)


# -- the bare client (a subprocess, pinned like the worker) -----------------------------------------------


def bare_client(api_url: str, urls: list[str], threads: int, warmup: float, seconds: float) -> dict[str, float]:
    import requests
    from requests.adapters import HTTPAdapter

    from worker.api.signature import sign
    from worker.emulator import DEV_ACCOUNT

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=threads, pool_maxsize=threads)
    session.mount("http://", adapter)
    endpoint = api_url.rstrip("/") + "/face/multidentify"
    auth = sign(DEV_ACCOUNT.appid, DEV_ACCOUNT.secret_id, DEV_ACCOUNT.secret_key, now=int(time.time()), lifetime=3600)
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    bodies = [orjson.dumps({"appid": DEV_ACCOUNT.appid, "group_id": "bench", "url": u}) for u in urls]
    counts = [0] * threads
    errors = [0] * threads
    measuring = threading.Event()
    stop = threading.Event()

    def loop(k: int) -> None:
        i = k
        while not stop.is_set():
            i += 1
            try:
                r = session.post(endpoint, data=bodies[i % len(bodies)], headers=headers, timeout=(3, 10), verify=True)
                ok = orjson.loads(r.content).get("code") == 0
            except (requests.RequestException, orjson.JSONDecodeError):
                ok = False
            if measuring.is_set():
                if ok:
                    counts[k] += 1
                else:
                    errors[k] += 1

    pool = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    time.sleep(warmup)
    u0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    measuring.set()
    time.sleep(seconds)
    measuring.clear()
    t1 = time.perf_counter()
    u1 = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    for t in pool:
        t.join(15)
    cpu = (u1.ru_utime + u1.ru_stime) - (u0.ru_utime + u0.ru_stime)
    return {"calls": sum(counts), "errors": sum(errors), "wall": t1 - t0, "cpu": cpu}


def _run_bare(stack: BenchStack, threads: int, seconds: float) -> dict[str, float]:
    argv = [
        sys.executable,
        __file__,
        "--bare",
        stack.api_url,
        "--threads",
        str(threads),
        "--seconds",
        str(seconds),
        "--urls",
        ",".join(stack.image_urls),
    ]
    child = start_child(f"bare{threads}", argv)
    try:
        child.wait(seconds + 60)
        child.stop(5)
        lines = [ln for ln in child.tail(4000).splitlines() if ln.startswith("{")]
        if child.returncode != 0 or not lines:
            raise RuntimeError(f"bare client failed: {child.tail()}")
        return dict(orjson.loads(lines[-1]))
    finally:
        child.cleanup()


# -- the scenario ---------------------------------------------------------------------------------------


def run(quick: bool) -> ScenarioReport:
    seconds = 3.0 if quick else 6.0
    worker_events = 2_000 if quick else 8_000
    naive_events = 1_500 if quick else 5_000
    rows: list[list[str]] = []
    checks: list[Check] = []
    with BenchStack() as stack:
        stack.set_faults(latency_faults("none", 0))
        bare: dict[int, dict[str, float]] = {}
        for threads in BARE_THREADS:
            bare[threads] = b = _run_bare(stack, threads, seconds)
            rate = b["calls"] / b["wall"]
            rows.append(
                [
                    f"bare requests client, {threads} threads",
                    fmt(b["calls"]),
                    fmt(b["wall"], 1),
                    fmt(rate, 0),
                    pct(1.0)
                    if threads == IN_FLIGHT
                    else pct(rate / (bare[IN_FLIGHT]["calls"] / bare[IN_FLIGHT]["wall"])),
                    fmt(100 * b["cpu"] / b["wall"], 0) + " %",
                    fmt(1000 * b["cpu"] / max(1, b["calls"]), 2),
                    "–",
                    f"{int(b['errors'])} errors",
                ]
            )
        ceiling = bare[IN_FLIGHT]["calls"] / bare[IN_FLIGHT]["wall"]
        best = max(b["calls"] / b["wall"] for b in bare.values())
        worker = measure_drain(stack, "worker-0ms", worker_events, PARTITIONS, 120, max_in_flight=IN_FLIGHT)
        naive = measure_drain(stack, "naive-0ms", naive_events, PARTITIONS, 120, naive=True)
        for label, r in ((f"worker, in-flight {IN_FLIGHT}", worker), ("naive serial worker", naive)):
            rows.append(
                [
                    label,
                    fmt(r.tally.outputs),
                    fmt(r.tally.window_s, 1),
                    fmt(r.rate, 0),
                    pct(r.rate / ceiling),
                    fmt(r.cpu_pct, 0) + " %",
                    fmt(r.cpu_per_1000, 2),
                    fmt(r.peak_rss_mb, 0),
                    f"dup {r.tally.duplicates} / lost {r.tally.lost}",
                ]
            )
        share = worker.rate / ceiling
        checks.append(
            Check(
                "cpu (0 ms)",
                f"≥ 60 % of the bare requests client's calls/s ({IN_FLIGHT} threads)",
                f"{fmt(worker.rate, 0)} vs {fmt(ceiling, 0)}/s = {pct(share)} (vs best bare {fmt(best, 0)}/s: "
                f"{pct(worker.rate / best)})",
                share >= 0.6,
                ""
                if share >= 0.6
                else f"worker CPU {fmt(worker.cpu_pct, 0)} % of a core: not CPU-bound; {IN_FLIGHT} in flight at "
                f"{fmt(worker.rate, 0)}/s means each slot was held {fmt(1000 * IN_FLIGHT / worker.rate, 0)} ms per "
                "event for a 0 ms API",
            )
        )
        checks.append(
            Check(
                "cpu (0 ms)",
                "CPU-seconds per 1,000 events (reported, no target)",
                f"worker {fmt(worker.cpu_per_1000, 2)} s, naive {fmt(naive.cpu_per_1000, 2)} s, bare client "
                f"{fmt(1000 * bare[IN_FLIGHT]['cpu'] / max(1, bare[IN_FLIGHT]['calls']), 2)} s per 1,000 calls",
                None,
            )
        )
    return ScenarioReport(
        name="cpu",
        title="Latency 0 ms: one worker process vs the bare requests client (CPU ceiling) and the naive loop",
        headers=[
            "client",
            "calls / events",
            "window s",
            "per second",
            "% of bare (64 threads)",
            "CPU (one core = 100 %)",
            "CPU s / 1k",
            "peak RSS MB",
            "checks",
        ],
        table=rows,
        checks=checks,
        notes=[
            f"Bare client: {seconds:.0f} s measured after a 1 s warm-up; worker and naive loop: first output to last.",
            "The worker's CPU includes librdkafka's threads (consume and produce); the bare client does no Kafka.",
        ],
    )


def _bare_main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bare", required=True, help="emulator base URL")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--urls", required=True)
    args = parser.parse_args()
    result = bare_client(args.bare, args.urls.split(","), args.threads, 1.0, min(args.seconds, 60.0))
    print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    if "--bare" in sys.argv:
        sys.exit(_bare_main())
    standalone(run, "cpu")
