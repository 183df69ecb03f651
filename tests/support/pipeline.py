"""Helpers for end-to-end tests: worker settings for a stack, workers in threads or processes, outputs read back."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from tests.support.kafkatest import read_all
from worker import config, schemas
from worker.api.client import ClientOptions, MultidentifyClient
from worker.dev.scenario import Scenario
from worker.emulator import DEV_ACCOUNT, start_in_thread
from worker.runtime.app import build_pipeline
from worker.runtime.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Topics:
    input: str
    results: str
    dlq: str
    group: str = field(default_factory=lambda: f"workers-{uuid.uuid4().hex[:8]}")


def settings_env(bootstrap: str, api_url: str, topics: Topics, **overrides: Any) -> dict[str, str]:
    env = {
        "MDW_BOOTSTRAP_SERVERS": bootstrap,
        "MDW_API_BASE_URL": api_url,
        "MDW_APPID": DEV_ACCOUNT.appid,
        "MDW_SECRET_ID": DEV_ACCOUNT.secret_id,
        "MDW_SECRET_KEY": DEV_ACCOUNT.secret_key,
        "MDW_GROUP_IDS": "demo",
        "MDW_INPUT_TOPIC": topics.input,
        "MDW_RESULTS_TOPIC": topics.results,
        "MDW_DLQ_TOPIC": topics.dlq,
        "MDW_GROUP_ID": topics.group,
        "MDW_SESSION_TIMEOUT_MS": "2000",
        "MDW_METRICS_PORT": "0",
        "MDW_COMMIT_INTERVAL_S": "0.2",
        "MDW_BACKOFF_INITIAL_S": "0.05",
        "MDW_BACKOFF_MAX_S": "0.2",
        "MDW_LOG_FORMAT": "text",
    }
    env.update({f"MDW_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


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


class ProcessWorker:
    """``python -m worker run`` as a child process, stopped by its own PID."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        base = {k: v for k, v in os.environ.items() if not k.startswith("MDW_")}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env={**base, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        finally:
            self.stop()

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


@dataclass
class Outputs:
    results: list[dict[str, Any]]
    dead_letters: list[tuple[bytes, dict[str, Any], list[tuple[str, bytes | None]]]]

    def by_event(self) -> dict[str, list[str]]:
        """event_id (or the base64 original value for events without one) → output kinds."""
        out: dict[str, list[str]] = {}
        for r in self.results:
            out.setdefault(r["event_id"], []).append("result")
        for key, env, _ in self.dead_letters:
            ident = env["event_id"] or env["original"]["value_base64"] or "<tombstone>"
            out.setdefault(ident, []).append(key.decode())
        return out


def read_outputs(bootstrap: str, topics: Topics, idle: float = 1.0) -> Outputs:
    results = [orjson.loads(m.value()) for m in read_all(bootstrap, topics.results, idle=idle)]
    dlq = [
        (m.key(), orjson.loads(m.value()), list(m.headers() or [])) for m in read_all(bootstrap, topics.dlq, idle=idle)
    ]
    return Outputs(results, dlq)


def validate_all(outputs: Outputs) -> None:
    """Every record the worker wrote is valid against its schema."""
    for record in outputs.results:
        schemas.validator("result").validate(record)
    for _, envelope, _ in outputs.dead_letters:
        schemas.validator("deadletter").validate(envelope)


def original_b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


@contextlib.contextmanager
def enrolled_emulator(images_dir: Path, people: list[str], **options: Any) -> Iterator[tuple[Any, Scenario]]:
    """The emulator in a thread, serving ``images_dir`` under /images/, with ``people`` enrolled in group ``demo``.

    Yields the emulator handle and a Scenario whose images go to ``images_dir``.
    """
    handle = start_in_thread(images_dir=str(images_dir), **options)
    try:
        sc = Scenario(images_dir, handle.base_url + "/images/")
        with MultidentifyClient(
            ClientOptions(
                appid=DEV_ACCOUNT.appid,
                secret_id=DEV_ACCOUNT.secret_id,
                secret_key=DEV_ACCOUNT.secret_key,
                base_url=handle.base_url,
            )
        ) as client:
            sc.enroll(client, people)
        yield handle, sc
    finally:
        handle.stop()
