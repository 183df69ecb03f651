"""Stop the worker when nearly every recent event goes to the dead-letter topic (DESIGN.md §4; no I/O).

A misconfiguration the error table cannot see (say, every URL unreachable from the service) would otherwise
move a whole topic into the DLQ. Like arroyo's ``DlqLimit``: over the last ``window`` finished events, once at
least ``min_events`` are known and the dead-lettered share reaches ``max_ratio``, the guard trips and stays
tripped (the worker exits; an operator looks). Not thread-safe: one owner (the loop).
"""

from __future__ import annotations

from collections import deque


class DeadLetterGuard:
    def __init__(self, *, window: int = 500, max_ratio: float = 0.98, min_events: int = 500) -> None:
        if not 1 <= min_events <= window:
            raise ValueError("need 1 <= min_events <= window")
        if not 0 < max_ratio <= 1:
            raise ValueError("max_ratio must be in (0, 1]")
        self._recent: deque[bool] = deque(maxlen=window)
        self._dead = 0
        self._max_ratio = max_ratio
        self._min_events = min_events
        self._tripped = False

    def record(self, dead_lettered: bool) -> None:
        """One finished event: True when it was dead-lettered, False when it produced a result."""
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._dead -= 1
        self._recent.append(dead_lettered)
        self._dead += dead_lettered
        if len(self._recent) >= self._min_events and self._dead >= self._max_ratio * len(self._recent):
            self._tripped = True

    @property
    def tripped(self) -> bool:
        """True once the dead-letter share reached the limit (sticky until ``reset``)."""
        return self._tripped

    @property
    def ratio(self) -> float:
        """Dead-lettered share of the recent events (0 when none)."""
        return self._dead / len(self._recent) if self._recent else 0.0

    def reset(self) -> None:
        self._recent.clear()
        self._dead = 0
        self._tripped = False
