"""Real photos for the real-face tests and benchmarks: the one implementation is :mod:`worker.dev.photos` (the demo
uses it too); this module re-exports it and adds what only the tests need.

* :func:`committed`, :func:`fetched`, :func:`compose`, :class:`Placed`, :func:`overlap`, :func:`dlib_missing` —
  see :mod:`worker.dev.photos`;
* :func:`pid_running` — whether a process (an engine's pool process) still runs.
"""

from __future__ import annotations

from pathlib import Path

from worker.dev.photos import (
    DATA,
    FETCHED,
    SDIST,
    Placed,
    cache_dir,
    committed,
    compose,
    dlib_missing,
    fetched,
    overlap,
)

__all__ = [
    "DATA",
    "FETCHED",
    "SDIST",
    "Placed",
    "cache_dir",
    "committed",
    "compose",
    "dlib_missing",
    "fetched",
    "overlap",
    "pid_running",
]


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux ``/proc``)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
