"""Circuit breaker over recent API calls: is the service in an outage? (no I/O).

    CLOSED     calls flow; the last ``window`` results are kept. When at least ``min_calls`` are known and
               the failure share reaches ``failure_ratio`` → OPEN.
    OPEN       no calls for ``open_s`` (partitions pause; exhausted events are held, not dead-lettered),
               then → HALF_OPEN.
    HALF_OPEN  one probe call at a time (``allow()`` is True once); a success → CLOSED with a fresh window,
               a failure → OPEN again. A probe whose result never arrives is replaced after ``open_s``.

Only transient failures count as failures: the caller passes ``success=True`` for any answer that shows the
service is up (including permanent errors such as -1101). Not thread-safe: one owner (the loop).
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        window: int = 50,
        failure_ratio: float = 0.5,
        min_calls: int = 20,
        open_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= min_calls <= window:
            raise ValueError("need 1 <= min_calls <= window")
        if not 0 < failure_ratio <= 1:
            raise ValueError("failure_ratio must be in (0, 1]")
        self._window: deque[bool] = deque(maxlen=window)
        self._failures = 0
        self._ratio = failure_ratio
        self._min_calls = min_calls
        self._open_s = open_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_at: float | None = None  # when the half-open probe was admitted
        # Many HTTP threads record and ask at once; the state machine itself stays pure.
        self._lock = threading.RLock()

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current()

    def _current(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._open_s:
            self._state = BreakerState.HALF_OPEN
            self._probe_at = None
        return self._state

    @property
    def is_open(self) -> bool:
        """True unless CLOSED: recovery is not confirmed until a probe succeeds."""
        return self.state is not BreakerState.CLOSED

    def allow(self) -> bool:
        """May a call start now? CLOSED: yes. OPEN: no. HALF_OPEN: yes for one probe at a time."""
        with self._lock:
            return self._allow()

    def _allow(self) -> bool:
        state = self._current()
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        if self._probe_at is None or now - self._probe_at >= self._open_s:
            self._probe_at = now
            return True
        return False

    def record(self, success: bool) -> None:
        """The result of a call (``success=False`` only for transient failures)."""
        with self._lock:
            self._record(success)

    def _record(self, success: bool) -> None:
        state = self._current()
        if state is BreakerState.HALF_OPEN:
            if success:
                self._reset()
            else:
                self._open()
            return
        if state is BreakerState.OPEN:
            return  # answers to calls sent before opening say nothing new
        if len(self._window) == self._window.maxlen and not self._window[0]:
            self._failures -= 1
        self._window.append(success)
        if not success:
            self._failures += 1
            if len(self._window) >= self._min_calls and self._failures >= self._ratio * len(self._window):
                self._open()

    def size(self) -> int:
        """Entries held (bounded by ``window``)."""
        return len(self._window)

    @property
    def failure_ratio(self) -> float:
        return self._ratio

    def failure_share(self) -> float:
        """Failures among the recent calls in the window (0 when empty)."""
        return self._failures / len(self._window) if self._window else 0.0

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probe_at = None

    def _reset(self) -> None:
        self._state = BreakerState.CLOSED
        self._window.clear()
        self._failures = 0
        self._probe_at = None
