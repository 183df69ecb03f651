"""Everything that shapes one emulator instance, as one frozen dataclass.

:meth:`EmulatorConfig.from_options` is what ``start_in_thread(**options)`` and ``spawn_process(**options)``
take: the field names below, plus the conveniences ``latency_ms`` (a fixed latency), ``faults`` as a dict
or JSON string, ``accounts`` as Account / (appid, secret_id, secret_key) / "APPID:ID:KEY" items, and
``limits`` as a dict of :class:`worker.emulator.gallery.Limits` fields. ``engine`` names the face engine
(``synthetic``, the default, or ``dlib``, the real one: the ``faces`` extra); ``engine_workers`` sizes the dlib
engine's process pool (0 = one process per core).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.emulator.accounts import DEV_ACCOUNT, Account, as_account
from worker.emulator.engine import ENGINES
from worker.emulator.faults import FaultConfig
from worker.emulator.gallery import Limits

MAX_BODY_BYTES = 1_572_864  # 1.5 MB, the documented request limit


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    accounts: tuple[Account, ...] = (DEV_ACCOUNT,)
    db: str = ":memory:"  # SQLite file (or ":memory:") holding the gallery
    faults: FaultConfig = field(default_factory=FaultConfig)
    limits: Limits = field(default_factory=Limits)
    youtu_http_status: bool = False  # answer code 23 with HTTP 413 and code 15 with HTTP 429 (else 200)
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout_s: float = 30.0  # a request body still incomplete after this is answered 3 (bad request)
    full_faces: int = 5  # multidentify: faces with candidates; the rest get face_rect only
    download_timeout_s: float = 10.0
    download_max_bytes: int = 5 * 1024 * 1024
    url_cache_ttl_s: float = 0.0  # >0: reuse a downloaded url's bytes for this long (load tests)
    detect_cache_entries: int = 4096
    images_dir: str | None = None  # also serve this directory under /images/
    iai_shared_gallery: bool = False  # IAI works on v1's gallery of the same AppID (else its own, as at Tencent)
    engine: str = "synthetic"  # the face engine: one of worker.emulator.engine.ENGINES
    engine_workers: int = 0  # processes of an engine that holds the GIL (dlib); 0 = one per core

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.engine_workers < 0:
            raise ValueError(f"engine_workers must be ≥ 0 (0 = one per core), not {self.engine_workers}")

    @classmethod
    def from_options(cls, **options: Any) -> EmulatorConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(options) - names - {"latency_ms"}
        if unknown:
            raise TypeError(f"unknown emulator options: {sorted(unknown)}")
        latency_ms = options.pop("latency_ms", None)
        faults = options.pop("faults", None)
        if isinstance(faults, str | bytes):
            faults = orjson.loads(faults)
        if isinstance(faults, dict) or faults is None:
            faults = dict(faults or {})
            if latency_ms is not None:
                faults["latency_ms"] = latency_ms
            faults = FaultConfig.from_json(faults)
        elif latency_ms is not None:
            faults = FaultConfig.from_json({**faults.to_json(), "latency": None, "latency_ms": latency_ms})
        options["faults"] = faults
        if "accounts" in options:
            options["accounts"] = tuple(as_account(a) for a in options["accounts"])
            if not options["accounts"]:
                raise ValueError("at least one account is needed")
        if isinstance(options.get("limits"), dict):
            options["limits"] = Limits(**options["limits"])
        if options.get("db") is not None:
            options["db"] = str(options["db"])
        if options.get("images_dir") is not None:
            options["images_dir"] = str(options["images_dir"])
        return cls(**options)
