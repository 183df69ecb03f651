"""A byte budget: how many bytes of downloaded images a worker may hold in memory at once (no I/O).

Contract of :class:`ByteBudget`:

* ``acquire(size)`` returns a :class:`Reservation` of ``size`` bytes once ``in_use + size ≤ capacity``;
  until then it **waits** (it never fails for lack of room). Waiters are served first come, first served,
  so a large request is not starved by a stream of small ones; bytes given back wake the first waiter
  only (and only when it fits), never the whole queue, so hundreds of waiters cost nothing per release.
* The wait ends with a reservation, with :class:`WaitCancelled` as soon as the caller's ``cancelled()``
  says so (checked at least every ``poll_s``, 0.25 s by default: hundreds of slots may wait at once, and
  polling them faster cost measurable CPU; it is called without the budget's lock held), or with
  :class:`BudgetTimeout` after ``timeout_s`` when one is given. A cancelled or timed-out waiter holds
  nothing and is out of the queue.
* A size the budget can never hold (``size > capacity``) or a negative size is a programming error:
  ``ValueError`` at once, never a wait that cannot end.
* A reservation may be given back in part (``shrink``: reserve the largest size before a download,
  keep only what arrived) and is released exactly once, however often ``release`` is called. It grows
  only without waiting (``try_grow``: when the room is free and nobody waits for it).
* Reclaimers: memory kept only as a cache (still reserved, so still counted) is given up when someone needs
  the room. Whoever keeps such a cache registers a callable (``add_reclaimer``) that releases it; a caller
  about to wait, and each time it checks again, calls every one of them (without the lock).

Liveness, when every holder follows the rule "never acquire while holding": room always comes back,
because each holder finishes without waiting for another reservation.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["BudgetTimeout", "ByteBudget", "Reservation", "WaitCancelled"]


class WaitCancelled(Exception):
    """The caller's ``cancelled()`` turned true while it waited for room."""


class BudgetTimeout(TimeoutError):
    """No room within the caller's ``timeout_s``."""


def _never() -> bool:
    return False


class Reservation:
    """Bytes taken from a :class:`ByteBudget`; thread-safe, released once."""

    __slots__ = ("_budget", "_size")

    def __init__(self, budget: ByteBudget, size: int) -> None:
        self._budget = budget
        self._size = size

    @property
    def size(self) -> int:
        """Bytes still held (0 once released)."""
        return self._size

    def shrink(self, size: int) -> None:
        """Keep only ``size`` bytes and give the rest back; a reservation never grows (ValueError)."""
        if size < 0:
            raise ValueError(f"a reservation cannot shrink to {size} bytes")
        self._budget._give_back(self, size)

    def release(self) -> None:
        """Give everything back; later calls do nothing."""
        self._budget._give_back(self, 0)

    def try_grow(self, size: int) -> bool:
        """Hold ``size`` bytes if that needs no waiting (room free, nobody queued for it); else change nothing."""
        return self._budget._try_grow(self, size)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Reservation({self._size} bytes)"


class _Waiter:
    __slots__ = ("cond", "size")

    def __init__(self, size: int, lock: threading.Lock) -> None:
        self.size = size
        self.cond = threading.Condition(lock)  # every waiter's condition shares the budget's lock


class ByteBudget:
    """A semaphore over bytes (see the module docstring); one instance is shared by every thread."""

    def __init__(self, capacity: int, *, poll_s: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity <= 0:
            raise ValueError(f"a byte budget needs a positive capacity, got {capacity}")
        if poll_s <= 0:
            raise ValueError("poll_s must be positive")
        self._capacity = capacity
        self._poll_s = poll_s
        self._clock = clock
        self._in_use = 0
        self._peak = 0
        self._queue: deque[_Waiter] = deque()  # waiting callers, first come first served
        self._lock = threading.Lock()
        self._reclaimers: tuple[Callable[[], object], ...] = ()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._in_use

    @property
    def peak(self) -> int:
        """The most bytes ever reserved at once."""
        with self._lock:
            return self._peak

    @property
    def waiting(self) -> int:
        """Callers waiting for room now."""
        with self._lock:
            return len(self._queue)

    def add_reclaimer(self, reclaim: Callable[[], object]) -> None:
        """``reclaim()`` releases reservations kept only as a cache; waiters call it before waiting."""
        with self._lock:
            self._reclaimers = (*self._reclaimers, reclaim)

    def remove_reclaimer(self, reclaim: Callable[[], object]) -> None:
        with self._lock:
            self._reclaimers = tuple(r for r in self._reclaimers if r is not reclaim)

    def try_acquire(self, size: int) -> Reservation | None:
        """A reservation at once if there is room and nobody is waiting ahead, else None."""
        self._check(size)
        with self._lock:
            return self._take(size) if not self._queue and self._fits(size) else None

    def acquire(
        self,
        size: int,
        *,
        cancelled: Callable[[], bool] = _never,
        timeout_s: float | None = None,
    ) -> Reservation:
        """``size`` bytes, waiting for room (see the module docstring for how the wait ends)."""
        self._check(size)
        deadline = None if timeout_s is None else self._clock() + timeout_s
        with self._lock:
            if not self._queue and self._fits(size):
                return self._take(size)
            me = _Waiter(size, self._lock)
            self._queue.append(me)
        try:
            while True:
                # cancelled() is the caller's code: never run it under the budget's lock. A wake-up sent
                # meanwhile is not lost: the state is checked again under the lock before waiting.
                if cancelled():
                    raise WaitCancelled(f"cancelled while waiting for {size} bytes of memory budget")
                for reclaim in self._reclaimers:  # a tuple: registering meanwhile does not disturb this loop
                    reclaim()
                with self._lock:
                    if self._queue[0] is me and self._fits(size):
                        self._queue.popleft()
                        reservation = self._take(size)
                        self._wake_first()  # the next in line may fit as well
                        return reservation
                    wait = self._poll_s
                    if deadline is not None:
                        left = deadline - self._clock()
                        if left <= 0:
                            raise BudgetTimeout(
                                f"no room for {size} bytes within {timeout_s:g} s "
                                f"({self._in_use} of {self._capacity} bytes in use)"
                            )
                        wait = min(wait, left)
                    me.cond.wait(wait)
        except BaseException:
            with self._lock:
                if me in self._queue:
                    self._queue.remove(me)
                    self._wake_first()  # whoever was behind us may be first now
            raise

    # -- internals (callers hold self._lock where noted) ---------------------------------------------

    def _check(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"cannot reserve {size} bytes")
        if size > self._capacity:
            raise ValueError(f"{size} bytes can never fit a budget of {self._capacity} bytes")

    def _fits(self, size: int) -> bool:  # under the lock
        return self._in_use + size <= self._capacity

    def _wake_first(self) -> None:  # under the lock
        if self._queue and self._fits(self._queue[0].size):
            self._queue[0].cond.notify()

    def _take(self, size: int) -> Reservation:  # under the lock
        self._in_use += size
        self._peak = max(self._peak, self._in_use)
        return Reservation(self, size)

    def _try_grow(self, reservation: Reservation, size: int) -> bool:
        with self._lock:
            extra = size - reservation._size
            if extra <= 0:
                return True
            if self._queue or not self._fits(extra):
                return False
            self._in_use += extra
            self._peak = max(self._peak, self._in_use)
            reservation._size = size
            return True

    def _give_back(self, reservation: Reservation, keep: int) -> None:
        with self._lock:
            held = reservation._size
            if keep > held:
                raise ValueError(f"a reservation of {held} bytes cannot grow to {keep}")
            if keep == held:
                return
            reservation._size = keep
            self._in_use -= held - keep
            self._wake_first()
