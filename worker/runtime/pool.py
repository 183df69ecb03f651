"""The HTTP threads: a fixed number of daemon threads running tasks from one queue.

Daemon threads, so that none outlives the process or blocks its exit (a call stuck in a socket read is
abandoned at the end of a drain). Tasks catch their own errors; a crash is logged, never silent.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("worker.pool")


class TaskPool:
    def __init__(self, size: int, name: str = "mdw-http") -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(size)]
        for t in self._threads:
            t.start()

    def _loop(self) -> None:
        while True:
            fn = self._tasks.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:  # pragma: no cover - tasks catch their own errors
                log.exception("task crashed")

    def submit(self, fn: Callable[[], None]) -> None:
        self._tasks.put(fn)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)
