"""Time as one seam: the poll loop, the HTTP threads, the breaker and the limiter read it from here.

Production uses :data:`SYSTEM_CLOCK` (``time.monotonic``, ``time.sleep``, a blocking queue read). The
contract tests pass a virtual clock instead, so that a 40-second outage or a 24-hour soak of the rate
limiter runs in milliseconds and the same way every time (tests/support/simclock.py).

``wait`` is how the loop waits for a completion: with a virtual clock, waiting is what lets time pass. Its queue
is a ``queue.Queue``, not a ``SimpleQueue``: on CPython 3.11, when a signal interrupts
``SimpleQueue.get(timeout)`` and handling it (or getting the GIL back on a busy machine) outlasts the time the
wait had left, the get waits for an item with no timeout at all. SIGTERM arrives exactly then: the loop would
not see its stop request until a completion came (tests/runtime/test_loop_wait.py). ``Queue.get`` recomputes
its deadline after a signal.
"""

from __future__ import annotations

import queue
import time
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""

    def wait(self, items: queue.Queue[T], timeout: float) -> T | None:
        """The next item of ``items``, waiting up to ``timeout`` seconds for one; None when none came."""


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, items: queue.Queue[T], timeout: float) -> T | None:
        try:
            return items.get(timeout=timeout) if timeout > 0 else items.get_nowait()
        except queue.Empty:
            return None


SYSTEM_CLOCK: Clock = SystemClock()
