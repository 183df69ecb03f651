"""Helpers for end-to-end tests: a worker's settings for tests, workers in threads, an enrolled emulator.

Worker processes, topics, outputs read back and committed positions come from the shared harness
(``worker.dev.harness``); what is here is what only tests want: settings that make a worker quick to
join and to retry, a pipeline running in a thread of the test process (its stats visible), schema checks.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from worker import config, schemas
from worker.config import ApiName
from worker.dev.harness.env import SettingValue, worker_env
from worker.dev.harness.outputs import Output
from worker.dev.harness.topics import Topics
from worker.dev.scenario import Scenario
from worker.emulator import EmulatorHandle, start_in_thread
from worker.runtime.app import build_pipeline
from worker.runtime.pipeline import Pipeline

# Tansu finishes a group join after about session.timeout.ms / 2 (docs/api-notes.md#broker-notes): a short
# session; quick commits and retries; the metrics server on a port of the OS's choosing.
TEST_SETTINGS: dict[str, SettingValue] = {
    "session_timeout_ms": 2000,
    "metrics_port": 0,
    "commit_interval_s": 0.2,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.2,
    "log_format": "text",
}


def settings_env(
    bootstrap: str, api_url: str, topics: Topics, *, api: ApiName = "v1", **overrides: SettingValue
) -> dict[str, str]:
    """The ``MDW_*`` environment of a test worker calling ``api`` at ``api_url`` and searching group ``demo``;
    ``overrides`` by setting name."""
    return worker_env(bootstrap, api_url, topics, group_ids="demo", api=api, settings={**TEST_SETTINGS, **overrides})


class ThreadWorker:
    """A pipeline running in a thread of the test process (fast to start, stats visible)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.settings = config.load(environ=env, require_credentials=True)
        self.pipeline: Pipeline = build_pipeline(self.settings)
        self.exit_code: int | None = None
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)

    def _run(self) -> None:
        self.exit_code = self.pipeline.run()

    def start(self) -> ThreadWorker:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 60) -> int | None:
        self.pipeline.request_stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "pipeline did not stop"
        return self.exit_code

    def join(self, timeout: float) -> int | None:
        self._thread.join(timeout)
        return self.exit_code


@contextlib.contextmanager
def thread_worker(env: dict[str, str]) -> Iterator[ThreadWorker]:
    w = ThreadWorker(env).start()
    try:
        yield w
    finally:
        if w.exit_code is None:
            w.stop()


def validate_all(outputs: Iterable[Output]) -> None:
    """Every record the worker wrote is valid against its schema."""
    for o in outputs:
        schemas.validator("result" if o.kind == "result" else "deadletter").validate(o.doc)


def by_event(outputs: Iterable[Output]) -> dict[str, list[str]]:
    """event_id (or the base64 original value for events without one) → the codes of its outputs."""
    out: dict[str, list[str]] = {}
    for o in outputs:
        ident = o.event_id or o.doc["original"]["value_base64"] or "<tombstone>"
        out.setdefault(ident, []).append(o.code)
    return out


@contextlib.contextmanager
def enrolled_emulator(
    images_dir: Path, people: list[str], *, api: ApiName = "v1", **options: Any
) -> Iterator[tuple[EmulatorHandle, Scenario]]:
    """The emulator in a thread, serving ``images_dir`` under /images/, with ``people`` enrolled in group ``demo``
    through ``api`` (IAI's data are apart from v1's: a worker on IAI finds only those enrolled through IAI).

    Yields the emulator handle and a Scenario of ``api`` whose images go to ``images_dir``.
    """
    with start_in_thread(images_dir=str(images_dir), **options) as handle:
        sc = Scenario(images_dir, handle.base_url + "/images/", api=api)
        sc.enroll_at(handle.base_url, people)
        yield handle, sc
