"""Starting and stopping ``multidentify-worker run`` as a process: SIGTERM at any moment ends it in time.

* A SIGTERM at any point of start-up (right after spawn, while it loads its Kafka client, at its first
  log line) ends it with exit 0 — never -15. Right after spawn, Python is not even running our code:
  the launcher starts it with SIGTERM blocked (as the demo does) and the worker unblocks it once its
  handler is in place.
* A SIGTERM with hundreds of API calls hanging ends it within ``drain_timeout_s`` + 5 s with exit 0; and
  when the broker hangs too, so that the final flush cannot finish, the watchdog ends it within the
  same bound with exit 6.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.support.kafkatest import produce_all, wait_until
from tests.support.pipeline import settings_env
from worker.dev import devstack
from worker.dev.harness.processes import WorkerProcess
from worker.dev.harness.topics import Topics
from worker.emulator import EmulatorHandle, start_in_thread
from worker.runtime.exits import ExitCode
from worker.runtime.stopping import StopRequest, StopWatchdog

DRAIN_S = 2.0
BOUND_S = DRAIN_S + 5.0  # the README's promise: gone within drain_timeout_s + 5 s of SIGTERM


def _loaded(worker: WorkerProcess, fragment: str) -> bool:
    """Is a shared object whose path contains ``fragment`` mapped into the process (it is importing it)?"""
    try:
        return fragment in Path(f"/proc/{worker.pid}/maps").read_text()
    except OSError:
        return False


def _sigterm_and_wait(worker: WorkerProcess, bound_s: float) -> tuple[int | None, float]:
    """SIGTERM, then (exit code or None if still running after ``bound_s``, seconds taken)."""
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    try:
        code: int | None = worker.wait(bound_s)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn(env)``: ``python -m worker run`` with its log in a file; stopped by its own PID at the test's end."""
    started: list[WorkerProcess] = []

    def _spawn(env: dict[str, str], *, block_stop_signals: bool = False) -> WorkerProcess:
        worker = WorkerProcess(
            env, log_path=tmp_path / f"worker-{len(started)}.log", block_stop_signals=block_stop_signals
        )
        started.append(worker)
        return worker

    try:
        yield _spawn
    finally:
        for worker in started:
            worker.stop(10)


def _events(count: int) -> list[bytes]:
    return [orjson.dumps({"event_id": f"ev-{i:05d}", "image_url": f"http://127.0.0.1:9/{i}.jpg"}) for i in range(count)]


# --- SIGTERM during start-up -----------------------------------------------------------------------------------


@pytest.mark.broker
def test_sigterm_right_after_spawn_exits_0(
    kafka_bootstrap: str, emu: EmulatorHandle, make_topics: Callable[..., Topics], spawn: Callable[..., WorkerProcess]
) -> None:
    env = settings_env(kafka_bootstrap, emu.base_url, make_topics(4, results=4, dlq=2))
    for _ in range(3):  # the signal lands before the interpreter has run a line of ours, every time
        worker = spawn(env, block_stop_signals=True)
        code, _ = _sigterm_and_wait(worker, 30)
        assert code == 0, f"exit {code}:\n{worker.output()[-2000:]}"
        assert "stopped before the pipeline" in worker.output()


@pytest.mark.broker
def test_sigterm_while_it_loads_its_kafka_client_exits_0(
    kafka_bootstrap: str, emu: EmulatorHandle, make_topics: Callable[..., Topics], spawn: Callable[..., WorkerProcess]
) -> None:
    # A plain launcher (no blocked signals): the signal comes while the CLI is still importing.
    worker = spawn(settings_env(kafka_bootstrap, emu.base_url, make_topics(4, results=4, dlq=2)))
    wait_until(lambda: _loaded(worker, "confluent_kafka") or not worker.alive(), 30, 0.002, "librdkafka")
    code, _ = _sigterm_and_wait(worker, 30)
    assert code == 0, f"exit {code}:\n{worker.output()[-2000:]}"


@pytest.mark.broker
def test_sigterm_at_its_first_log_line_exits_0(
    kafka_bootstrap: str, emu: EmulatorHandle, make_topics: Callable[..., Topics], spawn: Callable[..., WorkerProcess]
) -> None:
    worker = spawn(settings_env(kafka_bootstrap, emu.base_url, make_topics(4, results=4, dlq=2)))
    wait_until(lambda: worker.output().strip() or not worker.alive(), 30, 0.002, "the first log line")
    code, _ = _sigterm_and_wait(worker, 30)
    assert code == 0, f"exit {code}:\n{worker.output()[-2000:]}"


# --- SIGTERM with calls hanging ----------------------------------------------------------------------------------


@pytest.mark.broker
def test_sigterm_with_hundreds_of_calls_hanging_ends_the_process_in_time(
    kafka_bootstrap: str, emu: EmulatorHandle, make_topics: Callable[..., Topics], spawn: Callable[..., WorkerProcess]
) -> None:
    in_flight = 512
    topics = make_topics(4, results=4, dlq=2)
    produce_all(kafka_bootstrap, topics.input, _events(in_flight + 50))
    emu.admin({"latency_ms": 120_000})  # every call hangs far beyond the drain
    try:
        env = settings_env(
            kafka_bootstrap,
            emu.base_url,
            topics,
            max_in_flight=in_flight,
            read_timeout_s=250,  # below max_poll_interval_ms with the revoke wait (else exit 2 at start)
            drain_timeout_s=DRAIN_S,
        )
        worker = spawn(env)
        wait_until(lambda: emu.stats()["in_flight"] >= in_flight, 60, 0.05, f"{in_flight} calls in flight")
        code, took = _sigterm_and_wait(worker, BOUND_S)
    finally:
        emu.reset()
    print(
        f"\nSIGTERM with {in_flight} calls hanging: exit {code} after {took:.2f}s (drain {DRAIN_S}s, bound {BOUND_S}s)"
    )
    assert code == 0, f"exit {code} after {took:.1f}s:\n{worker.output()[-2000:]}"
    assert took < BOUND_S
    assert "pipeline stopped: stopped" in worker.output()


@pytest.mark.broker
def test_sigterm_when_the_broker_hangs_too_ends_the_process_in_time(
    spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """The drain's outputs cannot be delivered (the broker is frozen): the stop still ends in time."""
    in_flight = 512
    broker = devstack.start_broker()  # our own: it gets frozen
    # Latencies spread over 0–120 s: a few calls finish every second (as an image without a face: a dead
    # letter each), so outputs keep waiting for the frozen broker.
    faults = {"latency": {"kind": "uniform", "min_ms": 0, "max_ms": 120_000}, "error_rates": {"-1101": 1.0}, "seed": 7}
    emulator = start_in_thread(faults=faults)
    try:
        topics = Topics("in", "results", "dlq").create(broker.bootstrap, 4)
        produce_all(broker.bootstrap, topics.input, _events(in_flight + 100))
        env = settings_env(
            broker.bootstrap,
            emulator.base_url,
            topics,
            max_in_flight=in_flight,
            read_timeout_s=250,  # below max_poll_interval_ms with the revoke wait (else exit 2 at start)
            drain_timeout_s=DRAIN_S,
        )
        worker = spawn(env)
        wait_until(lambda: emulator.stats()["in_flight"] >= in_flight - 20, 60, 0.05, "calls in flight")
        broker.process.signal(signal.SIGSTOP)  # type: ignore[union-attr]
        code, took = _sigterm_and_wait(worker, BOUND_S)
    finally:
        broker.process.signal(signal.SIGCONT)  # type: ignore[union-attr]
        emulator.stop()
        broker.stop()
    # Either the pipeline's bounded flushes end the stop by themselves (exit 0: nothing undelivered is
    # committed) or the watchdog cuts it short (exit 6); never longer than the bound.
    assert code in (0, ExitCode.STOP_CUT_SHORT), f"exit {code} after {took:.1f}s:\n{worker.output()[-3000:]}"
    assert took < BOUND_S
    if code == ExitCode.STOP_CUT_SHORT:
        assert "the stop did not finish" in worker.output()


# --- the pieces, in this process -------------------------------------------------------------------------------


def test_only_the_first_stop_request_acts() -> None:
    stop = StopRequest()
    calls: list[str] = []
    stop.on_request(lambda: calls.append("before"))
    assert not stop.requested and stop.reason == ""
    stop.request(signal.SIGTERM)
    stop.request(signal.SIGINT)
    assert calls == ["before"] and stop.reason == "SIGTERM"
    stop.on_request(lambda: calls.append("after"))  # registered late: called at once
    assert calls == ["before", "after"]


def test_the_watchdog_ends_the_process_after_its_budget() -> None:
    stop = StopRequest()
    exits: list[tuple[int, float]] = []
    watchdog = StopWatchdog(stop, 0.3, exit=lambda code: exits.append((code, time.monotonic())))
    watchdog.start()
    asked = time.monotonic()
    stop.request(signal.SIGTERM)
    wait_until(lambda: exits, 10, 0.01, "the watchdog")
    code, at = exits[0]
    assert code == ExitCode.STOP_CUT_SHORT and at - asked >= 0.3


def test_a_disarmed_watchdog_stays_quiet() -> None:
    stop = StopRequest()
    exits: list[int] = []
    watchdog = StopWatchdog(stop, 0.3, exit=exits.append).start()
    stop.request(signal.SIGTERM)
    watchdog.disarm()
    assert watchdog.join(10), "the watchdog thread did not end"
    assert exits == []
