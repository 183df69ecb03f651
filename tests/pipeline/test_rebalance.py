"""Rebalance and shutdown contracts: revoke commits what is done, SIGTERM drains, key ordering holds."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.kafkatest import produce_all, wait_until
from tests.support.pipeline import enrolled_emulator, settings_env, thread_worker
from worker.dev.harness.outputs import OutputReader, read_outputs
from worker.dev.harness.processes import WorkerProcess
from worker.dev.harness.topics import Topics
from worker.dev.scenario import Scenario
from worker.emulator import EmulatorHandle

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorHandle, Scenario]]:
    images = tmp_path_factory.mktemp("rebalance-images")
    with enrolled_emulator(images, ["alice", "bob"], latency_ms=80) as (handle, sc):
        sc.add_known(10, stranger_every=0, seed=7000)
        yield handle, sc


def _events(sc: Scenario, n: int, keys: int | None = None) -> list[tuple[bytes, bytes]]:
    """``n`` events reusing the scenario's images; ids ``ev-00000``…; key per event or one of ``keys`` keys."""
    out = []
    for i in range(n):
        template = sc.events[i % len(sc.events)]
        value = template.value.replace(template.event_id.encode(), f"ev-{i:05d}".encode())
        key = f"key-{i % keys}" if keys else f"k{i}"
        out.append((key.encode(), value))
    return out


def _result_ids(bootstrap: str, topics: Topics) -> collections.Counter[str | None]:
    """Results per event id, of everything in the results topic now."""
    return collections.Counter(o.event_id for o in read_outputs(bootstrap, topics) if o.kind == "result")


def test_a_joining_worker_takes_partitions_without_duplicates(
    kafka_bootstrap: str, stack: tuple[EmulatorHandle, Scenario], make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    handle, sc = stack
    topics = make_topics(4, results=2, dlq=1)
    produce_all(kafka_bootstrap, topics.input, _events(sc, 600))
    env = settings_env(kafka_bootstrap, handle.base_url, topics, max_in_flight=16)
    with thread_worker(env) as first, OutputReader(kafka_bootstrap, topics) as progress:
        wait_until(lambda: first.pipeline.stats.results >= 100, timeout=60, what="the first worker to be busy")
        second = WorkerProcess(env, log_path=tmp_path / "second.log")
        try:
            # The cooperative rebalance moves partitions while events are in flight on them.
            progress.wait_for(lambda r: len(r.results()) >= 600, 90, "every event to have a result")
            assert second.terminate(60) == 0
        finally:
            second.stop()
        assert first.stop() == 0
    counts = _result_ids(kafka_bootstrap, topics)
    assert set(counts) == {f"ev-{i:05d}" for i in range(600)}
    # Revoke waited for the in-flight events and committed them: the new owner started after them.
    assert sum(counts.values()) == 600, [k for k, n in counts.items() if n > 1][:10]


def test_sigterm_drains_in_flight_events_and_commits(
    kafka_bootstrap: str, stack: tuple[EmulatorHandle, Scenario], make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    handle, sc = stack
    topics = make_topics(2, results=2, dlq=1)
    produce_all(kafka_bootstrap, topics.input, _events(sc, 2000))
    env = settings_env(kafka_bootstrap, handle.base_url, topics, max_in_flight=32)
    worker = WorkerProcess(env, log_path=tmp_path / "first.log")
    try:
        with OutputReader(kafka_bootstrap, topics) as progress:
            progress.wait_for(lambda r: len(r.results()) >= 50, 60, "results to flow")
        assert worker.terminate(60) == 0, worker.output()[-2000:]
    finally:
        worker.stop()
    done_before_restart = sum(_result_ids(kafka_bootstrap, topics).values())
    assert done_before_restart < 2000, "stopped too late to test the drain"
    restarted = WorkerProcess(env, log_path=tmp_path / "second.log")
    try:
        with OutputReader(kafka_bootstrap, topics) as progress:
            progress.wait_for(lambda r: len(r.results()) >= 2000, 90, "the restarted worker to finish")
        assert restarted.terminate(60) == 0
    finally:
        restarted.stop()
    counts = _result_ids(kafka_bootstrap, topics)
    assert set(counts) == {f"ev-{i:05d}" for i in range(2000)}
    # Everything the first worker wrote was committed during its drain: nothing is processed twice.
    assert sum(counts.values()) == 2000


def test_key_ordering_keeps_each_key_in_order(
    kafka_bootstrap: str, stack: tuple[EmulatorHandle, Scenario], make_topics: Callable[..., Topics]
) -> None:
    handle, sc = stack
    topics = make_topics(2, results=2, dlq=1)
    handle.admin({"latency": {"kind": "uniform", "min_ms": 5, "max_ms": 120}, "seed": 11})
    try:
        produce_all(kafka_bootstrap, topics.input, _events(sc, 200, keys=8))
        env = settings_env(kafka_bootstrap, handle.base_url, topics, max_in_flight=32, ordering="key")
        with thread_worker(env) as w:
            wait_until(lambda: w.pipeline.stats.results >= 200, timeout=90, what="all results")
            assert w.stop() == 0
    finally:
        handle.admin({"latency": {"kind": "fixed", "ms": 80}})
    per_key: dict[bytes | None, list[int]] = collections.defaultdict(list)
    for o in read_outputs(kafka_bootstrap, topics):
        assert o.kind == "result", o
        per_key[o.key].append(int((o.event_id or "")[3:]))
    assert len(per_key) == 8
    for key, ids in per_key.items():
        assert ids == sorted(ids), f"{key!r} out of order: {ids}"
