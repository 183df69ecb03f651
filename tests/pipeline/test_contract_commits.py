"""The commit contract rule by rule, and what stops or holds the worker, on the in-memory Kafka.

Each test names the rule of worker/runtime/pipeline.py's docstring it checks and the failure that breaks it.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from tests.support.contract import DLQ, IN, OK, build, err


def test_rule_1_nothing_is_committed_before_its_output_is_acknowledged() -> None:
    h = build(partitions=1, max_in_flight=4)
    h.producer.hold_acks = True
    h.publish(20)
    h.assign(0)
    h.run(5)
    assert h.committed(0) is None and h.results() == []
    h.producer.hold_acks = False
    h.run_until(lambda: h.committed(0) == 20, within_s=5)
    assert len(h.results()) == 20


def test_rule_1_a_refused_async_commit_is_offered_again() -> None:
    h = build(partitions=1, max_in_flight=4)
    h.consumer.fail_commits(KafkaError.ILLEGAL_GENERATION, times=3)
    h.publish(10)
    h.assign(0)
    h.run_until(lambda: h.committed(0) == 10, within_s=10)


def test_rule_1_a_partition_level_commit_error_is_not_taken_for_success() -> None:
    # The overall error is None, but the broker refused each partition: nothing may count as committed.
    h = build(partitions=1, max_in_flight=4)
    h.consumer.fail_commits(KafkaError.REBALANCE_IN_PROGRESS, times=1, partition_level=True)
    h.publish(10)
    h.assign(0)
    h.run_until(lambda: len(h.results()) == 10, within_s=10)
    h.run_until(lambda: h.committed(0) == 10, within_s=10)
    assert h.pipeline._tracker.unconfirmed() == 0


def test_rule_2_the_uncommitted_window_is_bounded_when_commits_do_not_land() -> None:
    h = build(partitions=1, max_in_flight=8)
    window = max(4 * 8, 64)
    bound = 2 * window + 8  # held back + unconfirmed, plus the margin taken one record per turn while awaiting commits
    h.consumer.fail_commits(KafkaError.ILLEGAL_GENERATION, times=10**9)
    h.publish(2000)
    h.assign(0)
    h.run(30)
    # What a crash now would make the next owner redo: everything consumed since the last confirmed commit.
    assert h.pipeline.stats.consumed <= bound + 1, h.pipeline.stats.consumed
    h.consumer._failures.clear()
    h.run_until(lambda: h.committed(0) == 2000, within_s=120)


def test_rule_3_revoke_commits_synchronously_even_while_an_async_commit_is_unconfirmed() -> None:
    h = build(partitions=1, max_in_flight=4)
    h.publish(10)
    h.assign(0)
    h.run_until(lambda: len(h.results()) == 10, within_s=10)
    # The async commit of these 10 is sent, and will be refused; the revoke comes before its answer.
    h.consumer.fail_commits(KafkaError.ILLEGAL_GENERATION, times=1)
    h.pipeline._commits.maybe(h.clock.now() + 10)
    h.revoke(0)
    h.run(1)
    assert h.committed(0) == 10
    assert [sync for (_, _, pos, sync) in h.broker.commit_log if pos == 10] == [True]


def test_rule_3_revoke_retries_a_synchronous_commit_refused_by_the_rebalance() -> None:
    h = build(partitions=1, max_in_flight=4, commit_interval_s=60)
    h.publish(10)
    h.assign(0)
    h.run_until(lambda: len(h.results()) == 10, within_s=10)
    h.consumer.fail_commits(KafkaError.REBALANCE_IN_PROGRESS, times=1, sync=True)
    h.revoke(0)
    h.run(1)
    assert h.committed(0) == 10


def test_rule_3_lost_partitions_commit_nothing_and_late_completions_are_discarded() -> None:
    h = build(partitions=1, max_in_flight=4, latency_s=1.0, commit_interval_s=60)
    h.publish(4)
    h.assign(0)
    h.run(0.5)  # four calls in progress
    h.lose(0)
    h.run(3)
    assert h.committed(0) is None and h.results() == []
    assert h.pipeline.stats.discarded_late == 4


def test_an_offset_that_goes_back_restarts_the_partition_instead_of_crashing() -> None:
    h = build(partitions=1, max_in_flight=4)
    h.publish(10)
    h.assign(0)
    h.run_until(lambda: h.committed(0) == 10, within_s=10)
    h.consumer.seek_back((IN, 0), 3)  # a seek, or auto.offset.reset after log truncation
    h.publish(5)
    h.run_until(lambda: len(h.results()) == 10 + 7 + 5, within_s=10)
    h.run_until(lambda: h.committed(0) == 15, within_s=10)
    assert h.pipeline.fatal_reason is None


@pytest.mark.parametrize("answer", [err(3), err("http_403", 403), err(-1310), err(14)])
def test_a_configuration_answer_for_one_event_is_dead_lettered_when_the_check_passes(answer) -> None:  # type: ignore[no-untyped-def]
    h = build(partitions=1, max_in_flight=4)
    h.api.answer = lambda url: answer if url.endswith("odd.jpg") else OK
    h.publish(5)
    h.publish(1, url="http://img.test/odd.jpg")
    h.publish(5)
    h.assign(0)
    h.run_until(lambda: len(h.results()) + len(h.dead_letters()) == 11, within_s=30)
    [(code, record)] = h.dead_letters()
    assert code == answer.code and record["error"]["code"] == answer.code
    assert h.pipeline.fatal_reason is None
    assert [c.kind for c in h.api.calls].count("check") == 1


def test_rule_5_a_stop_requested_during_a_revoke_wait_ends_drain_timeout_s_after_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A revoke waits up to revoke_timeout_s for its partitions' calls. A SIGTERM meanwhile must not wait that
    # out and then drain for drain_timeout_s more: the watchdog ends the process at drain_timeout_s + 4 s.
    h = build(partitions=2, max_in_flight=4, latency_s=1000.0, revoke_timeout_s=60, drain_timeout_s=5)
    h.publish(4)
    h.assign(0, 1)
    h.run_until(lambda: h.pipeline._dispatch.in_flight == 4, within_s=5)
    h.clock.settle()  # every call is in the API now, hanging
    stop_at = h.clock.now() + 1
    poll = h.producer.poll

    def poll_then_stop(timeout: float = 0) -> int:  # the revoke wait polls the producer: the signal lands there
        if h.clock.now() >= stop_at:
            h.pipeline.request_stop()
        return poll(timeout)

    monkeypatch.setattr(h.producer, "poll", poll_then_stop)
    h.revoke(0)
    h.turn()  # the revoke callback runs in here and waits for partition 0's calls
    assert h.stop() == 0
    assert h.clock.now() - stop_at <= 5 + 0.1, f"stopped {h.clock.now() - stop_at:.1f}s after the request"


def test_a_confirmed_configuration_error_stops_the_worker_and_commits_nothing_for_the_event() -> None:
    h = build(partitions=1, max_in_flight=4)
    h.api.down(err(14))
    h.api.check = lambda: err(14)
    h.publish(3)
    h.assign(0)
    h.run(10)
    assert h.pipeline.fatal_reason is not None and "secret_key" in h.pipeline.fatal_reason
    assert h.stop() == 3
    assert h.committed(0) is None and h.dead_letters() == [] and h.results() == []


def test_a_tripped_dead_letter_guard_holds_the_worker_and_lets_a_trial_through_later() -> None:
    h = build(partitions=1, max_in_flight=2, dlq_guard_window=10, dlq_guard_ratio=0.9, dlq_guard_pause_s=60)
    h.api.down(err(-1308))  # every image "fails to download": not the events' fault, but the DLQ would fill
    h.publish(200)
    h.assign(0)
    h.run_until(lambda: h.snapshots.last.guard_tripped, within_s=30)
    held_at = len(h.dead_letters())
    assert held_at <= 10 + 2  # the window, plus what was in flight
    h.run(50)
    assert len(h.dead_letters()) == held_at  # holding: nothing new taken
    assert h.pipeline.fatal_reason is None  # no exit, so no restart loop that floods the DLQ again
    h.run(15)  # the pause is over: a trial (of 10 here, the window), still failing → held again, twice as long
    h.run_until(lambda: h.snapshots.last.guard_tripped, within_s=30)
    assert len(h.dead_letters()) <= held_at + 10 + 2
    h.api.up()  # the cause is fixed
    h.run_until(lambda: len(h.results()) > 0, within_s=130)
    h.run_until(lambda: h.committed(0) == 200, within_s=60)


def test_the_dead_letter_guard_holds_within_the_window_plus_max_in_flight_when_acknowledgements_lag() -> None:
    # A slow broker: its acknowledgements lag far behind the API. The guard judges an event when its output is
    # produced; judged at the acknowledgement, the loop went on dead-lettering a whole uncommitted window
    # (max(4 × max_in_flight, 64)) before the guard saw the first of them.
    h = build(partitions=1, max_in_flight=2, dlq_guard_window=10, dlq_guard_ratio=0.9, dlq_guard_pause_s=60)
    h.api.down(err(-1308))
    h.producer.hold_acks = True
    h.publish(200)
    h.assign(0)
    h.run(10)
    produced = sum(1 for topic, _ in h.producer.produced if topic == DLQ)
    assert produced <= 10 + 2, f"{produced} dead letters produced: the window (10) plus the calls in flight (2) at most"
    assert h.snapshots.last.guard_tripped
    h.producer.hold_acks = False
    h.run(10)
    assert len(h.dead_letters()) == produced and h.snapshots.last.guard_tripped  # all acknowledged, still holding


def test_the_batch_that_trips_the_dead_letter_guard_dispatches_nothing() -> None:
    # Unparseable records are dead-lettered while the batch is read: the guard can trip in the middle of it. The
    # batch's valid events are taken already; they wait for the trial instead of going to the API during the hold.
    h = build(partitions=1, max_in_flight=4, dlq_guard_window=10, dlq_guard_ratio=0.9, dlq_guard_pause_s=60)
    for i in range(10):
        h.broker.append(IN, 0, b"not json", key=f"bad{i}".encode())
    h.publish(30, 0)
    h.assign(0)
    h.run(5)
    assert len(h.dead_letters()) == 10 and h.snapshots.last.guard_tripped
    assert h.api.identify_calls() == [], "a call was dispatched while the guard held the worker"
    h.run(60)  # the trial: the API answers, the held events get their results
    h.run_until(lambda: h.committed(0) == 40, within_s=60)
    assert len(h.results()) == 30
