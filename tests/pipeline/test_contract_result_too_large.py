"""A result the broker refuses for its size becomes a dead letter (``result_too_large``), on the in-memory Kafka.

Before, the refusal stopped the worker (exit ``kafka``) without committing: every restart read the same record,
made the same result and stopped again, so one input could stall its partition for good. Now the event is
dead-lettered with the original (or without it, when that is refused too), and its offset is committed only once
that dead letter is acknowledged (rule 1 of the commit contract, worker/runtime/pipeline.py).
"""

from __future__ import annotations

import base64

import orjson
from confluent_kafka import KafkaError

from tests.support.contract import IN, Harness, build
from worker import schemas
from worker.api.codes import lookup
from worker.core import records


def _publish(h: Harness, n: int, *, pad: int = 0) -> list[bytes]:
    values = []
    for i in range(n):
        event = {"image_url": f"http://img.test/{i}.jpg", "event_id": f"e{i}", "metadata": {"pad": "p" * pad}}
        value = orjson.dumps(event)
        h.broker.append(IN, 0, value, key=f"k{i}".encode())
        values.append(value)
    return values


def test_a_result_refused_as_too_large_is_dead_lettered_and_committed() -> None:
    h = build(partitions=1)
    [value] = _publish(h, 1)
    h.producer.fail_next_delivery(KafkaError.MSG_SIZE_TOO_LARGE)  # the result's delivery
    h.assign(0)
    h.run_until(lambda: h.committed(0) == 1 or h.pipeline.fatal_reason is not None, within_s=10)

    assert h.pipeline.fatal_reason is None
    assert h.committed(0) == 1
    assert h.results() == []
    [(key, letter)] = h.dead_letters()
    assert key == records.RESULT_TOO_LARGE == "result_too_large"
    assert letter["event_id"] == "e0"
    assert letter["error"]["code"] == "result_too_large" and letter["error"]["class"] == "permanent"
    assert letter["error"]["attempts"] == 1  # the call that answered
    assert "too large" in letter["error"]["message"] and letter["error"]["meaning"]
    assert letter["original"]["value_base64"] is not None  # replayable once the topic's limit is raised
    assert (letter["original"]["topic"], letter["original"]["offset"]) == (IN, 0)
    assert letter["original"]["value_base64"] == base64.b64encode(value).decode()
    schemas.validator("deadletter").validate(letter)
    info = lookup("result_too_large")
    assert info is not None and info.meaning == letter["error"]["meaning"]
    assert h.pipeline.stats.dead_letters == {"result_too_large": 1} and h.pipeline.stats.results == 0


def test_the_offset_waits_for_the_dead_letter_s_acknowledgement() -> None:
    h = build(partitions=1)
    _publish(h, 1)
    h.producer.hold_acks = True
    h.assign(0)
    h.run_until(lambda: len(h.producer) == 1, within_s=10)  # the result, not yet acknowledged
    h.producer.fail_next_delivery(KafkaError.MSG_SIZE_TOO_LARGE)
    h.producer.hold_acks = False
    h.producer.poll(0)  # the broker refuses the result: the dead letter is produced in its place
    h.producer.hold_acks = True
    assert len(h.producer) == 1 and h.dead_letters() == []
    h.run(5)
    assert h.committed(0) is None and h.pipeline.fatal_reason is None  # nothing acknowledged yet
    h.producer.hold_acks = False
    h.run_until(lambda: h.committed(0) == 1, within_s=10)
    assert [key for key, _ in h.dead_letters()] == ["result_too_large"]


def test_when_the_dead_letter_is_too_large_too_it_goes_without_the_original() -> None:
    h = build(partitions=1)
    h.producer.too_large_bytes = 3000  # the result (metadata) and the dead letter with the original are larger
    _publish(h, 1, pad=5000)
    h.assign(0)
    h.run_until(lambda: h.committed(0) == 1 or h.pipeline.fatal_reason is not None, within_s=10)

    assert h.pipeline.fatal_reason is None and h.committed(0) == 1
    [(key, letter)] = h.dead_letters()
    assert key == "result_too_large"
    assert letter["original"]["value_base64"] is None and letter["original"]["offset"] == 0


def test_results_refused_one_after_another_trip_the_dead_letter_guard() -> None:
    """A results topic whose limit refuses every result is a misconfiguration: the guard holds the worker, as it
    does for any flood of dead letters, instead of moving the whole topic into the DLQ. Each such event counts
    once, as a dead letter (not as a result and a dead letter)."""
    h = build(partitions=1, dlq_guard_window=20)
    h.producer.too_large_bytes = 3000
    _publish(h, 200, pad=5000)
    h.assign(0)
    h.run_until(lambda: h.pipeline._guard.tripped or h.pipeline.fatal_reason is not None, within_s=30)

    assert h.pipeline.fatal_reason is None
    # Counted as a result and as a dead letter, half the window would be results and it would never trip.
    assert h.pipeline._guard.tripped and h.pipeline._guard.ratio == 1.0
    h.run(30)  # holding: only what was in flight when it tripped still goes out
    assert h.pipeline._guard.tripped and h.pipeline.fatal_reason is None
    assert 20 <= len(h.dead_letters()) <= 20 + 8  # a window, and the calls in flight (max_in_flight 8)
    assert h.committed(0) == len(h.dead_letters())  # each committed once its dead letter was acknowledged
    assert {key for key, _ in h.dead_letters()} == {"result_too_large"} and h.results() == []
