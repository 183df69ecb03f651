"""The tools and the other input formats: ``produce --cloudevents`` / ``--as-is`` build records the worker's
parsers accept, and ``replay`` refuses a selection it would only skip."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from worker.core import formats
from worker.core.records import Source
from worker.tools import produce, replay

DATA = Path(__file__).resolve().parents[1] / "data" / "events"
SOURCE = Source("cam", 0, 7)
NOW = datetime(2026, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
CE_INPUTS = formats.Inputs({"cam": formats.TopicInput("cloudevents")})


def test_produce_cloudevents_structured_is_read_by_the_worker() -> None:
    rec = produce.as_cloudevent(produce.prepare({"image_url": "https://img/a.jpg"}), "structured", now=NOW)
    assert rec.headers == (("content-type", b"application/cloudevents+json"),)
    doc = orjson.loads(rec.value)
    assert doc["time"] == "2026-05-01T12:00:00.250Z" and doc["id"] == doc["data"]["event_id"]
    event = CE_INPUTS.parse(rec.value, Source("cam", 0, 7, headers=rec.headers))
    assert event.event_id == doc["id"] and event.image_url == "https://img/a.jpg"


def test_produce_cloudevents_binary_is_read_by_the_worker() -> None:
    rec = produce.as_cloudevent(produce.prepare({"image_url": "https://img/a.jpg", "event_id": "e1"}), "binary")
    names = [n for n, _ in rec.headers]
    assert names == ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type"]
    assert orjson.loads(rec.value)["image_url"] == "https://img/a.jpg"  # the value is the event itself
    event = CE_INPUTS.parse(rec.value, Source("cam", 0, 7, headers=rec.headers))
    assert event.event_id == "e1"
    assert event.metadata is not None and event.metadata["cloudevent"]["source"] == produce.CE_SOURCE


def test_a_raw_line_is_not_wrapped() -> None:
    [raw] = produce.from_lines([b"not json\n"])
    assert produce.as_cloudevent(raw, "binary") is raw


def test_as_is_publishes_a_pretty_document_as_one_record_and_lines_as_they_are() -> None:
    pretty = (DATA / "minio-put.json").read_bytes().splitlines(keepends=True)
    [one] = produce.as_is(pretty)
    assert orjson.loads(one.value) == orjson.loads(b"".join(pretty)) and b"\n" not in one.value
    assert [r.value for r in produce.as_is([b'{"a": 1}\n', b"\n", b"{oops\n"])] == [b'{"a": 1}', b"{oops"]


def test_produce_as_is_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    produce.add_arguments(parser)
    code = produce.run(parser.parse_args(["--images", str(DATA), "--image-base-url", "http://x/", "--as-is"]))
    assert code == 2 and "--as-is needs --file" in capsys.readouterr().err


@pytest.mark.parametrize("inputs", ["a,b", "a"])
def test_replay_from_a_topic_that_is_no_input_needs_a_target(inputs: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --to each dead letter goes back to its own input topic; those of a topic the worker does not read
    would all be skipped, so selecting only them is refused before anything is read (exit 2)."""
    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    argv = ["--bootstrap-servers", "127.0.0.1:1", "--input-topic", inputs, "--timeout", "1", "--from-topic", "c"]
    assert replay.run(parser.parse_args(argv), io.StringIO()) == 2
    err = capsys.readouterr().err
    assert f"--from-topic c is not an input topic (input_topic = {inputs}); name where they go with --to" in err


def test_produce_with_several_input_topics_needs_a_topic(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    produce.add_arguments(parser)
    args = parser.parse_args(["--bootstrap-servers", "127.0.0.1:1", "--input-topic", "a,b", "--file", "-"])
    assert produce.run(args) == 2
    assert "lists several topics (a,b); name one with --topic" in capsys.readouterr().err
