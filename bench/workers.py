"""The processes under test: the worker (``python -m worker run``, the product unchanged), the naive loop, any
other child, each pinned to ``WORKER_CPU`` and stopped by its own PID.

:func:`bench_env` builds the worker's settings against the bench stack (the stack's API, a loopback metrics port
of its own, session timeout 3 s, warnings only, every other setting at its default unless a scenario says so);
:func:`start_worker` starts one; :func:`children` stops every child started in its block (SIGTERM, then
SIGKILL) however the block ends.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence

from machine import ROOT, ProcMonitor, pin_to_worker_cpu
from stack import GROUP, BenchStack

from worker.dev.harness.env import SettingValue, worker_env
from worker.dev.harness.loopback import free_port
from worker.dev.harness.processes import ChildProcess, WorkerProcess
from worker.dev.harness.topics import Topics

SESSION_TIMEOUT_MS = 3000  # Tansu joins after ≈ half of it (docs/api-notes.md#broker-notes)
BENCH_SETTINGS: dict[str, SettingValue] = {
    "session_timeout_ms": SESSION_TIMEOUT_MS,
    "log_level": "WARNING",
    "log_format": "text",
    "drain_timeout_s": 10,
}


def bench_env(stack: BenchStack, topics: Topics, **settings: SettingValue) -> dict[str, str]:
    """Settings of ``python -m worker run`` against the bench stack and its API; ``settings`` by setting name."""
    own: dict[str, SettingValue] = {"metrics_host": "127.0.0.1", "metrics_port": free_port(), **stack.worker_settings()}
    return worker_env(
        stack.bootstrap, stack.api_url, topics, group_ids=GROUP, settings={**BENCH_SETTINGS, **own, **settings}
    )


def start_worker(stack: BenchStack, topics: Topics, name: str = "worker", **settings: SettingValue) -> WorkerProcess:
    """One worker process on ``topics``, pinned to the worker CPU, its log in a temporary file."""
    worker = WorkerProcess(bench_env(stack, topics, **settings), name=name, stop_timeout=30)
    # Popen returns once the child has exec'd, long before the interpreter starts any thread.
    pin_to_worker_cpu(worker.pid)
    return worker


def start_workers(
    procs: list[ChildProcess],
    stack: BenchStack,
    topics: Topics,
    count: int = 1,
    *,
    monitor: ProcMonitor | None = None,
    **settings: SettingValue,
) -> list[WorkerProcess]:
    """``count`` workers of one group (``worker`` alone, else ``worker0``, ``worker1``…), appended to ``procs``
    (a :func:`children` list: stopped when its block ends) and sampled by ``monitor``."""
    names = ["worker"] if count == 1 else [f"worker{i}" for i in range(count)]
    workers = [start_worker(stack, topics, name, **settings) for name in names]
    procs.extend(workers)
    if monitor is not None:
        for w in workers:
            monitor.add(w.name, w.pid)
    return workers


def start_child(name: str, argv: Sequence[str]) -> ChildProcess:
    """Any other process under test (the naive loop, the bare client), pinned like a worker."""
    child = ChildProcess(argv, name=name, stop_timeout=30)
    pin_to_worker_cpu(child.pid)
    return child


def naive_argv(stack: BenchStack, topics: Topics, max_events: int, max_seconds: float) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "bench" / "naive_worker.py"),
        "--bootstrap",
        stack.bootstrap,
        "--input",
        topics.input,
        "--output",
        topics.results,
        "--group",
        topics.group,
        "--api-url",
        stack.api_url,
        "--group-ids",
        GROUP,
        "--api",
        stack.api,
        "--session-timeout-ms",
        str(SESSION_TIMEOUT_MS),
        "--max-events",
        str(max_events),
        "--max-seconds",
        str(max_seconds),
    ]


def start_naive(stack: BenchStack, topics: Topics, max_events: int, max_seconds: float) -> ChildProcess:
    """The naive serial loop (``naive_worker.py``) on ``topics``."""
    return start_child("naive", naive_argv(stack, topics, max_events, max_seconds))


@contextlib.contextmanager
def children() -> Iterator[list[ChildProcess]]:
    """Every child appended to the list is stopped (SIGTERM, then SIGKILL) when the block ends."""
    procs: list[ChildProcess] = []
    try:
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.cleanup()
