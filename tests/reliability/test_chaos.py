"""Chaos: three worker processes, 20,000 events, 5% transient API faults, five SIGKILLs with restarts.

What must hold (README "Commit contract", "Delivery is therefore at-least-once"):

* every event id gets at least one output; a dead letter with a transient code only when its retries
  were exhausted (none is expected at 5%: five attempts in a row fail with p ≈ 3e-7);
* duplicates stay within the killed workers' uncommitted windows, each 2 × max(4 × max_in_flight, 64) +
  max_in_flight (the bound the worker keeps on consumed-but-unconfirmed events), plus the events of revoked
  partitions still in a call after revoke_timeout_s (at most max_in_flight per kill);
* nothing is committed without an output: for the group's committed positions, read at each kill and at
  the end, every input offset below the position has an output naming it (source / original coordinates)
  that was written before the positions were read.

Waits follow progress, not the clock: a busy machine makes the run slower, and only a stall (no new output
for STALL_S) fails it, with what each worker reports then (/readyz and its gauges), so a wedge is told apart
from load.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.pipeline import settings_env, validate_all
from tests.support.reliability import (
    TRANSIENT_CODES,
    Record,
    enroll,
    event_value,
    image_urls,
    produce_records,
    uncovered_commits,
)
from worker.dev.harness.env import setting_env
from worker.dev.harness.loopback import free_port
from worker.dev.harness.outputs import OutputReader
from worker.dev.harness.positions import committed_positions
from worker.dev.harness.processes import WorkerProcess
from worker.dev.harness.topics import Topics
from worker.emulator import EmulatorProcess, spawn_process

pytestmark = [pytest.mark.broker, pytest.mark.heavy, pytest.mark.timeout(1800)]

EVENTS = 20_000
IMAGES = 36
WORKERS = 3
KILLS = 5
SEED = 20261126
MAX_IN_FLIGHT = 32
COMMIT_INTERVAL_S = 0.2
MAX_ATTEMPTS = 5
INPUT_PARTITIONS = 8
STALL_S = 120  # no new output for this long is a wedge, whatever the machine's load
TIMEOUT_S = 1500  # a bound on each wait all the same, below the test's own timeout
GAUGES = ("mdw_in_flight", "mdw_paused", "mdw_breaker_state", "mdw_partitions_assigned", "mdw_dlq_guard_tripped")
# 5% transient faults in all, a few ms of latency on every call.
FAULTS = {
    "latency": {"kind": "uniform", "min_ms": 2, "max_ms": 8},
    "error_rates": {"213": 0.03, "15": 0.01},
    "http_error_rates": {"503": 0.01},
    "seed": SEED,
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProcess, list[str]]]:
    images = tmp_path_factory.mktemp("chaos-images")
    # Its own process: the emulator must not share the test's interpreter lock with the output collector.
    with spawn_process(images_dir=str(images), faults=FAULTS, url_cache_ttl_s=600) as proc:
        sc = enroll(proc.base_url, images, ["alice", "bob", "carol", "dave"])
        yield proc, image_urls(sc, IMAGES, seed=7000)


def test_chaos_five_sigkills_lose_nothing_and_commit_only_outputs(
    kafka_bootstrap: str,
    emulator: tuple[EmulatorProcess, list[str]],
    make_topics: Callable[..., Topics],
    tmp_path: Path,
) -> None:
    proc, urls = emulator
    rng = random.Random(SEED)
    topics = make_topics(INPUT_PARTITIONS, results=4, dlq=2)
    ids = [f"chaos-{i:05d}" for i in range(EVENTS)]
    produce_records(
        kafka_bootstrap,
        topics.input,
        [Record(event_value(ids[i], urls[i % IMAGES], metadata={"i": i}), f"k{i}".encode()) for i in range(EVENTS)],
    )
    env = settings_env(
        kafka_bootstrap,
        proc.base_url,
        topics,
        max_in_flight=MAX_IN_FLIGHT,
        commit_interval_s=COMMIT_INTERVAL_S,
        max_attempts=MAX_ATTEMPTS,
    )
    # Kill points: seeded fractions of the run (progress, not wall time, so a slow machine kills at the same stage).
    kill_at = sorted(int(EVENTS * f) for f in rng.sample([x / 100 for x in range(10, 80, 3)], KILLS))
    spawned = 0

    def spawn() -> WorkerProcess:
        nonlocal spawned
        spawned += 1
        metrics = setting_env({"metrics_host": "127.0.0.1", "metrics_port": free_port()})
        return WorkerProcess({**env, **metrics}, log_path=tmp_path / f"worker-{spawned}.log")

    def diagnose() -> str:
        return "; ".join(_report(w) for w in workers)

    workers = [spawn() for _ in range(WORKERS)]
    all_workers = list(workers)
    kills: list[dict[str, object]] = []
    snapshots: list[tuple[dict[int, int], int]] = []
    stats_before = proc.stats()
    collector = OutputReader(kafka_bootstrap, topics)
    started = time.monotonic()
    try:
        for threshold in kill_at:
            collector.wait_for(
                lambda c, n=threshold: len(c.event_ids()) >= n,
                TIMEOUT_S,
                f"{threshold} events done",
                stall_s=STALL_S,
                diagnose=diagnose,
            )
            per_pid = Counter(o.instance.rsplit("/", 1)[-1] for o in collector.outputs)
            busy = [i for i, w in enumerate(workers) if per_pid[str(w.pid)] > 0] or list(range(WORKERS))
            slot = rng.choice(busy)
            victim = workers[slot]
            victim.kill()
            positions = committed_positions(kafka_bootstrap, topics.group, topics.input)
            snapshots.append((positions, int(time.time() * 1000) + 1))
            kills.append(
                {
                    "at_events": len(collector.event_ids()),
                    "pid": victim.pid,
                    "outputs_by_victim": per_pid[str(victim.pid)],
                }
            )
            workers[slot] = spawn()
            all_workers.append(workers[slot])
        collector.wait_for(
            lambda c: len(c.event_ids()) >= EVENTS,
            TIMEOUT_S,
            "every event to have an output",
            stall_s=STALL_S,
            diagnose=diagnose,
        )
        elapsed = time.monotonic() - started
        exits = [w.terminate(60) for w in workers]
    finally:
        for w in all_workers:
            w.stop()
    collector.drain()
    final_positions = committed_positions(kafka_bootstrap, topics.group, topics.input)
    collector.close()
    stats = proc.stats()
    assert exits == [0] * WORKERS, [w.output()[-1500:] for w in workers]

    outputs = collector.outputs
    counts = Counter(o.event_id for o in outputs)
    missing = set(ids) - set(counts)
    assert not missing, f"lost: {sorted(missing)[:10]}"
    assert set(counts) == set(ids)

    dead = collector.dead_letters()
    for o in dead:
        err = o.doc["error"]
        assert o.code in TRANSIENT_CODES, f"{o.event_id}: unexpected dead letter {o.code}"
        assert err["class"] == "transient" and err["disposition"] == "retries_exhausted", err
        assert err["attempts"] >= MAX_ATTEMPTS, err

    # Duplicates: bounded by what the killed workers had consumed without a confirmed commit, plus what a
    # rebalance revoked in the middle of a call.
    duplicates = len(outputs) - len(counts)
    throughput = EVENTS / elapsed
    window = 2 * max(4 * MAX_IN_FLIGHT, 64) + 2 * MAX_IN_FLIGHT  # held back + unconfirmed + margin; a revoke
    bound = KILLS * window

    # Nothing committed without an output, at every kill and at the end.
    for positions, read_ms in snapshots:
        assert uncovered_commits(positions, outputs, written_before_ms=read_ms) == [], positions
    assert uncovered_commits(final_positions, outputs) == []
    assert sum(final_positions.values()) == EVENTS, final_positions

    sample = dead + outputs[:: max(1, len(outputs) // 300)]
    validate_all(sample)

    faults = {k: stats["faults"].get(k, 0) - stats_before["faults"].get(k, 0) for k in stats["faults"]}
    codes = stats["codes"].get("/face/multidentify", {})
    calls = stats["requests"].get("/face/multidentify", 0) - stats_before["requests"].get("/face/multidentify", 0)
    print(
        f"\nchaos: {EVENTS} events, {WORKERS} workers, {KILLS} SIGKILLs at {[k['at_events'] for k in kills]} events "
        f"(victims {[k['pid'] for k in kills]}), {elapsed:.1f}s ({throughput:.0f} events/s)"
        f"\n  API calls {calls}; faults injected {faults}; answers {dict(codes)}"
        f"\n  outputs {len(outputs)}: results {len(outputs) - len(dead)}, dead letters {len(dead)} "
        f"{dict(Counter(o.code for o in dead))}"
        f"\n  duplicates {duplicates} (bound {bound} = {KILLS} × (2 × max(4×{MAX_IN_FLIGHT}, 64) + 2×{MAX_IN_FLIGHT}))"
        ", lost 0"
        f"\n  committed {sum(final_positions.values())} offsets, each with an output; "
        f"{len(snapshots)} mid-run commit snapshots checked"
    )
    # Attribute each duplicate to the killed worker that wrote one of its copies (else: a rebalance).
    victims = {str(k["pid"]) for k in kills}
    writers: dict[str | None, set[str]] = {}
    for o in outputs:
        if counts[o.event_id] > 1:
            writers.setdefault(o.event_id, set()).add(o.instance.rsplit("/", 1)[-1])
    per_victim = Counter(next(iter(sorted(w & victims)), "other") for w in writers.values())
    print(f"  duplicates by killed worker pid: {dict(per_victim)} (window per kill {window})")
    for o in dead:
        print(f"  dead letter {o.event_id}: {o.code} after {o.doc['error']['attempts']} attempts")
    assert duplicates <= bound


def _report(worker: WorkerProcess) -> str:
    """One worker's view of itself: /readyz and the gauges that tell a wedge (paused, breaker, nothing in flight)."""
    status, body = worker.readyz()
    values = [line for line in worker.metrics().splitlines() if line.startswith(GAUGES)]
    return f"pid {worker.pid}: readyz {status} {body.decode()[:80]!r} {' '.join(values)}"
