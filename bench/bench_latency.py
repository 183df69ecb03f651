"""Latency-bound scenario: events/s of one worker at 200 ms API latency vs Little's law and vs the naive loop.

    python bench/bench_latency.py [--quick] [--api v1|iai]

For latency 200 ms fixed and lognormal (median 200 ms, σ 0.3), and in-flight 16 / 64 / 256: one worker
process drains a preloaded topic (4 partitions); events/s is measured from its first output to its last
and compared with the Little's-law bound in_flight / mean latency. The naive serial loop runs against
the same emulator at the same fixed latency, speaking the same API.

``api``: ``v1`` (multidentify, the worker's default) or ``iai`` (SearchFaces; the emulator's IAI searches the
gallery enrolled through v1, ``iai_shared_gallery``: see stack.py). The IAI variant runs the fixed latency
only (:data:`KINDS`), to keep ``make bench`` short: the lognormal rows measure the same pipeline with a
spread of latencies, which v1's rows already show; the targets are the same.
"""

from __future__ import annotations

from drain import Run, events_for, measure_drain
from report import Check, ScenarioReport, fmt, pct, standalone
from stack import BenchStack, latency_faults, mean_latency_s

from worker.config import ApiName

PARTITIONS = 4
IN_FLIGHT = (16, 64, 256)
LATENCY_MS = 200.0
#: The latency kinds run per API (IAI: fixed only, module docstring).
KINDS: dict[ApiName, tuple[str, ...]] = {"v1": ("fixed", "lognormal"), "iai": ("fixed",)}


def _row(kind: str, n: int | str, run: Run, bound: float, naive_rate: float) -> list[str]:
    t = run.tally
    return [
        kind,
        str(n),
        fmt(t.outputs),
        fmt(t.window_s, 1),
        fmt(run.rate, 1),
        fmt(run.api_in_flight, 1),
        fmt(run.last_partition_start_s, 1),
        fmt(bound, 1),
        pct(run.rate / bound) if bound else "–",
        fmt(run.rate / naive_rate, 1) + "×" if naive_rate else "–",
        fmt(run.cpu_pct, 0) + " %",
        fmt(run.cpu_per_1000, 2),
        fmt(run.peak_rss_mb, 0),
        f"{t.duplicates} / {t.lost}",
        fmt(run.other_cpu_pct, 0) + " %",
    ]


def _why(r: Run, n: int, mean_s: float) -> str:
    """A measured reason: how full the worker kept the API and how long each slot was held per event."""
    slot_ms = 1000 * n / r.rate if r.rate else float("nan")
    cpu = "near one core: CPU-bound" if r.cpu_pct >= 80 else "not CPU-bound"
    return (
        f"the API had {fmt(r.api_in_flight, 1)} of {n} calls in flight on average; each slot was held "
        f"{fmt(slot_ms, 0)} ms per event for {fmt(1000 * mean_s, 0)} ms of API latency; worker CPU "
        f"{fmt(r.cpu_pct, 0)} % ({cpu})"
    )


def run(quick: bool, api: ApiName = "v1") -> ScenarioReport:
    seconds = 3.0 if quick else 10.0
    naive_events = 12 if quick else 40
    scenario = f"latency ({api})"
    rows: list[list[str]] = []
    checks: list[Check] = []
    notes: list[str] = []
    with BenchStack(api=api) as stack:
        fixed = latency_faults("fixed", LATENCY_MS)
        stack.set_faults(fixed)
        bound_naive = 1 / mean_latency_s(fixed)
        naive = measure_drain(stack, "naive", naive_events, PARTITIONS, naive_events / bound_naive * 4 + 60, naive=True)
        rows.append(_row("fixed 200 ms", "1 (naive)", naive, bound_naive, naive.rate))
        for kind in KINDS[api]:
            faults = latency_faults(kind, LATENCY_MS)
            stack.set_faults(faults)
            mean = mean_latency_s(faults)
            label = "fixed 200 ms" if kind == "fixed" else f"lognormal (median 200, σ 0.3, mean {mean * 1000:.0f} ms)"
            for n in IN_FLIGHT:
                bound = n / mean
                events = events_for(bound, seconds)
                # Generous timeout: a worker at 10 % of the bound still finishes; a stuck one is reported.
                r = measure_drain(
                    stack, f"{kind}-{n}", events, PARTITIONS, events / (0.1 * bound) + 60, max_in_flight=n
                )
                rows.append(_row(label, n, r, bound, naive.rate))
                share = r.rate / bound
                checks.append(
                    Check(
                        scenario,
                        f"≥ 90 % of Little's bound, {kind} 200 ms, in-flight {n}",
                        f"{fmt(r.rate, 1)}/s = {pct(share)} of {fmt(bound, 0)}/s",
                        share >= 0.9,
                        "" if share >= 0.9 else _why(r, n, mean),
                    )
                )
                if kind == "fixed" and n == 64:
                    ratio = r.rate / naive.rate if naive.rate else 0.0
                    checks.append(
                        Check(
                            scenario,
                            "≥ 50× the naive serial worker (200 ms, in-flight 64)",
                            f"{fmt(ratio, 1)}× ({fmt(r.rate, 1)} vs {fmt(naive.rate, 2)} events/s)",
                            ratio >= 50,
                            "" if ratio >= 50 else "the worker reaches only " + pct(share) + " of its bound (above)",
                        )
                    )
                if not r.completed or r.tally.lost:
                    notes.append(f"{kind} in-flight {n}: {r.tally.lost} events had no output before the timeout")
    notes.append(
        "Little's bound = in_flight / mean injected latency; the real latency also includes loopback HTTP, the "
        "emulator's own work and the output's produce acknowledgement (the worker frees a slot only then)."
    )
    if api != "v1":
        notes.append(f"api {api}: the fixed latency only (the lognormal rows are v1's; bench/README.md).")
    return ScenarioReport(
        name="latency" if api == "v1" else f"latency-{api}",
        title=f"Latency 200 ms, api {api}: events/s vs Little's law and vs the naive serial worker",
        headers=[
            "API latency",
            "in-flight",
            "events",
            "window s",
            "events/s",
            "API in flight (mean)",
            "last partition's first output s",
            "Little bound/s",
            "% of bound",
            "× naive",
            "worker CPU",
            "CPU s / 1k events",
            "peak RSS MB",
            "dup / lost",
            "other load",
        ],
        table=rows,
        checks=checks,
        notes=notes,
    )


if __name__ == "__main__":
    standalone(run, "latency", [("--api", "v1", "the face API: v1 or iai")])
