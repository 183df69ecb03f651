"""`replay` against a real broker, with dead letters built exactly as the worker writes them.

Selection by code runs for both face APIs' codes (v1's integers, IAI's dotted strings); the last test replays the
dead letters of a fixed cause through a running worker on each API, end to end.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from tests.support.kafkatest import produce_all
from tests.support.pipeline import enrolled_emulator, settings_env, thread_worker, validate_all
from worker.api.errors import meaning
from worker.api.models import Api
from worker.config import ApiName
from worker.core import records
from worker.dev.harness.outputs import OutputReader
from worker.dev.harness.reader import read_topic
from worker.dev.harness.topics import Topics
from worker.tools import _kafka, replay
from worker.tools.replay_plan import H_REPLAYED_FROM, SKIP_MAX_REPLAYS, SKIP_NOT_INPUT_TOPIC, Selection

pytestmark = pytest.mark.broker

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CLASSES = {
    "15": "transient",
    "-1308": "permanent",
    "RequestLimitExceeded": "transient",
    "FailedOperation.ImageDownloadError": "permanent",
    "invalid_json": "invalid",
}
#: Per face API, the code of a rate limit and of an image that could not be downloaded.
LIMITED = {"v1": "15", "iai": "RequestLimitExceeded"}
UNREACHABLE = {"v1": "-1308", "iai": "FailedOperation.ImageDownloadError"}

DeadLetter = tuple[bytes, bytes, list[tuple[str, bytes | None]]]


def dead_letter(
    topic: str,
    code: str,
    value: bytes | None,
    *,
    key: bytes | None = None,
    headers: tuple[tuple[str, bytes | None], ...] = (),
    offset: int = 0,
    replay_count: int = 0,
    max_original_bytes: int = records.MAX_ORIGINAL_BYTES,
    api: Api | None = None,
) -> DeadLetter:
    """(key, value, headers) of a dead-letter record of an event read from ``topic``, built by the worker's own
    functions (by a worker calling ``api``)."""
    source = records.Source(topic, 1, offset, 1_700_000_000_000, key, headers)
    error = records.ErrorInfo(code, CLASSES[code], f"failed with {code}", 200, 1, 1_700_000_000_000, 1_700_000_000_000)
    value_out = records.build_dead_letter(
        value,
        event_id=f"e-{offset}",
        error=error,
        source=source,
        worker_version="0.1.0",
        replay_count=replay_count,
        max_original_bytes=max_original_bytes,
        api=api,
    )
    return records.dead_letter_key(code), value_out, records.dead_letter_headers(source, error, "0.1.0", replay_count)


def produce(
    bootstrap: str, topic: str, items: list[DeadLetter], *, timestamps: list[int] | None = None, partition: int = -1
) -> None:
    """Produce in one go (linger: several records per batch, which Tansu's "latest" offset gets wrong)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 50})
    failures: list[Any] = []
    for i, (key, value, headers) in enumerate(items):
        kwargs: dict[str, Any] = {"key": key, "value": value, "headers": headers, "partition": partition}
        if timestamps is not None:
            kwargs["timestamp"] = timestamps[i]
        producer.produce(topic, on_delivery=lambda err, _m: failures.append(err) if err else None, **kwargs)
    assert producer.flush(30) == 0
    assert not failures


def run_replay(bootstrap: str, dlq: str, inputs: str, *flags: str) -> tuple[int, str]:
    """``replay`` with ``inputs`` as the worker's input_topic (one topic or a comma-separated list)."""
    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    argv = ["--bootstrap-servers", bootstrap, "--dlq-topic", dlq, "--input-topic", inputs, "--timeout", "30"]
    argv += flags  # a later --timeout wins
    out = io.StringIO()
    code = replay.run(parser.parse_args(argv), out)
    return code, out.getvalue()


def origins(msgs: list[Message]) -> list[str]:
    return [dict(m.headers() or [])[H_REPLAYED_FROM].decode() for m in msgs]


@pytest.fixture
def topics(make_topic: Callable[..., str]) -> tuple[str, str]:
    return make_topic("dlq", partitions=4), make_topic("in", partitions=4)


@pytest.mark.parametrize("api", ["v1", "iai"])
def test_replay_by_code_republishes_only_that_code_byte_for_byte(
    kafka_bootstrap: str, topics: tuple[str, str], api: str
) -> None:
    dlq, target = topics
    limited, unreachable, which = LIMITED[api], UNREACHABLE[api], Api(api)
    headers = (("traceparent", TRACEPARENT), ("dup", b"1"), ("dup", b"2"), ("nullhdr", None))
    originals = {
        0: (b"cam-1", b'{"image_url":"http://127.0.0.1:1/a.jpg","event_id":"e-0"}', headers),
        1: (b"\x00\xffbinary-key", b"\xff\xfe\x00 not UTF-8 \x80", (("traceparent", TRACEPARENT),)),
        2: (None, b'{"image_url":"http://127.0.0.1:1/c.jpg"}', ()),
    }
    items = [
        dead_letter(target, limited, v, key=k, headers=h, offset=o, api=which) for o, (k, v, h) in originals.items()
    ]
    items += [dead_letter(target, unreachable, b"{}", offset=10 + i, api=which) for i in range(2)]
    items += [dead_letter(target, "invalid_json", b"{", offset=20, api=which)]
    produce(kafka_bootstrap, dlq, items)

    code, out = run_replay(kafka_bootstrap, dlq, target, "--code", limited, "--rate", "500")

    assert code == 0, out
    got = read_topic(kafka_bootstrap, target)
    assert len(got) == 3
    by_value = {value: (key, value, hdrs) for key, value, hdrs in originals.values()}
    dlq_keys = {f"{dlq}/{m.partition()}/{m.offset()}": m.key() for m in read_topic(kafka_bootstrap, dlq)}
    for msg in got:
        hdrs = msg.headers() or []
        origin = dict(hdrs)[H_REPLAYED_FROM].decode()
        assert dlq_keys[origin] == limited.encode()
        key, _, original_headers = by_value[msg.value()]
        assert msg.key() == key
        assert hdrs == [*original_headers, ("mdw.replay.count", b"1"), (H_REPLAYED_FROM, origin.encode())]
    assert "replayed: 3" in out and meaning(limited) in out
    # The rate-limit run saved its own progress: a later run for every code still finds the others.
    code, out = run_replay(kafka_bootstrap, dlq, target)
    assert code == 0, out
    later = [dlq_keys[o] for o in origins(read_topic(kafka_bootstrap, target))]
    assert sorted(later) == sorted([limited.encode()] * 6 + [unreachable.encode()] * 2 + [b"invalid_json"])


@pytest.mark.parametrize("api", ["v1", "iai"])
def test_dry_run_counts_per_code_and_changes_nothing(kafka_bootstrap: str, topics: tuple[str, str], api: str) -> None:
    dlq, target = topics
    limited, unreachable, which = LIMITED[api], UNREACHABLE[api], Api(api)
    items = [dead_letter(target, limited, b"{}", offset=i, api=which) for i in range(3)]
    items += [dead_letter(target, unreachable, b"{}", offset=10 + i, api=which) for i in range(2)]
    items += [dead_letter(target, "invalid_json", b"{", offset=20, api=which)]
    produce(kafka_bootstrap, dlq, items)

    code, out = run_replay(kafka_bootstrap, dlq, target, "--code", limited, "--code", unreachable, "--dry-run")

    assert code == 0, out
    assert "would replay: 5" in out and "selected: 5" in out
    assert meaning(limited) in out and meaning(unreachable) in out
    # the sample lines (5 = the default count)
    assert out.count(f"code={limited} ") + out.count(f"code={unreachable} ") == 5
    assert read_topic(kafka_bootstrap, target) == []
    selection = Selection(codes=frozenset({limited, unreachable}))
    group = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": replay.default_group(dlq, selection)})
    try:
        committed = group.committed([TopicPartition(dlq, p) for p in range(4)], timeout=10)
    finally:
        group.close()
    assert all(tp.offset < 0 for tp in committed)
    # The real run afterwards still finds all five: the dry run saved no progress.
    code, out = run_replay(kafka_bootstrap, dlq, target, "--code", limited, "--code", unreachable)
    assert code == 0 and len(read_topic(kafka_bootstrap, target)) == 5


def test_an_interrupted_replay_resumes_instead_of_repeating(kafka_bootstrap: str, topics: tuple[str, str]) -> None:
    dlq, target = topics
    produce(kafka_bootstrap, dlq, [dead_letter(target, "15", f'{{"n":{i}}}'.encode(), offset=i) for i in range(10)])

    code, out = run_replay(kafka_bootstrap, dlq, target, "--limit", "4")
    assert code == 0 and "stopped at --limit" in out
    assert len(read_topic(kafka_bootstrap, target)) == 4

    code, out = run_replay(kafka_bootstrap, dlq, target)
    assert code == 0, out
    got = read_topic(kafka_bootstrap, target)
    assert len(got) == 10 and len(set(origins(got))) == 10
    assert sorted(m.value() for m in got) == sorted(f'{{"n":{i}}}'.encode() for i in range(10))

    code, out = run_replay(kafka_bootstrap, dlq, target)
    assert code == 0 and "replayed: 0" in out
    assert len(read_topic(kafka_bootstrap, target)) == 10


class _FailingProducer:
    """A real producer that raises on its ``fail_at``-th produce call (an injected crash)."""

    def __init__(self, inner: Producer, fail_at: int) -> None:
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "injected failure"))
        self.inner.produce(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failed_replay_commits_only_what_was_delivered(
    kafka_bootstrap: str, topics: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dlq, target = topics
    produce(kafka_bootstrap, dlq, [dead_letter(target, "15", f'{{"n":{i}}}'.encode(), offset=i) for i in range(8)])
    real = replay._new_producer
    monkeypatch.setattr(replay, "_new_producer", lambda conf: _FailingProducer(real(conf), fail_at=4))

    code, out = run_replay(kafka_bootstrap, dlq, target)

    assert code == 1 and "injected failure" in out
    assert len(read_topic(kafka_bootstrap, target)) == 3
    monkeypatch.setattr(replay, "_new_producer", real)
    code, out = run_replay(kafka_bootstrap, dlq, target)
    assert code == 0 and "replayed: 5" in out
    got = read_topic(kafka_bootstrap, target)
    assert len(got) == 8 and len(set(origins(got))) == 8


def test_records_past_max_replays_and_unreadable_ones_are_skipped_with_a_reason(
    kafka_bootstrap: str, topics: tuple[str, str]
) -> None:
    dlq, target = topics
    replayed_before = (("traceparent", TRACEPARENT), ("mdw.replay.count", b"2"), ("mdw.replayed.from", b"x/0/1"))
    items = [
        dead_letter(target, "15", b'{"a":1}', offset=1, replay_count=3),
        dead_letter(target, "15", b'{"a":2}', key=b"k2", offset=2, replay_count=2, headers=replayed_before),
        dead_letter(target, "15", b"x" * 100, offset=3, max_original_bytes=10),
        (b"15", b"not an envelope", []),
    ]
    produce(kafka_bootstrap, dlq, items)

    code, out = run_replay(kafka_bootstrap, dlq, target, "--max-replays", "3")

    assert code == 0, out
    assert "max replays: 1" in out and "value omitted: 1" in out and "unparseable envelope: 1" in out
    (msg,) = read_topic(kafka_bootstrap, target)
    assert (msg.key(), msg.value()) == (b"k2", b'{"a":2}')
    hdrs = msg.headers() or []
    assert hdrs[0] == ("traceparent", TRACEPARENT)
    assert [v for n, v in hdrs if n == "mdw.replay.count"] == [b"3"]


def test_a_dead_letter_without_its_key_is_skipped_unless_the_operator_allows_a_null_key(
    kafka_bootstrap: str, topics: tuple[str, str]
) -> None:
    """Republishing a record whose key was omitted (> 64 KiB) with a null key moves it to another partition and out
    of its key's order: the replay counts it as skipped, dry run included, and says how to replay it anyway."""
    dlq, target = topics
    big_key = b"camera-" + b"k" * records.MAX_ORIGINAL_KEY_BYTES
    items = [
        dead_letter(target, "15", b'{"n":0}', key=b"cam-0", offset=0),
        dead_letter(target, "15", b'{"n":1}', key=big_key, offset=1),
        dead_letter(target, "15", b"x" * 100, key=big_key, offset=2, max_original_bytes=10),  # nor its value
    ]
    produce(kafka_bootstrap, dlq, items, partition=1)

    code, out = run_replay(kafka_bootstrap, dlq, target, "--dry-run")
    assert code == 0, out
    assert "would replay: 1" in out and "key omitted: 1" in out and "value omitted: 1" in out, out
    assert f"{dlq}/1/1" in out and "--allow-missing-key" in out

    code, out = run_replay(kafka_bootstrap, dlq, target)
    assert code == 0, out
    assert "replayed: 1" in out and "key omitted: 1" in out and "value omitted: 1" in out, out
    (msg,) = read_topic(kafka_bootstrap, target)
    assert (msg.key(), msg.value()) == (b"cam-0", b'{"n":0}')

    # The operator accepts a null key for that one record (its own selection, so its own progress).
    flags = ("--partition", "1", "--from-offset", "1", "--to-offset", "2", "--allow-missing-key")
    code, out = run_replay(kafka_bootstrap, dlq, target, *flags)
    assert code == 0, out
    assert "replayed: 1" in out and "value omitted: 1" in out and "key omitted" not in out, out
    got = {m.value(): m for m in read_topic(kafka_bootstrap, target)}
    assert set(got) == {b'{"n":0}', b'{"n":1}'}
    assert got[b'{"n":1}'].key() is None
    assert origins([got[b'{"n":1}']]) == [f"{dlq}/1/1"]


def test_dead_letters_arriving_during_the_replay_wait_for_the_next_run(
    kafka_bootstrap: str, topics: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dlq, target = topics
    produce(kafka_bootstrap, dlq, [dead_letter(target, "15", b"{}", offset=i) for i in range(30)], partition=2)
    real = _kafka.end_offsets
    marks: dict[int, tuple[int, int]] = {}

    def end_offsets_then_more_arrive(*args: Any, **kwargs: Any) -> dict[int, tuple[int, int]]:
        marks.update(real(*args, **kwargs))
        produce(kafka_bootstrap, dlq, [dead_letter(target, "15", b"{}", offset=100 + i) for i in range(7)], partition=2)
        return marks

    monkeypatch.setattr(_kafka, "end_offsets", end_offsets_then_more_arrive)
    code, out = run_replay(kafka_bootstrap, dlq, target)
    assert code == 0, out
    assert marks[2] == (0, 30)  # the true end, although the last batch holds many records
    assert len(read_topic(kafka_bootstrap, target)) == 30

    monkeypatch.setattr(_kafka, "end_offsets", real)
    code, out = run_replay(kafka_bootstrap, dlq, target)
    assert code == 0 and "replayed: 7" in out
    assert len(set(origins(read_topic(kafka_bootstrap, target)))) == 37


def test_time_window_selects_by_dead_letter_timestamp(kafka_bootstrap: str, topics: tuple[str, str]) -> None:
    dlq, target = topics
    now = int(time.time() * 1000)
    stamps = [now - 7_200_000] * 2 + [now - 3_600_000] * 3 + [now - 300_000] * 2
    items = [dead_letter(target, "15", f'{{"n":{i}}}'.encode(), offset=i) for i in range(len(stamps))]
    produce(kafka_bootstrap, dlq, items, timestamps=stamps)
    since = datetime.fromtimestamp((now - 5_400_000) / 1000, UTC).isoformat().replace("+00:00", "Z")

    code, out = run_replay(kafka_bootstrap, dlq, target, "--since", since, "--until", str(now - 1_800_000))

    assert code == 0, out
    assert sorted(m.value() for m in read_topic(kafka_bootstrap, target)) == [b'{"n":2}', b'{"n":3}', b'{"n":4}']


def test_offset_range_selects_inclusive_offsets_of_one_partition(kafka_bootstrap: str, topics: tuple[str, str]) -> None:
    dlq, target = topics
    produce(kafka_bootstrap, dlq, [dead_letter(target, "15", b"{}", offset=i) for i in range(8)], partition=1)
    produce(kafka_bootstrap, dlq, [dead_letter(target, "15", b"{}", offset=i) for i in range(8)], partition=3)

    code, out = run_replay(
        kafka_bootstrap, dlq, target, "--partition", "1", "--from-offset", "2", "--to-offset", "4", "--to", target
    )

    assert code == 0, out
    assert sorted(origins(read_topic(kafka_bootstrap, target))) == [f"{dlq}/1/{o}" for o in (2, 3, 4)]


def test_a_throttled_replay_that_times_out_saves_its_progress(kafka_bootstrap: str, topics: tuple[str, str]) -> None:
    dlq, target = topics
    produce(kafka_bootstrap, dlq, [dead_letter(target, "15", f'{{"n":{i}}}'.encode(), offset=i) for i in range(30)])

    code, out = run_replay(kafka_bootstrap, dlq, target, "--rate", "5", "--timeout", "2")

    assert code == 1 and "timed out" in out
    first = len(read_topic(kafka_bootstrap, target))
    assert first < 30  # 30 records at 5/s need 6 s
    code, out = run_replay(kafka_bootstrap, dlq, target)
    assert code == 0 and f"replayed: {30 - first}" in out
    got = read_topic(kafka_bootstrap, target)
    assert len(got) == 30 and len(set(origins(got))) == 30


@pytest.mark.parametrize("api", ["v1", "iai"])
def test_dead_letters_of_a_fixed_cause_come_back_as_results_through_a_worker(
    kafka_bootstrap: str, make_topics: Callable[..., Topics], tmp_path: Path, api: ApiName
) -> None:
    """A worker on either API dead-letters the images that are not there yet (v1 -1308, IAI
    FailedOperation.ImageDownloadError) and those without a face. Once the missing images are published, replaying
    that one code brings each of its events back as a result with its person identified; the other dead letters are
    not replayed. On IAI the gallery is enrolled through IAI (CreateGroup, CreatePerson)."""
    topics = make_topics(2, results=1, dlq=1)
    with enrolled_emulator(tmp_path, ["alice", "bob"], api=api) as (handle, sc):
        sc.add_unreachable(4, seed=4000)
        sc.add_no_face(2, seed=4100)
        produce_all(kafka_bootstrap, topics.input, [(e.key, e.value) for e in sc.events])
        reader = OutputReader(kafka_bootstrap, topics)
        try:
            with thread_worker(settings_env(kafka_bootstrap, handle.base_url, topics, api=api, max_in_flight=4)) as w:
                reader.wait_for(lambda r: r.count() >= len(sc.events), 60, "a dead letter per event")
                assert sc.unexpected(reader.outputs) == []
                assert sc.fix_unreachable() == 4
                unreachable = sc.code("unreachable")
                code, out = run_replay(kafka_bootstrap, topics.dlq, topics.input, "--code", unreachable)
                assert code == 0 and "replayed: 4" in out, out
                reader.wait_for(lambda r: len(r.results()) >= 4, 60, "the replayed events' results")
                assert w.stop() == 0
            reader.drain()
        finally:
            reader.close()
    late = {e.event_id: e for e in sc.events if e.expect == unreachable}
    results = reader.results()
    validate_all(reader.outputs)
    assert sorted(o.event_id or "" for o in results) == sorted(late)
    for o in results:
        assert o.doc["api"]["name"] == api
        (face,) = o.doc["faces"]
        assert [face["candidates"][0]["person_id"]] == list(late[o.event_id].people)
    assert sorted(o.code for o in reader.dead_letters()) == sorted(e.expect for e in sc.events)


def test_json_output_is_one_document_with_what_the_run_did(kafka_bootstrap: str, topics: tuple[str, str]) -> None:
    """`replay --json` as the chart's Job runs it: stdout is exactly one JSON document whose counts, ranges and
    exit code match what reached the target topic."""
    dlq, target = topics
    items = [dead_letter(target, "15", f'{{"n":{i}}}'.encode(), offset=i) for i in range(3)]
    items += [dead_letter(target, "-1308", b"{}", offset=10)]
    items += [dead_letter(target, "15", b"{}", offset=11, replay_count=3)]
    produce(kafka_bootstrap, dlq, items, partition=2)
    argv = [sys.executable, "-m", "worker", "replay", "--json", "--dry-run", "--timeout", "30"]
    argv += ["--bootstrap-servers", kafka_bootstrap, "--dlq-topic", dlq, "--input-topic", target]

    proc = subprocess.run(argv, capture_output=True, timeout=120, check=False)

    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    doc = orjson.loads(proc.stdout)  # the whole of stdout, nothing else
    assert (doc["status"], doc["ok"], doc["exit_code"], doc["dry_run"]) == ("complete", True, 0, True)
    assert (doc["dlq_topic"], doc["target_topic"], doc["group"]) == (dlq, target, replay.default_group(dlq))
    ranges = {p["partition"]: (p["start_offset"], p["end_offset"], p["records"]) for p in doc["partitions"]}
    assert ranges == {0: (0, 0, 0), 1: (0, 0, 0), 2: (0, 5, 5), 3: (0, 0, 0)}
    assert doc["read"] == 5
    assert doc["selected"] == {"total": 5, "by_code": {"-1308": 1, "15": 4}}
    assert doc["replayed"] == {"total": 4, "by_code": {"-1308": 1, "15": 3}, "by_topic": {target: 4}}  # would replay
    assert doc["skipped"]["by_reason"] == {SKIP_MAX_REPLAYS: 1}
    assert doc["skipped"]["examples"] == {SKIP_MAX_REPLAYS: [f"{dlq}/2/4"]}
    assert doc["codes"] == {"-1308": meaning("-1308"), "15": meaning("15")}
    assert len(doc["samples"]) == 5 and doc["errors"] == []
    assert read_topic(kafka_bootstrap, target) == []

    code, out = run_replay(kafka_bootstrap, dlq, target, "--json", "--code", "15")
    doc = orjson.loads(out)
    assert code == doc["exit_code"] == 0 and doc["status"] == "complete" and not doc["dry_run"]
    assert doc["group"] == replay.default_group(dlq, Selection(codes=frozenset({"15"})))
    assert doc["replayed"] == {"total": 3, "by_code": {"15": 3}, "by_topic": {target: 3}}
    assert len(read_topic(kafka_bootstrap, target)) == 3
    # Resumed: the saved progress is the start of the next run, which finds nothing new.
    code, out = run_replay(kafka_bootstrap, dlq, target, "--json", "--code", "15")
    doc = orjson.loads(out)
    assert code == 0 and doc["replayed"]["total"] == 0
    resumed = {p["partition"]: (p["start_offset"], p["end_offset"], p["resumed_from"]) for p in doc["partitions"]}
    assert resumed[2] == (5, 5, 5)


def test_json_output_says_why_a_run_could_not_start(kafka_bootstrap: str, topics: tuple[str, str]) -> None:
    dlq, target = topics
    code, out = run_replay(kafka_bootstrap, dlq, target, "--json", "--from-offset", "3")
    doc = orjson.loads(out)
    assert code == doc["exit_code"] == 2 and doc["status"] == "invalid" and not doc["ok"]
    assert "--partition" in doc["errors"][0]
    code, out = run_replay(kafka_bootstrap, dlq, target, "--json", "--to", dlq)
    doc = orjson.loads(out)
    assert code == 2 and doc["status"] == "invalid" and doc["dlq_topic"] == dlq and "DLQ itself" in doc["errors"][0]
    code, out = run_replay(kafka_bootstrap, dlq, target, "--json", "--results-topic", "res", "--to", "res")
    doc = orjson.loads(out)
    assert code == doc["exit_code"] == 2 and doc["status"] == "invalid" and not doc["ok"]
    assert doc["target_topic"] == "res"
    assert "the target topic is the results topic (results_topic = res)" in doc["errors"][0]
    # The DLQ among the input topics is refused with the settings: replay would send dead letters back into it.
    code, out = run_replay(kafka_bootstrap, dlq, f"{target},{dlq}", "--json")
    doc = orjson.loads(out)
    assert code == 2 and doc["status"] == "invalid" and f"lists dlq_topic ({dlq})" in doc["errors"][0]
    code, out = run_replay(kafka_bootstrap, dlq, target, "--json", "--partition", "9")
    doc = orjson.loads(out)
    assert code == doc["exit_code"] == 1 and doc["status"] == "error" and "no partition 9" in doc["errors"][0]


# --- several input topics: each dead letter goes back to the topic it came from ------------------------------

CE_HEADERS = (("ce_specversion", b"1.0"), ("ce_id", b"c-1"), ("ce_source", b"/cam"), ("ce_type", b"image.created"))


@pytest.fixture
def several(make_topic: Callable[..., str], kafka_bootstrap: str) -> tuple[str, str, str, str]:
    """(dlq, images, camera, old): dead letters from the two input topics and from ``old``, a topic the worker
    no longer reads (it still exists, so a record sent there by mistake would show)."""
    dlq, images, camera, old = (make_topic(n, partitions=2) for n in ("dlq", "images", "camera", "old"))
    items = [dead_letter(images, "15", f'{{"i":{i}}}'.encode(), key=b"k-img", offset=i) for i in range(2)]
    items += [dead_letter(camera, "-1308", f'{{"c":{i}}}'.encode(), headers=CE_HEADERS, offset=i) for i in range(2)]
    items += [dead_letter(old, "15", b'{"old":0}', offset=7)]
    produce(kafka_bootstrap, dlq, items, partition=1)
    return dlq, images, camera, old


def values(bootstrap: str, topic: str) -> list[bytes | None]:
    return sorted(m.value() or b"" for m in read_topic(bootstrap, topic))


def test_each_dead_letter_goes_back_to_its_own_input_topic(
    kafka_bootstrap: str, several: tuple[str, str, str, str]
) -> None:
    """Each input topic has its own format: a CloudEvent dead letter from camera goes back to camera (headers
    included), never to images; one from a topic no longer configured is skipped with its reason and coordinates."""
    dlq, images, camera, old = several

    code, out = run_replay(kafka_bootstrap, dlq, f"{images},{camera}", "--json")

    doc = orjson.loads(out)
    assert code == doc["exit_code"] == 0, out
    assert values(kafka_bootstrap, images) == [b'{"i":0}', b'{"i":1}']
    assert values(kafka_bootstrap, camera) == [b'{"c":0}', b'{"c":1}']
    assert read_topic(kafka_bootstrap, old) == []
    for msg in read_topic(kafka_bootstrap, camera):
        assert (msg.headers() or [])[: len(CE_HEADERS)] == list(CE_HEADERS)
    assert doc["target_topic"] is None and doc["input_topics"] == [images, camera]
    assert doc["replayed"] == {"total": 4, "by_code": {"-1308": 2, "15": 2}, "by_topic": {camera: 2, images: 2}}
    assert doc["skipped"]["by_reason"] == {SKIP_NOT_INPUT_TOPIC: 1}
    assert doc["skipped"]["examples"] == {SKIP_NOT_INPUT_TOPIC: [f"{dlq}/1/4"]}
    assert doc["skipped"]["not_input_topics"] == {old: 1}

    # The text summary says the same, and how to replay the stray one; a dry run shows where each would go.
    code, out = run_replay(kafka_bootstrap, dlq, f"{images},{camera}", "--dry-run", "--restart")
    assert code == 0, out
    assert f"→ {images}: 2" in out and f"→ {camera}: 2" in out, out
    assert f"{SKIP_NOT_INPUT_TOPIC}: 1 (at {dlq}/1/4)" in out and old in out and "--to" in out, out


def test_from_topic_selects_and_to_overrides_the_topic(
    kafka_bootstrap: str, several: tuple[str, str, str, str]
) -> None:
    dlq, images, camera, old = several
    inputs = f"{images},{camera}"

    code, out = run_replay(kafka_bootstrap, dlq, inputs, "--from-topic", camera)
    assert code == 0 and "selected: 2" in out and "replayed: 2" in out, out
    assert values(kafka_bootstrap, camera) == [b'{"c":0}', b'{"c":1}']
    assert read_topic(kafka_bootstrap, images) == []

    # Dead letters of a topic no longer read: without --to all would be skipped (and the selection's progress would
    # pass them), so the run refuses to start; --to sends them to a topic of the operator's choice.
    code, out = run_replay(kafka_bootstrap, dlq, inputs, "--from-topic", old, "--json")
    doc = orjson.loads(out)
    assert code == doc["exit_code"] == 2 and "--to" in doc["errors"][0] and old in doc["errors"][0]
    code, out = run_replay(kafka_bootstrap, dlq, inputs, "--from-topic", old, "--to", images, "--json")
    doc = orjson.loads(out)
    assert code == 0, out
    assert (doc["target_topic"], doc["replayed"]["by_topic"]) == (images, {images: 1})
    (msg,) = read_topic(kafka_bootstrap, images)
    assert msg.value() == b'{"old":0}' and origins([msg]) == [f"{dlq}/1/4"]

    # --to without a selection still sends every dead letter to that one topic, as before.
    code, out = run_replay(kafka_bootstrap, dlq, inputs, "--to", images, "--group", "all-to-images")
    assert code == 0 and "replayed: 5" in out, out
    assert len(read_topic(kafka_bootstrap, images)) == 6
    assert read_topic(kafka_bootstrap, old) == []


def test_with_one_input_topic_a_dead_letter_from_another_topic_is_skipped_unless_to_names_one(
    kafka_bootstrap: str, topics: tuple[str, str], make_topic: Callable[..., str]
) -> None:
    """The same rule with one input topic: replay never changes a record's topic unless --to says so (before, a
    dead letter from a renamed or removed topic went to input_topic, in whatever format that topic reads)."""
    dlq, target = topics
    renamed = make_topic("renamed", partitions=1)
    produce(kafka_bootstrap, dlq, [dead_letter(target, "15", b'{"n":0}'), dead_letter(renamed, "15", b'{"n":1}')])

    code, out = run_replay(kafka_bootstrap, dlq, target)
    assert code == 0 and "replayed: 1" in out and f"{SKIP_NOT_INPUT_TOPIC}: 1" in out, out
    assert values(kafka_bootstrap, target) == [b'{"n":0}']

    code, out = run_replay(kafka_bootstrap, dlq, target, "--from-topic", renamed, "--to", target)
    assert code == 0 and "replayed: 1" in out, out
    assert values(kafka_bootstrap, target) == [b'{"n":0}', b'{"n":1}']
    assert read_topic(kafka_bootstrap, renamed) == []
