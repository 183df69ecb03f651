"""The time budget of one fetch: a watchdog shuts down the sockets of fetches that ran out of time.

Connect and read timeouts bound each socket operation, but a server that trickles a byte now and then, or
stalls a TLS handshake, would hold a thread for ever. ``total_timeout`` bounds the whole fetch (redirects,
TLS handshake, headers and body):

* :func:`fetch_deadline` runs a fetch on this thread under a :class:`Deadline` (nestable; the outer one is
  back afterwards). One daemon thread, the watchdog, fires deadlines in time order.
* The guarded connections (``worker.fetch.guarded``) :meth:`~Deadline.attach` a kill switch (a duplicate
  descriptor of their socket) to the deadline of the fetch that uses them, a pooled connection again for
  each fetch that reuses it. At the deadline every attached socket is shut down (``shutdown()`` acts on the
  connection, so it also wakes a thread blocked in TLS), and ``expired`` says why the transfer failed; a
  socket attached after the deadline is shut down at once.
* http.client closes a connection as soon as a response says ``Connection: close``, while that response is
  still being read: such a kill switch is adopted, kept until the fetch ends, so the deadline can still cut
  the read.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator

__all__ = ["Deadline", "current_deadline", "fetch_deadline"]


class Deadline:
    """The time budget of one fetch and the sockets (kill switches) of the connections it used."""

    __slots__ = ("_adopted", "_lock", "_socks", "at", "done", "expired")

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False
        self.done = False
        self._socks: list[socket.socket] = []
        self._adopted: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                _shutdown(sock)
            elif not self.done and all(s is not sock for s in self._socks):
                self._socks.append(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            socks, self._socks = self._socks, []
        for sock in socks:
            _shutdown(sock)

    def adopt(self, sock: socket.socket) -> bool:
        """Close ``sock`` when this fetch ends; False (caller closes it) if the fetch has ended already."""
        with self._lock:
            if not self.done:
                self._adopted.append(sock)
            return not self.done

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self._socks = []
            adopted, self._adopted = self._adopted, []
        for sock in adopted:
            sock.close()


def _shutdown(sock: socket.socket) -> None:
    # shutdown() acts on the connection, so it also wakes a thread blocked in TLS on the wrapped socket.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """A single daemon thread firing deadlines in time order (lazy deletion of finished ones)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        due = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(delay)
            due.fire()


_WATCHDOG = _Watchdog()
_current = threading.local()  # .deadline: the Deadline of the fetch running on this thread


def current_deadline() -> Deadline | None:
    """The deadline of the fetch running on this thread, if any."""
    return getattr(_current, "deadline", None)


@contextlib.contextmanager
def fetch_deadline(total: float) -> Iterator[Deadline]:
    """Run the body as this thread's fetch, ``total`` seconds from now; its sockets are let go at the end."""
    deadline = Deadline(time.monotonic() + total)
    outer = current_deadline()
    _current.deadline = deadline
    _WATCHDOG.schedule(deadline)
    try:
        yield deadline
    finally:
        deadline.finish()
        _current.deadline = outer
