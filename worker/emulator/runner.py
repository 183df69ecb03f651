"""Running the emulator from tests and tools: in a thread of this process, or as a subprocess.

``start_in_thread(**options)`` and ``spawn_process(**options)`` take the options of
:meth:`worker.emulator.config.EmulatorConfig.from_options` (e.g. ``db=path``, ``latency_ms=200``,
``faults={...}``, ``accounts=[...]``, ``limits={"max_groups": 2}``, ``youtu_http_status=True``, ``engine="dlib"``).
``start_in_thread`` also takes an engine object (``engine=SomeEngine()``), which wins over the name.
Both handles offer ``base_url``, ``admin(faults=None)``, ``stats()``, ``reset(...)``, ``stop()`` and work
as context managers. A spawned process is stopped by its own PID (SIGTERM, then SIGKILL) and at exit.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import orjson

from worker.emulator.config import EmulatorConfig
from worker.emulator.faces import FaceEngine
from worker.emulator.server import Emulator
from worker.emulator.serving import AppThread, ServerProcess

BANNER = "EMULATOR"


class EmulatorHandle:
    """An emulator on its own event loop in a daemon thread of this process."""

    def __init__(self, config: EmulatorConfig, *, engine: FaceEngine | None = None) -> None:
        self.config = config
        self._emulator: Emulator | None = None

        def factory() -> Any:
            self._emulator = Emulator(config, engine=engine)
            return self._emulator.make_app()

        self._thread = AppThread(factory, config.host, config.port, name="emulator")
        self.base_url = self._thread.start()

    @property
    def emulator(self) -> Emulator:
        """The live state (gallery, stats, …); touch it only through :meth:`call` from other threads."""
        assert self._emulator is not None
        return self._emulator

    def call(self, fn: Any) -> Any:
        """Run ``fn(emulator)`` on the emulator's event loop and return its result."""
        return self._thread.call_soon(lambda: fn(self.emulator))

    def admin(self, faults: dict[str, Any] | None = None) -> dict[str, Any]:
        """Replace the fault configuration (when given; JSON shape of worker.emulator.faults) and return it."""
        if faults is None:
            return self.call(lambda em: em.faults.config.to_json())  # type: ignore[no-any-return]
        return self.call(lambda em: em.set_faults(faults))  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self.call(lambda em: em.stats_json())  # type: ignore[no-any-return]

    def reset(self, *, stats: bool = True, faults: bool = True, gallery: bool = False, caches: bool = True) -> None:
        self.call(lambda em: em.reset(stats=stats, faults=faults, gallery=gallery, caches=caches))

    def stop(self) -> None:
        self._thread.stop()

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(*, engine: FaceEngine | str | None = None, **options: Any) -> EmulatorHandle:
    """Start an emulator in this process (own loop, daemon thread); returns once it listens.

    ``engine`` is an engine's name (``"synthetic"``, ``"dlib"``: ``EmulatorConfig.engine``) or an engine object."""
    if isinstance(engine, str):
        options["engine"] = engine
        engine = None
    return EmulatorHandle(EmulatorConfig.from_options(**options), engine=engine)


def config_to_options(config: EmulatorConfig) -> dict[str, Any]:
    """The JSON form of a config that ``--config`` (and so a subprocess) accepts."""
    return {
        "host": config.host,
        "port": config.port,
        "accounts": [list(a) for a in config.accounts],
        "db": config.db,
        "faults": config.faults.to_json(),
        "limits": {
            "max_groups": config.limits.max_groups,
            "max_persons_per_group": config.limits.max_persons_per_group,
            "max_faces_per_person": config.limits.max_faces_per_person,
            "duplicate_confidence": config.limits.duplicate_confidence,
            "top_n": config.limits.top_n,
        },
        "youtu_http_status": config.youtu_http_status,
        "max_body_bytes": config.max_body_bytes,
        "body_timeout_s": config.body_timeout_s,
        "full_faces": config.full_faces,
        "download_timeout_s": config.download_timeout_s,
        "download_max_bytes": config.download_max_bytes,
        "url_cache_ttl_s": config.url_cache_ttl_s,
        "detect_cache_entries": config.detect_cache_entries,
        "images_dir": config.images_dir,
        "iai_shared_gallery": config.iai_shared_gallery,
        "engine": config.engine,
        "engine_workers": config.engine_workers,
    }


class EmulatorProcess(ServerProcess):
    """``python -m worker.emulator`` in a subprocess; same admin helpers as :class:`EmulatorHandle`, over HTTP."""

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        with opener.open(request, timeout=10) as response:
            return orjson.loads(response.read())

    def admin(self, faults: dict[str, Any] | None = None) -> dict[str, Any]:
        if faults is None:
            return self._admin("GET", "/__admin/faults")  # type: ignore[no-any-return]
        return self._admin("POST", "/__admin/faults", faults)  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self._admin("GET", "/__admin/stats")  # type: ignore[no-any-return]

    def reset(self, *, stats: bool = True, faults: bool = True, gallery: bool = False, caches: bool = True) -> None:
        self._admin("POST", "/__admin/reset", {"stats": stats, "faults": faults, "gallery": gallery, "caches": caches})


def spawn_process(*, timeout_s: float = 30.0, **options: Any) -> EmulatorProcess:
    """Start ``python -m worker.emulator`` with these options; returns once it listens (``timeout_s``)."""
    config = EmulatorConfig.from_options(**options)
    args = ["-m", "worker.emulator", "--config", orjson.dumps(config_to_options(config)).decode()]
    return EmulatorProcess(args, banner=BANNER, timeout_s=timeout_s)
