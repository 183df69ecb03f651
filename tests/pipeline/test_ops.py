"""/metrics, /healthz and /readyz during a real run: counters move by the expected amounts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kafkatest import produce_all, wait_until
from tests.support.pipeline import enrolled_emulator, settings_env
from worker import config
from worker.dev.harness.topics import Topics
from worker.ops import HealthState, OpsServer, PrometheusObserver
from worker.runtime.app import build_pipeline
from worker.runtime.observer import Observer

pytestmark = pytest.mark.broker


class _Stall(Observer):
    """Blocks the poll loop inside a hook once ``stall`` is set, until ``release``: a loop stuck in user code."""

    def __init__(self) -> None:
        self.stall = threading.Event()
        self.release = threading.Event()

    def loop_turned(self, now: float) -> None:
        if self.stall.is_set():
            self.release.wait(30)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_health_and_readiness_follow_a_real_run(
    kafka_bootstrap: str, make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    with enrolled_emulator(images, ["alice", "bob"]) as (emulator, sc):
        sc.add_known(10, stranger_every=0, seed=9000)
        sc.add_no_face(3, seed=9100)
        sc.add_malformed()
        topics = make_topics(2, results=1, dlq=1)
        settings = config.load(
            environ=settings_env(kafka_bootstrap, emulator.base_url, topics, liveness_timeout_s=1),
            require_credentials=True,
        )
        health = HealthState(liveness_timeout_s=1.0)
        metrics = PrometheusObserver(health=health)
        stall = _Stall()
        pipeline = build_pipeline(settings, observers=[metrics, health, stall])
        server = OpsServer(metrics.registry, health).start()
        base = f"http://127.0.0.1:{server.port}"
        runner = threading.Thread(target=pipeline.run, daemon=True)
        try:
            assert requests.get(base + "/readyz", timeout=5).status_code == 503  # nothing assigned yet
            runner.start()
            wait_until(
                lambda: requests.get(base + "/readyz", timeout=5).status_code == 200,
                timeout=30,
                what="ready once partitions are assigned",
            )
            produce_all(kafka_bootstrap, topics.input, [(e.key, e.value) for e in sc.events])
            wait_until(
                lambda: pipeline.stats.results + sum(pipeline.stats.dead_letters.values()) >= len(sc.events),
                timeout=60,
                what="every output",
            )
            samples = _samples(requests.get(base + "/metrics", timeout=5).text)
            assert samples[("mdw_events_consumed_total", (("topic", topics.input),))] == len(sc.events)
            assert samples[("mdw_results_total", ())] == 10
            assert samples[("mdw_dead_letters_total", (("code", "-1101"),))] == 3
            assert samples[("mdw_dead_letters_total", (("code", "invalid_json"),))] == 1
            assert samples[("mdw_api_calls_total", (("outcome", "ok"),))] == 10
            assert samples[("mdw_api_calls_total", (("outcome", "-1101"),))] == 3
            assert samples[("mdw_faces_identified_total", ())] >= 10
            # Live while the loop turns; a loaded machine may hold the loop's thread past the 1 s liveness
            # timeout now and then, so this is waited for, not sampled once.
            wait_until(
                lambda: requests.get(base + "/healthz", timeout=5).status_code == 200,
                timeout=10,
                what="/healthz while the loop turns",
            )

            stall.stall.set()  # the loop now hangs inside a hook
            wait_until(
                lambda: requests.get(base + "/healthz", timeout=5).status_code == 503,
                timeout=10,
                what="/healthz to report the stalled loop",
            )
            stall.stall.clear()
            stall.release.set()
            wait_until(
                lambda: requests.get(base + "/healthz", timeout=5).status_code == 200,
                timeout=10,
                what="/healthz to recover",
            )

            pipeline.request_stop()
            runner.join(30)
            assert not runner.is_alive()
            assert requests.get(base + "/readyz", timeout=5).status_code == 503  # stopped: not ready
        finally:
            pipeline.request_stop()
            server.stop()


def test_dead_letters_are_logged_as_json_with_event_coordinates(
    kafka_bootstrap: str, make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    import io
    import logging

    import orjson

    from worker.ops import configure_logging

    topics = make_topics(1, results=1, dlq=1)
    stream = io.StringIO()
    logger = logging.getLogger("worker")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    configure_logging("INFO", "json", secrets=["topsecret-key-value"], stream=stream)
    try:
        produce_all(kafka_bootstrap, topics.input, [(b"k", b"not json at all")])
        env = settings_env(kafka_bootstrap, "http://127.0.0.1:9", topics)
        env["MDW_SECRET_KEY"] = "topsecret-key-value"
        settings = config.load(environ=env, require_credentials=True)
        pipeline = build_pipeline(settings)
        runner = threading.Thread(target=pipeline.run, daemon=True)
        runner.start()
        wait_until(lambda: sum(pipeline.stats.dead_letters.values()) == 1, timeout=30, what="the dead letter")
        pipeline.request_stop()
        runner.join(30)
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    dead = [line for line in lines if line.get("code") == "invalid_json"]
    assert dead, lines
    assert dead[0]["topic"] == topics.input and dead[0]["partition"] == 0 and dead[0]["offset"] == 0
    assert dead[0]["level"] == "INFO" and "ts" in dead[0]
    assert "topsecret-key-value" not in stream.getvalue()
