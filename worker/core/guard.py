"""Hold the worker when nearly every recent event goes to the dead-letter topic (no I/O).

A misconfiguration the error table cannot see (say, every URL unreachable from the service) would otherwise
move a whole topic into the DLQ. Like arroyo's ``DlqLimit``: over the last ``window`` finished events, once at
least ``min_events`` are known and the dead-lettered share reaches ``max_ratio``, the guard *trips*.

A tripped guard holds the worker rather than stopping it: a process that exits is restarted by its
supervisor and dead-letters another window of events before it trips again, every time. Instead:

    WATCHING  events flow; the window is judged.
    HOLDING   ``admits()`` is False for ``pause_s``: the worker takes and dispatches nothing new, readiness
              fails and a metric says why (someone looks). Outcomes of events still in flight are ignored.
    TRIAL     after the pause, events flow again and the next ``trial_events`` outcomes are judged alone:
              the same share dead-lettered → HOLDING again for twice as long (up to ``max_pause_s``);
              otherwise → WATCHING, and the pause is back to ``pause_s``.

The owner records an event when its output is produced, not when the broker acknowledges it
(worker.runtime.outputs): what is "in flight" when the guard trips is then only the calls in progress (at most
``max_in_flight``), whatever the broker's pace. So a cause that persists costs ``window`` plus what was in flight
before the first hold and ``trial_events`` plus what was in flight per pause after it, and a cause that was fixed
is noticed without an operator. Not thread-safe: one owner (the loop).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class DeadLetterGuard:
    def __init__(
        self,
        *,
        window: int = 500,
        max_ratio: float = 0.98,
        min_events: int | None = None,
        pause_s: float = 60.0,
        max_pause_s: float = 3600.0,
        trial_events: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        min_events = window if min_events is None else min_events
        if not 1 <= min_events <= window:
            raise ValueError("need 1 <= min_events <= window")
        if not 0 < max_ratio <= 1:
            raise ValueError("max_ratio must be in (0, 1]")
        if pause_s < 0 or max_pause_s < pause_s:
            raise ValueError("need 0 <= pause_s <= max_pause_s")
        self._recent: deque[bool] = deque(maxlen=window)
        self._dead = 0
        self._max_ratio = max_ratio
        self._min_events = min_events
        self._base_pause = pause_s
        self._max_pause = max_pause_s
        self._pause = pause_s
        self.trial_events = max(1, min(trial_events, window))
        self._clock = clock
        self._holding_until: float | None = None
        self._judge_at = min_events  # events needed before judging: min_events, or trial_events in a trial
        self._pause_taken = 0.0

    def record(self, dead_lettered: bool) -> bool:
        """One finished event: True when it was dead-lettered. Returns True when this record tripped the guard."""
        if self._holding_until is not None:
            return False  # in flight when the guard tripped: says nothing new
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._dead -= 1
        self._recent.append(dead_lettered)
        self._dead += dead_lettered
        return self._judge()

    def recount_as_dead_letter(self) -> bool:
        """An event recorded as a result went to the dead-letter topic after all (the broker refused the result
        for its size): count it once, as dead-lettered. Returns True when this tripped the guard."""
        if self._holding_until is not None:
            return False
        for i in range(len(self._recent) - 1, -1, -1):  # the newest result stands for it (only the count matters)
            if not self._recent[i]:
                self._recent[i] = True
                self._dead += 1
                return self._judge()
        return self.record(True)  # its result already slid out of the window (or a trial started since)

    def _judge(self) -> bool:
        if len(self._recent) < self._judge_at:
            return False
        if self._dead >= self._max_ratio * len(self._recent):
            self._trip()
            return True
        if self._judge_at < self._min_events:  # a trial passed
            self._judge_at = self._min_events
            self._pause = self._base_pause
        return False

    def admits(self) -> bool:
        """May the worker take new events? False while holding; the first call after the pause starts a trial."""
        if self._holding_until is None:
            return True
        if self._clock() < self._holding_until:
            return False
        self._holding_until = None
        self._judge_at = self.trial_events
        self._recent.clear()  # the trial is judged on its own outcomes
        self._dead = 0
        return True

    def paused_for(self) -> float:
        """Seconds the current hold lasts in total (0 when not holding)."""
        return self._pause_taken if self._holding_until is not None else 0.0

    @property
    def tripped(self) -> bool:
        """True while holding."""
        return self._holding_until is not None and self._clock() < self._holding_until

    @property
    def ratio(self) -> float:
        """Dead-lettered share of the recent events (0 when none)."""
        return self._dead / len(self._recent) if self._recent else 0.0

    def size(self) -> int:
        return len(self._recent)

    def reset(self) -> None:
        self._recent.clear()
        self._dead = 0
        self._holding_until = None
        self._judge_at = self._min_events
        self._pause = self._base_pause

    def _trip(self) -> None:
        self._pause_taken = self._pause
        self._holding_until = self._clock() + self._pause
        self._pause = min(self._max_pause, self._pause * 2)
