"""The shared harness (``worker.dev.harness``) does what tests, benchmarks and the demo rely on.

Its environment is what the worker reads; its outputs carry the input coordinates each record names; its
tally counts duplicates and losses; its children are stopped by their PID (SIGKILL when SIGTERM is not
enough); its reader reads every partition to its end, empty ones included.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import Message

from tests.support.kafkatest import produce_all, wait_until
from tests.support.records import dead_letter_value, result_value
from worker import config
from worker.core import records
from worker.dev.harness.env import worker_env
from worker.dev.harness.outputs import Output, parse_output, tally
from worker.dev.harness.processes import ChildProcess
from worker.dev.harness.reader import messages, read_topic
from worker.dev.harness.topics import Topics
from worker.emulator import DEV_ACCOUNT

TOPICS = Topics("in", "out", "dlq", group="g")
SOURCE = records.Source("in", 3, 41, 1_700_000_000_000, b"cam-1", (("traceparent", b"00-1-2-01"),))


def test_the_environment_is_what_the_worker_reads() -> None:
    env = worker_env(
        "127.0.0.1:9092",
        "http://127.0.0.1:9",
        TOPICS,
        group_ids=["a", "b"],
        settings={"max_in_flight": 8, "tls_verify": False, "commit_interval_s": 0.2},
    )
    settings = config.load(environ=env, require_credentials=True)
    assert (settings.input_topic, settings.results_topic, settings.dlq_topic, settings.group_id) == (*TOPICS.all, "g")
    assert settings.group_ids == ("a", "b") and settings.max_in_flight == 8 and settings.tls_verify is False
    assert settings.commit_interval_s == 0.2 and settings.secret_key == DEV_ACCOUNT.secret_key
    assert all(name.startswith("MDW_") for name in env)


def test_the_environment_of_a_worker_on_iai_points_its_iai_client_at_the_api_url() -> None:
    env = worker_env("127.0.0.1:9092", "http://127.0.0.1:9", TOPICS, group_ids="a", api="iai")
    settings = config.load(environ=env, require_credentials=True)  # IAI needs no AppID
    assert (settings.api, settings.iai_endpoint, settings.appid) == ("iai", "http://127.0.0.1:9", "")
    assert settings.secret_id == DEV_ACCOUNT.secret_id and settings.secret_key == DEV_ACCOUNT.secret_key
    assert "MDW_API" not in worker_env("127.0.0.1:9092", "http://127.0.0.1:9")  # v1: the worker's default


def test_an_unknown_setting_fails_naming_it() -> None:
    with pytest.raises(ValueError, match="max_inflight"):
        worker_env("127.0.0.1:9092", "http://127.0.0.1:9", settings={"max_inflight": 8})


def _message(topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Message:
    return Message(topic=topic, partition=0, offset=0, key=key, value=value, headers=headers, timestamp=(1, 1_234_500))


def test_outputs_name_the_input_coordinates_of_results_and_dead_letters() -> None:
    result = result_value("e-1", source=SOURCE, processed_at_ms=1_000, worker_instance="host/42")
    dead = dead_letter_value("e-2", source=SOURCE, dead_lettered_at_ms=2_000)
    r = parse_output(_message("out", result, b"cam-1", [("traceparent", b"00-1-2-01")]), "out")
    d = parse_output(_message("dlq", dead, b"-1308"), "out")
    assert (r.kind, r.code, r.event_id, r.partition, r.offset, r.written_ms) == (
        "result",
        "result",
        "e-1",
        3,
        41,
        1_000,
    )
    assert r.instance == "host/42"
    assert (d.kind, d.code, d.event_id, d.partition, d.offset, d.written_ms) == ("dlq", "-1308", "e-2", 3, 41, 2_000)
    assert r.ts == 1_234.5 and r.headers == (("traceparent", b"00-1-2-01"),) and r.key == b"cam-1"
    assert r.doc["faces"][0]["best_match"]["person_id"] == "alice" and d.doc["error"]["code"] == "-1308"
    # The benchmarks' naive loop writes only event_id and source; what it lacks reads as unknown.
    naive = orjson.dumps({"event_id": "e-3", "source": {"topic": "in", "partition": 1, "offset": 7}})
    n = parse_output(_message("out", naive, None), "out", keep_message=False)
    assert (n.event_id, n.partition, n.offset, n.written_ms, n.instance, n.message) == ("e-3", 1, 7, -1, "", None)
    with pytest.raises(ValueError, match="keep_messages"):
        _ = n.doc


def _output(event_id: str | None, code: str, ts: float) -> Output:
    where = "source" if code == "result" else "original"
    value = orjson.dumps({"event_id": event_id, where: {"partition": 0, "offset": 0}})
    topic = "out" if code == "result" else "dlq"
    return parse_output(Message(topic=topic, value=value, key=code.encode(), timestamp=(1, int(ts * 1000))), "out")


def test_the_tally_counts_duplicates_losses_and_codes() -> None:
    outputs = [
        _output("a", "result", 10.0),
        _output("a", "result", 11.0),
        _output("b", "-1101", 12.0),
        _output("x", "result", 13.0),  # not one of the expected events
        _output(None, "invalid_json", 14.0),  # an unreadable record: no event id
    ]
    t = tally(outputs, ["a", "b", "c"])
    assert (t.expected, t.outputs, t.unique, t.duplicates, t.lost) == (3, 3, 2, 1, 1)
    assert t.kinds == {"result": 2, "-1101": 1} and (t.first_ts, t.last_ts, t.rate) == (10.0, 12.0, 1.0)
    everything = tally(outputs)
    assert (everything.outputs, everything.unique, everything.duplicates, everything.dead_letters) == (5, 3, 1, 2)


def test_a_child_is_stopped_by_its_pid_and_killed_when_it_ignores_sigterm() -> None:
    polite = ChildProcess([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], name="polite")
    ignore = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    stubborn = ChildProcess([sys.executable, "-c", ignore], name="stubborn")
    try:
        wait_until(lambda: "up" in polite.output() and "up" in stubborn.output(), 30, what="both children up")
        assert polite.stop(10) == -15
        assert stubborn.stop(0.5) == -9  # SIGTERM ignored: SIGKILL after the timeout
        assert not polite.alive() and not stubborn.alive() and polite.tail() == "up\n"
    finally:
        polite.cleanup()
        stubborn.cleanup()
    assert not polite.log_path.exists()  # a temporary log goes with the child


@pytest.mark.broker
def test_the_reader_polls_what_is_new_and_reads_every_partition_to_its_end(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("reader", partitions=3)
    produce_all(kafka_bootstrap, topic, [(b"k", b"one"), (b"k", b"two")], partition=0)
    assert sorted(m.value() for m in read_topic(kafka_bootstrap, topic)) == [b"one", b"two"]  # 2 empty partitions
    with messages(kafka_bootstrap, [topic]) as reader:
        reader.read_to_end()
        assert reader.count() == 2
        produce_all(kafka_bootstrap, topic, [b"three"], partition=2)
        wait_until(lambda: reader.poll(0.2) > 0 or reader.count() == 3, 30, what="the new record")
        reader.read_to_end()
        assert [m.value() for m in reader.items] == [b"one", b"two", b"three"]
