"""Figures of the long-running scenarios (long faults, fleet quota, soak) over time windows.

* ``Timeline`` samples, every ``interval`` s: the emulator's answers by code (its own counters: what
  really reached the API) and each worker's /metrics (API attempts by outcome, limiter rate, breaker
  state, partitions, every ``mdw_structure_entries{structure=…}`` series the worker exposes) and RSS.
* ``lost_and_pending``: events without an output, split by the offsets the group committed.
* ``recovery_s``: time from a fault's end to full throughput again, i.e. to the first moment from which
  ``bins`` consecutive bins of ``bin_s`` each carry ≥ ``share`` of the offered rate in outputs (output
  records counted by their Kafka timestamps, as everywhere in the suite).

The steady event stream they run on is ``events.SteadyStream``. Every loop is bounded in time; every scrape
has a timeout; nothing here starts or stops a process.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from machine import proc_memory_kb
from metrics import Scrape, api_calls, scrape, structures
from stack import BenchStack, delta

from worker.dev.harness.positions import committed_positions
from worker.dev.harness.processes import WorkerProcess

# -- what was lost ------------------------------------------------------------------------------------------


def committed_offsets(bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (the next record it would read; 0 when none is committed)."""
    positions = committed_positions(bootstrap, group, topic, range(partitions))
    return {p: max(0, offset) for p, offset in positions.items()}


def lost_and_pending(
    placed: Mapping[str, tuple[int, int]], output_ids: set[str], committed: Mapping[int, int]
) -> tuple[list[str], list[str]]:
    """Events without an output, split by the group's commit: *lost* ones lie below the committed offset (the
    group will never read them again), *pending* ones at or above it (the next owner processes them)."""
    lost: list[str] = []
    pending: list[str] = []
    for event_id, (partition, offset) in placed.items():
        if event_id not in output_ids:
            (lost if offset < committed.get(partition, 0) else pending).append(event_id)
    return lost, pending


# -- the timeline ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerPoint:
    alive: bool
    scraped: bool  # /metrics answered
    api: dict[str, float]  # attempts so far by outcome
    limiter: float  # mdw_rate_limit_qps (0: unlimited)
    breaker: float  # 0 closed, 1 half-open, 2 open
    partitions: float
    in_flight: float
    structures: dict[str, float]
    rss_mb: float


@dataclass(frozen=True)
class Point:
    wall: float
    codes: dict[str, int]  # the emulator's answers so far, by code
    workers: dict[str, WorkerPoint]


@dataclass
class Timeline:
    """Samples the emulator and every added worker every ``interval`` s in a thread (at most ``max_seconds``)."""

    stack: BenchStack
    interval: float = 1.0
    max_seconds: float = 1800.0
    points: list[Point] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._workers: list[WorkerProcess] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def add(self, worker: WorkerProcess) -> None:
        with self._lock:
            self._workers.append(worker)

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def sample(self) -> Point:
        with self._lock:
            workers = list(self._workers)
        codes: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            codes = self.stack.emulator_codes()
        wall = time.time()
        points = {}
        for w in workers:
            s = scrape(w, 2.0) if w.alive() else Scrape()
            mem = proc_memory_kb(w.pid)
            points[w.name] = WorkerPoint(
                alive=w.alive(),
                scraped=s.ok,
                api=api_calls(s),
                limiter=s.value("mdw_rate_limit_qps"),
                breaker=s.value("mdw_breaker_state"),
                partitions=s.value("mdw_partitions_assigned"),
                in_flight=s.value("mdw_in_flight"),
                structures=structures(s),
                rss_mb=mem[0] / 1024 if mem else math.nan,
            )
        point = Point(wall, codes, points)
        with self._lock:
            self.points.append(point)
        return point

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while time.monotonic() < deadline:
            self.sample()
            if self._stop.wait(self.interval):
                return

    # -- figures over a window [t0, t1] --

    def snapshot(self) -> list[Point]:
        with self._lock:
            return list(self.points)

    def at(self, t: float) -> Point | None:
        """The sample nearest to ``t``."""
        pts = self.snapshot()
        return min(pts, key=lambda p: abs(p.wall - t)) if pts else None

    def between(self, t0: float, t1: float) -> list[Point]:
        return [p for p in self.snapshot() if t0 <= p.wall <= t1]

    def upto(self, t: float) -> Point | None:
        """The last sample at or before ``t`` (the first one if none)."""
        pts = self.snapshot()
        before = [p for p in pts if p.wall <= t]
        return before[-1] if before else (pts[0] if pts else None)

    def codes_between(self, t0: float, t1: float) -> tuple[dict[str, float], float]:
        """The emulator's answers by code between the last samples at or before t0 and t1, and the seconds
        between those samples (phase boundaries have a sample of their own, taken just before the change)."""
        a, b = self.upto(t0), self.upto(t1)
        if a is None or b is None or b.wall <= a.wall:
            return {}, 0.0
        return delta(a.codes, b.codes), b.wall - a.wall

    def worker_calls_between(self, name: str, t0: float, t1: float) -> dict[str, float]:
        """One worker's API attempts by outcome between t0 and t1, from its last good scrape at or before each
        end: zero before it started; a worker that has exited keeps the counts of its last scrape."""

        def upto(t: float) -> dict[str, float]:
            good = [p.workers[name].api for p in self.snapshot() if p.wall <= t and name in p.workers]
            good = [g for g in good if g]
            return good[-1] if good else {}

        return delta(upto(t0), upto(t1))

    def limiter_between(self, t0: float, t1: float) -> tuple[float, bool]:
        """Mean over the window of the live workers' limiter rates summed, and whether any was unlimited (0)."""
        sums: list[float] = []
        unlimited = False
        for p in self.between(t0, t1):
            live = [w for w in p.workers.values() if w.alive and w.scraped]
            if live:
                unlimited = unlimited or any(w.limiter <= 0 for w in live)
                sums.append(sum(w.limiter for w in live))
        return (statistics.fmean(sums) if sums else math.nan), unlimited

    def structure_names(self) -> list[str]:
        return sorted({k for p in self.snapshot() for w in p.workers.values() for k in w.structures})

    def structures_at(self, t: float) -> dict[str, float]:
        """Entries per structure summed over the workers alive in the sample nearest ``t``."""
        p = self.at(t)
        out: dict[str, float] = {}
        for w in p.workers.values() if p else []:
            for k, v in w.structures.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def structures_per_worker_at(self, t: float) -> dict[str, float]:
        """Largest entries per structure in any one worker alive in the sample nearest ``t`` (a worker that
        joins does not make a structure look grown)."""
        p = self.at(t)
        out: dict[str, float] = {}
        for w in p.workers.values() if p else []:
            for k, v in w.structures.items():
                out[k] = max(out.get(k, 0.0), v)
        return out

    def structure_peaks(self) -> dict[str, float]:
        """Largest entries per structure seen in any one worker at any sample."""
        out: dict[str, float] = {}
        for p in self.snapshot():
            for w in p.workers.values():
                for k, v in w.structures.items():
                    out[k] = max(out.get(k, 0.0), v)
        return out

    def max_breaker(self, t0: float, t1: float) -> float:
        return max((w.breaker for p in self.between(t0, t1) for w in p.workers.values() if w.scraped), default=0.0)

    def failed_scrapes(self, name: str) -> int:
        """Samples at which ``name`` was alive but its /metrics did not answer (starting up, or wedged)."""
        return sum(
            1 for p in self.snapshot() if name in p.workers and p.workers[name].alive and not p.workers[name].scraped
        )

    def exited_at(self, name: str) -> float | None:
        """First sample at which ``name`` was no longer alive."""
        return next((p.wall for p in self.snapshot() if name in p.workers and not p.workers[name].alive), None)


# -- outputs over time -------------------------------------------------------------------------------------


def count_between(stamps: Iterable[float], t0: float, t1: float) -> int:
    return sum(1 for t in stamps if t0 <= t < t1)


def recovery_s(
    stamps: Sequence[float],
    fault_end: float,
    offered: float,
    horizon: float,
    *,
    bin_s: float = 0.5,
    bins: int = 4,
    share: float = 0.9,
) -> float:
    """Seconds from ``fault_end`` to the start of the first run of ``bins`` consecutive ``bin_s`` bins that each
    carry ≥ ``share`` × ``offered`` × ``bin_s`` outputs, looking at most ``horizon`` s ahead; NaN if none."""
    n = max(0, int(horizon / bin_s))
    counts = [0] * (n + bins)
    for t in stamps:
        i = math.floor((t - fault_end) / bin_s)
        if 0 <= i < len(counts):
            counts[i] += 1
    need = share * offered * bin_s
    for i in range(n):
        if all(c >= need for c in counts[i : i + bins]):
            return i * bin_s
    return math.nan


def sleep_until(t_wall: float, alive: Callable[[], bool] | None = None) -> None:
    """Sleep until wall time ``t_wall`` (returns early, within 0.2 s, once ``alive()`` is False)."""
    while True:
        left = t_wall - time.time()
        if left <= 0 or (alive is not None and not alive()):
            return
        time.sleep(min(left, 0.2))


def wait_for_outputs(
    unique: Callable[[], int], expected: int, timeout: float, stall_s: float
) -> tuple[bool, float, float]:
    """Until ``unique()`` reaches ``expected`` (True), ``timeout`` passes, or no new output came for ``stall_s``.

    Returns (done, seconds waited, seconds since the last progress when it gave up)."""
    start = time.monotonic()
    last_n, last_progress = unique(), start
    while True:
        now = time.monotonic()
        n = unique()
        if n >= expected:
            return True, now - start, 0.0
        if n != last_n:
            last_n, last_progress = n, now
        if now - start >= timeout or now - last_progress >= stall_s:
            return False, now - start, now - last_progress
        time.sleep(0.1)
