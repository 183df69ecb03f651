"""Virtual time for contract tests: time moves only when every thread of the pipeline waits.

The pipeline's loop thread (the *driver*) and its HTTP threads all read :class:`VirtualClock`. A thread
that sleeps blocks until virtual time reaches its wake-up; the driver, when it waits (``wait``/``idle``),
first lets every running thread reach a sleep or finish (``settle``), then jumps time to the next wake-up.
So a 40-second outage runs in milliseconds, and the order of events is the same on a busy machine as on an
idle one: nothing depends on how fast real threads happen to run.

``outstanding`` (set by the harness) counts tasks handed to threads and not finished; the system is
settled when each of them is blocked in ``sleep``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_SETTLE_REAL_S = 20.0  # a thread that neither sleeps nor finishes for this long is a bug (or a deadlock)


class NeverSettled(AssertionError):
    pass


class VirtualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._sleepers: list[float] = []  # wake-up times of threads blocked in sleep()
        self.outstanding: Callable[[], int] = lambda: 0
        self.driver: threading.Thread = threading.current_thread()

    # -- the Clock protocol ------------------------------------------------------------------

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if threading.current_thread() is self.driver:
            self.idle(seconds)
            return
        if seconds <= 0:
            return
        with self._cond:
            wake = self._now + seconds
            self._sleepers.append(wake)
            while self._now < wake:
                self._cond.wait()

    def wait(self, items: queue.Queue[T], timeout: float) -> T | None:
        deadline = self._now + max(0.0, timeout)
        while True:
            self.settle()
            try:
                return items.get_nowait()
            except queue.Empty:
                pass
            if self._now >= deadline:
                return None
            self._advance(min([deadline, *self._sleepers]))

    # -- driving ------------------------------------------------------------------------------

    def idle(self, seconds: float) -> None:
        """The driver waits ``seconds`` with nothing to receive: other threads run meanwhile."""
        self.wait(queue.Queue(), seconds)

    def settle(self) -> None:
        """Return once every outstanding task is blocked in sleep (or none is outstanding)."""
        end = time.monotonic() + _SETTLE_REAL_S
        while True:
            with self._cond:
                asleep = len(self._sleepers)
            if self.outstanding() <= asleep:
                return
            if time.monotonic() > end:
                raise NeverSettled(f"{self.outstanding()} tasks outstanding, {asleep} asleep after {_SETTLE_REAL_S}s")
            time.sleep(0.0002)

    def _advance(self, to: float) -> None:
        with self._cond:
            if to <= self._now:
                return
            self._now = to
            # Woken sleepers count as running from now on, before they get the lock back.
            self._sleepers = [w for w in self._sleepers if w > to]
            self._cond.notify_all()
