"""Long faults on the in-memory Kafka and virtual time: no wedge, no hammering, no leak, fair progress.

Each test drives the real pipeline through a fault that lasts (tests/support/contract.py) and asserts what a user
relies on once it clears. Virtual time makes them exact: "within breaker_open_s + 3 s" is measured on the
pipeline's own clock, whatever the machine is doing.
"""

from __future__ import annotations

import pytest

from tests.support.contract import IN, OK, build, err


def _every_partition_progresses(h, partitions: range, before: dict[int, int]) -> bool:  # type: ignore[no-untyped-def]
    now = h.outputs_by_partition()
    return all(now.get(p, 0) > before.get(p, 0) for p in partitions)


@pytest.mark.parametrize("api_back", ["before", "after"], ids=["api-back-before-reassign", "api-back-after"])
@pytest.mark.parametrize("cooperative", [True, False], ids=["cooperative-sticky", "eager"])
def test_a_rebalance_during_an_outage_does_not_wedge_the_worker(cooperative: bool, api_back: str) -> None:
    h = build(partitions=4, max_in_flight=8, cooperative=cooperative, breaker_open_s=5.0)
    h.publish(40)
    h.assign(0, 1, 2, 3)
    h.run_until(lambda: len(h.results()) == 40, within_s=30)
    h.api.down(err("http_503", 503))
    h.publish(400)
    h.run_until(lambda: h.breaker.is_open and bool(h.consumer.paused), within_s=60)
    h.run(20)  # the outage goes on: events are held, partitions paused
    assert h.pipeline.stats.dead_letters == {}  # an outage is not the events' fault
    # A rebalance cancels every held event: nothing is left in flight to probe the API.
    h.revoke(0, 1, 2, 3)
    h.run(1)
    assert h.pipeline._dispatch.in_flight == 0
    before = h.outputs_by_partition()
    if api_back == "before":
        h.api.up()
        h.run(10)  # recovers with nothing assigned; librdkafka still remembers the partitions as paused
    h.assign(0, 1, 2, 3)
    h.api.up()
    took = h.run_until(lambda: _every_partition_progresses(h, range(4), before), within_s=5.0 + 3)
    assert took <= 5.0 + 3
    h.run_until(lambda: len(h.results()) == 440, within_s=120)
    h.run(1)
    assert [h.committed(p) for p in range(4)] == [h.broker.end_offset((IN, p)) for p in range(4)]


@pytest.mark.parametrize("quiet_s", [0, 300], ids=["right-after", "five-minutes-later"])
def test_a_poison_event_is_dead_lettered_even_after_one_off_errors(quiet_s: float) -> None:
    h = build(partitions=1, max_in_flight=4, max_attempts=3)
    h.assign(0)
    # Two one-off transient errors of two different events: too few calls to call it an outage, and
    # (five minutes later) too old to say anything about now.
    flaky = {"http://img.test/0.jpg", "http://img.test/1.jpg"}

    def answer(url: str):  # type: ignore[no-untyped-def]
        if url in flaky:
            flaky.discard(url)
            return err(213)
        if url.endswith("poison.jpg"):
            return err(213)  # fails every time, alone
        return OK

    h.api.answer = answer
    h.publish(2)
    h.run_until(lambda: len(h.results()) == 2, within_s=30)
    h.run(quiet_s)
    h.publish(1, url="http://img.test/poison.jpg")
    h.run_until(lambda: len(h.dead_letters()) == 1, within_s=120)
    [(code, _)] = h.dead_letters()
    assert code == "213" and not h.breaker.is_open


def test_while_every_call_is_refused_the_whole_worker_makes_a_few_calls_per_second() -> None:
    h = build(partitions=2, max_in_flight=64, rate_limit_qps=0.0)
    h.api.quota = 0.0  # quota exhausted from the very first call
    h.publish(2000)
    h.assign(0, 1)
    h.run(10)  # settle into the refusal
    start = h.clock.now()
    h.run(20)
    refused = h.api.identify_calls(since=start)
    assert len(refused) / 20 <= 3.0, f"{len(refused) / 20:.1f} calls/s while every call is refused"
    assert h.pipeline.stats.dead_letters == {}  # a rate limit is never the event's fault
    # The quota comes back: the worker is at it within seconds, not minutes.
    h.api.quota = 50.0
    back = h.clock.now()
    h.run(15)
    # From 5 s after its return on, the quota is used (AIMD around it: ≈ 95 % on average, dips after a cut).
    late = [c for c in h.api.identify_calls(since=back + 5) if c.outcome == "ok"]
    assert len(late) / 10 >= 0.85 * 50, f"{len(late) / 10:.1f} successful calls/s 5–15 s after the quota came back"


def test_every_assigned_partition_gets_a_share_of_the_window() -> None:
    # librdkafka hands over what one fetch brought, partition after partition: 1,000 of partition 0 first.
    h = build(partitions=2, max_in_flight=8, fetch_chunk=1000)
    h.publish(1000, partition=0)
    h.publish(1000, partition=1)
    h.assign(0, 1)
    took = h.run_until(lambda: len(h.outputs_by_partition()) == 2, within_s=10)
    assert took <= 5 + 1.5  # the starved partition gets a look within STARVE_S (5 s) or so
    h.run_until(lambda: len(h.results()) >= 1500, within_s=120)
    counts = h.outputs_by_partition()
    assert min(counts.values()) >= 0.3 * sum(counts.values()), counts


def test_structures_stay_bounded_through_a_long_steady_run() -> None:
    h = build(partitions=2, max_in_flight=8)
    h.assign(0, 1)
    sizes = []
    for _ in range(10):  # ten minutes at 20 events/s
        h.publish(1200)
        h.run(60)
        sizes.append(h.pipeline.structure_sizes())
    assert len(h.results()) == 12_000
    for name in sizes[0]:
        assert sizes[-1][name] <= max(64, 2 * max(s[name] for s in sizes[:2])), (name, [s[name] for s in sizes])
