"""`produce` and `tail`: the lines and records they make, and both against a real broker."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from tests.support.records import dead_letter_value, result_value
from worker.api.errors import meaning
from worker.dev.harness.reader import read_topic
from worker.tools import _kafka, produce, tail

# --- tail lines ---------------------------------------------------------------------------------------------


def test_a_result_line_shows_each_faces_best_match() -> None:
    line = tail.format_record("results", result_value(), None, "r/0/0")
    assert line == "e-1  faces=2  best: alice (93.5) -"


def test_a_result_without_faces() -> None:
    value = result_value("e-9", faces=())
    assert tail.format_record("results", value, None, "r/0/0") == "e-9  faces=0"


def test_a_dead_letter_line_shows_code_meaning_message_and_attempts() -> None:
    line = tail.format_record("dlq", dead_letter_value(), b"-1308", "d/0/0")
    assert line == f"e-2  code=-1308  {meaning('-1308')}  图片下载失败 line two (attempts=3)"
    assert tail.format_record("dlq", dead_letter_value(None), b"-1308", "d/0/0").startswith("-  code=-1308")


def test_an_unreadable_record_is_shown_with_its_coordinates() -> None:
    assert (
        tail.format_record("dlq", b"\xff garbage", b"15", "d/1/4") == "?  unreadable record at d/1/4: b'\\xff garbage'"
    )


# --- produce records ----------------------------------------------------------------------------------------


def test_jsonl_lines_become_events_and_other_lines_stay_raw() -> None:
    lines = [
        b'{"image_url": "http://h/a.jpg"}\n',
        b'{"image_url": "http://h/b.jpg", "event_id": "mine", "cam": "c7", "group_ids": ["g0"]}\r\n',
        b"\n",
        b"not json at all\n",
        b"[1, 2]\n",
    ]
    out = list(produce.from_lines(lines, group_ids=["g0", "g1"], key_field="cam"))
    assert len(out) == 4
    first, second = orjson.loads(out[0].value), orjson.loads(out[1].value)
    assert len(first["event_id"]) == 32 and int(first["event_id"], 16) >= 0
    assert first["group_ids"] == ["g0", "g1"] and out[0].key is None
    assert second["event_id"] == "mine" and second["group_ids"] == ["g0", "g1"] and out[1].key == b"c7"
    assert [(o.value, o.raw) for o in out[2:]] == [(b"not json at all", True), (b"[1, 2]", True)]


def test_an_image_directory_gives_one_event_per_image(tmp_path: Path) -> None:
    for name in ("b.png", "a b.jpg", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.jpg").mkdir()
    out = [orjson.loads(o.value) for o in produce.from_images(tmp_path, "http://127.0.0.1:8080")]
    assert [e["image_url"] for e in out] == ["http://127.0.0.1:8080/a%20b.jpg", "http://127.0.0.1:8080/b.png"]
    assert len({e["event_id"] for e in out}) == 2


# --- against the broker -------------------------------------------------------------------------------------


def put(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    for key, value in values:
        producer.produce(topic, key=key, value=value, partition=0)
    assert producer.flush(15) == 0


def run_tool(module: Any, bootstrap: str, *flags: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    out = io.StringIO()
    code = module.run(parser.parse_args([*flags, "--bootstrap-servers", bootstrap]), out)
    return code, out.getvalue()


@pytest.mark.broker
def test_produce_from_a_jsonl_file(kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path) -> None:
    topic = make_topic("in", partitions=2)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"image_url": "http://h/a.jpg", "cam": "c1"}\n{"image_url": "http://h/b.jpg"}\n{oops\n')

    code, out = run_tool(
        produce,
        kafka_bootstrap,
        *("--file", str(events), "--input-topic", topic, "--key-field", "cam", "--group-id", "staff"),
        *("--header", "traceparent=00-abc-def-01"),
    )

    assert code == 0 and "delivered 3 of 3 record(s)" in out and "1 raw" in out
    got = {m.value(): m for m in read_topic(kafka_bootstrap, topic)}
    assert b"{oops" in got
    docs = [orjson.loads(v) for v in got if v != b"{oops"]
    assert sorted(d["image_url"] for d in docs) == ["http://h/a.jpg", "http://h/b.jpg"]
    assert all(d["group_ids"] == ["staff"] and d["event_id"] for d in docs)
    assert sorted(m.key() or b"" for m in got.values()) == [b"", b"", b"c1"]
    assert all(m.headers() == [("traceparent", b"00-abc-def-01")] for m in got.values())


@pytest.mark.broker
def test_produce_from_stdin_and_from_an_image_directory(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = make_topic("in", partitions=2)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"image_url": "http://h/s.jpg"}\n')))
    assert run_tool(produce, kafka_bootstrap, "--file", "-", "--topic", topic)[0] == 0
    (tmp_path / "face.jpg").write_bytes(b"\xff\xd8")
    code, out = run_tool(
        produce, kafka_bootstrap, "--images", str(tmp_path), "--image-base-url", "http://127.0.0.1:9/", "--topic", topic
    )
    assert code == 0 and "delivered 1 of 1" in out
    urls = sorted(orjson.loads(m.value())["image_url"] for m in read_topic(kafka_bootstrap, topic))
    assert urls == ["http://127.0.0.1:9/face.jpg", "http://h/s.jpg"]


@pytest.mark.broker
def test_tail_prints_readable_lines_and_raw_json(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    results, dlq = make_topic("res", partitions=2), make_topic("dlq", partitions=2)
    put(kafka_bootstrap, results, [(b"cam-1", result_value())])
    put(kafka_bootstrap, dlq, [(b"-1308", dead_letter_value())])

    code, out = run_tool(tail, kafka_bootstrap, "results", "--results-topic", results, "--from-beginning", "--max", "1")
    assert code == 0 and out == "e-1  faces=2  best: alice (93.5) -\n"
    code, out = run_tool(tail, kafka_bootstrap, "dlq", "--dlq-topic", dlq, "--from-beginning", "--max", "1")
    assert code == 0 and out.startswith("e-2  code=-1308  ")
    code, out = run_tool(tail, kafka_bootstrap, "dlq", "--topic", dlq, "--json", "--from-beginning", "--timeout", "1")
    assert code == 0 and orjson.loads(out) == orjson.loads(dead_letter_value())


@pytest.mark.broker
def test_tail_without_from_beginning_shows_only_new_records(
    kafka_bootstrap: str, make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = make_topic("res", partitions=2)
    put(kafka_bootstrap, results, [(None, result_value(f"old-{i}")) for i in range(5)])  # one batch of five
    real = _kafka.end_offsets

    def end_offsets_then_new_records(*args: Any, **kwargs: Any) -> dict[int, tuple[int, int]]:
        marks = real(*args, **kwargs)
        put(kafka_bootstrap, results, [(None, result_value(f"new-{i}")) for i in range(2)])
        return marks

    monkeypatch.setattr(_kafka, "end_offsets", end_offsets_then_new_records)
    code, out = run_tool(tail, kafka_bootstrap, "results", "--results-topic", results, "--max", "2", "--timeout", "5")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["new-0", "new-1"]
