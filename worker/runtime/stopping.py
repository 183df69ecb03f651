"""Stopping ``multidentify-worker run``: SIGTERM/SIGINT honoured from the first milliseconds, and a bounded end.

Contracts:

* :func:`install_stop_handlers` (main thread, idempotent) is called before anything slow — the CLI calls
  it before it even builds its parser, ``run()`` first thing. From then on SIGTERM/SIGINT only *ask*
  for a stop: a signal during imports, configuration or while the pipeline is built ends the process
  with exit 0 instead of killing it (-15). The handler records the first signal, sets an event and
  calls the registered callbacks (``Pipeline.request_stop``); later signals do nothing. It neither logs
  nor takes a lock the interrupted main thread could be holding (a log call interrupted by a handler
  that logs again can raise "reentrant call" or deadlock).
* No handler exists before the interpreter runs our code (≈60 ms after ``exec``). A launcher that must
  never see the worker killed by an early signal (the demo, the tests) starts it with
  :func:`spawn_with_stop_signals_blocked`: SIGTERM/SIGINT are blocked from ``exec`` on, so a signal
  sent meanwhile stays pending; :func:`install_stop_handlers` unblocks them once its handlers are set,
  and the pending signal reaches them then. Only use it for programs that unblock them (this one).
* :class:`StopWatchdog` is the backstop: once a stop is requested the process ends at the latest
  ``budget_s`` later (``run`` uses ``drain_timeout_s`` + :data:`STOP_MARGIN_S`) with
  :attr:`ExitCode.STOP_CUT_SHORT`, after logging where the main thread was. Events not committed by then are
  processed again by the partitions' next owner (at-least-once holds).
* :func:`exit_process` ends the process once the pipeline has drained, committed and closed: it flushes
  the logs and stdio (bounded) and skips interpreter shutdown, which has nothing left to save but would
  wait on up to ``max_in_flight`` HTTP threads blocked in socket reads, garbage-collect their state and
  destroy the Kafka handles (``rd_kafka_destroy`` can block on a slow broker).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

from worker.runtime.exits import ExitCode

log = logging.getLogger("worker.app")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After drain_timeout_s the pipeline still flushes its outputs, commits and leaves the group; on a healthy
# broker that takes well under a second. The Helm chart allows drain + the API timeouts + 20 s before the
# kubelet's SIGKILL.
STOP_MARGIN_S = 4.0
_FLUSH_TIMEOUT_S = 1.0  # flushing logs before an exit must not hang on a stuck stream


class StopRequest:
    """A stop asked for by a signal (or by :meth:`request`); thread-safe; see the module contract."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._signum: int | None = None
        self._callbacks: list[Callable[[], None]] = []

    @property
    def requested(self) -> bool:
        return self._signum is not None

    @property
    def reason(self) -> str:
        """``"SIGTERM"``, ``"SIGINT"``, ``"request"`` — or ``""`` while no stop was asked for."""
        if self._signum is None:
            return ""
        return signal.Signals(self._signum).name if self._signum > 0 else "request"

    def request(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """Ask for a stop (this is also the signal handler). Only the first call acts."""
        # Checked and set before anything else: a second signal arriving while this runs returns here,
        # so Event.set() below is never re-entered while its lock is held.
        if self._signum is not None:
            return
        self._signum = signum
        self._event.set()
        for callback in tuple(self._callbacks):
            callback()

    def on_request(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when a stop is requested — at once if it already was (it may run twice: be idempotent)."""
        self._callbacks.append(callback)
        if self.requested:
            callback()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested (never call this from the main thread: signals run there)."""
        return self._event.wait(timeout)


_installed: StopRequest | None = None


def install_stop_handlers() -> StopRequest:
    """SIGTERM/SIGINT → :meth:`StopRequest.request`, then unblock them; idempotent.

    Outside the main thread (where Python allows no handlers) nothing is installed and the returned
    request only stops by :meth:`StopRequest.request`.
    """
    global _installed
    if _installed is not None:
        return _installed
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        return stop
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop.request)
    _installed = stop
    # A launcher may have blocked them so that an early signal waits for these handlers (module doc).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return stop


def spawn_with_stop_signals_blocked(args: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **popen_kwargs)`` whose child starts with SIGTERM/SIGINT blocked.

    The child inherits the calling thread's signal mask through fork and exec; the mask is blocked around
    the Popen call only. A signal sent to *this* process meanwhile is delivered when the mask is restored.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return subprocess.Popen(args, **popen_kwargs)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _bounded(fn: Callable[[], None], timeout_s: float) -> None:
    """Run ``fn`` in a daemon thread and wait at most ``timeout_s``: a stuck stream cannot hold us."""
    thread = threading.Thread(target=fn, name="bounded", daemon=True)
    thread.start()
    thread.join(timeout_s)


def _flush_output() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing more to save
            stream.flush()


def exit_process(code: int) -> NoReturn:
    """End the process now with ``code``, after flushing logs and stdio (at most ``_FLUSH_TIMEOUT_S``)."""
    _bounded(_flush_output, _FLUSH_TIMEOUT_S)
    os._exit(code)


def main_thread_stack(limit: int = 8) -> str:
    """The innermost ``limit`` frames of the main thread, one line each (for a log line)."""
    frame = sys._current_frames().get(threading.main_thread().ident or -1)
    if frame is None:
        return "(main thread gone)"
    entries = traceback.extract_stack(frame)[-limit:]
    return " <- ".join(f"{e.name} ({os.path.basename(e.filename)}:{e.lineno})" for e in reversed(entries))


class StopWatchdog:
    """Ends the process ``budget_s`` after a stop request unless :meth:`disarm` came first."""

    def __init__(
        self,
        stop: StopRequest,
        budget_s: float,
        *,
        drain_s: float | None = None,
        exit: Callable[[int], object] = exit_process,
    ) -> None:
        self._stop = stop
        self._budget_s = budget_s
        self._drain_s = budget_s if drain_s is None else drain_s
        self._exit = exit
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stop-watchdog", daemon=True)

    def start(self) -> StopWatchdog:
        self._thread.start()
        return self

    def disarm(self) -> None:
        """The stop finished (or the pipeline ended by itself): the watchdog stays quiet."""
        self._done.set()

    def join(self, timeout_s: float) -> bool:
        """Wait until the watchdog is done (it fired, or was disarmed after a request); True if it is."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        self._stop.wait()
        if self._done.is_set():
            return
        log.info(
            "%s: stopping; in-flight events get %.1f s, the process ends within %.1f s",
            self._stop.reason,
            self._drain_s,
            self._budget_s,
        )
        if self._done.wait(self._budget_s):
            return
        stack = main_thread_stack()

        def report() -> None:
            log.error(
                "the stop did not finish within %.1f s of %s; ending the process with exit code %d "
                "(events not committed are processed again). Main thread: %s",
                self._budget_s,
                self._stop.reason,
                int(ExitCode.STOP_CUT_SHORT),
                stack,
            )

        _bounded(report, _FLUSH_TIMEOUT_S)
        self._exit(ExitCode.STOP_CUT_SHORT)
