"""Where image bodies go in memory, and how they count against the byte budget (``fetch_memory_mb``).

Contract:

* The body goes into one buffer of its own, an anonymous memory mapping (:class:`ImageBuffer`). With a
  declared length (and no content encoding) it is a mapping of that size, faulted in at once, and the socket
  reads straight into it: no chunks, no copy. Otherwise it has room for ``max_bytes`` + 1 (pages never
  written are never resident) and the chunks are copied in as they arrive. :attr:`FetchedImage.data` is a
  read-only view of it.
* With a budget (:class:`~worker.core.budget.ByteBudget`) every resident byte of every buffer is reserved
  in it. :meth:`ImageMemory.slot` first reserves ``max_bytes`` — waiting for room *before* the fetch
  connects or starts its deadline, and ending the wait with :class:`~worker.core.budget.WaitCancelled`
  when the caller's ``cancelled()`` says so — then the slot keeps only what the declared length and then
  the body need. A failed fetch drops its slot: the buffer is unmapped and everything given back.
* A successful fetch holds the image until :meth:`FetchedImage.release`, after which the buffer is kept
  for the next download (still reserved: up to 16, never while a download waits for room, reclaimed by
  one that does) or unmapped. Without a budget each buffer is unmapped on release.

Why mappings: malloc'd bodies would not keep this bound, since arenas kept the pages of released images
resident (measured: 40–60 MB above the budget at in-flight 256); fresh mappings keep it but cost page faults
(about 1 ms per 1.3 MB event), which reusing them avoids.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.api.images import SNIFF_BYTES
from worker.core.budget import ByteBudget, Reservation

__all__ = ["FetchedImage", "ImageBuffer", "ImageMemory", "Lease", "Slot"]

_POOL_SIZE = 16  # idle buffers kept at most (fewer when the budget holds fewer images of max_bytes)

# Pre-faulting a mapping in the call that creates it costs about half of taking its page faults one by one
# as the body comes in (0.7 vs 1.2 ms for 1.3 MB, measured on the 2-core benchmark VM).
_POPULATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)


class ImageBuffer:
    """Room for one image: an anonymous mapping of ``capacity`` bytes, filled as the body streams in.

    Pages are resident once written (or all at once when ``populate``) and stay so while the mapping is
    reused: ``resident`` is how many bytes that is, what the mapping costs in memory (its reservation never
    holds less). Views are made on demand and never kept here, so "is any view of it alive?" has a precise
    answer.
    """

    __slots__ = ("_map", "length", "resident")

    def __init__(self, capacity: int, *, populate: bool = False) -> None:
        capacity = max(capacity, 1)  # a zero-length mapping is not allowed
        self._map = mmap.mmap(-1, capacity, flags=_POPULATE) if populate else mmap.mmap(-1, capacity)
        self.length = 0
        self.resident = capacity if populate else 0

    @property
    def capacity(self) -> int:
        return len(self._map)

    def append(self, chunk: bytes) -> bool:
        """Copy ``chunk`` in after what is there; False (nothing copied) when it does not fit."""
        end = self.length + len(chunk)
        if end > len(self._map):
            return False
        with memoryview(self._map) as view:
            view[self.length : end] = chunk
        self._wrote(end)
        return True

    def fill_from(self, source: Any, limit: int) -> None:
        """``source.readinto`` straight into the mapping until ``limit`` bytes are in or the source ends."""
        with memoryview(self._map) as view:
            while self.length < limit:
                n = source.readinto(view[self.length : limit])
                if not n:
                    break
                self._wrote(self.length + n)

    def _wrote(self, end: int) -> None:
        self.length = end
        self.resident = max(self.resident, end)

    def head(self) -> bytes:
        """The first bytes, where every format's signature is (``SNIFF_BYTES``), copied."""
        return self._map[: min(self.length, SNIFF_BYTES)]

    def data(self) -> memoryview:
        """A read-only view of the bytes in; release it before the buffer is reused or closed."""
        with memoryview(self._map) as view:
            return view[: self.length].toreadonly()

    def unused(self) -> bool:
        """True when no view of the mapping is alive anywhere (resizing is refused while one is)."""
        try:
            self._map.resize(len(self._map))  # same size: a no-op, but checked against live views
        except BufferError:
            return False
        return True

    def close(self) -> None:
        """Unmap now; if a view is still alive somewhere (an exception's traceback), once the last one goes."""
        with contextlib.suppress(BufferError):
            self._map.close()


class _BufferPool:
    """Idle mappings kept for the next download, each holding a reservation of its ``resident`` bytes.

    A fresh mapping costs its page faults and its unmapping: for 1.3 MB images about 1 ms of worker CPU
    per event (measured: a fifth of it in fetch mode). Reusing a mapping costs neither, and since an idle
    mapping keeps its reservation, memory stays within the budget. At most ``size`` are kept, none while a
    download waits for room (it would be waiting for them), and a waiting download reclaims them: when the
    budget binds, every download maps afresh.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._idle: list[tuple[ImageBuffer, Reservation]] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[ImageBuffer, Reservation] | None:
        with self._lock:
            return self._idle.pop() if self._idle else None  # the most recently used: its pages are warm

    def put(self, buffer: ImageBuffer, hold: Reservation, *, keep: bool) -> None:
        """Keep ``buffer`` for reuse when ``keep`` and there is space, else unmap it and give its bytes back."""
        buffer.length = 0
        if keep and buffer.unused():
            hold.shrink(min(hold.size, buffer.resident))
            with self._lock:
                if len(self._idle) < self._size:
                    self._idle.append((buffer, hold))
                    return
        buffer.close()
        hold.release()

    def shut(self) -> None:
        """Keep nothing from now on (images still out are unmapped when released) and unmap the idle."""
        with self._lock:
            self._size = 0
        self.clear()

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for buffer, hold in idle:
            buffer.close()
            hold.release()

    @property
    def idle_bytes(self) -> int:
        with self._lock:
            return sum(hold.size for _, hold in self._idle)


_GiveBack = Callable[[ImageBuffer, Reservation | None], None]


class Slot:
    """What one download holds: a reservation (with a budget) and a buffer, chosen once the headers are in
    (an idle one taken at the start is kept if it is large enough)."""

    __slots__ = ("buffer", "hold")

    def __init__(self, buffer: ImageBuffer | None, hold: Reservation | None) -> None:
        self.buffer = buffer
        self.hold = hold

    def settle(self) -> None:
        """Keep reserved only what the body in the buffer needs, never less than the buffer's resident pages."""
        if self.hold is not None and self.buffer is not None:
            self.hold.shrink(max(self.buffer.length, self.buffer.resident))

    def drop(self) -> None:
        """A failed fetch: unmap the buffer and give everything back (failures are rare: nothing is kept)."""
        if self.buffer is not None:
            self.buffer.close()
        if self.hold is not None:
            self.hold.release()


class Lease:
    """A fetched image's buffer and reservation, handed back to the fetcher exactly once."""

    __slots__ = ("_done", "_give_back", "buffer", "hold")

    def __init__(self, buffer: ImageBuffer, hold: Reservation | None, give_back: _GiveBack) -> None:
        self.buffer = buffer
        self.hold = hold
        self._give_back = give_back
        self._done = False

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._give_back(self.buffer, self.hold)


@dataclass(frozen=True)
class FetchedImage:
    """A downloaded image. ``final_url`` is the last hop, query included: redact it before logging.

    ``data`` is a read-only view of the one buffer the body went into (see the module docstring). Call
    :meth:`release` once done with the image: ``data`` becomes unusable, and the buffer goes back to the
    fetcher (kept for the next download, or unmapped) with its bytes counted in, or given back to, the
    budget. Idempotent.
    """

    data: bytes | memoryview = field(repr=False)
    content_type: str  # from the magic bytes, never from the server's header
    final_url: str
    lease: Lease | None = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        if isinstance(self.data, memoryview):
            with contextlib.suppress(BufferError):  # being read right now: the buffer will not be reused
                self.data.release()
        if self.lease is not None:
            self.lease.release()


class ImageMemory:
    """The buffers of one fetcher and their reservations in its budget (the rules of the module docstring).

    Thread-safe. Raises ValueError when the budget cannot hold one image of ``max_bytes``.
    """

    def __init__(self, max_bytes: int, budget: ByteBudget | None) -> None:
        if budget is not None and budget.capacity < max_bytes:
            raise ValueError(f"a budget of {budget.capacity} bytes cannot hold one image of max_bytes {max_bytes}")
        self._max_bytes = max_bytes
        self._budget = budget
        # Only with a budget: idle mappings are memory, and the budget is what counts and reclaims it.
        self._pool = _BufferPool(min(_POOL_SIZE, budget.capacity // max_bytes)) if budget is not None else None
        if budget is not None and self._pool is not None:
            budget.add_reclaimer(self._pool.clear)  # a download waiting for room takes it from idle buffers

    @property
    def idle_bytes(self) -> int:
        """Budget bytes held by idle buffers kept for the next downloads (reclaimed when anyone needs room)."""
        return self._pool.idle_bytes if self._pool is not None else 0

    def slot(self, cancelled: Callable[[], bool]) -> Slot:
        """With a budget, a reservation of ``max_bytes`` (and an idle buffer when one is kept); may wait."""
        if self._budget is None or self._pool is None:
            return Slot(None, None)
        idle = self._pool.take()
        if idle is not None:
            buffer, hold = idle
            if hold.try_grow(self._max_bytes):  # its pages are counted in this reservation from now on
                return Slot(buffer, hold)
            self._pool.put(buffer, hold, keep=False)  # others are waiting for room: theirs first
        return Slot(None, self._budget.acquire(self._max_bytes, cancelled=cancelled))

    def buffer_for(self, slot: Slot, length: int | None) -> ImageBuffer:
        """The slot's buffer for a body of ``length`` bytes (None: not known, up to ``max_bytes``)."""
        need = length if length is not None else self._max_bytes + 1
        buffer = slot.buffer
        if buffer is None or buffer.capacity < need:
            if buffer is not None:
                buffer.close()
            # A known length fills the whole mapping: fault it in at once. An unknown one may use little of it.
            buffer = slot.buffer = ImageBuffer(need, populate=length is not None)
        if slot.hold is not None and length is not None:
            slot.hold.shrink(max(length, buffer.resident))  # the reservation always covers the resident pages
        return buffer

    def lease(self, slot: Slot) -> Lease:
        """The filled buffer of a successful fetch, to be handed back once its image is released."""
        assert slot.buffer is not None, "a successful fetch has a buffer"
        return Lease(slot.buffer, slot.hold, self._give_back)

    def close(self) -> None:
        """Keep nothing from now on: unmap the idle buffers now, those still out when they are released."""
        if self._pool is not None:
            if self._budget is not None:
                self._budget.remove_reclaimer(self._pool.clear)
            self._pool.shut()

    def _give_back(self, buffer: ImageBuffer, hold: Reservation | None) -> None:
        if hold is None or self._pool is None or self._budget is None:
            buffer.close()
            if hold is not None:
                hold.release()
            return
        self._pool.put(buffer, hold, keep=self._budget.waiting == 0)
