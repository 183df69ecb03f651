"""The face engine off the event loop: cached, one computation per image, a bounded hand-over, its throughput.

:class:`Detector` is what the v1 and IAI handlers await for the faces of an image's bytes:

* results (faces largest first, or the engine's ImageError) are cached by the sha1 of the bytes
  (:class:`~worker.emulator.engine.DetectionCache`); requests for an image already being computed wait for that
  computation instead of starting their own;
* the engine runs in a pool: threads for an engine that releases the GIL or is quick (the synthetic one: two), or
  processes for one that holds it (``engine.processes``: dlib), one per core unless ``workers`` says otherwise, each
  started with the ``spawn`` method (no fork of a threaded process) and loading the models once (``warm_up()``,
  in the pool's initializer) — :meth:`start` waits until every process is up, so a model that cannot load stops
  the emulator at start;
* at most ``2 × workers`` images are handed to the pool at a time; further ones wait in the event loop (no bytes
  copied, nothing queued inside the pool), so the pool's own queue stays bounded however many requests arrive;
* :meth:`close` cancels what waits, lets each process finish its image (at most ``close_timeout_s``), then ends
  any process still there by its PID; a pool process whose parent is gone (killed) ends by itself;
* :meth:`stats` reports the engine's images per second (computations finished in the last 10 s), its mean time
  per image inside the pool, the images handed to the pool (``in_pool``) and those waiting for it, and the
  pool's process ids (:meth:`pids`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from worker.emulator.engine import DetectionCache, DetectionResult, detect_sorted
from worker.emulator.faces import FaceEngine

RATE_WINDOW_S = 10
THREADS = 2  # enough for the synthetic engine, whose decode releases the GIL
SLOTS_PER_WORKER = 2  # images handed to the pool per worker: one running, one ready to start
WARM_UP_TIMEOUT_S = 120.0

_process_engine: FaceEngine | None = None  # in a pool process: the engine its initializer received


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _init_process(engine: FaceEngine) -> None:
    """Pool process initializer: Ctrl-C is the parent's to handle, the process ends with its parent, and the models
    are loaded once, here."""
    global _process_engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        # A pool process holds both ends of its task queue, so it never sees the parent go: without this watch,
        # a killed emulator would leave its pool processes waiting forever.
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="parent-watch", daemon=True).start()
    warm_up = getattr(engine, "warm_up", None)
    if callable(warm_up):
        warm_up()
    _process_engine = engine


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(0)


def _detect_in_process(data: bytes) -> tuple[DetectionResult, float]:
    assert _process_engine is not None, "pool process without an engine"
    started = time.perf_counter()
    result = detect_sorted(_process_engine, data)
    return result, time.perf_counter() - started


def _ready() -> int:
    return os.getpid()


class _Rate:
    """Events per second over the last RATE_WINDOW_S seconds (per-second buckets: bounded memory)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.since = time.monotonic()
        self._buckets: deque[list[int]] = deque(maxlen=RATE_WINDOW_S + 1)  # [second, count]

    def add(self) -> None:
        second = int(time.monotonic())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([second, 1])

    def per_second(self) -> float:
        now = time.monotonic()
        window = min(float(RATE_WINDOW_S), max(now - self.since, 1e-3))
        count = sum(n for second, n in self._buckets if second > now - RATE_WINDOW_S)
        return count / window


class Detector:
    """See the module docstring. Create it anywhere; :meth:`start`, :meth:`detect`, :meth:`close` on one loop."""

    def __init__(self, engine: FaceEngine, *, cache_entries: int = 4096, workers: int = 0) -> None:
        if workers < 0:
            raise ValueError(f"engine_workers must be ≥ 0 (0 = one per core), not {workers}")
        self.engine = engine
        self.cache = DetectionCache(engine, cache_entries)
        self.processes = bool(getattr(engine, "processes", False))
        self.workers = workers or (default_workers() if self.processes else THREADS)
        self._executor: Executor | None = None
        self._slots = asyncio.Semaphore(self.workers * SLOTS_PER_WORKER)
        self._computing: dict[bytes, asyncio.Task[DetectionResult]] = {}
        self._rate = _Rate()
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.computed = 0
        self.busy_s = 0.0
        self.waiting = 0
        self.in_pool = 0
        self.max_waiting = 0
        self._rate.reset()

    # --- life cycle ----------------------------------------------------------------------------------------

    def _new_executor(self) -> Executor:
        if not self.processes:
            return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="face-engine")
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process,
            initargs=(self.engine,),
        )

    async def start(self) -> None:
        """Create the pool; for processes, start every one and wait until each has loaded the models."""
        if self._executor is not None:
            return
        self._executor = self._new_executor()
        if self.processes:
            loop = asyncio.get_running_loop()
            # Each submit without an idle process starts one more (up to workers): all are up once these return.
            pings = [loop.run_in_executor(self._executor, _ready) for _ in range(self.workers)]
            try:
                async with asyncio.timeout(WARM_UP_TIMEOUT_S):
                    await asyncio.gather(*pings)
            except BrokenProcessPool as exc:
                await self.close()
                raise RuntimeError(
                    f"the {self.engine.name} engine's processes did not start (see their error above). A script that"
                    " starts the emulator in its own process needs `if __name__ == '__main__':` around that: each"
                    " engine process is started with the spawn method, which runs the script's module again"
                ) from exc
            except BaseException:
                await self.close()
                raise

    async def close(self, close_timeout_s: float = 5.0) -> None:
        """Stop the pool (see the module docstring); idempotent."""
        executor, self._executor = self._executor, None
        for task in list(self._computing.values()):
            task.cancel()
        if executor is None:
            return
        processes = dict(getattr(executor, "_processes", None) or {}) if self.processes else {}
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(None, lambda: executor.shutdown(wait=True, cancel_futures=True))
        try:
            await asyncio.wait_for(asyncio.shield(done), close_timeout_s)
        except TimeoutError:
            for process in processes.values():  # still busy after the grace time: ended by its own PID
                if process.is_alive():
                    process.terminate()
            await done

    # --- detection -----------------------------------------------------------------------------------------

    async def detect(self, data: bytes) -> tuple[bytes, DetectionResult]:
        """(sha1 of the bytes, faces largest first or the engine's ImageError)."""
        key = DetectionCache.key(data)
        result = self.cache.get(key)
        if result is not None:
            return key, result
        task = self._computing.get(key)
        if task is None:
            # A task of its own, not the first caller's: a caller that goes away does not cancel the others' answer.
            task = asyncio.get_running_loop().create_task(self._compute(key, data))
            self._computing[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        else:  # the same image is being computed for another request: share that computation
            self.cache.hits += 1
        return key, await asyncio.shield(task)

    def _finished(self, key: bytes, task: asyncio.Task[DetectionResult]) -> None:
        if self._computing.get(key) is task:
            del self._computing[key]
        if not task.cancelled():
            task.exception()  # retrieved here: no "never retrieved" warning when every caller went away

    async def _compute(self, key: bytes, data: bytes) -> DetectionResult:
        self.waiting += 1
        self.max_waiting = max(self.max_waiting, self.waiting)
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.in_pool += 1
        try:
            executor = self._executor
            if executor is None:
                raise RuntimeError("the face engine's pool is not running (Detector.start)")
            loop = asyncio.get_running_loop()
            try:
                if self.processes:
                    result, seconds = await loop.run_in_executor(executor, _detect_in_process, data)
                else:
                    started = time.perf_counter()
                    result = await loop.run_in_executor(executor, detect_sorted, self.engine, data)
                    seconds = time.perf_counter() - started
            except BrokenProcessPool:
                await self._replace_broken(executor)
                raise
        finally:
            self.in_pool -= 1
            self._slots.release()
        self.computed += 1
        self.busy_s += seconds
        self._rate.add()
        self.cache.put(key, result)
        return result

    async def _replace_broken(self, broken: Executor) -> None:
        """A pool process died (killed, crashed): this request fails, the next ones get a fresh pool."""
        if self._executor is not broken:
            return
        self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)
        await self.start()

    # --- stats ---------------------------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget cached results and zero the counters (``POST /__admin/reset`` with caches/stats)."""
        self.cache.clear()

    def reset_stats(self) -> None:
        in_pool, waiting = self.in_pool, self.waiting
        self._reset_counters()
        self.in_pool, self.waiting = in_pool, waiting  # gauges: what runs at a reset still runs after it
        self.max_waiting = waiting

    def pids(self) -> list[int]:
        """The process ids of the pool (none for a pool of threads): the engine's processes, each stopped with it."""
        processes = getattr(self._executor, "_processes", None) if self.processes else None
        return sorted(int(pid) for pid in (processes or {}))

    def stats(self) -> dict[str, Any]:
        """The ``engine`` member of ``GET /__admin/stats``."""
        return {
            "name": self.engine.name,
            "pool": "processes" if self.processes else "threads",
            "workers": self.workers,
            "pids": self.pids(),
            "images": self.computed,
            "images_per_s": round(self._rate.per_second(), 3),
            "mean_ms": round(1000.0 * self.busy_s / self.computed, 3) if self.computed else None,
            "in_pool": self.in_pool,
            "waiting": self.waiting,
            "max_waiting": self.max_waiting,
        }
