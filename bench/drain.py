"""One measured run: a process under test drains a preloaded topic, measured from its first output to its last.

Throughput is counted from the output records themselves: their Kafka timestamps are set by the writer's
producer when it writes the output, so the window runs from the first output to the last and the group
join (≈ session.timeout.ms / 2 on Tansu) is never inside it. Correctness is checked on every run: each
input event has an id, each output names it; the tally counts duplicates and events with no output.
:func:`reading` reads a scenario's outputs in a background thread of the orchestrator (fields only: a
benchmark reads up to 100,000s of them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from machine import ProcMonitor
from stack import ApiSampler, BenchStack
from workers import children, start_naive, start_worker

from worker.dev.harness.outputs import OutputReader, Tally, tally
from worker.dev.harness.processes import ChildProcess
from worker.dev.harness.topics import Topics


@contextlib.contextmanager
def reading(stack: BenchStack, topics: Topics, max_seconds: float = 1800.0) -> Iterator[OutputReader]:
    """The outputs of ``topics``, read in a thread for the block (at most ``max_seconds``)."""
    with (
        OutputReader(stack.bootstrap, topics, keep_messages=False, fetch_wait_ms=50) as reader,
        reader.in_background(max_seconds),
    ):
        yield reader


def first_output(reader: OutputReader, scenario: str, worker: ChildProcess, timeout: float = 60.0) -> float:
    """The Kafka timestamp of the first output; RuntimeError with ``worker``'s last log lines after ``timeout``."""
    first = reader.first_ts(timeout)
    if first is None:
        raise RuntimeError(f"{scenario}: no output within {timeout:.0f} s: {worker.tail()}")
    return first


@dataclass
class Run:
    """One process under test draining a preloaded topic, measured from its first output to its last."""

    label: str
    tally: Tally
    cpu_s: float  # CPU seconds of the process within the window
    peak_rss_mb: float
    exit_code: int | None
    completed: bool  # every expected event had an output before the timeout
    other_cpu_pct: float  # machine busy time minus our processes, in % of one core (noise indicator)
    api_in_flight: float = float("nan")  # mean calls in flight at the emulator within the window
    last_partition_start_s: float = float("nan")  # latest first output of any input partition, from window start

    @property
    def rate(self) -> float:
        return self.tally.rate

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.tally.window_s if self.tally.window_s else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_s / self.tally.outputs if self.tally.outputs else float("nan")


def measure_drain(
    stack: BenchStack,
    label: str,
    n_events: int,
    partitions: int,
    timeout: float,
    *,
    naive: bool = False,
    **settings: Any,
) -> Run:
    """Preload ``n_events`` on fresh topics, start one worker (or the naive loop), wait until every event has
    an output (at most ``timeout`` s after start), stop it, and measure the window first → last output."""
    topics = stack.topics(partitions)
    ids = stack.preload(topics, partitions, n_events)
    with (
        children() as procs,
        reading(stack, topics) as reader,
        ProcMonitor(stack.pids()) as mon,
        ApiSampler(stack) as api,
    ):
        proc = start_naive(stack, topics, n_events, timeout) if naive else start_worker(stack, topics, **settings)
        procs.append(proc)
        mon.add(proc.name, proc.pid)
        completed = reader.wait_for_unique(n_events, timeout, proc.alive)
        if not completed and not proc.alive():
            raise RuntimeError(f"{label}: {proc.name} exited early: {proc.tail()}")
        mon.sample()
        exit_code = proc.stop(30)
        outputs = reader.snapshot()
    t = tally(outputs, ids)
    cpu = mon.cpu_between(proc.pid, t.first_ts, t.last_ts)
    ours = sum(mon.cpu_between(pid, t.first_ts, t.last_ts) for pid in {*stack.pids().values(), proc.pid})
    machine = mon.cpu_between(None, t.first_ts, t.last_ts)
    other = 100 * (machine - ours) / t.window_s if t.window_s else 0.0
    starts: dict[int, float] = {}
    for o in outputs:
        starts[o.partition] = min(starts.get(o.partition, o.ts), o.ts)
    last_start = max(starts.values(), default=t.first_ts) - t.first_ts
    return Run(
        label,
        t,
        cpu,
        mon.peak_rss_mb(proc.pid),
        exit_code,
        completed,
        other,
        api.mean_between(t.first_ts, t.last_ts),
        last_start,
    )


def events_for(rate: float, seconds: float, minimum: int = 20) -> int:
    return max(minimum, int(rate * seconds))
