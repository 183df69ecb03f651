"""Worker processes die; the group recovers; no event lacks an output; duplicates stay within the window."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.kafkatest import produce_all, wait_until
from tests.support.pipeline import enrolled_emulator, settings_env
from worker.dev.harness.outputs import OutputReader, read_outputs
from worker.dev.harness.processes import WorkerProcess
from worker.dev.harness.topics import Topics
from worker.dev.scenario import Scenario
from worker.emulator import EmulatorHandle

pytestmark = pytest.mark.broker

LATENCY_S = 0.05
MAX_IN_FLIGHT = 16
COMMIT_INTERVAL_S = 0.2


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorHandle, Scenario]]:
    images = tmp_path_factory.mktemp("failover-images")
    with enrolled_emulator(images, ["alice", "bob"], latency_ms=LATENCY_S * 1000) as stack:
        yield stack


def _uncommitted_window() -> int:
    """What one worker can have processed but not committed: rule 2 of the commit contract (pipeline.py), the
    held-back cap W = max(4 × max_in_flight, 64) plus the unconfirmed cap W + max_in_flight. (One commit
    interval of throughput was a guess: on a loaded broker commits are confirmed later, up to that cap.)"""
    window = max(4 * MAX_IN_FLIGHT, 64)
    return 2 * window + MAX_IN_FLIGHT


def test_sigkill_one_of_three_workers_loses_nothing(
    kafka_bootstrap: str,
    emulator: tuple[EmulatorHandle, Scenario],
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    handle, base = emulator
    topics = make_topics(8, results=4, dlq=2)
    sc = Scenario(base.images_dir, base.images_url, enrolled=list(base.enrolled))
    sc.add_known(40, stranger_every=0, seed=5000)
    # 40 distinct images, many events each: 1200 events, so every worker is mid-stream when one dies.
    events = [
        (f"k{i}".encode(), sc.events[i % 40].value.replace(sc.events[i % 40].event_id.encode(), f"ev-{i:05d}".encode()))
        for i in range(1200)
    ]
    produce_all(kafka_bootstrap, topics.input, events)
    env = settings_env(
        kafka_bootstrap, handle.base_url, topics, max_in_flight=MAX_IN_FLIGHT, commit_interval_s=COMMIT_INTERVAL_S
    )
    workers = [WorkerProcess(env, log_path=tmp_path / f"worker-{i}.log") for i in range(3)]
    progress = OutputReader(kafka_bootstrap, topics)
    try:

        def results_by_worker() -> collections.Counter[str]:
            """Distinct events with a result, by the pid that wrote it (duplicates after the kill do not count)."""
            progress.poll()
            seen: dict[str | None, str] = {}
            for o in progress.results():
                seen.setdefault(o.event_id, o.instance.rsplit("/", 1)[1])
            return collections.Counter(seen.values())

        # A loaded runner may start one worker long after the others, so the victim is chosen by progress:
        # the worker that has written most once the group is mid-stream, never one still joining.
        wait_until(lambda: sum(results_by_worker().values()) >= 200, timeout=60, what="the workers to be mid-stream")
        victim_pid = results_by_worker().most_common(1)[0][0]
        victim = next(w for w in workers if str(w.pid) == victim_pid)
        survivors = [w for w in workers if w is not victim]
        victim.kill()
        wait_until(
            lambda: sum(results_by_worker().values()) >= 1200, timeout=120, what="the survivors to finish every event"
        )
        exits = [w.terminate(60) for w in survivors]
    finally:
        progress.close()
        for w in workers:
            w.stop()
    assert exits == [0, 0], [w.output()[-2000:] for w in survivors]

    outputs = read_outputs(kafka_bootstrap, topics)
    results = [o for o in outputs if o.kind == "result"]
    counts = collections.Counter(o.event_id for o in results)
    by_instance = collections.Counter(o.instance.rsplit("/", 1)[1] for o in results)
    # The killed worker was really mid-stream: it had written results before it died, and events were left.
    assert by_instance[victim_pid] > 0, by_instance
    assert sum(n for pid, n in by_instance.items() if pid != victim_pid) > 0, by_instance
    expected = {f"ev-{i:05d}" for i in range(1200)}
    assert set(counts) == expected, f"lost: {sorted(expected - set(counts))[:10]}"
    duplicates = sum(n - 1 for n in counts.values())
    print(
        f"\nfailover: 1200 events, {len(results)} results by worker pid {dict(by_instance)}, {duplicates} duplicates "
        f"(bound {_uncommitted_window()} = the killed worker's uncommitted window)"
    )
    assert duplicates <= _uncommitted_window()
    assert [o for o in outputs if o.kind == "dlq"] == []
