"""The loop's wait for a completion, on the system clock: a signal during it must not make it unbounded.

SIGTERM usually reaches the worker while its loop waits for a completion (``Clock.wait`` on the pipeline's
completion queue). When handling the signal, or getting the GIL back on a busy machine, takes longer than the
wait had left, CPython 3.11's ``SimpleQueue.get(timeout)`` goes on waiting with no timeout at all: with every
call hanging, the loop never looked at its stop request and the watchdog ended the process (exit 6).
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

from tests.support.contract import build
from worker.core.clock import SYSTEM_CLOCK
from worker.runtime.identify import ProbeDone


def test_the_wait_for_a_completion_times_out_even_when_a_slow_signal_handler_interrupts_it() -> None:
    completions = build(partitions=1).pipeline._completions  # the queue the loop really waits on
    timeout_s = 2.0
    started = time.monotonic()
    handled = threading.Event()

    def slow_handler(signum: int, frame: FrameType | None) -> None:
        time.sleep(max(0.0, started + timeout_s - time.monotonic()) + 0.2)  # outlasts what the wait had left
        handled.set()

    def interrupt() -> None:
        time.sleep(0.1)  # the main thread is (almost surely) blocked in the wait by now
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    def rescue() -> None:  # a wait without its timeout ends only here: fail instead of hanging the suite
        time.sleep(20)
        completions.put(ProbeDone())

    assert threading.current_thread() is threading.main_thread()  # Python runs signal handlers there
    previous = signal.signal(signal.SIGUSR1, slow_handler)
    interrupter = threading.Thread(target=interrupt, daemon=True)
    try:
        interrupter.start()
        threading.Thread(target=rescue, daemon=True).start()
        got = SYSTEM_CLOCK.wait(completions, timeout_s)
        interrupter.join(30)  # our handler stays until the signal was sent (a late one must not kill the run)
        assert handled.wait(30)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert got is None, "the wait ignored its timeout after the signal (it returned only at the rescue, 20 s on)"
