"""The benchmarks' stack: broker, emulator with an enrolled gallery and warm caches, injected latency and faults.

:class:`BenchStack` starts the embedded Tansu broker and the emulator in its own process (both stopped by
their PIDs when the block ends), enrolls ``PEOPLE`` in group ``GROUP``, writes ``IMAGES`` synthetic photos
into the folder the emulator serves and calls each once, so that the emulator's download and detection
caches are warm (``url_cache_ttl_s`` is 1 h: it downloads each URL once, and a benchmark measures the worker,
not the emulator's self-download). :func:`latency_faults` builds the emulator's latency configuration;
:class:`ApiSampler` samples how many calls the emulator has in flight. Every loop is bounded in time.

The API under test is the stack's ``api``: ``v1`` (multidentify, the default) or ``iai`` (SearchFaces on the
emulator's ``POST /``). The gallery is enrolled once, through v1, and the emulator runs with
``iai_shared_gallery``, so IAI searches the very persons and faces v1 does (at Tencent the two APIs keep their
data apart; here the same gallery makes the two APIs' figures comparable). With ``iai`` the stack warms the
caches through IAI as well and checks that IAI finds the enrolled people; :meth:`BenchStack.worker_settings`
points a worker at it, :meth:`BenchStack.emulator_codes` counts its answers and :attr:`BenchStack.rate_limited`
is its quota refusal (v1's code 15, IAI's ``RequestLimitExceeded``).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from events import preload

from worker.api.client import ClientOptions, MultidentifyClient
from worker.api.iai_client import IaiClient, IaiOptions
from worker.config import ApiName
from worker.dev.devstack import Broker, start_broker
from worker.dev.harness.topics import Topics
from worker.dev.scenario import Scenario
from worker.emulator import DEV_ACCOUNT, EmulatorProcess, spawn_process

GROUP = "bench"
PEOPLE = ("ada", "grace", "linus", "barbara", "edsger", "margaret")
IMAGES = 16  # distinct images the events cycle through
API_PATH = "/face/multidentify"
#: The emulator's statistics path of each API's identify call, and each API's answer to a call above the quota.
API_PATHS: dict[ApiName, str] = {"v1": API_PATH, "iai": "iai/SearchFaces"}
RATE_LIMITED: dict[ApiName, str] = {"v1": "15", "iai": "RequestLimitExceeded"}


class BenchStack:
    """Tansu broker + emulator (+ its image folder), a small enrolled gallery, and synthetic images.

    The emulator's ``url_cache_ttl_s`` is set (1 h): it downloads each of the ``IMAGES`` URLs once and
    reuses the bytes, so a benchmark measures the worker and not the emulator's self-download. ``api`` is the
    API the workers call (module docstring); the gallery is v1's, shared with IAI.
    """

    def __init__(self, faults: Mapping[str, Any] | None = None, *, api: ApiName = "v1") -> None:
        if api not in API_PATHS:
            raise ValueError(f"api must be one of {sorted(API_PATHS)}, not {api!r}")
        self.api: ApiName = api
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
                images_dir=str(self.images_dir),
                url_cache_ttl_s=3600.0,
                faults=self._faults or None,
                iai_shared_gallery=True,  # IAI sees the gallery enrolled through v1 (module docstring)
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
        if self.api == "iai":
            self._check_iai()
        assert self.emulator is not None
        self.emulator.reset(stats=True, faults=False, gallery=False, caches=False)

    def _check_iai(self) -> None:
        """One SearchFaces per image (IAI's own path warmed too); IAI must find the people enrolled through v1."""
        options = IaiOptions(
            secret_id=DEV_ACCOUNT.secret_id, secret_key=DEV_ACCOUNT.secret_key, endpoint=self.api_url, pool_size=2
        )
        found = 0
        with IaiClient(options) as client:
            for url in self.image_urls:
                result = client.identify_url(url, [GROUP])
                found += sum(1 for face in result.faces if face.candidates)
        if not found:
            raise RuntimeError("IAI found none of the people enrolled through v1: is iai_shared_gallery on?")

    def worker_settings(self) -> dict[str, str]:
        """The worker settings that select the stack's API (none for v1, the worker's default)."""
        return {"api": "iai", "iai_endpoint": self.api_url} if self.api == "iai" else {}

    @property
    def rate_limited(self) -> str:
        """The stack's API's answer to a call above the quota, as the emulator counts it."""
        return RATE_LIMITED[self.api]

    def set_faults(self, faults: Mapping[str, Any]) -> None:
        """Replace the emulator's fault configuration (worker.emulator.faults JSON shape)."""
        assert self.emulator is not None
        self.emulator.admin(dict(faults))

    def preload(self, topics: Topics, partitions: int, n: int) -> list[str]:
        """``n`` events on the input topic of ``topics`` (a fresh run's ids), every one acknowledged; their ids."""
        return preload(self.bootstrap, topics.input, partitions, self.image_urls, uuid.uuid4().hex[:6], n)

    def topics(self, partitions: int, prefix: str = "b") -> Topics:
        """Fresh input, results and dead-letter topics of ``partitions`` each, and a fresh group."""
        return Topics.unique(prefix).create(self.bootstrap, partitions)

    def emulator_codes(self) -> dict[str, int]:
        """The emulator's answers to the stack's API's identify call so far, by code (v1: ``0``, ``15``,
        ``http_503``, ``dropped``…; IAI: ``0``, ``RequestLimitExceeded``, ``http_503``…)."""
        assert self.emulator is not None
        codes = self.emulator.stats().get("codes") or {}
        return {str(k): int(v) for k, v in (codes.get(API_PATHS[self.api]) or {}).items()}


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


def delta(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """``b − a`` per key (counters read twice)."""
    return {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
